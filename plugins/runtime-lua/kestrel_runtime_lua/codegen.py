"""Predicate ABI program -> one Lua chunk for the whole rule set.

The chunk returns a table of entry points.  Per unit there is a function
``UF[u](G, m, out, n)`` evaluating the unit over the ``m`` rows of one
category group (columns in ``G``) and appending ``(unit, batch position)``
pairs to ``out`` (an int32 FFI array); per category a function ``CAT[c]``
calling the units of that category in turn.  Columns are read at ``[j + B]``:
B is 1 when they arrive as Lua tables (lupa builds 1-based arrays), 0 when
they are FFI pointers into the packed batch.

Every expression is generated in two polarities (``T``: it is true, ``F``:
it is false) so three-valued leaves become plain Lua booleans, as in the
host runtime; ``not`` is must_not (``T(not x)`` is ``not T(x)``); the
semantics are the table in docs/predicate-abi.md.

Budgets: every unit function counts its fuel (rows times the unit's node
count, plus the list items it actually scanned) and stops with ``KSTOP budget_fuel`` when
over; in strict mode a count hook stops it after its instruction budget
(``KSTOP budget_instructions``); outside deterministic mode a CPU-time
budget applies too.  ``ST.cur`` names the unit running, so an error or an
allocation failure is charged to it.
"""

from __future__ import annotations

from typing import Any

from kestrel_core.eql.abi import SLOT_ANY, SLOT_NUM, SLOT_STR, SLOT_STRLIST, Expr, Program

