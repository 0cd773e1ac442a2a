"""Intermediate representation: a predicate DAG plus sequence steps.

This is the contract between the EQL front end and every runtime (host
Python, Wasm, Lua) and matcher (category index, literal prefilter, DFA); see
docs/ir.md.  Lowering from the syntax tree resolves field paths to schema
field ids, folds constants, deduplicates shared subexpressions and runs the
semantic checks (unknown fields, type mismatches) at the chosen strictness.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from ..schema import VALUE_RENAMES, FieldType, Schema
from . import ast as A
from . import functions as fn
from .errors import EqlError, EqlSemanticError, EqlWarning

STRICTNESS = ("error", "warn", "off")

# value "types" the checker reasons with
T_BOOL, T_STR, T_NUM, T_IP, T_ANY, T_NULL = "bool", "str", "num", "ip", "any", "null"


@attrs.frozen
class Node:
    """One DAG node.  ``args`` are ids of earlier nodes (ids are topological)."""

    id: int
    op: str
    args: tuple[int, ...] = ()
    value: Any = None
    """const: the value; field: the path; call: the function name;
    in/wildcard/regex: the tuple of constant operands."""
    ci: bool = False
    field_id: int | None = None
    type: str = T_ANY
    """Result type: bool, str, num, ip, any, null."""
    multi: bool = False
    """May hold a list (multi-valued field, or derived from one)."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "op": self.op}
        if self.args:
            d["args"] = list(self.args)
        if self.value is not None or self.op == "const":
            d["value"] = list(self.value) if isinstance(self.value, tuple) else self.value
        if self.ci:
            d["ci"] = True
        if self.field_id is not None:
            d["field_id"] = self.field_id
        d["type"] = self.type
        if self.multi:
            d["multi"] = True
        return d


@attrs.frozen
class Step:
    """One event pattern: a single-event query, a sequence step, or ``until``."""

    id: int
    category: str | None
    """Event category the step needs; None for ``any``."""
    pred: int
    """Root node id of the condition."""
    keys: tuple[int, ...] = ()
    """Node ids of the join keys (``sequence by`` keys first, then the step's)."""
    keys_nullable: tuple[bool, ...] = ()
    """Per key: True when written ``?field`` (a null value may join)."""
    missing: bool = False
    """A missing-event step ``![...]``."""


@attrs.frozen
class Predicate:
    """What a :class:`~kestrel_core.interfaces.PredicateRuntime` compiles:
    the DAG and one root (plus the step's category)."""

    nodes: tuple[Node, ...]
    root: int
    category: str | None = None


@attrs.frozen
class Query:
    kind: str
    """``event`` or ``sequence``."""
    nodes: tuple[Node, ...]
    steps: tuple[Step, ...]
    until: Step | None = None
    maxspan_ns: int | None = None
    pipes: tuple[tuple[str, int], ...] = ()
    fields: tuple[str, ...] = ()
    """Paths of every field the query references, in first-use order."""
    source: str = ""
    warnings: tuple[EqlError, ...] = ()

    def predicate(self, step: Step) -> Predicate:
        return Predicate(self.nodes, step.pred, step.category)

    def to_dict(self) -> dict[str, Any]:
        def step(s: Step) -> dict[str, Any]:
            d = {"id": s.id, "category": s.category, "pred": s.pred}
            if s.keys:
                d["keys"] = list(s.keys)
                d["keys_nullable"] = list(s.keys_nullable)
            if s.missing:
                d["missing"] = True
            return d

        return {
            "kind": self.kind,
            "nodes": [n.to_dict() for n in self.nodes],
            "steps": [step(s) for s in self.steps],
            "until": step(self.until) if self.until else None,
            "maxspan_ns": self.maxspan_ns,
            "pipes": [list(p) for p in self.pipes],
            "fields": list(self.fields),
        }


def _ftype(ft: FieldType) -> str:
    el = ft.element
    if el is FieldType.KEYWORD:
        return T_STR
    if el is FieldType.IP:
        return T_IP
    if el.is_numeric:
        return T_NUM
    if el is FieldType.BOOLEAN:
        return T_BOOL
    return T_ANY


