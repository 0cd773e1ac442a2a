"""JSONL audit log: one line per enforcement decision, flushed and fsynced
per line so a crash loses none (decisions are rare next to events)."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any


class AuditLog:
    def __init__(self, path: str, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one decision; ``time`` (UTC, ISO 8601) and ``ts_ns`` are added."""
        now = time.time_ns()
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z",
                "ts_ns": now, **record}
        text = json.dumps(line, sort_keys=False, default=str) + "\n"
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(text)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def read_audit(path: str) -> list[dict[str, Any]]:
    """Every decision in an audit log (for tests and tools)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
