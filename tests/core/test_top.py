"""``kestrel top`` against a real ``kestrel run``: the run rewrites its status
file atomically; ``top --once`` (and any non-TTY use) prints one snapshot of
rules by cost, events/s per source, queue depth and drops, ``--json`` the
document; ``--profile`` finds the file; a missing one is a clear error."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from kestrel_core.testing import wait_for
from kestrel_core.top_cli import render

from .test_run import event, kestrel, sigterm_and_count


def top(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kestrel_core", "top", *args], capture_output=True, text=True,
                          timeout=60)


def test_top_reads_a_running_agent(tmp_path):
    (tmp_path / "rules.toml").write_text(textwrap.dedent('''
        [[rule]]
        id = "t.nc"
        name = "netcat"
        query = 'process where process.name == "nc"'

        [[rule]]
        id = "t.sh"
        name = "shell with -x"
        query = 'process where process.name : "*sh*" and process.args : "-x"'
    '''))
    (tmp_path / "p.toml").write_text(textwrap.dedent("""
        [rules]
        paths = ["rules.toml"]
        [status]
        path = "state/status.json"
        interval_s = 0.1
        [bus]
        batch_size = 64
        flush_interval_ms = 20
        [[sources]]
        type = "jsonl"
        path = "-"
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
    """))
    status = tmp_path / "state" / "status.json"
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"), stdin=subprocess.PIPE)
    try:
        proc.stdin.write("".join(json.dumps(event(i, "nc" if i % 10 == 0 else "bash")) + "\n" for i in range(3000)))
        proc.stdin.write("{not json\n")
        proc.stdin.flush()

        def snapshot():
            if not status.exists():
                return None
            res = top("--status", str(status), "--json")
            assert res.returncode == 0, res.stderr
            doc = json.loads(res.stdout)
            return doc if doc["balance"]["read"] == 3001 and doc["balance"]["processed"] == 3000 else None

        doc = wait_for(snapshot, timeout=60, what="the status file to show every event")
        assert doc["pid"] == proc.pid and doc["stopped"] is False
        assert doc["sources"]["jsonl"]["events"] == 3001
        assert doc["dropped"] == {"jsonl/malformed": 1}
        assert doc["queue"]["capacity"] == 65536
        rules = {r["rule"]: r for r in doc["rules"]}
        assert set(rules) == {"t.nc", "t.sh"} and all(r["evaluations"] > 0 and r["seconds"] > 0 for r in rules.values())
        assert [r["rule"] for r in doc["rules"]] == sorted(rules, key=lambda r: -rules[r]["seconds"])  # by cost

        res = top("--profile", str(tmp_path / "p.toml"), "--once")  # not a TTY: one snapshot, then exit
        assert res.returncode == 0, res.stderr
        out = res.stdout
        assert f"pid {proc.pid} running" in out
        assert "sources: jsonl " in out and "events/s (3,001 read)" in out
        assert "dropped: jsonl/malformed 1" in out and "queue " in out
        header = next(line for line in out.splitlines() if line.startswith("RULE"))
        assert header.split() == ["RULE", "STEP", "SHARE", "SECONDS", "EVALUATIONS", "DEGRADED"]
        assert any(line.startswith("t.nc ") for line in out.splitlines())
    finally:
        counts = sigterm_and_count(proc)
    assert counts["processed"] == 3000
    final = json.loads(status.read_text())
    assert final["stopped"] is True and final["balance"]["read"] == 3001
    assert not list(status.parent.glob(".*.tmp"))  # written beside it and renamed: nothing left over


def test_top_without_a_status_file_is_a_clear_error(tmp_path):
    res = top("--status", str(tmp_path / "none.json"))
    assert res.returncode == 2
    assert "no status file" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "bad.json").write_text('{"version": 99}')
    res = top("--status", str(tmp_path / "bad.json"))
    assert res.returncode == 2 and "not a kestrel status file" in res.stderr


def test_render_shows_degraded_rules_and_the_watchdog():
    doc = {"version": 1, "pid": 7, "profile": "p.toml", "time": 100.0, "uptime_s": 30, "stopped": False,
           "sources": {"ebpf": {"events": 5000, "events_per_s": 1234.0}}, "queue": {"depth": 12, "capacity": 100},
           "dropped": {"ebpf/watchdog_sample": 40}, "lost": {"ebpf/ringbuf_full": 3}, "alerts": 2,
           "engine": {"engine_cpu": 0.42, "engine_busy": 0.4, "seconds": 2.0, "events": 2468},
           "rules": [{"rule": "heavy", "step": "sample", "window_share": 0.7, "seconds": 1.5, "evaluations": 9000,
                      "degraded": 2},
                     {"rule": "cheap", "step": None, "window_share": 0.1, "seconds": 0.1, "evaluations": 5000,
                      "degraded": 0}],
           "budget_events": [{"time": 99.0, "rule": "heavy", "action": "degraded", "step": "sample",
                              "reason": "70% of the engine's time over the 50% rule_share budget"}],
           "watchdog": {"rss_bytes": 150 * 2**20, "memory_limit_bytes": 200 * 2**20, "cpu_ratio": 0.5,
                        "shed": {"low_priority_packs": "memory"}}}
    text = render(doc, now=101.0)
    assert "updated 1.0 s ago" in text
    assert "engine: 42% of a CPU" in text and "queue 12/100" in text
    assert "sources: ebpf 1,234 events/s (5,000 read)" in text
    assert "dropped: ebpf/ringbuf_full (lost) 3, ebpf/watchdog_sample 40" in text
    assert "watchdog: RSS 150 MB of 200 MB, CPU 50%; shedding: low_priority_packs (memory)" in text
    lines = text.splitlines()
    heavy = next(line for line in lines if line.startswith("heavy"))
    assert heavy.split() == ["heavy", "sample", "70%", "1.500", "9,000", "2"]
    assert "rule heavy degraded (sample): 70% of the engine's time" in text
