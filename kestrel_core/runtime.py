"""Run-time state shared by the components of one run: the profile, the
schema, the counters sinks export, and the loaded components."""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from typing import Any, Callable

import attrs

from .schema import Schema


@attrs.define(eq=False)
class Stats:
    """Counters of one run.  Written by the engine thread (and by source
    threads for drops, under ``lock``); read by metric sinks at any time."""

    events_read: Counter = attrs.Factory(Counter)
    """source -> records handed to the bus (accepted or dropped)."""
    events_processed: Counter = attrs.Factory(Counter)
    """(source, category) -> events the engine evaluated."""
    events_dropped: Counter = attrs.Factory(Counter)
    """(source, reason) -> records lost; reasons: queue_full, malformed, ..."""
    alerts: Counter = attrs.Factory(Counter)
    """(rule, severity) -> alerts."""
    evictions: Counter = attrs.Factory(Counter)
    """(rule, reason) -> sequence partials evicted."""
    events_lost: Counter = attrs.Factory(Counter)
    """(source, reason) -> events the kernel side lost before a source read
    them (ring buffer / queue overflow).  Not part of the read/processed/
    dropped balance: they were never read."""
    alerts_incomplete: Counter = attrs.Factory(Counter)
    """rule -> sequence alerts flagged ``incomplete_due_to_loss``."""
    sink_errors: Counter = attrs.Factory(Counter)
    """sink -> calls of that sink that raised (each failed attempt; kestrel_core/delivery.py)."""
    sink_dropped: Counter = attrs.Factory(Counter)
    """(sink, kind, reason) -> alerts/events/gaps that sink never took (queue_full, failed, bypassed, shutdown)."""
    detector_errors: Counter = attrs.Factory(Counter)
    """detector -> calls of that detector that raised (its batch got no detector alerts)."""
    last_event_ts_ns: int = 0
    queue_depth: int = 0
    lock: threading.Lock = attrs.Factory(threading.Lock)
    extra: dict[str, Any] = attrs.Factory(dict)
    """Engine gauges published by later components (per-rule timings, state sizes)."""

    def reject(self, source: str, reason: str, n: int = 1) -> None:
        """Records a source read but could not turn into events: read and dropped."""
        with self.lock:
            self.events_read[source] += n
            self.events_dropped[(source, reason)] += n

    def balance(self) -> dict[str, int]:
        read = sum(self.events_read.values())
        processed = sum(self.events_processed.values())
        dropped = sum(self.events_dropped.values())
        return {"read": read, "processed": processed, "dropped": dropped}


@attrs.define(eq=False)
class RunContext:
    schema: Schema
    profile: Any = None
    stats: Stats = attrs.Factory(Stats)
    mode: str = "detect"
    log: logging.Logger = attrs.Factory(lambda: logging.getLogger("kestrel"))
    components: dict[str, list[Any]] = attrs.Factory(dict)
    """role -> built component instances."""
    engine: Any = None
    """The detection engine running now (replaced by a hot reload)."""
    packset: Any = None
    """The rule pack set running now (:class:`kestrel_core.packs.PackSet`)."""
    reload_listeners: list[Callable[[Any, Any], None]] = attrs.Factory(list)
    """Called on the engine thread as ``(packset, engine)`` after a hot reload was swapped in."""
    alert_inbox: deque = attrs.Factory(deque)
    """Alerts raised off the engine thread (inline enforcement decisions); the
    pipeline hands them to actions and sinks between batches."""
    expiry_tick: bool = False
    """Live run: end sequence windows on the clock while no event arrives
    (set by components that act on windows, e.g. sequence-armed blocking)."""

    def reject(self, source: str, reason: str, n: int = 1) -> None:
        self.stats.reject(source, reason, n)
