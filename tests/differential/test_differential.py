"""Differential tests: Kestrel's `kestrel eval` against the PyPI `eql` engine,
restricted to constructs whose semantics coincide (see README.md).

1. HAND_WRITTEN: fixed queries over a fixed event set, one per coinciding construct.
2. Generated: a few hundred seeded random (query, event set) pairs from gen.py.
Match sets (tuples of event ids, step order) are compared exactly.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "conformance"))

from eql_oracle import eql_matches  # noqa: E402
from gen import generate, generate_dense  # noqa: E402
from kestrel_runner import match_ids, run_eval  # noqa: E402

SEEDS = range(1000, 1400)  # 400 generated pairs
DENSE_SEEDS = range(5000, 5150)  # 150 long streams with competing partial sequences
KESTREL_ARGS = ["--event-category-field", "category", "--timestamp-field", "ts_ms",
                "--timestamp-format", "epoch_ms"]

FIXED_EVENTS = [
    {"id": 1, "category": "process", "ts_ms": 1_000, "name": "cmd.exe", "n": 1, "h": "h1"},
    {"id": 2, "category": "process", "ts_ms": 2_000, "name": "CMD.EXE", "n": 2, "h": "h2"},
    {"id": 3, "category": "file", "ts_ms": 3_000, "name": "note.txt", "n": 3, "h": "h1"},
    {"id": 4, "category": "process", "ts_ms": 4_000, "name": "PowerShell.exe", "n": 4, "h": "h1"},
    {"id": 5, "category": "file", "ts_ms": 9_000, "name": "ABC.txt", "n": 5, "h": "h2"},
    {"id": 6, "category": "network", "ts_ms": 10_000, "name": "svchost.exe", "n": 6, "h": "h1"},
    {"id": 7, "category": "process", "ts_ms": 12_000, "name": "cmd.exe", "n": 7, "h": "h2"},
    {"id": 8, "category": "file", "ts_ms": 13_000, "name": "a.b.c", "n": 8, "h": "h2"},
    {"id": 9, "category": "process", "ts_ms": 20_000, "name": "notepad.exe", "n": 9, "h": "h1"},
    {"id": 10, "category": "file", "ts_ms": 21_000, "name": "Note.TXT", "n": 0, "h": "h1"},
]

HAND_WRITTEN = [
    'process where name : "cmd.exe"',
    'any where name : "*.exe"',
    'any where name : ("cmd*", "*txt")',
    'any where name like~ "NOTE*"',
    'any where name in~ ("cmd.exe", "note.txt")',
    'any where name not in~ ("cmd.exe", "note.txt")',
    'any where name regex~ "c.*"',
    'any where name regex~ ".*\\\\.txt.*"',
    'any where startsWith~(name, "Note")',
    'any where endsWith~(name, ".EXE")',
    'any where stringContains~(name, "SHELL")',
    'any where length(name) == 7',
    'any where n > 3 and n <= 7',
    'any where n in (1, 4, 9)',
    'any where not n in (1, 4, 9)',
    'any where n + 1 == 5 or n * 2 == 16',
    'any where add(n, 2) == 9',
    'any where n % 3 == 0',
    'any where n / 2 == 2',
    'any where substring(name, -4) : ".exe"',
    'any where substring(name, 0, 3) : "cmd"',
    'any where between~(name, "c", ".") : "md"',
    'any where concat(name, n) : "cmd.exe7"',
    'any where string(n) : "4"',
    'any where indexOf~(name, "E") == 3',
    'file where true',
    'any where true | head 3',
    'any where true | tail 2',
    'any where n != 4 and not name : "*.exe"',
    'sequence [process where true] [file where true]',
    'sequence by h [process where true] [file where true]',
    'sequence [process where true] by h [file where true] by h',
    'sequence with maxspan=5s [process where true] [file where true]',
    'sequence with maxspan=1s [process where true] [file where true]',
    'sequence by h with maxspan=10s [process where true] [file where true] [any where n > 5]',
    'sequence [process where name : "cmd*"] [process where true]',
    'sequence [any where true] [any where true]',
    'sequence by h [process where true] [file where true] until [network where true]',
    'sequence [process where true] [file where true] until [network where true]',
]


def _kestrel(query: str, events: list[dict], tmp_path: Path) -> list[tuple]:
    res = run_eval(query, events, KESTREL_ARGS, workdir=tmp_path)
    assert res.crash is None, f"kestrel eval raised:\n{res.crash}"
    assert res.exit_code == 0, f"kestrel eval exit {res.exit_code}\nstderr:\n{res.stderr}"
    return match_ids(res.matches)


def _report(query: str, events: list[dict], ours, theirs) -> str:
    lines = [f"query:\n  {query}", "events:"]
    lines += [f"  {ev}" for ev in sorted(events, key=lambda e: e["ts_ms"])]
    only_k = sorted(set(ours) - set(theirs))
    only_e = sorted(set(theirs) - set(ours))
    lines.append(f"kestrel: {ours}\neql:     {theirs}\nonly kestrel: {only_k}\nonly eql: {only_e}")
    return "\n".join(lines)


@pytest.mark.parametrize("query", HAND_WRITTEN)
def test_hand_written(query: str, tmp_path: Path):
    theirs = eql_matches(query, FIXED_EVENTS)
    ours = _kestrel(query, FIXED_EVENTS, tmp_path)
    assert ours == theirs, _report(query, FIXED_EVENTS, ours, theirs)


def test_hand_written_oracle_is_not_trivial():
    # the oracle must actually discriminate on the fixed set: most queries match
    # something, and not everything
    sizes = [len(eql_matches(q, FIXED_EVENTS)) for q in HAND_WRITTEN]
    assert sum(1 for s in sizes if s > 0) >= len(HAND_WRITTEN) - 3
    assert all(s < len(FIXED_EVENTS) ** 2 for s in sizes)


@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_generated(seed: int, tmp_path: Path):
    case = generate(seed)
    theirs = eql_matches(case.query, case.events)
    ours = _kestrel(case.query, case.events, tmp_path)
    assert ours == theirs, f"seed {seed}\n" + _report(case.query, case.events, ours, theirs)


@pytest.mark.parametrize("seed", DENSE_SEEDS, ids=[f"dense{s}" for s in DENSE_SEEDS])
def test_generated_dense_sequences(seed: int, tmp_path: Path):
    case = generate_dense(seed)
    theirs = eql_matches(case.query, case.events)
    ours = _kestrel(case.query, case.events, tmp_path)
    assert ours == theirs, f"dense seed {seed}\n" + _report(case.query, case.events, ours, theirs)


def test_dense_corpus_exercises_matches():
    total = sum(len(eql_matches(generate_dense(s).query, generate_dense(s).events)) for s in DENSE_SEEDS)
    nonempty = sum(1 for s in DENSE_SEEDS if eql_matches(generate_dense(s).query, generate_dense(s).events))
    assert nonempty >= len(DENSE_SEEDS) // 2 and total >= 300, (nonempty, total)


def test_generator_is_deterministic():
    a, b = generate(1234), generate(1234)
    assert (a.query, a.events) == (b.query, b.events)


def test_generated_corpus_exercises_matches():
    # a generator whose queries never match would make test_generated vacuous
    results = [eql_matches(generate(s).query, generate(s).events) for s in SEEDS]
    nonempty = sum(1 for r in results if r)
    assert nonempty >= len(results) // 3, nonempty
    seq_nonempty = sum(1 for s, r in zip(SEEDS, results) if r and generate(s).query.startswith("sequence"))
    assert seq_nonempty >= 30, seq_nonempty


# Negation over a missing value: Kestrel follows Elasticsearch (`must_not`
# matches events without the field, docs/eql-semantics.md "Values and null"),
# eql 1.0.1 does not match them.  Such cases are excluded from the comparison
# (the generator gives every event every field); this pins the observed
# difference so the exclusion stays deliberate (README "Where they differ").
NULL_EVENTS = [
    {"id": 1, "category": "process", "ts_ms": 1_000, "name": "cmd.exe", "n": 1},
    {"id": 2, "category": "process", "ts_ms": 2_000, "n": 2},
    {"id": 3, "category": "process", "ts_ms": 3_000, "name": "x", "n": None},
    {"id": 4, "category": "process", "ts_ms": 4_000, "name": None},
    {"id": 5, "category": "process", "ts_ms": 5_000, "name": "note.txt", "n": 5},
]
NULL_NEGATIONS = [  # (query, Elasticsearch's answer = Kestrel's)
    ('any where name != "cmd.exe"', [(2,), (3,), (4,), (5,)]),
    ('any where name not in ("cmd.exe", "x")', [(2,), (4,), (5,)]),
    ('any where not name : "cmd*"', [(2,), (3,), (4,), (5,)]),
    ('any where not n > 1', [(1,), (3,), (4,)]),
    ('any where not (n > 1 or name : "c*")', [(3,), (4,)]),
    ('any where not length(name) == 1', [(1,), (2,), (4,), (5,)]),
]
NULL_AGREED = [  # both engines agree on these with missing values
    'any where name == null',
    'any where name != null',
    'any where not (name == null)',
    'any where length(name) != 1',
]


@pytest.mark.parametrize("query,es", NULL_NEGATIONS)
def test_null_negation_is_excluded(query: str, es: list, tmp_path: Path):
    ours = _kestrel(query, NULL_EVENTS, tmp_path)
    assert ours == es, _report(query, NULL_EVENTS, ours, es)
    assert eql_matches(query, NULL_EVENTS) != ours, "eql now agrees: move the construct to the compared set"


@pytest.mark.parametrize("query", NULL_AGREED)
def test_null_checks_agree(query: str, tmp_path: Path):
    ours = _kestrel(query, NULL_EVENTS, tmp_path)
    theirs = eql_matches(query, NULL_EVENTS)
    assert ours == theirs, _report(query, NULL_EVENTS, ours, theirs)
