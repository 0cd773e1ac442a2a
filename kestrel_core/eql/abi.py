"""Predicate ABI v1: what a rule-set runtime (Lua, Wasm, ...) receives and
returns.  The normative description is docs/predicate-abi.md; this module is
its implementation on the host side, shared by every runtime:

* :func:`plan` turns the IR units of a rule set into a :class:`Program`:
  field *slots* (one per field read, with a column kind), a constant table,
  *host tests* (the string-heavy leaves: wildcard, regex, case folding,
  cidrMatch, functions, arithmetic) and, per unit, an expression DAG over
  native leaves (comparisons, sets, null tests) and test results;
* :class:`BatchBuilder` turns a list of events into a :class:`Batch`: per
  category group the rows, one column per slot the group's units read
  (strings interned per batch), and per slot with tests a *class* column
  whose classes index a small table of test results.  Tests are evaluated
  once per distinct value (memoized across batches), so a runtime needs no
  regex engine, no Unicode case folding and no call back into Python;
* :func:`pack_batch` lays a batch out in one little-endian byte buffer
  (the form a Wasm runtime copies into linear memory, or LuaJIT reads
  through FFI);
* :class:`AbiRuleSet` is the base of a runtime's compiled rule set: it
  builds the batch, calls the runtime's :meth:`AbiRuleSet.evaluate`, and
  evaluates on the host the few rows whose values do not fit their declared
  type (``Batch.host_rows``);
* :class:`ReferenceRuntime` (``abi-ref``) evaluates a batch in plain Python,
  the executable meaning of the ABI that other runtimes are checked against.
"""

from __future__ import annotations

import abc
import math
import struct
from array import array
from itertools import accumulate
from typing import Any, Callable, Collection, Iterable, Sequence

import attrs

from ..interfaces import CompiledPredicate, CompiledRuleSet, RuleSetResult, RuleSetRuntime
from ..schema import FieldType, Schema
from .ir import Node, Predicate

ABI_VERSION = 1

TRI_FALSE, TRI_TRUE, TRI_NULL = 0, 1, 2
"""Encoding of a three-valued test result (class tables, row tests)."""

EXACT_LIMIT = 2**53
"""Numeric constants compared natively must be below this in magnitude: a
runtime holds numbers as IEEE doubles, and every integer below 2**53 is one,
so rounding an event's value to a double never changes a comparison."""

SLOT_STR, SLOT_NUM, SLOT_STRLIST, SLOT_ANY = "str", "num", "strlist", "any"
SLOT_KINDS = (SLOT_STR, SLOT_NUM, SLOT_STRLIST, SLOT_ANY)
SLOT_KIND_CODE = {SLOT_STR: 1, SLOT_NUM: 2, SLOT_STRLIST: 3, SLOT_ANY: 4}

MEMO_LIMIT = 1 << 17
"""Distinct values a slot remembers test classes for (cleared when full)."""


class AbiError(ValueError):
    """A unit the ABI cannot express (never raised for valid IR)."""


class UnitRejected(Exception):
    """Raised by ``compile_rule_set`` for units a runtime cannot compile."""

    def __init__(self, reasons: dict[int, str]) -> None:
        super().__init__("; ".join(f"unit {u}: {r}" for u, r in sorted(reasons.items())))
        self.reasons = reasons


# --------------------------------------------------------------------------- program


@attrs.frozen
class AbiUnit:
    """One distinct step predicate of the rule set, as the engine hands it over."""

    id: int
    """Engine unit id (what results are keyed by)."""
    category: str | None
    nodes: tuple[Node, ...]
    root: int


@attrs.frozen
class Slot:
    index: int
    field_id: int
    path: str
    kind: str
    """``str`` (value ids), ``num`` (doubles), ``strlist`` (offsets + item ids), ``any`` (presence only)."""
    tests: tuple[int, ...] = ()
    """Global test indexes evaluated per value of this slot (its class table's columns, in order)."""
    native: bool = True
    """Some native expr reads the slot's values: the batch carries its value
    column (ids, nums or offsets and items); otherwise only its class column."""


@attrs.frozen
class Test:
    index: int
    slot: int
    """Slot whose value decides the result, or -1 for a row test (several fields)."""
    position: int
    """Column of this test in its slot's class table (-1 for row tests)."""
    unit: int
    node: int
    """Leaf node id in ``unit``'s IR nodes."""
    field_ids: tuple[int, ...]


