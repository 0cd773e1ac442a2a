"""Rule classifier and cost profile (``kestrel rules explain`` / ``rules cost``).

The classifier names, per rule, the matching strategy the engine uses for
it and why, read off the compiled IR and the matcher's own account of each
step predicate (``Matcher.explain(pid) -> (strategy, reason)`` when the
matcher has it; the literal index and category dispatch are described here):

============  ==============================================================
``ac``        every step is selected by literal hits (Aho-Corasick or the
              literal index) and its predicate is literal tests only
``ac+pred``   literal hits select the candidates, the full predicate (regex,
              numbers, functions, negation) then runs on them
``scan``      no necessary literal: the predicate runs on every event of
              its category
``lazy-dfa``  a sequence whose state the lazy DFA expresses (one join key
              for every step, no until, no missing events): it runs on the
              NFA until hot (``dfa_hot_hits`` step hits), then on a lazily
              built DFA (:mod:`kestrel_core.eql.lazydfa`), alerts unchanged
``nfa``       a sequence the DFA cannot express (until, missing events,
              per-step keys, ...): the host NFA, with the reason
============  ==============================================================

Steps of a sequence are selected as single-event rules are (their own
strategies are listed per step); the DFA consumes the steps' predicate
bits, so regex or function steps do not keep a sequence off it.

The cost profile runs a rule set over events with every step predicate
wrapped in a timer: per rule, the compile time (the rule compiled alone),
the events its predicates evaluated, the time they took, the candidate rate
(evaluated / events of the step's category) and the hit rate (true /
evaluated).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Iterable, Sequence

import attrs

LITERAL_OPS = frozenset({"eq", "in", "wildcard", "and", "or", "field", "const"})
LITERAL_CALLS = frozenset({"startsWith", "endsWith", "stringContains"})


def _ops(nodes: Any, root: int) -> set[str]:
    seen, out, stack = set(), set(), [root]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        n = nodes[nid]
        out.add(f"call:{n.value}" if n.op == "call" else n.op)
        stack.extend(n.args)
    return out


def _literal_only(nodes: Any, root: int) -> bool:
    return all(op in LITERAL_OPS or (op.startswith("call:") and op[5:] in LITERAL_CALLS) for op in _ops(nodes, root))


def step_strategy(engine: Any, uid: int) -> tuple[str, str]:
    """(strategy, reason) of the matcher for one unit."""
    m = engine.matcher
    u = engine.units[uid]
    if u.category is None:
        return "scan", "an 'any' step: evaluated on every event"
    if getattr(u, "rule_set", None) is not None:
        return "scan", f"evaluated by rule-set runtime '{u.rule_set}' on the whole batch"
    if hasattr(m, "explain"):
        return m.explain(uid)
    index = getattr(m, "index", None)
    if index is not None:
        key = index.keys.get(uid)
        if key is None:
            return "scan", "no necessary ==/in/:/like literal: evaluated on every event of its category"
        parts = [f"{_path(u.query, fid)}: {len(alts)} literal(s)" for fid, alts in key]
        return "ac", "literal index on " + " or ".join(parts)
    return "scan", f"matcher '{getattr(m, 'PLUGIN_NAME', type(m).__name__)}' selects by category only"


def _path(query: Any, fid: int) -> str:
    return next((n.value for n in query.nodes if n.op == "field" and n.field_id == fid), str(fid))


@attrs.frozen
class Explanation:
    rule_id: str
    kind: str
    strategy: str
    reason: str
    steps: tuple[tuple[str, str], ...]


def explain_rule(engine: Any, cr: Any) -> Explanation:
    q = cr.query
    steps = []
    literal = True
    for step in q.steps + ((q.until,) if q.until else ()):
        uid = cr.units[step.id]
        strat, why = step_strategy(engine, uid)
        steps.append((strat, why))
        literal = literal and strat == "ac" and _literal_only(q.nodes, step.pred)
    strategies = {s for s, _ in steps}
    if q.kind == "sequence":
        from .lazydfa import DfaSequenceMatcher, ineligible

        lim = engine.limits
        why = ineligible(q, lim)
        m = cr.matcher
        if why is None and isinstance(m, DfaSequenceMatcher):
            reason = (f"hot simple sequence: the NFA until its steps have had {lim.dfa_hot_hits} hits, then a "
                      f"lazy DFA (at most {lim.dfa_max_states} states, {lim.dfa_max_transitions} transitions; "
                      f"LRU of {lim.dfa_cache} DFAs)")
            if m.blocked:
                reason += f"; its DFA passed a cap ({m.blocked}): back on the NFA"
            elif m.table is not None:
                reason += f"; on its DFA now ({len(m.table)} transitions, {m.dfa_events} events consumed)"
            return Explanation(cr.id, "sequence", "lazy-dfa", reason, tuple(steps))
        return Explanation(cr.id, "sequence", "nfa", "NFA: " + (why or "not built as a DFA"), tuple(steps))
    strat = "ac" if literal else ("scan" if strategies == {"scan"} else "ac+pred")
    reason = {"ac": "literal-only: candidates are the literal hits",
              "ac+pred": "mixed: literal hits select candidates, the full predicate runs on them",
              "scan": "no literal prefilter"}[strat]
    return Explanation(cr.id, "event", strat, reason, tuple(steps))


def explain(engine: Any) -> list[Explanation]:
    return [explain_rule(engine, cr) for cr in engine.rules]


# --------------------------------------------------------------------------- cost profile


class _Timed:
    """A unit's compiled predicate with counters (evaluations, hits, time)."""

    def __init__(self, pred: Any, stats: list[int]) -> None:
        self.pred = pred
        self.stats = stats  # [evaluated, hits, ns, calls]

    def _wrap(self, fn: Any, events: Sequence[Any]) -> Any:
        t = time.perf_counter_ns()
        out = fn(events)
        st = self.stats
        st[2] += time.perf_counter_ns() - t
        st[0] += len(events)
        st[1] += len(out)
        st[3] += 1
        return out

    def select_idx(self, events: Sequence[Any]) -> Any:
        return self._wrap(self.pred.select_idx, events)

    def select_idx_nocat(self, events: Sequence[Any]) -> Any:
        return self._wrap(self.pred.select_idx_nocat, events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pred, name)


