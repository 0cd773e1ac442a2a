"""Sequence state machine (Elasticsearch semantics), one per sequence rule.

See docs/eql-semantics.md for the rules this implements.  In short:

* events are fed in ``(ts_mono_ns, event_id)`` order; for one event the
  positive steps it matches are applied from the last to the first (so an
  event never fills two steps of one sequence), then ``until``;
* per join key, each step holds at most ONE pending sequence: a newer one
  overwrites the older (counted as eviction reason ``overwritten``);
* an event of step *k* takes the pending sequence of step *k-1* (removing
  it); if more than ``maxspan`` separates the sequence's first event from
  this one, the sequence is dropped (``maxspan``); exactly ``maxspan`` is in;
* an ``until`` event drops every pending sequence of its key (``until``);
* null/missing join keys never join, unless the key is written ``?field``;
* missing-event steps ``![...]`` are checked on completed candidates: no
  matching event with the same key strictly between the neighbouring
  positive events; a leading one looks back ``maxspan`` from the first
  event, a trailing one forward to ``first + maxspan`` (inclusive), which
  delays the match until time passes that point or the input ends.

Expiry never scans: pending sequences sit in a FIFO ordered by their start
time (starts arrive in time order) and are dropped from its head.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from typing import Any, Callable

import attrs


@attrs.define(kw_only=True)
class EngineLimits:
    """State-store limits of the sequence engine."""

    max_partials_per_rule: int = 200_000
    """Pending sequences one rule may hold; past it the least recently used
    join key is evicted (``rule_quota``)."""
    max_partials_per_entity: int = 64
    """Pending sequences one join key may hold in one rule (``entity_quota``).
    One per step is the most the state machine keeps, so this only bites
    with long sequences."""
    ttl_ns: int | None = 3_600_000_000_000
    """Age after which a pending sequence of a rule *without* maxspan is
    dropped (``ttl``); None keeps it until overwritten."""
    max_missing_hits_per_key: int = 1024
    """Remembered missing-step events per join key (oldest dropped first)."""
    lazy_dfa: bool = True
    """Run hot sequences that the DFA can express on a lazily built DFA
    (:mod:`kestrel_core.eql.lazydfa`); alerts are the same either way."""
    dfa_hot_hits: int = 1024
    """Step hits a rule's NFA handles before its DFA is compiled (0: at once)."""
    dfa_max_states: int = 64
    """States (occupancy masks) one DFA may reach; past it the rule stays on the NFA."""
    dfa_max_transitions: int = 4096
    """Transition-table entries one DFA may hold (its memory cap); past it the rule stays on the NFA."""
    dfa_cache: int = 256
    """Compiled DFAs kept at once (LRU over the engine's rules; 0: no DFA)."""


class Partial:
    """A pending (or completed) sequence: its events so far, one per positive stage."""

    __slots__ = ("start", "events", "stage", "key", "alive")

    def __init__(self, start: int, events: list, stage: int, key: Any) -> None:
        self.start = start
        self.events = events
        self.stage = stage
        self.key = key
        self.alive = True

    def ord(self, k: int) -> tuple[int, int]:
        e = self.events[k]
        return (e.ts_mono_ns, e.event_id)


class Candidate:
    """A completed positive sequence waiting for its trailing missing-event window."""

    __slots__ = ("partial", "deadline", "failed", "last_ord")

    def __init__(self, partial: Partial, deadline: int) -> None:
        self.partial = partial
        self.deadline = deadline
        self.failed = False
        self.last_ord = partial.ord(-1)


KeyFn = Callable[[Any], Any]
_UNSET = object()

ArmListener = Callable[[str, "Partial", bool, str], None]
"""``listener(rule_id, partial, armed, reason)``: a pending sequence reached the
step before the last (``armed`` True, reason "armed"), or such a sequence went
away (False; reason: "complete", an eviction reason, or "reload").  Lets an
enforcer block the last step before it happens (sequence-armed blocking)."""

# Marks fed to SequenceMatcher.feed are ints ``position << 16 | code`` (ints
# are not tracked by the cyclic GC and sort fast).  For one position the codes
# sort as: missing steps (0..), positive stages from the last to the first,
# until last.
POSITIVE = 0x4000
UNTIL = 0x8000


def mark_code(kind: int, x: int) -> int:
    """kind 0: missing step number x; 1: positive stage x; 2: until."""
    if kind == 0:
        return x
    if kind == 1:
        return UNTIL - 1 - x
    return UNTIL