@attrs.frozen
class Expr:
    """One node of a program's expression DAG (ids are topological)."""

    id: int
    op: str
    """``and or not const cmp in is_null not_null test``."""
    args: tuple[int, ...] = ()
    value: Any = None
    """const: True, False or None (null)."""
    cmp: str = ""
    """cmp: ``eq ne lt le gt ge``."""
    slot: int = -1
    num: float | None = None
    """cmp on a ``num`` slot: the constant."""
    kid: int = -1
    """cmp on a ``str``/``strlist`` slot: index in the constant table."""
    kids: tuple[int, ...] = ()
    """in on a ``str``/``strlist`` slot: constant table indexes."""
    nums: tuple[float, ...] = ()
    """in on a ``num`` slot: the constants."""
    has_null: bool = False
    """in: the list held ``null`` (a value not in the list is then null, not false)."""
    test: int = -1

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "op": self.op}
        if self.args:
            d["args"] = list(self.args)
        if self.op == "const":
            d["value"] = self.value
        if self.cmp:
            d["cmp"] = self.cmp
        if self.slot >= 0:
            d["slot"] = self.slot
        if self.num is not None:
            d["num"] = self.num
        if self.kid >= 0:
            d["kid"] = self.kid
        if self.op == "in":
            d["kids" if self.kids or not self.nums else "nums"] = list(self.kids or self.nums)
            d["has_null"] = self.has_null
        if self.test >= 0:
            d["test"] = self.test
        return d


@attrs.frozen
class UnitPlan:
    id: int
    category: int
    """Index in ``Program.categories``."""
    root: int
    """Expr id."""


@attrs.frozen
class Program:
    """A rule set in ABI form (docs/predicate-abi.md, "Program")."""

    categories: tuple[str | None, ...]
    slots: tuple[Slot, ...]
    consts: tuple[str, ...]
    tests: tuple[Test, ...]
    exprs: tuple[Expr, ...]
    units: tuple[UnitPlan, ...]
    group_slots: tuple[tuple[int, ...], ...]
    """Per category index: the slots its units read (ascending)."""
    group_row_tests: tuple[tuple[int, ...], ...]
    """Per category index: the row tests its units read."""
    version: int = ABI_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a runtime's code generator may consume."""
        return {
            "abi_version": self.version,
            "categories": list(self.categories),
            "slots": [{"index": s.index, "field_id": s.field_id, "path": s.path, "kind": s.kind,
                       "tests": list(s.tests), "native": s.native} for s in self.slots],
            "consts": list(self.consts),
            "tests": [{"index": t.index, "slot": t.slot, "position": t.position} for t in self.tests],
            "exprs": [e.to_dict() for e in self.exprs],
            "units": [{"id": u.id, "category": u.category, "root": u.root} for u in self.units],
        }

    def units_of(self, category: int) -> list[UnitPlan]:
        return [u for u in self.units if u.category == category]


def slot_kind(ftype: FieldType, declared: bool) -> str:
    if not declared or ftype is FieldType.ANY:
        return SLOT_ANY
    if ftype in (FieldType.KEYWORD, FieldType.IP):
        return SLOT_STR
    if ftype in (FieldType.KEYWORD_LIST, FieldType.IP_LIST):
        return SLOT_STRLIST
    if ftype.is_numeric or ftype is FieldType.BOOLEAN:
        return SLOT_NUM
    return SLOT_ANY


def _exact_num(v: Any) -> bool:
    return (v.__class__ is int or v.__class__ is float) and math.isfinite(v) and abs(v) < EXACT_LIMIT


def _canon(nodes: Sequence[Node], nid: int, memo: dict[int, Any]) -> Any:
    r = memo.get(nid)
    if r is None:
        n = nodes[nid]
        v = n.value
        if not isinstance(v, (tuple, str, int, float, bool, type(None))):
            v = repr(v)
        key_v = tuple((type(x).__name__, x) for x in v) if isinstance(v, tuple) else (type(v).__name__, v)
        r = memo[nid] = (n.op, key_v, n.ci, n.field_id, tuple(_canon(nodes, a, memo) for a in n.args))
    return r


