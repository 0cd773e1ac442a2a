"""Fuzz entry points: one per parser or reader that meets outside input.

Each :class:`Target` pairs a hypothesis strategy (what the fuzzer
generates) with ``run(input)``, which feeds one input to Kestrel the way a
user's command would and raises :class:`Finding` for anything other than an
accepted input or a *located* error: an unexpected exception, a rule that
the engine disabled because a value made its predicate raise, an error
without a position.  ``tests/fuzz/test_fuzz.py`` runs every target with a
short budget (``make test``); ``tests/fuzz/campaign.py`` runs them for as
long as asked (``make fuzz``).  What each one generates: docs/reliability.md.
"""

from __future__ import annotations

import functools
import json
import math
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import attrs
from hypothesis import strategies as st

sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))  # the default, as under `kestrel`


class Finding(Exception):
    """What the fuzzer reports: an input Kestrel mishandled."""


@attrs.define
class Target:
    name: str
    strategy: st.SearchStrategy
    run: Callable[[Any], None]
    what: str


def _tmpdir() -> Path:
    d = Path(tempfile.gettempdir()) / f"kestrel-fuzz-{os.getpid()}"
    d.mkdir(exist_ok=True)
    return d


# --------------------------------------------------------------------------- values of every type

FIELDS = ["process.name", "process.pid", "process.args", "process.command_line", "process.executable",
          "process.parent.name", "process.parent.pid", "file.path", "file.name", "file.extension", "file.size",
          "destination.ip", "destination.port", "source.ip", "user.name", "user.id", "host.name", "event.action",
          "event.type", "dns.question.name", "process.entity_id", "network.transport", "process.args_count",
          "@timestamp", "event.category"]
CATEGORIES = ["process", "file", "network", "dns", "authentication", "any", "registry", "driver"]

printable_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**128, 10**400]),
)
long_digits = st.integers(min_value=4295, max_value=5200)
"""Digit counts around Python's 4,300-digit limit for int <-> str conversion."""
huge_ints = st.one_of(printable_ints, long_digits.map(lambda n: (10**n - 1) // 9))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.inf, -math.inf, math.nan,
                                                                                   1e308, -0.0, 5e-324]))
# Every code point, lone surrogates included (hypothesis leaves out category Cs by default).
any_text = st.text(st.one_of(st.characters(codec=None, exclude_categories=()),
                             st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, codec=None,
                                           exclude_categories=())), max_size=40)
texty = st.one_of(any_text, st.sampled_from(["", "*", "nc", "/bin/sh", "a" * 200, "127.0.0.1", "::1", "10.0.0.0/8",
                                             "\\", "\x00", "\ud800", "💥", "a*b?c"]))