def key_tuple(key: Any, scalar: bool) -> tuple:
    return (key,) if scalar else tuple(key)


def make_key_fn(field_ids: tuple[int, ...], nullable: tuple[bool, ...]) -> Callable[[Any], Any]:
    """Join-key extractor: event -> hashable key, or None when the event cannot join.

    The key is the value itself for one required key (no tuple to allocate),
    a tuple otherwise (see :func:`key_tuple`)."""
    if not field_ids:
        return lambda e: ()
    if len(field_ids) == 1 and not nullable[0]:
        src = f"""def key(e):
    k = e.fields.get({field_ids[0]})
    if k.__class__ is list:
        return tuple(k) or None
    return k
"""
        ns: dict[str, Any] = {}
        exec(compile(src, "<eql-key>", "exec"), ns)
        return ns["key"]
    src = ["def key(e):", "    g = e.fields.get"]
    parts = []
    for n, (fid, opt) in enumerate(zip(field_ids, nullable)):
        src.append(f"    k{n} = g({fid})")
        src.append(f"    if k{n}.__class__ is list: k{n} = tuple(k{n}) or None")
        if not opt:
            src.append(f"    if k{n} is None: return None")
        parts.append(f"k{n}")
    src.append(f"    return ({', '.join(parts)},)")
    ns: dict[str, Any] = {}
    exec(compile("\n".join(src), "<eql-key>", "exec"), ns)
    return ns["key"]


