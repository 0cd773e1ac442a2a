"""Process events: producers (proc connector, /proc polling) and the tracker
that turns them into ECS records while keeping the process table.

Producers run on their own threads and do only what cannot wait: reading
/proc for a process that just exec'd, before it can exit.  The tracker runs
on the source's consumer thread, in timestamp order, so it owns the table.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from . import connector as cn
from .ecs import add_process, base, exit_code
from .procfs import CLOCK_TICKS, ProcInfo, list_pids, read_stat, snapshot
from .table import ProcessTable

Put = Callable[[int, str, Any], None]
"""put(ts_mono_ns, kind, payload): hand an observation to the consumer."""


def connector_loop(conn: cn.ProcConnector, put: Put, stop: threading.Event,
                   on_overflow: Callable[[int], None]) -> None:
    own = os.getpid()
    seen_overflows = 0
    while not stop.is_set():
        for ev in conn.read(0.2):
            if ev.what == cn.PROC_EVENT_FORK:
                if ev.tid != ev.pid:
                    continue  # a new thread, not a process
                put(ev.ts_mono_ns, "fork", (ev, read_stat(ev.pid)))
            elif ev.what == cn.PROC_EVENT_EXEC:
                # Read now: a short-lived process may be gone in a millisecond.
                put(ev.ts_mono_ns, "exec", (ev, snapshot(ev.pid)))
            elif ev.what == cn.PROC_EVENT_EXIT:
                if ev.tid == ev.pid and ev.pid != own:
                    put(ev.ts_mono_ns, "exit", (ev, None))
            elif ev.what in (cn.PROC_EVENT_UID, cn.PROC_EVENT_GID, cn.PROC_EVENT_PTRACE, cn.PROC_EVENT_COMM):
                put(ev.ts_mono_ns, "id" if ev.what in (cn.PROC_EVENT_UID, cn.PROC_EVENT_GID) else
                    ("ptrace" if ev.what == cn.PROC_EVENT_PTRACE else "comm"), (ev, None))
        if conn.overflows != seen_overflows:
            on_overflow(conn.overflows - seen_overflows)
            seen_overflows = conn.overflows


def _image(info: ProcInfo) -> tuple[int, str, tuple[str, ...]]:
    return info.start_ticks, info.executable, tuple(info.args)


class ProcPoller:
    """Fallback: diff /proc on every ``scan``.  A process that starts and
    exits between two scans is never seen; an exec is seen as a changed
    image of a known pid.  The constructor takes the baseline."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[int, str, tuple[str, ...]]] = {}
        for pid in list_pids():
            info = snapshot(pid)
            if info.start_ticks >= 0:
                self.known[pid] = _image(info)

    def scan(self) -> list[tuple[str, int, ProcInfo | None]]:
        """``("exec", pid, info)`` and ``("exit", pid, None)`` since the last scan."""
        out: list[tuple[str, int, ProcInfo | None]] = []
        current: set[int] = set()
        for pid in list_pids():
            current.add(pid)
            prior = self.known.get(pid)
            stat = read_stat(pid)
            if stat is None:
                continue
            if prior is not None and prior[0] == stat[2]:
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if exe.removesuffix(" (deleted)") == prior[1]:
                    continue
            info = snapshot(pid)
            if info.start_ticks < 0:
                continue
            if prior is not None and prior[0] != info.start_ticks:
                out.append(("exit", pid, None))  # pid reused between scans
            self.known[pid] = _image(info)
            out.append(("exec", pid, info))
        for pid in [p for p in self.known if p not in current]:
            del self.known[pid]
            out.append(("exit", pid, None))
        return out