def deep(depth: int, leaf: Any = 1, kind: str = "list") -> Any:
    """``depth`` levels of nesting built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


scalars = st.one_of(st.none(), st.booleans(), huge_ints, floats, texty)
values = st.one_of(
    scalars,
    st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(texty, c, max_size=4)),
                 max_leaves=12),
    st.builds(deep, st.integers(1, 1200), scalars, st.sampled_from(["list", "dict"])),
)


# --------------------------------------------------------------------------- EQL queries

def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


field_names = st.one_of(st.sampled_from(FIELDS), st.sampled_from(["process.nmae", "x", "process", "?process.name",
                                                                  "?foo.bar", "`process.name`", "process.args[0]"]))
num_lits = st.one_of(printable_ints.map(str), long_digits.map(lambda n: "1" * n), floats.map(lambda f: repr(f) if math.isfinite(f) else "1e999"),
                     st.sampled_from(["1e999", "-1e999", "0x10", "1.5e400", "00012", "1_000"]))
str_lits = st.one_of(texty.map(_quote), texty.map(lambda s: "?\"" + s.replace('"', "") + '"'),
                     st.sampled_from(['"*a*****b*"', '"(a+)+$"', '"a{4294967296}"', '"[z-a]"', '"\\u{d800}"',
                                      '"\\u{110000}"', '"\\q"', '"""raw"""', '"unterminated']))
literals = st.one_of(num_lits, str_lits, st.sampled_from(["true", "false", "null"]))
FUNCS = ["add", "subtract", "multiply", "divide", "modulo", "length", "concat", "string", "number", "substring",
         "cidrMatch", "startsWith", "endsWith", "stringContains", "between", "indexOf", "startsWith~", "nosuch"]


def _expr(children: st.SearchStrategy) -> st.SearchStrategy:
    atom = st.one_of(field_names, literals, children)
    return st.one_of(
        st.tuples(atom, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", ":", "like", "like~", "regex", "regex~",
                                         "+", "-", "*", "/", "%"]), atom).map(" ".join),
        st.tuples(atom, st.sampled_from(["in", "in~", "not in", ":", "like"]),
                  st.lists(atom, min_size=1, max_size=4)).map(lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"),
        st.tuples(children, st.sampled_from(["and", "or"]), children).map(" ".join),
        children.map(lambda c: f"not {c}"),
        children.map(lambda c: f"({c})"),
        st.tuples(st.sampled_from(FUNCS), st.lists(atom, max_size=4)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
    )


expressions = st.recursive(st.one_of(field_names, literals), _expr, max_leaves=10)
event_queries = st.tuples(st.sampled_from(CATEGORIES + ['"process"', "`x`"]), expressions).map(
    lambda t: f"{t[0]} where {t[1]}")
counts = st.one_of(st.integers(0, 20).map(str), printable_ints.map(str), long_digits.map(lambda n: "1" * n), st.sampled_from(["18446744073709551616", "-1"]))
steps = st.tuples(st.booleans(), event_queries, st.one_of(st.just(""), field_names.map(lambda f: f" by {f}")),
                  st.one_of(st.just(""), counts.map(lambda n: f" with runs={n}"))).map(
    lambda t: f"{'!' if t[0] else ''}[{t[1]}]{t[2]}{t[3]}")
sequences = st.tuples(
    st.one_of(st.just(""), field_names.map(lambda f: f" by {f}")),
    st.one_of(st.just(""), st.tuples(counts, st.sampled_from(["", "s", "ms", "m", "h", "d", "x"])).map(
        lambda t: f" with maxspan={t[0]}{t[1]}")),
    st.lists(steps, min_size=1, max_size=4),
    st.one_of(st.just(""), event_queries.map(lambda q: f" until [{q}]")),
).map(lambda t: f"sequence{t[0]}{t[1]} " + " ".join(t[2]) + t[3])
pipes = st.lists(st.tuples(st.sampled_from(["head", "tail", "filter", "unique", "count", "sort"]), counts).map(
    lambda t: f" | {t[0]} {t[1]}"), max_size=2).map("".join)
valid_shaped = st.tuples(st.one_of(event_queries, sequences), pipes).map("".join)


@st.composite
def mutated(draw: Any, base: st.SearchStrategy) -> str:
    """A generated query, sometimes with characters deleted, inserted or repeated."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["delete", "insert", "repeat", "cut"]))
        if op == "delete":
            text = text[:i] + text[i + 1:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(list("[]()\"'`?~!|,=*\\\n\t ") + ["where", "sequence", "\x00"])) + text[i:]
        elif op == "repeat":
            text = text[:i] + text[i:i + 8] * draw(st.integers(2, 50)) + text[i:]
        else:
            text = text[:i]
    return text


queries = st.one_of(mutated(valid_shaped), valid_shaped, any_text,
                    st.integers(1, 1500).map(lambda n: "process where " + "not " * n + "true"),
                    st.integers(1, 1500).map(lambda n: "process where " + "(" * n + "true" + ")" * n),
                    st.integers(1, 600).map(lambda n: "process where " + "add(" * n + "1" + ", 1)" * n))


@functools.lru_cache(maxsize=1)
def _schema() -> Any:
    from kestrel_core.schema import Schema

    return Schema.ecs()


