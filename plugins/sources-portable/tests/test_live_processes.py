"""Process events on the real kernel: exec/fork/exit/setuid via the netlink
connector, and exec/exit via the /proc polling fallback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from kestrel_sources_portable import connector
from kestrel_sources_portable.procfs import entity_id, read_stat
from kestrel_sources_portable.testing import needs_connector, needs_root

MARKER = "kestrel-portable-test"


def _own_image() -> tuple[str, list[str], str]:
    with open("/proc/self/cmdline", "rb") as fh:
        args = fh.read().rstrip(b"\0").decode().split("\0")
    me = os.getpid()
    return os.readlink("/proc/self/exe"), args, entity_id(me, read_stat(me)[2])


def _waiting_shell(cwd: str, code: int = 0) -> subprocess.Popen:
    """A shell that waits on stdin, so /proc can always be read in time."""
    return subprocess.Popen(["/bin/sh", "-c", f"read line; exit {code}", "sh", MARKER], stdin=subprocess.PIPE, cwd=cwd)


@needs_root
@needs_connector
def test_exec_fork_exit_with_parent_fields(live, tmp_path):
    src = live(files=False)
    assert src.source.mechanisms.process == "connector"
    proc = _waiting_shell(str(tmp_path), code=3)
    try:
        exec_rec = src.wait_for(lambda r: r["event.action"] == "exec" and r.get("process.pid") == proc.pid,
                                what="exec of the test shell")
        fork_rec = src.wait_for(lambda r: r["event.action"] == "fork" and r.get("process.pid") == proc.pid,
                                what="fork of the test shell")
        start_ticks = read_stat(proc.pid)[2]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    exit_rec = src.wait_for(lambda r: r["event.action"] == "end" and r.get("process.pid") == proc.pid,
                            what="exit of the test shell")

    exe, args, my_entity = _own_image()
    assert exec_rec["event.category"] == ["process"] and exec_rec["event.type"] == ["start"]
    assert exec_rec["process.executable"] == os.path.realpath("/bin/sh")
    assert exec_rec["process.args"] == ["/bin/sh", "-c", "read line; exit 3", "sh", MARKER]
    assert exec_rec["process.args_count"] == 5
    assert exec_rec["process.command_line"] == f"/bin/sh -c read line; exit 3 sh {MARKER}"
    assert exec_rec["process.working_directory"] == str(tmp_path)
    assert exec_rec["user.id"] == str(os.getuid()) and exec_rec["user.effective.id"] == str(os.geteuid())
    assert exec_rec["group.id"] == str(os.getgid())
    assert "process.Ext.incomplete" not in exec_rec
    assert exec_rec["process.parent.pid"] == os.getpid()
    assert exec_rec["process.parent.executable"] == exe
    assert exec_rec["process.parent.args"] == args
    assert exec_rec["process.parent.entity_id"] == my_entity
    assert exec_rec["process.parent.name"] == os.path.basename(exe)

    # One entity id for the whole life: fork, exec and exit agree.
    ids = {r["process.entity_id"] for r in (exec_rec, fork_rec, exit_rec)}
    assert ids == {entity_id(proc.pid, start_ticks)} == {f"{proc.pid:x}-{start_ticks:x}"}
    assert fork_rec["event.type"] == ["start"] and fork_rec["process.parent.pid"] == os.getpid()
    assert exit_rec["event.type"] == ["end"] and exit_rec["process.exit_code"] == 3
    assert exit_rec["process.args"] == exec_rec["process.args"]


@needs_root
@needs_connector
def test_setuid_is_reported_with_the_target_id(live):
    src = live(files=False)
    code = "import os, sys; os.setgid(65534); os.setuid(65534); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        rec = src.wait_for(lambda r: r["event.action"] == "uid_change" and r.get("process.pid") == proc.pid,
                           what="setuid of the test process")
        grec = src.wait_for(lambda r: r["event.action"] == "gid_change" and r.get("process.pid") == proc.pid,
                            what="setgid of the test process")
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert rec["event.type"] == ["change"] and rec["user.target.id"] == "65534"
    assert rec["user.id"] == "65534" and rec["user.Ext.real.id"] == "65534"  # Defend: the ids after the change
    assert grec["group.target.id"] == "65534"


@needs_root
def test_poll_fallback_sees_a_long_lived_process(live, tmp_path):
    src = live(process="poll", files=False, poll_interval_ms=50)
    assert src.source.mechanisms.process == "poll"
    assert "misses processes shorter than the poll interval" in src.source.coverage.summary()
    assert "fork" in src.source.coverage.missing and "exec" in src.source.coverage.seen
    proc = _waiting_shell(str(tmp_path))
    try:
        rec = src.wait_for(lambda r: r["event.action"] == "exec" and r.get("process.pid") == proc.pid,
                           what="polled exec")
        start_ticks = read_stat(proc.pid)[2]
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert rec["process.args"] == ["/bin/sh", "-c", "read line; exit 0", "sh", MARKER]
    assert rec["process.parent.pid"] == os.getpid()
    assert rec["process.entity_id"] == entity_id(proc.pid, start_ticks)
    src.wait_for(lambda r: r["event.action"] == "end" and r.get("process.pid") == proc.pid, what="polled exit")


TRACER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
pid = int(sys.argv[1])
if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
    sys.exit(f"attach failed: errno {ctypes.get_errno()}")
os.waitpid(pid, 0)
libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
"""


