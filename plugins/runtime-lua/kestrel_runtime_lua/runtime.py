"""The ``lua`` predicate runtime: a rule set's units compiled to one Lua
chunk (:mod:`.codegen`) and evaluated by LuaJIT, one call per batch.

Modes (``[engine.runtime_settings.lua]``):

* ``trusted`` (default): JIT on; generous fuel and CPU-time budgets per
  unit and batch; a memory cap of ``memory_mb`` (default 1024).
* ``strict``: JIT off, so LuaJIT's count hook sees every instruction: an
  instruction budget per unit per event (``instructions_per_event``), fuel,
  CPU time, and a tight memory cap (default 64 MB).
* ``deterministic = true`` (``kestrel replay`` sets it): no CPU-time budget,
  so which rule a budget stops depends on the work done only.

A unit over a budget, or raising a Lua error, is reported in
``RuleSetResult.failed`` and the batch is evaluated again without it: the
other units' results are complete and unchanged.
"""

from __future__ import annotations

import ctypes
import re
from array import array
from typing import Any, Collection, Sequence

import attrs

from kestrel_core.eql.abi import ABI_VERSION, AbiRuleSet, AbiRuntime, AbiUnit, Batch, Program, pack_batch, plan
from kestrel_core.interfaces import Probe, RuleSetResult
from kestrel_core.validators import non_negative, one_of

from .codegen import FFI_DECODER, LuaGen

MODES = ("trusted", "strict")
TRANSFERS = ("ffi", "tables")
HOOK_EVERY = 1000
"""Instructions between two count-hook calls in strict mode."""
_STOP = re.compile(r"KSTOP (\w+) (-?\d+)")


@attrs.define(kw_only=True)
class LuaSettings:
    mode: str = attrs.field(default="trusted", validator=one_of(*MODES))
    """trusted: JIT on, generous budgets; strict: JIT off, instruction budget, tight memory cap."""
    deterministic: bool = False
    """No CPU-time budget (kestrel replay sets this): budgets depend on work only."""
    transfer: str = attrs.field(default="ffi", validator=one_of(*TRANSFERS))
    """How a batch reaches Lua: ffi (LuaJIT reads the packed batch in place) or tables (Lua tables built per batch)."""
    fuel_per_event: int = attrs.field(default=0, validator=non_negative)
    """Fuel (expression nodes evaluated + list items scanned) per unit per event; 0: the mode's default
    (trusted 100000, strict 2000)."""
    instructions_per_event: int = attrs.field(default=0, validator=non_negative)
    """Strict mode: Lua VM instructions per unit per event; 0: the default (20000)."""
    time_budget_ms: float = attrs.field(default=0.0, validator=non_negative)
    """CPU time per unit per batch (not in deterministic mode); 0: the mode's default (trusted 1000, strict 50)."""
    memory_mb: int = attrs.field(default=0, validator=non_negative)
    """Lua heap cap; 0: the mode's default (trusted 1024, strict 64)."""


class LuaPredicateRuntime(AbiRuntime):
    """EQL rule sets compiled to Lua (Predicate ABI v1) and run in LuaJIT."""

    PLUGIN_NAME = "lua"
    DESCRIPTION = "EQL rule sets compiled to Lua, evaluated per batch in LuaJIT (lupa)"
    Settings = LuaSettings
    ABI_VERSION = ABI_VERSION

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings if settings is not None else LuaSettings(), context)

    @classmethod
    def probe(cls) -> Probe:
        try:
            from lupa import luajit21
        except ImportError as exc:
            return Probe.missing(f"LuaJIT 2.1 is not available (lupa.luajit21: {exc}); pip install 'lupa>=2.8'")
        try:
            lua = luajit21.LuaRuntime(register_eval=False, register_builtins=False)
            version = lua.eval("jit.version")
            f = lua.execute(LuaGen(plan([], None), strict=False, timed=False, ticks_per_event=1).source(), 1, 1, 1)
            assert f["run"] is not None
        except Exception as exc:  # a broken install: say what failed
            return Probe.missing(f"LuaJIT failed to compile a chunk: {type(exc).__name__}: {exc}")
        return Probe.ok(f"{version}, JIT {'on' if lua.eval('(jit.status())') else 'off'}")

    def compile_rule_set(self, units: Sequence[AbiUnit], schema: Any, *,
                         category_field: str = "event.category") -> "LuaRuleSet":
        program = plan(units, schema)
        if program.version != self.ABI_VERSION:
            raise ValueError(f"Predicate ABI {program.version} is not the {self.ABI_VERSION} this runtime implements")
        return LuaRuleSet(program, units, schema, category_field, self.settings)


