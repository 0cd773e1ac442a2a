"""Predicate ABI v1 program -> one WebAssembly module (WAT text).

The module evaluates a whole packed batch (``kestrel_core.eql.abi.pack_batch``,
layout in docs/predicate-abi.md) in one call and never calls the host:

``run(batch, enabled, out) -> n``
    ``batch``: offset of the packed batch in linear memory; ``enabled``:
    ``u8[n_units]``, 1 for each program unit (by index in ``Program.units``)
    to evaluate; ``out``: the output area, ``i32[n_units]`` counts followed by
    the matching batch positions, unit after unit (a unit's positions are
    contiguous and ascending).  A count of -1 means the unit went over its
    fuel budget on some row (see below); its positions are discarded.
    Returns the number of positions written.

Shape of the code: ``run`` walks the batch's group directory and calls the
group's category function (``br_table`` on the category index).  A category
function loads its columns' base pointers once, then evaluates its units one
after the other, each over all the group's rows (unit-major: a unit's
positions come out contiguous and sorted, and the mutable global ``cur``
holds the unit being evaluated, which is how the host blames a trap on one
unit).

Two-valued code: a unit matches a row when its root is *true*, and with
``not`` as Elasticsearch's must_not ("true unless the operand is true") no
node above a leaf ever needs to tell false from null: ``T(and)`` is every
argument true, ``T(or)`` some argument true, ``T(not x)`` is ``not T(x)``.
So every node compiles to one i32 (1 true, 0 false-or-null) with
short-circuit ``and``/``or`` (arguments ordered cheapest first, list scans
last: Kleene and/or commute, so the order changes only the work), a node
shared within a unit is computed at most once per row (a local and a
"done" flag), and a host test's TRI byte is true when it equals 1.

Fuel (deterministic, per unit per event): one per expression node evaluated
on a row, one per list item scanned.  When a row's fuel exceeds
``fuel_per_event`` the unit stops for the batch (count -1).  It depends
neither on the batch size nor on time, so a replay stops the same rules on
every machine.  Wasmtime's own fuel (set per call
by the host) is a backstop far above this budget; it traps only code that
runs away outside this accounting.
"""

from __future__ import annotations

from kestrel_core.eql.abi import PACK_COLDIR, PACK_GROUP, SLOT_NUM, SLOT_STRLIST, TRI_TRUE, Expr, Program

GROUP_ENTRY_HEAD = PACK_GROUP.size  # 16
COLDIR = PACK_COLDIR.size  # 20
HDR_N_GROUPS = 12
HDR_KID_OFF = 28
HDR_CTAB_DIR = 32
HDR_GROUP_DIR = 36

_NUM_CMP = {"eq": "f64.eq", "ne": None, "lt": "f64.lt", "le": "f64.le", "gt": "f64.gt", "ge": "f64.ge"}
"""Comparisons true exactly when the ABI's is; ``ne`` must also exclude NaN (null)."""


def _f64(x: float) -> str:
    return f"(f64.const {float(x).hex()})"


