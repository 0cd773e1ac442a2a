"""The ``acdfa`` matcher: one Aho-Corasick automaton per (category, field).

Build (once per pack version):

1. every distinct step predicate gets a *key*, a necessary literal condition
   (:mod:`kestrel_matcher_acdfa.literals`); predicates are sharded by the
   literals of their key (the *anchors*), one shard per (category, field,
   case-sensitivity);
2. per shard, exact literals go into a dict and every prefix, suffix and
   contains literal into one ``ahocorasick.Automaton`` (case-insensitive
   literals lower-cased, into an automaton of their own).

Per batch and category group, each shard's field is read once per event and
each *distinct* value is scanned once (and remembered across batches in a
bounded value cache): the dict probe plus one ``Automaton.iter`` pass give the
literals present, their positions say which of them are exact, prefix or
suffix hits, and the predicates owning those literals are the candidates for
that value.  A predicate whose condition is a conjunction is filed under
two keys on different fields when it has them (say ``process.parent.name``
and ``process.name``): both are necessary, so its candidates are the events
that hit both.  The funnel's last stage is the *precise check*: the key's own
leaf (the ``==``, ``in``, wildcard or regex that supplied the anchor) is run
on the value, its pattern compiled on the first candidate and kept in an LRU
(``lru_capacity``).  A leaf whose case-insensitive reading could depend on
non-ASCII folding is not checked (the value stays a candidate).  Predicates
without a key run on every event of their category.

The matcher never drops an event on which a predicate can be true: a key is
a necessary condition, literals are matched on a superset reading of case,
and anything the analysis does not understand has no key.  The engine then
evaluates the full predicate on every candidate, so alerts equal the default
matcher's (tests/test_conformance.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, OrderedDict
from itertools import repeat
from typing import Any, Callable, Iterator, Sequence

import attrs

from kestrel_core.interfaces import Matcher, Probe

from kestrel_core.eql import literals as L
from .cache import CompileCache

log = logging.getLogger("kestrel")

_WEAK_PREFIXES = ("event.", "host.", "agent.", "@timestamp")


@attrs.define(kw_only=True)
class AcdfaSettings:
    lru_capacity: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    """Precise patterns (regex, wildcard) kept compiled; the least recently used is dropped."""
    value_cache: int = attrs.field(default=65536, validator=attrs.validators.ge(0))
    """Distinct field values whose candidate predicates are remembered across batches (0: none)."""
    precise: bool = True
    """Run the key's own leaf on each candidate value before the full predicate (the funnel's last stage)."""
    cache_dir: str = ""
    """Directory of the persistent compile cache (keys per predicate, keyed by
    predicate hash and engine build); empty: no cache."""
    review_events: int = attrs.field(default=8192, validator=attrs.validators.ge(0))
    """Every this many events of a category, a predicate filed under two keys
    whose intersection barely narrows the more selective key's hits (over 80%
    kept) drops the other key (its scans cost more than they save); 0: never."""


class _Table:
    """Literals of one shard: exact ones in a dict, the others in one automaton."""

    __slots__ = ("exact", "auto", "ci", "n_literals")

    def __init__(self, ci: bool) -> None:
        self.ci = ci
        self.exact: dict[str, tuple[int, ...]] = {}
        self.auto: Any = None
        self.n_literals = 0

    def build(self, entries: dict[tuple[str, str], set[int]]) -> None:
        import ahocorasick

        exact: dict[str, set[int]] = {}
        by_lit: dict[str, tuple[set[int], set[int], set[int]]] = {}
        for (kind, lit), pids in entries.items():
            if kind == "exact":
                exact.setdefault(lit, set()).update(pids)
            else:
                slot = by_lit.setdefault(lit, (set(), set(), set()))
                slot[("prefix", "suffix", "contains").index(kind)].update(pids)
        self.exact = {k: tuple(sorted(v)) for k, v in exact.items()}
        self.n_literals = len(exact) + len(by_lit)
        if by_lit:
            a = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
            for lit, (pre, suf, con) in by_lit.items():
                a.add_word(lit, (len(lit), tuple(sorted(pre)), tuple(sorted(suf)), tuple(sorted(con))))
            a.make_automaton()
            self.auto = a

    def hits(self, w: str, out: set[int]) -> None:
        rs = self.exact.get(w)
        if rs:
            out.update(rs)
        a = self.auto
        if a is None:
            return
        last = len(w) - 1
        for end, (n, pre, suf, con) in a.iter(w):
            if con:
                out.update(con)
            if pre and end == n - 1:
                out.update(pre)
            if suf and end == last:
                out.update(suf)


class _Shard:
    """One (category, field): its case-sensitive and case-insensitive tables."""

    __slots__ = ("fid", "cs", "ci", "leaves", "cache", "misses", "cache_cap", "matcher")

    def __init__(self, fid: int, matcher: "AcdfaMatcher") -> None:
        self.fid = fid
        self.cs: _Table | None = None
        self.ci: _Table | None = None
        self.leaves: dict[int, tuple[int, ...]] = {}
        """slot -> its key's leaves on this field (for the precise check)."""
        self.cache: dict[str, tuple[int, ...]] = {}
        """value -> its candidate slots (values with some)."""
        self.misses: set[Any] = set()
        """Values known to hit no literal (taken out of a batch's distinct values in C)."""
        self.cache_cap = matcher.settings.value_cache
        self.matcher = matcher

    def resolve(self, v: str) -> tuple[int, ...]:
        """Candidate predicates for one string value (literal hits, then the precise check)."""
        got: set[int] = set()
        if self.cs is not None:
            self.cs.hits(v, got)
        if self.ci is not None:
            self.ci.hits(v.lower() if v.isascii() else L.ci_norm(v), got)
        m = self.matcher
        if got and m.dead:
            got -= m.dead
        if got and m.precise:
            slot_pid, leaves = m.slot_pid, self.leaves
            got = {sid for sid in got if m.check(slot_pid[sid], leaves.get(sid, ()), v)}
        rs = tuple(sorted(got))
        if self.cache_cap:
            if len(self.cache) + len(self.misses) >= self.cache_cap:
                self.cache.clear()  # a bounded memo, not an LRU: refilled from the next batches
                self.misses.clear()
            if rs:
                self.cache[v] = rs
            else:
                self.misses.add(v)
        return rs

    def collect(self, fields: list[dict], out: dict[int, list[int]], merged: set[int]) -> None:
        """``fields``: the group's events' field dicts, in order."""
        try:
            vals = list(map(dict.get, fields, repeat(self.fid, len(fields))))  # C: no Python frame per event
        except TypeError:  # a fields mapping that is not a dict
            vals = [f.get(self.fid) for f in fields]
        try:
            distinct = dict.fromkeys(vals)  # C: one entry per distinct value
        except TypeError:  # a list value (multi-valued field): the general path
            self._collect_lists(vals, out, merged)
            return
        cache = self.cache
        stats = self.matcher.counts
        scanned = 0
        hitv: dict[Any, tuple[int, ...]] = {}
        todo = distinct.keys() - self.misses if self.misses else distinct
        for v in todo:
            if v.__class__ is not str:
                continue  # null, numbers: no string literal holds
            rs = cache.get(v)
            if rs is None:
                scanned += 1
                rs = self.resolve(v)
            if rs:
                hitv[v] = rs
        stats["values_scanned"] += scanned
        stats["values_cached"] += len(distinct) - scanned
        if not hitv:
            return
        by_value: dict[Any, list[int]] = {}
        for j, v in [(j, v) for j, v in enumerate(vals) if v in hitv]:
            lst = by_value.get(v)
            if lst is None:
                by_value[v] = [j]
            else:
                lst.append(j)
        for v, pos in by_value.items():
            for pid in hitv[v]:
                prev = out.get(pid)
                if prev is None:
                    out[pid] = pos  # shared between predicates: never changed in place
                elif pid in merged:
                    prev.extend(pos)  # this predicate's own list already
                else:
                    out[pid] = prev + pos
                    merged.add(pid)

    def _collect_lists(self, vals: list[Any], out: dict[int, list[int]], merged: set[int]) -> None:
        by_value: dict[str, list[int]] = {}
        get = by_value.get
        for j, v in enumerate(vals):
            if v is None:
                continue
            if v.__class__ is str:
                lst = get(v)
                if lst is None:
                    by_value[v] = [j]
                else:
                    lst.append(j)
            elif v.__class__ is list:
                for x in v:
                    if x.__class__ is str:
                        lst = get(x)
                        if lst is None:
                            by_value[x] = [j]
                        elif lst[-1] != j:
                            lst.append(j)
        cache = self.cache
        stats = self.matcher.counts
        scanned = 0
        misses = self.misses
        for v, pos in by_value.items():
            rs = cache.get(v)
            if rs is None:
                if v in misses:
                    continue
                scanned += 1
                rs = self.resolve(v)
            for pid in rs:
                prev = out.get(pid)
                if prev is None:
                    out[pid] = pos  # shared between predicates: never changed in place
                elif pid in merged:
                    prev.extend(pos)  # this predicate's own list already
                else:
                    out[pid] = prev + pos
                    merged.add(pid)
        stats["values_scanned"] += scanned
        stats["values_cached"] += len(by_value) - scanned


