"""Host predicate runtime: IR predicates compiled to Python source.

Each predicate is compiled into two Python functions built with
``compile()`` (the safe one on its first use):

* a **fast** one: list comprehensions over a batch, field ids inlined as int
  literals, constants bound as globals (frozensets for ``in``, precompiled
  regexes, ``str.startswith`` tuples for wildcard prefixes), three-valued
  leaves turned into two-valued code by compiling every boolean node in both
  polarities (``T(x)``: x is true; ``F(x)``: x is false; null is neither).
  ``not`` is Elasticsearch's ``must_not``: true unless its operand is true
  (docs/eql-semantics.md, "Values and null"), so ``T(not x)`` is
  ``not T(x)``.  It trusts the schema's declared field types;
* a **safe** one calling the reference helpers of
  :mod:`kestrel_core.eql.functions`, which never raise.

A batch runs through the fast function; if it raises (a value of an
undeclared type where a declared one was promised), the batch is re-run
through the safe function.  Both give the same answers on well-typed events
(tests/eql/test_runtime_equivalence.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..interfaces import CompiledPredicate, PredicateRuntime
from ..schema import Schema
from . import functions as fn
from .ir import T_ANY, T_BOOL, T_IP, T_NUM, T_STR, Node, Predicate, _const_type


class HostPredicate(CompiledPredicate):
    """A compiled predicate.  ``select*`` are the engine's entry points."""

    def __init__(self, fast: dict[str, Callable], safe: dict[str, Callable] | None, source: str, safe_source: str,
                 safe_ns: dict[str, Any] | None = None) -> None:
        self._fast = fast
        self._safe_fns = safe
        self._safe_ns = safe_ns
        self.source = source
        self.safe_source = safe_source
        self.fallbacks = 0
        """Batches the fast code could not handle (re-run safely)."""

    @property
    def _safe(self) -> dict[str, Callable]:
        """The safe functions, compiled on first use: only a batch the fast code
        cannot handle needs them, and compiling both halved a pack's load time."""
        if self._safe_fns is None:
            self._safe_fns = _exec(self.safe_source, self._safe_ns)
            self._safe_ns = None
        return self._safe_fns

    def _run(self, name: str, events: Sequence[Any]) -> Any:
        try:
            return self._fast[name](events)
        except Exception:
            self.fallbacks += 1
            return self._safe[name](events)

    def eval_batch(self, events: Sequence[Any]) -> list[bool]:
        return self._run("truth", events)

    def select(self, events: Sequence[Any]) -> list[Any]:
        """Events that match, category checked."""
        return self._run("select", events)

    def select_nocat(self, events: Sequence[Any]) -> list[Any]:
        """Events that match, assuming the caller already checked the category."""
        return self._run("select_nocat", events)

    def select_idx(self, events: Sequence[Any]) -> list[int]:
        """Indices of matching events (category checked)."""
        return self._run("select_idx", events)

    def select_idx_nocat(self, events: Sequence[Any]) -> list[int]:
        return self._run("select_idx_nocat", events)

    def matches(self, event: Any) -> bool:
        return bool(self._run("select", (event,)))


class HostRuntime(PredicateRuntime):
    """Compiles IR predicates to Python; the default runtime."""

    PLUGIN_NAME = "host"
    DESCRIPTION = "EQL predicates compiled to Python bytecode, evaluated in batches"

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)

    def compile(self, predicate: Predicate, schema: Schema, *, category_field: str = "event.category") -> HostPredicate:
        cat_fid = schema.resolve(category_field)
        fast_src, fast_ns = _Gen(predicate, schema, cat_fid, fast=True).module()
        safe_src, safe_ns = _Gen(predicate, schema, cat_fid, fast=False).module()
        fast = _exec(fast_src, fast_ns)
        return HostPredicate(fast, None, fast_src, safe_src, safe_ns)


def _exec(src: str, ns: dict[str, Any]) -> dict[str, Callable]:
    from . import compilecache

    code = compilecache.compile_code(src, "<eql-predicate>")
    exec(code, ns)
    return {k: ns[k] for k in ("truth", "select", "select_nocat", "select_idx", "select_idx_nocat")}