class _Planner:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.slots: dict[int, dict[str, Any]] = {}  # field id -> {index, path, kind, tests}
        self.consts: dict[str, int] = {}
        self.tests: list[dict[str, Any]] = []
        self.test_keys: dict[Any, int] = {}
        self.exprs: list[Expr] = []
        self.expr_keys: dict[tuple, int] = {}

    def slot(self, node: Node) -> int:
        s = self.slots.get(node.field_id)
        if s is None:
            fdef = self.schema.field(node.field_id)
            s = self.slots[node.field_id] = {"index": len(self.slots), "path": fdef.path,
                                             "kind": slot_kind(fdef.type, fdef.declared), "tests": []}
        return s["index"]

    def slot_info(self, node: Node) -> tuple[str, bool]:
        """(kind, is a boolean field) of a field node's slot."""
        fdef = self.schema.field(node.field_id)
        return slot_kind(fdef.type, fdef.declared), fdef.declared and fdef.type is FieldType.BOOLEAN

    def const(self, s: str) -> int:
        k = self.consts.get(s)
        if k is None:
            k = self.consts[s] = len(self.consts)
        return k

    def expr(self, op: str, **kw: Any) -> int:
        key = (op, tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else (type(v).__name__, v))
                                for k, v in kw.items())))
        eid = self.expr_keys.get(key)
        if eid is None:
            eid = self.expr_keys[key] = len(self.exprs)
            self.exprs.append(Expr(eid, op, **kw))
        return eid

    # ---------------------------------------------------------------- lowering
    def lower(self, unit: AbiUnit, nid: int, memo: dict[int, Any]) -> int:
        nodes = unit.nodes
        n = nodes[nid]
        if n.op in ("and", "or"):
            return self.expr(n.op, args=tuple(self.lower(unit, a, memo) for a in n.args))
        if n.op == "not":
            return self.expr("not", args=(self.lower(unit, n.args[0], memo),))
        if n.op == "const" and (n.value is None or n.value is True or n.value is False):
            return self.expr("const", value=n.value)
        native = self.native(nodes, n)
        if native is not None:
            return native
        return self.expr("test", test=self.test(unit, nid, memo))

    def native(self, nodes: Sequence[Node], n: Node) -> int | None:
        """An Expr for a leaf the runtime computes itself, or None (a host test)."""
        if n.op in ("is_null", "not_null"):
            f = nodes[n.args[0]]
            if f.op == "field":
                return self.expr(n.op, slot=self.slot(f))
            return None
        if n.op in ("eq", "ne", "lt", "le", "gt", "ge"):
            f, c = nodes[n.args[0]], nodes[n.args[1]]
            if f.op != "field" or c.op != "const":
                return None
            kind, is_bool = self.slot_info(f)
            v = c.value
            if kind == SLOT_NUM:
                if is_bool and v.__class__ is bool:
                    return self.expr("cmp", cmp=n.op, slot=self.slot(f), num=float(v))
                if not is_bool and _exact_num(v):
                    return self.expr("cmp", cmp=n.op, slot=self.slot(f), num=float(v))
                return None
            if kind in (SLOT_STR, SLOT_STRLIST) and v.__class__ is str and n.op in ("eq", "ne"):
                return self.expr("cmp", cmp=n.op, slot=self.slot(f), kid=self.const(v))
            return None
        if n.op == "in" and not n.ci:
            f = nodes[n.args[0]]
            if f.op != "field":
                return None
            kind, is_bool = self.slot_info(f)
            vals = [v for v in n.value if v is not None]
            has_null = len(vals) != len(n.value)
            if kind in (SLOT_STR, SLOT_STRLIST) and all(v.__class__ is str for v in vals):
                return self.expr("in", slot=self.slot(f), kids=tuple(sorted(self.const(v) for v in vals)),
                                 has_null=has_null)
            if kind == SLOT_NUM and not is_bool and all(_exact_num(v) for v in vals):
                return self.expr("in", slot=self.slot(f), nums=tuple(sorted({float(v) for v in vals})),
                                 has_null=has_null)
            return None
        return None

    def test(self, unit: AbiUnit, nid: int, memo: dict[int, Any]) -> int:
        key = _canon(unit.nodes, nid, memo)
        t = self.test_keys.get(key)
        if t is not None:
            return t
        fids: list[int] = []
        stack = [nid]
        seen: set[int] = set()
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            node = unit.nodes[x]
            if node.op == "field" and node.field_id not in fids:
                fids.append(node.field_id)
            stack.extend(node.args)
        slot = -1
        position = -1
        if len(fids) == 1:
            fnode = next(unit.nodes[x] for x in seen if unit.nodes[x].op == "field")
            slot = self.slot(fnode)
            tests = self.slots[fnode.field_id]["tests"]
            position = len(tests)
            tests.append(len(self.tests))
        t = self.test_keys[key] = len(self.tests)
        self.tests.append({"slot": slot, "position": position, "unit": unit.id, "node": nid,
                           "field_ids": tuple(sorted(fids))})
        return t


