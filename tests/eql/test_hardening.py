"""Issue 14, EQL part: every reproducer found by the fuzzing campaign, through the
CLI where it was reproduced there.  No input may give a traceback, a hang or a
silently wrong result: a located error (file:line:column) or a defined value."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kestrel_core.cli import main
from kestrel_core.eql import functions as fn

KESTREL = [str(Path(sys.executable).parent / "kestrel")]
BIG = "1" * 4301  # past CPython's 4,300-digit int/str conversion limit


def event(**process):
    return {"@timestamp": "2024-01-01T00:00:00Z", "event": {"category": "process"},
            "process": {"name": "abc", "pid": 1, **process}}


def write_events(path: Path, *events) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def kestrel(*args):
    return CliRunner().invoke(main, list(args))


def assert_located(res, line=1, col=None, words=""):
    """Exit 2 (usage/input error), one located diagnostic, no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    head = res.output.strip().splitlines()[0]
    assert head.startswith(f"<query>:{line}:" if col is None else f"<query>:{line}:{col}:"), head
    assert words in head, head


# ---------------------------------------------------------------- 1. huge integer literals

@pytest.mark.parametrize("query,col", [
    (f"process where process.pid == {BIG}", 30),
    (f"sequence [process where true] with runs={BIG} [process where true]", 41),
    (f"process where true | head {BIG}", 27),
    (f"sequence with maxspan={BIG}s [process where true] [process where true]", 23),
])
def test_huge_integer_literal_is_a_located_error(tmp_path, query, col):
    res = kestrel("eval", query, "--input", str(write_events(tmp_path / "e.jsonl", event())))
    assert_located(res, 1, col)
    assert "4301 characters" in res.output  # the number is named, not printed in full
    assert len(res.output) < 1000


def test_integer_past_unsigned_long_is_a_double_as_in_elasticsearch(tmp_path):
    # ES ql: an integer literal beyond the unsigned long range is read as a double
    res = kestrel("eval", "process where process.pid < 100000000000000000000000", "--input",
                  str(write_events(tmp_path / "e.jsonl", event())))
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 1


def test_pack_with_a_huge_literal_is_a_located_rule_error(tmp_path):
    rule = tmp_path / "big.toml"
    rule.write_text(f'id = "big"\nname = "big"\nseverity = "low"\n'
                    f'query = "process where process.pid == {BIG}"\n')
    res = kestrel("rules", "check", str(rule))
    assert res.exit_code == 2, res.output
    assert f"{rule}:4:" in res.output and "too large" in res.output
    assert "Traceback" not in res.output


# ---------------------------------------------------------------- 2. constant folding never raises

@pytest.mark.parametrize("query", [
    'process where substring("abc", 1e999) == ""',
    'process where substring("abc", subtract(1e999, 1e999)) == ""',
    'process where number("10", 1e999) == 1',
    "process where modulo(1e999, 2) == 1",
    f"process where add({'1' * 401}, 1.5) > 1",
    f"process where process.pid in (multiply({'7' * 2200}, 3), 2)",
    f'process where string(multiply({"7" * 2200}, 3)) == "x"',
])
def test_constant_folding_of_out_of_range_numbers_is_located(tmp_path, query):
    res = kestrel("eval", query, "--input", str(write_events(tmp_path / "e.jsonl", event())))
    assert_located(res, 1, words="too large")


@pytest.mark.parametrize("query", [
    # computed at compile time past a long / a double: null (ES: an overflow error), never a traceback
    'process where string(multiply(9223372036854775807, 9223372036854775807)) == "x"',
    "process where add(1e308, 1e308) > 1",
    "process where modulo(1e308, 1e-308) > 1e400 - 1e400",
])
def test_folding_overflow_is_null(tmp_path, query):
    res = kestrel("eval", query, "--input", str(write_events(tmp_path / "e.jsonl", event())))
    if "1e400" in query:
        assert_located(res, words="too large")
        return
    assert res.exit_code == 0, res.output
    assert res.stdout == ""


@pytest.mark.parametrize("call,args", [
    ("substring", ("abc", math.inf)),
    ("substring", ("abc", math.nan)),
    ("substring", ("abc", 0, -math.inf)),
    ("number", ("10", math.inf)),
    ("number", ("10", math.nan)),
    ("number", ("1" * 5000,)),
    ("number", ("1e999",)),
    ("modulo", (math.inf, 2)),
    ("add", (10**400, 1.5)),
    ("multiply", (2**63, 2**63)),
    ("divide", (1e308, 1e-308)),
    ("string", (10**5000,)),
    ("concat", ("a", 10**5000)),
    ("indexOf", ("abc", "b", math.inf)),
    ("indexOf", ("abc", "b", 10**400)),
])
def test_functions_give_null_not_an_exception(call, args):
    # the root cause of 2 and 6: the reference helpers raised on values they cannot take
    assert fn.call(call, False, args) is None


