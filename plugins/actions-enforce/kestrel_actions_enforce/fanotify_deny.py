"""Fanotify rung: deny open and exec with EPERM through the permission
responder of ``kestrel-edr-sources-fanotify`` (FAN_OPEN_PERM / FAN_OPEN_EXEC_PERM).
This module only supplies the policy (``set_policy``) and the marks; the
responder owns the group, the budget and the fail-open/closed answer.

Marks: by default an inode mark on each protected file (on its directory
while it does not exist yet), so only opens of protected files reach Python
(about 35 µs each); ``marks`` in the settings replaces that with fixed marks
(e.g. ``[["/", "filesystem"]]``).  Marks cannot be added to a running
responder, so a new one is started with the new marks before the old one is
closed: both groups must allow, and there is no gap.

A file is matched by path and by (device, inode) of the opened file, so a
hard link or a rename of a protected file is still denied.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable

from kestrel_core.interfaces import Probe

from .base import EnforcementPath, Report
from .bccload import Unavailable

log = logging.getLogger("kestrel.enforce")

FAIL_OUTCOMES = ("timeout", "error", "overload")


@functools.cache
def _probe() -> Probe:
    try:
        from kestrel_sources_fanotify import fanotify as fan
        from kestrel_sources_fanotify.responder import PermissionResponder  # noqa: F401
    except ImportError as exc:
        return Probe.missing(f"kestrel-edr-sources-fanotify (PermissionResponder) is not installed: {exc}")
    ok, reason = fan.probe("/", permission=True)
    return Probe.ok(reason) if ok else Probe.missing(reason)


class FanotifyDenyPath(EnforcementPath):
    NAME = "fanotify"
    ACTIONS = frozenset({"deny-exec", "deny-open"})

    def __init__(self, report: Report | None = None, *, budget_ms: float = 20.0, fail_open: bool = True,
                 marks: Iterable[tuple[str, str]] | None = None) -> None:
        super().__init__(report)
        self.budget_ms = budget_ms
        self.fail_open = fail_open
        self.fixed_marks = [tuple(m) for m in marks] if marks else None
        self._lock = threading.RLock()
        self._responder: Any = None
        self._marks: list[tuple[str, str]] = []
        self.denied: dict[str, set[str]] = {"open": set(), "exec": set()}
        self._inodes: dict[str, dict[tuple[int, int], str]] = {"open": {}, "exec": {}}
        self._fail_seen: collections.Counter[str] = collections.Counter()
        self.enabled = True
        self.installed = False
        self.inline: Callable[[Any], bool] | None = None
        """Rule-driven policy asked for events no path deny matched (inline decisions)."""
        self.armed: set[int] = set()
        """Processes whose opens are denied (sequence-armed blocking of deny-open)."""

    @classmethod
    def probe(cls) -> Probe:
        return _probe()

    # ------------------------------------------------------------------ lifecycle

    def install(self) -> None:
        probe = self.probe()
        if not probe.available:
            raise Unavailable(probe.reason)
        self.installed = True
        if self.fixed_marks:
            self._restart(self.fixed_marks)

    def _restart(self, marks: list[tuple[str, str]]) -> None:
        """A responder with ``marks``, started before the old one closes."""
        from kestrel_sources_fanotify.responder import PermissionResponder

        with self._lock:
            if marks == self._marks and self._responder is not None:
                return
            new = PermissionResponder(marks, self.decide, budget_ms=self.budget_ms, fail_open=self.fail_open,
                                      events=("open", "exec"))
            old = self._responder
            self._count_failures(old)
            self._responder, self._marks, self._fail_seen = new, list(marks), collections.Counter()
        if old is not None:
            old.close()

    def _wanted_marks(self) -> list[tuple[str, str]]:
        if self.fixed_marks:
            return list(self.fixed_marks)
        marks: list[tuple[str, str]] = []
        for path in sorted(self.denied["open"] | self.denied["exec"]):
            target = path if os.path.exists(path) else os.path.dirname(path) or "/"
            if (target, "inode") not in marks:
                marks.append((target, "inode"))
        return marks

    def _sync_marks(self) -> None:
        if not self.installed:
            raise Unavailable("fanotify path is not installed")
        marks = self._wanted_marks()
        if not marks:
            self._close_responder()
        else:
            self._restart(marks)

    def _close_responder(self) -> None:
        with self._lock:
            self._count_failures(self._responder)
            old, self._responder, self._marks, self._fail_seen = self._responder, None, [], collections.Counter()
        if old is not None:
            old.close()

    # ------------------------------------------------------------------ denies

    def _add(self, kind: str, path: str) -> None:
        path = os.path.abspath(path)
        with self._lock:
            self.denied[kind].add(path)
            try:
                st = os.stat(path)
                self._inodes[kind][(st.st_dev, st.st_ino)] = path
            except OSError:
                pass  # not there yet: matched by path once created
            self._sync_marks()

    def deny_open(self, path: str) -> None:
        self._add("open", path)

    def deny_exec(self, path: str) -> None:
        self._add("exec", path)

    def arm_pid(self, tgid: int) -> None:
        if not self.fixed_marks:
            raise Unavailable("arming a process for deny-open needs fixed fanotify_marks covering its files")
        self.armed = self.armed | {tgid}

    def disarm_pid(self, tgid: int) -> None:
        self.armed = self.armed - {tgid}

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled  # read by decide() on every event: takes effect on the next one

    def clear(self) -> None:
        with self._lock:
            for kind in self.denied:
                self.denied[kind].clear()
                self._inodes[kind].clear()
            self.armed = set()
            if self.installed and not self.fixed_marks:
                self._close_responder()

    def close(self) -> None:
        self._close_responder()
        self.installed = False

    # ------------------------------------------------------------------ policy

    def _match(self, kind: str, path: str, fd: int) -> str | None:
        if path in self.denied[kind]:
            return path
        inodes = self._inodes[kind]
        if inodes and fd >= 0:
            try:
                st = os.fstat(fd)
            except OSError:
                return None
            return inodes.get((st.st_dev, st.st_ino))
        return None

    def decide(self, event: Any) -> bool:
        """The responder's policy: False (deny) for a protected file."""
        kinds = ("exec", "open") if event.kind == "exec" else ("open",)
        hit = kind = None
        for kind in kinds:
            hit = self._match(kind, event.path, event.fd)
            if hit:
                break
        if hit is None and event.pid in self.armed:
            kind, hit = "open", f"armed pid {event.pid}"
        if hit is None:
            return True if self.inline is None else self.inline(event)
        latency_us = round((time.monotonic_ns() - event.ts_mono_ns) / 1000, 1)
        action = "deny-exec" if kind == "exec" else "deny-open"
        allow = not self.enabled
        record = {"path": self.NAME, "outcome": "allowed-enforcement-off" if allow else "denied",
                  "action": action, "target": event.path, "protected": hit, "pid": event.pid,
                  "latency_us": latency_us}
        if hit.startswith("armed pid"):
            record["reason"] = "armed-pid"
        self.report(record)
        return allow

    # ------------------------------------------------------------------ failures and metrics

    def _count_failures(self, responder: Any) -> None:
        """Audit the events the responder answered with the fail answer since the last look."""
        with self._lock:
            counts = dict(responder.counts) if responder is not None else {}
            for outcome in FAIL_OUTCOMES:
                new = counts.get(outcome, 0) - self._fail_seen[outcome]
                if new > 0:
                    self._fail_seen[outcome] += new
                    answer = "fail-open" if self.fail_open else "fail-closed"
                    self.report({"path": self.NAME, "outcome": f"{outcome}-{answer}", "count": new,
                                 "budget_ms": self.budget_ms, "latency_us": None})

    def poll(self) -> None:
        """Called periodically by the enforcer: audit budget overruns."""
        self._count_failures(self._responder)

    def metrics(self) -> dict[str, float]:
        responder = self._responder
        if responder is None:
            return {}
        stats = responder.stats()
        out = {f"responder_{k}": float(v) for k, v in stats["decisions"].items()}
        out["responder_p50_us"] = float(stats["p50_us"])
        out["responder_p99_us"] = float(stats["p99_us"])
        return out