def plan(units: Iterable[AbiUnit], schema: Schema) -> Program:
    """The ABI program of a rule set's units (deterministic: same units in the
    same order give the same program)."""
    units = list(units)
    p = _Planner(schema)
    categories: list[str | None] = []
    plans: list[UnitPlan] = []
    for u in units:
        if u.category not in categories:
            categories.append(u.category)
        root = p.lower(u, u.root, {})
        plans.append(UnitPlan(u.id, categories.index(u.category), root))
    native = {e.slot for e in p.exprs if e.slot >= 0}
    slots = [None] * len(p.slots)
    for fid, s in p.slots.items():
        slots[s["index"]] = Slot(s["index"], fid, s["path"], s["kind"], tuple(s["tests"]), s["index"] in native)
    tests = tuple(Test(i, t["slot"], t["position"], t["unit"], t["node"], t["field_ids"]) for i, t in enumerate(p.tests))
    exprs = tuple(p.exprs)
    gslots: list[tuple[int, ...]] = []
    grow: list[tuple[int, ...]] = []
    for ci in range(len(categories)):
        used_slots: set[int] = set()
        used_rows: set[int] = set()
        stack = [u.root for u in plans if u.category == ci]
        seen: set[int] = set()
        while stack:
            e = exprs[stack.pop()]
            if e.id in seen:
                continue
            seen.add(e.id)
            if e.slot >= 0:
                used_slots.add(e.slot)
            if e.test >= 0:
                t = tests[e.test]
                if t.slot >= 0:
                    used_slots.add(t.slot)
                else:
                    used_rows.add(t.index)
            stack.extend(e.args)
        gslots.append(tuple(sorted(used_slots)))
        grow.append(tuple(sorted(used_rows)))
    return Program(tuple(categories), tuple(slots), tuple(sorted(p.consts, key=p.consts.__getitem__)), tests, exprs,
                   tuple(plans), tuple(gslots), tuple(grow))


# --------------------------------------------------------------------------- host tests


def _test_functions(units: dict[int, AbiUnit], test: Test, schema: Schema,
                    cat_fid: int) -> tuple[Callable[[Any], int], Callable[[Any], int]]:
    """(fast, safe) ``F -> TRI_*`` for one test leaf (F: a field id -> value
    mapping), from the host runtime's code generator: its fast two-polarity
    code (which may raise on a value of another type than declared) and the
    reference helpers (which never raise)."""
    from .hostruntime import _Gen

    unit = units[test.unit]
    pred = Predicate(unit.nodes, test.node, None)
    fast = _Gen(pred, schema, cat_fid, fast=True)
    t_src, f_src = fast.T(test.node), fast.F(test.node)
    safe = _Gen(pred, schema, cat_fid, fast=False)
    tri_src = safe.tri(test.node)
    fast_fn = eval(f"lambda F: 1 if {t_src} else (0 if {f_src} else 2)", fast.ns)  # noqa: S307 - generated code
    safe_fn = eval(f"lambda F: (lambda r: 1 if r is True else (0 if r is False else 2))({tri_src})", safe.ns)  # noqa: S307

    return fast_fn, safe_fn


def _combined(pairs: Sequence[tuple[Callable[[Any], int], Callable[[Any], int]]]) -> Callable[[Any], tuple[int, ...]]:
    """One call giving every test's result: the fast functions, or all the
    safe ones when any fast one raises."""
    ns = {f"f{i}": f for i, (f, _) in enumerate(pairs)} | {f"s{i}": g for i, (_, g) in enumerate(pairs)}
    fast = ", ".join(f"f{i}(F)" for i in range(len(pairs)))
    safe = ", ".join(f"s{i}(F)" for i in range(len(pairs)))
    src = f"def classify(F):\n    try:\n        return ({fast},)\n    except Exception:\n        return ({safe},)\n"
    exec(compile(src, "<abi-tests>", "exec"), ns)  # noqa: S102 - generated from the rule set
    return ns["classify"]


def _memo_key_any(v: Any) -> Any:
    """Memo key of a value of an undeclared field: 1, 1.0 and True stay apart."""
    if v.__class__ is list:
        return ("L",) + tuple((x.__class__, x) for x in v)
    return (v.__class__, v)


class _SlotTests:
    """The tests of one slot: value -> class id, class id -> results."""

    def __init__(self, slot: Slot, fns: list[tuple[Callable[[Any], int], Callable[[Any], int]]]) -> None:
        self.slot = slot
        self.fid = slot.field_id
        self.all = _combined(fns)
        self.memo: dict[Any, int] = {}
        self.class_ids: dict[tuple[int, ...], int] = {}
        self.classes: list[tuple[int, ...]] = []
        self.listy = slot.kind in (SLOT_STRLIST, SLOT_ANY)
        self.anykind = slot.kind == SLOT_ANY

    def classify(self, value: Any) -> int:
        res = self.all({} if value is None else {self.fid: value})
        c = self.class_ids.get(res)
        if c is None:
            c = self.class_ids[res] = len(self.classes)
            self.classes.append(res)
        return c

    def _column_any(self, vals: list[Any]) -> list[int]:
        memo = self.memo
        out = []
        for v in vals:
            try:
                k = _memo_key_any(v)
                c = memo.get(k)
                if c is None:
                    c = memo[k] = self.classify(v)
            except TypeError:  # an unhashable element (nested list or object): no memo
                c = self.classify(v)
            out.append(c)
        return out

    def column(self, vals: list[Any]) -> list[int]:
        memo = self.memo
        if len(memo) > MEMO_LIMIT:
            memo.clear()
        if self.anykind:
            return self._column_any(vals)
        try:
            keys = [None if v is None else tuple(v) for v in vals] if self.listy else vals
            out = list(map(memo.get, keys))
        except TypeError:  # an unhashable value where the schema promised strings
            return self._column_any(vals)
        if None in out:
            for i, c in enumerate(out):
                if c is None:
                    k = keys[i]
                    c = memo.get(k)
                    if c is None:
                        c = memo[k] = self.classify(vals[i])
                    out[i] = c
        return out