@needs_root
@needs_connector
def test_ptrace_attach_names_tracer_and_target(live, tmp_path):
    src = live(files=False)
    target = _waiting_shell(str(tmp_path))
    try:
        src.wait_for(lambda r: r["event.action"] == "exec" and r.get("process.pid") == target.pid, what="target exec")
        tracer = subprocess.run([sys.executable, "-c", TRACER, str(target.pid)], capture_output=True, text=True, check=False)
        assert tracer.returncode == 0, tracer.stderr
        rec = src.wait_for(lambda r: r["event.action"] == "ptrace" and r.get("target.process.pid") == target.pid,
                           what="ptrace attach")
    finally:
        target.stdin.close()
        target.wait(timeout=10)
    assert rec["event.type"] == ["access"] and rec["target.process.name"] == os.path.basename(os.path.realpath("/bin/sh"))
    assert rec["process.executable"] == os.path.realpath(sys.executable)
    assert rec["process.parent.pid"] == os.getpid()
    detaches = [r for r in src.snapshot() if r["event.action"] == "ptrace" and r.get("target.process.pid") == target.pid]
    assert len(detaches) == 1  # the detach is not reported


@needs_root
@needs_connector
def test_connector_counts_kernel_overflows(monkeypatch):
    """A socket nobody reads, with the smallest receive buffer: a burst of
    process events overflows it, and the next read counts that (ENOBUFS)."""
    monkeypatch.setattr(connector.ProcConnector, "RCVBUF", 1)  # the kernel rounds up to its minimum
    conn = connector.ProcConnector()
    try:
        subprocess.run(["/bin/sh", "-c", "for i in $(seq 300); do /bin/true; done"], check=True)
        events = conn.read(1.0)
        assert conn.overflows >= 1
        assert len(events) < 900  # fork + exec + exit per /bin/true: most were dropped
    finally:
        conn.close()


def _refuse(*_args, **_kwargs):
    raise PermissionError(1, "Operation not permitted")


@needs_root
def test_a_mechanism_that_fails_at_start_degrades_with_a_logged_reason(live, monkeypatch, caplog, tmp_path):
    """The probe passed, the subscription failed (e.g. a policy change in
    between): the source runs on with /proc polling and says so."""
    caplog.set_level(logging.INFO, logger="kestrel")
    monkeypatch.setattr(connector, "probe", lambda: (True, "netlink process connector"))
    monkeypatch.setattr(connector, "ProcConnector", _refuse)
    src = live(process="connector", files=False, poll_interval_ms=50)
    assert src.source.mechanisms.process == "poll"
    assert "process connector failed to start" in caplog.text and "continuing without it" in caplog.text
    assert "no fork/setuid/setgid/ptrace (no process connector)" in caplog.text
    proc = _waiting_shell(str(tmp_path))
    try:
        src.wait_for(lambda r: r["event.action"] == "exec" and r.get("process.pid") == proc.pid, what="polled exec")
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
