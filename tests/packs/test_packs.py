"""Rule packs: manifests, one-rule files, validation with located errors,
defaults, priority merge, golden tests, hash determinism."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from kestrel_core.packs import load_packs, run_rule_test
from kestrel_core.packs import load_rule_pack

sys.path.append(str(Path(__file__).resolve().parent))  # helpers (import-mode=importlib)
from packfixtures import make_pack, rule  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

def test_pack_with_manifest_defaults_and_recursive_files(tmp_path):
    pack = make_pack(tmp_path / "p", name="base", version="2.1", priority=5, rules={
        "b/second.toml": rule("r.second", "b"),
        "a/first.toml": rule("r.first", "a"),
        "c/old.toml": '[[rule]]\nid = "r.old"\nname = "Old"\nquery = \'process where true\'\nseverity = "high"\n',
    })
    (pack / ".hidden.toml").write_text("not = 'a rule'")
    ps = load_packs([pack])
    assert ps.errors == []
    assert [r.id for r in ps.rules] == ["r.first", "r.second", "r.old"]  # sorted by path
    first = ps.rules[0]
    assert first.pack == "base" and first.severity == "low" and first.risk_score == 10 and first.mode == "shadow"
    assert first.tags == ("linux", "execution", "T1059.004")  # defaults prepended
    assert first.actions == ("alert",) and len(first.tests) == 2
    assert first.tests[0].expect_events == [[1]] and len(first.tests[0].events) == 2
    assert ps.rules[2].severity == "high" and ps.rules[2].risk_score == 10  # old format gets defaults too
    (info,) = ps.packs
    assert (info.name, info.version, info.priority) == ("base", "2.1", 5) and len(info.hash) == 64


def test_plain_directory_and_file_are_still_packs(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.toml").write_text('[[rule]]\nid = "x"\nname = "X"\nquery = "process where true"\n')
    (tmp_path / "f.toml").write_text(rule("f"))
    ps = load_packs([tmp_path / "d", tmp_path / "f.toml"])
    assert ps.errors == []
    assert [(p.name, p.priority) for p in ps.packs] == [("d", 0), ("f", 0)]
    assert [r.id for r in ps.rules] == ["x", "f"]
    assert ps.rules[1].risk_score == 47  # medium's default risk score


def test_three_broken_rules_are_all_reported_with_locations(tmp_path):
    bad_key = rule("b1").replace('description = "a rule"', 'description = "a rule"\nseverty = "high"')
    bad_query = rule("b2").replace("process.name ==", "process.name = =")
    bad_json = rule("b3").replace('{"@timestamp": "2026-01-05T08:00:01Z", "event"',
                                '{"@timestamp": "2026-01-05T08:00:01Z" "event"')
    pack = make_pack(tmp_path / "p", rules={"good.toml": rule("ok"), "b1.toml": bad_key, "b2.toml": bad_query,
                                           "b3.toml": bad_json})
    ps = load_packs([pack])
    assert [r.id for r in ps.rules] == ["ok"]  # a bad rule never takes down the others
    by_file = {Path(e.file).name: e for e in ps.errors}
    assert sorted(by_file) == ["b1.toml", "b2.toml", "b3.toml"] and len(ps.errors) == 3
    e1 = by_file["b1.toml"]
    assert (e1.line, e1.column) == (4, 1) and "unknown key 'severty'" in e1.message
    assert "did you mean 'severity'?" in e1.message
    e2 = by_file["b2.toml"]
    query_line = (pack / "b2.toml").read_text().split("\n")[4]
    assert e2.line == 5 and e2.column == query_line.index("= =") + 1 and e2.rule_id == "b2"
    assert str(e2).split("\n")[2].index("^") == 2 + query_line.index("= =")  # caret under the column
    e3 = by_file["b3.toml"]
    assert "invalid JSON" in e3.message and e3.line == 13
    lines = (pack / "b3.toml").read_text().split("\n")
    assert lines[e3.line - 1][e3.column - 1] == '"'  # the caret is where JSON expected a comma
    assert str(e3).split("\n")[0].startswith(f"{pack / 'b3.toml'}:13:{e3.column}: error:")


def test_every_kind_of_value_error(tmp_path):
    text = textwrap.dedent('''\
        id = "v"
        name = "V"
        description = "d"
        severity = "urgent"
        risk_score = 101
        mode = "block"
        actions = ["alert", "deny-everything"]
        tags = ["T59", "T1059.004"]
        false_positives = "none"
        query = 'process where true'

        [[test]]
        name = "t"
        expect_alerts = 1
        expect_events = [[0, 3]]
        events = \'\'\'
        {"@timestamp": 1}
        \'\'\'
        ''')
    pack = make_pack(tmp_path / "p", rules={"v.toml": text})
    ps = load_packs([pack])
    got = {(e.line, e.message.split(",")[0].split(" (")[0]) for e in ps.errors}
    assert (4, "severity must be one of low") in got
    assert (5, "risk_score must be between 0 and 100") in got
    assert (6, "mode must be one of observe") in got
    assert (7, "unknown action 'deny-everything'") in got
    assert any(ln == 8 and "ATT&CK" in m for ln, m in got)
    assert (9, "'false_positives' must be a list of strings") in got
    assert any(ln == 15 and "out of range" in m for ln, m in got)
    assert ps.rules == []


def test_manifest_errors_are_located(tmp_path):
    pack = tmp_path / "p"
    pack.mkdir()
    (pack / "pack.toml").write_text('[pack]\nname = "p"\nprority = 3\n\n[defaults]\nseverity = "extreme"\n[extra]\n')
    ps = load_packs([pack])
    msgs = sorted((e.line, e.message) for e in ps.errors)
    assert any(ln == 3 and "unknown key 'prority'" in m and "did you mean 'priority'" in m for ln, m in msgs)
    assert any("missing required key 'version'" in m for _, m in msgs)
    assert any(ln == 6 and "severity must be one of" in m for ln, m in msgs)
    assert any(ln == 7 and "unknown table 'extra'" in m for ln, m in msgs)


def test_description_required_in_pack_files_and_duplicates_within_a_pack(tmp_path):
    no_desc = rule("a").replace('description = "a rule"\n', "")
    pack = make_pack(tmp_path / "p", rules={"a.toml": no_desc, "b.toml": rule("dup"), "c.toml": rule("dup")})
    ps = load_packs([pack])
    assert any("missing required key 'description'" in e.message and e.line == 1 for e in ps.errors)
    dup = next(e for e in ps.errors if "duplicate rule id 'dup'" in e.message)
    assert dup.file.endswith("c.toml") and "b.toml:1" in dup.message


def test_priority_override_is_reported(tmp_path, caplog):
    base = make_pack(tmp_path / "base", name="base", priority=10, rules={"r.toml": rule("shared", "nc", "Base"),
                                                                         "o.toml": rule("only.base")})
    local = make_pack(tmp_path / "local", name="local", priority=20, rules={"r.toml": rule("shared", "ncat", "Local")})
    caplog.set_level("INFO", logger="kestrel")
    for order in ([base, local], [local, base]):
        ps = load_packs(order)
        assert ps.errors == []
        shared = next(r for r in ps.rules if r.id == "shared")
        assert shared.name == "Local" and shared.pack == "local"
        (ov,) = ps.overrides
        assert (ov.rule_id, ov.winner, ov.loser, ov.winner_priority, ov.loser_priority) == \
            ("shared", "local", "base", 20, 10)
        assert ov.winner_file.endswith(str(Path("local") / "r.toml"))
    assert "rule shared: pack 'local' (priority 20) overrides pack 'base' (priority 10)" in caplog.text


def test_same_id_in_packs_of_equal_priority_is_an_error(tmp_path):
    a = make_pack(tmp_path / "a", name="a", priority=1, rules={"r.toml": rule("same")})
    b = make_pack(tmp_path / "b", name="b", priority=1, rules={"r.toml": rule("same")})
    ps = load_packs([a, b])
    (err,) = ps.errors
    assert "duplicate rule id 'same'" in err.message and "same priority 1" in err.message
    assert [r.pack for r in ps.rules] == ["a"]


def test_hash_is_stable_across_processes_and_sensitive_to_meaning(tmp_path):
    pack = make_pack(tmp_path / "p", rules={"a.toml": rule("a"), "b.toml": rule("b")})
    code = "import sys; from kestrel_core.packs import load_packs; print(load_packs(sys.argv[1:]).hash)"
    hashes = set()
    for seed in ("0", "1", "12345"):
        out = subprocess.run([sys.executable, "-c", code, str(pack)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        hashes.add(out.stdout.strip())
    assert hashes == {load_packs([pack]).hash}
    # the hash is about the rules, not where they live ...
    copy = make_pack(tmp_path / "elsewhere", rules={"a.toml": rule("a"), "b.toml": rule("b")})
    assert load_packs([copy]).hash in hashes
    # ... and any change of meaning changes it
    (copy / "b.toml").write_text(rule("b", "ncat"))
    assert load_packs([copy]).hash not in hashes


def test_load_rule_pack_is_the_merged_view(tmp_path):
    pack = make_pack(tmp_path / "p", rules={"a.toml": rule("a")})
    rules, errors = load_rule_pack([pack])
    assert errors == [] and [r.id for r in rules] == ["a"]


def test_golden_tests_pass_and_fail(tmp_path):
    pack = make_pack(tmp_path / "p", rules={"a.toml": rule("a")})
    (r,) = load_packs([pack]).rules
    results = [run_rule_test(r, t) for t in r.tests]
    assert [x.passed for x in results] == [True, True]
    wrong = r.tests[0]
    wrong.expect_events = [[0]]
    res = run_rule_test(r, wrong)
    assert not res.passed and "expected matched events [[0]], got [[1]]" in res.detail
    wrong.expect_alerts, wrong.expect_events = 2, None
    res = run_rule_test(r, wrong)
    assert not res.passed and "expected 2 alert(s), got 1" in res.detail


def test_sequence_golden_test_indexes_follow_the_events_given(tmp_path):
    text = textwrap.dedent('''\
        id = "s"
        name = "S"
        description = "d"
        query = \'\'\'
        sequence by process.pid with maxspan=1m
          [process where process.name == "a"]
          [process where process.name == "b"]
        \'\'\'

        [[test]]
        name = "out of order in the file, in order in time"
        expect_alerts = 1
        expect_events = [[1, 0]]
        events = \'\'\'
        {"@timestamp": "2026-01-05T08:00:05Z", "event": {"category": ["process"]}, "process": {"pid": 1, "name": "b"}}
        {"@timestamp": "2026-01-05T08:00:01Z", "event": {"category": ["process"]}, "process": {"pid": 1, "name": "a"}}
        \'\'\'
        ''')
    pack = make_pack(tmp_path / "p", rules={"s.toml": text})
    ps = load_packs([pack])
    assert ps.errors == []
    (r,) = ps.rules
    assert run_rule_test(r, r.tests[0]).passed


def test_alert_carries_rule_metadata(tmp_path):
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    pack = make_pack(tmp_path / "p", rules={"a.toml": rule("a").replace('tags =', 'risk_score = 88\nmode = "enforce"'
                                                                         '\nactions = ["alert", "kill"]\ntags =')})
    (r,) = load_packs([pack]).rules
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    ev = norm.normalize(r.tests[0].events[1], "t")
    (alert,) = DetectionEngine(schema, [r]).process_batch([ev])
    assert (alert.risk_score, alert.rule_mode, alert.rule_actions, alert.pack) == (88, "enforce", ("alert", "kill"), "p")
    d = alert.to_dict(schema)["rule"]
    assert d["risk_score"] == 88 and d["mode"] == "enforce"
