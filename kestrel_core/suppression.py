"""Alert suppression: one alert per rule and key per window, in event time.

A rule's ``suppress = { by = ["process.entity_id"], window = "5m" }`` (or the
profile's ``[alerts] suppress`` default) keys its alerts by the values of the
``by`` fields.  The first alert of a key opens a window of that length from
its event time (``Alert.ts_mono_ns``, the time of its last matched event);
later alerts of the key inside the window are suppressed and counted.  The
first alert after the window carries the count (``fields["kestrel.suppressed_count"]``);
a window whose count no later alert took is reported at the end as a
summary record (the window's last suppressed alert with the count and
``fields["kestrel.suppression_summary"] = true``).  Only event time is read,
never the clock, so a replay suppresses the same alerts every time.

One :class:`Suppressor` serves both ``kestrel run`` (``pipeline.Run._deliver``)
and ``kestrel replay``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Iterable

import attrs

COUNT_FIELD = "kestrel.suppressed_count"
SUMMARY_FIELD = "kestrel.suppression_summary"
METRIC = "kestrel_alerts_suppressed_total"
SUPPRESS_KEYS = ("by", "window")
MAX_KEYS = 100_000
"""Open windows held at once; past it the oldest closed windows are reported early."""

_UNITS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}
_WINDOW = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")


@attrs.define(frozen=True)
class SuppressSpec:
    by: tuple[str, ...]
    window_ns: int
    window: str
    """As written (``"5m"``)."""

    def canonical(self) -> dict[str, Any]:
        return {"by": list(self.by), "window_ns": self.window_ns}


def parse_window(text: Any) -> int | None:
    """Nanoseconds of ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"`` (None if not one of these, or zero)."""
    m = _WINDOW.match(text) if isinstance(text, str) else None
    if not m or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_suppress(value: Any) -> tuple[SuppressSpec | bool | None, str | None]:
    """(spec, None), or (False, None) for ``suppress = false``, or (None, what is wrong)."""
    if value is False:
        return False, None
    if not isinstance(value, dict):
        return None, ("must be a table { by = [fields], window = \"5m\" } or false, "
                      f"not {type(value).__name__}")
    for key in value:
        if key not in SUPPRESS_KEYS:
            import difflib

            close = difflib.get_close_matches(key, SUPPRESS_KEYS, n=1)
            return None, f"unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close else
                                                   f" (keys: {', '.join(SUPPRESS_KEYS)})")
    by = value.get("by")
    if not (isinstance(by, list) and by and all(isinstance(f, str) and f for f in by)):
        return None, "'by' must be a non-empty list of field names"
    window = value.get("window")
    ns = parse_window(window)
    if ns is None:
        return None, f"'window' must be a positive duration such as \"30s\", \"5m\" or \"1h\", not {window!r}"
    return SuppressSpec(tuple(by), ns, window), None


@attrs.define(eq=False)
class _Window:
    start_ns: int
    end_ns: int
    count: int = 0
    last: Any = None
    """The last alert suppressed in this window (the evidence of its summary)."""


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


