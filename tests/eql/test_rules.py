"""Rule packs: loading, located errors (TOML, keys, ids, EQL inside the file)."""

from __future__ import annotations

from pathlib import Path

from kestrel_core.packs import load_rule_pack
from kestrel_core.rules import Rule, RuleError

GOOD = '''\
[[rule]]
id = "r1"
name = "Shell"
severity = "high"
tags = ["execution"]
description = "a shell"
query = """
process where process.name in ("sh", "bash")
"""

[[rule]]
id = "r2"
name = "Off"
enabled = false
runtime = "host"
query = 'process where true'
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_load_file_and_directory(tmp_path):
    write(tmp_path, "a.toml", GOOD)
    write(tmp_path, "notes.txt", "ignored")
    rules, errors = load_rule_pack([tmp_path])
    assert errors == []
    assert [r.id for r in rules] == ["r1", "r2"]
    r1, r2 = rules
    assert r1.severity == "high" and r1.tags == ("execution",) and r1.description == "a shell"
    assert r1.file == str(tmp_path / "a.toml") and r1.line == 1
    assert r2.enabled is False and r2.runtime == "host" and r2.severity == "medium"


def test_eql_error_points_into_the_file_multiline(tmp_path):
    text = '''\
[[rule]]
id = "bad"
name = "Bad"
query = """
process where
  process.name == 'x'
"""
'''
    p = write(tmp_path, "bad.toml", text)
    rules, errors = load_rule_pack([p])
    assert rules == []
    (err,) = errors
    assert (err.file, err.line, err.column) == (str(p), 6, 19)
    assert err.rule_id == "bad"
    s = str(err)
    assert s.startswith(f"{p}:6:19: error: single-quoted")
    assert s.split("\n")[1] == "    process.name == 'x'"
    assert s.split("\n")[2].index("^") == 2 + 18


def test_eql_error_points_into_the_file_single_line(tmp_path):
    text = '[[rule]]\nid = "bad"\nname = "Bad"\nquery = "process where a == = 1"\n'
    p = write(tmp_path, "bad.toml", text)
    _, (err,) = load_rule_pack([p])
    # the query starts at column 10 of line 4; its second '=' is at query column 20
    assert (err.line, err.column) == (4, 10 + 19)
    text = "[[rule]]\nid = 'bad'\nname = 'Bad'\nquery = '''process where (a == 1'''\n"
    p = write(tmp_path, "bad2.toml", text)
    _, (err,) = load_rule_pack([p])
    assert err.line == 4 and err.column == 12 + 21


def test_toml_syntax_error_is_located(tmp_path):
    p = write(tmp_path, "x.toml", '[[rule]]\nid = "a"\nname = \n')
    rules, (err,) = load_rule_pack([p])
    assert rules == []
    assert err.file == str(p) and err.line == 3 and "TOML" in err.message


def test_unknown_missing_and_bad_keys(tmp_path):
    text = '''\
[[rule]]
id = "a"
name = "A"
query = "x where true"
colour = "red"

[[rule]]
id = "b"
query = "x where true"

[[rule]]
id = "c"
name = "C"
query = "x where true"
severity = "urgent"

[[rule]]
id = "d"
name = "D"
query = "x where true"
tags = "oops"

[[rule]]
id = "e"
name = "E"
query = "x where true"
'''
    p = write(tmp_path, "k.toml", text)
    rules, errors = load_rule_pack([p])
    assert [r.id for r in rules] == ["e"]
    by_msg = {e.message.split(" (")[0]: e for e in errors}
    unknown = by_msg["unknown key 'colour' in rule"]
    assert (unknown.line, unknown.column) == (5, 1)
    missing = next(e for e in errors if "missing required key 'name'" in e.message)
    assert missing.line == 7 and missing.rule_id == "b"
    sev = next(e for e in errors if "severity must be one of" in e.message)
    assert sev.line == 15
    tags = next(e for e in errors if "'tags'" in e.message)
    assert tags.line == 21


def test_duplicate_ids_across_files(tmp_path):
    write(tmp_path, "a.toml", '[[rule]]\nid = "dup"\nname = "A"\nquery = "x where true"\n')
    write(tmp_path, "b.toml", '\n\n[[rule]]\nid = "dup"\nname = "B"\nquery = "x where true"\n')
    rules, (err,) = load_rule_pack([tmp_path])
    assert [r.name for r in rules] == ["A"]
    assert err.file.endswith("b.toml") and err.line == 3 and "duplicate rule id 'dup'" in err.message
    assert "a.toml:1" in err.message


def test_missing_path(tmp_path):
    rules, (err,) = load_rule_pack([tmp_path / "nope"])
    assert "no such rule file" in str(err)


def test_bundled_linux_pack_loads_and_compiles():
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.schema import Schema

    root = Path(__file__).resolve().parents[2] / "rules" / "linux"
    if not root.is_dir():
        return
    rules, errors = load_rule_pack([root])
    assert errors == [], [str(e) for e in errors]
    eng = DetectionEngine(Schema.ecs(), rules, strict="error")
    assert eng.rule_errors == [], [str(e) for e in eng.rule_errors]


def test_engine_rule_errors_are_located_in_the_file(tmp_path):
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.schema import Schema

    text = '[[rule]]\nid = "t"\nname = "T"\nquery = """\nprocess where\n  process.pid == "x"\n"""\n'
    p = write(tmp_path, "t.toml", text)
    rules, errors = load_rule_pack([p])
    assert errors == []
    eng = DetectionEngine(Schema.ecs(), rules, strict="error")
    (err,) = eng.rule_errors
    assert isinstance(err, RuleError)
    assert (err.file, err.line, err.column) == (str(p), 6, 15)
    eng = DetectionEngine(Schema.ecs(), rules, strict="warn")
    assert eng.rule_errors == [] and len(eng.warnings) == 1
    assert eng.warnings[0].line == 6


def test_rule_attrs_defaults():
    r = Rule(id="x", name="X", query="x where true", tags=["a"])
    assert r.tags == ("a",) and r.enabled and r.runtime is None and r.severity == "medium"
