"""`kestrel eval` reads its input once, in bounded memory (kestrel_core.eql.evalstream):
the literal prefilter, the lean field plan, the reorder window and the external sort
each leave the output byte for byte what the plain path gives."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from kestrel_core.eql.cli import eval_command
from kestrel_core.leanjson import MISSING, EventBuilder, FieldPlan, LineFilter, dotted_keys
from kestrel_core.normalize import flatten
from kestrel_core.timestamps import parse_timestamp
from kestrel_core.ordering import OutOfOrder, Sorter, in_order
from kestrel_core.packs import load_packs

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_jsonl(tmp_path_factory) -> Path:
    """The demo capture as JSONL: 2,656 events of 15 attack stories amid benign activity."""
    out = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    subprocess.run([sys.executable, "-m", "kestrel_core", "export", str(ROOT / "demo" / "capture.klog"), "-o", str(out)],
                   check=True, capture_output=True)
    return out


def _eval(query: str, path: Path, *args: str) -> tuple[int, bytes, str]:
    res = CliRunner().invoke(eval_command, [query, "--input", str(path), *args])
    return res.exit_code, res.stdout_bytes, res.stderr


def _linux_queries() -> list[tuple[str, str]]:
    packs = load_packs([ROOT / "rules" / "linux"])
    return [(r.id, r.query) for r in packs.rules]


def test_every_linux_rule_gives_the_same_matches_with_and_without_the_prefilter(demo_jsonl):
    """The prefilter skips only lines that cannot match: every rule of the Linux pack
    (single events and sequences, with until and missing steps) over the demo capture."""
    fired = 0
    for rule_id, query in _linux_queries():
        code, fast, err = _eval(query, demo_jsonl, "--stats")
        assert code == 0, (rule_id, err)
        code, plain, err2 = _eval(query, demo_jsonl, "--no-prefilter")
        assert code == 0, (rule_id, err2)
        assert fast == plain, rule_id
        fired += bool(fast)
    assert fired >= 50  # the capture's stories fire nearly every rule: the comparison is not of empty outputs


def test_a_shuffled_input_spilled_to_disk_gives_the_in_order_output(demo_jsonl, tmp_path):
    lines = demo_jsonl.read_bytes().splitlines()
    random.Random(5).shuffle(lines)
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_bytes(b"\n".join(lines) + b"\n")
    queries = [q for _id, q in _linux_queries() if q.lstrip().startswith("sequence")][:4] + ["any where true"]
    for query in queries:
        _, expected, _ = _eval(query, demo_jsonl)
        # every line a candidate: more events than the reorder window holds
        code, got, err = _eval(query, shuffled, "--memory-budget", "1", "--stats", "--no-prefilter")
        assert code == 0 and got == expected, query
        assert "ordering: sorted (external sort" in err
        code, got, _ = _eval(query, shuffled, "--memory-budget", "1")
        assert code == 0 and got == expected, query
    # the same from a pipe (no second read: the window pass kept its lines)
    for query in queries[-2:]:
        _, expected, _ = _eval(query, demo_jsonl)
        res = CliRunner().invoke(eval_command, [query, "--input", "-", "--memory-budget", "1", "--no-prefilter"],
                                 input=shuffled.read_bytes())
        assert res.exit_code == 0 and res.stdout_bytes == expected, query


def test_in_order_input_takes_the_window_path(demo_jsonl):
    code, out, err = _eval('process where process.name == "wget"', demo_jsonl, "--stats")
    assert code == 0 and out
    assert "ordering: in input order (reorder window)" in err
    assert "line(s) skipped unparsed by the literal prefilter" in err
    skipped = int(err.split(" line(s) skipped")[0].rsplit(", ", 1)[1])
    assert skipped > 2000  # most of the capture holds no "wget"


def test_bad_lines_are_reported_even_where_the_prefilter_would_skip(tmp_path):
    src = tmp_path / "bad.jsonl"
    good = orjson.dumps({"@timestamp": 1_700_000_000, "event": {"category": "process"}, "process": {"name": "sh"}})
    src.write_bytes(good + b"\n" + b'{"@timestamp": 1700000001, "event": {"categ\n' + b"\x00\x01\xff\n" + good + b"\n")
    code, out, err = _eval('process where process.name == "zzz"', src)
    assert code == 3 and out == b""
    assert f"{src}:2:" in err and f"{src}:3:" in err and "2 input line(s) skipped" in err


# ----------------------------------------------------------------------------- the parts


def test_line_filter_literals_and_what_turns_it_off():
    from kestrel_core.eql.ir import compile_query
    from kestrel_core.plugins import rules_schema

    schema = rules_schema()

    def filt(query: str):
        q = compile_query(query, schema)
        return LineFilter.for_predicates([(q, s.pred) for s in q.steps])

    f = filt('process where process.name : "CURL" and process.pid > 1')
    assert f is not None and f.ci == (b'"curl"',)  # an exact string is written between quotes
    assert f(b'{"process": {"name": "Curl"}}') and not f(b'{"process": {"name": "wget"}}')
    assert f(b'{"process": {"name": "c\\u0075rl"}}')  # an escape: parsed, never judged on bytes
    assert f(b'{"process": {"name": "wget"')  # not an object's shape: parsed so damage is reported
    assert filt("process where process.pid > 1") is None  # no literal a match must hold
    assert filt('process where process.name == "1.5"') is None  # a JSON number may be written 15e-1
    assert filt('process where user.id == "0"') is not None  # an integer's text is its JSON text


def test_field_plan_reads_leaves_as_flatten_names_them():
    rng = random.Random(3)
    keys = ["a", "b", "c", "a.b", "b.c", "x"]

    def obj(depth: int) -> dict:
        out: dict = {}
        for _ in range(rng.randint(0, 4)):
            k = rng.choice(keys)
            out[k] = obj(depth + 1) if depth < 3 and rng.random() < 0.5 else rng.choice([1, "s", None, [1], {}])
        return out

    paths = ["a", "b", "a.b", "a.b.c", "b.c", "a.x", "a.b.c.x", "c.a.b", "x"]
    plan = FieldPlan(paths)
    for _ in range(2000):
        rec = obj(0)
        flat = flatten(rec)
        if len({k for k in flat}) != len(flat):
            continue
        # flatten keeps the last of two spellings of one path; the plan reads the nested one first
        spelled: dict = {}
        for k in _leaf_keys(rec):
            spelled[k] = spelled.get(k, 0) + 1
        values = plan.extract(rec)
        for p, v in zip(plan.paths, values):
            if spelled.get(p, 0) > 1:
                continue
            assert (flat[p] if p in flat else MISSING) == v or (p not in flat and v is MISSING), (rec, p)
            assert plan.get(rec, p) == v or (v is MISSING and plan.get(rec, p) is MISSING)


def test_nested_extract_equals_the_full_one_for_lines_without_dotted_keys():
    """extract_nested (no search of splits) is used for a line dotted_keys()
    clears: on such objects it must read exactly what extract reads, and a
    line with a dotted key anywhere (or an escape) must not be cleared."""
    rng = random.Random(5)
    keys = ["a", "b", "c", "a.b", "b.c", "x", "k.", ".k"]

    def obj(depth: int) -> dict:
        out: dict = {}
        for _ in range(rng.randint(0, 4)):
            k = rng.choice(keys)
            out[k] = obj(depth + 1) if depth < 3 and rng.random() < 0.5 else rng.choice(
                [1, 1.5, "s", "x.y", "z.", None, [1, "a.b"], {}, True])
        return out

    plan = FieldPlan(["a", "b", "a.b", "a.b.c", "b.c", "a.x", "c.a.b", "x"])
    cleared = 0
    for _ in range(3000):
        rec = obj(0)
        line = orjson.dumps(rec) if rng.random() < 0.5 else json.dumps(rec, indent=rng.choice([None, 1])).encode()
        has_dot = any("." in k for k in _all_keys(rec))
        assert dotted_keys(line) == has_dot or (b"\\" in line and dotted_keys(line)), line
        if not dotted_keys(line):
            cleared += 1
            assert plan.extract_nested(rec) == plan.extract(rec), rec
    assert cleared > 500


def _all_keys(rec: dict) -> list[str]:
    out = []
    for k, v in rec.items():
        out.append(k)
        if isinstance(v, dict):
            out.extend(_all_keys(v))
    return out


def _leaf_keys(rec: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in rec.items():
        if isinstance(v, dict) and v:
            out.extend(_leaf_keys(v, prefix + k + "."))
        else:
            out.append(prefix + k)
    return out


def test_the_fast_iso_timestamps_equal_parse_timestamp():
    from kestrel_core.plugins import rules_schema

    build = EventBuilder(rules_schema(), ["@timestamp"], parse=orjson.loads)
    rng = random.Random(1)
    for _ in range(3000):
        text = (f"{rng.randint(1970, 2200):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}")
        digits = rng.randint(0, 9)
        if digits:
            text += "." + "".join(rng.choice("0123456789") for _ in range(digits))
        text += "Z"
        assert build._timestamp(text) == parse_timestamp(text), text


def test_sorter_spills_runs_and_merges_them_in_order():
    rng = random.Random(2)
    items = [((rng.randint(0, 50), i), rng.randbytes(rng.randint(0, 64))) for i in range(5000)]
    s = Sorter(budget=20_000)
    for k, p in items:
        s.add(k, p)
    assert s.runs > 5
    assert list(s.sorted()) == sorted(items)
    small = Sorter()
    for k, p in items[:10]:
        small.add(k, p)
    assert small.runs == 0 and list(small.sorted()) == sorted(items[:10])


def test_reorder_window_orders_near_sorted_input_and_refuses_the_rest():
    near = [((i + (3 if i % 7 == 0 else 0),), i) for i in range(1000)]
    assert [k for k, _ in in_order(near, 8)] == sorted(k for k, _ in near)
    far = [((i,), i) for i in range(100)] + [((5,), "late")]
    with pytest.raises(OutOfOrder):
        list(in_order(far, 8))


def test_a_terminal_sees_a_progress_bar_and_stdout_is_unchanged(demo_jsonl):
    """On a TTY stderr, eval shows bytes read, rate, time left and matches so far; the
    matches on stdout are what a pipe gets."""
    from kestrel_core.testing import run_on_a_terminal

    query = 'process where process.name == "bash"'
    plain = subprocess.run([sys.executable, "-m", "kestrel_core", "eval", query, "-i", str(demo_jsonl)],
                           capture_output=True, check=True)
    assert plain.stderr == b""  # no terminal: no bar
    code, out, tty = run_on_a_terminal("eval", query, "-i", str(demo_jsonl), timeout=60)
    assert code == 0
    assert out == plain.stdout and out
    assert f"reading {demo_jsonl}".encode() in tty and b"MB" in tty


def test_sorter_merges_runs_past_its_fan_in(monkeypatch):
    import kestrel_core.ordering as ordering

    monkeypatch.setattr(ordering, "FAN_IN", 4)
    rng = random.Random(9)
    items = [((rng.randint(0, 1000), i), b"x" * rng.randint(0, 40)) for i in range(3000)]
    s = Sorter(budget=5_000)
    for k, p in items:
        s.add(k, p)
        assert len(s._runs) < 4 * 4  # open files stay under the fan-in per level
    assert s.runs > 20 and s.merges > 5
    assert list(s.sorted()) == sorted(items)


def test_a_date_constant_beyond_event_times_is_a_located_error(tmp_path):
    src = tmp_path / "one.jsonl"
    src.write_bytes(orjson.dumps({"@timestamp": 1_700_000_000, "event": {"category": "process"}}) + b"\n")
    code, out, err = _eval("process where @timestamp > 1.7e308", src)
    assert code == 2 and out == b"" and "<query>:1:28: error: invalid date" in err and "Traceback" not in err
