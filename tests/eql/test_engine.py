"""DetectionEngine: category dispatch, literal index equivalence, bad-rule
isolation, pipes, alert contents, runtimes."""

from __future__ import annotations

import random

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.event import Event
from kestrel_core.eql.index import RuleIndex
from kestrel_core.interfaces import CompiledPredicate, PredicateRuntime
from kestrel_core.rules import Rule


def rules(*queries, **kw):
    return [Rule(id=f"r{i}", name=f"R{i}", query=q, **kw) for i, q in enumerate(queries)]


def ids(alerts):
    return [(a.rule_id, tuple(e.raw["n"] for e in a.events)) for a in alerts]


def test_category_dispatch_and_any(schema, E):
    eng = DetectionEngine(schema, rules("process where true", "file where true", "any where true"))
    evs = [E(1, "process"), E(2, "file"), E(3, "network")]
    got = ids(eng.process_batch(evs))
    assert got == [("r0", (1,)), ("r2", (1,)), ("r1", (2,)), ("r2", (2,)), ("r2", (3,))]


def test_multi_valued_category(schema, ev):
    e = ev("process", n=1, event__category=["process", "file"])
    for direct_rules in (rules("file where true"), rules("file where true", "a where true", "b where true", "c where true", "d where true")):
        eng = DetectionEngine(schema, direct_rules)
        assert ids(eng.process_batch([e]))[:1] == [("r0", (1,))]


def test_bad_rule_is_isolated(schema, E):
    eng = DetectionEngine(schema, rules("process where (", "process where true", 'process where process.pid == "x"'), strict="error")
    assert [e.rule_id for e in eng.rule_errors] == ["r0", "r2"]
    assert "1:16" in str(eng.rule_errors[0])
    assert ids(eng.process_batch([E(1, "process")])) == [("r1", (1,))]


def test_unknown_runtime_is_a_rule_error(schema):
    eng = DetectionEngine(schema, [Rule(id="x", name="X", query="a where true", runtime="wasm")])
    assert "runtime 'wasm' is not available" in str(eng.rule_errors[0])


def test_disabled_rules_are_skipped(schema, E):
    eng = DetectionEngine(schema, [Rule(id="x", name="X", query="a where true", enabled=False)])
    assert eng.process_batch([E(1, "a")]) == []


def test_head_and_tail(schema, E):
    evs = [E(i, "a") for i in range(1, 8)]
    eng = DetectionEngine(schema, rules("a where true | head 2", "a where true | tail 2", "a where true | head 5 | tail 2"))
    out = []
    for i in range(0, 7, 3):
        out += eng.process_batch(evs[i : i + 3])
    assert [x for x in ids(out) if x[0] == "r0"] == [("r0", (1,)), ("r0", (2,))]
    assert not [x for x in ids(out) if x[0] != "r0"]
    flushed = ids(eng.flush())
    assert flushed == [("r1", (6,)), ("r1", (7,)), ("r2", (4,)), ("r2", (5,))]


def test_alert_contents(schema, ev):
    eng = DetectionEngine(schema, [Rule(id="x", name="X", query='process where process.name == "sh" and ?extra > 1',
                                        severity="high", tags=("t",), description="d")])
    e = ev("process", ts=5, n=1, process__name="sh", extra=2, other="z")
    (a,) = eng.process_batch([e])
    assert (a.rule_id, a.rule_name, a.severity, a.tags, a.description) == ("x", "X", "high", ("t",), "d")
    assert a.events == [e]
    assert a.fields == {"process.name": "sh", "extra": 2}
    assert a.ts_mono_ns == 5


def test_index_files_rules_under_necessary_literals(schema):
    from kestrel_core.eql.ir import compile_query

    qs = [
        'process where event.action == "exec" and process.name in ("a", "B")',
        'process where process.executable : ("/tmp/*", "*.sh", "*x*")',
        'process where process.name == "a" or process.command_line : "*y*"',
        "process where process.pid > 3",
        'process where not process.name == "a"',
    ]
    compiled = [compile_query(q, schema) for q in qs]
    idx = RuleIndex(schema, [(i, q, q.steps[0].pred, "process") for i, q in enumerate(compiled)])
    name = schema.resolve("process.name")
    assert idx.keys[0] == ((name, frozenset({("exact", "a"), ("exact", "b")})),)
    exe = schema.resolve("process.executable")
    assert idx.keys[1] == ((exe, frozenset({("prefix", "/tmp/"), ("suffix", ".sh"), ("contains", "x")})),)
    assert len(idx.keys[2]) == 2  # a disjunction over two fields
    assert idx.always["process"] == [3, 4]


