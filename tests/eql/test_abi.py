"""Predicate ABI v1 (docs/predicate-abi.md): planning, batch building, the
packed layout, host rows, and the engine's handling of rule-set runtimes
(per-rule runtimes, unavailable runtimes, failures and budgets)."""

from __future__ import annotations

import random
import struct
import textwrap
from pathlib import Path

import pytest

from kestrel_core.eql import abi
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.interfaces import RuleSetResult
from kestrel_core.rules import Rule
from kestrel_core.runtime import Stats
from kestrel_core.runtimes import DISABLED_METRIC, publish_disabled
from kestrel_core.testing import make_context, make_event, run_kestrel

QUERIES = [
    'process where process.name : ("bash", "sh*") and not process.args in ("-i", "-c")',
    'process where process.name == "curl" or process.pid > 100 and process.pid <= 200',
    'process where process.args == "-c" and not process.args != "-x"',
    'process where process.pid in (1, 2, 3, null) or process.name in ("a", "b")',
    'process where not process.pid in (1, 2, 3, null)',
    'process where process.name regex~ "SH.*" and length(process.name) > 2',
    'process where ?custom.flag == true or ?custom.n >= 2',
    'network where cidrMatch(destination.ip, "10.0.0.0/8") and destination.port != 22',
    'any where process.name == null or process.parent.name : "*sh"',
    'process where concat(process.name, process.pid) : "sh1*"',
    'process where startsWith~(process.executable, "/TMP/") and process.args_count >= 1',
    'process where process.name != "bash" and not process.name : "z*"',
]


def _events(ctx, n=300, seed=7):
    rng = random.Random(seed)
    names = ["bash", "sh", "SH", "zsh", "curl", "a", "b", None, "shell"]
    out = []
    for i in range(n):
        cat = rng.choice(["process", "process", "network"])
        f = {}
        if rng.random() < 0.9:
            f["process__name"] = rng.choice(names)
        if rng.random() < 0.8:
            f["process__pid"] = rng.choice([1, 2, 5, 100, 150, 200, 250, 2**60])
        if rng.random() < 0.7:
            f["process__args"] = rng.choice([[], ["-c"], ["-x", "-c"], ["-i"], ["a", "b"]])
        if rng.random() < 0.5:
            f["process__parent__name"] = rng.choice(["bash", "cron", "fish"])
        if rng.random() < 0.5:
            f["process__executable"] = rng.choice(["/tmp/x", "/TMP/Y", "/usr/bin/z"])
            f["process__args_count"] = rng.choice([0, 1, 2])
        if rng.random() < 0.3:
            f["custom__flag"] = rng.choice([True, False, 1, "true"])
            f["custom__n"] = rng.choice([1, 2.0, "2", [1, 3]])
        if cat == "network":
            f["destination__ip"] = rng.choice(["10.1.2.3", "192.168.0.1", "::1"])
            f["destination__port"] = rng.choice([22, 443])
        out.append(make_event(ctx, cat, i, i + 1, **f))
    # values that do not fit their declared types: the host evaluates those rows
    out.append(make_event(ctx, "process", n, n + 1, process__name=5, process__pid="7"))
    out.append(make_event(ctx, "process", n + 1, n + 2, process__pid=True, process__args=["ok", 3]))
    out.append(make_event(ctx, "process", n + 2, n + 3, process__pid=float("nan")))
    return out


def _rules():
    return [Rule(id=f"r{i}", name=f"r{i}", query=q) for i, q in enumerate(QUERIES)]


def _alerts(engine, events, batch=64):
    got = []
    for i in range(0, len(events), batch):
        got += engine.process_batch(events[i:i + batch])
    got += engine.flush()
    return [(a.rule_id, [e.event_id for e in a.events]) for a in got]