# --------------------------------------------------------------------------- batches


@attrs.define(eq=False)
class Column:
    """One slot's data for the rows of one group (docs/predicate-abi.md, "Columns")."""

    slot: int
    kind: str
    ids: list[int] | None = None
    """``str``: value id per row (0: null); ``any``: 1 present, 0 null."""
    nums: list[float] | None = None
    """``num``: the value per row as a double, NaN for null (booleans 0/1)."""
    off: list[int] | None = None
    """``strlist``: m+1 offsets into ``items``; an empty range is null."""
    items: list[int] | None = None
    """``strlist``: value ids of the elements."""
    cls: list[int] | None = None
    """Slots with tests: class id per row (an index into ``Batch.classes[slot]``)."""


@attrs.define(eq=False)
class Group:
    category: int
    rows: list[int]
    """Batch positions, ascending."""
    columns: dict[int, Column]
    row_tests: dict[int, list[int]]
    """Row test index -> TRI_* per row."""


@attrs.define(eq=False)
class Batch:
    n: int
    strings: list[str]
    """Value id -> string (id 0 is null; ``strings[0]`` is unused)."""
    kid: list[int]
    """Per constant: its value id in this batch, -1 if no row holds it."""
    groups: list[Group]
    classes: dict[int, list[tuple[int, ...]]]
    """Slot -> class table: class id -> one TRI_* per test of the slot (grows
    across batches; earlier class ids keep their meaning)."""
    host_rows: list[int]
    """Rows (batch positions) with a value that does not fit its slot's
    declared type: the host evaluates them, runtimes may compute anything there."""


_NAN = float("nan")
_STR_OK = frozenset({str, type(None)})
_NUM_OK = frozenset({int, float, type(None)})
_BOOL_OK = frozenset({bool, type(None)})
_LIST_OK = frozenset({list, type(None)})


