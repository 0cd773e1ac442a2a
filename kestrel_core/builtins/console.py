"""Readable alerts on the terminal (colour when stdout is a TTY)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs
from rich.console import Console
from rich.markup import escape

from ..interfaces import Sink

SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}
# Fields worth a glance in a one-screen alert, when the rule did not reference them.
CONTEXT_FIELDS = ("host.name", "user.name", "process.pid", "process.executable", "process.command_line", "file.path", "destination.ip")


class ConsoleSink(Sink):
    PLUGIN_NAME = "console"
    DESCRIPTION = "readable alerts on stdout (colour on a TTY)"

    @attrs.define(kw_only=True)
    class Settings:
        stream: str = attrs.field(default="stdout", validator=attrs.validators.in_(("stdout", "stderr")))
        show_fields: bool = True

    def open(self) -> None:
        self.console = Console(stderr=self.settings.stream == "stderr", highlight=False, soft_wrap=True)

    def write_alert(self, alert: Any) -> None:
        when = dt.datetime.fromtimestamp(alert.ts_wall_ns / 1e9, tz=dt.timezone.utc).isoformat(timespec="milliseconds")
        style = SEVERITY_STYLE.get(alert.severity, "bold")
        head = (
            f"[{style}]{alert.severity.upper():8}[/] {when} [bold]{escape(alert.rule_name)}[/] "
            f"[dim]({escape(alert.rule_id)}{', ' + str(len(alert.events)) + ' events' if len(alert.events) > 1 else ''})[/]"
        )
        self.console.print(head)
        if self.settings.show_fields:
            shown = dict(alert.fields)
            last = alert.events[-1].to_ecs(self.context.schema) if alert.events else {}
            for key in CONTEXT_FIELDS:
                if key not in shown and key in last:
                    shown[key] = last[key]
            for key, value in shown.items():
                self.console.print(f"    [dim]{escape(key)}[/] = {escape(repr(value))}")
            for line in alert.actions:
                self.console.print(f"    [magenta]action[/] {escape(line)}")

    def flush(self) -> None:
        self.console.file.flush()
