"""The harness itself: data typos must fail loudly, output parsing must be exact."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from kestrel_runner import error_locations, match_ids  # noqa: E402
from test_conformance import load_cases  # noqa: E402

GOOD_SET = '''
[eventsets]
s = """
{"id": 1, "@timestamp": 1, "event": {"category": "x"}}
{"id": 2, "@timestamp": 2, "event": {"category": "x"}}
"""
'''


def _problems(tmp_path: Path, body: str, name: str = "a.toml") -> list[str]:
    (tmp_path / name).write_text(body)
    return load_cases(tmp_path)[1]


def test_valid_file_has_no_problems(tmp_path):
    assert _problems(tmp_path, GOOD_SET + '[[case]]\nid = "ok"\nevents = "s"\nquery = "x where true"\nexpected = [1, 2]\n') == []


def test_expected_id_not_in_events(tmp_path):
    p = _problems(tmp_path, GOOD_SET + '[[case]]\nid = "bad"\nevents = "s"\nquery = "x where true"\nexpected = [1, 3]\n')
    assert any("[3]" in x and "not in its events" in x for x in p), p


def test_duplicate_case_ids_across_files(tmp_path):
    case = '[[case]]\nid = "dup"\nevents = "s"\nquery = "x where true"\nexpected = []\n'
    _problems(tmp_path, GOOD_SET + case, "a.toml")
    p = _problems(tmp_path, GOOD_SET + case, "b.toml")
    assert any("duplicate id" in x for x in p), p


def test_unknown_key_and_unknown_set(tmp_path):
    p = _problems(tmp_path, GOOD_SET + '[[case]]\nid = "k"\nevents = "nope"\nquery = "x where true"\nexpectd = []\n')
    assert any("unknown keys" in x for x in p) and any("needs exactly one" in x for x in p), p


def test_duplicate_event_ids_and_bad_json(tmp_path):
    body = '[eventsets]\ns = """\n{"id": 1}\n{"id": 1}\n{not json}\n"""\n[[case]]\nid = "j"\nevents = "s"\nquery = "x where true"\nexpected = []\n'
    p = _problems(tmp_path, body)
    assert any("duplicate event ids" in x for x in p) and any("bad JSON" in x for x in p), p


def test_unused_event_set(tmp_path):
    body = GOOD_SET + 't = """\n{"id": 1}\n"""\n[[case]]\nid = "u"\nevents = "s"\nquery = "x where true"\nexpected = []\n'
    p = _problems(tmp_path, body)
    assert any("never used" in x for x in p), p


def test_error_locations_formats():
    assert error_locations("<query>:1:22: error: nope") == [(1, 22)]
    assert (3, 7) in error_locations("Error at line 3, column 7: bad")
    assert error_locations("no location here") == []


def test_match_ids_drops_missing_step_placeholders_and_sorts():
    got = match_ids([[{"id": 4}, None, {"id": 6}], [{"id": 1}, {"id": 2}]])
    assert got == [(1, 2), (4, 6)]
