"""The matcher itself: registration, probe, candidates, the funnel's LRU and the compile cache."""

from __future__ import annotations

import json
import logging

import pytest

from kestrel_core.eql import ir
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.plugins import PluginHost
from kestrel_core.rules import Rule
from kestrel_core.schema import Schema
from kestrel_core.testing_matchers import to_events
from kestrel_matcher_acdfa import AcdfaMatcher, AcdfaSettings


def _preds(schema, queries):
    out = []
    for i, q in enumerate(queries):
        query = ir.compile_query(q, schema)
        out.append((i, query, query.steps[0].pred, query.steps[0].category))
    return out


def test_registered_through_the_plugin_hook_and_probed():
    host = PluginHost()
    host.load(["matcher-acdfa"])
    comp = host.registry.get("matcher", "acdfa")
    assert comp.cls is AcdfaMatcher
    probe = AcdfaMatcher.probe()
    assert probe.available and "pyahocorasick" in probe.reason


def test_candidates_come_from_literal_hits_only():
    schema = Schema.ecs()
    m = AcdfaMatcher()
    m.build(_preds(schema, [
        'process where process.name == "curl"',
        'process where process.executable : "*/tmp/*"',
        'process where process.name regex ".*ncat"',
        'process where process.pid > 3',
    ]), schema)
    evs = to_events(schema, [
        ("process", 1, {"process.name": "curl", "process.executable": "/usr/bin/curl"}),
        ("process", 2, {"process.name": "CURL", "process.executable": "/TMP/x/curl"}),
        ("process", 3, {"process.name": "xncat", "process.executable": "/bin/x"}),
        ("process", 4, {"process.name": "ncat2"}),
    ])
    got = dict(m.candidates("process", evs))
    assert got == {0: [0], 1: [1], 2: [2], 3: None}
    assert m.explain(3)[0] == "scan" and m.explain(0)[0] == "ac"


def test_precise_patterns_are_compiled_lazily_into_a_bounded_lru():
    schema = Schema.ecs()
    queries = [f'process where process.name regex "x{i}[0-9]+.*"' for i in range(5)]
    m = AcdfaMatcher(AcdfaSettings(lru_capacity=2, value_cache=0))
    m.build(_preds(schema, queries), schema)
    assert m.counts["precise_compiled"] == 0  # nothing compiled before a candidate
    evs = to_events(schema, [("process", i, {"process.name": f"x{i}{i}"}) for i in range(5)] +
                    [("process", 9, {"process.name": "x1y"})])
    got = dict(m.candidates("process", evs))
    assert got == {i: [i] for i in range(5)}  # x1y hit the literal "x1" but failed the precise regex
    assert m.counts["precise_compiled"] >= 5 and m.counts["precise_evicted"] >= 3
    assert len(m._lru) == 2


def test_compile_cache_round_trip_and_damage(tmp_path, caplog):
    schema = Schema.ecs()
    preds = _preds(schema, ['process where process.name : "*bash*"', 'file where file.path regex "/etc/.*"'])
    m1 = AcdfaMatcher(AcdfaSettings(cache_dir=str(tmp_path)))
    m1.build(preds, schema)
    assert m1.counts["cache_misses"] == 2
    files = list(tmp_path.glob("acdfa-*.json"))
    assert len(files) == 1
    m2 = AcdfaMatcher(AcdfaSettings(cache_dir=str(tmp_path)))
    m2.build(preds, schema)
    assert m2.counts["cache_hits"] == 2 and m2.keys == m1.keys
    # damaged: a wrong kind in an entry -> ignored with a warning, rebuilt, same keys
    data = json.loads(files[0].read_text())
    h = next(iter(data["entries"]))
    data["entries"][h] = [[[1, False, [["bogus", "x"]], [0]]]]
    files[0].write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        m3 = AcdfaMatcher(AcdfaSettings(cache_dir=str(tmp_path)))
        m3.build(preds, schema)
    assert "damaged" in caplog.text and m3.keys == m1.keys and m3.counts["cache_hits"] == 0
    files[0].write_bytes(b"\x00not json")
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        m4 = AcdfaMatcher(AcdfaSettings(cache_dir=str(tmp_path)))
        m4.build(preds, schema)
    assert m4.keys == m1.keys


@pytest.mark.parametrize("target", ["dir", "file"])
def test_an_untrusted_cache_is_neither_read_nor_written(tmp_path, caplog, target):
    """Cache entries pick the literals that gate rules: a file others could
    have written (a way to blind a rule) is not used, and not rewritten."""
    import os

    schema = Schema.ecs()
    preds = _preds(schema, ['process where process.name : "*bash*"'])
    AcdfaMatcher(AcdfaSettings(cache_dir=str(tmp_path))).build(preds, schema)
    (path,) = tmp_path.glob("acdfa-*.json")
    os.chmod(tmp_path if target == "dir" else path, 0o777 if target == "dir" else 0o666)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        m = AcdfaMatcher(AcdfaSettings(cache_dir=str(tmp_path)))
        m.build(preds + _preds(schema, ['process where process.name : "*socat*"']), schema)
    assert "is not used: it is writable by group or others" in caplog.text
    assert m.counts["cache_hits"] == 0 and path.read_bytes() == before
    assert m.keys  # the matcher works without its cache


def test_engine_with_many_rules_uses_the_matcher():
    schema = Schema.ecs()
    rules = [Rule(id=f"r{i}", name="r", query=f'process where process.name == "p{i}"') for i in range(50)]
    eng = DetectionEngine(schema, rules, matcher=AcdfaMatcher())
    evs = to_events(schema, [("process", i, {"process.name": f"p{i % 60}"}) for i in range(120)])
    alerts = eng.process_batch(evs)
    assert len(alerts) == 100
    assert sum(eng.matcher.candidate_events.values()) == 100  # only the events that hit


def test_a_second_key_that_does_not_narrow_is_dropped_and_candidates_stay_complete():
    schema = Schema.ecs()
    q = 'process where process.parent.name == "sshd" and process.name : ("bash", "sh")'
    m = AcdfaMatcher(AcdfaSettings(review_events=100))
    m.build(_preds(schema, [q]), schema)
    assert 0 in m.keys2  # filed under both fields
    # every sshd child is a shell: the second key keeps everything the first one hits
    evs = to_events(schema, [("process", i, {"process.parent.name": "sshd", "process.name": "bash"}) for i in range(80)] +
                    [("process", i, {"process.parent.name": "cron", "process.name": "sh"}) for i in range(40)])
    got = dict(m.candidates("process", evs))
    assert got == {0: list(range(80))}
    assert len(m.dropped_keys) == 1 and m.counts["keys_dropped"] == 1
    (pid, sids), = m.pid_slots["process"]
    assert len(sids) == 1
    # after the drop the kept key alone selects, still every event the predicate can be true on
    got = dict(m.candidates("process", evs))
    assert set(got[0]) >= set(range(80))
