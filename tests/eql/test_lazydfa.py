"""The lazy DFA for hot sequences (kestrel_core.eql.lazydfa) gives the NFA's
alerts, in order, and the same eviction counts, on random rule sets and
streams, with every cap and the LRU biting; and it really runs (each test
checks that the DFA consumed events, so none passes with the DFA absent)."""

from __future__ import annotations

import random
import zlib

import attrs
import pytest

from kestrel_core.eql import lazydfa
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.eql.sequence import EngineLimits
from kestrel_core.rules import Rule

from .test_sequence_reference import reference

S = 10**9
ALWAYS = dict(lazy_dfa=True, dfa_hot_hits=0)


def _step(r: random.Random) -> str:
    cat = r.choice("abc")
    cond = r.choice(["true", "v == 1", "v in (1, 2)", "v != 2", "w : \"x*\""])
    return f"[{cat} where {cond}]" + (" with runs=2" if r.random() < 0.1 else "")


def _rule(r: random.Random, i: int) -> str:
    by = r.choice(["", "by k", "by k", "by ?k", "by k, j"])
    span = r.choice(["", " with maxspan=3s", " with maxspan=10s"])
    q = f"sequence {by}{span} " + " ".join(_step(r) for _ in range(r.randint(2, 4)))
    extra = r.random()
    if extra < 0.1:
        q += " until [c where v == 3]"
    elif extra < 0.15 and span:
        q = q.replace("] [", "] ![c where v == 3] [", 1)
    return q


def _events(r: random.Random, ev, n: int) -> list:
    out, t = [], 0
    for i in range(n):
        t += r.choice([0, 0, 1, 1, 2, 5])
        f = {"n": i, "v": r.choice([1, 2, 3, None]), "w": r.choice(["xa", "ya", "x"])}
        k = r.choice(["x", "y", "z", "q", None, ["x", "y"]])
        if k is not None:
            f["k"] = k
        if r.random() < 0.8:
            f["j"] = r.choice(["p", "q"])
        out.append(ev(r.choice("abc"), ts=t * S, **f))
    return out


def _run(schema, rules, events, batch, limits):
    eng = DetectionEngine(schema, rules, strict="off", limits=limits)
    assert not eng.rule_errors, eng.rule_errors[:2]
    out = []
    for i in range(0, len(events), batch):
        out += [(a.rule_id, tuple(e.raw["n"] for e in a.events)) for a in eng.process_batch(events[i:i + batch])]
    out += [(a.rule_id, tuple(e.raw["n"] for e in a.events)) for a in eng.flush()]
    dfa = [cr.matcher for cr in eng.seq_rules if isinstance(cr.matcher, lazydfa.DfaSequenceMatcher)]
    return out, dict(eng.evictions), sum(m.dfa_events for m in dfa), eng.dfa_cache.counts


LIMIT_VARIANTS = [
    {},
    {"max_partials_per_rule": 3},
    {"ttl_ns": 4 * S},
    {"dfa_hot_hits": 7},
    {"dfa_cache": 1},
    {"dfa_max_states": 2},
    {"dfa_max_transitions": 3},
]


