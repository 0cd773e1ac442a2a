"""runtime-wasm on real wasmtime: every mode gives the host runtime's alerts;
one module per rule set and one call per batch, with no imports (nothing
calls back into Python); budgets and traps stop only the unit concerned; the
memory cap; the module cache (memory, disk, damaged entries); the probe."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import wasmtime

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.rules import Rule
from kestrel_core.testing import alerts_in_batches, random_events, rules_of, kestrel_root, make_context, make_event, run_kestrel
from kestrel_runtime_wasm import WasmPredicateRuntime, WasmSettings, cache, codegen

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
    'process where process.args in ("-x", "b", null) and process.pid >= 2 and process.pid < 250.5',
    'process where process.args != "-c" or process.name in ("zsh", "SH") and process.pid != 5',
    'process where process.parent.name != null and process.pid == null',
    'sequence by process.parent.name [process where process.name == "curl"] [network where destination.port == 443]',
]


def _events(ctx, n=400, seed=11):
    return random_events(ctx, n, seed, parent_names=("bash", "cron", None))


def _rules(queries=QUERIES):
    return rules_of(queries)


_alerts = alerts_in_batches


def _wasm(**kw):
    kw.setdefault("disk_cache", False)
    return WasmPredicateRuntime(WasmSettings(**kw), None)


SETTINGS = [dict(), dict(mode="strict"), dict(deterministic=True), dict(mode="strict", deterministic=True),
            dict(disk_cache=True)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_every_mode_gives_the_host_alerts(settings, tmp_path):
    if settings.get("disk_cache"):
        settings = dict(settings, cache_dir=str(tmp_path / "cache"))
    ctx = make_context()
    events = _events(ctx)
    want = _alerts(DetectionEngine(ctx.schema, _rules()), events)
    eng = DetectionEngine(ctx.schema, _rules(), runtime=_wasm(**settings))
    assert not eng.rule_errors
    assert "wasm" in eng.rule_sets and not eng.host_units  # every unit runs in Wasm
    got = _alerts(eng, events)
    assert got == want
    assert len({r for r, _ in want}) >= 12
    assert not eng.runtime_errors
    assert eng.rule_sets["wasm"].host_rows_evaluated >= 1  # the event with mistyped values went to the host


@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_batch_sizes_give_the_same_alerts(batch):
    ctx = make_context()
    events = _events(ctx, n=300, seed=5)
    want = _alerts(DetectionEngine(ctx.schema, _rules()), events, batch=batch)
    assert _alerts(DetectionEngine(ctx.schema, _rules(), runtime=_wasm()), events, batch=batch) == want


def test_one_module_without_imports_and_one_call_per_batch():
    ctx = make_context()
    events = _events(ctx)
    eng = DetectionEngine(ctx.schema, _rules(), runtime=_wasm())
    rs = eng.rule_sets["wasm"]
    assert len(rs.program.units) >= len(QUERIES)  # every step of every rule in one rule set
    assert rs.module.imports == []  # no host function exists for the module to call
    assert [e.name for e in rs.module.exports] == ["mem", "cur", "run"]
    assert rs.wat.count("(func $cat") == len([c for c in range(len(rs.program.categories))
                                              if rs.program.units_of(c)])
    _alerts(eng, events, batch=100)
    assert rs.calls == -(-len(events) // 100)


def test_the_batch_is_evaluated_from_linear_memory():
    """The packed batch is in the instance's memory after a call, byte for byte."""
    from kestrel_core.eql.abi import pack_batch

    ctx = make_context()
    events = _events(ctx, n=50)
    rs = DetectionEngine(ctx.schema, _rules(), runtime=_wasm()).rule_sets["wasm"]
    rs.eval_units(events)
    buf = pack_batch(rs.program, rs.builder.build(events))
    off = (rs.nu + 7) & ~7
    assert bytes(rs.mem.read(rs.store, off, off + len(buf))) == buf


# --------------------------------------------------------------------------- budgets and traps


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


@pytest.mark.parametrize("settings", [dict(mode="strict"), dict(fuel_per_event=500),
                                      dict(mode="strict", deterministic=True)])
