"""Sequence semantics (Elasticsearch): maxspan edges, until, runs, missing
events, competing partial matches, join keys with nulls, evictions."""

from __future__ import annotations

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.eql.sequence import EngineLimits
from kestrel_core.rules import Rule


S = 10**9


def run(schema, query, events, *, batch=3, limits=None, with_engine=False):
    eng = DetectionEngine(schema, [Rule(id="r", name="r", query=query)], strict="off", limits=limits)
    assert not eng.rule_errors, [str(e) for e in eng.rule_errors]
    alerts = []
    for i in range(0, len(events), batch):
        alerts += eng.process_batch(events[i : i + batch])
    alerts += eng.flush()
    got = [tuple(e.raw["n"] for e in a.events) for a in alerts]
    return (got, eng) if with_engine else got


# --------------------------------------------------------------------------- basics


def test_two_steps_by_key(schema, E):
    evs = [E(1, "a", k="u1"), E(2, "a", k="u2"), E(3, "b", k="u1"), E(4, "b", k="u2")]
    assert run(schema, "sequence by ?k [a where true] [b where true]", evs) == [(1, 3), (2, 4)]


def test_per_step_by_keys_join_values(schema, E):
    evs = [E(1, "file", path="/tmp/x"), E(2, "process", exe="/tmp/x"), E(3, "process", exe="/bin/y")]
    q = "sequence [file where true] by ?path [process where true] by ?exe"
    assert run(schema, q, evs) == [(1, 2)]


def test_one_event_never_fills_two_steps(schema, E):
    evs = [E(1), E(2), E(3)]
    assert run(schema, "sequence [x where true] [x where true]", evs) == [(1, 2), (2, 3)]


def test_state_machine_example_from_the_docs(schema, E):
    # EQL syntax reference, "How sequence queries handle matches"
    names = ["attrib", "attrib", "bash", "bash", "bash", "attrib", "attrib", "bash", "cat", "cat", "cat"]
    users = ["root", "root", "elkbee", "root", "root", "elkbee", "root", "elkbee", "root", "elkbee", "root"]
    evs = [E(i + 1, "process", process__name=nm, user__name=u) for i, (nm, u) in enumerate(zip(names, users))]
    q = (
        'sequence by user.name [process where process.name == "attrib"] '
        '[process where process.name == "bash"] [process where process.name == "cat"]'
    )
    assert sorted(run(schema, q, evs)) == [(2, 4, 9), (6, 8, 10)]


def test_newer_partial_overwrites_older_in_same_state(schema, E):
    evs = [E(1, "a"), E(2, "a"), E(3, "b"), E(4, "b")]
    got, eng = run(schema, "sequence [a where true] [b where true]", evs, with_engine=True)
    assert got == [(2, 3)]
    assert eng.evictions[("r", "overwritten")] == 1


# --------------------------------------------------------------------------- maxspan


def test_maxspan_is_inclusive(schema, E):
    q = "sequence with maxspan=2s [a where true] [b where true]"
    assert run(schema, q, [E(1, "a", t=10), E(2, "b", t=12)]) == [(1, 2)]
    late = E(2, "b", ns=12 * S + 1)
    got, eng = run(schema, q, [E(1, "a", t=10), late], with_engine=True)
    assert got == []
    assert eng.evictions[("r", "maxspan")] == 1


def test_maxspan_measured_from_first_event(schema, E):
    q = "sequence with maxspan=3s [a where true] [b where true] [c where true]"
    evs = [E(1, "a", t=0), E(2, "b", t=2), E(3, "c", t=4)]
    assert run(schema, q, evs) == []
    evs = [E(1, "a", t=0), E(2, "b", t=2), E(3, "c", t=3)]
    assert run(schema, q, evs) == [(1, 2, 3)]