class Suppressor:
    """Decides, alert by alert, what reaches the sinks.  Not thread-safe: the
    engine thread (or the replay loop) owns it."""

    def __init__(self, schema: Any, rules: Iterable[Any] = (), default: SuppressSpec | None = None) -> None:
        self.schema = schema
        self.default = default
        self.specs: dict[str, SuppressSpec] = {}
        self.windows: dict[tuple[str, Any], _Window] = {}
        self.suppressed: Counter[str] = Counter()
        """rule -> alerts suppressed (kestrel_alerts_suppressed_total)."""
        self.summaries = 0
        self._pending: list[Any] = []
        self._offers = 0
        self._latest = 0
        self.set_rules(rules)

    @property
    def active(self) -> bool:
        return bool(self.specs) or bool(self.windows)

    def set_rules(self, rules: Iterable[Any]) -> None:
        """The rules running now (again after a hot reload): a rule whose spec
        changed or that is gone has its windows closed (reported by
        :meth:`take`), the others keep theirs."""
        specs = {}
        for r in rules:
            spec = r.suppress if r.suppress is not None else self.default
            if spec:
                specs[r.id] = spec
        changed = {rid for rid in set(self.specs) | set(specs) if self.specs.get(rid) != specs.get(rid)}
        self.specs = specs
        if changed:
            for k in [k for k in self.windows if k[0] in changed]:
                self._close(k)

    def _key(self, alert: Any, by: tuple[str, ...]) -> tuple[Any, ...]:
        out = []
        for path in by:
            fdef = self.schema.get(path)
            value = None
            if fdef is not None:
                for e in alert.events:  # the first matched event that has the field
                    value = e.fields.get(fdef.id)
                    if value is not None:
                        break
            out.append(_hashable(value))
        return tuple(out)

    def offer(self, alert: Any) -> bool:
        """True: deliver ``alert`` (it may now carry the count of the window
        before it); False: suppressed and counted."""
        spec = self.specs.get(alert.rule_id)
        if spec is None:
            return True
        key = (alert.rule_id, self._key(alert, spec.by))
        t = alert.ts_mono_ns
        self._latest = max(self._latest, t)
        w = self.windows.get(key)
        if w is not None and t < w.end_ns:  # (an alert older than the window start is inside it too)
            w.count += 1
            w.last = alert
            self.suppressed[alert.rule_id] += 1
            return False
        if w is not None and w.count:
            alert.fields[COUNT_FIELD] = w.count
        self.windows.pop(key, None)  # re-inserted: the dict stays in window-open order
        self.windows[key] = _Window(t, t + spec.window_ns)
        self._offers += 1
        if self._offers % 1024 == 0 and len(self.windows) > 4096:
            self._purge()
        return True

    def _purge(self) -> None:
        """Forget closed windows that suppressed nothing; past MAX_KEYS, report
        the oldest closed ones early (bounded memory)."""
        now = self._latest
        for k in [k for k, w in self.windows.items() if w.end_ns <= now and not w.count]:
            del self.windows[k]
        if len(self.windows) > MAX_KEYS:
            for k in [k for k, w in self.windows.items() if w.end_ns <= now][: len(self.windows) - MAX_KEYS]:
                self._close(k)

    def _close(self, key: tuple[str, Any]) -> None:
        w = self.windows.pop(key)
        if w.count:
            self._pending.append(self._summary(w))

    def _summary(self, w: _Window) -> Any:
        self.summaries += 1
        return attrs.evolve(w.last, fields={**w.last.fields, COUNT_FIELD: w.count, SUMMARY_FIELD: True},
                            actions=list(w.last.actions))

    def take(self) -> list[Any]:
        """Summary records of windows closed early (a reload, the key bound)."""
        out, self._pending = self._pending, []
        return out

    def finish(self) -> list[Any]:
        """At the end of a run or replay: a summary record for every window
        whose suppressed count no later alert carried, in window-open order."""
        out = self.take()
        for w in self.windows.values():
            if w.count:
                out.append(self._summary(w))
        self.windows.clear()
        return out

    def publish(self, stats: Any) -> None:
        """``kestrel_alerts_suppressed_total{rule}`` through ``stats.extra["metrics"]`` (sink-prometheus exports it)."""
        with stats.lock:
            # (the key spelt out: sink-prometheus's docs test finds published metrics by it)
            stats.extra.setdefault("metrics", {})["kestrel_alerts_suppressed_total"] = {
                "help": "Alerts suppressed as repeats of one rule and key within its suppression window.",
                "type": "counter", "labels": ("rule",),
                "values": {(rule,): n for rule, n in sorted(self.suppressed.items())}}


def is_summary(alert: Any) -> bool:
    return bool(alert.fields.get(SUMMARY_FIELD))


def profile_default(profile: Any) -> SuppressSpec | None:
    """The profile's ``[rules] suppress`` default (checked when the profile was read), or None."""
    table = getattr(getattr(profile, "rules", None), "suppress", None)
    if not table:
        return None
    spec, _ = parse_suppress(table)
    return spec or None


def unknown_by_fields(spec: SuppressSpec, schema: Any) -> list[tuple[str, str]]:
    """(field, message) for each ``by`` field the schema does not know.  Such a
    field is null in every alert, so all the rule's alerts would share one key
    and a misspelling would silently hide distinct activity."""
    from .eql.ir import _nearest_field

    out = []
    for name in spec.by:
        fd = schema.get(name)
        if fd is None or not fd.declared:
            near = _nearest_field(schema, name)
            out.append((name, f"unknown field '{name}' in 'by'" + (f"; did you mean {near}?" if near else "") +
                        " (it would be null in every alert, so they would all share one key)"))
    return out


def check_profile_default(_inst: Any, _attr: Any, value: Any) -> None:
    """attrs validator of ``[rules] suppress``: a ValueError the profile reader locates."""
    if value:
        spec, msg = parse_suppress(value)
        if msg:
            raise ValueError(f"suppress: {msg}")
        if isinstance(spec, SuppressSpec):
            from .plugins import rules_schema  # the fields rules may read, as rules check uses

            bad = unknown_by_fields(spec, rules_schema())
            if bad:
                raise ValueError("suppress: " + "; ".join(m for _, m in bad))
