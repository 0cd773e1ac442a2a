"""Kill-at-exec rung: ``bpf_send_signal(SIGKILL)`` from the
``sched:sched_process_exec`` tracepoint (bpf/exec_kill.c), so the process
dies before the new image runs user code.

Two maps drive it: denied exec paths (the path exactly as given to execve,
NUL-padded to 256 bytes: the hash map compares fixed-size keys, which the
verifier accepts where a string loop is rejected) and armed tgids (killed at
their next exec, once).  A relative exec path (``./tool``) does not match an
absolute deny: the fanotify rung, which sees the file itself, is preferred
for deny-exec for that reason.
"""

from __future__ import annotations

import ctypes
import functools
import time

from kestrel_core.interfaces import Probe

from .base import Report
from .bccload import Unavailable
from .progpath import ProgramPath

PATH_KEY_LEN = 256
REASONS = {1: "denied-path", 2: "armed-tgid"}
COUNTERS = ("kills_denied_path", "kills_armed_tgid", "reports_lost", "execs_seen")


class PathKey(ctypes.Structure):
    """``struct path_key`` of bpf/exec_kill.c."""
    _fields_ = [("path", ctypes.c_char * PATH_KEY_LEN)]


class KillEvent(ctypes.Structure):
    """``struct kill_event`` of bpf/exec_kill.c."""
    _fields_ = [("ts_ns", ctypes.c_uint64), ("tgid", ctypes.c_uint32), ("reason", ctypes.c_uint32),
                ("path", ctypes.c_char * PATH_KEY_LEN)]


@functools.cache
def _probe() -> Probe:
    try:
        prog = ExecKillPath.load()
    except Exception as exc:  # noqa: BLE001 - any failure is the reason this rung is unavailable
        return Probe.missing(f"tracepoint sched:sched_process_exec program did not load: {exc}")
    backend = prog.backend
    prog.close()
    return Probe.ok(f"tracepoint sched:sched_process_exec + bpf_send_signal(SIGKILL) loads ({backend})")


def encode_path(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) >= PATH_KEY_LEN:
        raise ValueError(f"exec path longer than {PATH_KEY_LEN - 1} bytes cannot be denied at exec: {path!r}")
    if b"\0" in raw:
        raise ValueError(f"exec path contains NUL: {path!r}")
    return raw


class ExecKillPath(ProgramPath):
    NAME = "kill-at-exec"
    ACTIONS = frozenset({"deny-exec", "kill"})
    PROGRAM = "exec_kill"
    RING = "kills"
    COUNTERS = COUNTERS
    MAPS = {"denied_paths": (PathKey, ctypes.c_uint8), "armed_tgids": (ctypes.c_uint32, ctypes.c_uint8)}

    def __init__(self, report: Report | None = None) -> None:
        super().__init__(report)
        self.denied: set[str] = set()
        self.armed: set[int] = set()

    @classmethod
    def probe(cls) -> Probe:
        return _probe()

    def _on_record(self, raw: bytes) -> None:
        ev = KillEvent.from_buffer_copy(raw)
        path = ev.path.decode("utf-8", "surrogateescape")
        reason = REASONS.get(ev.reason, str(ev.reason))
        with self._lock:
            if ev.reason == 2:
                self.armed.discard(ev.tgid)
        # latency: from the kernel's kill to this report (the kill itself is synchronous with the exec)
        lag_us = max(0.0, (time.monotonic_ns() - ev.ts_ns) / 1000)
        self.report({"path": self.NAME, "outcome": "killed", "action": "kill" if ev.reason == 2 else "deny-exec",
                     "target": path, "pid": ev.tgid, "reason": reason, "latency_us": 0.0,
                     "report_lag_us": round(lag_us, 1)})

    def _key(self, path: str) -> PathKey:
        return PathKey(encode_path(path))

    def deny_exec(self, path: str) -> None:
        key = self._key(path)
        with self._lock:
            self._prog.maps["denied_paths"][key] = ctypes.c_uint8(1)
            self.denied.add(path)

    def allow_exec(self, path: str) -> None:
        with self._lock:
            if path in self.denied:
                del self._prog.maps["denied_paths"][self._key(path)]
                self.denied.discard(path)

    def arm_pid(self, tgid: int) -> None:
        with self._lock:
            self._prog.maps["armed_tgids"][ctypes.c_uint32(tgid)] = ctypes.c_uint8(1)
            self.armed.add(tgid)

    def disarm_pid(self, tgid: int) -> None:
        with self._lock:
            try:
                del self._prog.maps["armed_tgids"][ctypes.c_uint32(tgid)]
            except KeyError:
                pass
            self.armed.discard(tgid)

    def clear(self) -> None:
        if self._prog is None:
            return
        with self._lock:
            self._prog.maps["denied_paths"].clear()
            self._prog.maps["armed_tgids"].clear()
            self.denied.clear()
            self.armed.clear()