def _located_eql(exc: Exception, text: str) -> None:
    line, col = getattr(exc, "line", None), getattr(exc, "column", None)
    nlines = text.count("\n") + 1
    if not isinstance(line, int) or not isinstance(col, int) or not (1 <= line <= nlines + 1) or col < 1:
        raise Finding(f"EqlError without a valid position (line {line!r}, column {col!r}, {nlines} lines): {exc}")


def run_eql_compile(text: str) -> None:
    """Compile at both strictness levels, then load it as a rule the way a run
    or ``kestrel rules check`` does (regexes, pipes and runs are checked there)."""
    from kestrel_core.eql import EqlError, compile_query
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.rules import Rule

    for strict in ("warn", "error"):
        try:
            compile_query(text, _schema(), strict=strict, source_name="<fuzz>")
        except EqlError as exc:
            _located_eql(exc, text)
            return
        except RecursionError:
            raise Finding("RecursionError escaped the compiler") from None
    engine = DetectionEngine(_schema(), [Rule(id="fuzz.q", name="fuzz", query=text)])
    for err in engine.rule_errors:
        if not getattr(err, "line", None):
            raise Finding(f"rule error without a line: {err}")


# --------------------------------------------------------------------------- the evaluator

ADVERSARIAL = ["a" * 200, "a" * 40 + "b", "a" * 5000, "\ud800" * 3, "💥" * 50]
"""Values that make patterns backtrack or that are hard to encode."""


def _event_doc(draw: Any) -> dict:
    doc: dict[str, Any] = {"@timestamp": draw(st.one_of(st.integers(0, 2**62), st.just(1_700_000_000_000),
                                                        values)),
                           "event.category": draw(st.one_of(st.sampled_from(CATEGORIES), values))}
    for f in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        doc[f] = draw(values)
    if draw(st.integers(0, 3)) == 0:  # every string field one adversarial value
        bad = draw(st.sampled_from(ADVERSARIAL))
        doc.update({f: bad for f in ("process.name", "process.command_line", "file.path", "process.executable")})
    return doc


@st.composite
def eval_cases(draw: Any) -> tuple[list[str], list[dict]]:
    rules = draw(st.lists(st.one_of(valid_shaped, st.sampled_from([
        'process where process.name : "*a*****b*"', 'process where process.command_line regex "(a+)+$"',
        'process where substring(process.name, 1e999) == ""', 'any where process.pid == 1',
        'any where add(process.pid, 1.5) > 2', 'any where string(process.args) == "x"',
        'sequence by process.pid [process where true] [any where true]',
        'any where cidrMatch(destination.ip, "10.0.0.0/8")', 'any where length(process.args) > 1',
        'any where process.name in~ ("A", "b")', 'any where file.path like~ "/TMP/*"'])), min_size=1, max_size=3))
    docs = [_event_doc(draw) for _ in range(draw(st.integers(1, 6)))]
    return rules, docs


def run_eval(case: tuple[list[str], list[dict]]) -> None:
    from kestrel_core.eql import EqlError, compile_query
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.interfaces import NormalizeError
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.rules import Rule
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    texts, docs = case
    schema = Schema.ecs()
    rules = []
    for i, text in enumerate(texts):
        try:
            compile_query(text, schema, source_name="<fuzz>")
        except EqlError:
            continue  # the compile target covers errors; here only rules that load
        rules.append(Rule(id=f"fuzz.{i}", name=f"fuzz {i}", query=text))
    engine = DetectionEngine(schema, rules)
    bad = [e for e in engine.rule_errors if not getattr(e, "line", None)]
    if bad:
        raise Finding(f"rule error without a line: {bad[0]}")
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(missing_timestamp="now"), RunContext(schema=schema))
    events = []
    for doc in docs:
        try:
            events.append(norm.normalize(doc, "fuzz"))
        except NormalizeError:
            continue
    for i, ev in enumerate(sorted(events, key=lambda e: e.ts_mono_ns)):
        ev.event_id = i + 1
    events.sort(key=lambda e: (e.ts_mono_ns, e.event_id))
    alerts = engine.process_batch(events) + engine.flush()
    for alert in alerts:
        alert.to_dict(schema)  # what every sink does with an alert
    if engine.disabled:
        raise Finding("a value disabled a rule: " + "; ".join(engine.runtime_errors))