def test_maxspan_expiry_is_counted_without_scanning(schema, E):
    q = "sequence by ?k with maxspan=1s [a where true] [b where true]"
    evs = [E(i, "a", t=i, k=f"u{i}") for i in range(1, 200)]
    got, eng = run(schema, q, evs, batch=10, with_engine=True)
    assert got == []
    m = eng.rules[0].matcher
    assert m.n_partials <= 12  # only the last second's partials are held
    assert eng.evictions[("r", "maxspan")] >= 180


# --------------------------------------------------------------------------- until


def test_until_from_the_docs(schema, E):
    # A,B -> match; A,B,C -> match; A,C,B -> no match (grouped by ID)
    evs = [
        E(1, "a", id="1"), E(2, "b", id="1"),
        E(3, "a", id="2"), E(4, "b", id="2"), E(5, "c", id="2"),
        E(6, "a", id="3"), E(7, "c", id="3"), E(8, "b", id="3"),
    ]
    q = "sequence by ?id [a where true] [b where true] until [c where true]"
    got, eng = run(schema, q, evs, with_engine=True)
    assert sorted(got) == [(1, 2), (3, 4)]
    assert eng.evictions[("r", "until")] == 1


def test_until_event_that_also_matches_a_step(schema, E):
    # the until condition of an event does not stop that event's own step,
    # but it ends the sequence it just advanced
    q = "sequence [x where true] [x where true] [x where true] until [x where ?stop == true]"
    evs = [E(1), E(2, stop=True), E(3), E(4), E(5)]
    assert run(schema, q, evs) == [(3, 4, 5)]


# --------------------------------------------------------------------------- runs


def test_runs_repeat_a_step(schema, E):
    q = "sequence [a where true] [b where true] with runs=3 [c where true]"
    evs = [E(1, "a"), E(2, "b"), E(3, "b"), E(4, "c"), E(5, "b"), E(6, "c")]
    assert run(schema, q, evs) == [(1, 2, 3, 5, 6)]


# --------------------------------------------------------------------------- missing events


def test_missing_event_in_the_middle(schema, E):
    q = "sequence with maxspan=10s [a where true] ![m where true] [b where true]"
    assert run(schema, q, [E(1, "a"), E(2, "b")]) == [(1, 2)]
    got, eng = run(schema, q, [E(1, "a"), E(2, "m"), E(3, "b")], with_engine=True)
    assert got == []
    assert eng.evictions[("r", "missing_event_seen")] == 1


def test_missing_event_leading_looks_back_maxspan(schema, E):
    q = "sequence with maxspan=3s ![m where true] [a where true] [b where true]"
    assert run(schema, q, [E(1, "m", t=0), E(2, "a", t=4), E(3, "b", t=5)]) == [(2, 3)]
    assert run(schema, q, [E(1, "m", t=1), E(2, "a", t=4), E(3, "b", t=5)]) == []


def test_missing_event_trailing_waits_for_the_window(schema, E):
    q = "sequence with maxspan=5s [a where true] ![m where true]"
    # m inside [a, a + 5s]: no match
    assert run(schema, q, [E(1, "a", t=0), E(2, "m", t=5)]) == []
    # m after the window: match
    assert run(schema, q, [E(1, "a", t=0), E(2, "m", t=6)]) == [(1,)]
    # nothing else arrives: decided at flush
    eng = DetectionEngine(schema, [Rule(id="r", name="r", query=q)])
    assert eng.process_batch([E(1, "a", t=0)]) == []
    assert [a.events[0].raw["n"] for a in eng.flush()] == [1]


def test_missing_event_checks_use_the_join_key(schema, E):
    q = "sequence by ?k with maxspan=10s [a where true] ![m where true] [b where true]"
    evs = [E(1, "a", k=1), E(2, "m", k=2), E(3, "b", k=1)]
    assert run(schema, q, evs) == [(1, 3)]


def test_missing_events_do_not_change_the_state_machine(schema, E):
    # ES: candidates are built from the positive steps; a candidate that fails the
    # missing check is dropped, the next one can still match
    q = "sequence with maxspan=10s [a where true] [a where true] ![m where true] [a where true]"
    evs = [E(1, "a"), E(2, "a"), E(3, "m"), E(4, "a"), E(5, "a")]
    assert run(schema, q, evs) == [(2, 4, 5)]


