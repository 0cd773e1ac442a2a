"""A bounded table of live processes, keyed by pid.

Seeded from /proc at start and kept current by fork/exec/exit events, it
gives every event its parent fields without touching /proc again.  Bounded
(least recently touched entry evicted first) so a fork bomb cannot grow it
without limit; an evicted process is re-read from /proc when next seen.
"""

from __future__ import annotations

from collections import OrderedDict

from .procfs import ProcInfo, list_pids, snapshot

EXITED_KEPT = 1024


class ProcessTable:
    def __init__(self, max_entries: int = 32768) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._procs: OrderedDict[int, ProcInfo] = OrderedDict()
        self._exited: OrderedDict[int, ProcInfo] = OrderedDict()
        """Recently exited processes: file events are read after the exit of
        a short-lived process that caused them and still need its fields."""
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._procs)

    def __contains__(self, pid: int) -> bool:
        return pid in self._procs

    def seed(self) -> int:
        """Load every process /proc lists now; returns how many."""
        for pid in list_pids():
            info = snapshot(pid)
            if info.start_ticks >= 0:
                self.put(info)
        return len(self._procs)

    def put(self, info: ProcInfo) -> None:
        self._procs[info.pid] = info
        self._procs.move_to_end(info.pid)
        while len(self._procs) > self.max_entries:
            self._procs.popitem(last=False)
            self.evictions += 1

    def get(self, pid: int) -> ProcInfo | None:
        info = self._procs.get(pid)
        if info is not None:
            self._procs.move_to_end(pid)
        return info

    def lookup(self, pid: int) -> ProcInfo | None:
        """The table's entry, or a fresh /proc snapshot (kept) when the pid
        is unknown; None when /proc has nothing either."""
        info = self.get(pid)
        if info is not None or pid <= 0:
            return info
        info = self._exited.get(pid)
        if info is not None:
            return info
        info = snapshot(pid)
        if info.start_ticks < 0:
            return None
        self.put(info)
        return info

    def knows(self, pid: int) -> bool:
        """Live or recently exited, without reading /proc."""
        return pid in self._procs or pid in self._exited

    def pop(self, pid: int) -> ProcInfo | None:
        """Remove an exited process (kept aside for late lookups)."""
        info = self._procs.pop(pid, None)
        if info is not None:
            self._exited[pid] = info
            self._exited.move_to_end(pid)
            if len(self._exited) > EXITED_KEPT:
                self._exited.popitem(last=False)
        return info

    def pids(self) -> list[int]:
        return list(self._procs)