def reachable(program: Program, root: int) -> list[int]:
    """Expr ids a root reaches, ascending (= topological: args < id)."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        e = stack.pop()
        if e not in seen:
            seen.add(e)
            stack.extend(program.exprs[e].args)
    return sorted(seen)


class WatGen:
    """WAT text of one program.  ``fuel_per_event`` is compiled in (a rule
    set is compiled per settings)."""

    def __init__(self, program: Program, fuel_per_event: int) -> None:
        self.p = program
        self.fuel = fuel_per_event
        self.nslots = len(program.slots)
        self.ntests = len(program.tests)
        self.entry = GROUP_ENTRY_HEAD + COLDIR * self.nslots + 4 * self.ntests
        self.unit_index = {u.id: i for i, u in enumerate(program.units)}
        self.helpers: list[str] = []
        self._helper_names: set[str] = set()
        self._locals: set[str] = set()
        self._weights: dict[int, tuple[int, int]] = {}
        self.static_cost = {u.id: len(reachable(program, u.root)) for u in program.units}

    # ------------------------------------------------------------------ module
    def module(self) -> str:
        p = self.p
        nu = len(p.units)
        cats = [ci for ci in range(len(p.categories)) if p.units_of(ci)]
        body = [self.category_function(ci) for ci in cats]
        kid_globals = "\n".join(f"  (global $k{i} (mut i32) (i32.const -1))" for i in range(len(p.consts)))
        load_kids = "\n".join(f"    (global.set $k{i} (i32.load offset={4 * i} (local.get $kid)))"
                              for i in range(len(p.consts)))
        # br_table over category indexes: categories without units (none today) skip
        labels = [f"$c{ci}" for ci in range(len(p.categories))]
        dispatch_blocks = ""
        if p.categories:
            inner = f"(br_table {' '.join(labels)} $skip (local.get $cat))"
            for ci in range(len(p.categories)):
                call = (f"(local.set $p (call $cat{ci} (local.get $b) (local.get $ge) (local.get $en) "
                        f"(local.get $out) (local.get $p)))" if ci in cats else "")
                inner = f"(block $c{ci} {inner})\n        {call}\n        (br $skip)"
            dispatch_blocks = f"(block $skip {inner})"
        return f"""(module
  (memory (export "mem") 1)
  (global $cur (export "cur") (mut i32) (i32.const -1))
{kid_globals}
  (func $any_eq (param $p i32) (param $lo i32) (param $hi i32) (param $k i32) (result i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_s (local.get $lo) (local.get $hi)))
        (if (i32.eq (i32.load (i32.add (local.get $p) (i32.shl (local.get $lo) (i32.const 2)))) (local.get $k))
          (then (return (i32.const 1))))
        (local.set $lo (i32.add (local.get $lo) (i32.const 1)))
        (br $l)))
    (i32.const 0))
{''.join(self.helpers_text())}
{''.join(body)}
  (func (export "run") (param $b i32) (param $en i32) (param $out i32) (result i32)
    (local $kid i32) (local $g i32) (local $ng i32) (local $ge i32) (local $cat i32) (local $p i32) (local $start i32)
    (global.set $cur (i32.const -1))
    (local.set $kid (i32.add (local.get $b) (i32.load offset={HDR_KID_OFF} (local.get $b))))
{load_kids}
    (memory.fill (local.get $out) (i32.const 0) (i32.const {4 * nu}))
    (local.set $start (i32.add (local.get $out) (i32.const {4 * nu})))
    (local.set $p (local.get $start))
    (local.set $ng (i32.load offset={HDR_N_GROUPS} (local.get $b)))
    (local.set $ge (i32.add (local.get $b) (i32.load offset={HDR_GROUP_DIR} (local.get $b))))
    (block $end
      (loop $groups
        (br_if $end (i32.ge_u (local.get $g) (local.get $ng)))
        (local.set $cat (i32.load (local.get $ge)))
        {dispatch_blocks}
        (local.set $ge (i32.add (local.get $ge) (i32.const {self.entry})))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $groups)))
    (global.set $cur (i32.const -1))
    (i32.shr_u (i32.sub (local.get $p) (local.get $start)) (i32.const 2)))
)
"""

    def helpers_text(self) -> list[str]:
        return self.helpers

    # ------------------------------------------------------------------ categories
    def category_function(self, ci: int) -> str:
        p = self.p
        units = p.units_of(ci)
        slots = p.group_slots[ci]
        row_tests = p.group_row_tests[ci]
        locals_ = ["(local $m i32) (local $rows i32) (local $r i32) (local $unit_start i32) (local $dyn i32)",
                   "(local $lo i32) (local $hi i32) (local $id i32) (local $v f64) (local $t i32)"]
        prologue = ["    (local.set $m (i32.load offset=4 (local.get $ge)))",
                    "    (local.set $rows (i32.add (local.get $b) (i32.load offset=8 (local.get $ge))))"]
        for si in slots:
            slot = p.slots[si]
            ce = GROUP_ENTRY_HEAD + COLDIR * si
            locals_.append(f"(local $a{si} i32)")
            prologue.append(f"    (local.set $a{si} (i32.add (local.get $b) (i32.load offset={ce + 4} (local.get $ge))))")
            if slot.kind == SLOT_STRLIST:
                locals_.append(f"(local $i{si} i32)")
                prologue.append(f"    (local.set $i{si} (i32.add (local.get $b) (i32.load offset={ce + 8} (local.get $ge))))")
            if slot.tests:
                locals_.append(f"(local $c{si} i32) (local $ct{si} i32)")
                prologue.append(f"    (local.set $c{si} (i32.add (local.get $b) (i32.load offset={ce + 12} (local.get $ge))))")
                prologue.append(f"    (local.set $ct{si} (i32.add (i32.add (local.get $b) (i32.load offset={4 * si} "
                                f"(i32.add (local.get $b) (i32.load offset={HDR_CTAB_DIR} (local.get $b))))) (i32.const 8)))")
        for ti in row_tests:
            off = GROUP_ENTRY_HEAD + COLDIR * self.nslots + 4 * ti
            locals_.append(f"(local $rt{ti} i32)")
            prologue.append(f"    (local.set $rt{ti} (i32.add (local.get $b) (i32.load offset={off} (local.get $ge))))")
        self._locals = set()
        units_code = [self.unit_code(u, reachable(p, u.root)) for u in units]
        locals_.append("(local $val i32)")
        locals_.extend(f"(local {n} i32)" for n in sorted(self._locals))
        return (f"  (func $cat{ci} (param $b i32) (param $ge i32) (param $en i32) (param $out i32) (param $p i32) "
                f"(result i32)\n    " + "\n    ".join(locals_) + "\n" + "\n".join(prologue) + "\n"
                + "\n".join(units_code) + "\n    (local.get $p))\n")

    def unit_code(self, u, ids: list[int]) -> str:
        ui = self.unit_index[u.id]
        refs: dict[int, int] = {}
        for e in ids:
            for a in self.p.exprs[e].args:
                refs[a] = refs.get(a, 0) + 1
        shared = {e for e, n in refs.items() if n > 1}
        self._locals.update(f"$e{e}" for e in ids)
        self._locals.update(f"$d{e}" for e in shared)
        reset = "".join(f" (local.set $d{e} (i32.const 0))" for e in sorted(shared))
        value = self.node(u.root, shared)
        return f"""    ;; unit {u.id} (index {ui}): {len(ids)} expression nodes
    (if (i32.load8_u offset={ui} (local.get $en))
      (then
        (global.set $cur (i32.const {ui}))
        (local.set $unit_start (local.get $p))
        (block $stop
          (local.set $r (i32.const 0))
          (block $rows_done
            (loop $row
              (br_if $rows_done (i32.ge_u (local.get $r) (local.get $m)))
              (local.set $dyn (i32.const 0)){reset}
              (local.set $val {value})
              (br_if $stop (i32.gt_u (local.get $dyn) (i32.const {self.fuel})))
              (if (i32.and (local.get $val) (i32.const 1))
                (then
                  (i32.store (local.get $p) (i32.load (i32.add (local.get $rows) (i32.shl (local.get $r) (i32.const 2)))))
                  (local.set $p (i32.add (local.get $p) (i32.const 4)))))
              (local.set $r (i32.add (local.get $r) (i32.const 1)))
              (br $row)))
          (i32.store offset={4 * ui} (local.get $out) (i32.shr_u (i32.sub (local.get $p) (local.get $unit_start)) (i32.const 2)))
          (br 1))
        ;; over the fuel budget: drop this unit's positions, count -1
        (local.set $p (local.get $unit_start))
        (i32.store offset={4 * ui} (local.get $out) (i32.const -1))))
    ;; between units none is running: a trap there is the runtime's, not a unit's
    (global.set $cur (i32.const -1))"""

    def _weight(self, eid: int) -> tuple[int, int]:
        """Evaluation order of and/or arguments: list scans last, then by size
        (Kleene and/or commute, so the order changes only the work done)."""
        w = self._weights.get(eid)
        if w is None:
            e = self.p.exprs[eid]
            sub = [self._weight(a) for a in e.args]
            w = self._weights[eid] = (int(self._scans(e)) + sum(x[0] for x in sub), 1 + sum(x[1] for x in sub))
        return w

    def node(self, eid: int, shared: set[int]) -> str:
        """Code leaving the node's two-bit value; 1 fuel per node evaluated
        (a shared node is evaluated at most once per row)."""
        e = self.p.exprs[eid]
        code = f"(block (result i32) (local.set $dyn (i32.add (local.get $dyn) (i32.const 1))) {self.expr(e, shared)})"
        if eid in shared:
            return (f"(if (result i32) (local.get $d{eid}) (then (local.get $e{eid})) "
                    f"(else (local.set $d{eid} (i32.const 1)) (local.tee $e{eid} {code})))")
        return code

    def _scans(self, e: Expr) -> bool:
        return e.op in ("cmp", "in") and self.p.slots[e.slot].kind == SLOT_STRLIST

    # ------------------------------------------------------------------ expressions
    def _row4(self, base: str) -> str:
        return f"(i32.add (local.get {base}) (i32.shl (local.get $r) (i32.const 2)))"

    def _null(self, si: int) -> str:
        kind = self.p.slots[si].kind
        if kind == SLOT_NUM:
            v = f"(f64.load {self._row8(si)})"
            return f"(f64.ne {v} {v})"
        if kind == SLOT_STRLIST:
            a = self._row4(f"$a{si}")
            return f"(i32.eq (i32.load {a}) (i32.load offset=4 {a}))"
        return f"(i32.eqz (i32.load {self._row4(f'$a{si}')}))"

    def _row8(self, si: int) -> str:
        return f"(i32.add (local.get $a{si}) (i32.shl (local.get $r) (i32.const 3)))"

    def _list_prefix(self, si: int) -> str:
        """Load lo/hi of a strlist row and charge the items to the row's fuel."""
        a = self._row4(f"$a{si}")
        return (f"(local.set $lo (i32.load {a})) (local.set $hi (i32.load offset=4 {a})) "
                f"(local.set $dyn (i32.add (local.get $dyn) (i32.sub (local.get $hi) (local.get $lo))))")

    def expr(self, e: Expr, shared: set[int]) -> str:
        """i32 code: 1 when the node is *true* on row $r, else 0 (false and null alike)."""
        op = e.op
        if op in ("and", "or"):  # short-circuit: and stops at the first non-true argument, or at the first true
            stop, done = ("(i32.const 0)", "(i32.const 1)") if op == "and" else ("(i32.const 1)", "(i32.const 0)")
            parts = []
            for a in sorted(e.args, key=self._weight):
                arg = self.node(a, shared)
                cond = f"(i32.eqz {arg})" if op == "and" else arg
                parts.append(f"(drop (br_if $L{e.id} {stop} {cond}))")
            return f"(block $L{e.id} (result i32) {' '.join(parts)} {done})"
        if op == "not":  # must_not: true unless the operand is true
            return f"(i32.eqz {self.node(e.args[0], shared)})"
        if op == "const":
            return f"(i32.const {1 if e.value is True else 0})"
        if op == "test":
            t = self.p.tests[e.test]
            if t.slot < 0:
                byte = f"(i32.load8_u (i32.add (local.get $rt{t.index}) (local.get $r)))"
            else:
                nst = len(self.p.slots[t.slot].tests)
                cls = f"(i32.load {self._row4(f'$c{t.slot}')})"
                byte = (f"(i32.load8_u offset={t.position} (i32.add (local.get $ct{t.slot}) "
                        f"(i32.mul {cls} (i32.const {nst}))))")
            return f"(i32.eq {byte} (i32.const {TRI_TRUE}))"
        if op in ("is_null", "not_null"):
            n = self._null(e.slot)
            return n if op == "is_null" else f"(i32.eqz {n})"
        kind = self.p.slots[e.slot].kind
        if op == "cmp":
            if kind == SLOT_NUM:
                ins = _NUM_CMP[e.cmp]
                c = _f64(e.num)
                v = f"(f64.load {self._row8(e.slot)})"
                if ins:  # an ordered comparison is false on NaN (null)
                    return f"({ins} {v} {c})"
                return f"(block (result i32) (local.set $v {v}) (i32.and (f64.ne (local.get $v) {c}) "\
                       f"(f64.eq (local.get $v) (local.get $v))))"
            k = f"(global.get $k{e.kid})"
            if kind == SLOT_STRLIST:
                hit = f"(call $any_eq (local.get $i{e.slot}) (local.get $lo) (local.get $hi) {k})"
                if e.cmp == "eq":
                    return f"(block (result i32) {self._list_prefix(e.slot)} {hit})"
                return (f"(block (result i32) {self._list_prefix(e.slot)} "
                        f"(i32.and (i32.ne (local.get $lo) (local.get $hi)) (i32.eqz {hit})))")
            idv = f"(i32.load {self._row4(f'$a{e.slot}')})"
            if e.cmp == "eq":  # a constant's id is >= 1, or -1 when no row holds it
                return f"(i32.eq {idv} {k})"
            return (f"(block (result i32) (local.set $id {idv}) "
                    f"(i32.and (i32.ne (local.get $id) (i32.const 0)) (i32.ne (local.get $id) {k})))")
        if op == "in":  # true when the value is in the set (a null in the list only makes "not in" null)
            if kind == SLOT_NUM:
                hit = "(i32.const 0)"
                for x in e.nums:
                    hit = f"(i32.or {hit} (f64.eq (local.get $v) {_f64(x)}))"
                return f"(block (result i32) (local.set $v (f64.load {self._row8(e.slot)})) {hit})"
            if kind == SLOT_STRLIST:
                fn = self._in_helper(e)
                return (f"(block (result i32) {self._list_prefix(e.slot)} "
                        f"(call {fn} (local.get $i{e.slot}) (local.get $lo) (local.get $hi)))")
            hit = "(i32.const 0)"
            for k in e.kids:
                hit = f"(i32.or {hit} (i32.eq (local.get $id) (global.get $k{k})))"
            return f"(block (result i32) (local.set $id (i32.load {self._row4(f'$a{e.slot}')})) {hit})"
        raise ValueError(f"unknown expr op {op!r}")

    def _in_helper(self, e: Expr) -> str:
        """A function testing whether some item of a list row is in the expr's constant set."""
        name = f"$in{e.id}"
        if name in self._helper_names:
            return name
        self._helper_names.add(name)
        hit = "(i32.const 0)"
        for k in e.kids:
            hit = f"(i32.or {hit} (i32.eq (local.get $x) (global.get $k{k})))"
        self.helpers.append(f"""  (func {name} (param $p i32) (param $lo i32) (param $hi i32) (result i32) (local $x i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_s (local.get $lo) (local.get $hi)))
        (local.set $x (i32.load (i32.add (local.get $p) (i32.shl (local.get $lo) (i32.const 2)))))
        (if {hit} (then (return (i32.const 1))))
        (local.set $lo (i32.add (local.get $lo) (i32.const 1)))
        (br $l)))
    (i32.const 0))
""")
        return name
