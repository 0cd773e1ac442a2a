"""docs/incidents.md's example is what Kestrel does: its events, recorded and
replayed with --incidents through the bundled pack, give the console output
and the record the page shows; its [incidents] table is the defaults."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from rich.console import Console

from kestrel_core.builtins.console import ConsoleSink
from kestrel_core.incidents import IncidentsSettings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "incidents.md"


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def _example() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Example\n", 1)[1].split("\n## ", 1)[0]
    return {lang: body for lang, body in _blocks(section)}


def test_incidents_table_shows_the_defaults():
    toml = [body for lang, body in _blocks(DOC.read_text(encoding="utf-8")) if lang == "toml"][0]
    table = tomllib.loads(toml)["incidents"]
    defaults = IncidentsSettings()
    assert table == {"enable": True, "window_s": defaults.window_s}


def test_the_example_gives_the_output_the_page_shows(tmp_path):
    blocks = _example()
    events = tmp_path / "events.jsonl"
    events.write_text(blocks["jsonl"])
    for cmd in re.findall(r"^\$ kestrel (.*)$", blocks["console"], re.M):
        args = [a.replace("rules/linux", str(ROOT / "rules" / "linux")) for a in cmd.split()]
        proc = subprocess.run([sys.executable, "-m", "kestrel_core", *args], cwd=tmp_path, capture_output=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sum("rule" in line for line in lines) == 7  # "The bundled pack raises seven alerts"
    records = [line for line in lines if "incident" in line]

    sink = ConsoleSink(ConsoleSink.Settings(), None)
    buf = io.StringIO()
    sink.console = Console(file=buf, highlight=False, soft_wrap=True, color_system=None, width=200)
    for record in records:
        sink.write_incident(record)
    assert buf.getvalue() == blocks["text"]

    # the page's profile: kestrel run with the console sink prints those lines among the alerts
    profile = tmp_path / "console.toml"
    profile.write_text(blocks["toml"].replace('"rules/linux"', json.dumps(str(ROOT / "rules" / "linux"))))
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "run", "--profile", str(profile)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    shown_lines, keep = [], False
    for line in proc.stdout.splitlines():
        keep = line.startswith("INCIDENT") or (keep and line.startswith(" "))
        if keep:
            shown_lines.append(line)
    assert "\n".join(shown_lines) + "\n" == blocks["text"]

    shown = json.loads(blocks["json"])
    (first,) = [r["incident"] for r in records if r["incident"]["id"] == shown["id"]
                and r["incident"]["status"] == "closed"]
    assert {k: first[k] for k in shown} == shown
    assert [p["name"] for p in first["processes"]] == ["cron", "dash", "curl", "chmod", ".x"]
    assert first["processes"][0]["context"] and not first["processes"][2]["alerts"]