# --------------------------------------------------------------------------- codegen


def _wild_parts(pattern: str) -> tuple[str, str] | None:
    """Classify a lower-level wildcard pattern: ('exact'|'prefix'|'suffix'|'contains', literal)."""
    body = pattern
    if "?" in body:
        return None
    stars = body.count("*")
    if stars == 0:
        return ("exact", body)
    if stars == 1 and body.endswith("*"):
        return ("prefix", body[:-1])
    if stars == 1 and body.startswith("*"):
        return ("suffix", body[1:])
    if stars == 2 and body.startswith("*") and body.endswith("*") and len(body) > 2:
        return ("contains", body[1:-1])
    if body == "*":
        return ("prefix", "")
    return None


class _Gen:
    def __init__(self, pred: Predicate, schema: Schema, cat_fid: int, *, fast: bool) -> None:
        self.nodes = pred.nodes
        self.root = pred.root
        self.category = pred.category
        self.schema = schema
        self.cat_fid = cat_fid
        self.fast = fast
        self.ns: dict[str, Any] = {
            "_fn": fn,
            "_eq": fn.eq,
            "_ne": fn.ne,
            "_lt": fn.lt,
            "_le": fn.le,
            "_gt": fn.gt,
            "_ge": fn.ge,
            "_in": fn.in_,
            "_pm": fn.pattern_match,
            "_isnull": fn.is_null,
            "_call": fn.call,
            "_neg": fn.neg,
            "_and3": _and3,
            "_or3": _or3,
            "_not3": _not3,
            "_truth": _truth,
        }
        self.consts: dict[Any, str] = {}
        self.nvars = 0

    # ------------------------------------------------------------ helpers
    def k(self, value: Any) -> str:
        """A name bound to ``value`` in the generated module's globals (one per distinct value)."""
        key = (type(value).__name__, value)  # 1, 1.0 and True stay apart
        name = self.consts.get(key)
        if name is None:
            name = self.consts[key] = f"_k{len(self.ns)}"
            self.ns[name] = value
        return name

    def var(self) -> str:
        self.nvars += 1
        return f"_v{self.nvars}"

    def field_get(self, node: Node) -> str:
        return f"F.get({node.field_id})"

    def scalar_field(self, nid: int) -> Node | None:
        """The field node if ``nid`` is a declared single-valued field."""
        node = self.nodes[nid]
        if node.op == "field" and not node.multi and node.type != T_ANY:
            return node
        return None

    def list_field(self, nid: int) -> Node | None:
        """The field node if ``nid`` is a declared list-of-strings field."""
        node = self.nodes[nid]
        if node.op != "field" or node.type not in (T_STR, T_IP):
            return None
        fdef = self.schema.field(node.field_id)
        if fdef.declared and fdef.type.is_list:
            return node
        return None

    # ------------------------------------------------------------ generic (safe) code
    def V(self, nid: int) -> str:
        node = self.nodes[nid]
        op = node.op
        if op == "const":
            return self.k(node.value) if not isinstance(node.value, (bool, type(None), int)) else repr(node.value)
        if op == "field":
            return self.field_get(node)
        if op == "neg":
            return f"_neg({self.V(node.args[0])})"
        if op == "call":
            args = ", ".join(self.V(a) for a in node.args)
            if node.value == "cidrMatch" and all(self.nodes[a].op == "const" for a in node.args[1:]):
                m = self.k(fn.cidr_matcher(tuple(self.nodes[a].value for a in node.args[1:])))
                return f"{m}({self.V(node.args[0])})"
            return f"_call({node.value!r}, {node.ci!r}, ({args},))"
        # a boolean node used as a value
        return self.tri(nid)

    def tri(self, nid: int) -> str:
        """Expression giving True / False / None."""
        node = self.nodes[nid]
        op = node.op
        a = node.args
        if op == "const":
            return repr(node.value) if isinstance(node.value, (bool, type(None))) else f"_truth({self.V(nid)})"
        if op == "field":
            return f"_truth({self.V(nid)})"
        if op == "and":
            return "_and3(" + ", ".join(f"lambda: {self.tri(x)}" for x in a) + ")"
        if op == "or":
            return "_or3(" + ", ".join(f"lambda: {self.tri(x)}" for x in a) + ")"
        if op == "not":
            return f"_fn.logic_not({self.tri(a[0])})"
        if op in ("eq", "ne", "lt", "le", "gt", "ge"):
            return f"_{op}({self.V(a[0])}, {self.V(a[1])})"
        if op == "is_null":
            return f"_isnull({self.V(a[0])})"
        if op == "not_null":
            return f"(not _isnull({self.V(a[0])}))"
        if op == "in":
            vals = node.value
            s = self.k(frozenset(v for v in vals if v is not None))
            return f"_in({self.V(a[0])}, {s}, {None in vals!r}, {node.ci!r})"
        if op in ("wildcard", "regex"):
            return f"_pm({op!r}, {self.V(a[0])}, {self.k(tuple(node.value))}, {node.ci!r})"
        if op == "call":
            return f"_truth({self.V(nid)})"
        if op == "neg":
            return "None"
        raise AssertionError(op)

    # ------------------------------------------------------------ two-polarity (fast) code
    def T(self, nid: int) -> str:
        node = self.nodes[nid]
        if node.op == "and":
            return "(" + " and ".join(self.T(x) for x in node.args) + ")"
        if node.op == "or":
            return "(" + " or ".join(self.T(x) for x in node.args) + ")"
        if node.op == "not":
            # two-valued: `not x` is true unless x is true (a null x makes it true)
            return f"(not {self.T(node.args[0])})"
        if node.op == "const":
            return "True" if node.value is True else "False"
        if self.fast:
            leaf = self.fast_leaf(nid)
            if leaf is not None:
                return leaf[0]
        return f"({self.tri(nid)} is True)"

    def F(self, nid: int) -> str:
        node = self.nodes[nid]
        if node.op == "and":
            return "(" + " or ".join(self.F(x) for x in node.args) + ")"
        if node.op == "or":
            return "(" + " and ".join(self.F(x) for x in node.args) + ")"
        if node.op == "not":
            return self.T(node.args[0])
        if node.op == "const":
            return "True" if node.value is False else "False"
        if self.fast:
            leaf = self.fast_leaf(nid)
            if leaf is not None:
                return leaf[1]
        return f"({self.tri(nid)} is False)"

    def fast_leaf(self, nid: int) -> tuple[str, str] | None:
        """(T, F) for common leaf shapes over declared fields, or None."""
        node = self.nodes[nid]
        op = node.op
        if op in ("eq", "ne", "lt", "le", "gt", "ge"):
            return self._fast_compare(node)
        if op in ("is_null", "not_null"):
            f = self.scalar_field(node.args[0])
            if f is None:
                return None
            t, fl = f"({self.field_get(f)} is None)", f"({self.field_get(f)} is not None)"
            return (t, fl) if op == "is_null" else (fl, t)
        if op == "in":
            return self._fast_in(node)
        if op == "wildcard":
            return self._fast_wildcard(node)
        if op == "regex":
            return self._fast_regex(node)
        if op == "call":
            return self._fast_call(node)
        return None

    def _fast_compare(self, node: Node) -> tuple[str, str] | None:
        a, b = node.args
        cnode = self.nodes[b]
        if cnode.op != "const":
            return None
        c = cnode.value
        ctype = cnode.type
        f = self.scalar_field(a)
        op = node.op
        pyop = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
        neg = {"eq": "!=", "ne": "==", "lt": ">=", "le": ">", "gt": "<=", "ge": "<"}[op]
        if f is not None:
            ftype = f.type if f.type != T_IP else T_STR
            if ftype != ctype:
                return None
            kc = self.k(c) if isinstance(c, str) else repr(c)
            v = self.var()
            get = self.field_get(f)
            if op == "eq":
                return (f"({get} == {kc})", f"(({v} := {get}) is not None and {v} != {kc})")
            if op == "ne":
                return (f"(({v} := {get}) is not None and {v} != {kc})", f"({get} == {kc})")
            return (f"(({v} := {get}) is not None and {v} {pyop} {kc})", f"(({v} := {get}) is not None and {v} {neg} {kc})")
        lf = self.list_field(a)
        if lf is not None and isinstance(c, str) and op in ("eq", "ne"):
            v = self.var()
            kc = self.k(c)
            get = self.field_get(lf)
            t = f"({kc} in ({get} or ()))"
            fl = f"(bool({v} := {get}) and {kc} not in {v})"
            return (t, fl) if op == "eq" else (fl, t)
        return None

    def _fast_in(self, node: Node) -> tuple[str, str] | None:
        vals = node.value
        has_null = None in vals
        consts = [x for x in vals if x is not None]
        f = self.scalar_field(node.args[0])
        lf = self.list_field(node.args[0]) if f is None else None
        target = f or lf
        if target is None:
            return None
        ftype = target.type if target.type != T_IP else T_STR
        if any(fn_type(x) != ftype for x in consts):
            return None
        s = self.k(frozenset(consts))
        v = self.var()
        get = self.field_get(target)
        if f is not None:
            if node.ci:
                t = f"(({v} := {get}) is not None and {v}.lower() in {s})"
                fl = "False" if has_null else f"(({v} := {get}) is not None and {v}.lower() not in {s})"
            else:
                t = f"({get} in {s})"
                fl = "False" if has_null else f"(({v} := {get}) is not None and {v} not in {s})"
            return (t, fl)
        # list field: any element in the set
        if node.ci:
            t = f"(not {s}.isdisjoint([_x.lower() for _x in ({get} or ())]))"
            fl = "False" if has_null else f"(bool({v} := {get}) and {s}.isdisjoint([_x.lower() for _x in {v}]))"
        else:
            t = f"(not {s}.isdisjoint({get} or ()))"
            fl = "False" if has_null else f"(bool({v} := {get}) and {s}.isdisjoint({v}))"
        return (t, fl)

    def _string_test(self, var: str, node: Node) -> str:
        """Boolean expression over string ``var`` for a wildcard/regex node."""
        pats = node.value
        if node.op == "regex":
            m = self.k(fn.compile_patterns("regex", tuple(pats), node.ci))
            return f"({m}({var}) is not None)"
        exact, prefix, suffix, contains, rest = [], [], [], [], []
        for p in pats:
            kind = _wild_parts(p)
            if kind is None:
                rest.append(p)
            else:
                {"exact": exact, "prefix": prefix, "suffix": suffix, "contains": contains}[kind[0]].append(kind[1])
        if "" in prefix or "" in suffix:
            return "True"
        w = var
        tests = []
        if exact:
            tests.append(f"{w} == {self.k(exact[0])}" if len(exact) == 1 else f"{w} in {self.k(frozenset(exact))}")
        if prefix:
            tests.append(f"{w}.startswith({self.k(tuple(prefix)) if len(prefix) > 1 else self.k(prefix[0])})")
        if suffix:
            tests.append(f"{w}.endswith({self.k(tuple(suffix)) if len(suffix) > 1 else self.k(suffix[0])})")
        for c in contains:
            tests.append(f"{self.k(c)} in {w}")
        if rest:
            m = self.k(fn.compile_patterns("wildcard", tuple(rest), False))
            tests.append(f"{m}({w}) is not None")
        return "(" + " or ".join(tests) + ")"

    def _fast_wildcard(self, node: Node) -> tuple[str, str] | None:
        return self._fast_pattern(node)

    def _fast_regex(self, node: Node) -> tuple[str, str] | None:
        return self._fast_pattern(node)

    def _fast_pattern(self, node: Node) -> tuple[str, str] | None:
        f = self.scalar_field(node.args[0])
        lf = self.list_field(node.args[0]) if f is None else None
        if f is None and lf is None:
            return None
        if (f or lf).type not in (T_STR, T_IP):
            return None
        v = self.var()
        get = self.field_get(f or lf)
        lower = node.ci and node.op == "wildcard"
        if f is not None:
            w = self.var()
            if lower:
                test = self._string_test(w, node)
                t = f"(({v} := {get}) is not None and (({w} := {v}.lower()) is not None) and {test})"
                fl = f"(({v} := {get}) is not None and (({w} := {v}.lower()) is not None) and not {test})"
            else:
                test = self._string_test(v, node)
                t = f"(({v} := {get}) is not None and {test})"
                fl = f"(({v} := {get}) is not None and not {test})"
            return (t, fl)
        x = "_x"
        test = self._string_test(x, node)
        src = f"({get} or ())"
        gen = f"[_x.lower() for _x in {src}]" if lower else src
        t = f"any({test} for _x in {gen})"
        gen2 = f"[_x.lower() for _x in {v}]" if lower else v
        fl = f"(bool({v} := {get}) and not any({test} for _x in {gen2}))"
        return (t, fl)

    def _fast_call(self, node: Node) -> tuple[str, str] | None:
        name = node.value
        args = node.args
        if name in ("startsWith", "endsWith", "stringContains") and len(args) == 2:
            f = self.scalar_field(args[0])
            c = self.nodes[args[1]]
            if f is None or f.type not in (T_STR, T_IP) or c.op != "const" or not isinstance(c.value, str):
                return None
            lit = c.value.lower() if node.ci else c.value
            if name == "stringContains" and lit == "":
                return ("False", f"({self.field_get(f)} is not None)")
            v = self.var()
            get = self.field_get(f)
            s = f"{v}.lower()" if node.ci else v
            kc = self.k(lit)
            test = {"startsWith": f"{s}.startswith({kc})", "endsWith": f"{s}.endswith({kc})", "stringContains": f"{kc} in {s}"}[name]
            return (f"(({v} := {get}) is not None and {test})", f"(({v} := {get}) is not None and not {test})")
        if name == "cidrMatch" and all(self.nodes[a].op == "const" for a in args[1:]):
            m = self.k(fn.cidr_matcher(tuple(self.nodes[a].value for a in args[1:])))
            val = self.V(args[0])
            return (f"({m}({val}) is True)", f"({m}({val}) is False)")
        return None

    # ------------------------------------------------------------ module
    def cat_test(self) -> str:
        if self.category is None:
            return ""
        c = self.k(self.category)
        v = self.var()
        return f"(e.category == {c} or (({v} := F.get({self.cat_fid})).__class__ is list and {c} in {v})) and "

    def module(self) -> tuple[str, dict[str, Any]]:
        t = self.T(self.root)
        cat = self.cat_test()
        loop = "for e in events for F in (e.fields,)"
        iloop = "for i, e in enumerate(events) for F in (e.fields,)"
        src = f"""
def truth(events):
    return [bool({cat}{t}) {loop}]

def select(events):
    return [e {loop} if {cat}{t}]

def select_nocat(events):
    return [e {loop} if {t}]

def select_idx(events):
    return [i {iloop} if {cat}{t}]

def select_idx_nocat(events):
    return [i {iloop} if {t}]
"""
        return src, self.ns


def fn_type(v: Any) -> str:
    """Type word of a constant, with null as "any" (it fits every slot)."""
    return T_ANY if v is None else _const_type(v)


def _truth(v: Any) -> bool | None:
    v = fn.norm(v)
    if v is None:
        return None
    if v is True or v is False:
        return v
    if v.__class__ is list:
        rs = [_truth(x) for x in v]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    return None


def _and3(*thunks: Callable[[], Any]) -> bool | None:
    unknown = False
    for t in thunks:
        r = t()
        if r is False:
            return False
        if r is not True:
            unknown = True
    return None if unknown else True


def _or3(*thunks: Callable[[], Any]) -> bool | None:
    unknown = False
    for t in thunks:
        r = t()
        if r is True:
            return True
        if r is not False:
            unknown = True
    return None if unknown else False


def _not3(v: Any) -> bool | None:
    if v is True:
        return False
    if v is False:
        return True
    return None
