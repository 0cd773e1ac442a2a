"""Alerts as ``rule_id severity process.name container.id`` lines in a text file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from kestrel_core.interfaces import Sink


class TextLogSink(Sink):
    PLUGIN_NAME = "acme-textlog"
    DESCRIPTION = "one text line per alert"

    @attrs.define(kw_only=True)
    class Settings:
        path: str
        prefix: str = "ALERT"

    def open(self) -> None:
        profile = self.context.profile
        self.path = profile.resolve_path(self.settings.path) if profile else Path(self.settings.path)
        self.fh = open(self.path, "w", encoding="utf-8", buffering=1)  # line-buffered: tests watch the file
        self.note("open")

    def note(self, text: str) -> None:
        self.fh.write(f"# {text}\n")

    def write_alert(self, alert: Any) -> None:
        ecs = alert.events[-1].to_ecs(self.context.schema)
        self.fh.write(f"{self.settings.prefix} {alert.rule_id} {alert.severity} "
                      f"{ecs.get('process.name')} {ecs.get('container.id')}\n")

    def flush(self) -> None:
        self.fh.flush()

    def close(self) -> None:
        self.note("close")
        self.fh.close()