# --------------------------------------------------------------------------- JSONL input

def _dumps(v: Any) -> bytes:
    """JSON text of ``v``, whatever it holds (NaN, 5,000-digit numbers, lone surrogates as UTF-8 bytes)."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # only while writing the input; Kestrel runs under the default limit
    try:
        return json.dumps(v, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except RecursionError:
        return b"[" * 2000
    finally:
        sys.set_int_max_str_digits(limit)


jsonl_lines = st.one_of(
    st.builds(lambda d: _dumps(d), st.builds(lambda a, b: {**a, **b}, st.dictionaries(st.sampled_from(FIELDS), values,
                                                                                      max_size=5),
                                             st.fixed_dictionaries({"event": st.fixed_dictionaries(
                                                 {"category": st.sampled_from(CATEGORIES)})}))),
    values.map(_dumps),
    st.binary(max_size=200),
    st.builds(lambda b, n: b[:n], values.map(_dumps), st.integers(0, 100)),  # truncated
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b'{"@timestamp": "1.5e400", "event": {"category": "process"}}',
                     b'{"@timestamp": 1e400, "event": {"category": "process"}}',
                     b'{"@timestamp": Infinity, "event": {"category": "process"}}',
                     b'{"@timestamp": -1, "event": {"category": "process"}}',
                     b'{"event": {"category": ["process", 5]}, "process.pid": 1e999}',
                     b'\xff\xfe{"a": 1}', b'{"a": "\\ud800"}', b'{"process": {"name": "x"}, "process.name": "y"}',
                     b'{"a": 1} trailing', b'{"a":1}\r', b"\x00" * 20, b" " * 10]),
)
TIMESTAMP_FORMATS = ["auto", "iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns"]


def run_jsonl(case: tuple[list[bytes], str, str]) -> None:
    from kestrel_core.builtins.jsonl import JsonlSource
    from kestrel_core.interfaces import NormalizeError
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.testing import collect_records, make_context

    lines, ts_format, default_category = case
    path = _tmpdir() / "input.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    ctx = make_context()
    src = JsonlSource(JsonlSource.Settings(path=str(path)), ctx)
    src.name = "jsonl"
    records = collect_records(src)
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(timestamp_format=ts_format, default_category=default_category),
                             ctx)
    for record in records:
        try:
            ev = norm.normalize(record, "jsonl")
        except NormalizeError:
            continue
        ev.to_ecs(ctx.schema)
    accounted = len(records) + sum(ctx.stats.events_dropped.values())
    nonblank = sum(1 for line in b"\n".join(lines).split(b"\n") if line.strip())
    if accounted < nonblank:
        raise Finding(f"{nonblank} non-blank lines, {len(records)} records and "
                      f"{sum(ctx.stats.events_dropped.values())} counted drops: lines lost without a counter")


jsonl_cases = st.tuples(st.lists(jsonl_lines, min_size=1, max_size=6), st.sampled_from(TIMESTAMP_FORMATS),
                        st.sampled_from(["", "process"]))


# --------------------------------------------------------------------------- .klog reader

SYNC = b"\xf7KF\xa5"
FRAME_HEAD = struct.Struct("<4sBBHIII")


@functools.lru_cache(maxsize=4)
def _base_log(codec: str) -> bytes:
    """A small real log: header, defs, 8 event frames of 4 events, a gap, end."""
    from kestrel_core.event import Gap
    from kestrel_core.klog.format import KlogWriter
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.testing import make_context

    ctx = make_context()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), ctx)
    events = [norm.normalize({"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process"},
                              "process": {"name": f"p{i}", "pid": i, "args": ["a", str(i)]}}, "jsonl")
              for i in range(32)]
    for i, ev in enumerate(events):
        ev.event_id = i + 1
    path = _tmpdir() / f"base-{codec}.klog"
    with KlogWriter(path, ctx.schema, sources=["jsonl"], compression=codec, events_per_frame=4) as w:
        w.write_events(events[:16])
        w.write_gap(Gap("jsonl", 3, events[15].ts_mono_ns, events[16].ts_mono_ns, "overflow"))
        w.write_events(events[16:])
    return path.read_bytes()


def frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each well-formed frame after the 12-byte file header."""
    out, pos = [], 12
    while pos + FRAME_HEAD.size <= len(data) and data[pos:pos + 4] == SYNC:
        length = FRAME_HEAD.unpack_from(data, pos)[5]
        end = pos + FRAME_HEAD.size + length
        out.append((pos, end))
        pos = end
    return out