class AcdfaMatcher(Matcher):
    """Aho-Corasick literal prefilter with a lazily compiled precise check."""

    PLUGIN_NAME = "acdfa"
    DESCRIPTION = ("Aho-Corasick automaton per field over every rule literal (==, in, :, like, regex "
                   "must-literals, startsWith/endsWith/stringContains), precise leaf check compiled lazily (LRU)")
    Settings = AcdfaSettings

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings if settings is not None else AcdfaSettings(), context)
        self.precise = bool(self.settings.precise)
        self.shards: dict[str, list[_Shard]] = {}
        self.always: dict[str, list[int]] = {}
        self.keys: dict[int, L.Key | None] = {}
        """predicate -> the key it is filed under (None: runs on every event of its category)."""
        self.keys2: dict[int, L.Key] = {}
        """predicate -> a second key on other fields (both are necessary: candidates are the intersection)."""
        self.slot_pid: list[int] = []
        """slot -> its predicate: a predicate has one slot per key, and the shards hold slots."""
        self.pid_slots: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        """category -> (predicate, its slots) for the predicates with keys."""
        self.queries: dict[int, Any] = {}
        self.categories: dict[int, str | None] = {}
        self.counts: Counter = Counter()
        """values_scanned, values_cached, precise_compiled, precise_evicted, cache_hits, cache_misses."""
        self.candidate_events: Counter = Counter()
        """predicate -> candidate events handed to the engine."""
        self.compile_ns: dict[int, int] = {}
        """predicate -> time spent on its key analysis and precise-pattern compiles."""
        self._lru: OrderedDict[tuple[int, int], Callable[[str], bool] | None] = OrderedDict()
        self.dead: set[int] = set()
        """Slots dropped by the review (their key did not narrow the candidates)."""
        self._pairs: dict[int, list[int]] = {}
        """predicate with two slots -> [positions of slot 1, of slot 2, of both] since the last review."""
        self._seen: Counter = Counter()
        self.dropped_keys: list[tuple[int, int]] = []
        """(predicate, slot) dropped by the review, in order."""
        self.build_ns = 0

    @classmethod
    def probe(cls) -> Probe:
        try:
            import ahocorasick
        except ImportError as exc:
            return Probe.missing(f"pyahocorasick is not installed ({exc}): pip install pyahocorasick")
        if not getattr(ahocorasick, "unicode", 1):
            return Probe.missing("pyahocorasick was built without unicode support (str keys needed)")
        return Probe.ok(f"pyahocorasick {_version()}")

    # ------------------------------------------------------------------ build
    def build(self, predicates: Sequence[Any], schema: Any) -> None:
        t0 = time.perf_counter_ns()
        self.shards, self.always, self.keys, self.queries, self.categories = {}, {}, {}, {}, {}
        self.keys2, self.slot_pid, self.pid_slots = {}, [], {}
        self.dead, self._pairs, self._seen, self.dropped_keys = set(), {}, Counter(), []
        self._lru.clear()
        preds = [p for p in predicates if p[3] is not None]
        cache = CompileCache(self.settings.cache_dir) if self.settings.cache_dir else None
        options: dict[int, list[L.Key]] = {}
        for pid, query, root, cat in preds:
            t1 = time.perf_counter_ns()
            self.queries[pid] = (query, root)
            self.categories[pid] = cat
            h = _pred_hash(query, root, cat) if cache is not None else ""
            got = cache.get(h) if cache is not None else None
            if got is None:
                opts = L.key_options(query.nodes, root)
                if cache is not None:
                    cache.put(h, opts)
            else:
                opts = got
            options[pid] = opts
            self.compile_ns[pid] = time.perf_counter_ns() - t1
        if cache is not None:
            self.counts["cache_hits"] += cache.hits
            self.counts["cache_misses"] += cache.misses
            cache.save()
        popular: Counter = Counter()
        for pid, _q, _r, cat in preds:
            for key in options[pid]:
                for c in key:
                    popular[(cat, c.fid)] += 1

        def rank(query: Any, cat: str, key: L.Key) -> float:
            score = L.key_score(key)
            for c in key:
                path = _path(query, c.fid)
                if path.startswith(_WEAK_PREFIXES):
                    score -= 100
            share = min(popular[(cat, c.fid)] for c in key)
            return score + 2 * min(share, 8)

        entries: dict[tuple[str, int, bool], dict[tuple[str, str], set[int]]] = {}
        slot_keys: list[L.Key] = []
        for pid, query, root, cat in preds:
            opts = sorted(options[pid], key=lambda k: rank(query, cat, k), reverse=True)
            key = opts[0] if opts else None
            self.keys[pid] = key
            if key is None:
                self.always.setdefault(cat, []).append(pid)
                continue
            keys = [key]
            # a second conjunct on other fields: both must hold, so the candidates are
            # the events that hit both (a frequent value in one, a rare one in the other)
            # (not on event.*, host.*, agent.*: nearly every event holds one of their few
            # values, and the engine already groups a batch by event.action)
            fields = {c.fid for c in key}
            second = next((k for k in opts[1:] if not fields & {c.fid for c in k}
                           and not any(_path(query, c.fid).startswith(_WEAK_PREFIXES) for c in k)), None)
            if second is not None:
                self.keys2[pid] = second
                keys.append(second)
            sids = []
            for k in keys:
                sid = len(self.slot_pid)
                self.slot_pid.append(pid)
                slot_keys.append(k)
                sids.append(sid)
                for c in k:
                    tab = entries.setdefault((cat, c.fid, c.ci), {})
                    for alt in c.alts:
                        tab.setdefault(alt, set()).add(sid)
            self.pid_slots.setdefault(cat, []).append((pid, tuple(sids)))
        shards: dict[tuple[str, int], _Shard] = {}
        for (cat, fid, ci), tab in sorted(entries.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            sh = shards.get((cat, fid))
            if sh is None:
                sh = shards[(cat, fid)] = _Shard(fid, self)
                self.shards.setdefault(cat, []).append(sh)
            t = _Table(ci)
            t.build(tab)
            if ci:
                sh.ci = t
            else:
                sh.cs = t
        for sid, key in enumerate(slot_keys):
            cat = self.categories[self.slot_pid[sid]]
            for c in key:
                sh = shards[(cat, c.fid)]
                prev = sh.leaves.get(sid, ())
                sh.leaves[sid] = prev + tuple(x for x in c.leaves if x not in prev)
        self.build_ns = time.perf_counter_ns() - t0

    # ------------------------------------------------------------------ run
    def candidates(self, category: str, events: Sequence[Any]) -> Iterator[tuple[int, Sequence[int] | None]]:
        for pid in self.always.get(category, ()):
            yield pid, None
        shards = self.shards.get(category)
        if not shards:
            return
        out: dict[int, list[int]] = {}
        merged: set[int] = set()
        fields = [e.fields for e in events]
        for sh in shards:
            sh.collect(fields, out, merged)
        for sid in merged:  # positions from several values (or fields): sorted, each once
            out[sid] = sorted(set(out[sid]))
        counts = self.candidate_events
        get = out.get
        review = self.settings.review_events
        pairs = self._pairs
        for pid, sids in self.pid_slots[category]:
            if len(sids) == 1:
                pos = get(sids[0])
                if pos is None:
                    continue
            else:
                pos, other = get(sids[0]), get(sids[1])
                if review:
                    st = pairs.get(pid)
                    if st is None:
                        st = pairs[pid] = [0, 0, 0]
                    st[0] += len(pos) if pos is not None else 0
                    st[1] += len(other) if other is not None else 0
                if pos is None or other is None:
                    continue
                if len(other) < len(pos):
                    pos, other = other, pos
                keep = set(other)
                pos = [j for j in pos if j in keep]
                if review:
                    st[2] += len(pos)
                if not pos:
                    continue
            counts[pid] += len(pos)
            yield pid, pos
        if review:
            self._seen[category] += len(events)
            if self._seen[category] >= review:
                self._seen[category] = 0
                self._review(category)

    def _review(self, category: str) -> None:
        """Drop the second key of predicates where it does not pay (see ``review_events``).
        The key kept is necessary on its own, so candidates stay a superset."""
        changed = False
        slots = []
        for pid, sids in self.pid_slots[category]:
            st = self._pairs.pop(pid, None)
            if len(sids) == 2 and st is not None:
                n1, n2, both = st
                small = min(n1, n2)
                if small >= 32 and both >= 0.8 * small:
                    drop = sids[0] if n1 >= n2 else sids[1]
                    self.dead.add(drop)
                    self.dropped_keys.append((pid, drop))
                    self.counts["keys_dropped"] += 1
                    sids = tuple(x for x in sids if x != drop)
                    changed = True
            slots.append((pid, sids))
        if changed:
            self.pid_slots[category] = slots
            for sh in self.shards.get(category, ()):
                sh.cache.clear()  # cached slot lists may name a dropped slot
                sh.misses.clear()
    # ------------------------------------------------------------------ the precise check
    def check(self, pid: int, leaves: tuple[int, ...], v: str) -> bool:
        """Whether one of the key's leaves may hold on string value ``v`` (True when in doubt)."""
        if not leaves:
            return True
        for leaf in leaves:
            k = (pid, leaf)
            lru = self._lru
            if k in lru:
                lru.move_to_end(k)
                test = lru[k]
            else:
                t0 = time.perf_counter_ns()
                query, _root = self.queries[pid]
                test = _leaf_test(query.nodes[leaf])
                self.compile_ns[pid] = self.compile_ns.get(pid, 0) + time.perf_counter_ns() - t0
                self.counts["precise_compiled"] += 1
                lru[k] = test
                if len(lru) > self.settings.lru_capacity:
                    lru.popitem(last=False)
                    self.counts["precise_evicted"] += 1
            if test is None or test(v):
                return True
        return False

    # ------------------------------------------------------------------ introspection
    def explain(self, pid: int) -> tuple[str, str]:
        """(strategy, reason) for one predicate."""
        if pid not in self.keys:
            return "any", "an 'any' step: evaluated on every event"
        key = self.keys[pid]
        query, _ = self.queries[pid]
        if key is None:
            return "scan", "no literal is necessary for it (negation, numbers, functions, or a pattern without a literal of 3+ characters): evaluated on every event of its category"
        def describe(key: L.Key) -> str:
            parts = []
            for c in key:
                kinds = Counter(k for k, _ in c.alts)
                lits = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
                parts.append(f"{_path(query, c.fid)}{' (case-insensitive)' if c.ci else ''}: {lits}")
            return " or ".join(parts)

        why = "Aho-Corasick on " + describe(key)
        if pid in self.keys2:
            why += ", and on " + describe(self.keys2[pid])
        return "ac", why

    def shard_stats(self) -> list[dict[str, Any]]:
        out = []
        for cat, shards in sorted(self.shards.items()):
            for sh in shards:
                q = next((self.queries[self.slot_pid[s]][0] for s in sh.leaves), None)
                out.append({"category": cat, "field": _path(q, sh.fid) if q else str(sh.fid),
                            "predicates": len({self.slot_pid[s] for s in sh.leaves}),
                            "literals": sum(t.n_literals for t in (sh.cs, sh.ci) if t is not None)})
        return out


def _path(query: Any, fid: int) -> str:
    if query is None:
        return ""
    return next((n.value for n in query.nodes if n.op == "field" and n.field_id == fid), str(fid))


def _pred_hash(query: Any, root: int, cat: str | None) -> str:
    import orjson

    body = orjson.dumps({"q": query.to_dict(), "root": root, "cat": cat, "v": 1}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pyahocorasick")
    except Exception:
        return "?"


def _leaf_test(n: Any) -> Callable[[str], bool] | None:
    """A test of one key leaf on one string value that is true whenever the
    leaf can be true on it, or None (no test: always a candidate)."""
    op = n.op
    if op == "eq":
        return None  # the exact literal hit is the test
    if op == "in":
        if not n.ci:
            return None  # exact hits
        vals = frozenset(v for v in n.value if isinstance(v, str))
        return lambda v: not v.isascii() or v.lower() in vals
    if op in ("wildcard", "regex"):
        from kestrel_core.eql import functions as fn

        # the core's bounded matchers (wildcards without backtracking, regex on RE2)
        rx = fn.compile_patterns(op, tuple(n.value), n.ci)
        if rx is None:
            return None
        if n.ci or (op == "regex" and any("(?" in p for p in n.value)):
            return lambda v: not v.isascii() or rx(v) is not None
        return lambda v: rx(v) is not None
    if op == "call" and n.value in ("startsWith", "endsWith", "stringContains"):
        return None  # the literal's position is the test
    return None