def test_predicate_over_an_infinite_event_value_is_null_not_a_disabled_rule():
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.rules import Rule
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    schema = Schema.ecs()
    rules = [Rule(id="sub", name="sub", query='process where substring(process.name, ?x.n) == ""'),
             Rule(id="ok", name="ok", query='process where process.name == "abc"')]
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    events = [norm.normalize({**event(), "x": {"n": n}}, "t") for n in (math.inf, math.nan, 10**400)]
    eng = DetectionEngine(schema, rules)
    alerts = eng.process_batch(events)
    assert eng.runtime_errors == [] and not eng.disabled
    # inf and nan are no position (null); a huge integer start is past the end: ""
    assert [a.rule_id for a in alerts] == ["ok", "ok", "sub", "ok"]


# ---------------------------------------------------------------- 3. regex repetition overflow

def test_regex_repetition_past_the_engine_limit_is_located(tmp_path):
    res = kestrel("eval", 'process where process.name regex "a{4294967296}"', "--input",
                  str(write_events(tmp_path / "e.jsonl", event())))
    assert_located(res, 1, 34, "repetition count")


# ---------------------------------------------------------------- 4. tail past a deque's maxlen

def test_tail_count_past_range_is_rejected_by_rules_check(tmp_path):
    rule = tmp_path / "tail.toml"
    rule.write_text('id = "t"\nname = "t"\nseverity = "low"\n'
                    'query = "process where true | tail 18446744073709551616"\n')
    res = kestrel("rules", "check", str(rule))
    assert res.exit_code == 2, res.output
    assert f"{rule}:4:" in res.output and "between 1 and 2147483647" in res.output


def test_tail_count_past_range_in_eval(tmp_path):
    res = kestrel("eval", "process where true | tail 18446744073709551616", "--input",
                  str(write_events(tmp_path / "e.jsonl", event())))
    assert_located(res, 1, 27, "between 1 and 2147483647")


# ---------------------------------------------------------------- 5, 5b. bounded matching