@pytest.mark.parametrize("batch", [16, 64])
def test_a_runaway_rule_is_stopped_and_disabled_others_unchanged(settings, batch):
    ctx = make_context()
    events = _runaway_events(ctx, 20_000)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, RUNAWAY), events, batch=batch) if a[0] != "runaway"]
    eng = DetectionEngine(ctx.schema, RUNAWAY, runtime=_wasm(**settings))
    got = _alerts(eng, events, batch=batch)
    assert got == want and want
    assert eng.disabled == {("runaway", "budget_fuel"): 1}
    assert any("runaway disabled" in e and "budget_fuel" in e for e in eng.runtime_errors)
    assert eng.rule_sets["wasm"].traps == 0  # stopped by its own fuel count, without a trap or a re-run
    # the same budget on normal events stops nothing
    calm = DetectionEngine(ctx.schema, RUNAWAY, runtime=_wasm(**settings))
    _alerts(calm, [e for e in events if len(e.fields.get(ctx.schema.resolve("process.args"), ())) < 5])
    assert not calm.disabled


def test_the_fuel_budget_is_per_event_not_per_batch():
    """A list just under the budget passes in any batch; one just over stops the unit."""
    ctx = make_context()
    rule = [Rule(id="big", name="big", query='process where process.args == "zzz"')]
    rs = DetectionEngine(ctx.schema, rule, runtime=_wasm(fuel_per_event=1000)).rule_sets["wasm"]
    cost = max(rs.static_cost.values())
    for n_items, stops in ((1000 - cost, False), (1000 - cost + 1, True)):
        evs = [make_event(ctx, "process", i, i + 1, process__args=[f"x{k}" for k in range(n_items if i == 3 else 2)])
               for i in range(8)]
        eng = DetectionEngine(ctx.schema, rule, runtime=_wasm(fuel_per_event=1000))
        _alerts(eng, evs, batch=8)
        assert bool(eng.disabled) == stops, n_items


def _inject(monkeypatch, uid_of_rule: str, wat: str, rules):
    """Put ``wat`` at the start of the unit of one rule, inside its evaluation."""
    real = codegen.WatGen.unit_code
    target = {}

    def patched(self, u, ids):
        src = real(self, u, ids)
        if u.id == target.get("uid"):
            src = src.replace("(local.set $unit_start (local.get $p))", f"(local.set $unit_start (local.get $p)) {wat}", 1)
            assert wat in src
        return src

    ctx = make_context()
    probe = DetectionEngine(ctx.schema, rules, runtime=_wasm())
    target["uid"] = next(u.id for u in probe.rule_sets["wasm"].units
                         if any(r.id == uid_of_rule for r in probe.rules if u.id in r.units.values()))
    monkeypatch.setattr(codegen.WatGen, "unit_code", patched)
    return ctx


