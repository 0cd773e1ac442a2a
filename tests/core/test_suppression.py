"""Alert suppression (kestrel_core/suppression.py): one alert per rule and key
per window in event time, the count on the next alert of the key, summary
records at the end, kestrel_alerts_suppressed_total; the same in a live run
(pipeline), in replay (byte-identical across processes) and after a hot reload."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from kestrel_core.packs import load_packs
from kestrel_core.pipeline import Run
from kestrel_core.startup import load_profile
from kestrel_core.suppression import COUNT_FIELD, SUMMARY_FIELD, parse_suppress, parse_window
from kestrel_core.testing import run_kestrel

RULE = '''\
id = "s.chmod"
name = "chmod +x in /tmp"
description = "x"
{suppress}
query = 'file where event.action == "chmod" and file.path : "/tmp/*"'
'''
OTHER = '''\
id = "s.nc"
name = "netcat"
description = "x"
query = 'process where process.name == "nc"'
'''


def chmod(sec: int, entity: str, path: str = "/tmp/f") -> dict:
    return {"@timestamp": f"2026-01-05T08:{sec // 60:02d}:{sec % 60:02d}Z",
            "event": {"category": ["file"], "type": ["change"], "action": "chmod"},
            "process": {"pid": 1, "entity_id": entity, "name": "pip"}, "file": {"path": f"{path}{sec}"}}


def nc(sec: int) -> dict:
    return {"@timestamp": f"2026-01-05T08:{sec // 60:02d}:{sec % 60:02d}Z",
            "event": {"category": ["process"], "type": ["start"], "action": "exec"},
            "process": {"pid": 2, "entity_id": "n", "name": "nc"}}


# entity a: 0 s (alert), 10..50 s (5 suppressed), 70 s (alert, carries 5), 80 s (suppressed: summary at the end)
# entity b: 20 s (alert), 30 s (suppressed: summary); nc: never suppressed (no suppress, no profile default)
EVENTS = [chmod(0, "a"), chmod(10, "a"), chmod(20, "b"), chmod(20, "a"), chmod(30, "b"), chmod(30, "a"),
          chmod(40, "a"), nc(41), nc(42), chmod(50, "a"), chmod(70, "a"), chmod(80, "a")]
SUPPRESS = 'suppress = { by = ["process.entity_id"], window = "1m" }'


def pack(root: Path, suppress: str = SUPPRESS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pack.toml").write_text('[pack]\nname = "s"\nversion = "1"\npriority = 1\n')
    (root / "chmod.toml").write_text(RULE.format(suppress=suppress))
    (root / "nc.toml").write_text(OTHER)
    return root


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def check_output(records: list[dict]) -> None:
    chm = [r for r in records if r["rule"]["id"] == "s.chmod"]
    alerts = [r for r in chm if not r["fields"].get(SUMMARY_FIELD)]
    summaries = [r for r in chm if r["fields"].get(SUMMARY_FIELD)]
    assert [(r["events"][0]["process"]["entity_id"], r["events"][0]["file"]["path"]) for r in alerts] == [
        ("a", "/tmp/f0"), ("b", "/tmp/f20"), ("a", "/tmp/f70")]
    assert [r["fields"].get(COUNT_FIELD) for r in alerts] == [None, None, 5]
    assert sorted((r["events"][0]["process"]["entity_id"], r["fields"][COUNT_FIELD],
                   r["events"][0]["file"]["path"]) for r in summaries) == [("a", 1, "/tmp/f80"), ("b", 1, "/tmp/f30")]
    assert len([r for r in records if r["rule"]["id"] == "s.nc"]) == 2


def test_parse():
    assert parse_window("5m") == 300 * 10**9 and parse_window("500ms") == 5 * 10**8
    assert parse_window("0s") is None and parse_window("5 minutes") is None and parse_window(5) is None
    spec, msg = parse_suppress({"by": ["process.entity_id"], "window": "5m"})
    assert msg is None and spec.by == ("process.entity_id",) and spec.window_ns == 300 * 10**9
    assert parse_suppress(False) == (False, None)
    assert "did you mean 'window'" in parse_suppress({"by": ["x"], "windw": "5m"})[1]
    assert "'by' must be" in parse_suppress({"by": [], "window": "5m"})[1]
    assert "'window' must be" in parse_suppress({"by": ["a"], "window": "soon"})[1]


def test_bad_suppress_is_located(tmp_path):
    root = pack(tmp_path / "p", suppress='suppress = { by = ["process.entity_id"], window = "5 min" }')
    ps = load_packs([root])
    (err,) = ps.errors
    assert (err.file, err.line, err.column) == (str(root / "chmod.toml"), 4, 1)
    assert "suppress: 'window' must be a positive duration" in err.message
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules]\npaths = []\nsuppress = { by = "process.name", window = "1m" }\n')
    with pytest.raises(Exception) as exc:
        load_profile(bad)
    assert f"{bad}:3:" in str(exc.value) and "'by' must be a non-empty list" in str(exc.value)


def profile(tmp_path: Path, rules: Path, events: Path, out: Path, extra: str = "") -> Path:
    p = tmp_path / "profile.toml"
    p.write_text(textwrap.dedent(f'''\
        [rules]
        paths = ["{rules}"]
        {extra}
        [[sources]]
        type = "jsonl"
        path = "{events}"
        [[sinks]]
        type = "jsonl"
        path = "{out}"
        '''))
    return p


def run_profile(path: Path) -> Run:
    prof, host = load_profile(path)
    job = Run.build(prof, host)
    job.open()
    job.execute()
    return job


def test_live_run_suppresses_counts_and_reports(tmp_path):
    out = tmp_path / "alerts.jsonl"
    job = run_profile(profile(tmp_path, pack(tmp_path / "p"), write_events(tmp_path / "ev.jsonl", EVENTS), out))
    check_output([json.loads(line) for line in out.read_text().splitlines()])
    stats = job.context.stats
    assert stats.alerts[("s.chmod", "medium")] == 3  # delivered alerts; the repeats are counted apart
    metric = stats.extra["metrics"]["kestrel_alerts_suppressed_total"]
    assert metric["type"] == "counter" and metric["values"] == {("s.chmod",): 7}
    assert any("alerts suppressed as repeats within their window: 7 (7 s.chmod)" in line
               for line in job.stop_summary("eof"))
    from kestrel_sink_prometheus.collector import StatsCollector
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: stats))
    assert 'kestrel_alerts_suppressed_total{rule="s.chmod"} 7.0' in generate_latest(registry).decode()


def test_profile_default_applies_to_rules_without_their_own(tmp_path):
    out = tmp_path / "alerts.jsonl"
    extra = 'suppress = { by = ["process.name"], window = "1h" }'
    rules = pack(tmp_path / "p", suppress="suppress = false")  # the chmod rule opts out
    run_profile(profile(tmp_path, rules, write_events(tmp_path / "ev.jsonl", EVENTS), out, extra))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len([r for r in records if r["rule"]["id"] == "s.chmod"]) == 10  # none suppressed
    ncs = [r for r in records if r["rule"]["id"] == "s.nc"]
    assert [r["fields"].get(COUNT_FIELD) for r in ncs] == [None, 1] and ncs[1]["fields"][SUMMARY_FIELD]


def test_replay_suppresses_the_same_byte_for_byte_across_processes(tmp_path):
    events = write_events(tmp_path / "ev.jsonl", EVENTS)
    log = tmp_path / "ev.klog"
    res = run_kestrel("record", "--input", str(events), "-o", str(log))
    assert res.returncode == 0, res.stderr
    rules = pack(tmp_path / "p")
    outs = []
    for i, seed in enumerate(("1", "2")):
        out = tmp_path / f"replay{i}.jsonl"
        res = run_kestrel("replay", str(log), "--rules", str(rules), "-o", str(out), env={**os.environ, "PYTHONHASHSEED": seed})
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    lines = [json.loads(line) for line in outs[0].splitlines()]
    check_output(lines[1:-1])
    assert lines[-1]["counts"]["suppressed"] == 7 and lines[-1]["counts"]["suppression_summaries"] == 2
    assert lines[-1]["counts"]["alerts"] == 5


def test_a_reload_that_changes_suppress_reports_the_open_windows(tmp_path):
    """Suppressor.set_rules (the run's reload listener): a rule whose suppress
    changed has its windows closed and their counts reported; others keep theirs."""
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.plugins import rules_schema
    from kestrel_core.runtime import RunContext
    from kestrel_core.suppression import Suppressor

    schema = rules_schema()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    ps = load_packs([pack(tmp_path / "p")])
    engine = DetectionEngine(schema, ps.rules)
    alerts = engine.process_batch([norm.normalize(d, "t") for d in EVENTS[:7]])
    sup = Suppressor(schema, ps.rules)
    assert [sup.offer(a) for a in alerts if a.rule_id == "s.chmod"] == [True, False, True, False, False, False, False]
    sup.set_rules(ps.rules)  # the same settings: nothing closes
    assert sup.take() == []
    changed = load_packs([pack(tmp_path / "q", suppress='suppress = { by = ["process.entity_id"], window = "2m" }')])
    sup.set_rules(changed.rules)
    summaries = sup.take()
    assert sorted(s.fields[COUNT_FIELD] for s in summaries) == [1, 4]
    assert all(s.fields[SUMMARY_FIELD] for s in summaries) and sup.finish() == []
    assert sup.suppressed == {"s.chmod": 5}
