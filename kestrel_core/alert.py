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
    risk_score: int | None = None
    rule_mode: str = "observe"
    """The rule's mode: observe | shadow | enforce (``mode`` is the run's)."""
    rule_actions: tuple[str, ...] = ("alert",)
    """What the rule asks for: ``alert`` plus blocking targets (deny-exec, ...)."""
    pack: str | None = None
    """Name of the rule's pack."""
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
    incomplete_due_to_loss: bool = False
    """A sequence whose window overlaps a gap (events a source lost): the
    match may be partial evidence, or a different match may have been missed."""

    def to_dict(self, schema: Schema) -> dict[str, Any]:
        """JSON-ready form: stable key order, events as their raw record when
        the source kept one, else as a nested ECS document."""
        return {
            "rule": {"id": self.rule_id, "name": self.rule_name, "severity": self.severity,
                     "risk_score": self.risk_score, "mode": self.rule_mode, "tags": list(self.tags)},
            "ts_wall_ns": self.ts_wall_ns,
            "ts_mono_ns": self.ts_mono_ns,
            "mode": self.mode,
            "join_keys": list(self.join_keys),
            "fields": self.fields,
            "actions": self.actions,
            "incomplete_due_to_loss": self.incomplete_due_to_loss,
            "events": [e.raw if e.raw is not None else e.to_nested(schema) for e in self.events],
        }


SEVERITY_ORDER = ("critical", "high", "medium", "low")


def summary_table(counts: "dict[tuple[str, str], int]") -> list[str]:
    """``{(rule_id, severity): n}`` -> text rows: one per rule (most alerts
    first), a column per severity present, a total row.  What ``kestrel run``'s
    console and ``kestrel replay`` print when they end."""
    if not counts:
        return []
    present = {sev for _, sev in counts}
    sevs = [s for s in SEVERITY_ORDER if s in present] + sorted(present - set(SEVERITY_ORDER))
    by_rule: dict[str, dict[str, int]] = {}
    for (rule, sev), n in counts.items():
        by_rule.setdefault(rule, {}).setdefault(sev, 0)
        by_rule[rule][sev] += n
    rows = sorted(by_rule.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    width = max(len("total"), *(len(r) for r in by_rule))
    cols = [max(len(s), 5) for s in sevs]

    def line(name: str, cells: list[Any], total: Any) -> str:
        return f"{name:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, cols)) + f"  {total:>5}"

    out = [line("rule", sevs, "total")]
    out += [line(rule, [c.get(s) or "" for s in sevs], sum(c.values())) for rule, c in rows]
    out.append(line("total", [sum(c.get(s, 0) for _, c in rows) for s in sevs], sum(counts.values())))
    return out
