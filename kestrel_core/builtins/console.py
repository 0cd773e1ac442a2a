"""Readable alerts on the terminal (colour when stdout is a TTY).

A single-event alert lists its fields under its heading.  A sequence alert
shows each matched event under a heading of its own (``event 2 of 3``, its
category and time) with that event's values, after the values every event
shares: a value is never shown away from the event it came from.  An
incident (``[incidents] enable``) is shown as a line when it opens and, when
it closes, as its process tree with the alerts on each process.  When the run
ends, a table counts the alerts by rule and severity.
"""

from __future__ import annotations

import collections
import datetime as dt
from typing import Any

import attrs
from rich.console import Console
from rich.markup import escape

from ..alert import summary_table
from ..interfaces import Sink

SEVERITY_STYLE = {"low": "cyan", "medium": "yellow", "high": "bold red", "critical": "bold white on red"}
# Fields worth a glance in a one-screen alert, when the rule did not reference them.
CONTEXT_FIELDS = ("host.name", "user.name", "process.pid", "process.executable", "process.command_line", "file.path", "destination.ip")


def _when(ts_wall_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_wall_ns / 1e9, tz=dt.timezone.utc).isoformat(timespec="milliseconds")


class ConsoleSink(Sink):
    PLUGIN_NAME = "console"
    DESCRIPTION = "readable alerts on stdout (colour on a TTY), a count by rule and severity at the end"

    @attrs.define(kw_only=True)
    class Settings:
        stream: str = attrs.field(default="stdout", validator=attrs.validators.in_(("stdout", "stderr")))
        show_fields: bool = True

    def open(self) -> None:
        self.console = Console(stderr=self.settings.stream == "stderr", highlight=False, soft_wrap=True)
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        """(rule id, severity) -> alerts written, for the summary at the end."""

    def write_alert(self, alert: Any) -> None:
        self.counts[(alert.rule_id, alert.severity)] += 1
        style = SEVERITY_STYLE.get(alert.severity, "bold")
        n = len(alert.events)
        head = (
            f"[{style}]{alert.severity.upper():8}[/] {_when(alert.ts_wall_ns)} [bold]{escape(alert.rule_name)}[/] "
            f"[dim]({escape(alert.rule_id)}{', ' + str(n) + ' events' if n > 1 else ''})[/]"
        )
        self.console.print(head)
        if self.settings.show_fields:
            if n > 1:
                self._print_sequence(alert)
            else:
                shown = dict(alert.fields)
                last = alert.events[-1].to_ecs(self.context.schema) if alert.events else {}
                for key in CONTEXT_FIELDS:
                    if key not in shown and key in last:
                        shown[key] = last[key]
                self._print_fields(shown, "    ")
            for line in alert.actions:
                self.console.print(f"    [magenta]action[/] {escape(line)}")

    def _print_sequence(self, alert: Any) -> None:
        """Each event under its own heading; values all events share once, first."""
        keys = list(dict.fromkeys([*alert.fields, *CONTEXT_FIELDS]))
        views = [e.to_ecs(self.context.schema) for e in alert.events]
        per_event = [{k: v[k] for k in keys if v.get(k) is not None} for v in views]
        common = {k: per_event[0][k] for k in per_event[0] if all(k in p and p[k] == per_event[0][k] for p in per_event)}
        if common:
            self.console.print(f"    [dim]all {len(views)} events:[/]")
            self._print_fields(common, "        ")
        for i, (event, values) in enumerate(zip(alert.events, per_event), 1):
            self.console.print(f"    [bold]event {i} of {len(views)}[/] [dim]{escape(event.category)} "
                               f"{_when(event.ts_wall_ns)}[/]")
            self._print_fields({k: v for k, v in values.items() if k not in common}, "        ")

    def write_incident(self, record: dict[str, Any]) -> None:
        """A line when an incident opens; when it closes, its process tree
        with each process's alerts on it (updates: the alerts show them)."""
        inc = record["incident"]
        host = escape(str(inc["host"].get("name") or inc["host"].get("id") or "?"))
        if inc["container"]:
            host += f" [dim]container {escape(str(inc['container']['id'])[:12])}[/]"
        style = SEVERITY_STYLE.get(inc["severity"], "bold")
        if inc["status"] == "opened":
            self.console.print(f"[bold]INCIDENT[/] {escape(inc['id'])} opened on {host} by "
                               f"[dim]{escape(inc['rules'][0])}[/]")
            return
        if inc["status"] != "closed" or inc.get("reason") == "merged":
            return
        self.console.print(
            f"[bold]INCIDENT[/] {escape(inc['id'])} [{style}]{inc['severity'].upper()}[/] risk {inc['risk_score']:g} "
            f"on {host}: {inc['alerts']} alert{'s' if inc['alerts'] != 1 else ''}, "
            f"{inc['first_ts']} .. {inc['last_ts']} [dim](closed: {escape(inc.get('reason', ''))})[/]")
        if inc["tactics"]:
            self.console.print(f"    [dim]tactics[/] {escape(' > '.join(inc['tactics']))}")
        for line in incident_tree(inc):
            self.console.print("    " + escape(line))

    def _print_fields(self, fields: dict[str, Any], indent: str) -> None:
        for key, value in fields.items():
            self.console.print(f"{indent}[dim]{escape(key)}[/] = {escape(repr(value))}")

    def close(self) -> None:
        if getattr(self, "counts", None):
            self._print_summary()
            self.console.file.flush()

    def _print_summary(self) -> None:
        """Alerts by rule (most first) with a column per severity."""
        counts = self.counts
        total, rules = sum(counts.values()), len({r for r, _ in counts})
        self.console.print()
        self.console.print(f"[bold]{total} alert{'s' if total != 1 else ''} from {rules} "
                           f"rule{'s' if rules != 1 else ''}[/]")
        header, *rows = summary_table(counts)
        self.console.print(f"[dim]{escape(header)}[/]")
        for row in rows:
            self.console.print(escape(row))

    def flush(self) -> None:
        self.console.file.flush()


def incident_tree(inc: dict[str, Any]) -> list[str]:
    """An incident's processes as an indented tree, each with the rules that
    alerted on it: ``bash (pid 4266) -bash``, ``└─ chmod ... ! setuid_bit_set``."""
    lines = []
    for p in inc["processes"]:
        what = p["name"] or p["executable"] or p["entity_id"]
        pid = f" (pid {p['pid']})" if p["pid"] is not None else ""
        cmd = f" {p['command_line']}" if p["command_line"] and p["command_line"] != p["name"] else ""
        if len(cmd) > 100:
            cmd = cmd[:99] + "…"
        if p.get("execs"):
            what += f" (was {' > '.join(p['execs'])})"
        alerts = "".join(f"  ! {r.rsplit('.', 1)[-1]}" for r in p["alerts"])
        lead = "   " * max(0, p["depth"] - 1) + ("└─ " if p["depth"] else "")
        lines.append(f"{lead}{what}{pid}{cmd}{alerts}")
    return lines
