"""``kestrel top``: a live view of a running agent, read from its status file
(kestrel_core/status.py): rules by cost and budget step, events/s per
source, queue depth, drops, the watchdog.  Not on a terminal (or with
``--once``) it prints one snapshot and exits."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click


def _status_path(status: str | None, profile_path: str | None) -> Path:
    if status:
        return Path(status)
    if profile_path:
        from .cliutil import EXIT_USAGE
        from .profile import ProfileError
        from .startup import load_profile
        from .status import default_path

        try:
            profile, _host = load_profile(profile_path)
        except ProfileError as exc:
            click.echo(str(exc), err=True)
            sys.exit(EXIT_USAGE)
        path = default_path(profile)
        if path is not None:
            return path
        raise click.UsageError(f"{profile_path} writes no status file: set [status] path")
    state = os.environ.get("STATE_DIRECTORY", "/var/lib/kestrel").split(":")[0]
    return Path(state) / "status.json"


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def render(doc: dict[str, Any], rules: int = 20, now: float | None = None) -> str:
    """The snapshot as text (what ``kestrel top`` prints)."""
    now = time.time() if now is None else now
    eng = doc.get("engine", {})
    q = doc.get("queue", {})
    age = now - doc.get("time", now)
    state = "stopped" if doc.get("stopped") else "running"
    lines = [f"kestrel top: pid {doc.get('pid')} {state}, {doc.get('profile')}, up {doc.get('uptime_s', 0):.0f} s, "
             f"updated {age:.1f} s ago"]
    lines.append(f"engine: {_pct(eng.get('engine_cpu', 0.0))} of a CPU, busy {_pct(eng.get('engine_busy', 0.0))}"
                 f" over the last {eng.get('seconds', 0.0):.1f} s ({eng.get('events', 0):,} events); "
                 f"queue {q.get('depth', 0):,}/{q.get('capacity', 0):,}; alerts {doc.get('alerts', 0):,}")
    srcs = doc.get("sources", {})
    lines.append("sources: " + (", ".join(f"{name} {s['events_per_s']:,.0f} events/s ({s['events']:,} read)"
                                          for name, s in sorted(srcs.items())) or "none"))
    drops = {**doc.get("dropped", {}), **{f"{k} (lost)": v for k, v in doc.get("lost", {}).items()}}
    lines.append("dropped: " + (", ".join(f"{k} {v:,}" for k, v in sorted(drops.items())) or "none"))
    wd = doc.get("watchdog")
    if wd:
        limit = wd.get("memory_limit_bytes") or 0
        lines.append(f"watchdog: RSS {wd['rss_bytes'] / 2**20:.0f} MB"
                     + (f" of {limit / 2**20:.0f} MB" if limit else "")
                     + f", CPU {_pct(wd.get('cpu_ratio', 0.0))}; shedding: "
                     + (", ".join(f"{st} ({why})" for st, why in wd.get("shed", {}).items()) or "none"))
    lines.append("")
    rows = doc.get("rules", [])
    width = max([len("RULE")] + [len(r["rule"]) for r in rows[:rules]])
    lines.append(f"{'RULE':<{width}}  {'STEP':<9}  {'SHARE':>5}  {'SECONDS':>9}  {'EVALUATIONS':>12}  DEGRADED")
    for r in rows[:rules]:
        lines.append(f"{r['rule']:<{width}}  {r.get('step') or '-':<9}  {_pct(r.get('window_share', 0.0)):>5}  "
                     f"{r['seconds']:>9.3f}  {r['evaluations']:>12,}  {r.get('degraded', 0)}")
    if len(rows) > rules:
        lines.append(f"... {len(rows) - rules} more rules")
    events = doc.get("budget_events", [])
    if events:
        lines.append("")
        lines.append("budget decisions:")
        for e in events[-5:]:
            lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(e['time']))} rule {e['rule']} "
                         f"{e['action']} ({e['step']}): {e['reason']}")
    return "\n".join(lines)


@click.command("top")
@click.option("--status", "status", type=click.Path(dir_okay=False), default=None,
              help="Status file of the running agent (default: $STATE_DIRECTORY/status.json, else "
                   "/var/lib/kestrel/status.json).")
@click.option("--profile", "-p", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Read the status file this profile's run writes ([status] path).")
@click.option("--once", is_flag=True, help="Print one snapshot and exit (the default when stdout is not a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON (implies --once).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--rules", "n_rules", type=click.IntRange(min=1), default=20, show_default=True,
              help="Rules shown, costliest first.")
def top_command(status: str | None, profile_path: str | None, once: bool, as_json: bool, interval: float,
                n_rules: int) -> None:
    """Live view of a running `kestrel run`: rules by cost, budgets, sources, queue, drops, watchdog."""
    from .cliutil import EXIT_USAGE
    from .status import read_status

    path = _status_path(status, profile_path)
    once = once or as_json or not sys.stdout.isatty()
    while True:
        try:
            doc = read_status(path)
        except ValueError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        if as_json:
            click.echo(json.dumps(doc, indent=2))
            return
        text = render(doc, n_rules)
        if once:
            click.echo(text)
            return
        click.clear()
        click.echo(text)
        try:
            time.sleep(interval)  # a display refresh, not a wait for a condition
        except KeyboardInterrupt:
            return