class BatchBuilder:
    """Builds batches for one program; keeps the per-slot memos of test classes."""

    def __init__(self, program: Program, units: Sequence[AbiUnit], schema: Schema,
                 category_field: str = "event.category") -> None:
        self.program = program
        self.schema = schema
        self.cat_fid = schema.resolve(category_field)
        by_id = {u.id: u for u in units}
        fns = [_test_functions(by_id, t, schema, self.cat_fid) for t in program.tests]
        self.slot_tests = {s.index: _SlotTests(s, [fns[t] for t in s.tests]) for s in program.slots if s.tests}
        self.row_fns = {t.index: _combined([fns[t.index]]) for t in program.tests if t.slot < 0}
        self.cat_index = {c: i for i, c in enumerate(program.categories) if c is not None}
        self.any_index = program.categories.index(None) if None in program.categories else -1
        self.bool_slots = {s.index for s in program.slots
                           if schema.field(s.field_id).declared and schema.field(s.field_id).type is FieldType.BOOLEAN}

    def groups_of(self, events: Sequence[Any]) -> dict[int, list[int]]:
        """Category index -> batch positions (an event with a multi-valued
        category joins every group it names, as in the engine)."""
        out: dict[int, list[int]] = {}
        idx = self.cat_index
        cat_fid = self.cat_fid
        for i, e in enumerate(events):
            ci = idx.get(e.category)
            if ci is not None:
                out.setdefault(ci, []).append(i)
            cv = e.fields.get(cat_fid)
            if cv.__class__ is list and len(cv) > 1:
                for other in cv:
                    if other != e.category and other.__class__ is str:
                        cj = idx.get(other)
                        if cj is not None:
                            lst = out.setdefault(cj, [])
                            if not lst or lst[-1] != i:
                                lst.append(i)
        if self.any_index >= 0:
            out[self.any_index] = list(range(len(events)))
        return out

    def build(self, events: Sequence[Any]) -> Batch:
        prog = self.program
        strings: dict[Any, int] = {None: 0}
        host_rows: set[int] = set()
        groups = []
        for ci, rows in sorted(self.groups_of(events).items()):
            fl = [events[i].fields for i in rows]
            cols: dict[int, Column] = {}
            for si in prog.group_slots[ci]:
                slot = prog.slots[si]
                fid = slot.field_id
                vals = [F.get(fid) for F in fl]
                col = Column(si, slot.kind)
                kinds = set(map(type, vals))
                if slot.kind == SLOT_STR:
                    if not kinds <= _STR_OK:
                        host_rows.update(rows[j] for j, v in enumerate(vals) if v is not None and v.__class__ is not str)
                        if slot.native:
                            sd = strings.setdefault
                            col.ids = [sd(v, len(strings)) if v.__class__ is str or v is None else 0 for v in vals]
                    elif slot.native:  # intern the distinct values, then map every row in C
                        for v in dict.fromkeys(vals):
                            if v not in strings:
                                strings[v] = len(strings)
                        col.ids = list(map(strings.__getitem__, vals))
                elif slot.kind == SLOT_NUM:
                    ok = _BOOL_OK if si in self.bool_slots else _NUM_OK
                    try:
                        col.nums = [_NAN if v is None else float(v) for v in vals] if kinds <= ok else None
                    except OverflowError:  # an integer beyond any double: the host decides its rows
                        col.nums = None
                    if col.nums is not None:
                        if float in kinds:  # a NaN value is not null: the host decides it
                            host_rows.update(rows[j] for j, v in enumerate(vals) if v is not None and v != v)
                    else:
                        col.nums = [_NAN] * len(vals)
                        for j, v in enumerate(vals):
                            if v.__class__ in ok and v is not None and v == v and abs(v) < 1e308:
                                col.nums[j] = float(v)
                            elif v is not None:
                                host_rows.add(rows[j])
                elif slot.kind == SLOT_STRLIST:
                    if not kinds <= _LIST_OK:
                        host_rows.update(rows[j] for j, v in enumerate(vals) if v is not None and v.__class__ is not list)
                        vals = [v if v.__class__ is list else None for v in vals]
                    if slot.native:
                        flat = [x for v in vals if v for x in v]
                        try:
                            for x in dict.fromkeys(flat):
                                if x not in strings:
                                    strings[x] = len(strings)
                        except TypeError:  # an unhashable element: its row is the host's (below)
                            for x in flat:
                                try:
                                    strings.setdefault(x, len(strings))
                                except TypeError:
                                    strings.setdefault(repr(x), len(strings))
                                    host_rows.update(rows[j] for j, v in enumerate(vals) if v and x in v)
                            flat = [x if x.__class__ is str else repr(x) for x in flat]
                        col.items = list(map(strings.__getitem__, flat))
                        col.off = [0, *accumulate([len(v) if v else 0 for v in vals])]
                elif slot.native:
                    col.ids = [0 if v is None or (v.__class__ is list and not v) else 1 for v in vals]
                st = self.slot_tests.get(si)
                if st is not None:
                    col.cls = st.column(vals)
                cols[si] = col
            rtests = {t: [fn(F)[0] for F in fl] for t in prog.group_row_tests[ci] for fn in (self.row_fns[t],)}
            groups.append(Group(ci, rows, cols, rtests))
        values = list(strings)
        if any(v.__class__ is not str for v in values[1:]):
            # a list element or value that is not a string in a string slot
            bad = {i for i, v in enumerate(values) if i and v.__class__ is not str}
            for g in groups:
                for col in g.columns.values():
                    if col.kind == SLOT_STR and col.ids is not None:
                        host_rows.update(g.rows[j] for j, x in enumerate(col.ids) if x in bad)
                    elif col.kind == SLOT_STRLIST and col.off is not None:
                        for j in range(len(g.rows)):
                            if any(x in bad for x in col.items[col.off[j]:col.off[j + 1]]):
                                host_rows.add(g.rows[j])
        vals_strings = ["" if not i else (v if v.__class__ is str else "") for i, v in enumerate(values)]
        kid = [strings.get(c, -1) for c in prog.consts]
        classes = {si: st.classes for si, st in self.slot_tests.items()}
        return Batch(len(events), vals_strings, kid, groups, classes, sorted(host_rows))


# --------------------------------------------------------------------------- packed form


PACK_MAGIC = b"KPB1"
PACK_HEADER = struct.Struct("<4sIIIIIIIII")
"""magic, abi_version, n_rows, n_groups, n_consts, n_slots, n_tests, kid_off, ctab_dir_off, group_dir_off."""
PACK_GROUP = struct.Struct("<IIII")
"""category index, m (rows), rows_off, reserved."""
PACK_COLDIR = struct.Struct("<IIIII")
"""kind code (0: slot absent in this group), a_off, b_off, cls_off, reserved."""


def _align(buf: bytearray) -> None:
    buf.extend(b"\0" * (-len(buf) % 8))


def _put(buf: bytearray, code: str, values: Sequence[Any]) -> int:
    """Append a typed array (8-aligned) and return its offset."""
    _align(buf)
    off = len(buf)
    buf.extend(array(code, values).tobytes())
    return off


