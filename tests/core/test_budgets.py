"""Cost accounting and budgets with automatic degradation (kestrel_core/budgets.py).

In-process: the engine's budget steps (prefilter gives the same alerts,
sample one batch in N, offline none, and back), the controller's decisions
with hysteresis on a driven clock.  End to end: a real ``kestrel run`` with a
rule whose regex over every file open blows its share: it is degraded with a
counted reason (Prometheus scrape, ``kestrel top``), the other rule keeps
alerting, and the degradation reverses once the opens stop."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import textwrap
import threading
import time

import attrs
import pytest

from kestrel_core.budgets import BudgetController
from kestrel_core.eql.engine import DetectionEngine, required_literal
from kestrel_core.event import Event
from kestrel_core.profile import BudgetsSection
from kestrel_core.rules import Rule
from kestrel_core.runtime import Stats
from kestrel_core.schema import Schema
from kestrel_core.testing import wait_for

from .test_run import free_port, kestrel, scrape

HEAVY = 'file where event.action == "open" and file.path regex ".*(secret|token)[0-9]+\\\\.key"'
CHEAP = 'process where process.name == "nc"'


def make_events(schema: Schema, docs: list[dict]) -> list[Event]:
    cat, act = schema.resolve("event.category"), schema.resolve("event.action")
    out = []
    for i, d in enumerate(docs):
        fields = {cat: [d["category"]], act: d.get("action", "open")}
        for path, value in d.get("fields", {}).items():
            fields[schema.resolve(path)] = value
        out.append(Event(category=d["category"], fields=fields, ts_mono_ns=i, ts_wall_ns=i, event_id=i + 1, raw={"n": i}))
    return out


def opens(schema: Schema, n: int, hit_every: int = 7) -> list[Event]:
    docs = []
    for i in range(n):
        path = f"/home/u/secret{i}.key" if i % hit_every == 0 else f"/var/lib/app/data/file{i}.dat"
        docs.append({"category": "file", "fields": {"file.path": path}})
        if i % 5 == 0:
            docs.append({"category": "process", "action": "exec", "fields": {"process.name": "nc"}})
    return make_events(schema, docs)


def alert_ids(alerts) -> list[tuple[str, int]]:
    return [(a.rule_id, a.events[0].raw["n"]) for a in alerts]


@pytest.mark.parametrize("kind, pattern, literal", [
    ("regex", ".*(secret|token)[0-9]+\\.key", ".key"),
    ("regex", "/etc/(passwd|shadow)", "/etc/"),
    ("regex", "abcd?ef", "abc"),        # the character before a quantifier is optional
    ("regex", "Abc+Cd", "abc"),         # one or more: kept, and compared in lower case
    ("regex", "abc|def", None),          # top-level alternation: nothing is required
    ("regex", ".*[a-z]+.*", None),
    ("wildcard", "*\\temp\\*.exe", "temp"),
    ("wildcard", "*.ps1", ".ps1"),
    ("wildcard", "*a*", None),           # too short to be worth a pass
])
def test_required_literal(kind, pattern, literal):
    assert required_literal(kind, pattern) == literal


@pytest.mark.parametrize("direct", [True, False])
def test_budget_steps_in_the_engine(direct):
    schema = Schema.ecs()
    rules = [Rule(id="heavy", name="H", query=HEAVY), Rule(id="cheap", name="C", query=CHEAP)]
    events = opens(schema, 3000)
    batches = [events[i:i + 100] for i in range(0, len(events), 100)]
    full = DetectionEngine(schema, rules, direct=direct)
    want = [alert_ids(full.process_batch(b)) for b in batches]
    assert sum(len(w) for w in want) > 100

    eng = DetectionEngine(schema, rules, direct=direct)
    assert eng.degrade("heavy", "prefilter")  # has a regex conjunct with a required literal
    unit = eng.units[eng.rules[0].units[0]]
    full_pred, seen = unit.pred.pred, []

    class Counting:  # what the rule's own predicate (the regex) is still run on
        def select_idx(self, evs):
            seen.append(len(evs))
            return full_pred.select_idx(evs)

        def select_idx_nocat(self, evs):
            seen.append(len(evs))
            return full_pred.select_idx_nocat(evs)

    unit.pred.pred = Counting()
    assert [alert_ids(eng.process_batch(b)) for b in batches] == want  # the same alerts, through the prefilter
    assert sum(seen) == 3000 // 7 + 1  # only the opens with ".key" in the path reach the regex
    assert eng.rule_costs()["heavy"][0] > 0
    assert eng.degrade("heavy", None) and unit.pred is full_pred  # its own predicate back

    eng = DetectionEngine(schema, rules, direct=direct)
    eng.sample_every = 4
    assert eng.degrade("heavy", "sample")
    got = [alert_ids(eng.process_batch(b)) for b in batches]
    for i, (g, w) in enumerate(zip(got, want)):
        sampled = (i + 1) % 4 == 0  # batch numbers start at 1
        assert [a for a in g if a[0] == "heavy"] == ([a for a in w if a[0] == "heavy"] if sampled else [])
        assert [a for a in g if a[0] == "cheap"] == [a for a in w if a[0] == "cheap"]  # the other rule: every batch

    assert eng.degrade("heavy", "offline")
    before = eng.rule_costs()["heavy"]
    assert all(a[0] == "cheap" for a in alert_ids(eng.process_batch(batches[0])))
    assert eng.rule_costs()["heavy"] == before  # not evaluated at all

    assert eng.degrade("heavy", None)
    assert alert_ids(eng.process_batch(batches[1])) == want[1]


def test_prefilter_does_not_apply_without_a_required_literal():
    schema = Schema.ecs()
    eng = DetectionEngine(schema, [Rule(id="r", name="R", query='file where file.path regex "(a|b)+.*"'),
                                   Rule(id="s", name="S", query=CHEAP)])
    assert not eng.degrade("r", "prefilter")
    assert eng.degrade("r", "sample")


# --------------------------------------------------------------------------- the controller, on a driven clock


@attrs.define
class FakeRule:
    id: str
    units: dict
    degraded: str | None = None


@attrs.define
class FakeUnit:
    category: str | None


class FakeEngine:
    """Rule costs the test sets; degrade() records the steps (prefilter never applies)."""

    def __init__(self) -> None:
        self.rules = [FakeRule("heavy", {0: 0}), FakeRule("cheap", {1: 1})]
        self.units = [FakeUnit("file"), FakeUnit("process")]
        self.costs = {"heavy": [0, 0], "cheap": [0, 0]}
        self.steps: list[tuple[str, str | None]] = []
        self.sample_every = 0

    def rule_costs(self):
        return {k: tuple(v) for k, v in self.costs.items()}

    def degrade(self, rid, step):
        if step == "prefilter":
            return False
        self.steps.append((rid, step))
        return True


def test_controller_degrades_in_order_and_restores_with_hysteresis(caplog):
    settings = BudgetsSection(rule_share=0.5, busy_floor=0.1, window_s=1.0, recover_windows=2)
    stats = Stats()
    clock = [0.0]
    ctl = BudgetController(settings, stats, clock=lambda: clock[0], cpu_clock=lambda: clock[0] * 0.9)
    eng = FakeEngine()
    ctl.tick(eng)  # adopts the engine, first snapshot
    assert eng.sample_every == settings.sample_every

    def window(heavy_ns: int, cheap_ns: int, file_events: int, busy_ns: int) -> None:
        eng.costs["heavy"][1] += heavy_ns
        eng.costs["cheap"][1] += cheap_ns
        stats.events_processed[("jsonl", "file")] += file_events
        stats.events_processed[("jsonl", "process")] += 10
        ctl.account(busy_ns)
        clock[0] += 1.0
        ctl.tick(eng)

    window(800_000_000, 50_000_000, 10_000, 900_000_000)  # heavy: 89% of a busy engine
    assert eng.steps == [("heavy", "sample")]  # prefilter did not apply: passed over
    assert ctl.degraded_total == {("heavy", "sample"): 1}
    assert "89% of the engine's time over the 50% rule_share budget" in ctl.history[-1]["reason"]
    window(400_000_000, 50_000_000, 10_000, 500_000_000)  # sampled, still over: next step
    assert eng.steps[-1] == ("heavy", "offline")
    window(0, 50_000_000, 10_000, 60_000_000)  # offline, but the opens go on: the estimate stays high
    window(0, 50_000_000, 10_000, 60_000_000)
    window(0, 50_000_000, 10_000, 60_000_000)
    assert ctl.step_of == {"heavy": "offline"}
    window(0, 1_000_000, 0, 2_000_000)  # the load stops: one calm window is not enough
    assert ctl.step_of == {"heavy": "offline"}
    window(0, 1_000_000, 0, 2_000_000)
    assert ctl.step_of == {"heavy": "sample"} and eng.steps[-1] == ("heavy", "sample")
    window(0, 1_000_000, 0, 2_000_000)
    window(0, 1_000_000, 0, 2_000_000)
    assert ctl.step_of == {} and eng.steps[-1] == ("heavy", None)
    assert ctl.restored_total == {("heavy", "offline"): 1, ("heavy", "sample"): 1}
    assert ctl.summary() == ["budgets: rule heavy degraded (offline 1, sample 1), restored 2 times, now fully evaluated"]
    ctl.publish()
    metrics = stats.extra["metrics"]
    assert metrics["kestrel_rule_degraded_total"]["values"]() == {("heavy", "sample"): 1, ("heavy", "offline"): 1}
    assert metrics["kestrel_rule_cost_seconds_total"]["values"]()[("heavy",)] == pytest.approx(1.2)


def test_engine_cpu_budget_degrades_the_costliest_rule_only():
    settings = BudgetsSection(engine_cpu=0.25, window_s=1.0)
    stats = Stats()
    clock = [0.0]
    ctl = BudgetController(settings, stats, clock=lambda: clock[0], cpu_clock=lambda: clock[0] * 0.6)
    eng = FakeEngine()
    ctl.tick(eng)
    eng.costs["heavy"][1] += 300_000_000
    eng.costs["cheap"][1] += 200_000_000
    stats.events_processed[("jsonl", "file")] += 1000
    ctl.account(600_000_000)
    clock[0] += 1.0
    ctl.tick(eng)
    assert eng.steps == [("heavy", "sample")]
    assert "60% of a CPU over the 25% engine_cpu budget" in ctl.history[-1]["reason"]


# --------------------------------------------------------------------------- end to end

SEGMENT = "/".join(f"dir{i:03d}x" * 3 for i in range(40))  # long paths: the regex is the run's main cost


def file_open(i: int) -> str:
    return json.dumps({"@timestamp": 1_700_000_000_000 + i, "event": {"category": "file", "action": "open"},
                       "file": {"path": f"/data/{SEGMENT}/f{i}.dat"}, "process": {"name": "app", "pid": 7}})


def nc(i: int) -> str:
    return json.dumps({"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process", "action": "exec"},
                       "process": {"name": "nc", "pid": 1000 + i}})


class Feeder(threading.Thread):
    """Writes to the run's stdin: a flood of file opens with an nc exec every
    200 events while ``load`` is set, one nc exec every 0.1 s otherwise."""

    def __init__(self, stdin) -> None:
        super().__init__(daemon=True)
        self.stdin, self.load, self.done, self.i = stdin, threading.Event(), threading.Event(), 0
        self.load.set()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                if self.load.is_set():
                    lines = [file_open(self.i + k) for k in range(200)] + [nc(self.i + 200)]
                    self.i += 201
                else:
                    lines = [nc(self.i)]
                    self.i += 1
                    self.done.wait(0.1)  # the trickle's pace, not a wait for a result
                self.stdin.write("\n".join(lines) + "\n")
                self.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass


def cheap_alerts(path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}") and '"cheap.nc"' in line)


def top(tmp_path) -> str:
    out = subprocess.run([sys.executable, "-m", "kestrel_core", "top", "--status", str(tmp_path / "status.json"),
                          "--once"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def top_row(tmp_path, rule: str) -> list[str] | None:
    if not (tmp_path / "status.json").exists():
        return None
    for line in top(tmp_path).splitlines():
        if line.startswith(rule + " "):
            return line.split()
    return None


def test_rule_over_its_budget_is_degraded_and_restored_in_a_real_run(tmp_path):
    port = free_port()
    (tmp_path / "rules.toml").write_text(textwrap.dedent(f'''
        [[rule]]
        id = "heavy.key"
        name = "key file opened"
        query = '{HEAVY}'

        [[rule]]
        id = "cheap.nc"
        name = "netcat started"
        query = '{CHEAP}'
    '''))
    (tmp_path / "p.toml").write_text(textwrap.dedent(f"""
        [kestrel]
        plugins = ["sink-prometheus"]
        [rules]
        paths = ["rules.toml"]
        [budgets]
        rule_share = 0.5
        busy_floor = 0.1
        window_s = 0.5
        recover_windows = 2
        degrade_order = ["prefilter", "sample", "offline"]
        [status]
        path = "status.json"
        interval_s = 0.2
        [bus]
        batch_size = 256
        flush_interval_ms = 20
        [[sources]]
        type = "jsonl"
        path = "-"
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
        [[sinks]]
        type = "prometheus"
        address = "127.0.0.1:{port}"
    """))
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"), stdin=subprocess.PIPE)
    feeder = Feeder(proc.stdin)
    feeder.start()
    try:
        def degraded():
            assert proc.poll() is None, proc.stderr.read()
            try:
                samples = scrape(port)
            except OSError:
                return None
            return {dict(k)["step"]: v for (n, k), v in samples.items()
                    if n == "kestrel_rule_degraded_total" and dict(k)["rule"] == "heavy.key"} or None

        steps = wait_for(degraded, timeout=60, what="the heavy rule degraded", interval=0.2)
        assert steps.get("prefilter") == 1  # the profile's first step first
        row = wait_for(lambda: (r := top_row(tmp_path, "heavy.key")) and r[1] != "-" and r, timeout=30,
                       what="kestrel top showing the step", interval=0.2)
        assert row[1] in ("prefilter", "sample", "offline")
        # the other rule keeps alerting while the heavy one is degraded
        seen = cheap_alerts(tmp_path / "alerts.jsonl")
        wait_for(lambda: cheap_alerts(tmp_path / "alerts.jsonl") >= seen + 5, timeout=30,
                 what="cheap.nc alerts while heavy.key is degraded", interval=0.1)
        feeder.load.clear()  # the opens stop; nc execs go on
        wait_for(lambda: (r := top_row(tmp_path, "heavy.key")) and r[1] == "-", timeout=60,
                 what="heavy.key restored to full evaluation", interval=0.2)
        samples = scrape(port)
        restored = sum(v for (n, k), v in samples.items()
                       if n == "kestrel_rule_restored_total" and dict(k)["rule"] == "heavy.key")
        assert restored == sum(v for (n, k), v in samples.items()
                               if n == "kestrel_rule_degraded_total" and dict(k)["rule"] == "heavy.key")
        assert samples[("kestrel_rule_cost_seconds_total", (("rule", "heavy.key"),))] > 0
        before = cheap_alerts(tmp_path / "alerts.jsonl")
        wait_for(lambda: cheap_alerts(tmp_path / "alerts.jsonl") > before, timeout=30,
                 what="cheap.nc alerts after the restore", interval=0.1)
    finally:
        feeder.done.set()
        feeder.join(timeout=10)
        _out, err = proc.communicate(timeout=120)  # closes stdin: the input ends
    assert proc.returncode == 0, err
    assert "rule heavy.key degraded to prefilter: " in err and "rule_share budget" in err
    assert "rule heavy.key restored from " in err
    assert "budgets: rule heavy.key degraded (prefilter 1" in err and "now fully evaluated" in err
    doc = json.loads((tmp_path / "status.json").read_text())
    assert doc["stopped"] is True
    assert [e["action"] for e in doc["budget_events"]][0] == "degraded"
    assert collections.Counter(e["action"] for e in doc["budget_events"])["restored"] >= 1


def test_a_hot_reload_keeps_each_rule_at_its_step():
    schema = Schema.ecs()
    rules = [Rule(id="heavy", name="H", query=HEAVY), Rule(id="cheap", name="C", query=CHEAP)]
    stats = Stats()
    clock = [0.0]
    ctl = BudgetController(BudgetsSection(rule_share=0.5, window_s=1.0), stats, clock=lambda: clock[0],
                           cpu_clock=lambda: 0.0)
    old = DetectionEngine(schema, rules)
    ctl.tick(old)
    assert ctl._down("heavy", "test") and ctl._down("heavy", "test")
    assert [cr.degraded for cr in old.rules] == ["sample", None]
    new = DetectionEngine(schema, rules + [Rule(id="extra", name="E", query=CHEAP)], reuse=old)
    ctl.tick(new)  # the run swapped engines between two batches
    assert ctl.engine is new and [cr.degraded for cr in new.rules] == ["sample", None, None]
    assert new.sample_every == ctl.settings.sample_every
