"""`kestrel eval` (kestrel_core.eql.cli.eval_command) as a black box."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from kestrel_core.eql.cli import eval_command


def run(query, events, *args, stdin=None, raw_lines=None):
    import os
    import tempfile

    runner = CliRunner()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ev.jsonl")
        if stdin is None:
            with open(path, "w") as fh:
                if raw_lines is not None:
                    fh.write("\n".join(raw_lines) + "\n")
                else:
                    for e in events:
                        fh.write(json.dumps(e) + "\n")
            res = runner.invoke(eval_command, [query, "--input", path, *args])
        else:
            res = runner.invoke(eval_command, [query, "--input", "-", *args], input=stdin)
    out = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return res, out


def ev(i, cat="process", ts=None, **kw):
    d = {"id": i, "@timestamp": ts if ts is not None else 1_700_000_000 + i, "event": {"category": cat}}
    d.update(kw)
    return d


def ids(out):
    return [[e["id"] if e is not None else None for e in m["events"]] for m in out]


def test_single_event_output_is_original_objects(tmp_path):
    evs = [ev(1, process={"name": "bash"}), ev(2, process={"name": "sh"}), ev(3, "file")]
    res, out = run('process where process.name == "bash"', evs)
    assert res.exit_code == 0, res.output
    assert out == [{"events": [evs[0]]}]


def test_orders_by_timestamp_then_tiebreaker_then_input():
    evs = [ev(1, ts=5, seq=2), ev(2, ts=5, seq=1), ev(3, ts=1), ev(4, ts=5)]
    _, out = run("any where true", evs)
    assert ids(out) == [[3], [1], [2], [4]]
    _, out = run("any where true", evs, "--tiebreaker-field", "seq")
    assert ids(out) == [[3], [2], [1], [4]]


def test_timestamp_formats_and_fields():
    evs = [{"id": 1, "t": "2024-01-01T00:00:02Z", "kind": "a"}, {"id": 2, "t": "2024-01-01T00:00:01.5Z", "kind": "a"}]
    _, out = run("a where true", evs, "--timestamp-field", "t", "--event-category-field", "kind")
    assert ids(out) == [[2], [1]]
    evs = [{"id": 1, "@timestamp": 2000, "event": {"category": "a"}}, {"id": 2, "@timestamp": 1000, "event": {"category": "a"}}]
    _, out = run("a where true", evs, "--timestamp-format", "epoch_ms")
    assert ids(out) == [[2], [1]]


def test_stdin_input():
    evs = [ev(1), ev(2)]
    res, out = run("any where true", None, stdin="\n".join(json.dumps(e) for e in evs) + "\n")
    assert res.exit_code == 0 and ids(out) == [[1], [2]]


def test_bad_query_exits_2_with_location():
    res, out = run("process where process.name == 'x'", [ev(1)])
    assert res.exit_code == 2 and out == []
    assert "<query>:1:31: error: single-quoted" in res.stderr
    assert "^" in res.stderr


def test_strict_error_turns_type_mismatch_into_exit_2():
    res, _ = run('process where process.pid == "x"', [ev(1)], "--strict", "error")
    assert res.exit_code == 2 and "type mismatch" in res.stderr
    res, _ = run('process where process.pid == "x"', [ev(1)])
    assert res.exit_code == 0 and "warning: type mismatch" in res.stderr


def test_bad_event_lines_name_the_line():
    # exit 3: bad data in an input (docs/cli.md)
    res, _ = run("any where true", None, raw_lines=[json.dumps(ev(1)), "{not json"])
    assert res.exit_code == 3 and "ev.jsonl:2:2: invalid JSON: expected a string key" in res.stderr
    res, _ = run("any where true", None, raw_lines=[json.dumps({"id": 1, "event": {"category": "x"}})])
    assert res.exit_code == 3 and ":1: missing timestamp" in res.stderr
    res, _ = run("any where process.pid > 0", None, raw_lines=["", json.dumps(ev(1, process={"pid": "abc"}))])
    assert res.exit_code == 3 and ":2: field 'process.pid'" in res.stderr
    # only the fields the query reads are converted: a bad value elsewhere is not this query's error
    res, out = run("any where true", None, raw_lines=["", json.dumps(ev(1, process={"pid": "abc"}))])
    assert res.exit_code == 0 and ids(out) == [[1]]
    res, _ = run("any where true", None, raw_lines=["[1, 2]"])
    assert res.exit_code == 3 and "expected a JSON object" in res.stderr


def test_missing_input_file():
    runner = CliRunner()
    res = runner.invoke(eval_command, ["any where true", "--input", "/nonexistent/x.jsonl"])
    assert res.exit_code == 2 and "cannot read" in res.stderr  # a path that does not exist: usage error


def test_sequences_runs_and_missing_steps():
    evs = [ev(1, "a", k="x"), ev(2, "b", k="x"), ev(3, "b", k="x"), ev(4, "c", k="x")]
    _, out = run("sequence by k [a where true] [b where true] with runs=2 [c where true]", evs)
    assert ids(out) == [[1, 2, 3, 4]]
    _, out = run("sequence with maxspan=1h [a where true] ![z where true] [c where true]", evs)
    assert ids(out) == [[1, None, 4]]


def test_sequence_output_in_last_event_order():
    # ES: completed sequences ordered by their last match's ordinal (Sequence.compareTo)
    evs = [ev(1, "a", k="p"), ev(2, "a", k="q"), ev(3, "b", k="q"), ev(4, "b", k="p")]
    _, out = run("sequence by k [a where true] [b where true]", evs)
    assert ids(out) == [[2, 3], [1, 4]]


def test_events_without_category_match_only_any():
    evs = [{"id": 1, "@timestamp": 1}]
    _, out = run("any where true", evs)
    assert ids(out) == [[1]]
    _, out = run("process where true", evs)
    assert out == []


def test_module_entry_point(tmp_path):
    p = tmp_path / "ev.jsonl"
    p.write_text(json.dumps(ev(1)) + "\n")
    res = subprocess.run(
        [sys.executable, "-m", "kestrel_core.eql.cli", "any where true", "--input", str(p)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"events": [ev(1)]}


def test_issue14_reproducer_6_never_prints_zero_matches_silently():
    # The predicate used to raise at run time; the engine disabled the rule and
    # eval printed nothing, exit 0.  Whether the query is now refused when it is
    # compiled or stops while running, the user is told and the exit is non-zero.
    res, out = run('process where substring(process.name, 1e999) == ""', [ev(1, process={"name": "a"})])
    assert res.exit_code != 0 and out == [] and "error" in res.stderr, res.stderr


class _Raising:
    """A compiled predicate that fails on any batch, as a runtime bug would."""

    def __init__(self, pred):
        self._pred = pred

    def __getattr__(self, name):
        attr = getattr(self._pred, name)
        if not callable(attr):
            return attr

        def fail(*args, **kwargs):
            raise ZeroDivisionError("boom")

        return fail


def test_eval_reports_a_rule_disabled_while_running_and_exits_1(monkeypatch):
    from kestrel_core.eql import engine as engine_mod

    init = engine_mod.DetectionEngine.__init__

    def raising_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for unit in self.units:
            unit.pred = _Raising(unit.pred)

    monkeypatch.setattr(engine_mod.DetectionEngine, "__init__", raising_init)
    res, out = run('process where process.name == "a"', [ev(1, process={"name": "a"})])
    assert out == []
    assert res.exit_code == 1, res.stderr
    assert "rule eval disabled: its predicate raised ZeroDivisionError: boom" in res.stderr
    assert "the query stopped while running: the 0 match(es) above may be incomplete" in res.stderr
