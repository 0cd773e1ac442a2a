"""Rules written against the event.action values of schema 1.0 keep working:
an old value compiles to "old or current", with a located warning."""

from __future__ import annotations

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.eql.ir import compile_query
from kestrel_core.rules import Rule
from kestrel_core.schema import VALUE_RENAMES, Schema


def actions_matched(ev, schema, query, *actions):
    """event.action of each event ``query`` alerts on, among one event per action."""
    engine = DetectionEngine(schema, [Rule(id="r", name="r", query=query)])
    evs = [ev("network", i + 1, **{"event.action": a}) for i, a in enumerate(actions)]
    fid = schema.resolve("event.action")
    return [a.events[0].fields[fid] for a in engine.process_batch(evs)]


@pytest.mark.parametrize("query", [
    'network where event.action == "connect"',
    'network where event.action in ("connect", "bind")',
    'network where event.action : "CONNECT"',
    'network where event.action like "connect"',
])
def test_an_old_value_matches_old_and_current_events_with_a_warning(query, ev, schema):
    q = compile_query(query, schema, strict="warn")
    assert len(q.warnings) == 1 and "'connection_attempted' since schema 1.1" in str(q.warnings[0])
    assert q.warnings[0].line == 1 and q.warnings[0].column == query.index('"') + 1
    hits = actions_matched(ev, schema, query, "connection_attempted", "connect", "bind", "accept")
    assert "connection_attempted" in hits and "connect" in hits and "accept" not in hits


def test_negation_of_an_old_value_excludes_both(ev, schema):
    hits = actions_matched(ev, schema, 'network where event.action != "connect"', "connection_attempted", "connect", "bind")
    assert hits == ["bind"]


def test_current_values_and_wildcards_are_left_alone():
    schema = Schema.ecs()
    for query in ('network where event.action == "connection_attempted"', 'network where event.action : "conn*"',
                  'process where process.name == "exit"'):
        assert compile_query(query, schema, strict="warn").warnings == ()


def test_every_renamed_value_is_what_the_ebpf_source_emits_now():
    kinds = pytest.importorskip("kestrel_sources_ebpf.kinds")
    emitted = {k.action for k in kinds.KINDS.values()}
    assert set(VALUE_RENAMES["event.action"].values()) <= emitted
    assert not set(VALUE_RENAMES["event.action"]) & emitted
