"""A few real subprocess runs of the eval command (the bulk of the suite runs in-process)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EVENTS = [
    {"id": 1, "@timestamp": "2024-01-01T00:00:00Z", "event": {"category": "process"}, "process": {"name": "cmd.exe"}},
    {"id": 2, "@timestamp": "2024-01-01T00:00:05Z", "event": {"category": "file"}, "file": {"name": "x.exe"}},
]


def _commands():
    cmds = [pytest.param([sys.executable, "-m", "kestrel_core.eql.cli"], id="python-m")]
    exe = Path(sys.executable).with_name("kestrel")
    if exe.exists():
        cmds.append(pytest.param([str(exe), "eval"], id="kestrel-eval"))
    return cmds


@pytest.fixture()
def events_file(tmp_path: Path) -> Path:
    p = tmp_path / "ev.jsonl"
    p.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    return p


@pytest.mark.parametrize("cmd", _commands())
def test_subprocess_sequence(cmd, events_file: Path):
    q = 'sequence with maxspan=5s [process where process.name == "cmd.exe"] [file where true]'
    r = subprocess.run([*cmd, q, "--input", str(events_file)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    assert [[e["id"] for e in m["events"]] for m in lines] == [[1, 2]]
    assert lines[0]["events"][0] == EVENTS[0]  # original event objects are printed


@pytest.mark.parametrize("cmd", _commands())
def test_subprocess_bad_query(cmd, events_file: Path):
    r = subprocess.run([*cmd, 'process where process.name = "x"', "--input", str(events_file)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "1:28" in r.stderr or "column 28" in r.stderr, r.stderr
    assert r.stdout.strip() == ""


def test_subprocess_stdin(events_file: Path):
    r = subprocess.run([sys.executable, "-m", "kestrel_core.eql.cli", "file where true", "--input", "-"],
                       input=events_file.read_text(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert [json.loads(l)["events"][0]["id"] for l in r.stdout.splitlines()] == [2]
