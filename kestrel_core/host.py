"""What kernel-facing plugins need from the host before they can probe it:
the kernel's pseudo-filesystems mounted, and Python modules that only the
distribution packages (bcc from Debian's python3-bpfcc).

A fresh machine boots without tracefs, debugfs or bpffs mounted.  A probe
that only looked would report eBPF "unavailable" on a kernel that has every
feature, so the probes call :func:`ensure_tracefs` (and friends) first: as
root they mount what is missing and log it; without root, or when the kernel
lacks the filesystem, they return ``None`` and the caller names the reason.
Nothing here runs at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging
import os
import platform
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Callable

log = logging.getLogger("kestrel.host")

TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS = Path("/sys/kernel/debug")
BPFFS = Path("/sys/fs/bpf")
CGROUP2_HYBRID = Path("/sys/fs/cgroup/unified")
SYSTEM_DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")

_lock = threading.Lock()


class MountError(OSError):
    """mount(2) failed; the message names the filesystem, the target and errno."""


def mounts(path: str = "/proc/self/mounts") -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount of this mount namespace."""
    found = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3:
                # Mount points escape spaces as \040 (see proc(5)).
                found.append((parts[1].replace("\\040", " "), parts[2]))
    return found


def mounted_at(target: Path, fstype: str) -> bool:
    return (str(target), fstype) in mounts()


def kernel_has_filesystem(fstype: str) -> bool:
    """Whether the running kernel knows ``fstype`` (/proc/filesystems)."""
    try:
        with open("/proc/filesystems", encoding="utf-8") as fh:
            return any(line.split()[-1] == fstype for line in fh if line.strip())
    except OSError:
        return False


def mount(source: str, target: Path, fstype: str) -> None:
    """mount(2) through libc: no dependency on util-linux's mount binary."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    if libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"mount -t {fstype} {source} {target}: {os.strerror(err)}")


def _ensure(fstype: str, source: str, found: Callable[[], Path | None], target: Callable[[], Path],
            label: str = "") -> Path | None:
    """``found()`` once ``fstype`` is mounted, mounting it at ``target()`` as
    root if need be; ``None`` when that is impossible (the reason is logged)."""
    hit = found()
    if hit is not None:
        return hit
    with _lock:
        hit = found()
        if hit is not None:
            return hit
        if os.geteuid() != 0:
            log.debug("%s not mounted and not root: not mounting it", fstype)
            return None
        if not kernel_has_filesystem(fstype):
            log.debug("kernel has no %s filesystem", fstype)
            return None
        where = target()
        try:
            where.mkdir(parents=True, exist_ok=True)
            mount(source, where, fstype)
        except OSError as exc:
            log.warning("could not mount %s: %s", label or fstype, exc)
            return None
        log.info("mounted %s at %s (it was not mounted)", label or fstype, where)
        return found()


def _dir_if(path: Path, ready: Path) -> Callable[[], Path | None]:
    return lambda: path if ready.exists() else None


def ensure_tracefs() -> Path | None:
    """The tracing directory (holding ``events/``), mounting tracefs at
    /sys/kernel/tracing when neither it nor debugfs's ``tracing`` is mounted."""
    for candidate in (TRACEFS, DEBUGFS / "tracing"):
        if (candidate / "events").is_dir():
            return candidate
    found = _ensure("tracefs", "nodev", _dir_if(TRACEFS, TRACEFS / "events"), lambda: TRACEFS)
    if found is not None:
        return found
    # Kernels built without a separate tracefs mount point expose it under debugfs.
    return _ensure("debugfs", "nodev", _dir_if(DEBUGFS / "tracing", DEBUGFS / "tracing" / "events"), lambda: DEBUGFS)


def ensure_bpffs() -> Path | None:
    """/sys/fs/bpf with bpffs mounted (for pinned maps and programs)."""
    return _ensure("bpf", "bpf", lambda: BPFFS if mounted_at(BPFFS, "bpf") else None, lambda: BPFFS, "bpffs")


def cgroup2_root() -> Path | None:
    """Mount point of the cgroup2 hierarchy, if one is mounted."""
    for point, fstype in mounts():
        if fstype == "cgroup2":
            return Path(point)
    return None


def _cgroup2_target() -> Path:
    # /sys/fs/cgroup holding v1 controllers (the hybrid layout): cgroup2 goes in its unified/ directory.
    hybrid = any(point.startswith("/sys/fs/cgroup/") for point, _ in mounts())
    return CGROUP2_HYBRID if hybrid or mounted_at(Path("/sys/fs/cgroup"), "tmpfs") else Path("/sys/fs/cgroup")


def ensure_cgroup2() -> Path | None:
    """The cgroup2 mount point, mounting cgroup2 when no hierarchy is: at
    /sys/fs/cgroup/unified in the hybrid layout, else at /sys/fs/cgroup."""
    return _ensure("cgroup2", "none", cgroup2_root, _cgroup2_target)


@functools.cache
def host_fields() -> dict[str, str]:
    """The ECS ``host.*`` fields of this machine, as Elastic Defend reports
    them on every event: published Linux rules filter on ``host.os.type ==
    "linux"`` and join sequences ``by host.id``.  Read once per process:
    os-release through the standard library, the id from machine-id."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        release = {}
    uname = os.uname()
    fields = {
        "host.name": socket.gethostname(),
        "host.hostname": socket.gethostname(),
        "host.architecture": uname.machine,
        "host.os.type": "linux",
        "host.os.kernel": uname.release,
        "host.os.name": release.get("NAME", "Linux"),
        "host.os.platform": release.get("ID", "linux"),
        # ID_LIKE names the family a derivative follows (ubuntu -> debian); a base distribution is its own.
        "host.os.family": (release.get("ID_LIKE") or release.get("ID") or "linux").split()[0],
    }
    if release.get("VERSION_ID") or release.get("VERSION"):
        fields["host.os.version"] = release.get("VERSION") or release.get("VERSION_ID", "")
        fields["host.os.full"] = f"{release.get('NAME', 'Linux')} {release.get('VERSION_ID', '')}".strip()
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as fh:
                machine_id = fh.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if machine_id:
            fields["host.id"] = machine_id
            break
    return fields


def import_system_module(name: str, apt_packages: str) -> ModuleType:
    """Import ``name``, falling back to the copy the distribution installed
    for its own Python (/usr/lib/python3/dist-packages/NAME).

    Debian ships bcc's bindings only for the system Python, and PyPI's
    ``bcc`` is an unrelated package, so a plain ``pip install`` into a venv
    cannot provide it.  Only that one package directory is loaded, not the
    whole dist-packages (whose other modules are built for another Python).
    Raises ImportError naming ``apt_packages`` when neither copy exists.
    """
    if name in sys.modules:
        return sys.modules[name]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
    package = SYSTEM_DIST_PACKAGES / name
    init = package / "__init__.py"
    if not init.is_file():
        raise ModuleNotFoundError(
            f"No module named {name!r} (neither in this environment nor in {SYSTEM_DIST_PACKAGES}); "
            f"install it with: apt-get install {apt_packages}", name=name)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(package)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    log.debug("imported %s from %s", name, package)
    return module