def test_reference_runtime_matches_host_including_host_rows():
    ctx = make_context()
    events = _events(ctx)
    host = DetectionEngine(ctx.schema, _rules())
    ref = DetectionEngine(ctx.schema, _rules(), runtime=abi.ReferenceRuntime(None, None))
    assert not host.rule_errors and not ref.rule_errors
    want, got = _alerts(host, events), _alerts(ref, events)
    assert got == want
    assert len({r for r, _ in want}) >= 9, "the corpus must exercise most queries"
    assert ref.rule_sets["abi-ref"].host_rows_evaluated >= 3


def test_plan_native_leaves_and_tests():
    ctx = make_context()
    units = []
    from kestrel_core.eql.ir import compile_query

    for i, q in enumerate(QUERIES[:4]):
        iq = compile_query(q, ctx.schema)
        units.append(abi.AbiUnit(i, iq.steps[0].category, iq.nodes, iq.steps[0].pred))
    prog = abi.plan(units, ctx.schema)
    ops = {e.op for e in prog.exprs}
    assert {"cmp", "in", "test", "not", "and", "or"} <= ops
    kinds = {s.path: s.kind for s in prog.slots}
    assert kinds["process.name"] == "str" and kinds["process.args"] == "strlist" and kinds["process.pid"] == "num"
    # the wildcard is a host test of process.name; == "curl" is native
    name = next(s for s in prog.slots if s.path == "process.name")
    assert len(name.tests) == 1 and "curl" in prog.consts
    # deterministic: planning twice gives the same program
    assert abi.plan(units, ctx.schema).to_dict() == prog.to_dict()


def test_batch_interning_classes_and_packed_layout():
    ctx = make_context()
    rule = Rule(id="r", name="r", query='process where process.name : "sh*" or process.name == "zz" or '
                                        'process.args == "-c" or process.pid < 3 or process.executable : "/tmp/*"')
    eng = DetectionEngine(ctx.schema, [rule], runtime=abi.ReferenceRuntime(None, None))
    rs = eng.rule_sets["abi-ref"]
    evs = [make_event(ctx, "process", 1, 1, process__name="sh", process__args=["-c", "x"], process__pid=1),
           make_event(ctx, "process", 2, 2, process__name="bash", process__pid=9),
           make_event(ctx, "file", 3, 3, process__name="sh"),
           make_event(ctx, "process", 4, 4, process__name="SHELL", process__args=["x"])]
    b = rs.builder.build(evs)
    assert b.n == 4 and len(b.groups) == 1 and b.groups[0].rows == [0, 1, 3]
    prog = rs.program
    slot = {s.path: s.index for s in prog.slots}
    g = b.groups[0]
    names = g.columns[slot["process.name"]]
    assert [b.strings[i] for i in names.ids] == ["sh", "bash", "SHELL"]
    args = g.columns[slot["process.args"]]
    assert args.off == [0, 2, 2, 3] and b.strings[args.items[0]] == "-c"
    exe = g.columns[slot["process.executable"]]  # only a test reads it: no value column, no interning
    assert exe.ids is None and exe.cls is not None and not prog.slots[slot["process.executable"]].native
    pid = g.columns[slot["process.pid"]]
    assert pid.nums[:2] == [1.0, 9.0] and pid.nums[2] != pid.nums[2]  # NaN: null
    table = b.classes[slot["process.name"]]
    assert [table[c][0] for c in names.cls] == [abi.TRI_TRUE, abi.TRI_FALSE, abi.TRI_TRUE]  # : is case-insensitive
    assert b.kid[prog.consts.index("-c")] == args.items[0]
    # the packed form holds the same numbers where the doc says
    buf = abi.pack_batch(prog, b)
    magic, ver, n, ngroups, nconst, nslots, ntests, kid_off, ctab_dir, gdir = abi.PACK_HEADER.unpack_from(buf, 0)
    assert (magic, ver, n, ngroups, nslots) == (b"KPB1", 1, 4, 1, len(prog.slots))
    assert list(struct.unpack_from(f"<{nconst}i", buf, kid_off)) == b.kid
    cat, m, rows_off, _ = abi.PACK_GROUP.unpack_from(buf, gdir)
    assert (cat, m) == (0, 3) and list(struct.unpack_from("<3i", buf, rows_off)) == [0, 1, 3]
    col = gdir + abi.PACK_GROUP.size + slot["process.pid"] * abi.PACK_COLDIR.size
    kind, a_off, _, cls_off, _ = abi.PACK_COLDIR.unpack_from(buf, col)
    assert kind == abi.SLOT_KIND_CODE["num"] and struct.unpack_from("<2d", buf, a_off) == (1.0, 9.0) and cls_off == 0
    col = gdir + abi.PACK_GROUP.size + slot["process.args"] * abi.PACK_COLDIR.size
    kind, a_off, b_off, _, _ = abi.PACK_COLDIR.unpack_from(buf, col)
    assert kind == 3 and list(struct.unpack_from("<4i", buf, a_off)) == [0, 2, 2, 3]
    ct = struct.unpack_from("<I", buf, ctab_dir + 4 * slot["process.name"])[0]
    ncls, k = struct.unpack_from("<II", buf, ct)
    assert k == 1 and list(buf[ct + 8: ct + 8 + ncls]) == [row[0] for row in table]


