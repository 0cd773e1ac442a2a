"""Rule analysis for source push-down: which literal values each step needs.

For every step predicate the engine evaluates, :func:`step_filter` finds
fields the predicate constrains to a set of string patterns in *every* case
where it can be true (conjuncts, and fields every branch of an ``or``
constrains).  A source may then drop, before normalizing, any event where
one of those fields matches none of the patterns: the engine could not have
matched it.  Anything the analysis does not understand constrains nothing,
so the result is always a superset of what the rules need.

Patterns are EQL wildcard patterns (``*``, ``?``) to be compared
case-insensitively, which covers ``==``, ``:``, ``in``, ``in~``, ``like``
and ``like~`` (a case-sensitive test admits less than its case-insensitive
reading, never more).
"""

from __future__ import annotations

import fnmatch
from typing import Any

from ..interfaces import LiteralFilter
from . import ir

Constraint = dict[str, frozenset[str]]
"""field path -> the patterns one of which the field must match."""


def _constraint(nodes: tuple[ir.Node, ...], nid: int) -> Constraint:
    node = nodes[nid]
    op = node.op
    if op == "and":
        out: Constraint = {}
        for a in node.args:
            for path, pats in _constraint(nodes, a).items():
                out[path] = pats if path not in out else _narrower(out[path], pats)
        return out
    if op == "or":
        parts = [_constraint(nodes, a) for a in node.args]
        common = set(parts[0]) if parts else set()
        for p in parts[1:]:
            common &= set(p)
        return {path: frozenset().union(*(p[path] for p in parts)) for path in common}
    if op in ("wildcard", "in", "like") and node.args:
        target = nodes[node.args[0]]
        values = node.value if isinstance(node.value, tuple) else ()
        if target.op == "field" and values and all(isinstance(v, str) for v in values):
            # `in` and `==` literals are used as patterns unescaped: a `*` or `?`
            # in them only widens the pattern, which is safe.
            return {target.value: frozenset(values)}
        return {}
    if op == "eq" and len(node.args) == 2:
        a, b = nodes[node.args[0]], nodes[node.args[1]]
        if a.op == "const":
            a, b = b, a
        if a.op == "field" and b.op == "const" and isinstance(b.value, str):
            return {a.value: frozenset((b.value,))}
    return {}


def _narrower(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    """Both hold; either one alone is a correct (looser) constraint: keep the smaller."""
    return a if len(a) <= len(b) else b


def step_filter(nodes: tuple[ir.Node, ...], root: int, category: str | None) -> LiteralFilter:
    cons = _constraint(nodes, root)
    return LiteralFilter(category=category,
                         constraints=tuple(sorted((path, tuple(sorted(p))) for path, p in cons.items())))


def literal_filters(units: Any) -> tuple[LiteralFilter, ...]:
    """One filter per distinct step predicate (``(category, query, root)`` triples)."""
    out = {step_filter(query.nodes, root, category) for category, query, root in units}
    return tuple(sorted(out, key=lambda f: (f.category or "", f.constraints)))


def wildcard_match(pattern: str, value: str) -> bool:
    """Case-insensitive EQL wildcard match (``*`` any run, ``?`` one character)."""
    return fnmatch.fnmatchcase(value.lower(), pattern.lower().replace("[", "[[]"))


def literal_prefix(pattern: str) -> str:
    """The part of a wildcard pattern before its first wildcard."""
    cut = len(pattern)
    for ch in "*?":
        i = pattern.find(ch)
        if i >= 0:
            cut = min(cut, i)
    return pattern[:cut]
