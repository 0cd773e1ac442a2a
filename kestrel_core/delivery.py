"""Sink isolation: every sink of a run gets a bounded queue and a worker
thread of its own, so a sink that raises, stalls or is slow never stops
detection or the other sinks.

The engine thread only appends to the queues (never waits on a sink).  A
worker calls its sink's methods in order (``write_events``, ``write_gap``,
``write_alert``, ``write_incident`` and ``flush`` exactly as the engine thread used to), retries
a failed call when the sink's ``delivery`` settings ask for it, bypasses a
sink that keeps failing, and counts what the sink never got:

* ``stats.sink_errors[sink]``: calls that raised (each failed attempt);
* ``stats.sink_dropped[(sink, kind, reason)]``: alerts, events, gaps and
  incident records the sink did not take, ``kind`` ``alert``/``event``/``gap``/``incident``, ``reason``
  ``queue_full``, ``failed`` (the call raised and retries, if any, were
  exhausted), ``bypassed`` (sent while the sink was bypassed) or
  ``shutdown`` (still queued when the bounded wait at shutdown ran out).

Settings: the ``delivery`` table of a ``[[sinks]]`` entry
(docs/profile-reference.md); isolation as a whole: docs/hooks.md, Sink.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

import attrs

from .validators import non_negative, positive

log = logging.getLogger("kestrel")

ERROR_LOG_INTERVAL_S = 10.0
"""At most one failure line per sink in this interval (the counter has every failure)."""


class SinkError(Exception):
    """What a sink may raise to say more than "it failed": ``dropped``, the
    number of alerts the failed call gave up on (a batching sink's buffer;
    default: the item the call was handed), and ``retryable=False`` when
    trying the same call again cannot help (the sink already retried, or the
    receiver refused the data for good)."""

    def __init__(self, message: str, *, dropped: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.dropped = dropped
        self.retryable = retryable


@attrs.define(kw_only=True)
class Delivery:
    """How the pipeline hands one sink its alerts and events (the ``delivery``
    table of a ``[[sinks]]`` entry)."""

    queue: int = attrs.field(default=10000, validator=positive)
    """Items (an alert, a batch of events, a gap, an incident record) waiting for the sink; when full, what arrives is dropped for
    this sink and counted (reason ``queue_full``)."""
    queue_events: int = attrs.field(default=200000, validator=positive)
    """Events in the batches waiting for a sink that takes events (``klog``): the memory bound of a slow one."""
    retries: int = attrs.field(default=0, validator=non_negative)
    """Attempts again after a call raised, with back-off; then the item is dropped and counted (``failed``)."""
    backoff_ms: int = attrs.field(default=200, validator=positive)
    """Wait before the first retry; doubled after each, up to ``backoff_max_ms``."""
    backoff_max_ms: int = attrs.field(default=10000, validator=positive)
    """Longest wait between two retries."""
    bypass_after: int = attrs.field(default=0, validator=non_negative)
    """Consecutive failed items after which the sink is bypassed (0: never): what arrives meanwhile is dropped
    (``bypassed``)."""
    bypass_s: float = attrs.field(default=60.0, validator=non_negative)
    """How long a bypass lasts before the sink is tried again (0: for the rest of the run)."""
    shutdown_timeout_s: float = attrs.field(default=10.0, validator=positive)
    """At the end of the run, longest wait for the sink to take what is queued, flush and close."""

    @classmethod
    def for_sink(cls, sink: Any) -> "Delivery":
        """The defaults for a sink built without a profile entry (its class's ``DELIVERY_DEFAULTS`` first)."""
        return cls(**getattr(type(sink), "DELIVERY_DEFAULTS", {}))


KIND_ALERT, KIND_EVENT, KIND_GAP, KIND_INCIDENT = "alert", "event", "gap", "incident"


def _own_copy(record: Any) -> Any:
    """A deep copy of a JSON-ready record (an orjson round trip: ~6x faster than copy.deepcopy on incidents)."""
    import orjson

    try:
        return orjson.loads(orjson.dumps(record))
    except TypeError:  # a value orjson cannot write: copy it as it is
        import copy

        return copy.deepcopy(record)
_FLUSH = object()


def sink_names(sinks: list[Any]) -> list[str]:
    """``jsonl``, ``jsonl#2``, ...: the sinks' names in counters and logs (as for sources)."""
    seen: collections.Counter[str] = collections.Counter()
    names = []
    for sink in sinks:
        base = getattr(sink, "PLUGIN_NAME", None) or type(sink).__name__
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


class SinkWorker:
    """One sink's queue and thread.  ``put_*`` run on the engine thread and
    never block; everything that calls the sink runs on the worker thread
    (``open()`` excepted: the pipeline opens sinks before the run starts)."""

    def __init__(self, sink: Any, name: str, delivery: Delivery, stats: Any) -> None:
        self.sink, self.name, self.delivery, self.stats = sink, name, delivery, stats
        self._items: collections.deque[tuple[str, Any, int]] = collections.deque()
        self._queued_events = 0
        self._cond = threading.Condition()
        self._flush_wanted = False
        self._closing = False
        self._abort = threading.Event()
        """Set when the shutdown wait ran out: stop retrying, drop the rest."""
        self._bypass_until: float | None = None
        self._failures = 0  # consecutive failed items
        self.last_error = ""
        self._current: tuple[str, int] | None = None
        """(kind, count) of the item the sink is being handed now; counted as dropped if the thread is abandoned."""
        self._counted_lock = threading.Lock()
        self._logged_at = -ERROR_LOG_INTERVAL_S
        self._unlogged = 0
        self.takes_events = _overrides(sink, "write_events")
        self.takes_gaps = _overrides(sink, "write_gap")
        self.takes_incidents = _overrides(sink, "write_incident")
        self.alert_batch = max(1, int(getattr(sink, "alert_batch", 1) or 1)) if callable(
            getattr(sink, "write_alerts", None)) else 1
        """Alerts queued one after another that go to ``write_alerts`` in one call (a sink that batches)."""
        self._thread = threading.Thread(target=self._work, name=f"sink-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ------------------------------------------------------------------ engine thread

    def put_alert(self, alert: Any) -> None:
        self._put(KIND_ALERT, alert, 1)

    def put_events(self, events: list[Any]) -> None:
        if self.takes_events:
            self._put(KIND_EVENT, events, len(events))

    def put_gap(self, gap: Any) -> None:
        if self.takes_gaps:
            self._put(KIND_GAP, gap, 1)

    def put_incident(self, record: Any) -> None:
        if self.takes_incidents:
            # each sink its own copy: the same dict goes to every sink's thread, so one sink that edits
            # its record (pops the timeline) changed what another wrote, racily (jsonl lost timelines)
            self._put(KIND_INCIDENT, _own_copy(record), 1)

    def request_flush(self) -> None:
        with self._cond:
            self._flush_wanted = True
            self._cond.notify()

    def _put(self, kind: str, item: Any, n: int) -> None:
        with self._cond:
            if not self._closing and len(self._items) < self.delivery.queue and (
                    kind != KIND_EVENT or self._queued_events + n <= self.delivery.queue_events):
                self._items.append((kind, item, n))
                if kind == KIND_EVENT:
                    self._queued_events += n
                self._cond.notify()
                return
        self._count_dropped(kind, "queue_full" if not self._closing else "shutdown", n)

    def depth(self) -> int:
        return len(self._items)

    def finish(self) -> None:
        """No more items: the worker takes what is queued, flushes and closes."""
        with self._cond:
            self._closing = True
            self._flush_wanted = True
            self._cond.notify()

    def wait(self, deadline: float) -> bool:
        """Wait for the worker to end until ``deadline`` (time.monotonic());
        if it has not, stop its retries, count what is still queued as dropped
        (``shutdown``) and leave the thread behind (a daemon)."""
        if self._thread.ident is None:  # never started: nothing was queued
            return True
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return True
        with self._counted_lock:  # the worker may be returning from the call right now
            self._abort.set()
            current, self._current = self._current, None
        with self._cond:
            left, self._items = list(self._items), collections.deque()
        if current is not None and current[1]:
            self._count_dropped(current[0], "shutdown", current[1])
        for kind, _item, n in left:
            self._count_dropped(kind, "shutdown", n)
        self._thread.join(0.5)  # a worker in back-off wakes on the abort and counts its item
        log.error("sink %r did not finish within %.1f s (shutdown_timeout_s): %d queued items not delivered%s",
                  self.name, self.delivery.shutdown_timeout_s, len(left),
                  f"; last error: {self.last_error}" if self.last_error else "")
        return False

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._items and not self._flush_wanted and not self._closing:
                        self._cond.wait()
                    if self._items:
                        kind, item, n = self._items.popleft()
                        if kind == KIND_EVENT:
                            self._queued_events -= n
                        if kind == KIND_ALERT and self.alert_batch > 1:
                            item = [item]
                            while self._items and len(item) < self.alert_batch and self._items[0][0] == KIND_ALERT:
                                item.append(self._items.popleft()[1])
                            kind, n = "alerts", len(item)
                    elif self._flush_wanted:
                        self._flush_wanted = False
                        kind, item, n = "flush", _FLUSH, 0
                    else:
                        break
                if kind == "flush":
                    self._call("flush", self.sink.flush, (), 0)
                else:
                    self._deliver(kind, item, n)
        finally:
            self._call("close", self.sink.close, (), 0, retry=False, bypassable=False)

    def _deliver(self, kind: str, item: Any, n: int) -> None:
        if kind == "alerts":
            self._call("write_alerts", self.sink.write_alerts, (item,), n, kind=KIND_ALERT)
            return
        method = {KIND_ALERT: self.sink.write_alert, KIND_EVENT: self.sink.write_events,
                  KIND_GAP: self.sink.write_gap, KIND_INCIDENT: self.sink.write_incident}[kind]
        self._call(method.__name__, method, (item,), n, kind=kind)

    def _call(self, what: str, fn: Callable[..., Any], args: tuple, n: int, *, kind: str = KIND_ALERT,
              retry: bool = True, bypassable: bool = True) -> bool:
        """Call the sink; on failure log, count, retry as configured, then
        count what the call was carrying as dropped.  True when it succeeded."""
        if bypassable and self._bypassed():
            if n:
                self._count_dropped(kind, "bypassed", n)
            return False
        attempts = 1 + (self.delivery.retries if retry else 0)
        delay = self.delivery.backoff_ms / 1000
        for attempt in range(1, attempts + 1):
            if self._abort.is_set():
                if n:
                    self._count_dropped(kind, "shutdown", n)
                return False
            self._current = (kind, n)
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - a sink failure is isolated, logged and counted
                with self._counted_lock:
                    if self._abort.is_set() and self._current is None:
                        return False  # abandoned by the shutdown wait, which counted the item
                    self._current = None
                self.last_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SinkError) else str(exc)
                with self.stats.lock:
                    self.stats.sink_errors[self.name] += 1
                retryable = getattr(exc, "retryable", True)
                more = attempt < attempts and retryable
                self._log_failure(what, f"; retry {attempt} of {attempts - 1} in {delay:.1f} s" if more else "")
                if not more:
                    dropped = getattr(exc, "dropped", None)
                    dropped = n if dropped is None else dropped
                    if dropped:
                        self._count_dropped(kind if n else KIND_ALERT, "failed", dropped)
                    self._failed()
                    return False
                if self._abort.wait(delay):
                    continue  # the loop's abort check counts the item
                delay = min(delay * 2, self.delivery.backoff_max_ms / 1000)
            else:
                self._current = None
                self._failures = 0
                return True
        return False

    def _log_failure(self, what: str, retry: str) -> None:
        """Rate-limited: a receiver that is down must not flood the log with one line per alert."""
        now = time.monotonic()
        if now - self._logged_at < ERROR_LOG_INTERVAL_S:
            self._unlogged += 1
            return
        more = f" ({self._unlogged:,} more failures in the last {now - self._logged_at:.0f} s)" if self._unlogged else ""
        log.error("sink %r: %s failed: %s%s%s", self.name, what, self.last_error, retry, more)
        self._logged_at, self._unlogged = now, 0

    def _failed(self) -> None:
        self._failures += 1
        d = self.delivery
        if d.bypass_after and self._failures >= d.bypass_after:
            self._bypass_until = float("inf") if not d.bypass_s else time.monotonic() + d.bypass_s
            self._failures = 0
            log.error("sink %r: %d consecutive failures: bypassed %s; what arrives meanwhile is dropped and "
                      "counted", self.name, d.bypass_after,
                      "for the rest of the run" if not d.bypass_s else f"for {d.bypass_s:g} s")

    def _bypassed(self) -> bool:
        until = self._bypass_until
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        self._bypass_until = None
        log.warning("sink %r: bypass over, trying it again", self.name)
        return False

    def _count_dropped(self, kind: str, reason: str, n: int) -> None:
        with self.stats.lock:
            self.stats.sink_dropped[(self.name, kind, reason)] += n


def _overrides(sink: Any, method: str) -> bool:
    from .interfaces import Sink

    return getattr(type(sink), method, None) is not getattr(Sink, method)
