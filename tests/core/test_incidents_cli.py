"""kestrel replay --incidents as a user runs it: stderr says what became of
the alerts (it used to print only the alert table; the incident counts were
in the footer alone)."""

from __future__ import annotations

from pathlib import Path

from kestrel_core.testing import run_kestrel

ROOT = Path(__file__).resolve().parents[2]


def test_replay_reports_the_incidents_on_stderr(tmp_path):
    res = run_kestrel("replay", str(ROOT / "demo" / "capture.klog"), "-r", str(ROOT / "rules" / "linux"),
                      "--incidents", "-o", str(tmp_path / "out.jsonl"))
    assert res.returncode == 0, res.stderr
    assert "incidents: 15 closed (16 opened, 1 merged into another)" in res.stderr
    assert "Traceback" not in res.stderr


def test_replay_without_incidents_says_nothing_of_them(tmp_path):
    res = run_kestrel("replay", str(ROOT / "demo" / "capture.klog"), "-r", str(ROOT / "rules" / "linux"),
                      "-o", str(tmp_path / "out.jsonl"))
    assert res.returncode == 0, res.stderr
    assert "incidents:" not in res.stderr
