"""EQL conformance suite: data-driven cases in cases/*.toml run through `kestrel eval`.

Expected results were worked out by hand from the Elasticsearch EQL docs and,
where the docs are silent, from facts read in the Elasticsearch source (each
data file cites what it relied on).  See README.md for the format.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sys

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kestrel_runner import error_locations, match_ids, run_eval

CASES_DIR = Path(__file__).parent / "cases"
CASE_KEYS = {"id", "description", "query", "events", "expected", "error", "args"}
META_KEYS = {"area", "args", "events", "notes"}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")


@dataclass
class Case:
    id: str
    file: str
    description: str
    query: str
    events: list[dict]
    args: list[str]
    expected: list[tuple] | None
    error: dict | None


def _parse_jsonl(text: str, where: str, problems: list[str]) -> list[dict]:
    events = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: line {n}: bad JSON: {exc}")
            continue
        if not isinstance(ev, dict):
            problems.append(f"{where}: line {n}: an event must be a JSON object")
            continue
        events.append(ev)
    ids = [ev.get("id") for ev in events]
    for ev_id in ids:
        if not isinstance(ev_id, int) or isinstance(ev_id, bool):
            problems.append(f"{where}: every event needs an integer 'id' (got {ev_id!r})")
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        problems.append(f"{where}: duplicate event ids {sorted(dup, key=str)}")
    return events


def load_cases(cases_dir: Path = CASES_DIR) -> tuple[list[Case], list[str]]:
    """Load every case; collect data problems instead of raising so that one typo
    fails test_data_files_are_valid loudly without hiding the other cases."""
    problems: list[str] = []
    cases: list[Case] = []
    seen: dict[str, str] = {}
    files = sorted(Path(cases_dir).glob("*.toml"))
    if not files:
        problems.append(f"no case files in {cases_dir}")
    for path in files:
        fname = path.name
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{fname}: TOML error: {exc}")
            continue
        unknown_top = set(data) - {"meta", "eventsets", "case"}
        if unknown_top:
            problems.append(f"{fname}: unknown top-level keys {sorted(unknown_top)}")
        meta = data.get("meta", {})
        if set(meta) - META_KEYS:
            problems.append(f"{fname}: unknown [meta] keys {sorted(set(meta) - META_KEYS)}")
        sets = {name: _parse_jsonl(text, f"{fname}:eventsets.{name}", problems)
                for name, text in data.get("eventsets", {}).items()}
        used_sets: set[str] = set()
        raw_cases = data.get("case", [])
        if not raw_cases:
            problems.append(f"{fname}: no [[case]] entries")
        for i, raw in enumerate(raw_cases):
            where = f"{fname}: case #{i + 1} ({raw.get('id', '?')})"
            bad = set(raw) - CASE_KEYS
            if bad:
                problems.append(f"{where}: unknown keys {sorted(bad)}")
            cid = raw.get("id")
            if not isinstance(cid, str) or not ID_RE.match(cid):
                problems.append(f"{where}: missing or malformed id")
                continue
            if cid in seen:
                problems.append(f"{where}: duplicate id (also in {seen[cid]})")
                continue
            seen[cid] = fname
            query = raw.get("query")
            if not isinstance(query, str) or (not query.strip() and "error" not in raw):
                problems.append(f"{where}: missing query")
                continue
            if ("expected" in raw) == ("error" in raw):
                problems.append(f"{where}: needs exactly one of 'expected' or 'error'")
                continue
            ev_ref = raw.get("events", meta.get("events"))
            if isinstance(ev_ref, str) and ev_ref.lstrip().startswith("{"):
                events = _parse_jsonl(ev_ref, f"{where}: inline events", problems)
            elif isinstance(ev_ref, str):
                if ev_ref not in sets:
                    problems.append(f"{where}: unknown event set {ev_ref!r}")
                    continue
                used_sets.add(ev_ref)
                events = sets[ev_ref]
            elif ev_ref is None and "error" in raw:
                events = []
            else:
                problems.append(f"{where}: 'events' must name an event set or hold inline JSONL")
                continue
            args = [*meta.get("args", []), *raw.get("args", [])]
            if not all(isinstance(a, str) for a in args):
                problems.append(f"{where}: args must be strings")
                continue
            expected = error = None
            if "expected" in raw:
                exp = raw["expected"]
                if not isinstance(exp, list):
                    problems.append(f"{where}: expected must be a list")
                    continue
                norm = []
                for m in exp:
                    m = [m] if isinstance(m, int) else m
                    if not isinstance(m, list) or not m or not all(isinstance(x, int) for x in m):
                        problems.append(f"{where}: each expected match must be an id or a non-empty list of ids, got {m!r}")
                        break
                    norm.append(tuple(m))
                else:
                    known = {ev.get("id") for ev in events}
                    missing = sorted({x for m in norm for x in m} - known)
                    if missing:
                        problems.append(f"{where}: expected ids {missing} are not in its events")
                        continue
                    expected = sorted(norm)
                if expected is None:
                    continue
            else:
                error = raw["error"]
                if not isinstance(error, dict) or not isinstance(error.get("line"), int) or error["line"] < 1 \
                        or not isinstance(error.get("column", 1), int) or set(error) - {"line", "column"}:
                    problems.append(f"{where}: error must be {{line = L[, column = C]}}")
                    continue
            cases.append(Case(cid, fname, raw.get("description", ""), query, events, args, expected, error))
        for name in set(sets) - used_sets - {meta.get("events")}:
            problems.append(f"{fname}: event set {name!r} is never used")
    return cases, problems


CASES, PROBLEMS = load_cases()


def test_data_files_are_valid():
    assert not PROBLEMS, "conformance data problems:\n" + "\n".join(PROBLEMS)


def test_suite_is_large_enough():
    # guards against a file silently dropping out (e.g. a renamed extension)
    assert len(CASES) >= 300, len(CASES)


def _describe(case: Case) -> str:
    return f"[{case.file}] {case.id}: {case.description}\n  query: {case.query}\n  args: {case.args}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, tmp_path: Path):
    res = run_eval(case.query, case.events, case.args, workdir=tmp_path)
    assert res.crash is None, f"{_describe(case)}\nengine raised instead of exiting:\n{res.crash}"
    if case.error is not None:
        assert res.exit_code != 0, f"{_describe(case)}\nquery must be rejected, but it ran; stdout:\n{res.stdout}"
        locs = error_locations(res.stderr)
        want_line, want_col = case.error["line"], case.error.get("column")
        ok = any(l == want_line and (want_col is None or c == want_col) for l, c in locs)
        assert ok, (f"{_describe(case)}\nwanted an error located at {want_line}:{want_col if want_col else '*'}; "
                    f"stderr was:\n{res.stderr}")
        return
    assert res.exit_code == 0, f"{_describe(case)}\nexit code {res.exit_code}; stderr:\n{res.stderr}"
    got = match_ids(res.matches)
    assert got == case.expected, f"{_describe(case)}\nexpected {case.expected}\ngot      {got}"
    # the contract prints the ORIGINAL event objects, unchanged
    by_id = {ev["id"]: ev for ev in case.events}
    for match in res.matches:
        for ev in match:
            if isinstance(ev, dict):
                assert ev == by_id.get(ev.get("id")), (f"{_describe(case)}\nprinted event differs from the input:\n"
                                                       f"  printed {ev}\n  input   {by_id.get(ev.get('id'))}")
