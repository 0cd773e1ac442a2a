"""ECS JSON normalizer: a JSON object (nested or dotted keys) -> typed Event.

Used by the JSONL source, ``kestrel eval`` and replay.  Declared ECS fields are
coerced to their schema type; fields the schema does not know are registered
on first sight and keep the JSON value as it is.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

import attrs

from .event import Event
from .interfaces import NormalizeError, Normalizer
from .schema import FieldType, Schema, coerce

TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")

_ISO_FRACTION = re.compile(r"^(?P<head>[^.]*?T?\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d+))?(?P<tz>Z|z|[+-]\d{2}:?\d{2})?$")


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


TS_MIN_NS, TS_MAX_NS = -(1 << 63), (1 << 63) - 1
"""Event times are signed 64-bit nanoseconds since the epoch (years 1677-2262)."""


def parse_timestamp(value: Any, fmt: str = "auto") -> int:
    """Nanoseconds since the epoch; raises ValueError naming what is wrong
    (never OverflowError: ``1.5e400``, ``Infinity`` and NaN are errors too)."""
    try:
        return _parse_timestamp(value, fmt)
    except OverflowError:
        raise ValueError(f"timestamp {_short(value)} is out of range") from None


def event_timestamp(value: Any, fmt: str = "auto") -> int:
    """:func:`parse_timestamp` for an event's time, which must also fit in
    signed 64 bits of nanoseconds (what the log, the engine and the sinks
    store)."""
    ns = parse_timestamp(value, fmt)
    if not TS_MIN_NS <= ns <= TS_MAX_NS:
        raise ValueError(f"timestamp {_short(value)} is out of range (an event time must lie between the years "
                         "1677 and 2262)")
    return ns


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_MAX_DIGITS = 40
"""Longer numeric strings are refused before int()/float() (Python's int
conversion stops at 4300 digits, with a message about its own limit)."""


def _number(text: str, fmt: str) -> int | float:
    stripped = text.strip()
    if len(stripped) > _MAX_DIGITS:
        raise ValueError(f"timestamp {_short(text)} is out of range ({fmt})")
    try:
        value = float(stripped) if any(c in stripped for c in ".eEnN") else int(stripped)
    except ValueError:
        raise ValueError(f"timestamp {_short(text)} is not a number ({fmt})") from None
    return value


def _parse_timestamp(value: Any, fmt: str) -> int:
    given = value
    if fmt == "auto":
        if isinstance(value, bool):
            raise ValueError(f"timestamp {value!r} is neither a number nor an ISO 8601 string")
        if isinstance(value, (int, float)):
            fmt = _epoch_unit(value)
        elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = _number(value, "auto")
            fmt = _epoch_unit(value)
        elif isinstance(value, str):
            fmt = "iso8601"
        else:
            raise ValueError(f"timestamp {_short(value)} is neither a number nor an ISO 8601 string")
    if fmt == "iso8601":
        if not isinstance(value, str):
            raise ValueError(f"timestamp {_short(value)} is not an ISO 8601 string")
        return _parse_iso(value)
    scale = {"epoch_s": 10**9, "epoch_ms": 10**6, "epoch_us": 10**3, "epoch_ns": 1}.get(fmt)
    if scale is None:
        raise ValueError(f"unknown timestamp format {fmt!r} (expected one of {', '.join(TIMESTAMP_FORMATS)})")
    if isinstance(value, str):
        value = _number(value, fmt)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"timestamp {_short(value)} is not a number ({fmt})")
    if isinstance(value, int):
        return value * scale
    if not math.isfinite(value):
        raise ValueError(f"timestamp {_short(given)} is not a finite number ({fmt})")
    return int(round(value * scale))  # OverflowError (inf after scaling): out of range


def _epoch_unit(value: float) -> str:
    magnitude = abs(value)
    if magnitude < 1e11:
        return "epoch_s"
    if magnitude < 1e14:
        return "epoch_ms"
    if magnitude < 1e17:
        return "epoch_us"
    return "epoch_ns"


def _parse_iso(text: str) -> int:
    m = _ISO_FRACTION.match(text.strip())
    frac_ns = 0
    if m:
        frac = m.group("frac") or ""
        frac_ns = int((frac + "000000000")[:9]) if frac else 0
        tz = m.group("tz") or ""
        base = m.group("head") + ("+00:00" if tz in ("Z", "z") else tz)
    else:
        base = text.strip()
    try:
        dt = datetime.fromisoformat(base)
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    if m is None:  # date only, or a form the fast path does not cover
        return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000
    return int(dt.replace(microsecond=0).timestamp()) * 10**9 + frac_ns


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
        return lambda v: v if v.__class__ is list and all(x.__class__ is str for x in v) else coerce(v, ftype)
    if ftype is FieldType.IP:
        return lambda v: _canonical_ip(v) if v.__class__ is str else coerce(v, ftype)
    return lambda v: coerce(v, ftype)


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

    def _plan_for(self, path: str) -> tuple[int, Callable[[Any], Any] | None]:
        fid = self.schema.resolve(path)
        ftype = self.schema.field(fid).type
        conv = None if ftype is FieldType.ANY or path == self.settings.timestamp_field else _converter(ftype)
        self._plan[path] = (fid, conv)
        return fid, conv

    def normalize(self, record: Any, source_id: str) -> Event:
        if not isinstance(record, dict):
            raise NormalizeError(f"expected a JSON object, got {type(record).__name__}")
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

        category = flat.get(s.category_field)
        if isinstance(category, list):
            category = category[0] if category else None
        if category is None or category == "":
            if not s.default_category:
                raise NormalizeError(f"missing {s.category_field!r}")
            category = s.default_category
        if not isinstance(category, str):
            raise NormalizeError(f"{s.category_field!r} must be a string, got {category!r}")

        ts = flat.get(s.timestamp_field)
        if ts is None:
            if s.missing_timestamp == "error":
                raise NormalizeError(f"missing {s.timestamp_field!r}")
            ts_ns = time.time_ns()
        else:
            try:
                ts_ns = event_timestamp(ts, s.timestamp_format)
            except ValueError as exc:
                raise NormalizeError(str(exc)) from None
            fid = schema.resolve(s.timestamp_field)
            if schema.field(fid).type is FieldType.DATE:
                fields[fid] = ts_ns

        pid = flat.get("process.pid")
        entity = flat.get("process.entity_id")
        if entity is not None:  # stable across runs (replay), unlike hash()
            entity_key = int.from_bytes(hashlib.blake2b(str(entity).encode(), digest_size=16).digest(), "big")
        else:
            entity_key = pid if isinstance(pid, int) else 0
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
