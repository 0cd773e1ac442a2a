"""The persistent compile cache (kestrel_core.eql.compilecache): the IR it
returns equals a fresh compile; a damaged, foreign or untrusted file is
ignored with a warning and never trusted; what it caches leaves alerts
unchanged."""

from __future__ import annotations

import hashlib
import io
import logging
import marshal
import os

import pytest

from kestrel_core.eql import compilecache, ir
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.rules import Rule
from kestrel_core.schema import FieldType, Schema
from kestrel_core.testing import kestrel_root


@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "cc"
    yield d
    compilecache.configure(None)


def _queries() -> list[str]:
    from kestrel_core.packs import load_packs

    ps = load_packs([kestrel_root() / "rules" / "linux"])
    qs = [r.query for r in ps.rules]
    import sys

    sys.path.insert(0, str(kestrel_root()))
    from benchmarks.scenarios import scenario_e, scenario_f

    return qs + [r["kestrel"] for r in scenario_e(200) + scenario_f(60)]


def test_cached_ir_equals_a_fresh_compile(cache_dir):
    qs = _queries()
    cache = compilecache.configure(cache_dir)
    for q in qs:
        compilecache.compile_query(q, Schema.ecs())
    assert cache.counts["stored"] > 150
    compilecache.save()
    cache = compilecache.configure(cache_dir)  # a new process, in effect: read from disk
    for q in qs:
        fresh = ir.compile_query(q, Schema.ecs())
        got = cache.get(q, Schema.ecs(), "warn")
        if fresh.warnings:
            assert got is None
            continue
        assert got == fresh, q
    assert cache.counts["hits"] > 150


def _fill(cache_dir) -> None:
    compilecache.configure(cache_dir)
    DetectionEngine(Schema.ecs(), [Rule(id="r", name="r", query='process where process.name == "nc"')])
    compilecache.configure(None)