def _const_type(v: Any) -> str:
    if v is None:
        return T_NULL
    if isinstance(v, bool):
        return T_BOOL
    if isinstance(v, (int, float)):
        return T_NUM
    if isinstance(v, str):
        return T_STR
    return T_ANY


def _stringish(t: str) -> bool:
    return t in (T_STR, T_IP, T_ANY, T_NULL)


_TYPE_WORD = {T_STR: "a string", T_NUM: "a number", T_BOOL: "a boolean", T_IP: "an IP address", T_NULL: "null", T_ANY: "a value"}


class _Lowerer:
    def __init__(self, schema: Schema, strict: str, source_name: str | None, lines: list[str]) -> None:
        self.schema = schema
        self.strict = strict
        self.source_name = source_name
        self.lines = lines
        self.nodes: list[Node] = []
        self.index: dict[tuple, int] = {}
        self.fields: dict[str, None] = {}
        self.warnings: list[EqlError] = []

    # ---------------------------------------------------------- diagnostics
    def _err(self, message: str, pos: A.Pos, cls=EqlSemanticError, length: int = 1) -> EqlError:
        line, col = pos
        src = self.lines[line - 1] if 1 <= line <= len(self.lines) else None
        return cls(message, line, col, self.source_name, src, length=length)

    def fatal(self, message: str, pos: A.Pos, length: int = 1) -> None:
        raise self._err(message, pos, length=length)

    def check(self, message: str, pos: A.Pos, length: int = 1) -> None:
        """A schema-dependent problem, raised or recorded by strictness."""
        if self.strict == "off":
            return
        if self.strict == "error":
            raise self._err(message, pos, length=length)
        self.warnings.append(self._err(message, pos, EqlWarning, length=length))

    # ---------------------------------------------------------- node table
    def node(self, op: str, args: tuple = (), value: Any = None, ci: bool = False, field_id=None, type=T_ANY, multi=False) -> int:
        key = (op, args, _hashable(value), ci, field_id)
        nid = self.index.get(key)
        if nid is not None:
            return nid
        nid = len(self.nodes)
        self.nodes.append(Node(nid, op, args, value, ci, field_id, type, multi))
        self.index[key] = nid
        return nid

    def n(self, nid: int) -> Node:
        return self.nodes[nid]

    def const(self, v: Any) -> int:
        return self.node("const", value=v, type=_const_type(v))

    def is_const(self, nid: int) -> bool:
        return self.nodes[nid].op == "const"

    def has_field(self, nid: int) -> bool:
        node = self.nodes[nid]
        if node.op == "field":
            return True
        return any(self.has_field(a) for a in node.args)

    # ---------------------------------------------------------- expressions
    def expr(self, e: A.Node) -> int:
        m = getattr(self, "x_" + type(e).__name__)
        return m(e)

    def x_Literal(self, e: A.Literal) -> int:
        return self.const(e.value)

    def x_Field(self, e: A.Field) -> int:
        path = e.path
        fdef = self.schema.get(path)
        if fdef is None or not fdef.declared:
            if not e.optional:
                near = _nearest_field(self.schema, path)
                hint = f"did you mean {near}? or " if near else ""
                self.check(f"unknown field '{path}' (not in the schema; {hint}write ?{path} if it may be absent)",
                           e.pos, len(path))
        elif fdef.deprecated:
            self.check(f"field '{path}' is deprecated", e.pos, len(path))
        fid = self.schema.resolve(path)
        fdef = self.schema.field(fid)
        self.fields.setdefault(path, None)
        t = _ftype(fdef.type) if fdef.declared else T_ANY
        multi = fdef.type.is_list or not fdef.declared or fdef.type is FieldType.ANY
        return self.node("field", value=path, field_id=fid, type=t, multi=multi)

    def x_Neg(self, e: A.Neg) -> int:
        a = self.expr(e.operand)
        self._want(a, (T_NUM,), e.operand.pos, "'-'")
        if self.is_const(a):
            return self.const(fn.neg(self.n(a).value))
        return self.node("neg", (a,), type=T_NUM, multi=self.n(a).multi)

    _ARITH = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", "%": "modulo"}

    def x_Arith(self, e: A.Arith) -> int:
        a = self.expr(e.left)
        b = self.expr(e.right)
        name = self._ARITH[e.op]
        return self._call(name, False, [a, b], [e.left.pos, e.right.pos], e.pos)

    def x_Call(self, e: A.Call) -> int:
        args = [self.expr(a) for a in e.args]
        return self._call(e.name, e.ci, args, [a.pos for a in e.args], e.pos)

    _SIG = {
        # name: (arg types..., result type); '*' repeats the last
        "add": ((T_NUM, T_NUM), T_NUM),
        "subtract": ((T_NUM, T_NUM), T_NUM),
        "multiply": ((T_NUM, T_NUM), T_NUM),
        "divide": ((T_NUM, T_NUM), T_NUM),
        "modulo": ((T_NUM, T_NUM), T_NUM),
        "between": ((T_STR, T_STR, T_STR, T_BOOL), T_STR),
        "cidrMatch": ((T_IP, T_STR, "*"), T_BOOL),
        "concat": ((T_ANY, "*"), T_STR),
        "endsWith": ((T_STR, T_STR), T_BOOL),
        "indexOf": ((T_STR, T_STR, T_NUM), T_NUM),
        "length": ((T_STR,), T_NUM),
        "number": ((T_STR, T_NUM), T_NUM),
        "startsWith": ((T_STR, T_STR), T_BOOL),
        "string": ((T_ANY,), T_STR),
        "stringContains": ((T_STR, T_STR), T_BOOL),
        "substring": ((T_STR, T_NUM, T_NUM), T_STR),
    }

    def _call(self, name: str, ci: bool, args: list[int], poss: list, pos: A.Pos) -> int:
        sig, rtype = self._SIG[name]
        for i, (a, p) in enumerate(zip(args, poss)):
            # '*' at the end of a signature repeats the type before it
            want = sig[i] if i < len(sig) and sig[i] != "*" else sig[-2]
            if want == T_ANY:
                continue
            if name == "cidrMatch" and i == 0:
                self._want(a, (T_IP,), p, f"{name}() argument 1", allow_str_const=True, field_only=True)
            elif name == "cidrMatch":
                if not self.is_const(a):
                    self.fatal(f"{name}() takes constant CIDR blocks after the address", p)
                self._want(a, (T_STR,), p, f"{name}() argument {i + 1}")
                v = self.n(a).value
                if isinstance(v, str) and fn._network(v) is None:
                    self.fatal(f"invalid CIDR block {v!r}", p, len(v) + 2)
            else:
                self._want(a, (want,), p, f"{name}() argument {i + 1}")
        if name == "number" and len(args) > 1 and not self.is_const(args[1]):
            self.fatal("number() takes a constant base", poss[1])
        if name in ("divide", "modulo") and len(args) == 2 and self.is_const(args[1]) and self.n(args[1]).value == 0:
            self.fatal(f"{name}() by zero", poss[1])
        multi = any(self.n(a).multi for a in args)
        if all(self.is_const(a) for a in args):
            return self.const(self._fold(name, ci, tuple(self.n(a).value for a in args), pos))
        return self.node("call", tuple(args), value=name, ci=ci, type=rtype, multi=multi)

    def _fold(self, name: str, ci: bool, values: tuple, pos: A.Pos) -> Any:
        """A function of constants, computed now.  The helpers return null on
        values they cannot take (overflow, infinities); anything else they
        raise is a located error here, never a traceback."""
        try:
            return fn.call(name, ci, values)
        except Exception as exc:  # noqa: BLE001 - reported at the call's position
            self.fatal(f"cannot evaluate {name}() on these constants: {type(exc).__name__}: {exc}", pos, len(name))

    def _want(self, nid: int, types: tuple, pos: A.Pos, what: str, *, allow_str_const=False, field_only=False) -> None:
        node = self.n(nid)
        t = node.type
        if t in (T_ANY, T_NULL) or t in types:
            return
        if T_STR in types and t == T_IP:
            return
        if allow_str_const and node.op == "const" and t == T_STR:
            return
        if field_only and node.op != "field" and t in (T_STR,):
            return
        src = f"field '{node.value}'" if node.op == "field" else ("value" if node.op == "const" else "expression")
        msg = f"type mismatch: {what} must be {_TYPE_WORD[types[0]]}, but {src} is {_TYPE_WORD.get(t, t)}"
        if node.op == "field":
            self.check(msg, pos)
        else:
            self.fatal(msg, pos)

    # ---------------------------------------------------------- predicates
    def _renamed(self, x: int, values: Iterable[Any], pos: A.Pos, ci: bool = False) -> list[Any]:
        """Values a field compared with ``values`` should also match: the
        current names of values the schema renamed (VALUE_RENAMES), each with
        a warning at ``pos``."""
        node = self.n(x)
        renames = VALUE_RENAMES.get(node.value) if node.op == "field" else None
        extra: list[Any] = []
        if renames:
            for v in values:
                new = renames.get(v.lower() if ci and isinstance(v, str) else v) if isinstance(v, str) else None
                if new is not None and new not in extra:
                    extra.append(new)
                    if self.strict != "off":
                        self.warnings.append(self._err(
                            f"{node.value} {v!r} is {new!r} since schema 1.1 (Elastic Defend's value); "
                            f"the rule matches both until the old value is retired", pos, EqlWarning, len(repr(v))))
        return extra

    def x_Compare(self, e: A.Compare) -> int:
        a = self.expr(e.left)
        b = self.expr(e.right)
        if e.op in ("==", "!=") and self.n(a).op == "field" and self.is_const(b):
            extra = self._renamed(a, [self.n(b).value], e.right.pos)
            if extra:  # old value: match it and its current name
                nid = self.node("in", (a,), value=tuple(sorted({self.n(b).value, *extra})), type=T_BOOL)
                return self._not(nid) if e.op == "!=" else nid
        if self.has_field(a) and self.has_field(b):
            self.fatal("comparing a field to another field is not supported in EQL; compare each to a value", e.pos, len(e.op))
        na, nb = self.n(a), self.n(b)
        # null tests
        if e.op in ("==", "!=") and (na.type == T_NULL or nb.type == T_NULL):
            other = b if na.type == T_NULL else a
            if self.n(other).type == T_NULL:  # null == null is true, null != null false
                return self.const(e.op == "==")
            op = "is_null" if e.op == "==" else "not_null"
            return self.node(op, (other,), type=T_BOOL)
        if na.type == T_NULL or nb.type == T_NULL:
            return self.const(None)
        a, b = self._date_operands(a, b, e.right.pos if self.is_const(b) else e.left.pos)
        na, nb = self.n(a), self.n(b)
        self._compatible(a, b, e)
        op = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}[e.op]
        if self.is_const(a) and self.is_const(b):
            return self.const(getattr(fn, op)(na.value, nb.value))
        if self.is_const(a):  # keep the field on the left: 5 < x  ->  x > 5
            a, b = b, a
            op = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}[op]
        x, c = self.n(a), self.n(b)
        if op in ("eq", "ne") and x.op not in ("field", "const") and x.type == T_BOOL and isinstance(c.value, bool):
            # ES BooleanFunctionEqualsElimination: `expr == true` is expr, `expr == false`
            # (and `!= true`) is `not expr` for a computed boolean (function, comparison, ...)
            return a if (op == "eq") == c.value else self._not(a)
        if op == "ne" and x.op == "field":
            # ES translates `field != value` to must_not(term): true when the field is
            # missing.  `ne` stays only for computed operands (a script: null -> false).
            return self._not(self.node("eq", (a, b), type=T_BOOL))
        return self.node(op, (a, b), type=T_BOOL)

    def _date_field(self, nid: int) -> bool:
        node = self.n(nid)
        return node.op == "field" and self.schema.field(node.field_id).type.element is FieldType.DATE

    def _date_value(self, v: Any, pos: A.Pos) -> Any:
        """A constant compared with a date field, as the field's nanoseconds.  ES
        (test_queries_date.toml, ql BinaryComparisons/RangeQuery with the date
        field's default format strict_date_optional_time||epoch_millis): a string
        is an ISO 8601 date, a number is epoch milliseconds."""
        from ..timestamps import parse_timestamp

        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, str):
            try:
                return parse_timestamp(v, "iso8601")
            except ValueError as exc:
                self.fatal(f"invalid date {v!r}: {exc}", pos, len(v) + 2)
        if isinstance(v, (int, float)):
            try:
                return parse_timestamp(v, "epoch_ms")
            except ValueError as exc:  # beyond the range of event times, or not finite
                self.fatal(f"invalid date {v!r}: {exc}", pos, len(repr(v)))
        return v

    def _date_operands(self, a: int, b: int, pos: A.Pos) -> tuple[int, int]:
        if self._date_field(a) and self.is_const(b):
            return a, self.const(self._date_value(self.n(b).value, pos))
        if self._date_field(b) and self.is_const(a):
            return self.const(self._date_value(self.n(a).value, pos)), b
        return a, b

    def _compatible(self, a: int, b: int, e: A.Node) -> None:
        ta, tb = self.n(a).type, self.n(b).type
        if T_ANY in (ta, tb) or ta == tb:
            return
        if {ta, tb} == {T_STR, T_IP}:
            return
        fieldside = a if self.n(a).op == "field" else b if self.n(b).op == "field" else None
        other = b if fieldside == a else a
        if fieldside is not None:
            f = self.n(fieldside)
            self.check(
                f"type mismatch: field '{f.value}' is {_TYPE_WORD[f.type]}, compared with {_TYPE_WORD[self.n(other).type]}",
                e.pos,
                len(getattr(e, "op", "x")),
            )
        else:
            self.fatal(f"type mismatch: cannot compare {_TYPE_WORD[ta]} with {_TYPE_WORD[tb]}", e.pos)

    def _const_list(self, items: list, what: str) -> list[Any]:
        vals = []
        for it in items:
            nid = self.expr(it)
            if not self.is_const(nid):
                self.fatal(f"{what} takes constant values only", it.pos)
            vals.append(self.n(nid).value)
        return vals

    def x_In(self, e: A.In) -> int:
        x = self.expr(e.operand)
        vals = self._const_list(e.values, "'in'")
        if self._date_field(x) and not e.ci:
            vals = [self._date_value(v, it.pos) for it, v in zip(e.values, vals)]
        t = self.n(x).type
        for it, v in zip(e.values, vals):
            vt = _const_type(v)
            if vt != T_NULL and t not in (T_ANY, vt) and not ({t, vt} == {T_STR, T_IP}):
                if self.n(x).op == "field":
                    self.check(f"type mismatch: field '{self.n(x).value}' is {_TYPE_WORD[t]}, list has {_TYPE_WORD[vt]}", it.pos)
                else:
                    self.fatal(f"type mismatch: {_TYPE_WORD[t]} compared with {_TYPE_WORD[vt]}", it.pos)
            if e.ci and vt not in (T_STR, T_NULL):
                self.fatal("'in~' compares strings only", it.pos)
        vals = vals + self._renamed(x, vals, e.values[0].pos if e.values else e.pos, e.ci)
        if e.ci:
            vals = [fn.fold(v) for v in vals]
        # canonical order: deduplicated, sorted by (type, repr) so equal lists share a node
        uniq = tuple(sorted(set(vals), key=lambda v: (type(v).__name__, repr(v))))
        if self.is_const(x):
            has_null = None in uniq
            r = fn.in_(self.n(x).value, frozenset(v for v in uniq if v is not None), has_null, e.ci)
            nid = self.const(r)
        else:
            nid = self.node("in", (x,), value=uniq, ci=e.ci, type=T_BOOL)
        return self._not(nid) if e.negate else nid

    def x_Pattern(self, e: A.Pattern) -> int:
        x = self.expr(e.operand)
        what = {"seq": "':'", "like": "'like'", "regex": "'regex'"}[e.kind]
        pats = self._const_list(e.patterns, what)
        for it, p in zip(e.patterns, pats):
            if p is not None and not isinstance(p, str):
                self.fatal(f"{what} takes string patterns, got {_TYPE_WORD[_const_type(p)]}", it.pos)
        self._want(x, (T_STR,), e.operand.pos, f"the left side of {what}")
        if any(p is None for p in pats):
            return self.const(None)
        kind = "regex" if e.kind == "regex" else "wildcard"
        if kind == "regex":
            from .patterns import regex_warning

            for it, p in zip(e.patterns, pats):
                why = fn.pattern_error("regex", p, e.ci)
                if why is not None:
                    self.fatal(f"invalid regular expression {p!r}: {why}", it.pos, len(p) + 2)
                warning = regex_warning(p)
                if warning:  # linear here, but a cost the rule's author should know of
                    self.check(warning, it.pos, len(p) + 2)
        if kind == "wildcard":  # an exact pattern of an old value matches its current name too
            exact = [p for p in pats if "*" not in p and "?" not in p]
            pats = pats + self._renamed(x, exact, e.patterns[0].pos, e.ci)
        if e.ci and kind == "wildcard":
            pats = [p.lower() for p in pats]
        uniq = tuple(sorted(set(pats)))
        if self.is_const(x):
            return self.const(fn.pattern_match(kind, self.n(x).value, uniq, e.ci))
        return self.node(kind, (x,), value=uniq, ci=e.ci, type=T_BOOL)

    def _bool(self, nid: int, pos: A.Pos) -> int:
        t = self.n(nid).type
        if t not in (T_BOOL, T_ANY, T_NULL):
            self.fatal(f"expected a condition, got {_TYPE_WORD[t]}", pos)
        return nid

    def x_And(self, e: A.And) -> int:
        items: list[int] = []
        for it in e.items:
            nid = self._bool(self.expr(it), it.pos)
            node = self.n(nid)
            if node.op == "const":
                if node.value is False:
                    return self.const(False)
                if node.value is True:
                    continue
            items.extend(node.args if node.op == "and" else (nid,))
        items = list(dict.fromkeys(items))
        if not items:
            return self.const(True)
        if len(items) == 1:
            return items[0]
        return self.node("and", tuple(items), type=T_BOOL)

    def x_Or(self, e: A.Or) -> int:
        items: list[int] = []
        for it in e.items:
            nid = self._bool(self.expr(it), it.pos)
            node = self.n(nid)
            if node.op == "const":
                if node.value is True:
                    return self.const(True)
                if node.value is False:
                    continue
            items.extend(node.args if node.op == "or" else (nid,))
        items = list(dict.fromkeys(items))
        if not items:
            return self.const(False)
        if len(items) == 1:
            return items[0]
        return self.node("or", tuple(items), type=T_BOOL)

    def x_Not(self, e: A.Not) -> int:
        return self._not(self._bool(self.expr(e.operand), e.operand.pos))

    def _not(self, nid: int) -> int:
        node = self.n(nid)
        if node.op == "const":
            return self.const(None if node.value is None else not node.value)
        if node.op == "not":
            return node.args[0]
        return self.node("not", (nid,), type=T_BOOL)

    # ---------------------------------------------------------- queries
    def condition(self, q: A.EventQuery) -> int:
        nid = self.expr(q.expr)
        t = self.n(nid).type
        if t not in (T_BOOL, T_ANY, T_NULL):
            self.fatal(f"the condition after 'where' must be true or false, got {_TYPE_WORD[t]}", q.expr.pos)
        return nid

    def keys(self, fields: Iterable[A.Field]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
        ids = []
        nullable = []
        for f in fields:
            ids.append(self.expr(f))
            nullable.append(bool(f.optional))
        return tuple(ids), tuple(nullable)


def _nearest_field(schema: Schema, path: str) -> str | None:
    """The declared field closest to a misspelt ``path`` (difflib's ratio), if one is close."""
    import difflib

    known = [f.path for f in schema if f.declared and not f.deprecated]
    near = difflib.get_close_matches(path, known, n=1, cutoff=0.8)
    return near[0] if near else None


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(v)
    # keep 1, 1.0 and True apart in the dedup table
    return (type(v).__name__, v) if not isinstance(v, tuple) else v


def _prune(nodes: list[Node], roots: list[int]) -> tuple[tuple[Node, ...], dict[int, int]]:
    """Drop nodes no root reaches (list operands folded into in/wildcard
    nodes, folded constants); renumber the rest, keeping topological order."""
    live: set[int] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(nodes[n].args)
    remap: dict[int, int] = {}
    out: list[Node] = []
    for node in nodes:
        if node.id in live:
            remap[node.id] = len(out)
            out.append(attrs.evolve(node, id=len(out), args=tuple(remap[a] for a in node.args)))
    return tuple(out), remap


def _finish(q: Query) -> Query:
    steps = list(q.steps) + ([q.until] if q.until else [])
    roots = [x for s in steps for x in (s.pred, *s.keys)]
    nodes, remap = _prune(list(q.nodes), roots)

    def fix(s: Step) -> Step:
        return attrs.evolve(s, pred=remap[s.pred], keys=tuple(remap[k] for k in s.keys))

    return attrs.evolve(
        q, nodes=nodes, steps=tuple(fix(s) for s in q.steps), until=fix(q.until) if q.until else None
    )


def compile_query(
    text: str | A.Query,
    schema: Schema,
    *,
    strict: str = "warn",
    source_name: str | None = None,
) -> Query:
    """Parse (if needed), check and lower one query to IR.

    Raises :class:`EqlError` for syntax errors and (with ``strict="error"``)
    semantic problems; with ``strict="warn"`` these come back in
    ``Query.warnings``."""
    if strict not in STRICTNESS:
        raise ValueError(f"strict must be one of {', '.join(STRICTNESS)}, not {strict!r}")
    # Here, not at module level: lark and its grammar (~7 MB, ~10 MB built)
    # stay out of an agent whose compile cache holds every rule.
    from .parser import parse

    q = parse(text, source_name) if isinstance(text, str) else text
    try:
        return _lower(q, schema, strict, source_name)
    except RecursionError:
        lines = q.source.split("\n")
        raise EqlSemanticError(
            "the query is nested too deeply (simplify its not/-/function nesting)", 1, 1, source_name, lines[0]
        ) from None


def _lower(q: A.Query, schema: Schema, strict: str, source_name: str | None) -> Query:
    lines = q.source.split("\n")
    lw = _Lowerer(schema, strict, source_name, lines)
    body = q.body
    pipes = tuple((p.name, p.count) for p in q.pipes)
    if isinstance(body, A.EventQuery):
        pred = lw.condition(body)
        steps = (Step(0, body.category, pred),)
        return _finish(
            Query("event", tuple(lw.nodes), steps, None, None, pipes, tuple(lw.fields), q.source, tuple(lw.warnings))
        )
    seq_keys, seq_nullable = lw.keys(body.by)
    steps = []
    for st in body.steps:
        pred = lw.condition(st.query)
        k, kn = lw.keys(st.keys)
        for _ in range(st.runs):
            steps.append(Step(len(steps), st.query.category, pred, seq_keys + k, seq_nullable + kn, st.missing))
    until = None
    if body.until is not None:
        pred = lw.condition(body.until.query)
        k, kn = lw.keys(body.until.keys)
        until = Step(len(steps), body.until.query.category, pred, seq_keys + k, seq_nullable + kn)
    return _finish(
        Query(
            "sequence",
            tuple(lw.nodes),
            tuple(steps),
            until,
            body.maxspan_ns,
            pipes,
            tuple(lw.fields),
            q.source,
            tuple(lw.warnings),
        )
    )
