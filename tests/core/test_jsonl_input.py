"""Hostile JSONL input (issue 14, reproducers 7, 8, 9 and 12), through the
commands that read it: `kestrel eval`, `kestrel record --input` and a run's
`jsonl` source.  Each bad line is named at file:line:column in plain words,
skipped and counted; the lines around it are still used; nothing raises."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from kestrel_core.interfaces import NormalizeError
from kestrel_core.jsonlines import MAX_LINE_BYTES, LineError, parse_object
from kestrel_core.normalize import MAX_DEPTH, DepthError, EcsJsonNormalizer, flatten, nest
from kestrel_core.timestamps import parse_timestamp
from kestrel_core.testing import make_context


def kestrel(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], capture_output=True, text=True,
                          input=stdin, timeout=120)


def event(i, name="a", **extra):
    return json.dumps({"@timestamp": 1_700_000_000 + i, "event": {"category": "process"},
                       "process": {"name": name, "pid": i}, **extra})


DEEP = '{"a":' * 990 + "1" + "}" * 990  # orjson reads it (its limit is 1024)


def no_traceback(proc):
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace("error:", ""), proc.stderr


# --------------------------------------------------------------------------- 7: nesting


def test_eval_deeply_nested_line_is_a_located_error_not_a_recursion_error(tmp_path):
    src = tmp_path / "deep.jsonl"
    src.write_text(event(1) + "\n" + event(2)[:-1] + ', "deep": ' + DEEP + "}\n" + event(3) + "\n")
    proc = kestrel("eval", "process where true", "-i", str(src))
    no_traceback(proc)
    assert proc.returncode == 3
    assert f"{src}:2:" in proc.stderr and f"nested deeper than {MAX_DEPTH} levels" in proc.stderr
    assert [json.loads(line)["events"][0]["process"]["pid"] for line in proc.stdout.splitlines()] == [1, 3]


def test_record_deeply_nested_line_is_rejected_and_the_rest_recorded(tmp_path):
    src = tmp_path / "deep.jsonl"
    src.write_text(event(1) + "\n" + '{"event": {"category": "process"}, "deep": ' + DEEP + "}\n")
    out = tmp_path / "deep.klog"
    proc = kestrel("record", "-i", str(src), "-o", str(out))
    no_traceback(proc)
    assert proc.returncode == 3 and f"{src}:2:" in proc.stderr and "nested deeper" in proc.stderr
    assert "recorded 1 events" in proc.stderr and "1 lines rejected" in proc.stderr


def test_flatten_and_the_normalizer_bound_depth_without_recursion():
    doc: dict = {"v": 1}
    for _ in range(990):
        doc = {"a": doc}
    with pytest.raises(DepthError, match=f"nested deeper than {MAX_DEPTH} levels at 'a.a.a"):
        flatten(doc)
    shallow: dict = {"v": 1}
    for _ in range(MAX_DEPTH - 1):
        shallow = {"a": shallow}
    assert flatten(shallow) == {"a." * (MAX_DEPTH - 1) + "v": 1}  # the limit itself is accepted
    normalizer = EcsJsonNormalizer(EcsJsonNormalizer.Settings(default_category="process"), make_context())
    with pytest.raises(NormalizeError, match="nested deeper"):
        normalizer.normalize({"@timestamp": 1, "deep": doc}, "t")
    # nest, flatten's inverse, is iterative too
    node, depth = nest([(("a",) * 990, 1)]), 0
    while isinstance(node, dict):  # (== on 990-deep dicts would itself recurse too deep)
        assert list(node) == ["a"]
        node, depth = node["a"], depth + 1
    assert (node, depth) == (1, 990)


def test_flatten_keeps_document_order():
    assert list(flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3, "f": {}})) == ["a.b", "a.c.d", "e", "f"]


# --------------------------------------------------------------------------- 8: timestamps out of range


@pytest.mark.parametrize("value", ["1.5e400", 1e308, "nan", "Infinity", "9" * 5000])
def test_parse_timestamp_never_overflows(value):
    with pytest.raises(ValueError):
        parse_timestamp(value, "epoch_s")


def test_eval_timestamp_beyond_a_double_is_a_located_error(tmp_path):
    src = tmp_path / "ts.jsonl"
    src.write_text('{"@timestamp": "1.5e400", "event": {"category": "process"}}\n' + event(2) + "\n")
    proc = kestrel("eval", "process where true", "-i", str(src), "--timestamp-format", "epoch_s")
    no_traceback(proc)
    assert proc.returncode == 3
    assert f"{src}:1: field '@timestamp': timestamp '1.5e400' is not a finite number (epoch_s)" in proc.stderr
    assert len(proc.stdout.splitlines()) == 1


def test_normalizer_rejects_timestamps_outside_64_bit_nanoseconds():
    normalizer = EcsJsonNormalizer(EcsJsonNormalizer.Settings(default_category="process",
                                                              timestamp_format="epoch_s"), make_context())
    for ts in ("1.5e400", 1e300, "nan"):
        with pytest.raises(NormalizeError, match="timestamp"):
            normalizer.normalize({"@timestamp": ts}, "t")
    assert normalizer.normalize({"@timestamp": 9_000_000_000}, "t").ts_mono_ns == 9_000_000_000 * 10**9


RULE_WITH_INFINITY = textwrap.dedent('''\
    id = "t.inf"
    name = "inf"
    query = 'process where process.name == "a"'

    [[test]]
    name = "infinite time"
    expect_alerts = 0
    events = """
    {"@timestamp": Infinity, "event": {"category": "process"}, "process": {"name": "a"}}
    """
''')


def test_rules_test_golden_event_with_infinity_is_a_located_error(tmp_path):
    pack = tmp_path / "rules.toml"
    pack.write_text(RULE_WITH_INFINITY)
    proc = kestrel("rules", "test", str(pack))
    no_traceback(proc)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    col = len('{"@timestamp": ') + 1
    assert f"{pack}:9:{col}: error: [[test]] #1: invalid JSON in events: NaN and Infinity are not JSON numbers" \
        in proc.stderr


# --------------------------------------------------------------------------- 9: eval reads past bad lines


def test_eval_skips_and_counts_bad_lines_and_keeps_the_matches_around_them(tmp_path):
    src = tmp_path / "bad.jsonl"
    lines = [event(1), "{not json", event(3), '{"event": {"category": "process"}}', event(5), "[1]"]
    src.write_text("\n".join(lines) + "\n")
    # (a query without literals: eval's prefilter would skip line 4 unparsed, as it cannot match)
    proc = kestrel("eval", "process where process.pid > 0", "-i", str(src))
    no_traceback(proc)
    assert proc.returncode == 3  # bad data in an input, after the output (docs/cli.md)
    assert [json.loads(x)["events"][0]["process"]["pid"] for x in proc.stdout.splitlines()] == [1, 3, 5]
    assert f"{src}:2:2: invalid JSON" in proc.stderr
    assert f"{src}:4: missing timestamp field '@timestamp'" in proc.stderr
    assert f"{src}:6:1: expected a JSON object, got an array" in proc.stderr
    assert "3 input line(s) skipped, not events; 3 event(s) evaluated" in proc.stderr


def test_eval_names_only_the_first_bad_lines_and_counts_all(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(["x"] * 25 + [event(26)]) + "\n")
    proc = kestrel("eval", "process where true", "-i", str(src))
    assert proc.returncode == 3 and len(proc.stdout.splitlines()) == 1
    assert proc.stderr.count("invalid JSON") == 10
    assert "25 input line(s) skipped, not events (the first 10 above)" in proc.stderr


# --------------------------------------------------------------------------- 12: error text and line size


def test_truncated_line_says_so_at_its_column(tmp_path):
    src = tmp_path / "bad.jsonl"
    truncated = event(2, command_line="x" * 300)[:229]
    src.write_text(event(1) + "\n" + truncated + "\n")
    proc = kestrel("eval", "process where true", "-i", str(src))
    assert proc.returncode == 3
    assert f"{src}:2:230: truncated JSON value" in proc.stderr, proc.stderr


def test_binary_garbage_gets_a_clear_message(tmp_path):
    src = tmp_path / "bin.jsonl"
    prefix = b'{"@timestamp": 1, "event": {"category": "process"}, "process": {"name": "'
    src.write_bytes(prefix + b'\xff\xfe"}}\n'
                    b"\x00\x01\x02\x89PNG\xff\n" + event(3).encode() + b"\n")
    proc = kestrel("eval", "process where true", "-i", str(src))
    no_traceback(proc)
    assert proc.returncode == 3 and len(proc.stdout.splitlines()) == 1
    assert f"{src}:1:{len(prefix) + 1}: not UTF-8 text (byte 0xFF)" in proc.stderr
    assert f"{src}:2:4: binary data, not JSON text (byte 0x89 is not UTF-8)" in proc.stderr
    assert "surrogates" not in proc.stderr


@pytest.mark.parametrize("raw, message, column", [
    (b'{"a": "abc', "truncated JSON value", 11),
    (b'{"a": 1}}', "text after the JSON value (one object per line)", 9),
    (b'{"a": NaN}', "NaN and Infinity are not JSON numbers", 7),
    (b'{"a": 1e400}', "number out of range (beyond a 64-bit float)", 7),
    (b'{"a": "\x01"}', "control character 0x01 inside a string (write it as \\u0001)", 8),
    (b'{"\xc3\xa9": "abc', "truncated JSON value", 11),  # columns count characters, not bytes
    (b'{"a":' * 2000, f"nested deeper than {MAX_DEPTH} levels", 5 * MAX_DEPTH + 1),
    (b'"text"', "expected a JSON object, got a string", 1),
])
def test_parse_errors_in_plain_words(raw, message, column):
    with pytest.raises(LineError) as info:
        parse_object(raw)
    assert (info.value.message, info.value.column) == (message, column)


def test_crlf_lines_parse():
    assert parse_object(b'{"a": 1}\r') == {"a": 1}


def test_line_longer_than_the_limit_is_rejected_and_counted_by_record(tmp_path):
    src = tmp_path / "big.jsonl"
    big = event(2, command_line="x" * (10 * MAX_LINE_BYTES))  # the 10 MB line
    src.write_text(event(1) + "\n" + big + "\n" + event(3) + "\n")
    proc = kestrel("record", "-i", str(src), "-o", str(tmp_path / "big.klog"))
    no_traceback(proc)
    assert proc.returncode == 3
    assert f"{src}:2:1: line too long ({len(big)} bytes; the limit is {MAX_LINE_BYTES}); skipped" in proc.stderr
    assert "recorded 2 events" in proc.stderr


def test_eval_line_size_limit_is_an_option(tmp_path):
    src = tmp_path / "big.jsonl"
    src.write_text(event(1, command_line="x" * 5000) + "\n" + event(2) + "\n")
    proc = kestrel("eval", "process where true", "-i", str(src), "--max-line-bytes", "1000")
    assert proc.returncode == 3 and len(proc.stdout.splitlines()) == 1
    assert f"{src}:1:1: line too long" in proc.stderr
    assert kestrel("eval", "process where true", "-i", str(src)).returncode == 0


def test_run_jsonl_source_rejects_and_counts_long_and_binary_lines(tmp_path):
    src = tmp_path / "events.jsonl"
    src.write_bytes(event(1).encode() + b"\n" + event(2, command_line="x" * 3000).encode() + b"\n"
                    + b"\xff\xfe\x00garbage\n" + event(4).encode() + b"\n"
                    + event(5)[:-1].encode() + b', "deep": ' + b'{"a":' * 150 + b"1" + b"}" * 151 + b"\n")
    (tmp_path / "rules.toml").write_text(textwrap.dedent('''
        [[rule]]
        id = "t.a"
        name = "a"
        query = 'process where process.name == "a"'
    '''))
    profile = tmp_path / "p.toml"
    profile.write_text(textwrap.dedent('''
        [kestrel]
        mode = "replay"
        [rules]
        paths = ["rules.toml"]
        [[sources]]
        type = "jsonl"
        path = "events.jsonl"
        max_line_bytes = 2000
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
    '''))
    proc = kestrel("run", "-p", str(profile))
    no_traceback(proc)
    assert proc.returncode == 0, proc.stderr
    assert "events.jsonl:2:1: line too long" in proc.stderr
    assert "events.jsonl:3:1: binary data, not JSON text (byte 0xFF is not UTF-8)" in proc.stderr
    col = len(event(5)) + 9 + 5 * (MAX_DEPTH - 1) + 1  # the 101st open brace (the line is 1 deep where DEEP starts)
    assert f"events.jsonl:5:{col}: nested deeper than {MAX_DEPTH} levels" in proc.stderr
    assert "read 5, processed 2, dropped 3" in proc.stderr
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["events"][0]["process"]["pid"] for a in alerts] == [1, 4]


def test_braces_inside_strings_do_not_count_as_nesting():
    line = json.dumps({"a": "{[" * 300, "b": ['"\\{'] * 3}).encode()
    assert parse_object(line) == {"a": "{[" * 300, "b": ['"\\{'] * 3}
