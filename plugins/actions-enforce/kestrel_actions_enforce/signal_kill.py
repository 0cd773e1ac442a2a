"""Signal rung for the "kill" action: SIGKILL now, through a pidfd so a
recycled pid is never hit (the pidfd is opened and the process identity
checked by start time before signalling)."""

from __future__ import annotations

import os
import signal

from kestrel_core.interfaces import Probe

from .base import EnforcementPath


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class SignalKillPath(EnforcementPath):
    NAME = "signal"
    ACTIONS = frozenset({"kill"})

    @classmethod
    def probe(cls) -> Probe:
        if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
            return Probe.missing("no pidfd_open/pidfd_send_signal in this Python/kernel")
        return Probe.ok("SIGKILL through pidfd_send_signal")

    def install(self) -> None:
        self.enabled = True

    def kill(self, pid: int, start_ticks: int | None = None) -> str:
        """Kill ``pid`` if it still is the same process; returns the outcome."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "gone"
        try:
            if start_ticks is not None and _start_ticks(pid) != start_ticks:
                return "gone"  # the pid was reused by another process
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return "killed"
        except ProcessLookupError:
            return "gone"
        finally:
            os.close(fd)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass
