"""Literal index of single-event rules (the built-in matcher).

For each rule the index looks for a *necessary literal condition*: a set of
alternatives ``(field, kind, literal)`` at least one of which holds whenever
the rule's condition is true.  It is read off the IR:

* ``field == "lit"`` / ``field in (...)``                 -> exact literals
* ``field : ("a", "b*", "*c", "*d*")`` (and ``like``/``like~``)
                                                        -> exact / prefix / suffix / contains
* ``a and b``: the better of the two; ``a or b``: the union of both (same field)

Matching is done on the case-folded value (``str.lower``) for every kind, a
superset of the case-sensitive test, so one table per field serves ``==``,
``:`` and ``like`` alike.  Numbers go into the exact table as they are.

Per category and per indexed field, a batch is scanned once: each event's
value is looked up in the exact dict, in one dict per distinct prefix and
suffix length (``w[:n]``, ``w[-n:]``), and tested for each contained
literal.  Only the rules named become candidates for that event; the rule's
full predicate then runs on its candidate events.  Rules without such a
condition run on every event of their category.  The index never drops a
rule that could match (the literal condition is necessary), so results equal
the plain evaluator's (tests/eql/test_engine.py checks this).
"""

from __future__ import annotations

import re

from typing import Any, Iterator, Sequence

from ..interfaces import Matcher
from ..schema import Schema
from . import ir
from .hostruntime import _wild_parts

Alt = tuple[str, Any]  # (kind, literal): kind in exact | prefix | suffix | contains

_KIND_SCORE = {"exact": 4, "prefix": 2, "suffix": 2, "contains": 1}


