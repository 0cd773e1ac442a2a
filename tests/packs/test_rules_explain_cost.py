"""kestrel rules explain / rules cost: strategies with reasons, and the cost table."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from kestrel_core.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules" / "linux"


def _write_pack(tmp_path: Path) -> Path:
    (tmp_path / "pack.toml").write_text('[pack]\nname = "t"\nversion = "1"\npriority = 1\n')
    (tmp_path / "rules.toml").write_text('''
[[rule]]
id = "lit"
name = "lit"
query = 'process where process.name == "nc"'

[[rule]]
id = "mixed"
name = "mixed"
query = 'process where process.name : "curl" and process.pid > 100'

[[rule]]
id = "scan"
name = "scan"
query = 'process where process.pid > 100'

[[rule]]
id = "seq"
name = "seq"
query = """sequence by process.pid [process where process.name == "a"] [process where process.name == "b"]
until [process where event.action == "end"]"""
''')
    return tmp_path


def test_explain_names_each_rules_strategy(tmp_path):
    pack = _write_pack(tmp_path)
    res = CliRunner().invoke(main, ["rules", "explain", str(pack)])
    assert res.exit_code == 0, res.output
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln and not ln.startswith(" ")}
    assert " ac " in lines["lit"] and "literal-only" in lines["lit"]
    assert "ac+pred" in lines["mixed"]
    assert " scan " in lines["scan"]
    assert " nfa " in lines["seq"] and "until" in lines["seq"]
    assert "4 rule(s)" in res.output


def test_explain_the_linux_pack_with_every_rule(tmp_path):
    res = CliRunner().invoke(main, ["rules", "explain", str(PACK)])
    assert res.exit_code == 0, res.output
    assert "61 rule(s)" in res.output or "rule(s):" in res.output


def test_cost_table_sorted_by_evaluation_time(tmp_path):
    pack = _write_pack(tmp_path)
    events = tmp_path / "ev.jsonl"
    rows = []
    for i in range(300):
        rows.append({"@timestamp": 1_700_000_000_000 + i, "event": {"category": ["process"], "action": "exec"},
                     "process": {"name": ["nc", "curl", "a", "b", "x"][i % 5], "pid": i}})
    events.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = CliRunner().invoke(main, ["rules", "cost", str(pack), "--input", str(events)])
    assert res.exit_code == 0, res.output
    table = [ln.split() for ln in res.output.splitlines()[1:] if ln and not ln.startswith("4 rule")]
    by_rule = {r[0]: r for r in table}
    assert set(by_rule) == {"lit", "mixed", "scan", "seq"}
    eval_ms = [float(r[3]) for r in table]
    assert eval_ms == sorted(eval_ms, reverse=True)
    assert by_rule["scan"][2] == "300"  # no prefilter: every process event evaluated
    assert by_rule["lit"][2] == "60" and by_rule["lit"][5] == "100.0%"  # candidates are exactly the hits
    assert int(by_rule["scan"][6].replace(",", "")) == 199  # pid > 100


def test_cost_with_an_unknown_matcher_is_a_usage_error(tmp_path):
    res = CliRunner().invoke(main, ["rules", "cost", str(_write_pack(tmp_path)), "--matcher", "nope"])
    assert res.exit_code == 2
    assert "matcher 'nope' is not available" in res.output


def test_cost_profile_is_published_as_live_metrics():
    from kestrel_core.eql.classify import instrument, publish_costs
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.event import Event
    from kestrel_core.rules import Rule
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    schema = Schema.ecs()
    rules = [Rule(id=f"r{i}", name="r", query=f'process where process.name == "p{i}"') for i in range(6)]
    eng = DetectionEngine(schema, rules)
    ctx = RunContext(schema=schema)
    publish_costs(ctx.stats, eng, instrument(eng))
    metrics = ctx.stats.extra["metrics"]
    assert metrics["kestrel_rule_evaluations_total"]["values"]() == {(f"r{i}",): 0 for i in range(6)}
    name, cat = schema.resolve("process.name"), schema.resolve("event.category")
    evs = [Event("process", {name: f"p{i % 3}", cat: ["process"]}, i, i, i + 1) for i in range(30)]
    assert len(eng.process_batch(evs)) == 30
    evals = metrics["kestrel_rule_evaluations_total"]["values"]()
    hits = metrics["kestrel_rule_candidate_hits_total"]["values"]()
    assert evals[("r0",)] == 10 and hits[("r0",)] == 10 and evals[("r5",)] == 0  # literal index: hits only
    assert metrics["kestrel_rule_eval_seconds_total"]["values"]()[("r1",)] > 0
