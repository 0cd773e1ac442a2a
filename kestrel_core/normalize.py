"""ECS JSON normalizer: a JSON object (nested or dotted keys) -> typed Event.

Used by the JSONL source, ``kestrel eval`` and replay.  Declared ECS fields are
coerced to their schema type; fields the schema does not know are registered
on first sight and keep the JSON value as it is.

Told the rules' interest (:meth:`EcsJsonNormalizer.set_interest`, which the
run calls), it builds *lean* events: only the fields the rules read, plus
time and category, read by a compiled :class:`~kestrel_core.leanjson.FieldPlan`
instead of flattening and converting every field.  Such an event
(:class:`LeanEvent`) completes itself on ``settle()`` (the engine settles the
events of an alert before they leave it), so alerts are those of the full
path, with the same fields and raw record.  A malformed value in a field no
rule reads is then not an error (the full path rejects that event).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from typing import Any, Callable, Iterable, Sequence

import attrs

from .event import Event
from .interfaces import NormalizeError, Normalizer
from .schema import FieldType, Schema, coerce
from .leanjson import MISSING, FieldPlan, Timestamps, typed_fields
from .timestamps import TIMESTAMP_FORMATS, event_timestamp

MAX_DEPTH = 100
"""Deepest nesting of objects and arrays an input document may have.  ECS
events nest 3-5 levels; orjson reads up to 1024 but writes at most 254
(alerts embed their events' documents), and Python recursion stops near 1000,
so a deeper document is rejected with a located error instead."""


class DepthError(ValueError):
    """A document nested deeper than :data:`MAX_DEPTH`."""


def flatten(obj: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None, *,
            max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``{"process": {"name": "x"}, "a.b": 1}`` -> ``{"process.name": "x", "a.b": 1}``.

    Objects nested deeper than ``max_depth`` raise :class:`DepthError` naming
    the path, so the recursion stays far below the interpreter's limit
    (recursion is 1.5x the speed of an explicit stack, and this runs per event)."""
    if out is None:
        out = {}
    try:
        _flatten(obj, prefix, out, max_depth)
    except _TooDeep as exc:
        path = exc.args[0]
        where = path if len(path) <= 60 else path[:57] + "..."
        raise DepthError(f"nested deeper than {max_depth} levels at {where!r}") from None
    return out


class _TooDeep(Exception):
    pass


def _flatten(obj: dict[str, Any], prefix: str, out: dict[str, Any], left: int) -> None:
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if value.__class__ is dict and value:
            if left <= 1:
                raise _TooDeep(path)
            _flatten(value, path + ".", out, left - 1)
        else:
            out[path] = value


def nest(items: Iterable[tuple[Sequence[str], Any]]) -> dict[str, Any]:
    """``[(("process", "name"), "sh")]`` -> ``{"process": {"name": "sh"}}`` (the inverse of :func:`flatten`)."""
    out: dict[str, Any] = {}
    for parts, value in items:
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt.__class__ is not dict:
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return out


@functools.lru_cache(maxsize=65536)
def _canonical_ip(value: str) -> str:
    # Hosts talk to few peers; parsing each address once saves ~2 µs per event.
    return coerce(value, FieldType.IP)


def _converter(ftype: FieldType) -> Callable[[Any], Any]:
    """Type check with a fast path for values that already have the right
    Python type (the common case for JSON), falling back to ``coerce``."""
    if ftype is FieldType.KEYWORD:
        return lambda v: v if v.__class__ is str else coerce(v, ftype)
    if ftype is FieldType.LONG:
        return lambda v: v if v.__class__ is int else coerce(v, ftype)
    if ftype is FieldType.DOUBLE:
        return lambda v: v if v.__class__ is float else coerce(v, ftype)
    if ftype is FieldType.BOOLEAN:
        return lambda v: v if v.__class__ is bool else coerce(v, ftype)
    if ftype is FieldType.KEYWORD_LIST:
        def keywords(v: Any) -> Any:  # most ECS lists hold one string (event.category, event.type)
            if v.__class__ is list and (len(v) == 1 and v[0].__class__ is str or all(x.__class__ is str for x in v)):
                return v
            return coerce(v, ftype)
        return keywords
    if ftype is FieldType.IP:
        return lambda v: _canonical_ip(v) if v.__class__ is str else coerce(v, ftype)
    return lambda v: coerce(v, ftype)


class LeanEvent(Event):
    """An event with only the fields the rules read; ``settle()`` gives it
    every field, as the full normalizer would (once, for the events that
    alert or reach a sink that writes events).  Until then ``entity_key`` is
    -1 when it is the hash of ``process.entity_id`` (no rule reads it)."""

    __slots__ = ("normalizer", "plan")

    def settle(self) -> None:
        n = self.normalizer
        if n is None:
            return
        self.normalizer = None
        try:
            full = n.full_event(self.raw)
        except NormalizeError as exc:  # a field no rule reads is malformed: the event keeps the fields it has
            n.context.log.warning("event %d: %s (its alert shows the fields the rules read)", self.event_id, exc)
            if self.entity_key == -1:
                self.entity_key = 0
            return
        self.fields, self.entity_key = full.fields, full.entity_key


def _stale(ev: Any) -> bool:
    return ev.__class__ is LeanEvent and ev.normalizer is not None and ev.plan is not ev.normalizer._lean


def settle_stale(events: Any) -> bool:
    """Complete the lean events built under an interest since replaced (a
    rule reload: the new rules may read fields they lack).  Returns whether
    the last one was current: a normalizer's later events are current too."""
    current = not events or not _stale(events[-1])
    for ev in events:
        if _stale(ev):
            ev.settle()
    return current


def _entity_key(entity: Any, pid: Any) -> int:
    if entity is not None:  # stable across runs (replay), unlike hash()
        return int.from_bytes(hashlib.blake2b(str(entity).encode(), digest_size=16).digest(), "big")
    return pid if isinstance(pid, int) else 0


class EcsJsonNormalizer(Normalizer):
    """ECS-style JSON object -> Event."""

    PLUGIN_NAME = "ecs-json"
    DESCRIPTION = "ECS JSON objects (nested or dotted keys) to typed events"

    @attrs.define(kw_only=True)
    class Settings:
        category_field: str = "event.category"
        timestamp_field: str = "@timestamp"
        timestamp_format: str = "auto"
        missing_timestamp: str = attrs.field(default="now", validator=attrs.validators.in_(("now", "error")))
        """``now``: stamp with the arrival time; ``error``: reject the record."""
        default_category: str = ""
        """Category of events without one (empty: reject them)."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.schema: Schema = context.schema
        self._ids = itertools.count(1)
        if settings.timestamp_format not in TIMESTAMP_FORMATS:
            raise ValueError(f"timestamp_format must be one of {', '.join(TIMESTAMP_FORMATS)}")
        self._plan: dict[str, tuple[int, Callable[[Any], Any] | None]] = {}
        """path -> (field id, converter): resolved once per path, not per event."""
        self._lean: Any = None
        """(field plan, typed-fields function, indexes) when building lean events."""

    def set_interest(self, interest: Any) -> None:
        """Build lean events reading only ``interest.fields`` (the rules'
        fields; the run calls this at start and after a rule reload).  An
        interest without fields turns the lean path off."""
        fields = getattr(interest, "fields", None)
        if not fields:
            self._lean = None
            return
        s = self.settings
        # the process keys too: actions read a pending sequence's pid before it alerts (enforce arming)
        typed = sorted((set(fields) | {"process.pid", "process.entity_id"}) - {s.timestamp_field})
        specs = []
        for path in typed:
            fid, conv = self._plan.get(path) or self._plan_for(path)
            specs.append((path, fid, conv or _same))
        paths = typed + [s.category_field, s.timestamp_field]
        plan = FieldPlan(paths)
        index = {p: plan.paths.index(p) for p in paths}
        ts_fid = self.schema.resolve(s.timestamp_field)
        self._lean = (plan.extract, typed_fields(specs, [self.schema.field(fid).type for _p, fid, _c in specs]),
                      index[s.category_field], index[s.timestamp_field], index["process.entity_id"],
                      index["process.pid"], ts_fid if self.schema.field(ts_fid).type is FieldType.DATE else None,
                      Timestamps().event)

    def full_event(self, record: Any) -> Event:
        """The whole event of ``record`` (every field typed), lean or not."""
        if not isinstance(record, dict):
            raise NormalizeError(f"expected a JSON object, got {type(record).__name__}")
        return self._normalize_full(record, "")

    def _plan_for(self, path: str) -> tuple[int, Callable[[Any], Any] | None]:
        fid = self.schema.resolve(path)
        ftype = self.schema.field(fid).type
        conv = None if ftype is FieldType.ANY or path == self.settings.timestamp_field else _converter(ftype)
        self._plan[path] = (fid, conv)
        return fid, conv

    def normalize(self, record: Any, source_id: str) -> Event:
        if not isinstance(record, dict):
            raise NormalizeError(f"expected a JSON object, got {type(record).__name__}")
        if self._lean is not None:
            return self._normalize_lean(record, source_id)
        return self._normalize_full(record, source_id)

    def _normalize_full(self, record: dict[str, Any], source_id: str) -> Event:
        s = self.settings
        try:
            flat = flatten(record)
        except DepthError as exc:
            raise NormalizeError(str(exc)) from None
        schema = self.schema
        plan = self._plan
        fields: dict[int, Any] = {}
        for path, value in flat.items():
            fid, conv = plan.get(path) or self._plan_for(path)
            if conv is not None and value is not None:
                try:
                    value = conv(value)
                except ValueError as exc:
                    raise NormalizeError(f"field {path!r}: {exc}") from None
            fields[fid] = value

        category = self._category_of(flat.get(s.category_field))
        ts = flat.get(s.timestamp_field)
        ts_ns = self._time_of(ts, event_timestamp)
        if ts is not None:
            fid = schema.resolve(s.timestamp_field)
            if schema.field(fid).type is FieldType.DATE:
                fields[fid] = ts_ns

        entity_key = _entity_key(flat.get("process.entity_id"), flat.get("process.pid"))
        return Event(
            category=category,
            fields=fields,
            ts_mono_ns=ts_ns,
            ts_wall_ns=ts_ns,
            event_id=next(self._ids),
            entity_key=entity_key,
            source_id=source_id,
            raw=record,
        )

    def _category_of(self, category: Any) -> str:
        """The event's category from its category field's value (the first of a
        list), else the configured default; what the full and lean paths share."""
        if category.__class__ is list:
            category = category[0] if category else None
        if category is MISSING or category is None or category == "":
            s = self.settings
            if not s.default_category:
                raise NormalizeError(f"missing {s.category_field!r}")
            return s.default_category
        if category.__class__ is not str:
            raise NormalizeError(f"{self.settings.category_field!r} must be a string, got {category!r}")
        return category

    def _time_of(self, ts: Any, parse: Callable[[Any, str], int]) -> int:
        """Nanoseconds of the event's time field value (now when it is absent and that is allowed)."""
        s = self.settings
        if ts is MISSING or ts is None:
            if s.missing_timestamp == "error":
                raise NormalizeError(f"missing {s.timestamp_field!r}")
            return time.time_ns()
        try:
            return parse(ts, s.timestamp_format)
        except (ValueError, OverflowError) as exc:
            raise NormalizeError(str(exc)) from None

    def _normalize_lean(self, record: dict[str, Any], source_id: str) -> Event:
        # one read of the tuple: set_interest may replace it from the engine thread (a reload)
        lean = self._lean
        extract, typed, cat_i, ts_i, entity_i, pid_i, ts_fid, when = lean
        values = extract(record)
        try:
            fields = typed(values)
        except ValueError as exc:  # LeanError: "field 'x': why", as the full path words it
            raise NormalizeError(str(exc)) from None
        category = self._category_of(values[cat_i])
        ts = values[ts_i]
        ts_ns = self._time_of(ts, when)
        if ts_fid is not None and ts is not MISSING and ts is not None:
            fields[ts_fid] = ts_ns
        entity = values[entity_i]
        if entity is MISSING or entity is None:
            pid = values[pid_i]
            key = pid if pid.__class__ is int else 0
        else:  # the hash waits for settle(): only sinks and logs of whole events read it
            key = -1
        ev = LeanEvent(category, fields, ts_ns, ts_ns, next(self._ids), key, source_id, record)
        ev.normalizer, ev.plan = self, lean
        return ev


def _same(value: Any) -> Any:
    return value