# --------------------------------------------------------------------------- join keys


def test_null_join_keys_never_join(schema, E):
    evs = [E(1, "a"), E(2, "b"), E(3, "a", process__pid=1), E(4, "b", process__pid=1)]
    assert run(schema, "sequence by process.pid [a where true] [b where true]", evs) == [(3, 4)]


def test_optional_join_keys_let_nulls_join(schema, E):
    evs = [E(1, "a"), E(2, "b"), E(3, "a", process__pid=1), E(4, "b", process__pid=1)]
    assert run(schema, "sequence by ?process.pid [a where true] [b where true]", evs) == [(1, 2), (3, 4)]


def test_multiple_keys(schema, E):
    evs = [E(1, "a", h="x", u="1"), E(2, "b", h="x", u="2"), E(3, "b", h="x", u="1")]
    got, eng = run(schema, "sequence by ?h, ?u [a where true] [b where true]", evs, with_engine=True)
    assert got == [(1, 3)]


def test_alert_carries_join_keys_and_fields(schema, E):
    eng = DetectionEngine(schema, [Rule(id="r", name="R", query="sequence by user.name [a where ?v == 1] [b where true]")])
    alerts = eng.process_batch([E(1, "a", user__name="root", v=1), E(2, "b", user__name="root")])
    (a,) = alerts
    assert a.join_keys == ("root",)
    assert a.fields["user.name"] == ["root", "root"] and a.fields["v"] == [1, None]
    assert a.ts_mono_ns == 2 * S


# --------------------------------------------------------------------------- state store limits


def test_rule_quota_evicts_least_recently_used_key(schema, E):
    q = "sequence by ?k [a where true] [b where true]"
    evs = [E(i, "a", k=i) for i in range(1, 11)] + [E(11, "b", k=1), E(12, "b", k=10)]
    got, eng = run(schema, q, evs, limits=EngineLimits(max_partials_per_rule=4), with_engine=True)
    assert got == [(10, 12)]
    assert eng.evictions[("r", "rule_quota")] == 6


def test_ttl_without_maxspan(schema, E):
    q = "sequence [a where true] [b where true]"
    got, eng = run(schema, q, [E(1, "a", t=0), E(2, "b", t=100)], batch=1,
                   limits=EngineLimits(ttl_ns=10 * S), with_engine=True)
    assert got == []
    assert eng.evictions[("r", "ttl")] == 1


def test_entity_quota(schema, E):
    q = "sequence by ?k [x where ?s == 1] [x where ?s == 2] [x where ?s == 3]"
    evs = [E(1, s=1, k=1), E(2, s=2, k=1), E(3, s=1, k=1), E(4, s=3, k=1)]
    got, eng = run(schema, q, evs, limits=EngineLimits(max_partials_per_entity=1), with_engine=True)
    assert got == []
    assert eng.evictions[("r", "entity_quota")] == 1


def test_batching_does_not_change_results(schema, E):
    import random

    r = random.Random(3)
    evs = [E(i, r.choice("abc"), t=i, k=r.choice("xyz")) for i in range(1, 400)]
    q = "sequence by ?k with maxspan=20s [a where true] [b where true] ![c where true] [a where true] until [c where ?k == \"z\"]"
    want = run(schema, q, evs, batch=1000)
    for b in (1, 7, 64):
        assert run(schema, q, evs, batch=b) == want


def test_missing_event_memory_is_bounded(schema, E):
    q = "sequence by ?k with maxspan=5s [a where true] ![m where true] [b where true]"
    evs = [E(i, "m", t=i, k=f"u{i}") for i in range(1, 500)]
    _, eng = run(schema, q, evs, batch=50, with_engine=True)
    m = eng.rules[0].matcher
    assert len(m.missing_hits[0]) <= 70 and len(m.missing_fifo[0]) <= 70