@pytest.mark.parametrize("wat,settings,reason", [
    ("(loop $spin (br $spin))", dict(mode="strict", deterministic=True), "budget_fuel"),  # wasmtime's fuel backstop
    ("(loop $spin (br $spin))", dict(time_budget_ms=30, fuel_per_event=10**9), "budget_time"),  # epoch deadline
    ("unreachable", dict(), "error"),
    ("(drop (i32.load (i32.const -8)))", dict(mode="strict"), "error"),  # out-of-bounds access
])
def test_a_trap_disables_only_the_unit_that_trapped(monkeypatch, wat, settings, reason):
    rules = _rules()
    ctx = _inject(monkeypatch, "r3", wat, rules)
    events = _events(ctx)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, _rules()), events) if a[0] != "r3"]
    eng = DetectionEngine(ctx.schema, _rules(), runtime=_wasm(**settings))
    got = _alerts(eng, events)
    assert got == want
    assert eng.disabled == {("r3", reason): 1}
    rs = eng.rule_sets["wasm"]
    assert rs.traps == 1 and rs.calls == -(-len(events) // 128) + 1  # one re-run, in the first batch only


@pytest.mark.parametrize("where", ["end of run", "between two units"])
def test_a_trap_outside_every_unit_is_the_runtime_failing_and_the_run_goes_on(monkeypatch, where):
    if where == "end of run":
        real = codegen.WatGen.module

        def patched(self):
            src = real(self)
            out = src.replace("(global.set $cur (i32.const -1))\n    (i32.shr_u",
                              "(global.set $cur (i32.const -1))\n    unreachable\n    (i32.shr_u", 1)
            assert out != src
            return out

        monkeypatch.setattr(codegen.WatGen, "module", patched)
    else:  # right after the first unit finished: no unit is to blame, certainly not the one before
        real_unit = codegen.WatGen.unit_code

        def patched_unit(self, u, ids):
            src = real_unit(self, u, ids)
            return src + "\n    unreachable" if u.id == self.p.units[0].id else src

        monkeypatch.setattr(codegen.WatGen, "unit_code", patched_unit)
    ctx = make_context()
    events = _events(ctx)
    rules = _rules() + [Rule(id="hosted", name="hosted", query='process where process.name == "curl"', runtime="host")]
    eng = DetectionEngine(ctx.schema, rules, runtime=_wasm())
    got = _alerts(eng, events)
    want = [a for a in _alerts(DetectionEngine(ctx.schema, rules), events) if a[0] == "hosted"]
    assert got == want and want  # the host rule is untouched
    assert {reason for _, reason in eng.disabled} == {"runtime_error"}
    assert len(eng.disabled) == len(_rules())
    assert eng.rule_sets["wasm"].traps == 1  # raised at once: no unit was blamed and re-run


def test_memory_cap_splits_a_batch_and_fails_an_event_that_cannot_fit():
    ctx = make_context()
    rules = [Rule(id="args", name="args", query='process where process.args == "a7"'),
             Rule(id="name", name="name", query='process where process.name == "bash"')]
    events = [make_event(ctx, "process", i, i + 1, process__name="bash" if i % 3 else "sh",
                         process__args=[f"a{(i + k) % 50}" for k in range(300)]) for i in range(1024)]
    want = _alerts(DetectionEngine(ctx.schema, rules), events, batch=1024)
    eng = DetectionEngine(ctx.schema, rules, runtime=_wasm(memory_mb=1))
    assert _alerts(eng, events, batch=1024) == want
    rs = eng.rule_sets["wasm"]
    assert rs.splits >= 1 and not eng.disabled
    assert rs.mem.data_len(rs.store) <= 2**20
    huge = [make_event(ctx, "process", 1, 1, process__name="bash", process__args=[f"x{k}" for k in range(300_000)])]
    eng = DetectionEngine(ctx.schema, rules, runtime=_wasm(memory_mb=1))
    _alerts(eng, huge)
    assert eng.disabled == {("args", "memory"): 1, ("name", "memory"): 1}


def test_strict_store_limits():
    ctx = make_context()
    rs = DetectionEngine(ctx.schema, _rules(), runtime=_wasm(mode="strict")).rule_sets["wasm"]
    assert rs.memory_cap == 64 * 2**20 and rs.fuel == 2000 and rs.time_ms == 50
    with pytest.raises(wasmtime.WasmtimeError):  # a second instance in the rule set's store
        wasmtime.Instance(rs.store, rs.module, [])
    with pytest.raises(wasmtime.WasmtimeError):  # linear memory past the cap
        rs.mem.grow(rs.store, 64 * 2**20 // 65536)
    rs.mem.grow(rs.store, 16)  # within it


# --------------------------------------------------------------------------- module cache


def test_module_cache_memory_disk_and_damaged_entries(tmp_path, caplog):
    ctx = make_context()
    d = tmp_path / "cache"
    rules = _rules()[:5]
    cache.clear_memory()
    before = dict(cache.stats)
    a = DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d))).rule_sets["wasm"]
    assert cache.stats["compiles"] == before["compiles"] + 1
    files = list(d.glob("*.cwasm"))
    assert [f.stem for f in files] == [a.cache_key]
    b = DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d))).rule_sets["wasm"]
    assert b.module is a.module and cache.stats["memory_hits"] == before["memory_hits"] + 1
    cache.clear_memory()
    c = DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d))).rule_sets["wasm"]
    assert cache.stats["disk_hits"] == before["disk_hits"] + 1 and c.module is not a.module
    # damage the entry: ignored with a warning, compiled again, rewritten, results unchanged
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[0].write_bytes(bytes(data))
    cache.clear_memory()
    events = _events(ctx, n=200)
    with caplog.at_level(logging.WARNING, logger="kestrel.runtime.wasm"):
        eng = DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d)))
    assert "damaged" in caplog.text and cache.stats["damaged"] == before["damaged"] + 1
    assert cache.stats["compiles"] == before["compiles"] + 2
    assert _alerts(eng, events) == _alerts(DetectionEngine(ctx.schema, rules), events)
    cache.clear_memory()
    DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d)))
    assert cache.stats["disk_hits"] == before["disk_hits"] + 2  # the rewritten entry is good
    # another rule set, another key; strict mode reads nothing from disk
    other = DetectionEngine(ctx.schema, _rules()[:4], runtime=_wasm(disk_cache=True, cache_dir=str(d))).rule_sets["wasm"]
    assert other.cache_key != a.cache_key
    cache.clear_memory()
    hits = cache.stats["disk_hits"]
    DetectionEngine(ctx.schema, rules, runtime=_wasm(mode="strict", disk_cache=True, cache_dir=str(d)))
    assert cache.stats["disk_hits"] == hits


