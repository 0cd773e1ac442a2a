"""DetectionEngine.adopt_state: what survives an engine swap (hot reload)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.rules import Rule
from kestrel_core.schema import Schema

# the EQL tests' event builder, loaded under its own name (not as another "conftest")
_spec = importlib.util.spec_from_file_location("eql_test_events", Path(__file__).resolve().parents[1] / "eql" /
                                               "conftest.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
SECOND, make_event = _mod.SECOND, _mod.make_event


def seq(rid: str, a: str, b: str, extra: str = "", pipes: str = "") -> Rule:
    return Rule(id=rid, name=rid, query=f'sequence by process.pid with maxspan=1m{extra} '
                                        f'[process where process.name == "{a}"] [process where process.name == "{b}"]'
                                        f'{pipes}')


def test_unchanged_rules_keep_state_changed_and_removed_rules_drop_it():
    schema = Schema.ecs()
    old = DetectionEngine(schema, [seq("same", "a", "b"), seq("changed", "c", "d"), seq("removed", "e", "f")])
    ev = lambda name, ts: make_event(schema, ts=ts * SECOND, process__pid=1, process__name=name)  # noqa: E731
    assert old.process_batch([ev("a", 1), ev("c", 2), ev("e", 3)]) == []
    old.evictions[("same", "overwritten")] += 5  # history carries over
    new = DetectionEngine(schema, [seq("same", "a", "b"), seq("changed", "c", "x"), seq("added", "g", "h")])
    kept, dropped = new.adopt_state(old)
    assert (kept, dropped) == (1, 2)
    assert new.evictions[("changed", "reload")] == 1 and new.evictions[("removed", "reload")] == 1
    assert new.evictions[("same", "overwritten")] == 5
    alerts = new.process_batch([ev("b", 4), ev("d", 5), ev("x", 6)])
    assert [(a.rule_id, [e.ts_mono_ns // SECOND for e in a.events]) for a in alerts] == [("same", [1, 4])]
    assert new.active_partials() == {"same": 0, "changed": 0, "added": 0}


def test_same_id_with_different_window_is_a_changed_rule():
    schema = Schema.ecs()
    old = DetectionEngine(schema, [seq("r", "a", "b")])
    old.process_batch([make_event(schema, ts=SECOND, process__pid=1, process__name="a")])
    new = DetectionEngine(schema, [Rule(id="r", name="r", query=seq("r", "a", "b").query.replace("1m", "2m"))])
    assert new.adopt_state(old) == (0, 1)


def test_renamed_rule_with_the_same_query_keeps_state_and_head_counter():
    schema = Schema.ecs()
    old = DetectionEngine(schema, [seq("r", "a", "b", pipes=" | head 1")])
    ev = lambda name, ts: make_event(schema, ts=ts * SECOND, process__pid=1, process__name=name)  # noqa: E731
    assert len(old.process_batch([ev("a", 1), ev("b", 2)])) == 1
    old.process_batch([ev("a", 3)])
    r = seq("r", "a", "b", pipes=" | head 1")
    r.name = "renamed"
    new = DetectionEngine(schema, [r])
    new.adopt_state(old)
    assert new.process_batch([ev("b", 4)]) == []  # head 1 already reached before the swap


def test_reuse_shares_compiled_predicates_of_identical_steps_only():
    from kestrel_core.schema import FieldType

    schema = Schema.ecs()
    r1 = Rule(id="a", name="a", query='process where process.name == "x" and custom.level > 3')
    r2 = Rule(id="b", name="b", query='process where process.name == "y"')
    old = DetectionEngine(schema, [r1, r2])
    new = DetectionEngine(schema, [r1, Rule(id="b", name="b", query='process where process.name == "z"')], reuse=old)
    assert new.units[0].pred is old.units[0].pred  # unchanged: not compiled again
    assert new.units[1].pred is not old.units[1].pred
    # a field whose type changed since (a plugin declared it) compiles again
    schema.declare("custom.level", FieldType.LONG)
    again = DetectionEngine(schema, [r1], reuse=new)
    assert again.units[0].pred is not old.units[0].pred
    ev = make_event(schema, process__name="x", custom__level=5)
    assert [a.rule_id for a in again.process_batch([ev])] == ["a"]
    # another schema: nothing is shared
    other = DetectionEngine(Schema.ecs(), [r1], reuse=old)
    assert other.units[0].pred is not old.units[0].pred
