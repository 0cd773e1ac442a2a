"""Necessary literal conditions of rule predicates (the funnel's first stage).

For a predicate, a *key* is a disjunction of :class:`Cond` s, one of which
holds whenever the predicate is true.  A ``Cond`` names a field, whether it
is tested case-insensitively, the alternatives ``(kind, literal)`` (kind
``exact``, ``prefix``, ``suffix`` or ``contains``) and the IR leaves it was
read from (for a precise check such as matcher-acdfa's).

Where the literals come from:

* ``==`` / ``in`` / ``in~`` on a string constant: exact literals;
* ``:`` / ``like`` / ``like~`` patterns: the whole pattern when it has no
  wildcard, else its leading run (prefix), trailing run (suffix) or an inner
  run of at least :data:`MIN_CONTAINS` characters, whichever is most selective;
* ``regex`` / ``regex~``: the same, read off the parse tree of Python's own
  regex parser (``re._parser``; see :func:`regex_alt`);
* ``startsWith``, ``endsWith``, ``stringContains`` (and their ``~`` forms) on
  a constant;
* ``and``: the most selective child; ``or``: the union of every child
  (no key when one child has none); anything else has no key.

Case-insensitive literals are matched against the value after
:func:`ci_norm`; only their ASCII runs are used, because that is where every
case-insensitive reading Kestrel uses (``str.lower`` and ``re.IGNORECASE``)
agrees: :func:`ci_norm` maps the three non-ASCII characters that either
reading equates with an ASCII letter (U+0130, U+0131, U+017F; U+212A lowers
to ``k``) onto that letter.  Whenever a pattern, flag or node is not
understood the result is ``None`` (no key: the predicate runs on every event
of its category), never a guess.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import attrs

try:  # Python's own regex parser: the one `re` compiles rules with
    from re import _constants as _rc, _parser as _rp  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants as _rc  # type: ignore[no-redef]
    import sre_parse as _rp  # type: ignore[no-redef]

MIN_CONTAINS = 3
"""Shortest inner ("contains") literal taken from a wildcard or regex."""

_CI_FIX = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s"})
KINDS = ("exact", "prefix", "suffix", "contains")


def ci_norm(v: str) -> str:
    """The form a value is scanned in against case-insensitive literals."""
    return v.translate(_CI_FIX).lower()


Alt = tuple[str, str]


@attrs.frozen
class Cond:
    fid: int
    ci: bool
    alts: frozenset[Alt]
    leaves: tuple[int, ...]
    """IR node ids (in the predicate's query) of the leaves read."""


Key = tuple[Cond, ...]


def alt_score(alt: Alt) -> float:
    kind, lit = alt
    if kind == "exact":
        return 100 + len(lit)
    if kind in ("prefix", "suffix"):
        return 10 + 2 * len(lit)
    return len(lit)


def _ci_alt(kind: str, lit: str) -> Alt | None:
    """A case-insensitive literal reduced to what ``ci_norm`` makes safe: its ASCII runs."""
    lit = lit.lower()
    if lit.isascii():
        return (kind, lit) if lit or kind == "exact" else None
    runs = [(m.start(), m.end()) for m in re.finditer(r"[\x00-\x7f]+", lit)]
    options: list[Alt] = []
    for i, (a, b) in enumerate(runs):
        text = lit[a:b]
        if a == 0 and kind in ("exact", "prefix"):
            options.append(("prefix", text))
        elif b == len(lit) and kind in ("exact", "suffix"):
            options.append(("suffix", text))
        elif len(text) >= MIN_CONTAINS:
            options.append(("contains", text))
    return max(options, key=alt_score) if options else None


def _best(tokens: list[Any], exact_ok: bool) -> Alt | None:
    """Best alternative of a token stream: one-character strings (fixed text)
    and None (anything, possibly empty); ``("must", [alts])`` for literals a
    repeated group must contain."""
    if exact_ok and tokens and all(isinstance(t, str) for t in tokens):
        return ("exact", "".join(tokens))
    options: list[Alt] = []
    runs: list[tuple[int, int]] = []
    i, n = 0, len(tokens)
    while i < n:
        if isinstance(tokens[i], str):
            j = i
            while j < n and isinstance(tokens[j], str):
                j += 1
            runs.append((i, j))
            i = j
        else:
            if isinstance(tokens[i], tuple):
                options.extend(a for a in tokens[i][1] if len(a[1]) >= MIN_CONTAINS)
            i += 1
    for a, b in runs:
        text = "".join(tokens[a:b])
        if a == 0 and exact_ok:
            options.append(("prefix", text))
        elif b == n and exact_ok:
            options.append(("suffix", text))
        elif len(text) >= MIN_CONTAINS:
            options.append(("contains", text))
    if not options:
        return None
    return max(options, key=alt_score)


def wildcard_alt(pattern: str, ci: bool) -> Alt | None:
    """One necessary alternative of an EQL wildcard pattern (``*``, ``?``; no escapes)."""
    tokens: list[Any] = [None if ch in "*?" else ch for ch in pattern]
    alt = _best(tokens, True)
    if alt is None:
        return None
    return _ci_alt(*alt) if ci else alt


class _Doubt(Exception):
    """The regex holds something the analysis does not read: no key."""


def _tokens(items: Any, ci: bool, out: list[Any]) -> None:
    for op, av in items:
        if op is _rc.LITERAL:
            ch = chr(av)
            if ci:
                out.append(ch.lower() if ch.isascii() else None)
            else:
                out.append(ch)
        elif op is _rc.SUBPATTERN:
            _group, add, dele, sub = av
            if (add | dele) & re.IGNORECASE:
                if not ci and add & re.IGNORECASE:  # (?i:...) inside a case-sensitive pattern
                    out.append(None)
                    continue
                if ci and dele & re.IGNORECASE:
                    out.append(None)
                    continue
            _tokens(sub, ci, out)
        elif op in (_rc.MAX_REPEAT, _rc.MIN_REPEAT) or op is getattr(_rc, "POSSESSIVE_REPEAT", None):
            lo, _hi, sub = av
            out.append(None)
            if lo >= 1:
                inner: list[Any] = []
                _tokens(sub, ci, inner)
                alt = _best(inner, False)
                if alt is not None:
                    out.append(("must", [alt]))
                    out.append(None)
        elif op is _rc.AT or op in (_rc.ASSERT, _rc.ASSERT_NOT):
            continue  # consumes nothing: dropping it only admits more
        elif op is getattr(_rc, "ATOMIC_GROUP", None):
            _tokens(av, ci, out)
        elif op in (_rc.IN, _rc.ANY, _rc.NOT_LITERAL, _rc.CATEGORY, _rc.BRANCH, _rc.GROUPREF,
                    _rc.GROUPREF_EXISTS):
            out.append(None)
        else:
            raise _Doubt(str(op))


def regex_alts(pattern: str, ci: bool) -> tuple[bool, frozenset[Alt]] | None:
    """``(case-insensitive?, alternatives)`` one of which a value that the
    regex fully matches holds, or None.

    Parsed with ``re._parser``, the parser ``re.compile`` itself runs: the
    literals read are those of the regex Kestrel evaluates, with no second
    grammar to disagree with it.  The module is internal to CPython; it is
    used read-only (``parse`` and the opcode constants), every opcode not
    listed in :func:`_tokens` is a doubt, and an import or parse failure
    means no key, so a change in a later Python costs speed, never results.
    """
    flags = re.DOTALL | (re.IGNORECASE if ci else 0)
    try:
        parsed = _rp.parse(pattern, flags)
        gflags = parsed.state.flags
        ci = bool(gflags & re.IGNORECASE)
        data = list(parsed)
        # a top-level alternation (``a.*|b.*``): each branch is a full match of its own
        if len(data) == 1 and data[0][0] is _rc.BRANCH:
            branches = data[0][1][1]
        elif len(data) == 1 and data[0][0] is _rc.SUBPATTERN and not (data[0][1][1] | data[0][1][2]) \
                and len(data[0][1][3].data) == 1 and data[0][1][3].data[0][0] is _rc.BRANCH:
            branches = data[0][1][3].data[0][1][1]
        else:
            branches = [data]
        alts = set()
        for br in branches:
            tokens: list[Any] = []
            _tokens(br, ci, tokens)
            alt = _best(tokens, True)
            if alt is None:
                return None
            alts.add(alt)
    except (_Doubt, re.error, RecursionError, OverflowError, TypeError, ValueError, AttributeError):
        return None
    return ci, frozenset(alts)


# --------------------------------------------------------------------------- IR analysis


def _field(nodes: Any, nid: int) -> Any:
    n = nodes[nid]
    return n if n.op == "field" and n.field_id is not None else None


def leaf_cond(nodes: Any, nid: int) -> Cond | None:
    """The condition of one leaf node, or None."""
    n = nodes[nid]
    op = n.op
    if op == "eq" and len(n.args) == 2:
        f, c = _field(nodes, n.args[0]), nodes[n.args[1]]
        if f is not None and c.op == "const" and isinstance(c.value, str):
            return Cond(f.field_id, False, frozenset({("exact", c.value)}), (nid,))
        return None
    if op == "in" and n.args:
        f = _field(nodes, n.args[0])
        vals = [v for v in n.value if v is not None]
        if f is None or not vals or not all(isinstance(v, str) for v in vals):
            return None
        if n.ci:
            alts = [_ci_alt("exact", v) for v in vals]
            if any(a is None for a in alts):
                return None
            return Cond(f.field_id, True, frozenset(alts), (nid,))  # type: ignore[arg-type]
        return Cond(f.field_id, False, frozenset(("exact", v) for v in vals), (nid,))
    if op == "wildcard" and n.args:
        f = _field(nodes, n.args[0])
        if f is None or not n.value or not all(isinstance(p, str) for p in n.value):
            return None
        alts = [wildcard_alt(p, n.ci) for p in n.value]
        if any(a is None for a in alts):
            return None
        return Cond(f.field_id, n.ci, frozenset(alts), (nid,))  # type: ignore[arg-type]
    if op == "regex" and n.args:
        f = _field(nodes, n.args[0])
        if f is None or not n.value or not all(isinstance(p, str) for p in n.value):
            return None
        got = [regex_alts(p, n.ci) for p in n.value]
        if any(g is None for g in got):
            return None
        cis = {g[0] for g in got}  # type: ignore[index]
        if len(cis) != 1:  # one pattern turned (?i) on: read them all insensitively
            got = [regex_alts(p, True) for p in n.value]
            if any(g is None for g in got):
                return None
        ci = got[0][0]  # type: ignore[index]
        return Cond(f.field_id, ci, frozenset().union(*(g[1] for g in got)), (nid,))  # type: ignore[index]
    if op == "call" and n.value in ("startsWith", "endsWith", "stringContains") and len(n.args) == 2:
        f, c = _field(nodes, n.args[0]), nodes[n.args[1]]
        if f is None or c.op != "const" or not isinstance(c.value, str) or not c.value:
            return None
        kind = {"startsWith": "prefix", "endsWith": "suffix", "stringContains": "contains"}[n.value]
        alt = _ci_alt(kind, c.value) if n.ci else (kind, c.value)
        if alt is None:
            return None
        return Cond(f.field_id, n.ci, frozenset({alt}), (nid,))
    return None


def key_score(key: Key) -> float:
    return min(alt_score(a) for c in key for a in c.alts) - 5 * (len({(c.fid, c.ci) for c in key}) - 1)


def _merge(conds: Iterable[Cond]) -> Key:
    by: dict[tuple[int, bool], tuple[set, list]] = {}
    for c in conds:
        alts, leaves = by.setdefault((c.fid, c.ci), (set(), []))
        alts.update(c.alts)
        leaves.extend(x for x in c.leaves if x not in leaves)
    return tuple(Cond(fid, ci, frozenset(a), tuple(lv)) for (fid, ci), (a, lv) in sorted(by.items()))


def node_key(nodes: Any, nid: int, memo: dict[int, Key | None] | None = None) -> Key | None:
    """The best necessary key of node ``nid`` (None: none found)."""
    memo = {} if memo is None else memo
    if nid in memo:
        return memo[nid]
    n = nodes[nid]
    r: Key | None
    if n.op == "and":
        r = None
        for a in n.args:
            k = node_key(nodes, a, memo)
            if k is not None and (r is None or key_score(k) > key_score(r)):
                r = k
    elif n.op == "or":
        parts = [node_key(nodes, a, memo) for a in n.args]
        r = None if any(p is None for p in parts) else _merge(c for p in parts for c in p)  # type: ignore[union-attr]
    else:
        c = leaf_cond(nodes, nid)
        r = None if c is None else (c,)
    memo[nid] = r
    return r


def key_options(nodes: Any, root: int) -> list[Key]:
    """Every usable key: one per conjunct of a top-level ``and`` (the caller ranks them)."""
    n = nodes[root]
    if n.op == "and":
        memo: dict[int, Key | None] = {}
        return [k for a in n.args for k in key_options_one(nodes, a, memo)]
    k = node_key(nodes, root)
    return [k] if k is not None else []


def key_options_one(nodes: Any, nid: int, memo: dict[int, Key | None]) -> list[Key]:
    n = nodes[nid]
    if n.op == "and":
        return [k for a in n.args for k in key_options_one(nodes, a, memo)]
    k = node_key(nodes, nid, memo)
    return [k] if k is not None else []


def key_to_json(key: Key | None) -> Any:
    if key is None:
        return None
    return [[c.fid, c.ci, sorted(map(list, c.alts)), list(c.leaves)] for c in key]


def key_from_json(data: Any) -> Key | None:
    if data is None:
        return None
    out = []
    for fid, ci, alts, leaves in data:
        if not isinstance(fid, int) or not isinstance(ci, bool):
            raise ValueError("bad key")
        a = frozenset((str(k), str(v)) for k, v in alts)
        if any(k not in KINDS for k, _ in a):
            raise ValueError("bad kind")
        out.append(Cond(fid, ci, a, tuple(int(x) for x in leaves)))
    return tuple(out)
