"""Lazy DFA for hot sequences.

A sequence rule's state per join key is *which positive steps hold a pending
sequence*: a bit mask (bit ``s``: the slot of step ``s`` is filled; the last
step never holds one, it completes).  An event is a *symbol*: the bit set of
the rule's steps whose predicate it satisfies.  The NFA
(:class:`~kestrel_core.eql.sequence.SequenceMatcher`) decides per event and
per matched step what to do; the DFA looks the pair ``(mask, symbol)`` up in
a transition table instead, built lazily the first time the pair occurs and
cached: which steps move (applied from the last to the first, as the NFA
does), and the mask the key ends in.  A step ``s > 0`` moves iff bit ``s-1``
is set in the *original* mask (the moves of later steps only touch bits
``>= s``), so applicability never depends on a maxspan check; a move whose
maxspan check fails leaves its bit out (the only run-time part of the new
mask).  Events whose symbol moves nothing for their key (most later-step
hits) cost one key read and two dict probes.

The DFA shares the NFA's state store (``slots``, the expiry FIFO, counters,
evictions): switching between the two is free at any batch boundary, and a
rule demoted from the DFA (LRU, caps) goes on on the NFA with its pending
sequences.  Alerts, their order and eviction counts are identical either
way (tests/eql/test_lazydfa.py checks it against the NFA and the reference
state machine on random streams).

What stays on the NFA (:func:`ineligible`): ``until``, missing-event steps,
different join keys per step, more steps than ``dfa_max_states`` allows,
fewer than two positive steps, and a rule whose sequences an enforcer
listens to (sequence-armed blocking).  A rule is *hot* once its NFA has been
fed ``dfa_hot_hits`` step hits; then its DFA is compiled (on its next
batch).  Compiled DFAs live in an LRU of ``dfa_cache`` entries shared by the
engine's rules; a DFA whose states or transitions pass ``dfa_max_states`` /
``dfa_max_transitions`` is dropped and its rule stays on the NFA.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import compress
from operator import attrgetter, methodcaller
from typing import Any, Callable, Sequence

from .sequence import POSITIVE, UNTIL, Partial, SequenceMatcher

_fields = attrgetter("fields")

MAX_STEPS = 16
"""Longest sequence the DFA takes (its masks and symbols are ints of this many bits)."""


def ineligible(query: Any, limits: Any) -> str | None:
    """Why the sequence ``query`` cannot run on a lazy DFA, or None when it can."""
    if query.kind != "sequence":
        return "not a sequence"
    if not getattr(limits, "lazy_dfa", True):
        return "lazy DFA off ([engine] lazy_dfa = false)"
    why = []
    if query.until is not None:
        why.append("until")
    if any(s.missing for s in query.steps):
        why.append("missing-event steps")
    positive = [s for s in query.steps if not s.missing]
    keyspecs = {(tuple(query.nodes[k].field_id for k in s.keys), s.keys_nullable) for s in positive}
    if len(keyspecs) > 1:
        why.append("different join keys per step")
    if len(positive) < 2:
        why.append("fewer than two positive steps")
    elif len(positive) > MAX_STEPS:
        why.append(f"more than {MAX_STEPS} steps")
    elif len(positive) > limits.max_partials_per_entity:
        why.append("more steps than max_partials_per_entity")
    return ", ".join(why) if why else None


def scalar_key_field(field_ids: tuple[int, ...], nullable: tuple[bool, ...]) -> int | None:
    """The field of a join key that is one required field (read in C), else None."""
    return field_ids[0] if len(field_ids) == 1 and not nullable[0] else None


class DfaCache:
    """LRU of compiled DFAs shared by an engine's sequence rules; counters of
    what happened to them (``counts``: compiled, evicted_lru, state_cap,
    transition_cap)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.live: OrderedDict[int, "DfaSequenceMatcher"] = OrderedDict()
        self.counts: dict[str, int] = {"compiled": 0, "evicted_lru": 0, "state_cap": 0, "transition_cap": 0}

    def admit(self, m: "DfaSequenceMatcher") -> bool:
        if self.capacity <= 0:
            return False
        while len(self.live) >= self.capacity:
            _, victim = self.live.popitem(last=False)
            victim._demote()
            self.counts["evicted_lru"] += 1
        self.live[id(m)] = m
        self.counts["compiled"] += 1
        return True

    def touch(self, m: "DfaSequenceMatcher") -> None:
        self.live.move_to_end(id(m))

    def drop(self, m: "DfaSequenceMatcher", reason: str) -> None:
        self.live.pop(id(m), None)
        self.counts[reason] += 1


