"""kestrel_core.host on the real kernel: a fresh boot has no tracefs, bpffs
or (sometimes) cgroup2 mounted, and kernel-facing plugins mount them.  Each
check runs in a private mount namespace with the filesystem unmounted, which
is how a fresh machine looks whatever this one has mounted already."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from kestrel_core import host

root_only = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                               reason="mounting needs root and unshare(1)")


def in_fresh_namespace(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a private mount namespace (nothing leaks to this host)."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)


PRELUDE = """
import logging, subprocess, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from pathlib import Path
from kestrel_core import host
def unmount(path, fstype):
    while (path, fstype) in host.mounts():
        subprocess.run(["umount", "-l", path], check=True)
"""


@root_only
def test_tracefs_is_mounted_when_absent():
    done = in_fresh_namespace(PRELUDE + """
unmount("/sys/kernel/debug/tracing", "tracefs"); unmount("/sys/kernel/tracing", "tracefs")
unmount("/sys/kernel/debug", "debugfs")
assert not Path("/sys/kernel/tracing/events").is_dir(), "tracefs still visible"
found = host.ensure_tracefs()
assert found == Path("/sys/kernel/tracing"), found
assert (found / "events" / "sched" / "sched_process_exec" / "format").is_file()
assert host.ensure_tracefs() == found  # the second call only looks
print("OK")
""")
    assert done.returncode == 0, done.stderr
    assert "mounted tracefs at /sys/kernel/tracing (it was not mounted)" in done.stdout
    assert done.stdout.count("mounted tracefs") == 1 and "OK" in done.stdout


@root_only
def test_bpffs_is_mounted_when_absent():
    done = in_fresh_namespace(PRELUDE + """
unmount("/sys/fs/bpf", "bpf")
assert host.ensure_bpffs() == Path("/sys/fs/bpf")
assert ("/sys/fs/bpf", "bpf") in host.mounts()
print("OK")
""")
    assert done.returncode == 0, done.stderr
    assert "mounted bpffs at /sys/fs/bpf" in done.stdout and "OK" in done.stdout


@root_only
def test_cgroup2_is_mounted_when_absent():
    done = in_fresh_namespace(PRELUDE + """
for point, fstype in list(host.mounts()):
    if fstype == "cgroup2":
        unmount(point, fstype)
assert host.cgroup2_root() is None
found = host.ensure_cgroup2()
assert found is not None and (found / "cgroup.controllers").is_file(), found
print("OK", found)
""")
    assert done.returncode == 0, done.stderr
    assert "mounted cgroup2 at" in done.stdout and "OK" in done.stdout


def test_nothing_is_mounted_without_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(host, "TRACEFS", tmp_path / "tracing")
    monkeypatch.setattr(host, "DEBUGFS", tmp_path / "debug")
    monkeypatch.setattr(host, "mount", lambda *a: pytest.fail("mount attempted without root"))
    assert host.ensure_tracefs() is None


@pytest.mark.skipif(not (host.SYSTEM_DIST_PACKAGES / "bcc" / "__init__.py").is_file(),
                    reason="Debian's python3-bpfcc is not installed")
def test_system_module_found_outside_the_venv():
    """The venv has no path entry for bcc; it is loaded from dist-packages
    alone, without putting the whole of dist-packages on sys.path."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from kestrel_core import host
        bcc = host.import_system_module("bcc", "python3-bpfcc")
        assert bcc.__file__ == str(host.SYSTEM_DIST_PACKAGES / "bcc" / "__init__.py"), bcc.__file__
        assert hasattr(bcc, "BPF") and "bcc.libbcc" in sys.modules
        assert str(host.SYSTEM_DIST_PACKAGES) not in sys.path
        print("OK")
    """)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr


def test_missing_system_module_names_the_apt_packages():
    with pytest.raises(ModuleNotFoundError, match=r"apt-get install python3-nothing-here"):
        host.import_system_module("kestrel_no_such_module", "python3-nothing-here")
    assert "kestrel_no_such_module" not in sys.modules


def test_host_fields_are_what_published_linux_rules_filter_on():
    import platform

    fields = host.host_fields()
    assert fields["host.os.type"] == "linux" and fields["host.os.kernel"] == os.uname().release
    release = platform.freedesktop_os_release()
    assert fields["host.os.name"] == release["NAME"] and fields["host.os.platform"] == release["ID"]
    assert fields["host.os.family"] == (release.get("ID_LIKE") or release["ID"]).split()[0]
    with open("/etc/machine-id") as fh:
        assert fields["host.id"] == fh.read().strip()
