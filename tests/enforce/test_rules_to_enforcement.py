"""Units of the rules -> enforcement integration (no kernel needed): the
sequence engine's arm listener, the inline budget, inline decisions, the arm
tracker, the connect confinement plan."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import attrs
import pytest

from kestrel_core.eql.cost import check_rule, query_problems, regex_problem
from kestrel_core.eql import ir
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.packs import load_packs
from kestrel_core.rules import Rule
from kestrel_core.schema import Schema
from kestrel_core.testing import make_context, make_event

from kestrel_actions_enforce.arming import ArmTracker
from kestrel_actions_enforce.confine import confine_plan, connect_targets
from kestrel_actions_enforce.inline import InlinePolicy

SCHEMA = Schema.ecs()
S = 1_000_000_000


def rule(rid: str, query: str, mode: str = "enforce", actions: tuple[str, ...] = ("alert",)) -> Rule:
    return Rule(id=rid, name=rid, query=query, mode=mode, actions=actions)


SEQ = ('sequence by process.pid with maxspan=5s [file where file.path == "/t"] '
       '[process where process.name == "x"] [process where process.name == "y"]')


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, str, int]] = []

    def __call__(self, rule_id: str, partial: Any, armed: bool, reason: str) -> None:
        self.calls.append((rule_id, armed, reason, len(partial.events)))


@pytest.fixture
def seq_engine() -> tuple[DetectionEngine, Recorder, Any]:
    ctx = make_context(schema=SCHEMA)
    engine = DetectionEngine(SCHEMA, [rule("seq", SEQ)])
    rec = Recorder()
    engine.set_sequence_listener(rec)
    return engine, rec, ctx


def test_listener_arms_at_the_step_before_the_last_and_disarms_on_completion(seq_engine: Any) -> None:
    engine, rec, ctx = seq_engine
    engine.process_batch([make_event(ctx, "file", 1 * S, 1, file__path="/t", process__pid=7)])
    assert rec.calls == []  # two steps to go: nothing to arm yet
    engine.process_batch([make_event(ctx, "process", 2 * S, 2, process__name="x", process__pid=7)])
    assert rec.calls == [("seq", True, "armed", 2)]
    alerts = engine.process_batch([make_event(ctx, "process", 3 * S, 3, process__name="y", process__pid=7)])
    assert len(alerts) == 1
    assert rec.calls[-1] == ("seq", False, "complete", 3)


def test_listener_disarms_when_the_window_expires_without_an_event(seq_engine: Any) -> None:
    engine, rec, ctx = seq_engine
    engine.process_batch([make_event(ctx, "file", 1 * S, 1, file__path="/t", process__pid=7),
                          make_event(ctx, "process", 2 * S, 2, process__name="x", process__pid=7)])
    engine.expire(5 * S)  # still inside maxspan (5 s from the first event)
    assert rec.calls == [("seq", True, "armed", 2)]
    engine.expire(7 * S)
    assert rec.calls[-1] == ("seq", False, "maxspan", 2)


def test_listener_told_when_a_reload_withdraws_the_rule(seq_engine: Any) -> None:
    engine, rec, ctx = seq_engine
    engine.process_batch([make_event(ctx, "file", 1 * S, 1, file__path="/t", process__pid=7),
                          make_event(ctx, "process", 2 * S, 2, process__name="x", process__pid=7)])
    kept = DetectionEngine(SCHEMA, [rule("seq", SEQ)])
    kept.adopt_state(engine)  # unchanged rule: the armed sequence moves along, still armed
    assert rec.calls == [("seq", True, "armed", 2)] and kept.sequence_listener is rec
    gone = DetectionEngine(SCHEMA, [rule("other", 'process where process.name == "z"')])
    gone.adopt_state(kept)
    assert rec.calls[-1] == ("seq", False, "reload", 2)


def test_overwritten_partial_disarms_then_rearms() -> None:
    ctx = make_context(schema=SCHEMA)
    two = 'sequence by process.pid with maxspan=5s [file where file.path == "/t"] [process where true]'
    engine = DetectionEngine(SCHEMA, [rule("two", two)])
    rec = Recorder()
    engine.set_sequence_listener(rec)
    engine.process_batch([make_event(ctx, "file", 1 * S, 1, file__path="/t", process__pid=7),
                          make_event(ctx, "file", 2 * S, 2, file__path="/t", process__pid=7)])
    assert [(a, r) for _, a, r, _ in rec.calls] == [(True, "armed"), (False, "overwritten"), (True, "armed")]


# ---------------------------------------------------------------------- inline budget


@pytest.mark.parametrize("pattern,bad", [
    ("(a+)+b", True), ("(?:x|y*)*", True), (".*foo", True), ("^.+foo", True), (r"(a)\1", True),
    ("a" * 300, True), ("/usr/bin/[a-z]+", False), ("foo.*bar", False), ("^/tmp/[^/]{1,64}$", False),
])
def test_regex_budget(pattern: str, bad: bool) -> None:
    assert (regex_problem(pattern) is not None) == bad


def test_query_budget_steps_windows_and_wildcards() -> None:
    def problems(q: str) -> list[str]:
        return [why for why, _ in query_problems(ir.compile_query(q, SCHEMA, strict="off"))]

    steps = " ".join(f'[process where process.name == "p{i}"]' for i in range(6))
    assert any("6 steps" in p for p in problems(f"sequence by process.pid with maxspan=1s {steps}"))
    assert any("never ends" in p for p in problems('sequence [file where true] [process where true]'))
    assert problems('sequence [file where true] [process where true] until [process where true]') == []
    assert any("window over" in p for p in problems('sequence with maxspan=2h [file where true] [file where true]'))
    assert any("'*'" in p for p in problems('file where file.path : "/*/*/*/*/*"'))
    assert problems('process where process.executable : "/tmp/*"') == []


def test_pack_loader_reports_costly_enforce_rule_located_and_runs_it_in_shadow(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text('''[[rule]]
id = "costly"
name = "costly"
mode = "enforce"
actions = ["alert", "deny-exec"]
query = 'process where process.executable regex "(a+)+b"'

[[rule]]
id = "cheap"
name = "cheap"
mode = "enforce"
query = 'process where process.executable regex "/tmp/[a-z]+"'

[[rule]]
id = "costly-but-observe"
name = "observe"
query = 'process where process.executable regex "(a+)+b"'
''')
    ps = load_packs([tmp_path / "r.toml"])
    assert [(e.rule_id, e.line, e.column) for e in ps.errors] == [("costly", 6, 49)]  # the pattern's opening quote
    assert "nested quantifier" in str(ps.errors[0]) and "shadow mode" in str(ps.errors[0])
    assert {r.id: r.mode for r in ps.rules} == {"costly": "shadow", "cheap": "enforce", "costly-but-observe": "observe"}


def test_check_rule_ignores_queries_that_do_not_compile() -> None:
    assert check_rule(rule("bad", "process where ("), SCHEMA) == []


# ---------------------------------------------------------------------- inline decisions


class FakeEnforcer:
    def __init__(self) -> None:
        self.enabled = True
        self.records: list[tuple[str, str, str | None, str, dict]] = []
        self.arms: list[tuple[str, str, int]] = []

    def record(self, rule_id: str, action: str, path: str | None, outcome: str, **fields: Any) -> None:
        self.records.append((rule_id, action, path, outcome, fields))

    def arm(self, action: str, tgid: int, rule_id: str = "") -> str:
        self.arms.append(("arm", action, tgid))
        return "kill-at-exec"

    def disarm(self, action: str, tgid: int, rule_id: str = "", **fields: Any) -> None:
        self.arms.append(("disarm", action, tgid))


@attrs.define
class PermEvent:  # what the responder hands its policy (kestrel_sources_fanotify.fanotify.FileEvent)
    path: str
    kind: str
    pid: int = attrs.Factory(os.getpid)
    fd: int = -1
    ts_mono_ns: int = attrs.Factory(time.monotonic_ns)
    ts_wall_ns: int = attrs.Factory(time.time_ns)


INLINE_RULES = [
    rule("exec-tmp", 'process where process.executable : "/tmp/evil/*"', actions=("alert", "deny-exec")),
    rule("open-shadow", 'file where file.path == "/srv/secret"', mode="shadow", actions=("alert", "deny-open")),
    rule("observe-only", 'process where process.executable : "/tmp/*"', mode="observe", actions=("alert", "deny-exec")),
    rule("seq", 'sequence with maxspan=1s [file where true] [process where true]', actions=("alert", "deny-exec")),
]


def test_inline_policy_denies_enforce_matches_and_counts_shadow() -> None:
    enforcer, inbox = FakeEnforcer(), []
    policy = InlinePolicy(SCHEMA, enforcer, enforcing=True, submit=inbox.append)
    assert policy.load(INLINE_RULES) == 2 and policy.rule_ids == {"exec-tmp", "open-shadow"}
    assert policy.decide(PermEvent("/tmp/evil/x", "exec")) is False
    assert policy.decide(PermEvent("/tmp/fine", "exec")) is True
    assert policy.decide(PermEvent("/srv/secret", "open")) is True  # shadow: allowed, counted
    assert policy.decide(PermEvent("/tmp/evil/x", "open")) is True  # an open is not an exec
    assert [(r[0], r[1], r[3], r[4].get("via")) for r in enforcer.records] == [
        ("exec-tmp", "deny-exec", "denied", "inline"), ("open-shadow", "deny-open", "would-deny", "inline")]
    assert enforcer.records[0][4]["pid"] == os.getpid() and enforcer.records[1][4]["why"] == "shadow mode"
    assert [a.rule_id for a in inbox] == ["exec-tmp", "open-shadow"]
    assert "enforce: denied deny-exec /tmp/evil/x" in policy.raised_line(inbox[0])
    enforcer.enabled = False  # `kestrel enforce off`
    assert policy.decide(PermEvent("/tmp/evil/x", "exec")) is True
    assert enforcer.records[-1][3] == "allowed-enforcement-off"


def test_inline_policy_in_a_run_that_does_not_enforce_only_counts() -> None:
    enforcer = FakeEnforcer()
    policy = InlinePolicy(SCHEMA, enforcer, enforcing=False)
    policy.load(INLINE_RULES)
    assert policy.decide(PermEvent("/tmp/evil/x", "exec")) is True
    assert enforcer.records[-1][3:] == ("would-deny", enforcer.records[-1][4])
    assert enforcer.records[-1][4]["why"] == "simulated run"


def test_inline_policy_follows_a_reload() -> None:
    enforcer = FakeEnforcer()
    policy = InlinePolicy(SCHEMA, enforcer, enforcing=True)
    policy.load(INLINE_RULES)
    assert policy.load([r for r in INLINE_RULES if r.id != "exec-tmp"]) == 1
    assert policy.decide(PermEvent("/tmp/evil/x", "exec")) is True
    assert policy.load([]) == 0 and policy.engine is None


# ---------------------------------------------------------------------- arm tracker


def test_arm_tracker_refcounts_per_process_and_skips_shadow() -> None:
    ctx = make_context(schema=SCHEMA)
    two = 'sequence by process.pid with maxspan=5s [file where file.path == "/t"] [process where true]'
    rules = [rule("a", two, actions=("alert", "deny-exec")), rule("b", two, actions=("alert", "deny-exec")),
             rule("s", two, mode="shadow", actions=("alert", "deny-exec"))]
    enforcer = FakeEnforcer()
    tracker = ArmTracker(enforcer, SCHEMA, enforcing=True)
    assert tracker.load(rules) == 3
    engine = DetectionEngine(SCHEMA, rules)
    engine.set_sequence_listener(tracker)
    engine.process_batch([make_event(ctx, "file", 1 * S, 1, file__path="/t", process__pid=42)])
    assert enforcer.arms == [("arm", "deny-exec", 42)]  # two rules, one arm
    assert tracker.armed() == {(42, "deny-exec"): 2}
    assert [r[3] for r in enforcer.records] == ["would-arm"]  # the shadow rule
    engine.expire(10 * S)
    assert enforcer.arms == [("arm", "deny-exec", 42), ("disarm", "deny-exec", 42)]
    assert tracker.armed() == {}


# ---------------------------------------------------------------------- connect confinement


def test_connect_targets_from_literal_constraints() -> None:
    r = rule("c", 'network where destination.ip in ("10.0.0.1", "127.0.0.1") and destination.port == 443 '
                  'and event.type == "connection"', actions=("alert", "deny-connect"))
    assert connect_targets(r, SCHEMA) == ([("10.0.0.1", 443), ("127.0.0.1", 443)], None)
    any_port = rule("p", 'network where destination.ip == "10.1.1.1"', actions=("deny-connect",))
    assert connect_targets(any_port, SCHEMA) == ([("10.1.1.1", 0)], None)
    by_name = rule("n", 'network where destination.ip == "10.1.1.1" and process.name == "curl"')
    assert connect_targets(by_name, SCHEMA)[1] is not None
    assert connect_targets(rule("o", 'network where destination.port == 22'), SCHEMA)[1] == \
        "no literal destination.ip constraint"
    plan = confine_plan([r, any_port, by_name], SCHEMA, ["/sys/fs/cgroup/x"])
    assert plan == {("/sys/fs/cgroup/x", "10.0.0.1", 443): "c", ("/sys/fs/cgroup/x", "127.0.0.1", 443): "c",
                    ("/sys/fs/cgroup/x", "10.1.1.1", 0): "p"}
    shadow = attrs.evolve(r, mode="shadow")
    assert confine_plan([shadow], SCHEMA, ["/x"]) == {}


def test_example_profile_is_valid() -> None:
    import subprocess
    import sys

    profile = Path(__file__).resolve().parents[2] / "profiles" / "enforce-example.toml"
    res = subprocess.run([str(Path(sys.executable).with_name("kestrel")), "profile", "check", str(profile)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "action enforce" in res.stdout and "mode enforce" in res.stdout