class _Failing(abi.ReferenceRuleSet):
    """Stops every unit whose rule set position is in ``stop`` (a budget)."""

    stop: set[int] = set()

    def evaluate(self, batch, enabled):
        res = super().evaluate(batch, enabled)
        for u in self.program.units:
            if u.id in self.stop and (enabled is None or u.id in enabled):
                res.hits.pop(u.id, None)
                res.failed[u.id] = "budget_fuel"
        return res


class _FailingRuntime(abi.ReferenceRuntime):
    PLUGIN_NAME = "failing"

    def compile_rule_set(self, units, schema, *, category_field="event.category"):
        rs = _Failing(abi.plan(units, schema), units, schema, category_field)
        rs.stop = {units[0].id}
        return rs


class _Raising(abi.ReferenceRuntime):
    PLUGIN_NAME = "raising"

    def compile_rule_set(self, units, schema, *, category_field="event.category"):
        rs = super().compile_rule_set(units, schema, category_field=category_field)

        def boom(batch, enabled):
            raise RuntimeError("trap")

        rs.evaluate = boom
        return rs


def test_budget_disables_only_that_rule_and_is_counted():
    ctx = make_context()
    events = _events(ctx)
    mixed = _rules()
    mixed[1] = Rule(id="r1", name="r1", query=QUERIES[1], runtime="failing")
    eng = DetectionEngine(ctx.schema, mixed, runtime={"host": abi.ReferenceRuntime(None, None),
                                                      "failing": _FailingRuntime(None, None)})
    assert not eng.rule_errors
    got = _alerts(eng, events)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, _rules()), events) if a[0] != "r1"]
    assert got == want
    assert eng.disabled == {("r1", "budget_fuel"): 1}
    assert any("r1 disabled" in e for e in eng.runtime_errors)
    stats = Stats()
    publish_disabled(stats, eng.disabled)
    metric = stats.extra["metrics"][DISABLED_METRIC]
    assert metric["type"] == "counter" and metric["values"] == {("r1", "budget_fuel"): 1}


def test_a_raising_runtime_never_ends_the_run():
    ctx = make_context()
    events = _events(ctx)
    mixed = [Rule(id=r.id, name=r.id, query=r.query, runtime="raising" if r.id in ("r0", "r2") else None)
             for r in _rules()]
    eng = DetectionEngine(ctx.schema, mixed, runtime={"host": abi.ReferenceRuntime(None, None),
                                                      "raising": _Raising(None, None)})
    got = _alerts(eng, events)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, _rules()), events) if a[0] not in ("r0", "r2")]
    assert got == want
    assert set(eng.disabled) == {("r0", "runtime_error"), ("r2", "runtime_error")}


