"""Interest push-down plan: which kinds the kernel sends, and which file paths.

From the engine's :class:`~kestrel_core.interfaces.Interest` (one
:class:`~kestrel_core.interfaces.LiteralFilter` per rule step) a kind is
enabled when some step could match an event of that kind, judged on what is
fixed per kind (category, type, action, module).  For file kinds, when every
such step constrains ``file.path``, the literal prefixes of its patterns go
into the kernel's prefix filter.  Every decision errs towards sending more.
"""

from __future__ import annotations

import os

import attrs

from kestrel_core.eql.pushdown import literal_prefix, wildcard_match
from kestrel_core.interfaces import Interest, LiteralFilter

from .kinds import FILE_PATH_KINDS, KINDS, Kind

MAX_PREFIXES = 16
PREFIX_BYTES = 32


@attrs.frozen
class Plan:
    kinds: frozenset[int]
    prefixes: dict[str, int] = attrs.field(factory=dict, hash=False)
    """prefix -> bit mask of the kinds it admits (kinds absent from ``prefix_kinds`` take every path)."""
    prefix_kinds: frozenset[int] = frozenset()

    def describe(self) -> str:
        names = sorted(KINDS[k].name for k in self.kinds)
        filt = sorted(KINDS[k].name for k in self.prefix_kinds)
        return f"kinds: {', '.join(names) or 'none'}; path-prefix filtered: {', '.join(filt) or 'none'}"


ALL = Plan(frozenset(KINDS))


def _static_fields(kind: Kind) -> dict[str, list[str]]:
    return {"event.category": [kind.category], "event.type": list(kind.types), "event.action": [kind.action],
            "event.kind": ["event"], "event.module": ["ebpf"]}


def admits(f: LiteralFilter, kind: Kind) -> bool:
    """Could an event of ``kind`` satisfy the step behind ``f``?"""
    if f.category is not None and f.category != kind.category:
        return False
    static = _static_fields(kind)
    for path, patterns in f.constraints:
        values = static.get(path)
        if values is not None and not any(wildcard_match(p, v) for p in patterns for v in values):
            return False
    return True


def _path_prefixes(filters: list[LiteralFilter]) -> list[str] | None:
    """Prefixes that every event matching one of ``filters`` has, or None."""
    out: list[str] = []
    for f in filters:
        patterns = dict(f.constraints).get("file.path")
        if patterns is None:
            return None
        for p in patterns:
            prefix = literal_prefix(p)
            if not prefix.startswith("/") or len(prefix) < 2:
                return None
            out.append(prefix.lower()[:PREFIX_BYTES])
    return out


def _merge(prefixes: dict[str, int], limit: int) -> dict[str, int]:
    """Fewer prefixes covering at least the same paths: repeatedly replace the
    pair with the longest common prefix by that prefix."""
    prefixes = dict(prefixes)
    # drop prefixes another one already covers
    for p in sorted(prefixes, key=len, reverse=True):
        for q in prefixes:
            if q != p and p.startswith(q):
                prefixes[q] |= prefixes.pop(p)
                break
    while len(prefixes) > limit:
        keys = sorted(prefixes)
        best = max(range(len(keys) - 1), key=lambda i: len(os.path.commonprefix(keys[i:i + 2])))
        a, b = keys[best], keys[best + 1]
        common = os.path.commonprefix([a, b]) or "/"
        bits = prefixes.pop(a) | prefixes.pop(b)
        prefixes[common] = prefixes.get(common, 0) | bits
    return prefixes


def plan_for(interest: Interest) -> Plan:
    if interest.filters is None:
        if interest.wants_all:
            return ALL
        return Plan(frozenset(k for k, kind in KINDS.items() if kind.category in interest.categories))
    kinds: set[int] = set()
    prefixes: dict[str, int] = {}
    prefix_kinds: set[int] = set()
    for code, kind in KINDS.items():
        applicable = [f for f in interest.filters if admits(f, kind)]
        if not applicable:
            continue
        kinds.add(code)
        if code in FILE_PATH_KINDS:
            plist = _path_prefixes(applicable)
            if plist is not None:
                prefix_kinds.add(code)
                for p in plist:
                    prefixes[p] = prefixes.get(p, 0) | (1 << code)
    return Plan(frozenset(kinds), _merge(prefixes, MAX_PREFIXES), frozenset(prefix_kinds))
