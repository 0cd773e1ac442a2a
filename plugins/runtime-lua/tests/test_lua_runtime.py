"""runtime-lua on real LuaJIT: every mode and transfer gives the host
runtime's alerts; budgets stop only the rule concerned; a Lua error never
ends the run; the rule set is one chunk with one function per category."""

from __future__ import annotations

import random

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.rules import Rule
from kestrel_core.testing import alerts_in_batches, random_events, rules_of, make_context, make_event, run_kestrel
from kestrel_runtime_lua import LuaPredicateRuntime
from kestrel_runtime_lua import codegen
from kestrel_runtime_lua.runtime import LuaSettings

QUERIES = [
    'process where process.name : ("bash", "sh*") and not process.args in ("-i", "-c")',
    'process where process.name == "curl" or process.pid > 100 and process.pid <= 200',
    'process where process.args == "-c" and not process.args != "-x"',
    'process where process.pid in (1, 2, 3, null) or process.name in ("a", "b")',
    'process where not process.pid in (1, 2, 3)',
    'process where process.name regex~ "SH.*" and length(process.name) > 2',
    'process where ?custom.flag == true or ?custom.n >= 2',
    'network where cidrMatch(destination.ip, "10.0.0.0/8") and destination.port != 22',
    'any where process.name == null or process.parent.name : "*sh"',
    'process where concat(process.name, process.pid) : "sh1*"',
    'process where process.name != "bash" and not process.name : "z*"',
    'sequence by process.parent.name [process where process.name == "curl"] [network where destination.port == 443]',
]


def _events(ctx, n=400, seed=11):
    return random_events(ctx, n, seed, parent_names=("bash", "cron"))


def _rules(queries=QUERIES):
    return rules_of(queries)


_alerts = alerts_in_batches


def _lua(**kw):
    return LuaPredicateRuntime(LuaSettings(**kw), None)


SETTINGS = [dict(), dict(transfer="tables"), dict(mode="strict"), dict(mode="strict", transfer="tables"),
            dict(deterministic=True)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_every_mode_and_transfer_gives_the_host_alerts(settings):
    ctx = make_context()
    events = _events(ctx)
    want = _alerts(DetectionEngine(ctx.schema, _rules()), events)
    eng = DetectionEngine(ctx.schema, _rules(), runtime=_lua(**settings))
    assert not eng.rule_errors
    assert "lua" in eng.rule_sets and not eng.host_units  # every unit runs in Lua
    got = _alerts(eng, events)
    assert got == want
    assert len({r for r, _ in want}) >= 10
    assert not eng.runtime_errors


def test_rule_set_is_one_chunk_with_a_function_per_category():
    ctx = make_context()
    eng = DetectionEngine(ctx.schema, _rules(), runtime=_lua())
    rs = eng.rule_sets["lua"]
    src = rs.source
    assert src.count("CAT[") == len(rs.program.categories) * 2 - 1 or src.count("] = function(G, m, out, n, EN)") == 3
    assert src.count("UF[") >= len(rs.program.units)
    assert "clock()" in src  # trusted, not deterministic: a CPU-time budget
    det = DetectionEngine(ctx.schema, _rules(), runtime=_lua(deterministic=True)).rule_sets["lua"]
    assert "clock()" not in det.source  # replay: budgets depend on work only
    strict = DetectionEngine(ctx.schema, _rules(), runtime=_lua(mode="strict")).rule_sets["lua"]
    assert strict.lua.eval("(jit.status())") is False and rs.lua.eval("(jit.status())") is True


def _runaway_events(ctx, n_items):
    evs = []
    for i in range(60):
        if i % 20 == 5:  # a few events with a huge argument list
            evs.append(make_event(ctx, "process", i, i + 1, process__name="bash",
                                  process__args=[f"a{k}" for k in range(n_items)]))
        else:
            evs.append(make_event(ctx, "process", i, i + 1, process__name=random.Random(i).choice(["bash", "sh"]),
                                  process__args=["-c"], process__pid=i))
    return evs


RUNAWAY = [Rule(id="runaway", name="runaway", query='process where process.args == "zzz"'),
           Rule(id="names", name="names", query='process where process.name : "ba*"'),
           Rule(id="pids", name="pids", query='process where process.pid > 10 and process.args == "-c"')]


@pytest.mark.parametrize("settings,reason", [
    (dict(mode="strict", instructions_per_event=2000, fuel_per_event=10**9), "budget_instructions"),
    (dict(fuel_per_event=500), "budget_fuel"),
    (dict(mode="strict", deterministic=True, instructions_per_event=2000, fuel_per_event=10**9), "budget_instructions"),
])
def test_a_runaway_rule_is_stopped_and_disabled_others_unchanged(settings, reason):
    ctx = make_context()
    events = _runaway_events(ctx, 20_000)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, RUNAWAY), events, batch=16) if a[0] != "runaway"]
    eng = DetectionEngine(ctx.schema, RUNAWAY, runtime=_lua(**settings))
    got = _alerts(eng, events, batch=16)
    assert got == want and want
    assert eng.disabled == {("runaway", reason): 1}
    assert any("runaway disabled" in e and reason in e for e in eng.runtime_errors)
    # the same budget on normal events stops nothing
    calm = DetectionEngine(ctx.schema, RUNAWAY, runtime=_lua(**settings))
    _alerts(calm, [e for e in events if len(e.fields.get(ctx.schema.resolve("process.args"), ())) < 5])
    assert not calm.disabled


