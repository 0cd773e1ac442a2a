"""The status file ``kestrel top`` reads (``[status]``).

A running agent rewrites one small JSON document every ``interval_s``,
atomically (written beside it, then renamed), so a reader never sees half of
one.  A file rather than a socket: the agent listens on nothing it does not
have to (the unit's hardening), any tool (``jq``, a monitoring agent) can read
it, the last state survives the process, and it costs one small write per
interval on the engine thread.  ``time`` and ``pid`` say how fresh it is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

VERSION = 1


def default_path(profile: Any) -> Path | None:
    """The profile's ``[status] path``, else ``$STATE_DIRECTORY/status.json``
    (systemd's ``StateDirectory=``), else None (no status file)."""
    if profile.status.path:
        return profile.resolve_path(profile.status.path)
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(state) / "status.json" if state else None


class StatusWriter:
    def __init__(self, path: Path, interval_s: float) -> None:
        self.path, self.interval_s = path, interval_s
        self.started = time.time()
        self._last = -1e18
        self._prev: tuple[float, dict[str, int]] | None = None

    def tick(self, run: Any, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        try:
            self.write(self.document(run, now))
        except OSError as exc:  # a full disk must not stop detection; say it once per interval
            import logging

            logging.getLogger("kestrel").warning("status file %s: %s", self.path, exc)

    def document(self, run: Any, now: float) -> dict[str, Any]:
        stats = run.context.stats
        with stats.lock:
            read = dict(stats.events_read)
            dropped = {f"{src}/{why}": n for (src, why), n in stats.events_dropped.items() if n}
            lost = {f"{src}/{why}": n for (src, why), n in stats.events_lost.items() if n}
            balance = stats.balance()
            depth = stats.queue_depth
            alerts = sum(stats.alerts.values())
        rates = {}
        if self._prev is not None and now > self._prev[0]:
            dt = now - self._prev[0]
            rates = {src: (n - self._prev[1].get(src, 0)) / dt for src, n in read.items()}
        self._prev = (now, read)
        budgets, watchdog = run.budgets, run.watchdog
        doc = {
            "version": VERSION, "pid": os.getpid(), "profile": run.profile.path, "time": time.time(),
            "uptime_s": time.time() - self.started, "stopped": run.stop.is_set(),
            "sources": {src: {"events": n, "events_per_s": rates.get(src, 0.0)} for src, n in read.items()},
            "queue": {"depth": depth, "capacity": run.profile.bus.capacity},
            "dropped": dropped, "lost": lost, "balance": balance, "alerts": alerts,
            "engine": {"busy_seconds": budgets.busy_ns / 1e9 if budgets else 0.0,
                       **({k: v for k, v in budgets.last_window.items() if k != "rules"} if budgets else {})},
            "rules": budgets.rule_rows()[:100] if budgets else [],
            "budget_events": list(budgets.history)[-20:] if budgets else [],
            "watchdog": watchdog.snapshot() if watchdog else None,
        }
        return doc

    def write(self, doc: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, self.path)


def read_status(path: str | Path) -> dict[str, Any]:
    """The document, or ValueError saying why it cannot be read."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no status file (is `kestrel run` running with [status] path, or under "
                         f"systemd's StateDirectory?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the status file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise ValueError(f"{path}: not a kestrel status file of version {VERSION}")
    return doc
