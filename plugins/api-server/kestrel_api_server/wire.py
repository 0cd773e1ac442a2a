"""What goes over the wire: the SSE envelope (BRIEF §14) and JSON bodies."""

from __future__ import annotations

import json
import time
from typing import Any

from .store import iso_ns


def envelope(kind: str, payload: Any, container: str | None = None, ts_ns: int | None = None) -> dict[str, Any]:
    """``type`` (alert | event | heartbeat), ``ts`` (ISO 8601, when sent), ``container``, ``payload``."""
    return {"type": kind, "ts": iso_ns(time.time_ns() if ts_ns is None else ts_ns), "container": container,
            "payload": payload}


def sse(data: dict[str, Any], event_id: int | None = None) -> str:
    """One SSE message; ``id:`` only on alerts (the resumable kind)."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    return (f"id: {event_id}\n" if event_id is not None else "") + f"data: {text}\n\n"