def _damage(path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "flipped":
        path.write_bytes(raw[:-5] + bytes([raw[-5] ^ 0xFF]) + raw[-4:])
    elif how == "magic":
        path.write_bytes(b"NOT A CACHE\n" + raw)
    elif how == "shape":  # a valid checksum over a payload of the wrong shape
        payload = marshal.dumps((compilecache.FORMAT, compilecache._build(), {"x" * 64: {"warn": ("event",)}}, {}))
        path.write_bytes(compilecache.MAGIC + hashlib.sha256(payload).digest() + payload)
    elif how == "build":
        payload = marshal.dumps((compilecache.FORMAT, "another-build", {}, {}))
        path.write_bytes(compilecache.MAGIC + hashlib.sha256(payload).digest() + payload)


@pytest.mark.parametrize("how", ["truncated", "flipped", "magic", "shape", "build"])
def test_a_damaged_cache_is_ignored_with_a_warning(cache_dir, caplog, how):
    _fill(cache_dir)
    (path,) = cache_dir.glob("ir-*.marshal")
    _damage(path, how)
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        cache = compilecache.configure(cache_dir)
    assert any("is damaged" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records), caplog.text
    assert cache.entries == {} and cache.codes == {}
    eng = DetectionEngine(Schema.ecs(), [Rule(id="r", name="r", query='process where process.name == "nc"')])
    assert not eng.rule_errors and cache.counts["misses"] == 1
    compilecache.configure(None)  # saved: the file is rebuilt whole
    assert compilecache.CompileCache(cache_dir).entries


@pytest.mark.parametrize("target", ["dir", "file"])
def test_an_untrusted_cache_is_neither_read_nor_written(cache_dir, caplog, target):
    _fill(cache_dir)
    (path,) = cache_dir.glob("ir-*.marshal")
    os.chmod(cache_dir if target == "dir" else path, 0o777 if target == "dir" else 0o666)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        compilecache.configure(cache_dir)
    assert "is not used: it is writable by group or others" in caplog.text
    assert compilecache.active() is None
    DetectionEngine(Schema.ecs(), [Rule(id="r2", name="r", query='process where process.name == "socat"')])
    compilecache.save()
    assert path.read_bytes() == before


def test_a_schema_that_types_a_field_differently_misses(cache_dir):
    q = "process where foo.bar != null"
    cache = compilecache.configure(cache_dir)
    s1, s2, s3 = Schema.ecs(), Schema.ecs(), Schema.ecs()
    s1.declare("foo.bar", FieldType.KEYWORD)
    s2.declare("foo.bar", FieldType.LONG)
    s3.declare("foo.bar", FieldType.KEYWORD)
    cache.put(q, s1, "warn", ir.compile_query(q, s1))
    assert cache.counts["stored"] == 1
    assert cache.get(q, s2, "warn") is None and cache.counts["schema_mismatch"] == 1
    assert cache.get(q, s3, "warn") == ir.compile_query(q, s3)


def test_rule_errors_are_still_reported_with_a_warm_cache(cache_dir, tmp_path):
    from kestrel_core.packs import load_rule_pack

    pack = tmp_path / "p.toml"
    pack.write_text('[[rule]]\nid = "ok"\nname = "ok"\nquery = \'process where process.name == "nc"\'\n\n'
                    '[[rule]]\nid = "bad"\nname = "bad"\nquery = \'process where process.name == \'\n')
    for _ in range(2):  # cold, then warm
        compilecache.configure(cache_dir)
        rules, errors = load_rule_pack([str(pack)])
        DetectionEngine(Schema.ecs(), rules)
        assert [e.rule_id for e in errors] == ["bad"] and f"{pack}:" in str(errors[0])
    assert compilecache.active().counts["hits"] == 1


def test_demo_replay_identical_with_the_cache_cold_and_warm(cache_dir):
    from kestrel_core.replay import replay

    root = kestrel_root()
    args = ([root / "demo" / "capture.klog"], [root / "rules" / "linux"])
    outs = []
    compilecache.configure(None)
    outs.append(io.BytesIO())
    replay(*args, outs[-1])
    for _ in range(2):
        compilecache.configure(cache_dir)
        compilecache._CODES.clear()  # as in a new process
        outs.append(io.BytesIO())
        replay(*args, outs[-1])
    assert compilecache.active().counts["hits"] > 30 and compilecache.active().counts["code_hits"] > 0
    assert outs[0].getvalue() == outs[1].getvalue() == outs[2].getvalue()


def test_profile_compile_cache_key(tmp_path, cache_dir):
    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run

    (tmp_path / "r.toml").write_text('[[rule]]\nid = "a"\nname = "a"\nquery = \'process where process.name == "nc"\'\n')
    (tmp_path / "p.toml").write_text('[rules]\npaths = ["r.toml"]\ncompile_cache = "cc"\n'
                                     '[[sources]]\ntype = "jsonl"\npath = "-"\n')
    profile, host = load_profile(tmp_path / "p.toml")
    Run.build(profile, host)
    assert compilecache.active() is not None and compilecache.active().dir == cache_dir
    assert list(cache_dir.glob("ir-*.marshal"))


def test_a_pack_load_parses_each_query_once(tmp_path, monkeypatch):
    """The rule-file check's parse tree is used by the engine's compile (cold load: half the parse time)."""
    from kestrel_core.eql import parser
    from kestrel_core.packs import load_rule_pack

    calls = []
    real = parser.parse
    counted = lambda *a, **k: calls.append(a[0]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(parser, "parse", counted)
    compilecache.configure(None)
    pack = tmp_path / "p.toml"
    pack.write_text("".join(f'[[rule]]\nid = "r{i}"\nname = "r"\nquery = \'process where process.name == "n{i}"\'\n\n'
                            for i in range(5)))
    rules, errors = load_rule_pack([str(pack)])
    eng = DetectionEngine(Schema.ecs(), rules)
    assert not errors and len(eng.rules) == 5
    assert sorted(calls) == sorted(r.query for r in rules)