def test_a_truncated_or_foreign_cache_entry_is_ignored(tmp_path, caplog):
    ctx = make_context()
    d = tmp_path / "cache"
    rules = _rules()[:3]
    cache.clear_memory()
    rs = DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d))).rule_sets["wasm"]
    path = d / f"{rs.cache_key}.cwasm"
    for damage in (path.read_bytes()[:100], b"", b"KWC1" + b"\0" * 32 + b"not a module"):
        path.write_bytes(damage)
        cache.clear_memory()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="kestrel.runtime.wasm"):
            eng = DetectionEngine(ctx.schema, rules, runtime=_wasm(disk_cache=True, cache_dir=str(d)))
        assert "damaged" in caplog.text and not eng.rule_errors


# --------------------------------------------------------------------------- mixing, probe, settings


def test_a_pack_mixing_host_and_wasm_replays_the_demo_identically(tmp_path):
    root = kestrel_root()
    pack = tmp_path / "linux"
    shutil.copytree(root / "rules" / "linux", pack)
    mixed = 0
    for i, f in enumerate(sorted(p for p in pack.rglob("*.toml") if p.name != "pack.toml")):
        if i % 2 == 0:
            text = f.read_text()
            f.write_text(text.replace("\nname = ", '\nruntime = "wasm"\nname = ', 1))
            mixed += 1
    assert mixed >= 25
    outs = {}
    for name, rules in (("host", root / "rules" / "linux"), ("mixed", pack)):
        out = tmp_path / f"{name}.jsonl"
        proc = run_kestrel("replay", str(root / "demo" / "capture.klog"), "--rules", str(rules), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        outs[name] = out.read_bytes().splitlines()
    host, mix = outs["host"], outs["mixed"]
    assert len(host) == len(mix) >= 50
    assert host[1:-1] == mix[1:-1]  # every alert byte for byte
    h_end, m_end = json.loads(host[-1]), json.loads(mix[-1])
    for k in ("rule_pack_hash",):  # the pack's files differ (the runtime keys), so its hash does
        h_end.pop(k), m_end.pop(k)
    assert h_end == m_end


def test_probe_and_plugins_list():
    probe = WasmPredicateRuntime.probe()
    assert probe.available and probe.reason.startswith("wasmtime 50.") and "test module ran" in probe.reason
    proc = run_kestrel("plugins", "list")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.strip().startswith("runtime") and " wasm " in ln)
    shown = " ".join(lines[i:i + 3])  # a long probe report wraps under its component
    assert " available" in shown and "wasmtime 50." in shown


def test_bad_settings_are_located_profile_errors(tmp_path):
    prof = tmp_path / "p.toml"
    prof.write_text('[kestrel]\nplugins = ["runtime-wasm"]\n[engine]\nruntime = "wasm"\n'
                    '[engine.runtime_settings.wasm]\nmode = "fast"\n')
    proc = run_kestrel("profile", "check", str(prof))
    assert proc.returncode == 2 and f"{prof}:6:" in proc.stderr and "mode must be one of" in proc.stderr


def test_eval_cli_with_the_wasm_runtime(tmp_path):
    ev = tmp_path / "e.jsonl"
    ev.write_text("\n".join(json.dumps(x) for x in [
        {"@timestamp": 1, "event": {"category": "process"}, "process": {"name": "nc", "pid": 4}},
        {"@timestamp": 2, "event": {"category": "process"}, "process": {"name": "ls", "pid": 5}},
    ]) + "\n")
    proc = run_kestrel("eval", 'process where process.name : "n*" and process.pid < 10', "--input", str(ev),
                       "--runtime", "wasm")
    assert proc.returncode == 0, proc.stderr
    assert '"nc"' in proc.stdout and '"ls"' not in proc.stdout


def test_the_memory_cache_keeps_the_most_recently_used_modules(monkeypatch):
    ctx = make_context()
    monkeypatch.setattr(cache, "MEMORY_ENTRIES", 2)
    cache.clear_memory()
    sets = [_rules()[:n] for n in (2, 3, 4)]
    keys = [DetectionEngine(ctx.schema, r, runtime=_wasm()).rule_sets["wasm"].cache_key for r in sets]
    assert list(cache._MEMORY) == keys[1:]  # the oldest went out
    compiles = cache.stats["compiles"]
    DetectionEngine(ctx.schema, sets[2], runtime=_wasm())
    assert cache.stats["compiles"] == compiles
    DetectionEngine(ctx.schema, sets[0], runtime=_wasm())
    assert cache.stats["compiles"] == compiles + 1 and list(cache._MEMORY) == [keys[2], keys[0]]