def _reframe(ftype: int, flags: int, count: int, seq: int, body: bytes) -> bytes:
    head = struct.pack("<BBHII", ftype, flags, count, seq, len(body))
    return SYNC + head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body


shape_payloads = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.just([]), st.just({}), st.just([0, 1]),
    st.lists(st.lists(scalars, max_size=9), max_size=4),
    st.just({"fields": [[1, 2]], "sources": "x"}), st.just({"fields": [[10**6, "a.b", 99]], "sources": [[0, 5]]}),
    st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(texty, c, max_size=3)),
                 max_leaves=8))


@st.composite
def damaged_logs(draw: Any) -> dict[str, Any]:
    """How to damage the base log, as a small description (a failing example
    reads as what was done; :func:`damage` builds the bytes)."""
    codec = draw(st.sampled_from(["none", "zstd"]))
    n = len(frames(_base_log(codec)))
    size = len(_base_log(codec))
    op = draw(st.sampled_from(["truncate", "flip", "delete", "duplicate", "swap", "shape", "garbage", "seq", "type"]))
    case: dict[str, Any] = {"op": op, "codec": codec}
    if op == "truncate":
        case["at"] = draw(st.integers(0, size))
    elif op == "flip":
        case["bits"] = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=8))
    elif op == "garbage":
        case["at"], case["bytes"] = draw(st.integers(0, size)), draw(st.binary(min_size=1, max_size=64))
    elif op in ("delete", "duplicate", "seq", "shape", "type"):
        case["frame"] = draw(st.integers(0, n - 1))
    elif op == "swap":
        case["frame"] = draw(st.integers(0, n - 2))
    if op == "seq":
        case["seq"] = draw(st.one_of(st.integers(0, 12), st.integers(0, 2**32 - 1)))
    if op == "shape":
        case["payload"] = draw(shape_payloads)
    if op == "type":
        case["type"] = draw(st.integers(0, 255))
    return case


def damage(case: dict[str, Any]) -> bytes:
    """The bytes of the base log damaged as ``case`` says."""
    import msgpack

    data = bytearray(_base_log(case["codec"]))
    fr = frames(bytes(data))
    op = case["op"]
    if op == "truncate":
        return bytes(data[:case["at"]])
    if op == "flip":
        for i, bit in case["bits"]:
            data[i] ^= 1 << bit
        return bytes(data)
    if op == "garbage":
        return bytes(data[:case["at"]]) + case["bytes"] + bytes(data[case["at"]:])
    a, b = fr[case["frame"]]
    if op in ("delete", "duplicate"):
        piece = bytes(data[a:b])
        return bytes(data[:a]) + (b"" if op == "delete" else piece + piece) + bytes(data[b:])
    if op == "swap":
        c, d = fr[case["frame"] + 1]
        return bytes(data[:a]) + bytes(data[c:d]) + bytes(data[a:b]) + bytes(data[d:])
    # CRC-valid damage: the frame's sequence number, payload or type replaced, its CRC recomputed
    _sync, ftype, flags, count, seq, _length, _crc = FRAME_HEAD.unpack_from(bytes(data), a)
    body = bytes(data[a + FRAME_HEAD.size:b])
    if op == "seq":
        seq = case["seq"]
    elif op == "type":
        ftype = case["type"]
    else:
        try:
            body = msgpack.packb(case["payload"], unicode_errors="surrogatepass")
        except (OverflowError, ValueError, TypeError):
            body = msgpack.packb(None)
        flags = 0
    return bytes(data[:a]) + _reframe(ftype, flags, count, seq, body) + bytes(data[b:])