def test_literal_table_positions_per_rule_with_repeated_values(schema, ev):
    """A string field several rules share: each distinct value is tested and
    looked up once per batch, and every rule still gets the sorted positions
    of exactly the events whose value hits one of its literals (also when
    several values lead to one rule, and when one value leads to several)."""
    from kestrel_core.eql.ir import compile_query

    qs = [
        'process where process.executable : ("/tmp/*", "*.sh")',
        'process where process.executable : "/usr/*"',
        'process where process.executable : ("*/x.sh", "/usr/bin/*")',
    ]
    compiled = [compile_query(q, schema) for q in qs]
    idx = RuleIndex(schema, [(i, q, q.steps[0].pred, "process") for i, q in enumerate(compiled)])
    (table,) = idx.tables["process"]
    assert table.group is not None  # the path under test
    values = ["/usr/lib/k.sh", "/tmp/a", "/usr/b", "/tmp/x.sh", "/tmp/a", "/opt/c", "/usr/bin/x.sh", "/usr/b", "/TMP/A", None, "/opt/c",
              "/tmp/x.sh", "/usr/bin/cc"]
    events = [ev("process", ts=i, process__executable=v) for i, v in enumerate(values)]
    want = {0: [0, 1, 3, 4, 6, 8, 11], 1: [0, 2, 6, 7, 12], 2: [3, 6, 11, 12]}
    for _ in range(2):  # a second batch: nothing kept from the first
        got = dict(idx.candidates("process", events))
        assert got == want
    assert dict(idx.candidates("process", events[5:6])) == {}


def _random_rules(r: random.Random) -> list[str]:
    names = ["sh", "bash", "curl", "Curl", "python3", "nc"]
    out = []
    for _ in range(40):
        kind = r.randrange(8)
        n1, n2 = r.sample(names, 2)
        if kind == 0:
            out.append(f'process where process.name == "{n1}"')
        elif kind == 1:
            out.append(f'process where process.name in ("{n1}", "{n2}") and process.pid > {r.randrange(5)}')
        elif kind == 2:
            out.append(f'process where process.name : "{n1[:2]}*" and process.args : "-{r.choice("abc")}"')
        elif kind == 3:
            out.append(f'process where process.command_line : ("*{n1}*", "{n2}*", "*{r.choice("xyz")}") or process.name like "{n2}"')
        elif kind == 4:
            out.append(f'process where not process.name in~ ("{n1}") and ?tag == "{r.choice("pq")}"')
        elif kind == 5:
            out.append(f'any where process.name like~ "{n1[0]}?*"')
        elif kind == 6:
            out.append(f"sequence by process.pid [process where process.name : \"{n1}\"] [process where process.args == \"-a\"]")
        else:
            out.append(f'process where startsWith~(process.executable, "/{r.choice("ut")}") and endsWith(process.name, "{n1[-1]}")')
    return out


def test_index_and_grouping_give_the_same_alerts_as_plain_evaluation(schema, ev):
    r = random.Random(11)
    qs = _random_rules(r)
    events = []
    for i in range(600):
        fields = dict(
            process__name=r.choice(["sh", "bash", "Bash", "curl", "CURL", "python3", "nc", None]),
            process__pid=r.randrange(6),
            process__args=r.sample(["-a", "-b", "-c", "-x"], r.randrange(3)),
            process__command_line=r.choice(["curl x", "sh -c y", "nothing", "python3 -z", "ncx"]),
            process__executable=r.choice(["/usr/bin/x", "/tmp/y", "/u", None]),
            tag=r.choice(["p", "q", None]),
        )
        events.append(ev(r.choice(["process", "process", "file"]), ts=i, n=i, **fields))

    def run(**kw):
        eng = DetectionEngine(schema, rules(*qs), **kw)
        assert not eng.rule_errors
        out = []
        for i in range(0, len(events), 64):
            out += eng.process_batch(events[i : i + 64])
        return ids(out + eng.flush()), eng

    plain, _ = run(use_index=False)
    indexed, eng = run()
    assert indexed == plain
    assert len(plain) > 100
    assert eng.matcher.index.tables  # the index was actually used


