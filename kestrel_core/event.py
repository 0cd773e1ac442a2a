"""The typed event every component after the normalizer sees.

Fields are sparse: ``fields`` maps a schema field id to a typed value.  A field
that is absent is *missing*; a field present with ``None`` is *null*.  EQL treats
both as null; the distinction is kept for evidence and replay.

Ordering is ``(ts_mono_ns, event_id)`` everywhere (windows, sequences, replay),
so two runs over the same log see the same order.
"""

from __future__ import annotations

from typing import Any

import attrs

from .schema import SCHEMA_VERSION, Schema


@attrs.define(slots=True, eq=False)
class Event:
    category: str
    """Event category (``event.category``'s first value, or the source's type)."""
    fields: dict[int, Any]
    """field id -> typed value."""
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

    def get(self, field_id: int, default: Any = None) -> Any:
        return self.fields.get(field_id, default)

    def sort_key(self) -> tuple[int, int]:
        return (self.ts_mono_ns, self.event_id)

    def to_ecs(self, schema: Schema) -> dict[str, Any]:
        """Flat ``{path: value}`` view, for sinks and evidence."""
        path = schema.path
        return {path(fid): value for fid, value in self.fields.items()}

    def to_nested(self, schema: Schema) -> dict[str, Any]:
        """Nested ECS document (``{"process": {"name": ...}}``)."""
        out: dict[str, Any] = {}
        for fid, value in self.fields.items():
            parts = schema.path(fid).split(".")
            node = out
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = node[part] = {}
                node = nxt
            node[parts[-1]] = value
        return out