def _too_deep(v: Any, limit: int = 400) -> bool:
    depth = 0
    while isinstance(v, (list, dict)) and v:
        v = v[0] if isinstance(v, list) else next(iter(v.values()))
        depth += 1
        if depth > limit:
            return True
    return False


def run_klog(case: dict[str, Any]) -> None:
    from kestrel_core.klog.format import KlogError, KlogReader, export_lines

    op, data = case["op"], damage(case)
    # Damage that changed the bytes must be reported (a warning), never read as if the log were whole
    # (a frame type v1 does not know may be skipped for forward compatibility: only no exception there).
    must_warn = data != _base_log(case["codec"]) and op != "type"
    path = _tmpdir() / "damaged.klog"
    path.write_bytes(data)
    for documents in (False, True):
        try:
            reader = KlogReader(path, documents=documents)
        except KlogError as exc:  # only an unreadable file header may raise; it must name the file
            if path.name not in str(exc):
                raise Finding(f"KlogError that does not name the file: {exc}") from None
            return
        try:
            if documents:
                for _line in export_lines(reader):
                    pass
            else:
                for _rec in reader.records():
                    pass
        finally:
            reader.close()
        if must_warn and not reader.warnings:
            raise Finding(f"{op}: the log was damaged, yet reading it reported nothing")


# --------------------------------------------------------------------------- profiles

PROFILE_KEYS = {
    "kestrel": ["mode", "plugins", "optional_plugins", "log_level"],
    "rules": ["paths", "strictness", "watch"],
    "engine": ["matcher", "runtime", "runtime_fallback", "matcher_settings", "cost_profile", "runtime_settings"],
    "bus": ["capacity", "batch_size", "flush_interval_ms", "backpressure"],
    "budgets": ["max_partials_per_rule", "max_partials_per_entity", "state_ttl_s"],
}
toml_scalars = st.one_of(
    printable_ints.filter(lambda i: abs(i) < 2**63).map(str), st.sampled_from(["inf", "-inf", "nan", "1e999", "0", "-1"]),
    st.booleans().map(lambda b: "true" if b else "false"),
    any_text.map(lambda s: json.dumps(s, ensure_ascii=True)),
    st.sampled_from(['"detect"', '"enforce"', '"replay"', '"warn"', '"error"', '"jsonl"', '"console"', '"-"',
                     '"host"', '"acdfa"', '"drop"', '"block"', '"1979-05-27T07:32:00Z"', "1979-05-27"]))
