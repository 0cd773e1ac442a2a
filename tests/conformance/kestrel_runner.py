"""Drive Kestrel's black-box `kestrel eval` command in-process.

Shared by the conformance suite and the differential tests.  Only the
click command `kestrel_core.eql.cli.eval_command` is used: no engine internals.
Events go through a real JSONL file, exactly like the command line.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence


class EngineMissing(RuntimeError):
    """The engine module is not importable: a failure, never a skip."""


def eval_command():
    try:
        from kestrel_core.eql.cli import eval_command as cmd  # noqa: PLC0415
    except Exception as exc:  # ImportError, or an import-time crash
        raise EngineMissing(
            "kestrel_core.eql.cli.eval_command is not importable; the EQL engine is required: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return cmd


@dataclass
class EvalResult:
    exit_code: int
    stdout: str
    stderr: str
    matches: list[list[Any]] = field(default_factory=list)
    crash: str | None = None  # traceback text when the command raised instead of exiting


LOCATION_RES = (
    re.compile(r"(?<!\d)(?P<line>\d+):(?P<col>\d+)(?!\d)"),
    re.compile(r"line\s+(?P<line>\d+)\D{1,12}?col(?:umn)?\s+(?P<col>\d+)", re.I),
)


def error_locations(stderr: str) -> list[tuple[int, int]]:
    """Every (line, column) the error text names, in either `L:C` or `line L, column C` form."""
    found = []
    for rx in LOCATION_RES:
        for m in rx.finditer(stderr):
            found.append((int(m.group("line")), int(m.group("col"))))
    return found


def write_jsonl(events: Iterable[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev) + "\n")


def run_eval(query: str, events: Sequence[dict], args: Sequence[str] = (), workdir: Path | None = None) -> EvalResult:
    """Run `kestrel eval QUERY --input EVENTS.jsonl ARGS...` in-process and parse its output."""
    from click.testing import CliRunner  # noqa: PLC0415

    cmd = eval_command()
    own_dir = None
    if workdir is None:
        own_dir = tempfile.TemporaryDirectory(prefix="kestrel-conf-")
        workdir = Path(own_dir.name)
    try:
        path = Path(workdir) / "events.jsonl"
        write_jsonl(events, path)
        runner = CliRunner()
        res = runner.invoke(cmd, [query, "--input", str(path), *args], catch_exceptions=True)
        stderr = getattr(res, "stderr", "") or ""
        out = EvalResult(res.exit_code, res.stdout, stderr)
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            out.crash = "".join(traceback.format_exception(*res.exc_info)) if res.exc_info else repr(res.exception)
            return out
        if res.exit_code == 0:
            for n, line in enumerate(res.stdout.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AssertionError(f"stdout line {n} is not JSON: {line!r}") from exc
                if not isinstance(obj, dict) or not isinstance(obj.get("events"), list):
                    raise AssertionError(f'stdout line {n} is not {{"events": [...]}}: {line!r}')
                out.matches.append(obj["events"])
        return out
    finally:
        if own_dir is not None:
            own_dir.cleanup()


def match_ids(matches: list[list[Any]], id_field: str = "id") -> list[tuple]:
    """Each match as a tuple of event ids, in step order; placeholders for missing-event
    steps (anything that is not an event object) are dropped.  Sorted: the suite
    compares match multisets, not output order."""
    out = []
    for m in matches:
        ids = []
        for ev in m:
            if isinstance(ev, dict):
                ids.append(ev.get(id_field))
        out.append(tuple(ids))
    return sorted(out, key=lambda t: [(-1 if x is None else x) for x in t])

