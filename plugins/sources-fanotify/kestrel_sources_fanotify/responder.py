"""PermissionResponder: answers fanotify permission events (allow/deny) in a budget.

Every open (FAN_OPEN_PERM) or exec (FAN_OPEN_EXEC_PERM) under the marks
waits in the kernel until this process writes an answer, so the responder
must never stall the watched system:

- the policy ``decide(event) -> allow`` runs inline on the reader thread (no
  hand-off on the fast path); a watchdog thread answers an event whose
  decision overruns ``budget_ms`` with the fail-open/fail-closed answer and
  starts a new reader, so one slow or hung callback costs one budget, not a
  hang.  Its late result is discarded (each event is answered once);
- a callback that raises gets the same fail answer, counted separately;
- Kestrel's own pid is always allowed without asking the policy (a policy
  that opens a file on a watched filesystem would otherwise wait on itself);
- ``close()`` answers allow for everything still pending, then closes the
  group; the kernel allows whatever was queued and not yet read.

The policy is hot-swappable (``set_policy``) so an enforcement action can
drive it from the rules.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
import time
from typing import Callable, Iterable

from . import fanotify as fan
from .fanotify import FileEvent

log = logging.getLogger("kestrel.fanotify.responder")

Policy = Callable[[FileEvent], bool]
"""``decide(event) -> True`` to allow.  ``event.fd`` is the opened file
(readable for content checks; do not close it)."""

PERM_BITS: dict[str, int] = {"open": fan.FAN_OPEN_PERM, "exec": fan.FAN_OPEN_EXEC_PERM}

OUTCOMES = ("allow", "deny", "timeout", "error", "self", "overload")
"""Decision outcomes counted: the policy allowed or denied; it overran the
budget or raised (fail answer); Kestrel's own pid (allowed); too many hung
callbacks, policy not asked (fail answer)."""


def allow_all(_event: FileEvent) -> bool:
    return True


class _Pending:
    """An event waiting for its answer; ``answer`` is idempotent."""

    __slots__ = ("event", "deadline_ns", "answered")

    def __init__(self, event: FileEvent, deadline_ns: int) -> None:
        self.event = event
        self.deadline_ns = deadline_ns
        self.answered = False


class PermissionResponder:
    """Answer permission events on ``marks`` (``(path, "mount"|"filesystem"|"inode")``).

    :param decide: the policy (default: allow everything).
    :param budget_ms: time from reading an event to answering it.
    :param fail_open: the answer when the policy overruns the budget or raises.
    :param events: "open" (FAN_OPEN_PERM) and/or "exec" (FAN_OPEN_EXEC_PERM).
    :param max_hung: hung callbacks tolerated at once; beyond, events get the
        fail answer without asking the policy until one returns.
    """

    def __init__(self, marks: Iterable[tuple[str, str]], decide: Policy | None = None, *, budget_ms: float = 20.0,
                 fail_open: bool = True, events: Iterable[str] = ("open", "exec"), max_hung: int = 4,
                 latency_samples: int = 65536) -> None:
        events = list(events)
        bad = [e for e in events if e not in PERM_BITS]
        if bad or not events:
            raise ValueError(f"responder events must be some of {', '.join(PERM_BITS)}, got {events!r}")
        if budget_ms <= 0:
            raise ValueError(f"budget_ms must be positive, got {budget_ms}")
        mask = 0
        for e in events:
            mask |= PERM_BITS[e]
        self.budget_ns = int(budget_ms * 1e6)
        self.fail_open = fail_open
        self.max_hung = max_hung
        self._policy: Policy = decide or allow_all
        self._own_pid = os.getpid()
        self._notifier = fan.FanotifyNotifier(mask, marks, init_flags=fan.FAN_CLASS_CONTENT)
        self._fd = self._notifier.fileno()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()  # guards answers, counters, the queue and the current event
        self._queue: collections.deque[_Pending] = collections.deque()
        self._current: _Pending | None = None
        self._generation = 0  # bumped when the watchdog replaces a stuck reader
        self._hung = 0
        self._closing = False
        self._closed = threading.Event()  # wakes the watchdog on close
        self.counts: collections.Counter[str] = collections.Counter({o: 0 for o in OUTCOMES})
        self.answers: collections.Counter[str] = collections.Counter({"allow": 0, "deny": 0})
        self._latencies: collections.deque[int] = collections.deque(maxlen=latency_samples)
        self.overflows = 0
        self._threads: list[threading.Thread] = []
        self._watchdog = threading.Thread(target=self._watch, name="fanotify-watchdog", daemon=True)
        self._start_reader()
        self._watchdog.start()

    # ------------------------------------------------------------------ public

    def set_policy(self, decide: Policy | None) -> None:
        """Swap the policy; events read from now on are asked the new one."""
        self._policy = decide or allow_all

    @property
    def policy(self) -> Policy:
        return self._policy

    def latency_percentiles(self) -> dict[str, float]:
        """P50/P99 (µs) from reading an event to answering it, over recent decisions."""
        with self._lock:
            samples = sorted(self._latencies)
        if not samples:
            return {"p50_us": 0.0, "p99_us": 0.0, "samples": 0}
        pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] / 1000  # noqa: E731
        return {"p50_us": pick(0.50), "p99_us": pick(0.99), "samples": len(samples)}

    def stats(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {"decisions": dict(self.counts), "answers": dict(self.answers),
                                      "hung_callbacks": self._hung, "overflows": self.overflows}
        out.update(self.latency_percentiles())
        return out

    def close(self) -> None:
        """Stop answering; every event read and not yet answered is allowed at
        once (a hung policy callback is not waited for)."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            pending = list(self._queue)
            self._queue.clear()
            if self._current is not None:
                pending.append(self._current)
        for p in pending:
            self._answer(p, True, None)
        self._closed.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        me = threading.current_thread()
        for t in [*self._threads, self._watchdog]:
            if t is not me:
                t.join(timeout=0.5)  # readers leave poll at once; one stuck in a callback is a daemon
        with self._lock:  # a reader that was between read and queue hands its events back here
            pending = list(self._queue)
            self._queue.clear()
        for p in pending:
            self._answer(p, True, None)
        with self._lock:
            self._notifier.close()  # the kernel allows whatever is queued and unread
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> "PermissionResponder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ answering

    def _answer(self, p: _Pending, allow: bool, outcome: str | None) -> bool:
        """Write the answer once; False if someone answered ``p`` already."""
        with self._lock:
            if p.answered:
                return False
            p.answered = True
            fd = p.event.fd
            try:
                if not self._notifier.closed:  # after close the kernel has allowed everything
                    fan.write_response(self._fd, fd, allow)
            except OSError as exc:  # the group is closing; the kernel allows
                log.debug("fanotify response for %s failed: %s", p.event.path, exc)
            finally:
                if fd >= 0:
                    os.close(fd)
            self.answers["allow" if allow else "deny"] += 1
            if outcome is not None:
                self.counts[outcome] += 1
                self._latencies.append(time.monotonic_ns() - p.event.ts_mono_ns)
        return True

    def _fail(self, p: _Pending, outcome: str) -> None:
        if self._answer(p, self.fail_open, outcome):
            log.warning("fanotify: %s for %s %s (pid %d): answered %s", outcome, p.event.kind, p.event.path,
                        p.event.pid, "allow" if self.fail_open else "deny")

    # ------------------------------------------------------------------ reader

    def _start_reader(self) -> None:
        t = threading.Thread(target=self._read_loop, args=(self._generation,), name="fanotify-responder",
                             daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _next(self, generation: int) -> _Pending | None:
        """The next event for this reader, reading the group when the queue is empty."""
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            with self._lock:
                if self._closing or generation != self._generation:
                    return None
                if self._queue:
                    p = self._queue.popleft()
                    self._current = p
                    return p
            poller.poll()
            with self._lock:
                if self._closing or generation != self._generation:
                    return None
                events, overflows = fan.read_events(self._fd, keep_fds=True)
                self.overflows += overflows
                for ev in events:
                    self._queue.append(_Pending(ev, ev.ts_mono_ns + self.budget_ns))

    def _read_loop(self, generation: int) -> None:
        while True:
            p = self._next(generation)
            if p is None:
                return
            ev = p.event
            if ev.pid == self._own_pid:
                self._answer(p, True, "self")
            elif time.monotonic_ns() > p.deadline_ns:
                self._fail(p, "timeout")  # waited behind a slow decision
            elif self._hung >= self.max_hung:
                self._fail(p, "overload")
            else:
                try:
                    allow = bool(self._policy(ev))
                except Exception as exc:
                    log.error("fanotify policy raised on %s: %s: %s", ev.path, type(exc).__name__, exc)
                    self._fail(p, "error")
                else:
                    if time.monotonic_ns() > p.deadline_ns:
                        self._fail(p, "timeout")
                    else:
                        self._answer(p, allow, "allow" if allow else "deny")
            with self._lock:
                if generation != self._generation:  # the watchdog replaced this reader while it decided
                    self._hung -= 1
                    return
                self._current = None

    # ------------------------------------------------------------------ watchdog

    def _watch(self) -> None:
        """Answer the current event when its decision overruns the budget, and
        hand the queue to a fresh reader."""
        idle_s = max(0.001, min(0.05, self.budget_ns / 4e9))
        while True:
            with self._lock:
                if self._closing:
                    return
                p = self._current
            if p is None or p.answered:
                self._closed.wait(idle_s)
                continue
            wait_ns = p.deadline_ns - time.monotonic_ns()
            if wait_ns > 0:
                self._closed.wait(wait_ns / 1e9)
                continue
            with self._lock:
                if self._current is not p or p.answered or self._closing:
                    continue
                self._generation += 1
                self._hung += 1
                self._current = None
            self._fail(p, "timeout")
            self._start_reader()