def pack_batch(program: Program, batch: Batch, cache: dict[int, tuple[int, bytes]] | None = None) -> bytes:
    """The batch as one little-endian buffer (layout: docs/predicate-abi.md,
    "Packed batch").  Offsets are bytes from the start of the buffer.
    ``cache``: slot -> (classes, packed table), kept by the caller across
    batches (class tables only grow, so a table is packed again only when it did)."""
    nslots, ntests = len(program.slots), len(program.tests)
    buf = bytearray(PACK_HEADER.size)
    kid_off = _put(buf, "i", batch.kid)
    ctab_offs = [0] * nslots
    for si, table in sorted(batch.classes.items()):
        _align(buf)
        ctab_offs[si] = len(buf)
        hit = cache.get(si) if cache is not None else None
        if hit is None or hit[0] != len(table):
            packed = struct.pack("<II", len(table), len(program.slots[si].tests)) + bytes(
                x for row in table for x in row)
            hit = (len(table), packed)
            if cache is not None:
                cache[si] = hit
        buf.extend(hit[1])
    ctab_dir = _put(buf, "I", ctab_offs)
    _align(buf)
    gdir = len(buf)
    entry = PACK_GROUP.size + nslots * PACK_COLDIR.size + ntests * 4
    buf.extend(b"\0" * (len(batch.groups) * entry))
    for gi, g in enumerate(batch.groups):
        pos = gdir + gi * entry
        PACK_GROUP.pack_into(buf, pos, g.category, len(g.rows), _put(buf, "i", g.rows), 0)
        pos += PACK_GROUP.size
        for si in range(nslots):
            col = g.columns.get(si)
            code = a = b = c = 0
            if col is not None:
                code = SLOT_KIND_CODE[col.kind]
                if col.kind == SLOT_NUM:
                    a = _put(buf, "d", col.nums)
                elif col.kind == SLOT_STRLIST:
                    if col.off is not None:
                        a = _put(buf, "i", col.off)
                        b = _put(buf, "i", col.items or [0])
                elif col.ids is not None:
                    a = _put(buf, "i", col.ids)
                if col.cls is not None:
                    c = _put(buf, "i", col.cls)
            PACK_COLDIR.pack_into(buf, pos, code, a, b, c, 0)
            pos += PACK_COLDIR.size
        for ti in range(ntests):
            rt = g.row_tests.get(ti)
            struct.pack_into("<I", buf, pos, _put(buf, "B", rt) if rt is not None else 0)
            pos += 4
    PACK_HEADER.pack_into(buf, 0, PACK_MAGIC, ABI_VERSION, batch.n, len(batch.groups), len(batch.kid), nslots,
                          ntests, kid_off, ctab_dir, gdir)
    return bytes(buf)


# --------------------------------------------------------------------------- rule sets


class AbiRuleSet(CompiledRuleSet):
    """A runtime's compiled rule set.  Subclasses implement :meth:`evaluate`;
    this class builds the batch and takes care of ``host_rows``."""

    def __init__(self, program: Program, units: Sequence[AbiUnit], schema: Schema,
                 category_field: str = "event.category") -> None:
        self.program = program
        self.units = list(units)
        self.schema = schema
        self.category_field = category_field
        self.builder = BatchBuilder(program, self.units, schema, category_field)
        self._host: dict[int, Any] = {}
        self.host_rows_evaluated = 0
        """Rows the host evaluated because a value did not fit its declared type."""

    @abc.abstractmethod
    def evaluate(self, batch: Batch, enabled: Collection[int] | None) -> RuleSetResult:
        """Run the program's units (those in ``enabled``; None: all) over the batch.

        :return: per unit, the ascending batch positions it matches (its
            category's group rows only), and the units that failed (budget,
            error) with a reason; ``hits`` must be complete for every other
            enabled unit."""

    def eval_units(self, events: Sequence[Any], enabled: Collection[int] | None = None) -> RuleSetResult:
        batch = self.builder.build(events)
        result = self.evaluate(batch, enabled)
        if batch.host_rows:
            self._host_rows(events, batch, enabled, result)
        return result

    def _host_rows(self, events: Sequence[Any], batch: Batch, enabled: Collection[int] | None,
                   result: RuleSetResult) -> None:
        from .hostruntime import HostRuntime

        sub = [events[i] for i in batch.host_rows]
        bad = set(batch.host_rows)
        self.host_rows_evaluated += len(sub)
        for u in self.units:
            if (enabled is not None and u.id not in enabled) or u.id in result.failed:
                continue
            pred = self._host.get(u.id)
            if pred is None:
                pred = self._host[u.id] = HostRuntime().compile(Predicate(u.nodes, u.root, u.category), self.schema,
                                                                category_field=self.category_field)
            got = [batch.host_rows[j] for j in pred.select_idx(sub)]
            keep = [i for i in result.hits.get(u.id, ()) if i not in bad]
            merged = sorted(keep + got)
            if merged:
                result.hits[u.id] = merged
            else:
                result.hits.pop(u.id, None)


