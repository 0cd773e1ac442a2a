"""The typed event every component after the normalizer sees.

Fields are sparse: ``fields`` maps a schema field id to a typed value.  A field
that is absent is *missing*; a field present with ``None`` is *null*.  EQL treats
both as null; the distinction is kept for evidence and replay.

Ordering is ``(ts_mono_ns, event_id)`` everywhere (windows, sequences, replay),
so two runs over the same log see the same order.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs

from .schema import SCHEMA_VERSION, TIMESTAMP_ID, Schema


def process_entity_id(pid: int, start_ticks: int) -> str:
    """``process.entity_id`` of a process: its pid and its start time in clock
    ticks since boot (field 22 of ``/proc/<pid>/stat``), in hex.  Every live
    source uses this, so one process has one id whichever source saw it, and a
    reused pid gets a new one."""
    return f"{pid:x}-{start_ticks:x}"


@attrs.define(slots=True, eq=False)
class Event:
    category: str
    """Event category (``event.category``'s first value, or the source's type)."""
    fields: dict[int, Any]
    """field id -> typed value.  Never modified once the source has emitted
    the event: sinks and the engine share it, and a source may keep it as a
    decode-cache entry that other events share (see ``content``)."""
    ts_mono_ns: int
    """Monotonic time, for windows and ordering."""
    ts_wall_ns: int
    """Wall-clock time (ns since the epoch), for display and forensics."""
    event_id: int = 0
    """Monotonic tie-breaker, unique per run; assigned by the bus if 0."""
    entity_key: int = 0
    """Process entity: hash of (pid, start time[, container]) as an int < 2**128."""
    source_id: str = ""
    """Name of the source component that produced the event."""
    raw: Any = None
    """The record the event was built from, when the source keeps it (JSONL does)."""
    schema_version: str = SCHEMA_VERSION
    content: Any = None
    """An object a source hands to every event it decoded to the same fields
    apart from ``@timestamp`` (the same category and entity too), e.g. its
    decode cache entry; None: no such promise.  The engine evaluates rule
    predicates once per distinct content in a batch.  When ``fields`` *is*
    ``content``, that dict is shared by those events and its ``@timestamp``
    may be another one's: this event's time is ``ts_wall_ns``, and
    :meth:`own_fields` (``to_ecs``, ``get``) gives it.  The engine settles
    the events of alerts, and the pipeline those it hands to sinks that
    write events, so they see plain events."""

    def get(self, field_id: int, default: Any = None) -> Any:
        if field_id == TIMESTAMP_ID and self.fields is self.content:
            return self.ts_wall_ns
        return self.fields.get(field_id, default)

    def own_fields(self) -> dict[int, Any]:
        """The fields with this event's own ``@timestamp`` (a copy when the dict is shared)."""
        f = self.fields
        if f is self.content:
            f = f.copy()
            f[TIMESTAMP_ID] = self.ts_wall_ns
        return f

    def settle(self) -> None:
        """Give the event a fields dict of its own when it shares one (see ``content``)."""
        if self.fields is self.content:
            self.fields = self.own_fields()

    def sort_key(self) -> tuple[int, int]:
        return (self.ts_mono_ns, self.event_id)

    def to_ecs(self, schema: Schema) -> dict[str, Any]:
        """Flat ``{path: value}`` view, for sinks and evidence."""
        path = schema.path
        return {path(fid): value for fid, value in self.own_fields().items()}

    def to_nested(self, schema: Schema) -> dict[str, Any]:
        """Nested ECS document (``{"process": {"name": ...}}``)."""
        out: dict[str, Any] = {}
        for fid, value in self.own_fields().items():
            parts = schema.path(fid).split(".")
            node = out
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = node[part] = {}
                node = nxt
            node[parts[-1]] = value
        return out


@attrs.frozen
class Gap:
    """Events a source lost before they reached Kestrel (kernel ring buffer or
    fanotify queue overflow).  Not part of the read/processed/dropped balance:
    these records were never read.  Times are on the events' ``ts_mono_ns``
    clock (``first_ts_ns <= last_ts_ns``); the wall times are for display."""

    source_id: str
    lost: int
    """Number of events lost (0 when the source cannot tell how many)."""
    first_ts_ns: int
    last_ts_ns: int
    reason: str = "overflow"
    first_wall_ns: int = 0
    last_wall_ns: int = 0

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        """Whether the lost span intersects the closed window [start_ns, end_ns]."""
        return self.first_ts_ns <= end_ns and start_ns <= self.last_ts_ns


class RecentGaps:
    """Bounded memory of recent gaps, used to flag alerts of sequences whose
    window overlaps a loss.  Old gaps fall out first: a sequence window is
    bounded by maxspan/TTL, so only recent losses can overlap it."""

    def __init__(self, maxlen: int = 1024) -> None:
        self._gaps: collections.deque[Gap] = collections.deque(maxlen=maxlen)

    def add(self, gap: Gap) -> None:
        self._gaps.append(gap)

    def __len__(self) -> int:
        return len(self._gaps)

    def overlapping(self, start_ns: int, end_ns: int) -> list[Gap]:
        return [g for g in self._gaps if g.overlaps(start_ns, end_ns)]

    def flag(self, alert: Any) -> bool:
        """Set ``alert.incomplete_due_to_loss`` for a sequence alert (two or more
        matched events) whose window [first event ts, last event ts] overlaps a
        known gap; returns the flag."""
        events = getattr(alert, "events", ())
        if len(events) < 2 or not self._gaps:
            return False
        start = min(e.ts_mono_ns for e in events)
        end = max(e.ts_mono_ns for e in events)
        if self.overlapping(start, end):
            alert.incomplete_due_to_loss = True
            return True
        return False
