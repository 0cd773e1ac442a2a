"""Event times: parsing the timestamp forms inputs carry (ISO 8601, epoch
seconds to nanoseconds, numeric strings) into signed 64-bit nanoseconds.

Its own module because the schema (coercing ``date`` fields), the EQL compiler
(date literals), the JSONL and Falco readers and the normalizers all need it,
and none of them should import another's module for it."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

TIMESTAMP_FORMATS = ("auto", "iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")

_ISO_FRACTION = re.compile(r"^(?P<head>[^.]*?T?\d{2}:\d{2}:\d{2})(?:[.,](?P<frac>\d+))?(?P<tz>Z|z|[+-]\d{2}:?\d{2})?$")


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
