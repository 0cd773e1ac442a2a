"""The ``wasm`` predicate runtime: a rule set's units compiled to one
WebAssembly module (:mod:`.codegen`) and run by wasmtime, one call per batch.

Per batch: the host builds the ABI batch (``AbiRuleSet``: columns, interned
strings, host-precomputed test classes), packs it (``pack_batch``), copies
it into the instance's linear memory with one ``memmove``, writes the
enabled-unit mask, and calls ``run`` once through wasmtime's C API (the
ctypes call is prepared once: about 2-6 µs, against 18-55 µs for
``Func.__call__``).  The module reads the batch in place and writes the
matching positions back into memory; nothing calls back into Python.

Modes (``[engine.runtime_settings.wasm]``):

* ``trusted`` (default): fuel budget ``fuel_per_event`` 100000 per unit per
  event, a CPU-time limit of 1000 ms per batch call, memory cap 1024 MB,
  module cache on disk.
* ``strict``: fuel 2000 per unit per event, 50 ms per batch call, memory cap
  64 MB, a 256 KiB Wasm stack, no module read from the disk cache.
* ``deterministic = true`` (``kestrel replay`` sets it): no time limit (the
  engine is built without epoch interruption), so what stops a rule depends
  on the work done only.

Budgets and blame (one call evaluates many units):

* The fuel budget is counted by the generated code per unit and event
  (nodes evaluated + list items scanned): a unit over it stops itself and
  reports count -1; no trap, no re-run, exact blame (``budget_fuel``).
* Wasmtime's fuel (a backstop ~64x above the budgets), the epoch deadline
  (time) and every other trap abort the call.  The module keeps the index of
  the unit it is evaluating in the exported global ``cur``; the host charges
  the trap to that unit (``budget_fuel``, ``budget_time``, ``error``) and
  calls again without it, so every other unit's hits are complete.  A trap
  outside any unit is the runtime's failure (raised: the engine disables the
  runtime's rules, ``runtime_error``).
* Memory: a batch whose buffers need more linear memory than the cap is
  split in halves and evaluated piecewise; a single event that still does
  not fit fails its units with ``memory``.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import threading
import time
import weakref
from array import array
from pathlib import Path
from typing import Any, Collection, Sequence

import attrs

from kestrel_core.eql.abi import (
    ABI_VERSION, AbiRuleSet, AbiRuntime, AbiUnit, Batch, Program, pack_batch, plan,
)
from kestrel_core.interfaces import Probe, RuleSetResult
from kestrel_core.validators import non_negative, one_of

from . import cache
from .codegen import WatGen

MODES = ("trusted", "strict")
PAGE = 65536
WASM_FUEL_PER_UNIT = 64
"""Wasmtime fuel (about one per Wasm operator) allowed per unit of the generated code's own fuel."""
TICK_S = 0.005
"""Epoch tick period (the time limit's resolution)."""

_DEFAULTS = {"trusted": {"fuel": 100_000, "time_ms": 1000.0, "memory_mb": 1024},
             "strict": {"fuel": 2_000, "time_ms": 50.0, "memory_mb": 64}}


@attrs.define(kw_only=True)
class WasmSettings:
    mode: str = attrs.field(default="trusted", validator=one_of(*MODES))
    """trusted: generous budgets, disk cache; strict: tight fuel, time, memory and stack limits."""
    deterministic: bool = False
    """No time limit (kestrel replay sets this): budgets depend on the work done only."""
    fuel_per_event: int = attrs.field(default=0, validator=non_negative)
    """Fuel per unit per event (expression nodes evaluated + list items scanned); 0: the mode's
    default (trusted 100000, strict 2000)."""
    time_budget_ms: float = attrs.field(default=0.0, validator=non_negative)
    """Wall-clock limit of one batch call (not in deterministic mode); 0: the mode's default
    (trusted 1000, strict 50)."""
    memory_mb: int = attrs.field(default=0, validator=non_negative)
    """Linear memory cap of the rule set's store; 0: the mode's default (trusted 1024, strict 64)."""
    disk_cache: bool = True
    """Keep compiled modules on disk (trusted mode only; strict mode never loads native code from disk)."""
    cache_dir: str = ""
    """Directory of the disk cache; "": $XDG_CACHE_HOME/kestrel/wasm (~/.cache/kestrel/wasm)."""