_LUA_CMP = {"eq": "==", "ne": "~=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def _num(x: float) -> str:
    if x == int(x) and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


class _Unit:
    """Code generation for one unit: the locals it needs and its T/F expressions."""

    def __init__(self, gen: "LuaGen", uid: int) -> None:
        self.gen = gen
        self.uid = uid
        self.prologue: list[str] = []
        self.names: dict[tuple, str] = {}
        self.lists: set[int] = set()
        self.nodes = 0

    def local(self, key: tuple, init: str) -> str:
        name = self.names.get(key)
        if name is None:
            name = f"{key[0]}{len(self.names)}"
            self.names[key] = name
            self.prologue.append(f"local {name} = {init}")
        return name

    # columns ------------------------------------------------------------
    def ids(self, s: int) -> str:
        return self.local(("I", s), f"G[{s}].ids")

    def nums(self, s: int) -> str:
        return self.local(("N", s), f"G[{s}].nums")

    def off(self, s: int) -> str:
        self.lists.add(s)
        return self.local(("O", s), f"G[{s}].off")

    def items(self, s: int) -> str:
        return self.local(("IT", s), f"G[{s}].items")

    def kid(self, k: int) -> str:
        return self.local(("K", k), f"K[{k} + B]")

    def idset(self, e: Expr) -> str:
        ks = ", ".join(str(k) for k in e.kids)
        return self.local(("S", e.id), f"idset(K, {{{ks}}})")

    def numset(self, e: Expr) -> str:
        body = ", ".join(f"[{_num(x)}] = true" for x in e.nums)
        return self.local(("NS", e.id), f"{{{body}}}")

    # expressions --------------------------------------------------------
    def null(self, slot: int, j: str = "j") -> str:
        kind = self.gen.program.slots[slot].kind
        if kind == SLOT_NUM:
            x = f"{self.nums(slot)}[{j}]"
            return f"({x} ~= {x})"
        if kind == SLOT_STRLIST:
            o = self.off(slot)
            return f"({o}[{j}] == {o}[{j} + 1])"
        return f"({self.ids(slot)}[{j}] == 0)"

    def T(self, eid: int) -> str:
        return self._code(eid, True)

    def F(self, eid: int) -> str:
        return self._code(eid, False)

    def _code(self, eid: int, pol: bool) -> str:
        e = self.gen.program.exprs[eid]
        self.nodes += 1
        op = e.op
        if op in ("and", "or"):
            joiner = " and " if (op == "and") == pol else " or "
            return "(" + joiner.join(self._code(a, pol) for a in e.args) + ")"
        if op == "not":  # must_not: true unless the operand is true (a null operand makes it true)
            inner = self._code(e.args[0], True)
            return f"(not {inner})" if pol else inner
        if op == "const":
            if e.value is None:
                return "false"
            return "true" if bool(e.value) == pol else "false"
        if op in ("is_null", "not_null"):
            isnull = self.null(e.slot)
            want_null = (op == "is_null") == pol
            return isnull if want_null else f"(not {isnull})"
        if op == "test":
            t = self.gen.program.tests[e.test]
            want = 1 if pol else 0
            if t.slot < 0:
                rt = self.local(("RT", t.index), f"G.rt[{t.index}]")
                return f"({rt}[j] == {want})"
            k = len(self.gen.program.slots[t.slot].tests)
            cls = self.local(("CL", t.slot), f"G[{t.slot}].cls")
            ct = self.local(("CT", t.slot), f"G[{t.slot}].ct")
            return f"({ct}[{cls}[j] * {k} + {t.position} + B] == {want})"
        kind = self.gen.program.slots[e.slot].kind
        if op == "cmp":
            if kind == SLOT_NUM:
                x = f"{self.nums(e.slot)}[j]"
                c = _num(e.num)
                if pol:
                    return f"({x} == {x} and {x} ~= {c})" if e.cmp == "ne" else f"({x} {_LUA_CMP[e.cmp]} {c})"
                return f"({x} == {x} and not ({x} {_LUA_CMP[e.cmp]} {c}))"
            k = self.kid(e.kid)
            eq = pol == (e.cmp == "eq")  # which test this polarity asks for: "equal" or "not equal (and not null)"
            if kind == SLOT_STR:
                v = f"{self.ids(e.slot)}[j]"
                return f"({v} == {k})" if eq else f"({v} ~= 0 and {v} ~= {k})"
            o, it = self.off(e.slot), self.items(e.slot)
            hit = f"anyeq({it}, {o}[j], {o}[j + 1], {k})"
            return hit if eq else f"({o}[j] < {o}[j + 1] and not {hit})"
        if op == "in":
            if kind == SLOT_NUM:
                x = f"{self.nums(e.slot)}[j]"
                s = self.numset(e)
                if pol:
                    return f"({s}[{x}] == true)"
                return "false" if e.has_null else f"({x} == {x} and {s}[{x}] == nil)"
            s = self.idset(e)
            if kind == SLOT_STR:
                v = f"{self.ids(e.slot)}[j]"
                if pol:
                    return f"({s}[{v}] == true)"
                return "false" if e.has_null else f"({v} ~= 0 and {s}[{v}] == nil)"
            o, it = self.off(e.slot), self.items(e.slot)
            hit = f"anyin({it}, {o}[j], {o}[j + 1], {s})"
            if pol:
                return hit
            return "false" if e.has_null else f"({o}[j] < {o}[j + 1] and not {hit})"
        raise ValueError(f"unknown ABI expr op {op!r}")

    def function(self, root: int) -> str:
        cond = self.T(root)
        g = self.gen
        lines = [f"UF[{self.uid}] = function(G, m, out, n)", f"  ST.cur = {self.uid}"]
        if g.strict:
            lines.append(f"  ST.limit = ST.ticks + m * {g.ticks_per_event} + 1")
        if g.timed:
            lines.append("  local t0 = clock()")
        lines += ["  local rows = G.rows"] + ["  " + p for p in self.prologue] + ["  scanned = 0"]
        lines.append("  for j = B, m - 1 + B do")
        lines += [f"    if {cond} then",
                  f"      out[n] = {self.uid}; out[n + 1] = rows[j]; n = n + 2",
                  "    end",
                  "  end",
                  f"  local fuel = scanned + m * {max(1, self.nodes)}",
                  f"  if fuel > m * FUEL then error('KSTOP budget_fuel {self.uid}', 0) end"]
        if g.timed:
            lines.append(f"  if clock() - t0 > TIME then error('KSTOP budget_time {self.uid}', 0) end")
        lines += ["  return n", "end"]
        return "\n".join(lines)


PRELUDE = """
local B, FUEL, TIME = ...
local clock = os.clock
local UF, CAT = {}, {}
local ST = {cur = -1, ticks = 0, limit = 0}
local K  -- this batch's constant value ids (set by run)

local scanned = 0  -- list items the running unit scanned: part of its fuel

local function anyeq(it, a, b, k)
  scanned = scanned + (b - a)
  for i = a + B, b - 1 + B do
    if it[i] == k then return true end
  end
  return false
end

local function anyin(it, a, b, s)
  scanned = scanned + (b - a)
  for i = a + B, b - 1 + B do
    if s[it[i]] then return true end
  end
  return false
end

local function idset(K, ks)
  local s = {}
  for i = 1, #ks do
    local v = K[ks[i] + B]
    if v > 0 then s[v] = true end
  end
  return s
end
"""

ENTRY = """
local function hook()
  local t = ST.ticks + 1
  ST.ticks = t
  if t > ST.limit then error('KSTOP budget_instructions ' .. ST.cur, 0) end
end

-- groups: array of {cat, G, m}; returns the number of int32 written to out
local function run(groups, ngroups, K_, out, EN, strict, every)
  K = K_
  if strict then
    ST.ticks, ST.limit = 0, 0
    debug.sethook(hook, "", every)
  end
  ST.cur = -1
  local n = 0
  for gi = 1, ngroups do
    local g = groups[gi]
    local f = CAT[g.cat]
    if f then n = f(g.G, g.m, out, n, EN) end
  end
  if strict then debug.sethook() end
  return n
end

return {run = run, state = ST, B = B}
"""


class LuaGen:
    def __init__(self, program: Program, *, strict: bool, timed: bool, ticks_per_event: int) -> None:
        self.program = program
        self.strict = strict
        self.timed = timed
        self.ticks_per_event = ticks_per_event

    def source(self) -> str:
        prog = self.program
        parts = [PRELUDE]
        for u in prog.units:
            parts.append(_Unit(self, u.id).function(u.root))
        for ci in range(len(prog.categories)):
            units = prog.units_of(ci)
            if not units:
                continue
            body = [f"CAT[{ci}] = function(G, m, out, n, EN)"]
            for u in units:
                body.append(f"  if EN[{u.id}] then n = UF[{u.id}](G, m, out, n) end")
            body += ["  return n", "end"]
            parts.append("\n".join(body))
        parts.append(ENTRY)
        return "\n\n".join(parts)


FFI_DECODER = """
local ffi = require("ffi")
local cast = ffi.cast
local B = 0

-- one packed batch (docs/predicate-abi.md, "Packed batch") -> group tables over pointers
return function(addr, G_cache)
  local base = cast("const uint8_t*", addr)
  local h = cast("const uint32_t*", base)
  local ngroups, nslots, ntests = h[3], h[5], h[6]
  local K = cast("const int32_t*", base + h[7])
  local ctdir = cast("const uint32_t*", base + h[8])
  local gdir = h[9]
  local entry = 16 + 20 * nslots + 4 * ntests
  local groups = {}
  for gi = 0, ngroups - 1 do
    local e = cast("const uint32_t*", base + gdir + gi * entry)
    local G = {rows = cast("const int32_t*", base + e[2]), rt = {}}
    for s = 0, nslots - 1 do
      local c = cast("const uint32_t*", base + gdir + gi * entry + 16 + 20 * s)
      local kind = c[0]
      if kind ~= 0 then
        local col = {}
        if c[1] == 0 then  -- test-only slot: no value column
        elseif kind == 2 then col.nums = cast("const double*", base + c[1])
        elseif kind == 3 then col.off = cast("const int32_t*", base + c[1]); col.items = cast("const int32_t*", base + c[2])
        else col.ids = cast("const int32_t*", base + c[1]) end
        if c[3] ~= 0 then
          col.cls = cast("const int32_t*", base + c[3])
          col.ct = cast("const uint8_t*", base + ctdir[s] + 8)
        end
        G[s] = col
      end
    end
    local rts = cast("const uint32_t*", base + gdir + gi * entry + 16 + 20 * nslots)
    for t = 0, ntests - 1 do
      if rts[t] ~= 0 then G.rt[t] = cast("const uint8_t*", base + rts[t]) end
    end
    groups[gi + 1] = {cat = e[0], G = G, m = e[1]}
  end
  return groups, ngroups, K
end
"""