def _lit(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


Key = tuple  # ((field id, frozenset[Alt]), ...): a disjunction over fields


def _options(query: ir.Query, nid: int) -> list[Key]:
    """Every necessary literal condition of node ``nid`` (one per usable conjunct)."""
    n = query.nodes[nid]
    if n.op == "and":
        return [k for a in n.args for k in _options(query, a)]
    k = _key(query, nid)
    return [k] if k is not None else []


def _key(query: ir.Query, nid: int) -> Key | None:
    """Alternatives, possibly over several fields, one of which holds when ``nid`` is true."""
    nodes = query.nodes
    n = nodes[nid]
    if n.op == "and":
        best = None
        for a in n.args:
            r = _key(query, a)
            if r is not None and (best is None or _kscore(query, r) > _kscore(query, best)):
                best = r
        return best
    if n.op == "or":
        merged: dict[int, set] = {}
        for a in n.args:
            r = _key(query, a)
            if r is None:
                return None
            for fid, alts in r:
                merged.setdefault(fid, set()).update(alts)
        return tuple((fid, frozenset(alts)) for fid, alts in merged.items())
    r = _alts(query, nid)
    return None if r is None else (r,)


def _kscore(query: ir.Query, key: Key) -> float:
    return min(_score(query, k) for k in key) - 5 * (len(key) - 1)


def _alts(query: ir.Query, nid: int) -> tuple[int, frozenset[Alt]] | None:
    """(field id, alternatives) such that leaf ``nid`` true implies one alternative holds."""
    nodes = query.nodes
    n = nodes[nid]
    if n.op == "eq":
        f, c = nodes[n.args[0]], nodes[n.args[1]]
        if f.op == "field" and c.op == "const" and c.value is not None and not isinstance(c.value, bool):
            return f.field_id, frozenset({("exact", _lit(c.value))})
        return None
    if n.op == "in":
        f = nodes[n.args[0]]
        vals = [v for v in n.value if v is not None]
        if f.op == "field" and vals and not any(isinstance(v, bool) for v in vals):
            return f.field_id, frozenset(("exact", _lit(v)) for v in vals)
        return None
    if n.op == "wildcard":
        f = nodes[n.args[0]]
        if f.op != "field":
            return None
        alts = set()
        for p in n.value:
            kind = _wild_parts(p.lower())
            if kind is None:
                # a pattern with '?' or inner '*': use its longest literal run as a 'contains'
                runs = [r for r in p.lower().replace("?", "*").split("*") if r]
                if not runs:
                    return None
                kind = ("contains", max(runs, key=len))
            if kind[1] == "" and kind[0] != "exact":
                return None  # '*' matches anything
            alts.add(kind)
        return f.field_id, frozenset(alts)
    if n.op == "call" and n.value in ("startsWith", "endsWith", "stringContains") and len(n.args) == 2:
        f, c = nodes[n.args[0]], nodes[n.args[1]]
        if f.op == "field" and c.op == "const" and isinstance(c.value, str) and c.value:
            kind = {"startsWith": "prefix", "endsWith": "suffix", "stringContains": "contains"}[n.value]
            return f.field_id, frozenset({(kind, c.value.lower())})
        return None
    return None  # and/or are combined by _key, which calls this only on leaves


_WEAK_PREFIXES = ("event.", "host.", "agent.", "@timestamp")


def _score(query: ir.Query, key: tuple[int, frozenset[Alt]]) -> float:
    """Higher is more selective (a guess: no statistics are kept)."""
    fid, alts = key
    path = next((n.value for n in query.nodes if n.op == "field" and n.field_id == fid), "")
    weakest = min(_KIND_SCORE[k] for k, _ in alts)
    score = weakest * 10 - min(len(alts), 9)
    if path.startswith(_WEAK_PREFIXES):
        score -= 100
    field = next((n for n in query.nodes if n.op == "field" and n.field_id == fid), None)
    if field is not None and field.multi:
        score -= 5  # scanning a list costs more than a scalar
    return score


class _FieldTable:
    """Literals of one field (case-folded), with a generated batch prefilter."""

    __slots__ = ("fid", "exact", "prefix", "suffix", "contains", "contains_any", "scan", "group", "only", "pairs", "pre_k",
                 "pre_buckets", "suf_k", "suf_buckets")

    def __init__(self, fid: int) -> None:
        self.fid = fid
        self.exact: dict[Any, list[int]] = {}
        self.prefix: dict[int, dict[str, list[int]]] = {}
        self.suffix: dict[int, dict[str, list[int]]] = {}
        self.contains: dict[str, list[int]] = {}
        self.scan: Any = None
        self.group: Any = None
        """For string fields of several rules: ``group(events) -> {value: positions}`` of
        the events that hit a literal, each distinct value tested once (built by ``build``)."""
        self.only: int | None = None
        """The table's one rule, when it has only one (no per-event rule lookup)."""
        self.pairs = False
        """scan() yields (position, rule list) pairs (exact-only string tables)."""
        self.pre_k = self.suf_k = 0
        self.pre_buckets: dict[str, list[tuple[str, list[int]]]] | None = None
        """Prefixes by their first ``pre_k`` characters (the shortest prefix's length):
        one slice and one lookup per value instead of one per prefix length (built by ``build``)."""
        self.suf_buckets: dict[str, list[tuple[str, list[int]]]] | None = None
        self.contains_any: Any = None
        """``search(w)`` of a regex of every contains literal: most values hold none (built by ``build``)."""

    def add(self, kind: str, lit: Any, ridx: int) -> None:
        if kind == "exact":
            table = self.exact
        elif kind == "contains":
            table = self.contains
        else:
            table = (self.prefix if kind == "prefix" else self.suffix).setdefault(len(lit), {})
        lst = table.setdefault(lit, [])
        if ridx not in lst:
            lst.append(ridx)

    def rules_for(self, w: Any, out: set[int]) -> None:
        """Add the rules whose literal matches the (folded) value ``w``."""
        if w.__class__ in (dict, list):
            return
        rs = self.exact.get(w)
        if rs:
            out.update(rs)
        if w.__class__ is not str:
            return
        if self.pre_buckets is not None:
            for p, rs in self.pre_buckets.get(w[:self.pre_k], ()):
                if w.startswith(p):
                    out.update(rs)
        else:
            for n, table in self.prefix.items():
                rs = table.get(w[:n])
                if rs:
                    out.update(rs)
        if self.suf_buckets is not None:
            for x, rs in self.suf_buckets.get(w[-self.suf_k:], ()):
                if w.endswith(x):
                    out.update(rs)
        else:
            for n, table in self.suffix.items():
                rs = table.get(w[-n:]) if n else None
                if rs:
                    out.update(rs)
        if self.contains_any is not None and self.contains_any(w) is not None:  # one C scan, then which
            for lit, rs in self.contains.items():
                if lit in w:
                    out.update(rs)

    def rule_ids(self) -> set[int]:
        out: set[int] = set()
        for rs in self.exact.values():
            out.update(rs)
        for t in (*self.prefix.values(), *self.suffix.values(), self.contains):
            for rs in t.values():
                out.update(rs)
        return out

    def collect(self, events: Sequence[Any]) -> dict[int, list[int]]:
        """rule -> sorted positions of the events whose value hits one of its literals."""
        if self.group is not None:
            try:
                by_value = self.group(events)
            except Exception:  # a value of an undeclared type: take the generic path
                by_value = None
            if by_value is not None:
                return self._by_value(by_value)
        positions = None
        if self.scan is not None:
            try:
                positions = self.scan(events)
            except Exception:  # a value of an undeclared type: take the generic path
                positions = None
        if positions is None:
            positions = range(len(events))
        elif not positions:
            return {}
        elif self.pairs:
            cands: dict[int, list[int]] = {}
            for j, rs in positions:
                for r in rs:
                    lst = cands.get(r)
                    if lst is None:
                        cands[r] = [j]
                    else:
                        lst.append(j)
            return cands
        only = self.only
        if only is not None:
            if isinstance(positions, range):
                positions = [j for j in positions if self._hits(events[j])]
            return {only: list(positions)} if positions else {}
        cands: dict[int, list[int]] = {}
        fid = self.fid
        hit: set[int] = set()
        rules_for = self.rules_for
        # A batch often repeats a value (one process opening the same files, one
        # executable's events): its rules are looked up once per batch.
        seen: dict[str, tuple[int, ...]] = {}
        for j in positions:
            v = events[j].fields.get(fid)
            if v is None:
                continue
            if v.__class__ is str:
                rs = seen.get(v)
                if rs is None:
                    hit.clear()
                    rules_for(v.lower(), hit)
                    rs = seen[v] = tuple(hit)
            else:
                hit.clear()
                if v.__class__ is list:
                    for x in v:
                        rules_for(x.lower() if x.__class__ is str else x, hit)
                else:
                    rules_for(v, hit)
                rs = tuple(hit)
            for r in rs:
                lst = cands.get(r)
                if lst is None:
                    cands[r] = [j]
                else:
                    lst.append(j)
        return cands

    def _by_value(self, by_value: dict[str, list[int]]) -> dict[int, list[int]]:
        """rule -> sorted positions, from the positions of each distinct hitting value:
        the rules of a value are looked up once, and its positions handed over as a list."""
        cands: dict[int, list[int]] = {}
        merged: set[int] = set()
        rules_for, hit = self.rules_for, set()
        for v, pos in by_value.items():
            hit.clear()
            rules_for(v.lower(), hit)
            for r in hit:
                prev = cands.get(r)
                if prev is None:
                    cands[r] = pos  # shared between rules: never changed in place
                elif r in merged:
                    prev.extend(pos)  # this rule's own list already
                else:
                    cands[r] = prev + pos
                    merged.add(r)
        for r in merged:
            cands[r].sort()
        return cands

    def _hits(self, e: Any) -> bool:
        v = e.fields.get(self.fid)
        if v is None:
            return False
        hit: set[int] = set()
        for x in v if v.__class__ is list else (v,):
            self.rules_for(x.lower() if x.__class__ is str else x, hit)
        return bool(hit)

    @staticmethod
    def _buckets(by_len: dict[int, dict[str, list[int]]],
                 cut: Any) -> tuple[int, dict[str, list[tuple[str, list[int]]]] | None]:
        k = min(by_len, default=0)
        if k <= 0:
            return 0, None
        buckets: dict[str, list[tuple[str, list[int]]]] = {}
        for table in by_len.values():
            for lit, rs in table.items():
                buckets.setdefault(cut(lit, k), []).append((lit, rs))
        return k, buckets

    def build(self, schema: Schema) -> None:
        """Generate ``scan(events) -> positions`` of events that hit any literal."""
        ids = self.rule_ids()
        self.only = next(iter(ids)) if len(ids) == 1 else None
        self.pre_k, self.pre_buckets = self._buckets(self.prefix, lambda lit, k: lit[:k])
        self.suf_k, self.suf_buckets = self._buckets(self.suffix, lambda lit, k: lit[-k:])
        ns: dict[str, Any] = {}
        strs = frozenset(k for k in self.exact if isinstance(k, str))
        nums = frozenset(k for k in self.exact if not isinstance(k, str))
        prefixes = tuple(sorted(p for t in self.prefix.values() for p in t))
        suffixes = tuple(sorted(x for t in self.suffix.values() for x in t))
        contains = sorted(self.contains)
        self.contains_any = re.compile("|".join(re.escape(c) for c in contains)).search if contains else None
        ns.update(STRS=strs, NUMS=nums, PRE=prefixes, SUF=suffixes)
        tests = []
        if strs:
            tests.append("w in STRS")
        if prefixes:
            tests.append("w.startswith(PRE)")
        if suffixes:
            tests.append("w.endswith(SUF)")
        if len(contains) > 6:
            ns["CRX"] = self.contains_any
            tests.append("CRX(w) is not None")
        else:
            for n, c in enumerate(contains):
                ns[f"C{n}"] = c
                tests.append(f"C{n} in w")
        str_test = " or ".join(tests) or "False"
        fdef = schema.field(self.fid)
        t = fdef.type
        from ..schema import FieldType

        fid = self.fid
        exact_only = not (prefixes or suffixes or contains)
        self.pairs = False
        self.group = None
        ns["EXG"] = self.exact.get
        ns["LOWER"] = str.lower
        if fdef.declared and t in (FieldType.KEYWORD, FieldType.IP):
            if exact_only and self.only is None:
                # one dict lookup gives the rules: no second pass per hit
                self.pairs = True
                body = f"[(j, rs) for j, e in enumerate(events) if (v := e.fields.get({fid})) is not None and (rs := EXG(v.lower()))]"
            elif exact_only:
                body = f"[j for j, e in enumerate(events) if (v := e.fields.get({fid})) is not None and v.lower() in STRS]"
            else:
                body = f"[j for j, e in enumerate(events) if (v := e.fields.get({fid})) is not None and ((w := v.lower()) is v or True) and ({str_test})]"
                if self.only is None:
                    group_src = (
                        "def group(events):\n"
                        "    out, neg = {}, set()\n"
                        "    get, add = out.get, neg.add\n"
                        "    for j, e in enumerate(events):\n"
                        f"        v = e.fields.get({fid})\n"
                        "        if v is None:\n"
                        "            continue\n"
                        "        lst = get(v)\n"
                        "        if lst is not None:\n"
                        "            lst.append(j)\n"
                        "        elif v not in neg:\n"
                        "            w = v.lower()\n"
                        f"            if {str_test}:\n"
                        "                out[v] = [j]\n"
                        "            else:\n"
                        "                add(v)\n"
                        "    return out\n")
                    exec(compile(group_src, "<eql-index>", "exec"), ns)
                    self.group = ns["group"]
        elif fdef.declared and t.is_numeric:
            body = f"[j for j, e in enumerate(events) if e.fields.get({fid}) in NUMS]" if nums else "[]"
        elif fdef.declared and t in (FieldType.KEYWORD_LIST, FieldType.IP_LIST):
            if exact_only:
                # C-level: lower-case every element and test membership without a Python frame
                body = f"[j for j, e in enumerate(events) if (v := e.fields.get({fid})) and not STRS.isdisjoint(map(LOWER, v))]"
            else:
                body = f"[j for j, e in enumerate(events) if (v := e.fields.get({fid})) and any(({str_test}) for w in map(LOWER, v))]"
        else:
            body = None
        if body is None:
            self.scan = None
            return
        src = f"def scan(events):\n    return {body}\n"
        exec(compile(src, "<eql-index>", "exec"), ns)
        self.scan = ns["scan"]


class RuleIndex:
    """Category -> literal index over predicates (single-event rules and sequence steps)."""

    def __init__(self, schema: Schema, rules: Sequence[tuple[int, ir.Query, int, str | None]]) -> None:
        """``rules``: (id, query, root node id, category) per predicate to index."""
        self.any_rules: list[int] = []
        self.always: dict[str, list[int]] = {}
        """category -> predicates that run on every event of the category."""
        self.tables: dict[str, list[_FieldTable]] = {}
        self.keys: dict[int, Key] = {}
        """predicate -> the literal condition it is filed under (for tests and docs)."""
        # Each predicate is filed under one of its literal conditions.  Every
        # table costs one scan of its category per batch, so a condition on a
        # field many predicates can use is preferred over a slightly more
        # selective one on a field of its own.
        options = {ridx: _options(query, root) for ridx, query, root, cat in rules if cat is not None}
        popular: dict[tuple[str | None, int], int] = {}
        for ridx, query, root, cat in rules:
            for key in options.get(ridx, ()):
                for fid, _alts_ in key:
                    popular[(cat, fid)] = popular.get((cat, fid), 0) + 1

        def rank(query: ir.Query, cat: str, key: Key) -> float:
            share = min(popular.get((cat, fid), 0) for fid, _ in key)
            return _kscore(query, key) + 2 * min(share, 8)

        for ridx, query, root, cat in rules:
            if cat is None:
                self.any_rules.append(ridx)
                continue
            opts = options[ridx]
            key = max(opts, key=lambda k: rank(query, cat, k)) if opts else None
            if key is None:
                self.always.setdefault(cat, []).append(ridx)
                continue
            self.keys[ridx] = key
            tables = self.tables.setdefault(cat, [])
            for fid, alts in key:
                table = next((t for t in tables if t.fid == fid), None)
                if table is None:
                    table = _FieldTable(fid)
                    tables.append(table)
                for kind, lit in alts:
                    table.add(kind, lit, ridx)
        for tables in self.tables.values():
            for t in tables:
                t.build(schema)

    def candidates(self, category: str, events: Sequence[Any]) -> Iterator[tuple[int, list[int] | None]]:
        """(predicate, sorted positions of candidate events or None for all) for one category group."""
        for ridx in self.always.get(category, ()):
            yield ridx, None
        tables = self.tables.get(category)
        if not tables:
            return
        if len(tables) == 1:
            yield from tables[0].collect(events).items()
            return
        cands: dict[int, list[int]] = {}
        merged: set[int] = set()
        for table in tables:
            for r, pos in table.collect(events).items():
                prev = cands.get(r)
                if prev is None:
                    cands[r] = pos
                else:
                    cands[r] = prev + pos
                    merged.add(r)
        for r in merged:
            cands[r] = sorted(set(cands[r]))
        yield from cands.items()


class LiteralIndexMatcher(Matcher):
    """The built-in matcher: category dispatch plus the literal index above."""

    PLUGIN_NAME = "literal-index"
    DESCRIPTION = "per-category literal index (exact, prefix, suffix, contains) over rule predicates"

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.index: RuleIndex | None = None

    def build(self, predicates: Sequence[Any], schema: Any) -> None:
        self.index = RuleIndex(schema, [p for p in predicates if p[3] is not None])

    def candidates(self, category: str, events: Sequence[Any]) -> Iterator[tuple[int, list[int] | None]]:
        assert self.index is not None, "build() first"
        return self.index.candidates(category, events)


class CategoryMatcher(Matcher):
    """Category dispatch only: every predicate of the category runs on every event."""

    PLUGIN_NAME = "category"
    DESCRIPTION = "category index only (no literal prefilter)"

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.by_cat: dict[str, list[int]] = {}

    def build(self, predicates: Sequence[Any], schema: Any) -> None:
        self.by_cat = {}
        for pid, _q, _root, cat in predicates:
            if cat is not None:
                self.by_cat.setdefault(cat, []).append(pid)

    def candidates(self, category: str, events: Sequence[Any]) -> Iterator[tuple[int, None]]:
        for pid in self.by_cat.get(category, ()):
            yield pid, None