def test_custom_runtime_through_the_adapter(schema, E):
    class Everything(CompiledPredicate):
        def eval_batch(self, events):
            return [True for _ in events]

    class AllRuntime(PredicateRuntime):
        PLUGIN_NAME = "all"

        def __init__(self):
            super().__init__(None, None)

        def compile(self, predicate, schema):
            return Everything()

    eng = DetectionEngine(schema, [Rule(id="x", name="X", query="a where false", runtime="all")],
                          runtime={"all": AllRuntime()})
    assert ids(eng.process_batch([E(1, "a"), E(2, "b")])) == [("x", (1,)), ("x", (2,))]


def test_a_predicate_that_raises_disables_only_its_rule(schema, E):
    class Boom(CompiledPredicate):
        def eval_batch(self, events):
            raise RuntimeError("boom")

    class BoomRuntime(PredicateRuntime):
        PLUGIN_NAME = "boom"

        def __init__(self):
            super().__init__(None, None)

        def compile(self, predicate, schema):
            return Boom()

    from kestrel_core.eql.hostruntime import HostRuntime

    rs = [Rule(id="bad", name="B", query="a where true", runtime="boom"), Rule(id="good", name="G", query="a where true")]
    for extra in ([], [Rule(id=f"x{i}", name="X", query=f"b{i} where true") for i in range(5)]):
        eng = DetectionEngine(schema, rs + extra, runtime={"host": HostRuntime(), "boom": BoomRuntime()})
        assert ids(eng.process_batch([E(1, "a")])) == [("good", (1,))]
        assert "rule bad disabled" in eng.runtime_errors[0]
        assert ids(eng.process_batch([E(2, "a")])) == [("good", (2,))]


def test_fast_path_falls_back_on_badly_typed_events(schema, E):
    from kestrel_core.event import Event

    eng = DetectionEngine(schema, rules('process where process.name : "s*"'))
    pid = schema.resolve("process.name")
    bad = Event("process", {pid: 12}, 0, 0, event_id=1, raw={"n": 1})
    good = Event("process", {pid: "sh"}, 1, 1, event_id=2, raw={"n": 2})
    assert ids(eng.process_batch([bad, good])) == [("r0", (2,))]


def test_interest(schema):
    eng = DetectionEngine(schema, rules('process where process.name == "a"', "sequence [file where true] [network where ?x == 1]"))
    i = eng.interest()
    assert i.categories == {"process", "file", "network"} and not i.wants_all
    assert {"process.name", "x", "event.category"} <= i.fields
    assert DetectionEngine(schema, rules("any where true")).interest().wants_all


def test_strictness_warnings_collected(schema):
    eng = DetectionEngine(schema, rules('process where process.pid == "x"'))
    assert eng.rule_errors == [] and len(eng.warnings) == 1


@pytest.mark.parametrize("n_rules", [1, 6])
def test_empty_batches_and_flush(schema, n_rules):
    eng = DetectionEngine(schema, rules(*["a where true"] * n_rules))
    assert eng.process_batch([]) == []
    assert eng.flush() == []


