"""Regressions found by writing exceptions as a new user: a problem inside an
``all = [...]`` condition was located at the ``[[exception]]`` header instead
of the condition's own line."""

from __future__ import annotations

from kestrel_core.packs import load_packs

RULE = '''\
id = "e.chmod"
name = "chmod in tmp"
description = "x"
query = 'file where event.action == "chmod" and file.path : "/tmp/*"'

[[exception]]
reason = "pip"
all = [
  { field = "process.executable", op = "==", value = "/usr/bin/python3" },
  { field = "process.name", op = "in", values = [] },
  { field = "process.pid", op = "==", vaule = 3 },
]
'''


def test_problems_inside_all_point_at_their_condition(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RULE)
    errors = sorted((e.line, e.column, e.message) for e in load_packs([path]).errors)
    assert [(ln, col) for ln, col, _ in errors] == [(10, 13), (11, 13), (11, 13)], errors
    assert "(process.name in): 'values' must be a non-empty list" in errors[0][2]
    assert {m.split(" [rule")[0] for _, _, m in errors[1:]} == {
        "unknown key 'vaule' in a condition of [[exception]] #1 (did you mean 'value'?)",
        "[[exception]] #1 (process.pid ==): missing 'value' (or 'values')"}


def test_an_expires_that_is_not_a_date_says_what_it_is(tmp_path):
    """expires = 20270101 (a TOML integer) was told '(no time of day)'."""
    rule = RULE.split("[[exception]]")[0] + (
        '[[exception]]\nreason = "r"\nexpires = 20270101\nfield = "process.name"\nop = "=="\nvalue = "x"\n\n'
        '[[exception]]\nreason = "r"\nexpires = 2027-01-01T10:00:00Z\nfield = "process.name"\nop = "=="\nvalue = "x"\n')
    path = tmp_path / "r.toml"
    path.write_text(rule)
    errors = sorted((e.line, e.column, e.message) for e in load_packs([path]).errors)
    assert [(ln, col) for ln, col, _ in errors] == [(8, 1), (15, 1)], errors
    assert "'expires' must be a date such as 2027-01-31 (not 20270101, a number)" in errors[0][2]
    assert "'expires' must be a date such as 2027-01-31 (no time of day)" in errors[1][2]


def test_an_impossible_unquoted_date_is_named_at_its_value(tmp_path):
    """expires = 2026-13-40 is no TOML date: tomllib reads the number 2026 and
    said only 'Expected newline or end of document after a statement', at the '-'."""
    rule = RULE.split("[[exception]]")[0] + (
        '[[exception]]\nreason = "r"\nexpires = 2026-13-40\nfield = "process.name"\nop = "=="\nvalue = "x"\n')
    path = tmp_path / "r.toml"
    path.write_text(rule)
    (err,) = load_packs([path]).errors
    assert (err.line, err.column) == (8, 11)
    assert err.message.startswith("TOML syntax error: ")
    assert err.message.endswith("; 2026-13-40 is not a valid date (write one such as 2027-01-31)")