class _SinglePredicate(CompiledPredicate):
    """``PredicateRuntime.compile`` of a rule-set runtime: a rule set of one unit."""

    def __init__(self, rs: CompiledRuleSet, uid: int) -> None:
        self.rs = rs
        self.uid = uid

    def eval_batch(self, events: Sequence[Any]) -> list[bool]:
        res = self.rs.eval_units(events, None)
        if res.failed:
            raise RuntimeError(f"predicate failed: {res.failed[self.uid]}")
        out = [False] * len(events)
        for i in res.hits.get(self.uid, ()):
            out[i] = True
        return out


class AbiRuntime(RuleSetRuntime):
    """Base of runtimes built on this module: ``compile`` is a rule set of one."""

    def compile(self, predicate: Any, schema: Any, *, category_field: str = "event.category") -> CompiledPredicate:
        unit = AbiUnit(0, predicate.category, predicate.nodes, predicate.root)
        return _SinglePredicate(self.compile_rule_set([unit], schema, category_field=category_field), 0)


# --------------------------------------------------------------------------- reference runtime


def _tri(e: Expr, col: Column | None, row: int, batch: Batch, group: Group, exprs: Sequence[Expr],
         program: Program) -> int:
    """TRI_* of expr ``e`` on one row: the ABI's semantics, written plainly."""
    op = e.op
    if op in ("and", "or"):
        rs = [_tri(exprs[a], None, row, batch, group, exprs, program) for a in e.args]
        if op == "and":
            return TRI_FALSE if TRI_FALSE in rs else (TRI_NULL if TRI_NULL in rs else TRI_TRUE)
        return TRI_TRUE if TRI_TRUE in rs else (TRI_NULL if TRI_NULL in rs else TRI_FALSE)
    if op == "not":  # Elasticsearch's must_not: true unless the operand is true
        r = _tri(exprs[e.args[0]], None, row, batch, group, exprs, program)
        return TRI_FALSE if r == TRI_TRUE else TRI_TRUE
    if op == "const":
        return TRI_NULL if e.value is None else (TRI_TRUE if e.value else TRI_FALSE)
    if op == "test":
        t = program.tests[e.test]
        if t.slot < 0:
            return group.row_tests[t.index][row]
        c = group.columns[t.slot]
        return batch.classes[t.slot][c.cls[row]][t.position]
    col = group.columns[e.slot]
    if col.kind == SLOT_NUM:
        v = col.nums[row]
        null = v != v
        vals = [v]
    elif col.kind == SLOT_STRLIST:
        vals = col.items[col.off[row]:col.off[row + 1]]
        null = not vals
    else:
        vals = [col.ids[row]]
        null = vals[0] == 0
    if op == "is_null":
        return TRI_TRUE if null else TRI_FALSE
    if op == "not_null":
        return TRI_FALSE if null else TRI_TRUE
    if null:
        return TRI_NULL
    if op == "cmp":
        if col.kind == SLOT_NUM:
            c = e.num
            v = vals[0]
            r = {"eq": v == c, "ne": v != c, "lt": v < c, "le": v <= c, "gt": v > c, "ge": v >= c}[e.cmp]
            return TRI_TRUE if r else TRI_FALSE
        k = batch.kid[e.kid]
        anyeq = k in vals
        return TRI_TRUE if anyeq == (e.cmp == "eq") else TRI_FALSE
    if op == "in":
        if col.kind == SLOT_NUM:
            hit = vals[0] in e.nums
        else:
            ks = {batch.kid[k] for k in e.kids}
            hit = any(v in ks for v in vals)
        if hit:
            return TRI_TRUE
        return TRI_NULL if e.has_null else TRI_FALSE
    raise AbiError(f"unknown expr op {op!r}")


class ReferenceRuleSet(AbiRuleSet):
    def evaluate(self, batch: Batch, enabled: Collection[int] | None) -> RuleSetResult:
        prog = self.program
        hits: dict[int, list[int]] = {}
        for g in batch.groups:
            for u in prog.units_of(g.category):
                if enabled is not None and u.id not in enabled:
                    continue
                root = prog.exprs[u.root]
                got = [g.rows[r] for r in range(len(g.rows))
                       if _tri(root, None, r, batch, g, prog.exprs, prog) == TRI_TRUE]
                if got:
                    hits[u.id] = got
        return RuleSetResult(hits=hits)


class ReferenceRuntime(AbiRuntime):
    """The Predicate ABI evaluated in plain Python: slow, and the executable
    meaning of docs/predicate-abi.md that other runtimes are tested against."""

    PLUGIN_NAME = "abi-ref"
    DESCRIPTION = "reference implementation of the Predicate ABI v1 in Python (slow; for runtime authors)"

    def compile_rule_set(self, units: Sequence[AbiUnit], schema: Any, *,
                         category_field: str = "event.category") -> ReferenceRuleSet:
        return ReferenceRuleSet(plan(units, schema), units, schema, category_field)