def _timed_eval(tmp_path, query, value, timeout=60):
    path = write_events(tmp_path / "e.jsonl", event(command_line=value))
    t0 = time.monotonic()
    proc = subprocess.run([*KESTREL, "eval", query, "--input", str(path)], capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - t0


def test_star_runs_do_not_backtrack(tmp_path):
    # before: > 10 s (4 stars 9.8 s); runs of '*' became '.*.*.*' and backtracked in C
    proc, took = _timed_eval(tmp_path, 'process where process.command_line : "*a*****b*"', "a" * 200)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and took < 5, took


def test_wildcard_cost_is_linear_in_the_value():
    pats = ("*a*a*a*a*a*a*a*b",)
    t0 = time.perf_counter()
    assert fn.pattern_match("wildcard", "a" * 20000, pats, False) is False
    assert fn.pattern_match("wildcard", "a" * 20000 + "b", pats, False) is True
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("pattern,value,expect", [
    ("*a*****b*", "xxaxxbxx", True), ("a*b", "ab", True), ("a*b", "abx", False), ("*a?c*", "zzabcz", True),
    ("*a?c", "abcabd", False), ("*ab*ab", "abab", True), ("*ab*ab", "aba", False), ("?", "", False),
    ("**", "", True), ("a**?", "a", False), ("*.exe", "x.EXE", False), ("c:\\*", "c:\\x", True),
])
def test_wildcard_semantics_kept(pattern, value, expect):
    assert fn.pattern_match("wildcard", value, (pattern,), False) is expect


def test_nested_quantifier_regex_finishes_and_is_reported(tmp_path):
    # before: never finished, and ignored SIGINT/SIGTERM (backtracking in C)
    proc, took = _timed_eval(tmp_path, 'process where process.command_line regex "(a+)+$"', "a" * 40 + "b")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and took < 5, took
    assert "nested unbounded quantifier" in proc.stderr


def test_rules_check_warns_on_a_nested_quantifier_and_rejects_it_when_strict(tmp_path):
    rule = tmp_path / "redos.toml"
    rule.write_text('id = "redos"\nname = "r"\nseverity = "low"\n'
                    'query = \'process where process.command_line regex "(a+)+$"\'\n')
    res = kestrel("rules", "check", str(rule))
    assert res.exit_code == 0, res.output
    assert f"{rule}:4:" in res.output and "warning: regular expression with a nested unbounded quantifier" in res.output
    assert "1 warning(s)" in res.output
    res = kestrel("rules", "check", "--strictness", "error", str(rule))
    assert res.exit_code == 2 and f"{rule}:4:" in res.output, res.output


@pytest.mark.parametrize("pattern,value,expect", [
    ("(a+)+$", "a" * 40 + "b", False), ("(a+)+$", "aaa", True), ("a.b", "a\nb", True), ("[0-7]*[1357][0-7]{0,2}", "0755", True),
    ("[0-7]*[1357][0-7]{0,2}", "0644", False), ("ab|cd", "cd", True), ("ab|cd", "abcd", False), ("x\\Z", "x", True),
    ("\u00e9+", "\u00e9\u00e9", True), (".", "\ud800", True),
])
def test_regex_semantics_on_re2(pattern, value, expect):
    assert fn.pattern_match("regex", value, (pattern,), False) is expect


def test_regex_the_engine_cannot_express_is_located(tmp_path):
    res = kestrel("eval", 'process where process.name regex "(a)\\\\1"', "--input",
                  str(write_events(tmp_path / "e.jsonl", event())))
    assert_located(res, 1, 34, "invalid regular expression")


# ---------------------------------------------------------------- 6. silent wrong result

def test_infinite_function_argument_is_an_error_not_zero_matches(tmp_path):
    # before: 0 matches, exit 0, nothing on stderr (the predicate raised, the rule was disabled)
    res = kestrel("eval", 'process where substring(process.name, 1e999) == ""', "--input",
                  str(write_events(tmp_path / "e.jsonl", event())))
    assert_located(res, 1, 39, "too large")


# ---------------------------------------------------------------- 14. did you mean

def test_unknown_field_suggests_the_nearest_known_one(tmp_path):
    res = kestrel("eval", 'process where process.nmae == "abc"', "--input",
                  str(write_events(tmp_path / "e.jsonl", event())))
    assert "unknown field 'process.nmae'" in res.output and "did you mean process.name?" in res.output


# ---------------------------------------------------------------- watchdog

SLOW = 'process where process.command_line regex ".*a.{40}c"'  # linear, but RE2's DFA gives up: ~0.5 us/byte


def _big_command_line(n: int = 1_000_000) -> str:
    import random

    rnd = random.Random(7)
    return "".join(rnd.choice("ab") for _ in range(n))


def test_watchdog_disables_a_rule_over_its_batch_budget_and_the_others_go_on(caplog):
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.rules import Rule
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    schema = Schema.ecs()
    rules = [Rule(id="t.slow", name="slow", query=SLOW),
             Rule(id="t.ok", name="ok", query='process where process.name == "marker"')]
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    big = norm.normalize(event(name="sh", command_line=_big_command_line()), "t")
    marker = norm.normalize(event(name="marker"), "t")
    eng = DetectionEngine(schema, rules, eval_budget_ms=100)
    caplog.set_level("ERROR", logger="kestrel")
    alerts = eng.process_batch([big, marker])
    assert [a.rule_id for a in alerts] == ["t.ok"]
    assert eng.disabled == {("t.slow", "budget_time"): 1}
    assert "rule t.slow disabled (budget_time): its predicate took" in caplog.text
    assert "over the 100 ms budget" in eng.runtime_errors[0]
    t0 = time.perf_counter()  # disabled: the next batch does not pay for it
    assert [a.rule_id for a in eng.process_batch([big, marker])] == ["t.ok"]
    assert time.perf_counter() - t0 < 0.1
    # without the watchdog the same rule runs to its (correct) answer
    eng = DetectionEngine(schema, rules, eval_budget_ms=None)
    eng.process_batch([big, marker])
    assert not eng.disabled


def test_run_counts_the_watchdog_in_the_published_metrics(tmp_path):
    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run

    (tmp_path / "rules.toml").write_text(f"[[rule]]\nid = 't.slow'\nname = 'slow'\nquery = '{SLOW}'\n"
                                         "[[rule]]\nid = 't.ok'\nname = 'ok'\nquery = 'process where process.name == \"marker\"'\n")
    write_events(tmp_path / "e.jsonl", event(name="sh", command_line=_big_command_line()), event(name="marker"))
    (tmp_path / "p.toml").write_text('[rules]\npaths = ["rules.toml"]\n[budgets]\nrule_batch_ms = 100\n'
                                     '[[sources]]\ntype = "jsonl"\npath = "e.jsonl"\n'
                                     '[[sinks]]\ntype = "jsonl"\npath = "alerts.jsonl"\n')
    prof, host = load_profile(tmp_path / "p.toml")
    job = Run.build(prof, host)
    job.open()
    assert job.execute() == "eof"
    metric = job.context.stats.extra["metrics"]["kestrel_rule_disabled_total"]
    assert metric["values"] == {("t.slow", "budget_time"): 1}
    assert [json.loads(x)["rule"]["id"] for x in (tmp_path / "alerts.jsonl").read_text().splitlines()] == ["t.ok"]


def test_replay_with_a_tail_past_range_is_a_rule_error_not_a_traceback(tmp_path):
    # before: `rules check` said ok and `kestrel replay` died in deque(maxlen=...) with a traceback
    demo = Path(__file__).resolve().parents[2] / "demo" / "capture.klog"
    rule = tmp_path / "tail.toml"
    rule.write_text('id = "t"\nname = "t"\nseverity = "low"\n'
                    'query = "process where true | tail 18446744073709551616"\n')
    res = kestrel("replay", "-i", str(demo), "-r", str(rule), "-o", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 2, res.output
    assert f"{rule}:4:" in res.output and "between 1 and 2147483647" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