@attrs.define
class RuleCost:
    rule_id: str
    compile_ms: float
    evaluated: int = 0
    hits: int = 0
    eval_ms: float = 0.0
    category_events: int = 0
    alerts: int = 0

    @property
    def candidate_rate(self) -> float:
        return self.evaluated / self.category_events if self.category_events else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.evaluated if self.evaluated else 0.0


def profile_costs(make_engine: Any, rules: Sequence[Any], events: Sequence[Any], *, batch: int = 1024,
                  schema: Any = None) -> tuple[list[RuleCost], Any]:
    """Run ``rules`` over ``events`` with timed predicates; returns (costs sorted by
    evaluation time, then compile time; the engine).  ``make_engine(rules)`` builds an engine."""
    compile_ms = {}
    for r in rules:
        t = time.perf_counter()
        make_engine([r])
        compile_ms[r.id] = (time.perf_counter() - t) * 1000
    engine = make_engine(list(rules))
    stats = instrument(engine)
    cats = Counter(e.category for e in events)
    alerts: Counter = Counter()
    for i in range(0, len(events), batch):
        for a in engine.process_batch(events[i:i + batch]):
            alerts[a.rule_id] += 1
    for a in engine.flush():
        alerts[a.rule_id] += 1
    out = []
    for cr in engine.rules:
        rc = RuleCost(cr.id, compile_ms.get(cr.id, 0.0), alerts=alerts[cr.id])
        for uid in set(cr.units.values()):
            st = stats[uid]
            share = max(1, len(engine.units[uid].users))  # a shared predicate's time is split among its rules
            rc.evaluated += st[0]
            rc.hits += st[1]
            rc.eval_ms += st[2] / 1e6 / share
            cat = engine.units[uid].category
            rc.category_events += len(events) if cat is None else cats.get(cat, 0)
        out.append(rc)
    out.sort(key=lambda c: (-c.eval_ms, -c.compile_ms, c.rule_id))
    return out, engine


def instrument(engine: Any) -> dict[int, list[int]]:
    """Wrap every host-evaluated unit's predicate in a timer (``[engine] cost_profile``);
    returns unit id -> [evaluated, hits, ns, calls]."""
    stats = {u.id: [0, 0, 0, 0] for u in engine.units}
    for u in engine.units:
        if u.pred is not None and not isinstance(u.pred, _Timed):
            u.pred = _Timed(u.pred, stats[u.id])
    return stats


def _per_rule(engine: Any, unit_stats: dict[int, list[int]], slot: int, scale: float = 1.0) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for cr in engine.rules:
        total = 0.0
        for uid in set(cr.units.values()):
            st = unit_stats.get(uid)
            if st is None:
                continue
            share = max(1, len(engine.units[uid].users)) if slot == 2 else 1
            total += st[slot] * scale / share
        out[(cr.id,)] = total
    return out


def publish_costs(stats: Any, engine: Any, unit_stats: dict[int, list[int]]) -> None:
    """The run's cost profile as ``stats.extra["metrics"]`` (exported by
    sink-prometheus), read live at each scrape; the matcher's own counters too
    when it keeps them (``counts``, as acdfa does)."""
    with stats.lock:
        metrics = stats.extra.setdefault("metrics", {})
        metrics["kestrel_rule_eval_seconds_total"] = {
            "type": "counter", "labels": ("rule",),
            "help": "Time spent evaluating each rule's step predicates on candidate events (a shared predicate's time is split).",
            "values": lambda: _per_rule(engine, unit_stats, 2, 1e-9)}
        metrics["kestrel_rule_evaluations_total"] = {
            "type": "counter", "labels": ("rule",),
            "help": "Candidate events each rule's step predicates were evaluated on.",
            "values": lambda: _per_rule(engine, unit_stats, 0)}
        metrics["kestrel_rule_candidate_hits_total"] = {
            "type": "counter", "labels": ("rule",),
            "help": "Candidate events on which a rule's step predicate was true.",
            "values": lambda: _per_rule(engine, unit_stats, 1)}
        counts = getattr(engine.matcher, "counts", None)
        if counts is not None:
            name = getattr(engine.matcher, "PLUGIN_NAME", "?")
            metrics["kestrel_matcher_operations_total"] = {
                "type": "counter", "labels": ("matcher", "operation"),
                "help": "Matcher work: distinct values scanned or answered from its value cache, precise patterns "
                        "compiled or evicted from the LRU, compile-cache hits and misses.",
                "values": lambda: {(name, k): v for k, v in sorted(counts.items())}}