def poll_loop(poller: ProcPoller, interval_s: float, put: Put, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        for kind, pid, info in poller.scan():
            put(time.monotonic_ns(), f"poll_{kind}", (pid, info))


@attrs.define
class ProcessTracker:
    """Consumer side: keeps the table, builds process records."""

    table: ProcessTable
    wall_offset_ns: int
    emit_process: bool = True
    exec_paths: dict[int, str] = attrs.Factory(dict)
    """pid -> image path from fanotify FAN_OPEN_EXEC (fills in for a process gone before /proc was read)."""

    def handle(self, ts_mono_ns: int, kind: str, payload: Any) -> list[dict[str, Any]]:
        ev, extra = payload
        method = getattr(self, f"_on_{kind}")
        record = method(ts_mono_ns + self.wall_offset_ns, ev, extra)
        return [record] if record is not None and self.emit_process else []

    def _on_fork(self, ts: int, ev: cn.KernelProcEvent, stat: tuple[str, int, int] | None) -> dict[str, Any] | None:
        parent = self.table.lookup(ev.parent_pid)
        child = parent.copy_for_child(ev.pid) if parent else ProcInfo(ev.pid, ppid=ev.parent_pid, incomplete=True)
        if stat is not None:
            child.start_ticks = stat[2]
        else:  # gone already: the start time from the event's clock (may differ by a tick)
            child.start_ticks = ev.ts_mono_ns * CLOCK_TICKS // 1_000_000_000
            child.incomplete = True
        self.table.put(child)
        return add_process(base(ts, "process", "start", "fork"), child, parent)

    def _on_exec(self, ts: int, ev: cn.KernelProcEvent, snap: ProcInfo) -> dict[str, Any] | None:
        prior = self.table.get(ev.pid)
        info = snap
        if snap.start_ticks < 0:  # exited before /proc was read: keep what fork told us
            info = attrs.evolve(prior, executable="", args=[], comm="", incomplete=True) if prior \
                else ProcInfo(ev.pid, incomplete=True)
        elif prior is not None:
            info.cwd = info.cwd or prior.cwd
            if info.uid < 0:
                info.uid, info.euid, info.gid = prior.uid, prior.euid, prior.gid
        if not info.args and info.start_ticks >= 0:
            # cmdline can still read empty when the exec event is read; by the
            # time the event is handled the new image's arguments are in place
            again = snapshot(ev.pid)
            if again.start_ticks == info.start_ticks and again.args:
                info.args = again.args
        if not info.executable:
            info.executable = self.exec_paths.pop(ev.pid, "")
        self.table.put(info)
        parent = self.table.lookup(info.ppid) if info.ppid else None
        return add_process(base(ts, "process", "start", "exec"), info, parent)

    def _on_exit(self, ts: int, ev: cn.KernelProcEvent, _: Any) -> dict[str, Any] | None:
        info = self.table.pop(ev.pid) or ProcInfo(ev.pid, ppid=ev.parent_pid, incomplete=True)
        self.exec_paths.pop(ev.pid, None)
        parent = self.table.get(info.ppid)
        record = add_process(base(ts, "process", "end", "exit"), info, parent)
        record["process.exit_code"] = exit_code(ev.a)
        return record

    def _on_id(self, ts: int, ev: cn.KernelProcEvent, _: Any) -> dict[str, Any] | None:
        info = self.table.lookup(ev.pid) or ProcInfo(ev.pid, incomplete=True)
        parent = self.table.get(info.ppid)
        if ev.what == cn.PROC_EVENT_UID:
            # The connector reports the resulting real and effective ids, not
            # which call made them: setuid/setreuid/setresuid all read "setuid".
            # Defend's uid_change carries the ids after the call.
            info.uid, info.euid = ev.a, ev.b
            record = add_process(base(ts, "process", "change", "setuid"), info, parent)
            record["user.target.id"] = str(ev.b)
        else:
            info.gid = ev.a
            record = add_process(base(ts, "process", "change", "setgid"), info, parent)
            record["group.target.id"] = str(ev.b)
        return record

    def _on_ptrace(self, ts: int, ev: cn.KernelProcEvent, _: Any) -> dict[str, Any] | None:
        if ev.parent_pid == 0:
            return None  # detach
        tracer = self.table.lookup(ev.parent_pid) or ProcInfo(ev.parent_pid, incomplete=True)
        target = self.table.lookup(ev.pid)
        record = add_process(base(ts, "process", "access", "ptrace"), tracer, self.table.get(tracer.ppid))
        record["target.process.pid"] = ev.pid
        if target is not None and target.name:
            record["target.process.name"] = target.name
        return record

    def _on_comm(self, ts: int, ev: cn.KernelProcEvent, _: Any) -> None:
        info = self.table.get(ev.pid)
        if info is not None:
            info.comm = ev.comm

    def _on_poll_exec(self, ts: int, pid: int, info: ProcInfo) -> dict[str, Any] | None:
        self.table.put(info)
        parent = self.table.lookup(info.ppid) if info.ppid else None
        return add_process(base(ts, "process", "start", "exec"), info, parent)

    def _on_poll_exit(self, ts: int, pid: int, _: Any) -> dict[str, Any] | None:
        info = self.table.pop(pid)
        if info is None:
            return None
        return add_process(base(ts, "process", "end", "exit"), info, self.table.get(info.ppid))