def wasmtime_version() -> str:
    try:
        return importlib.metadata.version("wasmtime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------- engines and the epoch ticker


_ENGINES: dict[tuple[bool, bool], Any] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(timed: bool, strict: bool) -> tuple[Any, str]:
    """The shared wasmtime Engine of one configuration, and its cache key."""
    import wasmtime

    key = (timed, strict)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            cfg = wasmtime.Config()
            cfg.consume_fuel = True
            cfg.epoch_interruption = timed
            cfg.cranelift_opt_level = "speed"
            if strict:
                cfg.max_wasm_stack = 256 * 1024
            eng = _ENGINES[key] = wasmtime.Engine(cfg)
            if timed:
                _Ticker.add(eng)
    return eng, f"fuel=1,epoch={int(timed)},strict={int(strict)},opt=speed"


class _Ticker:
    """One daemon thread advancing the epoch of every timed engine each TICK_S
    (a wasm call releases the GIL, so it runs during calls)."""

    _engines: "weakref.WeakSet[Any]" = weakref.WeakSet()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def add(cls, engine: Any) -> None:
        with cls._lock:
            cls._engines.add(engine)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="kestrel-wasm-epoch", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        while True:
            time.sleep(TICK_S)
            for eng in list(cls._engines):
                eng.increment_epoch()


# --------------------------------------------------------------------------- runtime


class WasmPredicateRuntime(AbiRuntime):
    """EQL rule sets compiled to WebAssembly (Predicate ABI v1) and run in wasmtime."""

    PLUGIN_NAME = "wasm"
    DESCRIPTION = "EQL rule sets compiled to one WebAssembly module, evaluated per batch in wasmtime"
    Settings = WasmSettings
    ABI_VERSION = ABI_VERSION

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings if settings is not None else WasmSettings(), context)

    @classmethod
    def probe(cls) -> Probe:
        try:
            import wasmtime
        except ImportError as exc:
            return Probe.missing(f"wasmtime is not installed ({exc}); install kestrel-edr-runtime-wasm's dependencies")
        try:
            program = plan([], None)
            eng, _ = engine_for(False, True)
            mod = wasmtime.Module(eng, wasmtime.wat2wasm(WatGen(program, 1).module()))
            store = wasmtime.Store(eng)
            store.set_fuel(100_000)
            inst = wasmtime.Instance(store, mod, [])
            ex = inst.exports(store)
            buf = pack_batch(program, Batch(0, [""], [], [], {}, []))
            ex["mem"].write(store, buf, 64)
            n = ex["run"](store, 64, 0, 64 + len(buf) + 8)
            assert n == 0, n
        except Exception as exc:  # a broken install: say what failed
            return Probe.missing(f"wasmtime {wasmtime_version()} could not compile and run a test module: "
                                 f"{type(exc).__name__}: {exc}")
        return Probe.ok(f"wasmtime {wasmtime_version()}, test module ran")

    def compile_rule_set(self, units: Sequence[AbiUnit], schema: Any, *,
                         category_field: str = "event.category") -> "WasmRuleSet":
        program = plan(units, schema)
        if program.version != self.ABI_VERSION:
            raise ValueError(f"Predicate ABI {program.version} is not the {self.ABI_VERSION} this runtime implements")
        return WasmRuleSet(program, units, schema, category_field, self.settings)


class _OverMemoryCap(Exception):
    pass


