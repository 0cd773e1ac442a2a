"""Alerts: what the engine hands to actions and sinks."""

from __future__ import annotations

from typing import Any

import attrs

from .event import Event
from .schema import Schema


@attrs.define(kw_only=True, eq=False)
class Alert:
    rule_id: str
    rule_name: str
    severity: str = "medium"
    description: str = ""
    tags: tuple[str, ...] = ()
    events: list[Event] = attrs.Factory(list)
    """Matched events, in step order (one for a single-event rule)."""
    fields: dict[str, Any] = attrs.Factory(dict)
    """Values of the fields the rule references, from the matched events
    (for sequences: ``{path: [value per event]}``)."""
    join_keys: tuple[Any, ...] = ()
    """Values of the ``sequence by`` keys, if any."""
    ts_mono_ns: int = 0
    ts_wall_ns: int = 0
    """Time of the last matched event."""
    mode: str = "detect"
    actions: list[str] = attrs.Factory(list)
    """One line per action taken (or simulated in replay)."""

    def to_dict(self, schema: Schema) -> dict[str, Any]:
        """JSON-ready form: stable key order, events as their raw record when
        the source kept one, else as a nested ECS document."""
        return {
            "rule": {"id": self.rule_id, "name": self.rule_name, "severity": self.severity, "tags": list(self.tags)},
            "ts_wall_ns": self.ts_wall_ns,
            "ts_mono_ns": self.ts_mono_ns,
            "mode": self.mode,
            "join_keys": list(self.join_keys),
            "fields": self.fields,
            "actions": self.actions,
            "events": [e.raw if e.raw is not None else e.to_nested(schema) for e in self.events],
        }
