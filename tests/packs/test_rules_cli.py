"""``kestrel rules check|test`` as a user runs them: a subprocess, real pack files."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent))  # helpers (import-mode=importlib)
from packfixtures import make_pack, rule  # noqa: E402

from kestrel_core.testing import run_kestrel as kestrel


def broken_pack(tmp_path: Path) -> Path:
    bad_key = rule("b1").replace('description = "a rule"', 'description = "a rule"\nseverty = "high"')
    bad_query = rule("b2").replace("process.name ==", "process.name = =")
    bad_json = rule("b3").replace('{"@timestamp": "2026-01-05T08:00:01Z", "event"',
                                  '{"@timestamp": "2026-01-05T08:00:01Z" "event"')
    return make_pack(tmp_path / "p", rules={"good.toml": rule("ok"), "x/b1.toml": bad_key, "x/b2.toml": bad_query,
                                           "y/b3.toml": bad_json})


def test_check_lists_all_three_broken_rules_with_locations_and_carets(tmp_path):
    pack = broken_pack(tmp_path)
    res = kestrel("rules", "check", str(pack))
    assert res.returncode == 2, res.stderr
    err = res.stderr
    heads = re.findall(r"^(\S+?):(\d+):(\d+): error: (.*)$", err, re.M)
    assert [(Path(f).name, int(ln)) for f, ln, _c, _m in heads] == [("b1.toml", 4), ("b2.toml", 5), ("b3.toml", 13)]
    assert "did you mean 'severity'?" in heads[0][3] and "[rule b1]" in heads[0][3]
    # each error shows its line and a caret under the column
    lines = err.splitlines()
    for f, ln, col, _m in heads:
        i = next(k for k, text in enumerate(lines) if text.startswith(f"{f}:{ln}:{col}:"))
        src = Path(f).read_text().split("\n")[int(ln) - 1]
        assert lines[i + 1] == f"  {src}"
        assert lines[i + 2] == "  " + " " * (int(col) - 1) + "^"
    assert "3 error(s) in 3 file(s); 1 rule(s) loaded from p 1.0 (priority 0)" in err


def test_check_ok_reports_overrides_and_hash(tmp_path):
    base = make_pack(tmp_path / "base", name="base", priority=1, rules={"r.toml": rule("shared")})
    local = make_pack(tmp_path / "local", name="local", priority=2, rules={"r.toml": rule("shared", "ncat")})
    res = kestrel("rules", "check", str(base), str(local))
    assert res.returncode == 0, res.stderr
    assert "override: rule shared: pack 'local' (priority 2) overrides pack 'base' (priority 1)" in res.stdout
    assert re.search(r"ok: 1 rule\(s\) from base 1.0 \(priority 1\), local 1.0 \(priority 2\); 0 warning\(s\); "
                     r"1 override\(s\); hash [0-9a-f]{64}", res.stdout)


def test_check_reports_semantic_errors_from_the_compiler(tmp_path):
    pack = make_pack(tmp_path / "p", rules={"t.toml": rule("t").replace('process.name == "nc"', "process.pid == \"x\"")})
    assert kestrel("rules", "check", str(pack)).returncode == 0  # warn: reported, kept
    res = kestrel("rules", "check", "--strictness", "error", str(pack))
    assert res.returncode == 2
    assert re.search(rf"^{re.escape(str(pack / 't.toml'))}:5:\d+: error: .*\[rule t\]", res.stderr, re.M)


def test_test_prints_a_table_and_fails_on_a_wrong_expectation(tmp_path):
    wrong = rule("w").replace("expect_events = [[1]]", "expect_events = [[0]]")
    pack = make_pack(tmp_path / "p", rules={"a.toml": rule("a"), "w.toml": wrong,
                                           "n.toml": '[[rule]]\nid = "n"\nname = "N"\nquery = "process where true"\n'})
    res = kestrel("rules", "test", str(pack))
    assert res.returncode == 1, res.stdout + res.stderr
    rows = [ln.split() for ln in res.stdout.splitlines()]
    assert rows[0][:3] == ["RESULT", "RULE", "TEST"]
    assert [r[:3] for r in rows[1:5]] == [["pass", "a", "positive"], ["pass", "a", "negative"],
                                         ["FAIL", "w", "positive"], ["pass", "w", "negative"]]
    assert f"{pack / 'w.toml'}:7: expected matched events [[0]], got [[1]]" in res.stdout
    assert "3 passed, 1 failed; 1 rule(s) without tests (n)" in res.stdout


def test_test_passes(tmp_path):
    pack = make_pack(tmp_path / "p", rules={"a.toml": rule("a"), "b.toml": rule("b", "ncat")})
    res = kestrel("rules", "test", str(pack))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 passed, 0 failed; 0 rule(s) without tests" in res.stdout


def test_test_with_load_errors_exits_2_but_runs_the_good_rules(tmp_path):
    res = kestrel("rules", "test", str(broken_pack(tmp_path)))
    assert res.returncode == 2
    assert "2 passed, 0 failed" in res.stdout and "3 error(s)" in res.stdout