class WasmRuleSet(AbiRuleSet):
    def __init__(self, program: Program, units: Sequence[AbiUnit], schema: Any, category_field: str,
                 settings: WasmSettings) -> None:
        import wasmtime
        from wasmtime import _ffi as ffi

        super().__init__(program, units, schema, category_field)
        self.settings = s = settings
        d = _DEFAULTS[s.mode]
        self.strict = s.mode == "strict"
        self.fuel = s.fuel_per_event or d["fuel"]
        self.timed = not s.deterministic
        self.time_ms = s.time_budget_ms or d["time_ms"]
        self.memory_cap = (s.memory_mb or d["memory_mb"]) * 2**20
        gen = WatGen(program, self.fuel)
        self.wat = gen.module()
        self.static_cost = gen.static_cost
        eng, ekey = engine_for(self.timed, self.strict)
        self.cache_key = cache.key_of(self.wat, ekey, wasmtime_version())
        disk = None
        if s.disk_cache and not self.strict:
            disk = Path(s.cache_dir) if s.cache_dir else cache.default_dir()
        self.module = cache.get_module(self.cache_key, eng,
                                       lambda: wasmtime.Module(eng, wasmtime.wat2wasm(self.wat)), disk_dir=disk)
        self.store = wasmtime.Store(eng)
        self.store.set_limits(memory_size=self.memory_cap, instances=1, tables=1, memories=1)
        self.instance = wasmtime.Instance(self.store, self.module, [])
        ex = self.instance.exports(self.store)
        self.mem, self._cur, run = ex["mem"], ex["cur"], ex["run"]
        # a prepared C-API call: Func.__call__ re-derives the signature and converts values on every call
        self._ffi = ffi
        self._params = (ffi.wasmtime_val_t * 3)()
        for i in range(3):
            self._params[i].kind = ffi.WASMTIME_I32.value
        self._results = (ffi.wasmtime_val_t * 1)()
        self._ctx = self.store._context()
        self._fref = ctypes.byref(run._func)
        self.nu = len(program.units)
        self.uindex = {u.id: i for i, u in enumerate(program.units)}
        self.cat_units = [[(self.uindex[u.id], u.id) for u in program.units_of(ci)]
                          for ci in range(len(program.categories))]
        self.cat_cost = [sum(WASM_FUEL_PER_UNIT * (self.static_cost[uid] + self.fuel + 8) for _, uid in us)
                         for us in self.cat_units]
        self._packed: dict[int, tuple[int, bytes]] = {}
        """pack_batch's cache of packed class tables (they only grow)."""
        self._en_key: frozenset | None = None
        self._en = b""
        self.calls = 0
        self.traps = 0
        self.splits = 0

    # ------------------------------------------------------------------ memory
    def _ensure(self, size: int) -> int:
        """Grow linear memory to at least ``size`` bytes; return its base address."""
        have = self.mem.data_len(self.store)
        if size > have:
            if size > self.memory_cap:
                raise _OverMemoryCap(size)
            try:
                self.mem.grow(self.store, -(-(size - have) // PAGE))
            except Exception as exc:  # the store's limiter refused
                raise _OverMemoryCap(size) from exc
        return ctypes.addressof(self.mem.data_ptr(self.store).contents)

    def _call(self, b: int, en: int, out: int) -> int:
        ffi = self._ffi
        p = self._params
        p[0].of.i32, p[1].of.i32, p[2].of.i32 = b, en, out
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        err = ffi.wasmtime_func_call(self._ctx, self._fref, p, 3, self._results, 1, ctypes.byref(trap))
        if err:
            import wasmtime

            raise wasmtime.WasmtimeError._from_ptr(err)
        if trap:
            import wasmtime

            raise wasmtime.Trap._from_ptr(trap)
        return self._results[0].of.i32

    # ------------------------------------------------------------------ evaluation
    def eval_units(self, events: Sequence[Any], enabled: Collection[int] | None = None) -> RuleSetResult:
        try:
            return super().eval_units(events, enabled)
        except _OverMemoryCap:
            live = [u.id for u in self.program.units if enabled is None or u.id in enabled]
            if len(events) <= 1:
                return RuleSetResult(failed={uid: "memory" for uid in live})
            self.splits += 1
            half = len(events) // 2
            a = self.eval_units(events[:half], live)
            b = self.eval_units(events[half:], [u for u in live if u not in a.failed])
            hits = {u: list(h) for u, h in a.hits.items() if u not in b.failed}
            for u, h in b.hits.items():
                hits.setdefault(u, []).extend(i + half for i in h)
            return RuleSetResult(hits=hits, failed={**a.failed, **b.failed})

    def evaluate(self, batch: Batch, enabled: Collection[int] | None) -> RuleSetResult:
        import wasmtime

        prog = self.program
        live = set(self.uindex) if enabled is None else {u for u in enabled if u in self.uindex}
        failed: dict[int, str] = {}
        buf = pack_batch(prog, batch, self._packed)
        nu = self.nu
        b_off = (nu + 7) & ~7 or 8
        out = (b_off + len(buf) + 7) & ~7
        cap = sum(len(g.rows) * len(self.cat_units[g.category]) for g in batch.groups)
        base = self._ensure(out + 4 * nu + 4 * cap + 8)
        ctypes.memmove(base + b_off, buf, len(buf))
        backstop = 1_000_000 + sum(len(g.rows) * self.cat_cost[g.category] for g in batch.groups)
        while True:
            key = frozenset(live)
            if key != self._en_key:
                mask = bytearray(nu)
                for uid in key:
                    mask[self.uindex[uid]] = 1
                self._en, self._en_key = bytes(mask), key
            ctypes.memmove(base, self._en, nu)
            self.store.set_fuel(backstop)
            if self.timed:
                self.store.set_epoch_deadline(max(2, int(self.time_ms / 1000 / TICK_S) + 1))
            self.calls += 1
            try:
                n = self._call(b_off, 0, out)
                break
            except wasmtime.Trap as trap:
                self.traps += 1
                ui = self._cur.value(self.store)
                if not 0 <= ui < nu or prog.units[ui].id not in live:  # not inside a unit: the runtime failed
                    raise
                uid = prog.units[ui].id
                code = trap.trap_code
                failed[uid] = ("budget_fuel" if code == wasmtime.TrapCode.OUT_OF_FUEL else
                               "budget_time" if code == wasmtime.TrapCode.INTERRUPT else "error")
                live.discard(uid)
                base = ctypes.addressof(self.mem.data_ptr(self.store).contents)
        counts = array("i", ctypes.string_at(base + out, 4 * nu))
        pos = array("i", ctypes.string_at(base + out + 4 * nu, 4 * n)) if n else array("i")
        hits: dict[int, list[int]] = {}
        k = 0
        for g in batch.groups:
            for ui, uid in self.cat_units[g.category]:
                c = counts[ui]
                if c > 0:
                    hits[uid] = pos[k:k + c].tolist()
                    k += c
                elif c < 0 and uid in live:
                    failed[uid] = "budget_fuel"
        assert k == n, (k, n)
        return RuleSetResult(hits=hits, failed=failed)
