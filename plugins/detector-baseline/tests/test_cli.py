"""``kestrel baseline show`` and ``kestrel baseline diff`` on snapshots made by real runs."""

from __future__ import annotations

import json

from test_baseline_run import WARMUP, after_trace, kestrel, run_jsonl, warmup_trace, write_jsonl


def _snapshots(tmp_path):
    write_jsonl(tmp_path / "warm.jsonl", warmup_trace())
    run_jsonl(tmp_path, tmp_path / "warm.jsonl", "a1.jsonl")
    a = tmp_path / "a.json"
    a.write_bytes((tmp_path / "state" / "baseline.json").read_bytes())
    write_jsonl(tmp_path / "after.jsonl", after_trace(WARMUP))
    run_jsonl(tmp_path, tmp_path / "after.jsonl", "a2.jsonl")
    b = tmp_path / "b.json"
    b.write_bytes((tmp_path / "state" / "baseline.json").read_bytes())
    return a, b


def test_show_and_diff(tmp_path):
    a, b = _snapshots(tmp_path)
    show = kestrel("baseline", "show", str(b), cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    out = show.stdout
    assert "web-1: learned from 10 events until 2026-01-05T08:00:10Z" in out
    assert "  nginx (15)\n" in out and "  systemd (0)\n    child nginx (1)" in out
    assert "    child nginx (4) args: -g daemon off;(4)" in out
    assert "    child sh (2) args: -c id(2)" in out
    assert "    peers: 10.0.0.5:5432(4), 203.0.113.9:4444(2)" in out
    assert "    paths: /var/log/nginx(4)" in out
    as_json = json.loads(kestrel("baseline", "show", str(b), "--json", cwd=tmp_path).stdout)
    assert as_json["scopes"][0]["processes"]["nginx"]["peers"]["203.0.113.9:4444"] == 2

    diff = kestrel("baseline", "diff", str(a), str(b), cwd=tmp_path)
    assert diff.returncode == 1, diff.stderr  # they differ
    assert diff.stdout.splitlines() == [
        "scope web-1:",
        "  + nginx child sh (2)",
        "  + nginx peer 203.0.113.9:4444 (2)",
    ]
    same = kestrel("baseline", "diff", str(b), str(b), cwd=tmp_path)
    assert same.returncode == 0 and same.stdout == ""


def test_show_of_a_damaged_snapshot_names_it_and_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kestrel_baseline": 1, "shape": {}, "scopes": [{"host": "h", "container": null, '
                   '"last_ts_ns": 0, "events": 1, "learned_events": 1, "nodes": 5, "capped": 0, "learning": false, '
                   '"processes": {}}]}')
    proc = kestrel("baseline", "show", str(bad), cwd=tmp_path)
    assert proc.returncode == 3
    assert f"{bad}: scope 'h': says 5 nodes, holds 0" in proc.stderr
    (tmp_path / "torn.json").write_text('{"kestrel_baseline": 1, "sha')
    proc = kestrel("baseline", "show", str(tmp_path / "torn.json"), cwd=tmp_path)
    assert proc.returncode == 3 and "torn.json: not JSON" in proc.stderr
    proc = kestrel("baseline", "show", str(tmp_path / "missing.json"), cwd=tmp_path)
    assert proc.returncode == 2 and "missing.json" in proc.stderr
