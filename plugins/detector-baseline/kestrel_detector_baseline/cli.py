"""``kestrel baseline show SNAPSHOT`` and ``kestrel baseline diff A B``
(added to ``kestrel`` through the ``kestrel.commands`` entry point)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any

import click
import orjson

from kestrel_core.cliutil import EXIT_BAD_DATA, EXIT_FAILED, describe_os_error, exit_for_os_error, fail

from .model import SnapshotError, diff_scopes, read_snapshot

_SNAPSHOT = click.Path(dir_okay=False)


def _load(path: str) -> tuple[list[Any], dict[str, Any], dict[str, int]]:
    try:
        return read_snapshot(path)
    except SnapshotError as exc:
        fail(str(exc), EXIT_BAD_DATA)
    except OSError as exc:
        fail(describe_os_error(exc), exit_for_os_error(exc))
    raise AssertionError("unreachable")


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _counts(items: dict[str, Any]) -> str:
    rows = sorted(((k, v["count"] if isinstance(v, dict) else v) for k, v in items.items()),
                  key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{k}({n})" for k, n in rows) or "none"


@click.group("baseline")
def baseline_group() -> None:
    """Inspect behaviour baseline snapshots (plugin detector-baseline)."""


@baseline_group.command("show")
@click.argument("snapshot", type=_SNAPSHOT)
@click.option("--host", "hosts", multiple=True, help="Only this host (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="The checked snapshot as JSON instead of a tree.")
def show_command(snapshot: str, hosts: tuple[str, ...], as_json: bool) -> None:
    """Print what a snapshot learned: per host/container, each process with
    its children (and their argument shapes), peers and path prefixes, with
    counts.  A damaged snapshot is an error naming what is wrong (exit 3)."""
    scopes, shape, counters = _load(snapshot)
    if hosts:
        scopes = [s for s in scopes if s.host in hosts]
    if as_json:
        doc = {"shape": shape, "counters": counters, "scopes": [s.to_json() for s in scopes]}
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
        return
    shown = ", ".join(f"{k} {v}" for k, v in sorted(shape.items()))
    click.echo(f"{snapshot}: {len(scopes)} scope(s) ({shown})")
    for s in scopes:
        state = (f"learning, {s.learned_events:,} events so far" if s.learning else
                 f"learned from {s.learned_events:,} events until {_when(s.learned_until_ns)}")
        capped = f", {s.capped:,} not learned (node cap)" if s.capped else ""
        click.echo(f"{s.label()}: {state}; {s.events:,} events {_when(s.first_ts_ns)} .. {_when(s.last_ts_ns)}; "
                   f"{s.nodes:,} nodes{capped}")
        for name in sorted(s.processes, key=lambda n: (-s.processes[n]["count"], n)):
            node = s.processes[name]
            click.echo(f"  {name} ({node['count']:,})")
            for child in sorted(node["children"], key=lambda c: (-node["children"][c]["count"], c)):
                entry = node["children"][child]
                click.echo(f"    child {child} ({entry['count']:,}) args: {_counts(entry['args'])}")
            if node["peers"]:
                click.echo(f"    peers: {_counts(node['peers'])}")
            if node["paths"]:
                click.echo(f"    paths: {_counts(node['paths'])}")


@baseline_group.command("diff")
@click.argument("a", type=_SNAPSHOT)
@click.argument("b", type=_SNAPSHOT)
def diff_command(a: str, b: str) -> None:
    """What snapshot B learned that A did not (+) and what A had that B lacks
    (-), per scope and process.  Exit 0: same behaviour; 1: they differ."""
    sa, shape_a, _ = _load(a)
    sb, shape_b, _ = _load(b)
    if shape_a != shape_b:
        click.echo(f"note: learned with different shapes: {a}: {shape_a}; {b}: {shape_b}", err=True)
    lines = diff_scopes(sa, sb)
    for line in lines:
        click.echo(line)
    if lines:
        sys.exit(EXIT_FAILED)