@pytest.mark.parametrize("variant", LIMIT_VARIANTS, ids=lambda v: ",".join(v) or "defaults")
def test_random_rule_sets_equal_the_nfa(ev, schema, variant):
    r = random.Random(zlib.crc32(repr(sorted(variant.items())).encode()))
    dfa_events = 0
    counts: dict[str, int] = {}
    total = 0
    for trial in range(25):
        rules = [Rule(id=f"r{i}", name=f"r{i}", query=_rule(r, i)) for i in range(r.randint(1, 6))]
        events = _events(r, ev, r.randint(30, 300))
        base = EngineLimits(**{k: v for k, v in variant.items() if not k.startswith("dfa_")})
        nfa = attrs.evolve(base, lazy_dfa=False)
        dfa = attrs.evolve(base, **{**ALWAYS, **variant})
        for batch in (1, 7, 64, 1000):
            want, want_ev, _, _ = _run(schema, rules, events, batch, nfa)
            got, got_ev, n, c = _run(schema, rules, events, batch, dfa)
            assert got == want, (trial, batch, [x.query for x in rules])
            assert got_ev == want_ev, (trial, batch, [x.query for x in rules])
            dfa_events += n
            total += len(want)
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
    assert total > 500, "the generated rule sets should raise alerts"
    assert dfa_events > 1000, "the DFA should have consumed events"
    assert counts["compiled"] > 0
    if "dfa_cache" in variant:
        assert counts["evicted_lru"] > 0, "an LRU of one DFA must evict"
    if "dfa_max_states" in variant:
        assert counts["state_cap"] > 0, "three-step rules pass two states"
    if "dfa_max_transitions" in variant:
        assert counts["transition_cap"] > 0


def test_reference_state_machine_on_the_dfa(ev, schema):
    """The reference of test_sequence_reference (one event at a time, plain
    dicts) against the engine with every eligible rule on its DFA at once."""
    r = random.Random(4242)
    dfa_events = 0
    total = 0
    for trial in range(60):
        stages = [r.choice("abc") for _ in range(r.randint(2, 4))]
        maxspan = r.choice([None, 3, 10])
        events = []
        t = 0
        for i in range(r.randint(20, 200)):
            t += r.choice([0, 0, 1, 1, 2, 5])
            fields = {"cat": r.choice("abc"), "n": i}
            k = r.choice(["x", "y", "z", None])
            if k is not None:
                fields["k"] = k
            events.append(ev(fields["cat"], ts=t * S, **fields))
        q = "sequence by k" + (f" with maxspan={maxspan}s" if maxspan else "") + " " + " ".join(
            f"[{c} where true]" for c in stages)
        want = reference(events, stages, None, None if maxspan is None else maxspan * S, lambda e: e.raw.get("k"))
        total += len(want)
        for batch in (1, 5, 64, 1000):
            got, _, n, _ = _run(schema, [Rule(id="r", name="r", query=q)], events, batch, EngineLimits(**ALWAYS))
            assert [x[1] for x in got] == want, (trial, q, batch)
            dfa_events += n
    assert total > 300
    assert dfa_events > 5000


def test_hot_threshold_promotes_then_lru_demotes(ev, schema):
    """A rule starts on the NFA, moves to its DFA once it has been fed
    dfa_hot_hits step hits, and goes back to the NFA (pending sequences kept)
    when another hot rule takes the only LRU slot."""
    q1 = "sequence by k [a where true] [b where true]"
    q2 = "sequence by k [b where true] [c where true]"
    rules = [Rule(id="r1", name="r1", query=q1), Rule(id="r2", name="r2", query=q2)]
    events = [ev("abc"[i % 3], ts=i * S, k="x" if i % 2 else "y", n=i) for i in range(600)]
    eng = DetectionEngine(schema, rules, strict="off", limits=EngineLimits(dfa_hot_hits=50, dfa_cache=1))
    m1, m2 = (cr.matcher for cr in eng.seq_rules)
    assert isinstance(m1, lazydfa.DfaSequenceMatcher)
    got = []
    eng.process_batch(events[:30])
    assert m1.table is None and m1.dfa_events == 0  # not hot yet
    for i in range(30, 600, 30):
        got += eng.process_batch(events[i:i + 30])
    assert eng.dfa_cache.counts["compiled"] >= 2 and eng.dfa_cache.counts["evicted_lru"] >= 1
    assert m1.dfa_events + m2.dfa_events > 0
    ref = DetectionEngine(schema, rules, strict="off", limits=EngineLimits(lazy_dfa=False))
    want = []
    ref.process_batch(events[:30])
    for i in range(30, 600, 30):
        want += ref.process_batch(events[i:i + 30])
    assert [(a.rule_id, [e.event_id for e in a.events]) for a in got] == \
        [(a.rule_id, [e.event_id for e in a.events]) for a in want]


