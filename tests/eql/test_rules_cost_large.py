"""`kestrel rules explain` and `kestrel rules cost` on a generated 1,000-rule
pack (800 single-event rules of benchmark scenario (e), the 200 sequences of
(f)) over generated fleet events: both finish, every rule is listed, and
the sequences are split between the lazy DFA and the NFA with reasons."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from kestrel_core.cli import main as cli
from kestrel_core.testing import kestrel_root


def _pack(tmp_path):
    sys.path.insert(0, str(kestrel_root()))
    from benchmarks.run import write_rules_toml
    from benchmarks.scenarios import scenario_e, scenario_f

    pack = tmp_path / "pack1000.toml"
    write_rules_toml(scenario_e(800) + scenario_f(200), pack)
    return pack


def _events(tmp_path, n=3000):
    from benchmarks.generate import Generator

    evs = Generator(seed=7).generate(n)
    path = tmp_path / "events.jsonl"
    with open(path, "w") as fh:
        for e in evs:
            e.pop("_ts_us", None)
            e.pop("_story", None)
            fh.write(json.dumps(e) + "\n")
    return path


def test_explain_and_cost_on_a_1000_rule_pack(tmp_path):
    from kestrel_core.eql import compilecache

    compilecache.configure(None)
    pack = _pack(tmp_path)
    res = CliRunner().invoke(cli, ["rules", "explain", str(pack), "--matcher", "acdfa"])
    assert res.exit_code == 0, res.output[-2000:]
    summary = res.output.strip().splitlines()[-1]
    assert summary.startswith("1000 rule(s): "), summary
    counts = dict((s, int(n)) for n, s in (part.split(" ") for part in summary.split(": ", 1)[1].split(", ")))
    assert counts["lazy-dfa"] == 160 and counts["nfa"] == 40, counts
    assert "NFA: until" in res.output and "different join keys per step" in res.output
    res = CliRunner().invoke(cli, ["rules", "cost", str(pack), "--input", str(_events(tmp_path)), "--top", "5"])
    assert res.exit_code == 0, res.output[-2000:]
    lines = res.output.strip().splitlines()
    assert lines[0].split()[:3] == ["RULE", "COMPILE", "ms"] and len(lines) == 7
    assert lines[-1].startswith("1000 rule(s), 3,000 event(s)")
