"""Literal index of single-event rules (the built-in matcher).

Per category, a rule whose condition is (or is a conjunction containing) one
of

* ``field == "lit"`` / ``field in ("a", "b")``          -> exact key
* ``field : "lit"`` / ``field in~ (...)`` / ``like~`` without wildcards
                                                        -> case-folded key

is filed under ``(field, value)``.  For a batch, each indexed field is read
once per event and looked up in a dict: only the rules it names become
candidates for that event.  Rules with no such conjunct run on every event
of their category.  The index never drops a rule that could match: a
conjunct that must be true for the rule to match is, by construction, true
only for the values it is filed under.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from ..schema import Schema
from . import ir


def _index_key(query: ir.Query, schema: Schema) -> tuple[int, bool, tuple[str, ...]] | None:
    """(field id, case-folded, values) for the most selective indexable conjunct."""
    nodes = query.nodes
    root = nodes[query.steps[0].pred]
    conj = [nodes[a] for a in root.args] if root.op == "and" else [root]
    best = None
    for n in conj:
        key = None
        if n.op == "eq":
            f, c = nodes[n.args[0]], nodes[n.args[1]]
            if f.op == "field" and c.op == "const" and isinstance(c.value, str):
                key = (f.field_id, False, (c.value,))
        elif n.op == "in" and nodes[n.args[0]].op == "field":
            vals = n.value
            if vals and all(isinstance(v, str) for v in vals):
                key = (nodes[n.args[0]].field_id, n.ci, tuple(vals))
        elif n.op == "wildcard" and n.ci and nodes[n.args[0]].op == "field":
            vals = n.value
            if vals and all("*" not in v and "?" not in v for v in vals):
                key = (nodes[n.args[0]].field_id, True, tuple(vals))
        if key is not None and (best is None or len(key[2]) < len(best[2])):
            best = key
    return best


class RuleIndex:
    """Category -> literal index over single-event rules."""

    def __init__(self, schema: Schema, rules: Sequence[tuple[int, ir.Query, Any]]) -> None:
        self.any_rules: list[int] = []
        # category -> list of rule ids that always run
        self.always: dict[str, list[int]] = {}
        # category -> list of (field id, folded, {value: [rule ids]})
        self.keyed: dict[str, list[tuple[int, bool, dict[str, list[int]]]]] = {}
        for ridx, query, _pred in rules:
            cat = query.steps[0].category
            if cat is None:
                self.any_rules.append(ridx)
                continue
            key = _index_key(query, schema)
            if key is None:
                self.always.setdefault(cat, []).append(ridx)
                continue
            fid, folded, values = key
            tables = self.keyed.setdefault(cat, [])
            for t in tables:
                if t[0] == fid and t[1] == folded:
                    table = t[2]
                    break
            else:
                table = {}
                tables.append((fid, folded, table))
            for v in values:
                lst = table.setdefault(v, [])
                if ridx not in lst:
                    lst.append(ridx)

    def candidates(self, category: str, events: Sequence[Any]) -> Iterator[tuple[int, list[int] | None]]:
        """(rule id, positions of candidate events or None for all) for one category group."""
        for ridx in self.always.get(category, ()):
            yield ridx, None
        tables = self.keyed.get(category)
        if not tables:
            return
        for fid, folded, table in tables:
            cands: dict[int, list[int]] = {}
            get = table.get
            for j, e in enumerate(events):
                v = e.fields.get(fid)
                if v is None:
                    continue
                if v.__class__ is str:
                    rs = get(v.lower() if folded else v)
                    if rs:
                        for r in rs:
                            lst = cands.get(r)
                            if lst is None:
                                cands[r] = [j]
                            else:
                                lst.append(j)
                elif v.__class__ is list:
                    seen: set[int] = set()
                    for x in v:
                        if x.__class__ is str:
                            for r in get(x.lower() if folded else x, ()):
                                if r not in seen:
                                    seen.add(r)
                                    lst = cands.get(r)
                                    if lst is None:
                                        cands[r] = [j]
                                    else:
                                        lst.append(j)
            yield from cands.items()