def test_events_sharing_content_are_evaluated_once_with_the_same_alerts(schema, ev):
    """A source may mark events decoded to the same fields (apart from
    @timestamp) with one ``content`` object; the engine then evaluates each
    predicate once per distinct content and spreads the hits to every event
    carrying it.  Events may even share one fields dict whose @timestamp is
    stale.  Alerts (single events and sequences, each event with its own
    @timestamp) are those of plain evaluation; a rule that reads @timestamp
    turns the shortcut off and is evaluated on settled events."""
    r = random.Random(5)
    qs = _random_rules(r)
    ts_fid = schema.resolve("@timestamp")
    templates = []
    for _ in range(15):
        templates.append(ev(r.choice(["process", "file"]),
                            process__name=r.choice(["sh", "bash", "curl", "python3", "nc"]),
                            process__pid=r.randrange(4), process__args=r.sample(["-a", "-b", "-c"], r.randrange(3)),
                            process__command_line=r.choice(["curl x", "sh -c y", "python3 -z"]),
                            process__executable=r.choice(["/usr/bin/x", "/tmp/y"]), tag=r.choice(["p", "q"])))
    picks = [r.randrange(len(templates)) for _ in range(800)]

    # a stale time: events sharing one of these dicts have their own in ts_wall_ns
    shared_fields = [{**t.fields, ts_fid: -1} for t in templates]

    def batches(shared: bool) -> list:
        out = []
        for i, k in enumerate(picks):
            t = templates[k]
            if shared:  # one dict for every event of a template, as the ebpf source does
                out.append(Event(t.category, shared_fields[k], i, i, event_id=i + 1, content=shared_fields[k]))
            else:
                fields = dict(t.fields)
                fields[ts_fid] = i
                out.append(Event(t.category, fields, i, i, event_id=i + 1))
        return [out[i:i + 100] for i in range(0, len(out), 100)]

    def run(queries: list[str], shared: bool) -> tuple[list, DetectionEngine, list[int]]:
        """(rule, event ids, each event's @timestamp) of every alert."""
        eng = DetectionEngine(schema, rules(*queries))
        seen: list[int] = []
        plain_hits = eng._unit_hits_of

        def spy(events):
            seen.append(len(events))
            return plain_hits(events)

        eng._unit_hits_of = spy
        out = []
        for b in batches(shared):
            out += eng.process_batch(b)
        return [(a.rule_id, tuple((e.event_id, e.fields[ts_fid]) for e in a.events)) for a in out + eng.flush()], \
            eng, seen

    plain, _, seen_plain = run(qs, False)
    memo, eng, seen_memo = run(qs, True)
    assert memo == plain and len(plain) > 50
    assert eng.by_content and seen_plain == [100] * 8 and max(seen_memo) <= len(templates)
    timed = qs + ['process where @timestamp > "1970-01-01T00:00:00.000000400Z"']  # 400 ns (a number would be epoch ms)
    plain_t, _, _ = run(timed, False)
    memo_t, eng_t, seen_t = run(timed, True)
    assert not eng_t.by_content and seen_t == [100] * 8
    assert memo_t == plain_t and len(plain_t) > len(plain)


def test_action_gates_skip_steps_without_changing_alerts(schema, ev):
    """A step that pins event.action to plain values is evaluated only on
    events with one of them (each batch grouped by action once); alerts are
    those of evaluating every candidate.  Wildcard actions are not gated;
    actions differing in case are handled as EQL does."""
    r = random.Random(3)
    actions = ["open", "exec", "Exec", "creation", "chmod", "connection_attempted"]
    qs = ['process where event.action == "exec" and process.name : "s*"',
          'process where event.action in ("exec", "fork") and process.args : "-a"',
          'process where event.action : "ex*" and process.name == "sh"',
          'process where event.action in~ ("EXEC") and process.name == "bash"',
          'file where (event.action == "creation" or event.action == "chmod") and process.name : ("sh", "nc")',
          'file where event.action == "open" or process.name == "curl"',
          'sequence by process.pid [process where event.action == "exec" and process.name == "sh"] '
          '[file where event.action == "creation"]',
          'any where event.action == "connection_attempted" and process.name != "curl"']
    events = []
    for i in range(900):
        action = r.choice(actions + [None, "EXEC"])
        events.append(ev(r.choice(["process", "file", "network"]), ts=i, n=i, event__action=action,
                         process__name=r.choice(["sh", "bash", "curl", "nc", "sshd"]),
                         process__pid=r.randrange(5), process__args=r.sample(["-a", "-b"], r.randrange(3))))

    def run(gated: bool):
        eng = DetectionEngine(schema, rules(*qs))
        assert not eng.rule_errors
        if not gated:
            eng.gates = [None] * len(eng.gates)
        out = []
        for i in range(0, len(events), 100):
            out += eng.process_batch(events[i:i + 100])
        return ids(out + eng.flush()), eng

    plain, _ = run(False)
    gated, eng = run(True)
    assert gated == plain and len(plain) > 50
    assert sum(g is not None for g in eng.gates) >= 5 and any(g is None for g in eng.gates)
