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