class SequenceMatcher:
    """State of one sequence rule.

    ``positive``: list of (step index in the query, key fn) of the positive
    steps; ``missing``: list of (step index, key fn, position) where position
    is the index of the positive step that follows (len(positive) when
    trailing)."""

    def __init__(
        self,
        rule_id: str,
        n_steps: int,
        positive_keys: list[KeyFn],
        missing: list[tuple[int, KeyFn, int]],
        until_key: KeyFn | None,
        maxspan_ns: int | None,
        limits: EngineLimits,
        evictions: Counter,
    ) -> None:
        self.rule_id = rule_id
        self.n_steps = n_steps
        self.n_pos = len(positive_keys)
        self.positive_keys = positive_keys
        self.missing = missing
        self.until_key = until_key
        self.maxspan = maxspan_ns
        self.limits = limits
        self.evictions = evictions
        self.slots: dict[Any, list] = {}
        """join key -> [Partial | None] * n_pos (index: positive stage)."""
        self.fifo: deque[Partial] = deque()
        self.n_partials = 0
        # missing-step memory: per missing step, key -> deque of (ts, ord)
        self.missing_hits: list[dict[Any, deque]] = [dict() for _ in missing]
        self.missing_fifo: list[deque] = [deque() for _ in missing]
        """per missing step: (ts, key) in arrival order, for expiry."""
        self.pending: list[tuple[int, int, Candidate]] = []  # heap by deadline (trailing missing)
        self.pending_by_key: dict[Any, list[Candidate]] = {}
        self._seq = 0
        self.has_trailing = any(pos == self.n_pos for _, _, pos in missing)
        self.has_missing = bool(missing)
        self.listener: ArmListener | None = None
        """Told when a sequence reaches / leaves the stage before the last (None: nobody asks)."""
        self.armed_stage = self.n_pos - 2 if self.n_pos > 1 else -1

    def _disarm(self, p: Partial, reason: str) -> None:
        if self.listener is not None and p.stage == self.armed_stage:
            self.listener(self.rule_id, p, False, reason)

    def withdraw(self, reason: str = "reload") -> None:
        """Tell the listener that every armed sequence goes away (the rule is withdrawn)."""
        if self.listener is None:
            return
        for slots in self.slots.values():
            p = slots[self.armed_stage] if self.armed_stage >= 0 else None
            if p is not None:
                self.listener(self.rule_id, p, False, reason)

    # ------------------------------------------------------------ eviction
    def _evict(self, p: Partial, reason: str) -> None:
        p.alive = False
        self.n_partials -= 1
        self.evictions[(self.rule_id, reason)] += 1
        if self.listener is not None:
            self._disarm(p, reason)

    def _drop_slot(self, p: Partial, reason: str) -> None:
        slots = self.slots.get(p.key)
        if slots is not None and slots[p.stage] is p:
            slots[p.stage] = None
            if not any(slots):
                del self.slots[p.key]
        self._evict(p, reason)

    def expire(self, now: int) -> None:
        """Drop pending sequences that can no longer complete at time ``now``."""
        fifo = self.fifo
        if self.maxspan is not None:
            limit = now - self.maxspan
            reason = "maxspan"
        elif self.limits.ttl_ns is not None:
            limit = now - self.limits.ttl_ns
            reason = "ttl"
        else:
            limit = None
            reason = ""
        if limit is not None:
            while fifo and fifo[0].start < limit:
                p = fifo.popleft()
                if p.alive:
                    self._drop_slot(p, reason)
        # the FIFO also holds dead entries; keep it from growing without bound
        if len(fifo) > 4 * (self.n_partials + 64):
            self.fifo = deque(p for p in fifo if p.alive)
        if self.has_missing and self.maxspan is not None:
            # a missing-step event older than 2 * maxspan can no longer fall in
            # any candidate's window; drop them oldest first (no scan)
            horizon = now - 2 * self.maxspan
            for table, order in zip(self.missing_hits, self.missing_fifo):
                while order and order[0][0] < horizon:
                    _, k = order.popleft()
                    dq = table.get(k)
                    if dq:
                        while dq and dq[0][0] < horizon:
                            dq.popleft()
                        if not dq:
                            del table[k]

    def _touch(self, key: Any) -> list:
        slots = self.slots.get(key)
        if slots is None:
            if self.n_partials >= self.limits.max_partials_per_rule and self.slots:
                # LRU: dict order is least recently created/used first
                old_key = next(iter(self.slots))
                for p in self.slots.pop(old_key):
                    if p is not None:
                        self._evict(p, "rule_quota")
            slots = self.slots[key] = [None] * self.n_pos
        else:
            # move to the most-recently-used end
            del self.slots[key]
            self.slots[key] = slots
        return slots

    # ------------------------------------------------------------ matching
    def on_step(self, stage: int, event: Any, out: list, key: Any = _UNSET) -> None:
        """Feed ``event`` (which matched positive stage ``stage``)."""
        if key is _UNSET:
            key = self.positive_keys[stage](event)
        if key is None:
            return
        ts = event.ts_mono_ns
        if stage == 0:
            p = Partial(ts, [event], 0, key)
            if self.n_pos == 1:
                self._complete(p, out)
                return
            slots = self._touch(key)
            old = slots[0]
            if old is not None:
                self._evict(old, "overwritten")
            slots[0] = p
            self.n_partials += 1
            if self.n_pos > self.limits.max_partials_per_entity:
                self._entity_quota(slots)
            self.fifo.append(p)
            if self.listener is not None and self.armed_stage == 0 and p.alive:
                self.listener(self.rule_id, p, True, "armed")
            return
        slots = self.slots.get(key)
        if slots is None:
            return
        prev = slots[stage - 1]
        if prev is None:
            return
        slots[stage - 1] = None
        if self.maxspan is not None and ts - prev.start > self.maxspan:
            self._evict(prev, "maxspan")
            if not any(slots):
                del self.slots[key]
            return
        prev.events.append(event)
        prev.stage = stage
        if stage == self.n_pos - 1:
            prev.alive = False
            self.n_partials -= 1
            if not any(slots):
                del self.slots[key]
            if self.listener is not None:
                self.listener(self.rule_id, prev, False, "complete")
            self._complete(prev, out)
            return
        old = slots[stage]
        if old is not None:
            self._evict(old, "overwritten")
        slots[stage] = prev
        self._touch(key)
        if self.listener is not None and stage == self.armed_stage:
            self.listener(self.rule_id, prev, True, "armed")

    def _entity_quota(self, slots: list) -> None:
        live = [p for p in slots if p is not None]
        while len(live) > self.limits.max_partials_per_entity:
            victim = min(live, key=lambda p: p.start)
            slots[victim.stage] = None
            self._evict(victim, "entity_quota")
            live.remove(victim)

    def on_until(self, event: Any) -> None:
        key = self.until_key(event) if self.until_key else None
        if key is None:
            return
        slots = self.slots.pop(key, None)
        if slots is None:
            return
        for p in slots:
            if p is not None:
                self._evict(p, "until")

    def on_missing(self, m: int, event: Any, order: tuple) -> None:
        """An event matched missing step number ``m`` (index into ``missing``)."""
        key = self.missing[m][1](event)
        if key is None:
            return
        dq = self.missing_hits[m].get(key)
        if dq is None:
            dq = self.missing_hits[m][key] = deque()
        dq.append((order[0], order))
        self.missing_fifo[m].append((order[0], key))
        if len(dq) > self.limits.max_missing_hits_per_key:
            dq.popleft()
        if self.missing[m][2] == self.n_pos:
            for cand in self.pending_by_key.get(key, ()):
                if cand.last_ord < order and order[0] <= cand.deadline:
                    cand.failed = True

    # ------------------------------------------------------------ completion
    def _complete(self, p: Partial, out: list) -> None:
        if not self.has_missing:
            out.append(p)
            return
        ords = [(e.ts_mono_ns, e.event_id) for e in p.events]
        first_ts = ords[0][0]
        for m, (_step, _kf, pos) in enumerate(self.missing):
            dq = self.missing_hits[m].get(p.key)
            if pos == self.n_pos:
                continue  # trailing: decided later
            if not dq:
                continue
            if pos == 0:
                lo, hi = None, ords[0]
                lo_ts = first_ts - self.maxspan
                for ts, o in dq:
                    if ts >= lo_ts and o < hi:
                        self.evictions[(self.rule_id, "missing_event_seen")] += 1
                        return
            else:
                lo, hi = ords[pos - 1], ords[pos]
                for _ts, o in dq:
                    if lo < o < hi:
                        self.evictions[(self.rule_id, "missing_event_seen")] += 1
                        return
        if not self.has_trailing:
            out.append(p)
            return
        cand = Candidate(p, first_ts + self.maxspan)
        self._seq += 1
        heapq.heappush(self.pending, (cand.deadline, self._seq, cand))
        self.pending_by_key.setdefault(p.key, []).append(cand)

    def release(self, now: int | None, out: list) -> None:
        """Emit trailing-missing candidates whose window closed before ``now``
        (all of them when ``now`` is None: end of input)."""
        heap = self.pending
        while heap and (now is None or heap[0][0] < now):
            _, _, cand = heapq.heappop(heap)
            lst = self.pending_by_key.get(cand.partial.key)
            if lst is not None:
                lst.remove(cand)
                if not lst:
                    del self.pending_by_key[cand.partial.key]
            if cand.failed:
                self.evictions[(self.rule_id, "missing_event_seen")] += 1
                continue
            out.append(cand.partial)

    def feed(self, marks: list[int], events: Any, emit: Callable[[int, Partial], None]) -> None:
        """Run the state machine over one batch's step hits.

        ``marks``: sorted ints ``position << 16 | code`` (see :func:`mark_code`);
        ``emit(position, partial)`` receives each completed sequence."""
        done: list[Partial] = []
        on_step = self.on_step
        slots_get = self.slots.get
        keys = self.positive_keys
        for mark in marks:
            i = mark >> 16
            code = mark & 0xFFFF
            e = events[i]
            if self.pending and self.pending[0][0] < e.ts_mono_ns:
                self.release(e.ts_mono_ns, done)
                for p in done:
                    emit(i, p)
                done.clear()
            if code < POSITIVE:
                self.on_missing(code, e, (e.ts_mono_ns, e.event_id))
            elif code < UNTIL:
                stage = UNTIL - 1 - code
                if stage and not self.n_partials:
                    continue
                key = keys[stage](e)
                if key is None:
                    continue
                if stage:
                    # cheap rejection: no pending sequence for this key at the previous stage
                    slots = slots_get(key)
                    if slots is None or slots[stage - 1] is None:
                        continue
                on_step(stage, e, done, key)
                if done:
                    for p in done:
                        emit(i, p)
                    done.clear()
            elif self.slots:
                self.on_until(e)

    @property
    def active(self) -> int:
        return self.n_partials

    @property
    def held(self) -> int:
        """Pending sequences plus completed ones waiting on a trailing missing step."""
        return self.n_partials + len(self.pending)

    def adopt(self, old: "SequenceMatcher") -> int:
        """Take ``old``'s state (same rule, same compiled query, reloaded):
        pending sequences, missing-step memory, waiting candidates.  Returns
        how many sequences came along."""
        self.slots, self.fifo, self.n_partials = old.slots, old.fifo, old.n_partials
        self.missing_hits, self.missing_fifo = old.missing_hits, old.missing_fifo
        self.pending, self.pending_by_key, self._seq = old.pending, old.pending_by_key, old._seq
        return self.held