@pytest.mark.parametrize("query, why", [
    ("sequence by k [a where true] [b where true] until [c where true]", "until"),
    ("sequence by k with maxspan=10s [a where true] ![c where true] [b where true]", "missing-event steps"),
    ("sequence [a where true] by k [b where true] by j", "different join keys per step"),
])
def test_what_stays_on_the_nfa(schema, query, why):
    from kestrel_core.eql import ir

    q = ir.compile_query(query, schema, strict="off")
    assert why in lazydfa.ineligible(q, EngineLimits())
    eng = DetectionEngine(schema, [Rule(id="r", name="r", query=query)], strict="off")
    assert type(eng.seq_rules[0].matcher).__name__ == "SequenceMatcher"


def test_an_enforcer_listening_keeps_the_nfa(ev, schema):
    """Sequence-armed blocking listens to the NFA's arm/disarm calls: a rule
    with a listener never runs on its DFA, and is demoted if it was on it."""
    q = "sequence by k [a where true] [b where true] [c where true]"
    eng = DetectionEngine(schema, [Rule(id="r", name="r", query=q)], strict="off", limits=EngineLimits(**ALWAYS))
    m = eng.seq_rules[0].matcher
    events = [ev("abc"[i % 3], ts=i * S, k="x", n=i) for i in range(30)]
    eng.process_batch(events[:9])
    assert m.table is not None
    seen = []
    eng.set_sequence_listener(lambda rid, p, armed, reason: seen.append((armed, reason)))
    eng.process_batch(events[9:])
    assert m.table is None
    assert ("armed" in {r for _, r in seen}) and ("complete" in {r for _, r in seen})


def test_explain_names_the_lazy_dfa_and_why_others_stay(ev, schema):
    from kestrel_core.eql.classify import explain

    rules = [Rule(id="simple", name="s", query='sequence by k [a where v == 1] [b where w : "x*"]'),
             Rule(id="until", name="u", query="sequence by k [a where true] [b where true] until [c where true]"),
             Rule(id="keys", name="k", query="sequence [a where true] by k [b where true] by j")]
    eng = DetectionEngine(schema, rules, strict="off", limits=EngineLimits(**ALWAYS))
    got = {x.rule_id: x for x in explain(eng)}
    assert got["simple"].strategy == "lazy-dfa" and "hot simple sequence" in got["simple"].reason
    assert got["until"].strategy == "nfa" and got["until"].reason == "NFA: until"
    assert got["keys"].strategy == "nfa" and "different join keys per step" in got["keys"].reason
    eng.process_batch([ev("a", ts=0, k="x", v=1, n=0), ev("b", ts=S, k="x", w="xy", n=1)])
    assert "on its DFA now" in {x.rule_id: x for x in explain(eng)}["simple"].reason


def test_profile_sets_the_dfa_thresholds(tmp_path):
    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run
    from kestrel_core.profile import ProfileError

    base = '[[sources]]\ntype = "jsonl"\npath = "-"\n[engine]\n'
    (tmp_path / "p.toml").write_text(base + "lazy_dfa = false\ndfa_hot_hits = 5\ndfa_cache = 3\n"
                                     "dfa_max_states = 9\ndfa_max_transitions = 99\n")
    profile, host = load_profile(tmp_path / "p.toml")
    lim = Run.build(profile, host).context.engine.limits
    assert (lim.lazy_dfa, lim.dfa_hot_hits, lim.dfa_cache, lim.dfa_max_states, lim.dfa_max_transitions) == \
        (False, 5, 3, 9, 99)
    (tmp_path / "p.toml").write_text(base + "dfa_hot_hits = -1\n")
    with pytest.raises(ProfileError) as exc:
        load_profile(tmp_path / "p.toml")
    assert (exc.value.line, exc.value.column) == (5, 16), str(exc.value)