class LuaRuleSet(AbiRuleSet):
    def __init__(self, program: Program, units: Sequence[AbiUnit], schema: Any, category_field: str,
                 settings: LuaSettings) -> None:
        from lupa import luajit21

        super().__init__(program, units, schema, category_field)
        self.settings = s = settings
        strict = s.mode == "strict"
        self.strict = strict
        self.fuel = s.fuel_per_event or (2000 if strict else 100_000)
        self.instructions = s.instructions_per_event or 20_000
        time_ms = s.time_budget_ms or (50.0 if strict else 1000.0)
        memory = (s.memory_mb or (64 if strict else 1024)) * 2**20
        self.ffi = s.transfer == "ffi"
        self.lua = luajit21.LuaRuntime(register_eval=False, register_builtins=False, max_memory=memory)
        if strict:  # the count hook sees only interpreted code
            self.lua.execute("jit.off(); jit.flush()")
        ticks = max(1, -(-self.instructions // HOOK_EVERY))
        self.source = LuaGen(program, strict=strict, timed=not s.deterministic, ticks_per_event=ticks).source()
        entry = self.lua.execute(self.source, 0 if self.ffi else 1, self.fuel, time_ms / 1000.0)
        self._run = entry["run"]
        self.state = entry["state"]
        self._decode = self.lua.execute(FFI_DECODER) if self.ffi else None
        self._ptr = self.lua.eval('function(a) return require("ffi").cast("int32_t*", a) end')
        self._out = bytearray(0)
        self._out_ptr = None
        self._en_key: frozenset | None = None
        self._en = None
        self._all = frozenset(u.id for u in program.units)
        self._cats = [len(program.units_of(ci)) for ci in range(len(program.categories))]
        self._ct: dict[int, tuple[int, Any]] = {}
        self._packed: dict[int, tuple[int, bytes]] = {}

    # ------------------------------------------------------------------ transfer
    def _out_buffer(self, need: int) -> Any:
        if need > len(self._out) // 4 or self._out_ptr is None:
            self._out = bytearray(max(need, 1024) * 4 * 2)
            addr = ctypes.addressof((ctypes.c_char * len(self._out)).from_buffer(self._out))
            self._out_ptr = self._ptr(addr)
        return self._out_ptr

    def _enabled(self, enabled: frozenset) -> Any:
        if enabled != self._en_key:
            self._en_key = enabled
            self._en = self.lua.table_from({u: True for u in enabled})
        return self._en

    def _tables(self, batch: Batch) -> tuple[Any, int, Any]:
        """Option "tables": the batch as Lua tables (lupa converts each list in C)."""
        groups = []
        for g in batch.groups:
            G: dict[Any, Any] = {"rows": g.rows, "rt": {t: v for t, v in g.row_tests.items()}}
            for si, col in g.columns.items():
                c: dict[str, Any] = {}
                if col.ids is not None:
                    c["ids"] = col.ids
                if col.nums is not None:
                    c["nums"] = col.nums
                if col.off is not None:
                    c["off"], c["items"] = col.off, col.items
                if col.cls is not None:
                    c["cls"] = col.cls
                    c["ct"] = self._class_table(si, batch.classes[si])
                G[si] = c
            groups.append({"cat": g.category, "G": G, "m": len(g.rows)})
        tbl = self.lua.table_from(groups, recursive=True)
        return tbl, len(groups), self.lua.table_from(batch.kid)

    def _class_table(self, si: int, table: list[tuple[int, ...]]) -> Any:
        """A slot's class table as a Lua table, converted again only when it grew."""
        hit = self._ct.get(si)
        if hit is None or hit[0] != len(table):
            hit = self._ct[si] = (len(table), self.lua.table_from([x for row in table for x in row]))
        return hit[1]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, batch: Batch, enabled: Collection[int] | None) -> RuleSetResult:
        from lupa.luajit21 import LuaError  # each Lua backend module has its own exception classes

        live = set(self._all if enabled is None else enabled)
        failed: dict[int, str] = {}
        need = 2 * sum(len(g.rows) * self._cats[g.category] for g in batch.groups)
        out = self._out_buffer(need)
        if self.ffi:
            buf = pack_batch(self.program, batch, self._packed)
            addr = ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value
            groups, ngroups, K = self._decode(addr)
        else:
            groups, ngroups, K = self._tables(batch)
        while True:
            try:
                n = self._run(groups, ngroups, K, out, self._enabled(frozenset(live)), self.strict, HOOK_EVERY)
                break
            except (LuaError, MemoryError) as exc:
                uid, reason = self._blame(exc)
                if uid not in live:  # not charged to a unit: the runtime failed as a whole
                    raise
                failed[uid] = reason
                live.discard(uid)
        hits: dict[int, list[int]] = {}
        if n:
            arr = array("i")
            arr.frombytes(bytes(memoryview(self._out)[: 4 * n]))
            for k in range(0, n, 2):
                lst = hits.get(arr[k])
                if lst is None:
                    hits[arr[k]] = [arr[k + 1]]
                else:
                    lst.append(arr[k + 1])
        if self.ffi:
            del buf  # the packed batch stays alive until Lua is done with it
        return RuleSetResult(hits=hits, failed=failed)

    def _blame(self, exc: BaseException) -> tuple[int, str]:
        """(unit, reason) of a Lua error: a budget stop names its unit; other
        errors (an allocation over the cap, a bug) are charged to the unit
        that was running."""
        if self.strict:
            self.lua.execute("debug.sethook()")
        m = _STOP.search(str(exc))
        if m:
            return int(m.group(2)), m.group(1)
        cur = int(self.state.cur)
        return cur, "memory" if isinstance(exc, MemoryError) else "error"