toml_values = st.recursive(toml_scalars, lambda c: st.one_of(
    st.lists(c, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    st.dictionaries(st.sampled_from(["type", "path", "a", "retries", "queue", "url"]), c, max_size=3).map(
        lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")), max_leaves=6)


@st.composite
def profile_texts(draw: Any) -> str:
    out = []
    for section in draw(st.lists(st.sampled_from(list(PROFILE_KEYS) + ["sources", "sinks", "actions", "nosuch"]),
                                 max_size=6)):
        if section in ("sources", "sinks", "actions"):
            out.append(f"[[{section}]]")
            out.append("type = " + draw(st.sampled_from(['"jsonl"', '"console"', '"klog"', '"webhook"', '"nosuch"',
                                                         '5', '"prometheus"'])))
            keys = ["path", "append", "stream", "url", "timeout_s", "delivery", "normalizer", "fallback", "compression",
                    "batch_size", "headers", "max_line_bytes", "junk"]
        else:
            out.append(f"[{section}]")
            keys = PROFILE_KEYS.get(section, ["x"]) + ["junk"]
        for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
            out.append(f"{key} = {draw(toml_values)}")
    text = "\n".join(out) + "\n"
    return draw(st.one_of(st.just(text), mutated(st.just(text))))


def run_profile(text: str) -> None:
    from kestrel_core.plugins import PluginError, PluginHost
    from kestrel_core.profile import ProfileError, build_profile, plugin_names, read_profile

    path = _tmpdir() / "p.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        data, validator = read_profile(path, text)
        names, optional = plugin_names(data, validator)
        host = PluginHost()
        try:
            host.load([n for n in names if n == "core"], [])
        except PluginError:
            return
        build_profile(data, validator, host.registry, host.unavailable)
    except ProfileError as exc:
        if exc.line < 1 or exc.column < 1:
            raise Finding(f"ProfileError without a position: {exc}") from None


# --------------------------------------------------------------------------- rule packs

RULE_KEYS = ["id", "name", "query", "severity", "description", "tags", "risk_score", "mode", "actions", "enabled",
             "runtime", "false_positives", "junk"]


@st.composite
def pack_cases(draw: Any) -> tuple[str, list[str]]:
    manifest = ["[pack]"]
    for key in draw(st.lists(st.sampled_from(["name", "version", "priority", "description", "defaults", "junk"]),
                             max_size=5, unique=True)):
        manifest.append(f"{key} = {draw(toml_values)}")
    if draw(st.booleans()):
        manifest[1:1] = ['name = "fuzz"', 'version = "1"', "priority = 1"]
    files = []
    for _ in range(draw(st.integers(1, 3))):
        lines = []
        for _r in range(draw(st.integers(1, 3))):
            lines.append("[[rule]]")
            lines.append(f'id = "fuzz.{draw(st.integers(0, 5))}"')
            lines.append('name = "fuzz rule"')
            query = draw(st.one_of(valid_shaped, queries))
            lines.append("query = " + draw(st.sampled_from([json.dumps(query, ensure_ascii=True),
                                                             "'''" + query.replace("'''", "") + "'''"])))
            for key in draw(st.lists(st.sampled_from(RULE_KEYS), max_size=3, unique=True)):
                lines.append(f"{key} = {draw(toml_values)}")
            if draw(st.booleans()):
                lines.append("[[rule.tests]]")
                lines.append('name = "t"')
                lines.append("events = " + draw(st.sampled_from([
                    '[{ "@timestamp" = 1, event = { category = "process" }, process = { name = "nc" } }]',
                    '[{ "@timestamp" = inf, event = { category = "process" } }]', "[]", '"x"', "[1, 2]",
                    '[{ "@timestamp" = "1.5e400", event = { category = "process" } }]'])))
                lines.append("expect_alerts = " + draw(st.sampled_from(["0", "1", "-1", '"x"', "[0]",
                                                                         "99999999999999999999"])))
        text = "\n".join(lines) + "\n"
        files.append(draw(st.one_of(st.just(text), mutated(st.just(text)))))
    return "\n".join(manifest) + "\n", files


def run_pack(case: tuple[str, list[str]]) -> None:
    import shutil

    from kestrel_core.packs import load_packs, run_rule_test

    manifest, files = case
    root = _tmpdir() / "pack"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    (root / "pack.toml").write_text(manifest, encoding="utf-8", errors="surrogatepass")
    for i, text in enumerate(files):
        (root / f"r{i}.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    packset = load_packs([root])
    for err in packset.errors:
        if not getattr(err, "file", None) or not getattr(err, "line", None):
            raise Finding(f"pack error without file:line: {err}")
    for rule in packset.rules:
        for test in rule.tests:
            run_rule_test(rule, test)


# --------------------------------------------------------------------------- the list

TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("eql-compile", queries, run_eql_compile,
           "generated and mutated EQL queries: accepted, or an EqlError with a valid line:column"),
    Target("eql-eval", eval_cases(), run_eval,
           "rules that compile over events holding values of every type: no exception, no rule disabled"),
    Target("jsonl", jsonl_cases, run_jsonl,
           "JSONL files through the jsonl source and the ecs-json normalizer: events or counted, located rejects"),
    Target("klog", damaged_logs(), run_klog,
           "a real .klog truncated, bit-flipped, with frames deleted/duplicated/swapped or CRC-valid shape damage"),
    Target("profile", profile_texts(), run_profile,
           "profile TOML with known and unknown keys and odd values: a profile, or a ProfileError with line:column"),
    Target("pack", pack_cases(), run_pack,
           "rule packs (manifest, rule files, golden tests): rules and located RuleErrors, golden tests run"),
]}