class DfaSequenceMatcher(SequenceMatcher):
    """A sequence rule's state machine that runs on a lazily built DFA once hot.

    ``stage_units``: the predicate unit of each positive step, in order."""

    def __init__(self, *args: Any, stage_units: Sequence[int], cache: DfaCache,
                 key_field: int | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._get = methodcaller("get", key_field) if key_field is not None else None
        """Reads the one required scalar join-key field in C (None: several fields or nullable)."""
        self.stage_units = tuple(stage_units)
        self.cache = cache
        self.fed = 0
        """Step hits fed to the NFA (hotness)."""
        self.table: dict[int, tuple] | None = None
        """(mask << n_pos | symbol) -> (moves, base mask); None: not compiled (NFA)."""
        self.masks: dict[Any, int] | None = None
        """join key -> occupancy mask, kept while the DFA is compiled."""
        self.states: set[int] = set()
        self.blocked = ""
        """Why this rule stays on the NFA for good (a cap), or ''."""
        self.dfa_events = 0
        """Events the DFA has consumed (for ``kestrel rules cost`` / tests)."""

    # ------------------------------------------------------------ life cycle
    def dfa_active(self) -> bool:
        """Whether this batch runs on the DFA (compiles it when the rule has become hot)."""
        if self.table is not None:
            if self.listener is not None:  # an enforcer now listens: its events come from the NFA
                self.cache.live.pop(id(self), None)
                self._demote()
                return False
            self.cache.touch(self)
            return True
        if (self.blocked or self.listener is not None or self.fed < self.limits.dfa_hot_hits
                or not self.cache.admit(self)):
            return False
        self.table = {}
        self.states = set()
        masks = {}
        for key, slots in self.slots.items():
            mask = 0
            for s, p in enumerate(slots):
                if p is not None:
                    mask |= 1 << s
            masks[key] = mask
        self.masks = masks
        return True

    def _demote(self) -> None:
        """Back to the NFA (the state store is shared: nothing is lost)."""
        self.table = None
        self.masks = None
        self.states = set()
        self.fed = 0

    def _cap(self, reason: str) -> None:
        self.cache.drop(self, reason)
        self._demote()
        self.blocked = reason

    # ------------------------------------------------------------ NFA paths that change slots
    def feed(self, marks: list[int], events: Any, emit: Callable[[int, Partial], None]) -> None:
        self.fed += len(marks)
        super().feed(marks, events, emit)

    def _drop_slot(self, p: Partial, reason: str) -> None:
        super()._drop_slot(p, reason)
        masks = self.masks
        if masks is not None:
            slots = self.slots.get(p.key)
            if slots is None:
                masks.pop(p.key, None)
            else:
                masks[p.key] = masks.get(p.key, 0) & ~(1 << p.stage)

    def _touch(self, key: Any) -> list:
        if self.masks is not None and key not in self.slots and self.slots \
                and self.n_partials >= self.limits.max_partials_per_rule:
            self.masks.pop(next(iter(self.slots)), None)  # the LRU key the quota is about to evict
        return super()._touch(key)

    def adopt(self, old: SequenceMatcher) -> int:
        n = super().adopt(old)
        self.fed = getattr(old, "fed", 0)  # a reloaded rule stays as hot as it was
        if self.table is not None:
            self._demote()
            self.cache.live.pop(id(self), None)
        return n

    # ------------------------------------------------------------ the DFA
    @staticmethod
    def _filter_keys(keys: list) -> list:
        return [tuple(k) or None if k.__class__ is list else k for k in keys] if list in set(map(type, keys)) else keys

    def _transition(self, mask: int, sym: int) -> tuple:
        """Which steps move for ``sym`` in state ``mask`` (last first) and the bits
        that stay set whatever the maxspan checks say."""
        moves = []
        base = 0
        last = self.n_pos - 1
        for s in range(last, -1, -1):
            if not sym >> s & 1:
                continue
            if s == 0 or mask >> (s - 1) & 1:
                moves.append(s)
        for b in range(last):
            if b == 0 and sym & 1:
                base |= 1  # a new sequence starts at step 0 whatever else happens
            elif mask >> b & 1 and not (b + 1 in moves):
                base |= 1 << b
        self.states.add(mask)
        lim = self.limits
        if len(self.states) > lim.dfa_max_states:
            self._cap("state_cap")
        elif len(self.table) >= lim.dfa_max_transitions:
            self._cap("transition_cap")
        return tuple(moves), base

    def _keys(self, events: Any, positions: Sequence[int]) -> list:
        """Join keys of the events at ``positions``; read in C for one required
        scalar key field (``by process.entity_id``), else through the key function.
        A list value stays a list here (unhashable: the caller falls back)."""
        evs = map(events.__getitem__, positions)
        if self._get is not None:
            return list(map(self._get, map(_fields, evs)))
        return list(map(self.positive_keys[0], evs))

    def feed_hits(self, hits: dict[int, list[int]], events: Any, emit: Callable[[int, Partial], None]) -> bool:
        """Run the DFA over one batch: ``hits`` maps unit id -> sorted batch positions.
        Returns whether the NFA would have been fed marks (the engine then expires
        at the batch's end, as after an NFA feed, so eviction counts agree).

        A later step's hit can only move something for a key that holds a
        pending sequence (in ``masks`` now) or starts one in this batch (a
        step-0 hit's key): the others are dropped before the loop, their
        keys read and probed in C."""
        units = self.stage_units
        masks = self.masks
        h0 = hits.get(units[0])
        sym: dict[int, int] = dict.fromkeys(h0, 1) if h0 else {}
        k0: set | None = None
        multi = False
        fed = bool(h0)
        for s in range(1, len(units)):
            h = hits.get(units[s])
            if not h or (not masks and not h0):
                continue
            fed = True
            if k0 is None:
                k0 = set(self._filter_keys(self._keys(events, h0))) if h0 else set()
            ks = self._keys(events, h)
            try:
                keep = list(compress(h, map(masks.__contains__, ks)))
                if k0:
                    n = len(keep)
                    keep += compress(h, map(k0.__contains__, ks))
                    multi = multi or len(keep) > n  # two sorted runs
            except TypeError:  # a list-valued key field: the key function makes it a tuple
                key_of = self.positive_keys[0]
                keep = [i for i in h if (k := key_of(events[i])) in masks or k in k0]
            if not keep:
                continue
            bit = 1 << s
            if not sym:
                sym = dict.fromkeys(keep, bit)
                continue
            multi = True
            get = sym.get
            for i in keep:
                sym[i] = get(i, 0) | bit
        if not sym:
            return fed
        order = sorted(sym) if multi else list(sym)
        xs = list(map(sym.__getitem__, order))
        keys = self._keys(events, order)
        if self._get is not None:
            keys = self._filter_keys(keys)
        masks = self.masks
        masks_get = masks.get
        table = self.table
        slots_map = self.slots
        slots_get = slots_map.get
        fifo_append = self.fifo.append
        last = self.n_pos - 1
        maxspan = self.maxspan
        evictions = self.evictions
        rid = self.rule_id
        W = self.n_pos
        self.dfa_events += len(order)
        for i, x, key in zip(order, xs, keys):
            if key is None or (not x & 1 and not self.n_partials):
                continue
            mask = masks_get(key, 0)
            t = table.get(mask << W | x)
            if t is None:
                t = self._transition(mask, x)
                if self.table is None:  # a cap was hit: the rest of the batch on the NFA
                    self._nfa_rest(order, sym, i, events, emit)
                    return True
                table[mask << W | x] = t
            moves, newmask = t
            if not moves:
                continue
            e = events[i]
            ts = e.ts_mono_ns
            slots = slots_get(key)
            for s in moves:
                if s == 0:
                    if slots is None:
                        slots = self._touch(key)  # a new key (the rule quota may evict the oldest)
                    else:  # the NFA's _touch of a known key: most recently used
                        del slots_map[key]
                        slots_map[key] = slots
                    old = slots[0]
                    if old is not None:
                        old.alive = False
                        self.n_partials -= 1
                        evictions[(rid, "overwritten")] += 1
                    slots[0] = Partial(ts, [e], 0, key)
                    self.n_partials += 1
                    fifo_append(slots[0])
                    continue
                prev = slots[s - 1]
                slots[s - 1] = None
                if maxspan is not None and ts - prev.start > maxspan:
                    prev.alive = False
                    self.n_partials -= 1
                    evictions[(rid, "maxspan")] += 1
                    if not any(slots):
                        del slots_map[key]
                        slots = None  # only a step-0 move can follow (it needs no slot)
                    continue
                prev.events.append(e)
                prev.stage = s
                if s == last:
                    prev.alive = False
                    self.n_partials -= 1
                    if not any(slots):
                        del slots_map[key]
                        slots = None
                    emit(i, prev)
                    continue
                old = slots[s]
                if old is not None:
                    old.alive = False
                    self.n_partials -= 1
                    evictions[(rid, "overwritten")] += 1
                slots[s] = prev
                newmask |= 1 << s
                del slots_map[key]
                slots_map[key] = slots
            if newmask:
                masks[key] = newmask
            else:
                masks.pop(key, None)
        return True

    def _nfa_rest(self, order: list[int], sym: dict[int, int], start: int, events: Any,
                  emit: Callable[[int, Partial], None]) -> None:
        """Finish a batch on the NFA from position ``start`` (the DFA hit a cap there)."""
        marks = []
        for i in order:
            if i < start:
                continue
            x = sym[i]
            for s in range(self.n_pos):
                if x >> s & 1:
                    marks.append(i << 16 | (UNTIL - 1 - s))
        marks.sort()
        SequenceMatcher.feed(self, marks, events, emit)


assert POSITIVE < UNTIL - 8  # stage codes of the NFA marks (UNTIL - 1 - stage) stay positive codes
