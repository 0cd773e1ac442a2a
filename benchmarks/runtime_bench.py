"""Predicate runtimes on the Linux pack: host vs lua (both transfers) vs wasm
(trusted, strict), engine in memory, events/s (median of several runs), and
where a Lua or Wasm batch's time goes (ABI batch build on the host, transfer,
LuaJIT or Wasm evaluation).

    .venv/bin/python benchmarks/runtime_bench.py [--events 200000] [--runs 5] [--batch 1024]

The events are the fleet stream of benchmarks/generate.py in the shape the
eBPF source records (benchmarks/pack_coverage.live_shape), normalized once
before timing; every runtime sees the same events in the same batches and
the alerts are compared (they must be identical).  Numbers for this machine
are in plugins/runtime-lua/README.md and plugins/runtime-wasm/README.md.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _events(n: int, seed: int):
    from benchmarks.generate import generate, strip_private
    from benchmarks.pack_coverage import live_shape
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    events = [norm.normalize(live_shape(strip_private(e)), "bench") for e in generate(n, seed=seed)]
    for i, e in enumerate(events, 1):
        e.event_id = i
    events.sort(key=lambda e: (e.ts_mono_ns, e.event_id))
    return schema, events


def _runtime(name: str):
    if name == "host":
        return None
    if name.startswith("wasm"):
        from kestrel_runtime_wasm import WasmPredicateRuntime, WasmSettings

        return WasmPredicateRuntime(WasmSettings(mode="strict" if name == "wasm-strict" else "trusted"), None)
    from kestrel_runtime_lua import LuaPredicateRuntime
    from kestrel_runtime_lua.runtime import LuaSettings

    mode, _, transfer = name.partition("/")
    return LuaPredicateRuntime(LuaSettings(mode="strict" if mode == "lua-strict" else "trusted",
                                           transfer=transfer or "ffi"), None)


def _run(schema, rules, events, name: str, batch: int):
    from kestrel_core.eql.engine import DetectionEngine

    engine = DetectionEngine(schema, rules, runtime=_runtime(name))
    assert not engine.rule_errors, engine.rule_errors[:3]
    gc.collect()
    t0 = time.perf_counter()
    alerts = []
    for i in range(0, len(events), batch):
        alerts += engine.process_batch(events[i:i + batch])
    alerts += engine.flush()
    dt = time.perf_counter() - t0
    return dt, [(a.rule_id, tuple(e.event_id for e in a.events)) for a in alerts], engine


def _breakdown(engine, events, batch: int) -> dict[str, float]:
    """Seconds per phase of the Lua rule set over every batch: batch build
    (host), transfer (pack or tables), LuaJIT evaluation (the call)."""
    import ctypes

    from kestrel_core.eql.abi import pack_batch

    rs = engine.rule_sets["lua"]
    enabled = frozenset(u.id for u in rs.program.units)
    t = {"build": 0.0, "transfer": 0.0, "lua": 0.0}
    for i in range(0, len(events), batch):
        evs = events[i:i + batch]
        a = time.perf_counter()
        b = rs.builder.build(evs)
        c = time.perf_counter()
        if rs.ffi:
            buf = pack_batch(rs.program, b, rs._packed)
            groups, n, K = rs._decode(ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value)
        else:
            groups, n, K = rs._tables(b)
        d = time.perf_counter()
        need = 2 * sum(len(g.rows) * rs._cats[g.category] for g in b.groups)
        rs._run(groups, n, K, rs._out_buffer(need), rs._enabled(enabled), rs.strict, 1000)
        e = time.perf_counter()
        t["build"] += c - a
        t["transfer"] += d - c
        t["lua"] += e - d
    return t


def _breakdown_wasm(engine, events, batch: int) -> dict[str, float]:
    """Seconds per phase of the Wasm rule set over every batch: batch build
    (host), pack + copy into linear memory, the one wasmtime call."""
    import ctypes

    from kestrel_core.eql.abi import pack_batch

    rs = engine.rule_sets["wasm"]
    t = {"build": 0.0, "transfer": 0.0, "wasm": 0.0}
    for i in range(0, len(events), batch):
        evs = events[i:i + batch]
        a = time.perf_counter()
        b = rs.builder.build(evs)
        c = time.perf_counter()
        buf = pack_batch(rs.program, b, rs._packed)
        off = (rs.nu + 7) & ~7
        out = (off + len(buf) + 7) & ~7
        cap = sum(len(g.rows) * len(rs.cat_units[g.category]) for g in b.groups)
        base = rs._ensure(out + 4 * rs.nu + 4 * cap + 8)
        ctypes.memmove(base + off, buf, len(buf))
        ctypes.memmove(base, b"\1" * rs.nu, rs.nu)
        d = time.perf_counter()
        rs.store.set_fuel(10**12)
        if rs.timed:
            rs.store.set_epoch_deadline(10**6)
        rs._call(off, 0, out)
        e = time.perf_counter()
        t["build"] += c - a
        t["transfer"] += d - c
        t["wasm"] += e - d
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--runtimes", default="host,lua/ffi,lua/tables,wasm,wasm-strict")
    a = ap.parse_args(argv)

    from kestrel_core.packs import load_packs

    packset = load_packs([ROOT / "rules" / "linux"])
    assert packset.ok, packset.errors
    rules = packset.rules
    print(f"generating {a.events:,} events ...", file=sys.stderr)
    schema, events = _events(a.events, a.seed)
    names = a.runtimes.split(",")
    results: dict[str, list[float]] = {n: [] for n in names}
    reference = None
    engines = {}
    for r in range(a.runs):
        for name in names:  # interleaved, so drift on a shared machine hits every runtime alike
            dt, alerts, engine = _run(schema, rules, events, name, a.batch)
            if reference is None:
                reference = alerts
            assert alerts == reference, f"{name}: alerts differ from {names[0]}'s"
            results[name].append(dt)
            engines[name] = engine
            print(f"run {r + 1} {name}: {len(events) / dt:,.0f} ev/s", file=sys.stderr)
    host = statistics.median(results[names[0]])
    print(f"\nLinux pack ({len(rules)} rules), {len(events):,} events, batch {a.batch}, "
          f"median of {a.runs} runs; alerts identical ({len(reference):,})\n")
    print("| runtime | events/s (median) | min-max ev/s | ratio to host | batch: build / transfer / LuaJIT or Wasm (s) |")
    print("|---|---|---|---|---|")
    for name in names:
        med = statistics.median(results[name])
        lo, hi = len(events) / max(results[name]), len(events) / min(results[name])
        split = ""
        if name.startswith("lua"):
            t = _breakdown(engines[name], events, a.batch)
            split = f"{t['build']:.2f} / {t['transfer']:.2f} / {t['lua']:.2f}"
        elif name.startswith("wasm"):
            t = _breakdown_wasm(engines[name], events, a.batch)
            split = f"{t['build']:.2f} / {t['transfer']:.2f} / {t['wasm']:.2f}"
        print(f"| {name} | {len(events) / med:,.0f} | {lo:,.0f}-{hi:,.0f} | {host / med:.2f}x | {split} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