def test_unavailable_runtime_is_an_error_or_falls_back():
    ctx = make_context()
    rules = [Rule(id="x", name="x", query=QUERIES[0], runtime="nosuch", file="p.toml", line=3,
                  runtime_pos=(7, 11), runtime_src='runtime = "nosuch"')]
    eng = DetectionEngine(ctx.schema, rules, unavailable_runtimes={"nosuch": "not installed"})
    (err,) = eng.rule_errors
    text = str(err)
    assert text.startswith("p.toml:7:11: error: predicate runtime 'nosuch' is not available: not installed")
    assert "hint:" in text and "runtime_fallback" in text
    eng = DetectionEngine(ctx.schema, rules, runtime_fallback=True)
    assert not eng.rule_errors and len(eng.rules) == 1 and "running it on the host" in eng.fallbacks[0]


def test_rules_check_locates_an_unavailable_runtime(tmp_path: Path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "r.toml").write_text(textwrap.dedent('''\
        [[rule]]
        id = "t.one"
        name = "one"
        runtime = "nosuch"
        query = 'process where process.name == "x"'
    '''))
    proc = run_kestrel("rules", "check", str(pack))
    assert proc.returncode == 2, proc.stderr
    assert f"{pack / 'r.toml'}:4:11: error: predicate runtime 'nosuch' is not available" in proc.stderr
    assert "hint: install its plugin" in proc.stderr


def test_eval_and_replay_take_a_runtime(tmp_path: Path):
    events = tmp_path / "e.jsonl"
    events.write_text('{"@timestamp": 1, "event": {"category": "process"}, "process": {"name": "bash"}}\n')
    q = 'process where process.name : "BA*"'
    host = run_kestrel("eval", q, "--input", str(events))
    ref = run_kestrel("eval", q, "--input", str(events), "--runtime", "abi-ref")
    assert host.returncode == ref.returncode == 0 and host.stdout == ref.stdout and '"bash"' in ref.stdout
    bad = run_kestrel("eval", q, "--input", str(events), "--runtime", "nosuch")
    assert bad.returncode != 0 and "predicate runtime 'nosuch' is not available" in bad.stderr


def _profile(tmp_path: Path, fallback: str, runtime: str = "abi-ref") -> Path:
    pack = tmp_path / "pack"
    pack.mkdir(exist_ok=True)
    (pack / "r.toml").write_text(textwrap.dedent('''\
        [[rule]]
        id = "t.elsewhere"
        name = "elsewhere"
        runtime = "nosuch"
        query = 'process where process.name == "bash"'

        [[rule]]
        id = "t.default"
        name = "default"
        query = 'process where process.name : "BA*"'
    '''))
    (tmp_path / "e.jsonl").write_text(
        '{"@timestamp": 1, "event": {"category": "process"}, "process": {"name": "bash"}}\n')
    prof = tmp_path / "p.toml"
    prof.write_text(textwrap.dedent(f'''\
        [rules]
        paths = ["pack"]
        on_error = "skip"
        [engine]
        runtime = "{runtime}"
        runtime_fallback = "{fallback}"
        [[sources]]
        type = "jsonl"
        path = "e.jsonl"
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
    '''))
    return prof


@pytest.mark.parametrize("fallback", ["none", "host"])
def test_run_profile_runtime_and_fallback(tmp_path: Path, fallback: str):
    prof = _profile(tmp_path, fallback)
    proc = run_kestrel("run", "--profile", str(prof))
    assert proc.returncode == 0, proc.stderr
    alerts = (tmp_path / "alerts.jsonl").read_text()
    assert '"t.default"' in alerts  # the profile's default runtime (abi-ref) ran it
    if fallback == "host":
        assert '"t.elsewhere"' in alerts and "running it on the host runtime" in proc.stderr
    else:
        assert '"t.elsewhere"' not in alerts and "predicate runtime 'nosuch' is not available" in proc.stderr


def test_profile_rejects_bad_fallback(tmp_path: Path):
    prof = _profile(tmp_path, "sometimes")
    proc = run_kestrel("profile", "check", str(prof))
    assert proc.returncode == 2 and f"{prof}:6:" in proc.stderr and "runtime_fallback" in proc.stderr
