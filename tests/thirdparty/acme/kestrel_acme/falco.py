"""Falco's JSON output (``json_output: true``), one alert per line, as ECS records."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import attrs

from kestrel_core.interfaces import Emit, Source

CATEGORY = {"execve": "process", "execveat": "process", "open": "file", "openat": "file", "connect": "network"}


def to_ecs(doc: dict[str, Any]) -> dict[str, Any]:
    f = doc["output_fields"]
    category = CATEGORY.get(f.get("evt.type", ""), "process")
    rec: dict[str, Any] = {
        "@timestamp": doc["time"],
        "event": {"category": category, "module": "falco", "action": f.get("evt.type")},
        "process": {"name": f.get("proc.name"), "pid": f.get("proc.pid"), "command_line": f.get("proc.cmdline")},
        "user": {"name": f.get("user.name")},
        "container": {"id": f.get("container.id")},
        "rule": {"name": doc.get("rule")},
    }
    if category == "file":
        rec["file"] = {"path": f.get("fd.name")}
    return rec


class FalcoJsonSource(Source):
    PLUGIN_NAME = "falco-json"
    DESCRIPTION = "Falco JSON output lines"
    NORMALIZER = "ecs-json"

    @attrs.define(kw_only=True)
    class Settings:
        path: str
        follow: bool = False
        """Keep reading lines appended to the file until the run is stopped (like ``tail -f``)."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        self.lineno = 0

    def run(self, emit: Emit, stop: threading.Event) -> None:
        profile = self.context.profile
        path = profile.resolve_path(self.settings.path) if profile else Path(self.settings.path)
        with open(path, encoding="utf-8") as fh:
            while not stop.is_set():
                line = fh.readline()
                if not line:
                    if not self.settings.follow:
                        break
                    stop.wait(0.05)  # poll for appended lines; wakes at once on stop
                    continue
                self.lineno += 1
                try:
                    record = to_ecs(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    self.context.log.error("%s:%d: not a Falco JSON alert: %s", self.settings.path, self.lineno, exc)
                    self.context.reject(self.name, "malformed")
                    continue
                emit(record)

    def describe_record(self, record: Any) -> str:
        return f"{self.settings.path}:{self.lineno}"