def test_a_lua_error_never_ends_the_run(monkeypatch):
    ctx = make_context()
    events = _events(ctx)
    real = codegen._Unit.function

    def broken(self, root):
        src = real(self, root)
        if self.uid == 1:  # the unit of rule r1: index a nil value at run time
            src = src.replace("  scanned = 0", "  scanned = 0\n  local boom = nil; boom.x = 1", 1)
            assert "boom" in src
        return src

    monkeypatch.setattr(codegen._Unit, "function", broken)
    eng = DetectionEngine(ctx.schema, _rules(), runtime=_lua())
    got = _alerts(eng, events)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, _rules()), events) if a[0] != "r1"]
    assert got == want
    assert eng.disabled == {("r1", "error"): 1}


def test_memory_cap_is_enforced():
    from lupa.luajit21 import LuaMemoryError

    ctx = make_context()
    rs = DetectionEngine(ctx.schema, _rules(), runtime=_lua(mode="strict", memory_mb=8)).rule_sets["lua"]
    with pytest.raises(LuaMemoryError):
        rs.lua.execute("local t = {} for i = 1, 1e8 do t[i] = {i} end")


def test_probe_and_plugins_list():
    probe = LuaPredicateRuntime.probe()
    assert probe.available and "LuaJIT 2.1" in probe.reason
    proc = run_kestrel("plugins", "list")
    assert proc.returncode == 0
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("runtime") and " lua " in ln)
    assert "available" in line and "LuaJIT" in line


def test_bad_settings_are_located_profile_errors(tmp_path):
    prof = tmp_path / "p.toml"
    prof.write_text('[kestrel]\nplugins = ["runtime-lua"]\n[engine]\nruntime = "lua"\n'
                    '[engine.runtime_settings.lua]\nmode = "fast"\n')
    proc = run_kestrel("profile", "check", str(prof))
    assert proc.returncode == 2 and f"{prof}:6:" in proc.stderr and "mode must be one of" in proc.stderr


def test_a_pack_mixing_runtimes_replays_like_the_host(tmp_path):
    """The Linux pack with every other rule on lua and the rest on the host
    runtime: `kestrel replay` of the demo log gives the host's alert lines
    byte for byte (the header and footer differ only by the pack hash, which
    covers the rules' `runtime` keys)."""
    import json
    import shutil

    from kestrel_core.testing import kestrel_root

    root = kestrel_root()
    pack = tmp_path / "linux"
    shutil.copytree(root / "rules" / "linux", pack)
    files = sorted(pack.rglob("*.toml"))
    files = [f for f in files if f.name != "pack.toml"]
    for i, f in enumerate(files):
        text = f.read_text()
        runtime = "lua" if i % 2 else "host"
        f.write_text(text.replace("\nmode = ", f'\nruntime = "{runtime}"\nmode = ', 1))
    assert sum('runtime = "lua"' in f.read_text() for f in files) >= 25
    outs = {}
    for name, rules, runtime in (("host", root / "rules" / "linux", "host"), ("mixed", pack, "host"),
                                 ("mixed-lua", pack, "lua")):
        out = tmp_path / f"{name}.jsonl"
        proc = run_kestrel("replay", str(root / "demo" / "capture.klog"), "--rules", str(rules),
                           "--runtime", runtime, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        outs[name] = out.read_text().splitlines()
    host, mixed, mixed_lua = outs["host"], outs["mixed"], outs["mixed-lua"]
    assert mixed == mixed_lua
    assert mixed[1:-1] == host[1:-1] and len(host) > 60
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k not in ("rule_pack_hash", "packs")}  # noqa: E731
    assert strip(mixed[0]) == strip(host[0]) and strip(mixed[-1]) == strip(host[-1])
    # and the pack really is split between the two runtimes
    from kestrel_core.packs import load_packs
    from kestrel_core.runtimes import resolve

    ps = load_packs([pack])
    eng = DetectionEngine(make_context().schema, ps.rules, **resolve("host", ps.rules).engine_kwargs())
    lua_rules = {cr.id for cr in eng.rules if any(eng.units[u].rule_set == "lua" for u in cr.units.values())}
    assert not eng.rule_errors and 25 <= len(lua_rules) <= len(eng.rules) - 25
