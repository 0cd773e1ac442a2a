"""Bad input to record/export/replay: one clear line, a documented exit code, no traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from kestrel_core.cli import main

DEMO = Path(__file__).resolve().parents[2] / "demo" / "capture.jsonl"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_record_needs_exactly_one_input(tmp_path):
    res = run("record", "-o", str(tmp_path / "a.klog"))
    assert res.exit_code == 2 and "exactly one of --profile and --input" in res.output
    res = run("record", "-i", str(DEMO), "-p", "x.toml", "-o", str(tmp_path / "a.klog"))
    assert res.exit_code == 2


def test_unwritable_output_and_missing_input(tmp_path):
    res = run("record", "-i", str(DEMO), "-o", str(tmp_path / "no" / "a.klog"))
    assert res.exit_code == 2  # a directory that does not exist: what was typed is wrong
    assert f"No such file or directory: {tmp_path / 'no' / 'a.klog'}" in res.output
    res = run("record", "-i", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "a.klog"))
    assert res.exit_code == 2 and "missing.jsonl" in res.output


def test_export_and_replay_of_something_that_is_not_a_log(tmp_path):
    res = run("export", str(DEMO))
    assert res.exit_code == 3 and "not a .klog file (bad magic at byte 0)" in res.output
    res = run("replay", str(DEMO), "--rules", str(DEMO.parents[1] / "rules" / "linux"))
    assert res.exit_code == 3 and "not a .klog file" in res.output


def test_unknown_compression_is_refused_by_click(tmp_path):
    res = run("record", "-i", str(DEMO), "-o", str(tmp_path / "a.klog"), "--compression", "brotli")
    assert res.exit_code == 2 and "brotli" in res.output
