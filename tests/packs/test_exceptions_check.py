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
