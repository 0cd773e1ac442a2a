"""Detection engine: rules + ordered event batches -> alerts.

Hot path per batch (events sorted by ``(ts_mono_ns, event_id)``):

1. events are grouped by category once (multi-valued categories join every
   group they name); a rule only ever sees its category's group (``any``
   rules see the batch);
2. single-event rules: a per-category literal index (``field == "x"``,
   ``field in (...)``, ``field : "x"``; see :mod:`kestrel_core.eql.index`)
   narrows the rules worth running; each candidate rule then runs its
   compiled predicate once over its candidate events (one list
   comprehension per rule per batch);
3. sequence rules: each distinct step predicate runs once over its category
   group; the hits of all steps are merged in event order and only they are
   fed to the rule's state machine (:mod:`kestrel_core.eql.sequence`).

Alerts come out in event order (the event that completed the match), ties
broken by rule order.
"""

from __future__ import annotations

import gc
import logging
import operator
import re
import time
from collections import Counter, deque
from typing import Any, Iterable, Mapping, Sequence

from ..alert import Alert
from ..event import Event
from ..interfaces import CompiledPredicate, CompiledRuleSet, Interest, Matcher, PredicateRuntime, RuleSetRuntime
from ..exceptionlists import compile_rule_query
from ..rules import Rule, RuleError, locate_eql_error
from ..schema import Schema
from . import compilecache, ir, lazydfa
from .pushdown import step_filter
from .errors import EqlError
from .hostruntime import HostPredicate, HostRuntime
from .index import CategoryMatcher, LiteralIndexMatcher
from .sequence import EngineLimits, SequenceMatcher, key_tuple, make_key_fn, mark_code

__all__ = ["DetectionEngine", "EngineLimits", "CompiledRule", "runtime_unavailable_error"]

log = logging.getLogger("kestrel")

EVAL_BUDGET_MS = 1000.0
"""Default watchdog budget: wall time one predicate may take over one batch."""


def runtime_unavailable_error(rule: Rule, why: str, available: Sequence[str]) -> RuleError:
    """A located error for a rule whose ``runtime`` key names a runtime that cannot run here."""
    line, col = rule.runtime_pos or (rule.line, 1)
    hint = (f"install its plugin (pip install kestrel-edr-runtime-{rule.runtime}), remove the rule's 'runtime' key, "
            f"or let the profile fall back ([engine] runtime_fallback = \"host\"); available: "
            f"{', '.join(sorted(set(available) | {'host'}))}")
    return RuleError(f"predicate runtime '{rule.runtime}' is not available: {why}", rule.file, line, col, rule.id,
                     rule.runtime_src, hint=hint)


class _Adapter:
    """Gives any runtime's CompiledPredicate the engine's select* entry points."""

    def __init__(self, pred: CompiledPredicate) -> None:
        self.pred = pred

    def select_idx(self, events: Sequence[Event]) -> list[int]:
        return [i for i, t in enumerate(self.pred.eval_batch(events)) if t]

    select_idx_nocat = select_idx

    def select_nocat(self, events: Sequence[Event]) -> list[Event]:
        return [e for e, t in zip(events, self.pred.eval_batch(events)) if t]


class CompiledRule:
    """A rule ready to run: IR, the predicate units of its steps, pipe state."""

    def __init__(self, index: int, rule: Rule, query: ir.Query, units: dict[int, int], schema: Schema) -> None:
        self.index = index
        self.rule = rule
        self.query = query
        self.units = units
        """step id (and until id) -> predicate unit id."""
        self.field_ids = [(p, schema.resolve(p)) for p in query.fields]
        self.done = False
        self.emitted = 0
        # pipes: leading heads stream; from the first tail on, buffer and finish at flush
        pipes = list(query.pipes)
        self.head: int | None = None
        while pipes and pipes[0][0] == "head":
            n = pipes.pop(0)[1]
            self.head = n if self.head is None else min(self.head, n)
        self.tail_buf: deque | None = None
        self.post_pipes = pipes[1:] if pipes else []
        if pipes:
            self.tail_buf = deque(maxlen=pipes[0][1])
        self.matcher: SequenceMatcher | None = None
        self.signature = repr(query.to_dict())
        """The compiled query; equal signatures (same schema): same semantics,
        so run-time state may move between engines (hot reload)."""
        self.marks_spec: list[tuple[int, int, bool]] = []
        """(unit, mark code, later stage?) per step: what the state machine is fed."""
        self.scalar_key = False
        self.degraded: str | None = None
        """Budget step in force (:mod:`kestrel_core.budgets`): ``prefilter``,
        ``sample``, ``offline``, or None (fully evaluated)."""
        self.seq_ns = 0
        """Sampled time in this rule's sequence state machine (scaled estimate)."""

    @property
    def id(self) -> str:
        return self.rule.id


class _Unit:
    """One distinct step predicate (shared by every rule and step that has it)."""

    __slots__ = ("id", "category", "query", "root", "pred", "users", "rule_set")

    def __init__(self, uid: int, category: str | None, query: ir.Query, root: int, pred: Any,
                 rule_set: str | None = None) -> None:
        self.id = uid
        self.category = category
        self.query = query
        self.root = root
        self.pred = pred
        """Host path: the compiled predicate; None for a rule-set runtime's unit."""
        self.users: list[int] = []
        self.rule_set = rule_set
        """Name of the rule-set runtime (Predicate ABI) that evaluates this unit, or None."""


GATE_FIELD = "event.action"


def _gate(query: ir.Query, root: int) -> frozenset[str] | None:
    """The ``event.action`` values one of which the predicate at ``root``
    needs (lower case: a superset for case-sensitive tests), or None when it
    does not pin the action to plain values (wildcards, no constraint)."""
    pats = dict(step_filter(query.nodes, root, None).constraints).get(GATE_FIELD)
    if not pats or any("*" in p or "?" in p for p in pats):
        return None
    return frozenset(p.lower() for p in pats)


def _by_value(events: Sequence[Event], fid: int) -> dict[Any, list[int]]:
    """Lower-cased string value of ``fid`` (each element of a list) -> positions."""
    out: dict[Any, list[int]] = {}
    for j, e in enumerate(events):
        v = e.fields.get(fid)
        for x in v if v.__class__ is list else (v,):
            if x.__class__ is str:
                lst = out.get(x.lower())
                if lst is None:
                    out[x.lower()] = [j]
                elif lst[-1] != j:
                    lst.append(j)
    return out


def _representatives(events: Sequence[Event]) -> tuple[list[int], list[Any]] | None:
    """Batch positions of one event per distinct ``content`` (the first) and
    of every event without one, in order, and the contents; None when that
    is every event."""
    contents = list(map(_content, events))
    n = len(contents)
    if contents.count(None) >= n - 1:  # no content shared (the usual batch of most sources)
        return None
    first = dict(zip(map(id, reversed(contents)), range(n - 1, -1, -1)))  # id -> first position (C loops)
    if first.pop(id(None), None) is not None:
        pos = [i for i, c in enumerate(contents) if c is None]
        if len(pos) + len(first) == n:
            return None
        pos.extend(first.values())
    else:
        if len(first) == n:
            return None
        pos = list(first.values())
    pos.sort()
    return pos, contents


def _spread(hits: dict[int, list[int]], pos: list[int], contents: list[Any]) -> dict[int, list[int]]:
    """Hits on representatives (indexes into ``pos``) -> hits on every batch
    position that shares the representative's content."""
    if not hits:
        return hits
    members: dict[int, list[int]] = {}
    for idx in hits.values():
        for j in idx:
            c = contents[pos[j]]
            if c is not None:
                members[id(c)] = []
    if members:
        for i, c in enumerate(contents):
            m = members.get(id(c))
            if m is not None:
                m.append(i)
    out = {}
    for uid, idx in hits.items():
        got: list[int] = []
        for j in idx:
            c = contents[pos[j]]
            if c is None:
                got.append(pos[j])
            else:
                got.extend(members[id(c)])
        got.sort()
        out[uid] = got
    return out


_content = operator.attrgetter("content")

_LUCENE_SPECIAL = frozenset('.?+*|{}[]()"~&<>@#')
MIN_PREFILTER_LITERAL = 3


def required_literal(kind: str, pattern: str) -> str | None:
    """A lower-case substring every value matching ``pattern`` contains (the
    longest one found), or None.  ``wildcard``: the longest run between
    ``*``, ``?`` and ``\\``.  ``regex`` (Lucene syntax, anchored): the longest
    run of plain characters at the top level not followed by a quantifier;
    a top-level ``|`` means none.  Conservative: None when unsure."""
    if kind == "wildcard":
        best = max(re.split(r"[*?\\]", pattern), key=len)
    else:
        runs, run, depth, i = [], [], 0, 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\" and i + 1 < len(pattern) and depth == 0:
                run.append(pattern[i + 1])
                i += 2
                continue
            if c in "([":
                depth += 1
            elif c in ")]":
                depth -= 1
            elif c == "|" and depth == 0:
                return None
            if c in _LUCENE_SPECIAL or depth > 0 or c == "\\":
                if c in "?*{" and run:
                    run.pop()  # the character before a quantifier is optional
                runs.append("".join(run))
                run = []
            else:
                run.append(c)
            i += 1
        runs.append("".join(run))
        best = max(runs, key=len)
    return best.lower() if len(best) >= MIN_PREFILTER_LITERAL else None


class _LiteralPrefilter:
    """A predicate behind a substring test: the events whose ``fid`` value
    (any element of a list) contains one of ``literals`` (lower case) are the
    only ones the full predicate sees.  The literals are necessary for the
    costly conjunct, so the result is the full predicate's."""

    def __init__(self, pred: Any, fid: int, literals: tuple[str, ...]) -> None:
        self.pred, self.fid, self.literals = pred, fid, literals

    def _narrow(self, events: Sequence[Event]) -> list[int]:
        fid, lits, out = self.fid, self.literals, []
        for j, e in enumerate(events):
            v = e.fields.get(fid)
            for x in v if v.__class__ is list else (v,):
                if x.__class__ is str:
                    low = x.lower()
                    if any(lit in low for lit in lits):
                        out.append(j)
                        break
        return out

    def select_idx(self, events: Sequence[Event]) -> list[int]:
        cand = self._narrow(events)
        return [cand[k] for k in self.pred.select_idx([events[j] for j in cand])] if cand else []

    def select_idx_nocat(self, events: Sequence[Event]) -> list[int]:
        cand = self._narrow(events)
        return [cand[k] for k in self.pred.select_idx_nocat([events[j] for j in cand])] if cand else []

    def select_nocat(self, events: Sequence[Event]) -> list[Event]:
        return [events[j] for j in self.select_idx_nocat(events)]


def _prefilter(unit: "_Unit") -> Any:
    """``unit``'s predicate behind a literal prefilter taken from one of its
    top-level pattern conjuncts (regex, wildcard over a field, every pattern
    with a required literal), or None when there is none."""
    nodes = unit.query.nodes
    root = nodes[unit.root]
    for nid in root.args if root.op == "and" else (unit.root,):
        n = nodes[nid]
        if n.op not in ("regex", "wildcard") or not n.value or nodes[n.args[0]].op != "field":
            continue
        lits = [required_literal(n.op, p) for p in n.value]
        if all(lits):
            return _LiteralPrefilter(unit.pred, nodes[n.args[0]].field_id, tuple(sorted(set(lits))))
    return None


def _canon(query: ir.Query, nid: int, memo: dict[int, Any]) -> Any:
    """Structural key of a predicate subtree (equal keys: equal predicates)."""
    r = memo.get(nid)
    if r is None:
        n = query.nodes[nid]
        v = n.value
        if not isinstance(v, (tuple, str, int, float, bool, type(None))):
            v = repr(v)
        r = memo[nid] = (n.op, type(v).__name__, v, n.ci, n.field_id, tuple(_canon(query, a, memo) for a in n.args))
    return r


class DetectionEngine:
    """Runs compiled rules over ordered event batches.

    :param schema: the run's field registry (field ids are resolved once here).
    :param rules: :class:`kestrel_core.rules.Rule` objects; disabled rules are skipped.
    :param runtime: a PredicateRuntime, or a mapping name -> runtime for rules
        that name one; default: the host runtime.
    :param strict: semantic-check strictness, ``error`` | ``warn`` | ``off``.
    :param limits: sequence state-store limits (:class:`EngineLimits`).
    :param category_field: the field holding event categories (multi-valued
        categories match every rule category they list).
    :param use_index: use the literal index (False: every predicate runs on
        every event of its category; results are the same).
    :param gc_pause: pause the cyclic garbage collector during a batch.
    :param matcher: the candidate pre-selection (default: the literal index,
        or category dispatch alone when ``use_index`` is false).
    :param reuse: a previous engine over the same schema (hot reload): host
        predicates it compiled are reused for identical steps instead of
        being generated and compiled again.
    :param unavailable_runtimes: runtime name -> why it cannot run here
        (not installed, probe failed), for the message of a rule naming it.
    :param runtime_fallback: a rule naming an unavailable runtime runs on the
        host runtime (logged in ``fallbacks``) instead of being a rule error.
    :param default_runtime: with a mapping ``runtime``: the name of the one
        for rules that name none (default: ``host``).
    :param direct: evaluate every predicate on the whole batch without the
        matcher (None: when there are at most 4; False: always through the
        matcher, as ``--matcher NAME`` asks).
    :param eval_budget_ms: watchdog: a host predicate whose evaluation of one
        batch takes longer disables its rules (reason ``budget_time``, logged,
        in :attr:`disabled`) so one rule cannot stall the others; None: no
        watchdog.  Pattern matching is linear-time, so every call returns.
    """

    def __init__(
        self,
        schema: Schema,
        rules: Iterable[Rule],
        *,
        runtime: PredicateRuntime | Mapping[str, PredicateRuntime] | None = None,
        strict: str = "warn",
        limits: EngineLimits | None = None,
        category_field: str = "event.category",
        use_index: bool = True,
        gc_pause: bool = True,
        matcher: Matcher | None = None,
        reuse: "DetectionEngine | None" = None,
        unavailable_runtimes: Mapping[str, str] | None = None,
        runtime_fallback: bool = False,
        default_runtime: str | None = None,
        direct: bool | None = None,
        eval_budget_ms: float | None = EVAL_BUDGET_MS,
    ) -> None:
        self.schema = schema
        self.eval_budget_ns = None if eval_budget_ms is None else int(eval_budget_ms * 1e6)
        self.compiled: dict[tuple, HostPredicate] = {}
        """(runtime, category, predicate structure, field types) -> host predicate."""
        self._reuse = reuse.compiled if (reuse is not None and reuse.schema is schema
                                         and reuse.category_field == category_field) else {}
        self.strict = strict
        self.limits = limits or EngineLimits()
        self.category_field = category_field
        self.cat_fid = schema.resolve(category_field)
        self.use_index = use_index
        self.matcher = matcher or (LiteralIndexMatcher() if use_index else CategoryMatcher())
        self.gc_pause = gc_pause
        self._direct = direct
        if runtime is None:
            runtime = HostRuntime()
        if isinstance(runtime, PredicateRuntime):
            self.runtimes: dict[str, PredicateRuntime] = {runtime.PLUGIN_NAME: runtime}
            self.default_runtime = runtime
        else:
            self.runtimes = dict(runtime)
            self.default_runtime = (self.runtimes.get(default_runtime or "host")
                                    or next(iter(self.runtimes.values()), None) or HostRuntime())
        self.evictions: Counter = Counter()
        """(rule id, reason) -> pending sequences evicted."""
        self.dfa_cache = lazydfa.DfaCache(self.limits.dfa_cache if self.limits.lazy_dfa else 0)
        """Compiled lazy DFAs of hot sequence rules (LRU) and its counters."""
        self.rule_errors: list[RuleError] = []
        """Rules that failed to compile, with located errors."""
        self.warnings: list[RuleError] = []
        """Semantic warnings (strictness ``warn``)."""
        self.runtime_errors: list[str] = []
        """Rules disabled while running (a predicate raised); the others go on."""
        self.disabled: Counter = Counter()
        """(rule id, reason) -> 1 for each rule disabled while running (reasons:
        ``error``, ``runtime_error``, ``budget_instructions``, ``budget_fuel``,
        ``budget_time``, ``memory``); exported as ``kestrel_rule_disabled_total``."""
        self.unavailable_runtimes = dict(unavailable_runtimes or {})
        self.runtime_fallback = runtime_fallback
        self.fallbacks: list[str] = []
        """Rules that asked for an unavailable runtime and run on the host (with the reason)."""
        self.rule_sets: dict[str, CompiledRuleSet] = {}
        """Rule-set runtime name -> its compiled rule set (Predicate ABI)."""
        self._set_units: dict[str, list[Any]] = {}
        self._set_runtimes: dict[str, RuleSetRuntime] = {}
        self.rules: list[CompiledRule] = []
        self.units: list[_Unit] = []
        self.sequence_listener: Any = None
        """See :meth:`set_sequence_listener`."""
        self.accounting = True
        """Add the per-unit times the batch watchdog measures anyway to
        :attr:`unit_ns` / :attr:`unit_evals` (cost accounting, budgets)."""
        self.batches = 0
        self.sample_every = 8
        """A rule degraded to ``sample`` runs on one batch in this many; sequence
        state-machine time is measured on the same one batch in N."""
        self._skip: frozenset[int] = frozenset()
        """Rule indexes not evaluated on this batch (degraded)."""
        self._full_preds: dict[int, Any] = {}
        """Unit id -> its own predicate while a cheaper prefilter stands in."""
        self._unit_keys: dict[tuple, int] = {}
        for rule in rules:
            if not rule.enabled:
                continue
            self._add(rule)
        compilecache.save()
        self._compile_rule_sets()
        self._build_dispatch()

    # ------------------------------------------------------------ compilation
    def _add(self, rule: Rule) -> None:
        try:
            query = compile_rule_query(rule, self.schema, strict=self.strict)
        except EqlError as err:
            self.rule_errors.append(RuleError.from_eql(locate_eql_error(rule, err), rule.id))
            return
        for w in query.warnings:
            self.warnings.append(RuleError.from_eql(locate_eql_error(rule, w), rule.id))
        rt = self.default_runtime
        if rule.runtime is not None and rule.runtime != rt.PLUGIN_NAME:
            if rule.runtime == HostRuntime.PLUGIN_NAME:  # built in: always available
                self.runtimes.setdefault(HostRuntime.PLUGIN_NAME, HostRuntime())
            rt = self.runtimes.get(rule.runtime)
            if rt is None:
                why = self.unavailable_runtimes.get(rule.runtime) or "no installed plugin provides it"
                if self.runtime_fallback:
                    rt = self.runtimes.setdefault(HostRuntime.PLUGIN_NAME, HostRuntime())
                    self.fallbacks.append(f"rule {rule.id}: runtime '{rule.runtime}' is unavailable ({why}); "
                                          f"running it on the host runtime")
                else:
                    self.rule_errors.append(runtime_unavailable_error(rule, why, sorted(self.runtimes)))
                    return
        units: dict[int, int] = {}
        memo: dict[int, Any] = {}
        new_units: list[_Unit] = []
        # generated code depends on field types too (a field declared after an earlier compile)
        types = tuple(self.schema.field(self.schema.resolve(p)).type for p in query.fields)
        try:
            for step in query.steps + ((query.until,) if query.until else ()):
                key = (rt.PLUGIN_NAME, step.category, _canon(query, step.pred, memo))
                uid = self._unit_keys.get(key)
                if uid is None and isinstance(rt, RuleSetRuntime):
                    from .abi import AbiUnit

                    unit = _Unit(len(self.units) + len(new_units), step.category, query, step.pred, None,
                                 rule_set=rt.PLUGIN_NAME)
                    rt.check_unit(AbiUnit(unit.id, step.category, query.nodes, step.pred), self.schema)
                    self._set_runtimes[rt.PLUGIN_NAME] = rt
                    new_units.append(unit)
                    uid = unit.id
                    self._unit_keys[key] = uid
                elif uid is None:
                    host = isinstance(rt, HostRuntime)
                    pred = self._reuse.get(key + (types,)) if host else None
                    if pred is None:
                        kwargs = {"category_field": self.category_field} if host else {}
                        p = rt.compile(query.predicate(step), self.schema, **kwargs)
                        pred = p if isinstance(p, HostPredicate) else _Adapter(p)
                    if isinstance(pred, HostPredicate):
                        self.compiled[key + (types,)] = pred
                    unit = _Unit(len(self.units) + len(new_units), step.category, query, step.pred, pred)
                    new_units.append(unit)
                    uid = unit.id
                    self._unit_keys[key] = uid
                units[step.id] = uid
        except Exception as exc:  # a runtime that cannot compile a rule disables that rule only
            dropped = {u.id for u in new_units}
            self._unit_keys = {k: v for k, v in self._unit_keys.items() if v not in dropped}
            self.rule_errors.append(RuleError(f"cannot compile rule: {exc}", rule.file, rule.line, 1, rule.id))
            return
        self.units.extend(new_units)
        for u in new_units:
            if u.rule_set is not None:
                from .abi import AbiUnit

                self._set_units.setdefault(u.rule_set, []).append(AbiUnit(u.id, u.category, query.nodes, u.root))
        cr = CompiledRule(len(self.rules), rule, query, units, self.schema)
        for uid in set(units.values()):
            self.units[uid].users.append(cr.index)
        if query.kind == "sequence":
            positive = [s for s in query.steps if not s.missing]
            pos_keys = [make_key_fn(self._key_fids(query, s), s.keys_nullable) for s in positive]
            missing = []
            n_before = 0
            nmiss = 0
            for s in query.steps:
                if s.missing:
                    missing.append((s.id, make_key_fn(self._key_fids(query, s), s.keys_nullable), n_before))
                    cr.marks_spec.append((units[s.id], mark_code(0, nmiss), False))
                    nmiss += 1
                else:
                    cr.marks_spec.append((units[s.id], mark_code(1, n_before), n_before > 0))
                    n_before += 1
            until_key = None
            if query.until:
                until_key = make_key_fn(self._key_fids(query, query.until), query.until.keys_nullable)
                cr.marks_spec.append((units[query.until.id], mark_code(2, 0), False))
            first = positive[0]
            cr.scalar_key = len(first.keys) == 1 and not first.keys_nullable[0]
            args = (rule.id, len(query.steps), pos_keys, missing, until_key, query.maxspan_ns, self.limits,
                    self.evictions)
            nfa_only = lazydfa.ineligible(query, self.limits)
            kf = lazydfa.scalar_key_field(self._key_fids(query, first), first.keys_nullable)
            stage_units = [units[s.id] for s in positive]

            def fresh_matcher(args: tuple = args) -> SequenceMatcher:  # also what shed() starts again from
                return (SequenceMatcher(*args) if nfa_only else
                        lazydfa.DfaSequenceMatcher(*args, stage_units=stage_units, cache=self.dfa_cache, key_field=kf))

            cr.fresh_matcher = fresh_matcher
            cr.matcher = fresh_matcher()
        self.rules.append(cr)

    @staticmethod
    def _key_fids(query: ir.Query, step: ir.Step) -> tuple[int, ...]:
        return tuple(query.nodes[k].field_id for k in step.keys)

    def _compile_rule_sets(self) -> None:
        """Compile, per rule-set runtime, every unit it evaluates in one go
        (once per pack version).  Units it rejects take their rules out."""
        from .abi import UnitRejected

        for name, units in self._set_units.items():
            rt = self._set_runtimes[name]
            while units:
                try:
                    self.rule_sets[name] = rt.compile_rule_set(units, self.schema, category_field=self.category_field)
                    break
                except UnitRejected as exc:
                    bad = set(exc.reasons)
                    for uid in bad:
                        self._reject_users(uid, f"runtime '{name}' cannot compile it: {exc.reasons[uid]}")
                    units = [u for u in units if u.id not in bad]
                except Exception as exc:  # the runtime failed as a whole: its rules are errors, the rest runs
                    for u in units:
                        self._reject_users(u.id, f"runtime '{name}' failed to compile the rule set: "
                                                 f"{type(exc).__name__}: {exc}")
                    units = []
            self._set_units[name] = units

    def _reject_users(self, uid: int, why: str) -> None:
        for cr in list(self.rules):
            if uid in cr.units.values():
                self.rules.remove(cr)
                for u in self.units:
                    if cr.index in u.users:
                        u.users.remove(cr.index)
                r = cr.rule
                self.rule_errors.append(RuleError(why, r.file, r.line, 1, r.id))

    def _build_dispatch(self) -> None:
        self.single_rules = [r for r in self.rules if r.query.kind == "event"]
        self.seq_rules = [r for r in self.rules if r.query.kind == "sequence"]
        self._by_index = {r.index: r for r in self.rules}
        host_units = [u for u in self.units if u.rule_set is None]
        self.host_units = host_units
        self.matcher.build([(u.id, u.query, u.root, u.category) for u in host_units], self.schema)
        self.any_units = [u.id for u in host_units if u.category is None]
        self.direct = len(host_units) <= 4 if self._direct is None else self._direct
        """Few predicates: each scans the batch with its own category test
        (cheaper than grouping the batch by category first)."""
        self.gate_fid = self.schema.resolve(GATE_FIELD)
        self.unit_ns = [0] * len(self.units)
        self.unit_evals = [0] * len(self.units)
        """Per unit: wall ns and candidate events evaluated (cost accounting)."""
        self.gates = [_gate(u.query, u.root) for u in self.units]
        """Per unit: the ``event.action`` values (lower case) one of which an
        event needs for the predicate to be true, or None.  A batch's events
        are grouped by action once; a unit none of whose actions occur is not
        evaluated, and the others see only events with one of theirs (the
        literal index keys most rules by path or name, not by action)."""
        self.by_content = not any("@timestamp" in cr.query.fields for cr in self.rules)
        """Whether predicates may be evaluated once per distinct ``Event.content``
        and events that share their fields dict need not be settled first
        (such events differ only in ``@timestamp``, which no rule reads)."""

    # ------------------------------------------------------------ running
    def _group(self, events: Sequence[Event]) -> dict[str, tuple[list[Event], list[int]]]:
        groups: dict[str, tuple[list[Event], list[int]]] = {}
        cat_fid = self.cat_fid
        for i, e in enumerate(events):
            c = e.category
            g = groups.get(c)
            if g is None:
                g = groups[c] = ([], [])
            g[0].append(e)
            g[1].append(i)
            cv = e.fields.get(cat_fid)
            if cv.__class__ is list and len(cv) > 1:
                for other in cv:
                    if other != c and other.__class__ is str:
                        g2 = groups.get(other)
                        if g2 is None:
                            g2 = groups[other] = ([], [])
                        if not g2[1] or g2[1][-1] != i:
                            g2[0].append(e)
                            g2[1].append(i)
        return groups

    def _active_units(self) -> set[int] | None:
        """Units some not-yet-finished, not skipped rule needs (None: all)."""
        skip = self._skip
        if not skip and not any(cr.done for cr in self.rules):
            return None
        return {uid for cr in self.rules if not cr.done and cr.index not in skip for uid in cr.units.values()}

    def _unit_hits(self, events: Sequence[Event]) -> dict[int, list[int]]:
        """unit id -> sorted batch positions of the events it matches."""
        if self.by_content:
            shared = _representatives(events)
            if shared is not None:
                return _spread(self._unit_hits_of([events[i] for i in shared[0]]), *shared)
        return self._unit_hits_of(events)

    def _unit_hits_of(self, events: Sequence[Event]) -> dict[int, list[int]]:
        hits: dict[int, list[int]] = {}
        active = self._active_units()
        try:
            if self.rule_sets:
                self._rule_set_hits(events, active, hits)
            clock, slow = time.perf_counter_ns, []
            if self.direct:
                for u in self.host_units:
                    if active is None or u.id in active:
                        uid = u.id
                        t0 = clock()
                        hits[uid] = u.pred.select_idx(events)
                        slow.append((uid, clock() - t0, len(events)))
                self._watchdog(slow)
                return hits
            groups = self._group(events)
            uid = -1
            gates = self.gates
            for cat, (evs, idxs) in groups.items():
                by_action: dict[Any, list[int]] | None = None
                for uid, cand in self.matcher.candidates(cat, evs):
                    if active is not None and uid not in active:
                        continue
                    gate = gates[uid]
                    if gate is not None:
                        if by_action is None:
                            by_action = _by_value(evs, self.gate_fid)
                        passing = [by_action[a] for a in gate if a in by_action]
                        if not passing:
                            continue  # no event of this group has one of the step's actions
                        if sum(map(len, passing)) < len(evs):
                            allowed = set().union(*passing)
                            cand = [j for j in (range(len(evs)) if cand is None else cand) if j in allowed]
                            if not cand:
                                continue
                    pred = self.units[uid].pred
                    t0 = clock()
                    if cand is None:
                        hits[uid] = [idxs[j] for j in pred.select_idx_nocat(evs)]
                    else:
                        sub = [evs[j] for j in cand]
                        hits[uid] = [idxs[cand[j]] for j in pred.select_idx_nocat(sub)]
                    slow.append((uid, clock() - t0, len(evs) if cand is None else len(cand)))
            for uid in self.any_units:
                if active is None or uid in active:
                    t0 = clock()
                    hits[uid] = self.units[uid].pred.select_idx_nocat(events)
                    slow.append((uid, clock() - t0, len(events)))
            self._watchdog(slow)
            return hits
        except Exception as exc:  # a predicate (or matcher) that fails at run time
            self._disable(uid, exc)
            return self._unit_hits_of(events)

    def _rule_set_hits(self, events: Sequence[Event], active: set[int] | None, hits: dict[int, list[int]]) -> None:
        """One call per rule-set runtime for the whole batch."""
        for name, rs in self.rule_sets.items():
            enabled = [u.id for u in self._set_units[name] if self.units[u.id].users and (active is None or u.id in active)]
            if not enabled:
                continue
            try:
                res = rs.eval_units(events, enabled)
            except Exception as exc:  # a runtime error never ends the run: that runtime's rules stop
                for uid in enabled:
                    self._disable_unit(uid, "runtime_error", f"runtime '{name}' raised {type(exc).__name__}: {exc}")
                continue
            for uid, reason in res.failed.items():
                self._disable_unit(uid, reason, f"runtime '{name}' stopped its predicate ({reason})")
            for uid in enabled:
                if uid not in res.failed:
                    h = res.hits.get(uid)
                    if h:
                        hits[uid] = h

    def _watchdog(self, timed: list[tuple[int, int, int]]) -> None:
        """Disable the rules of every unit whose evaluation of this batch took
        longer than the budget: (unit, ns, events) per evaluation."""
        if self.accounting:
            unit_ns, unit_evals = self.unit_ns, self.unit_evals
            for uid, ns, n in timed:
                unit_ns[uid] += ns
                unit_evals[uid] += n
        budget = self.eval_budget_ns
        if budget is None:
            return
        for uid, ns, n in timed:
            if ns > budget and self.units[uid].users:
                self._disable_unit(uid, "budget_time", f"its predicate took {ns / 1e6:.0f} ms over {n} event(s), "
                                                       f"over the {budget / 1e6:.0f} ms budget")

    def _disable_unit(self, uid: int, reason: str, detail: str) -> None:
        """Disable the rules of a unit that a runtime stopped (budget, error); counted by reason."""
        for ridx in self.units[uid].users:
            cr = self._by_index.get(ridx)
            if cr is not None and not cr.done:
                cr.done = True
                self.disabled[(cr.id, reason)] += 1
                self.runtime_errors.append(f"rule {cr.id} disabled: {detail}")
                log.error("rule %s disabled (%s): %s; the other rules go on", cr.id, reason, detail)
        self.units[uid].users.clear()

    def _disable(self, uid: int, exc: Exception) -> None:
        """Stop the rules of a predicate that raised; the others go on."""
        users = self.units[uid].users if 0 <= uid < len(self.units) else []
        if not users:  # the matcher itself failed: fall back to category dispatch
            self.matcher = CategoryMatcher()
            self.matcher.build([(u.id, u.query, u.root, u.category) for u in self.units], self.schema)
            self.runtime_errors.append(f"matcher failed, using category dispatch: {type(exc).__name__}: {exc}")
            return
        for ridx in users:
            cr = self._by_index[ridx]
            if not cr.done:
                cr.done = True
                self.disabled[(cr.id, "error")] += 1
                self.runtime_errors.append(f"rule {cr.id} disabled: its predicate raised {type(exc).__name__}: {exc}")
                log.error("%s; the other rules go on", self.runtime_errors[-1])

    def process_batch(self, events: Sequence[Event]) -> list[Alert]:
        """Evaluate every rule on ``events`` (sorted by ``(ts_mono_ns, event_id)``).

        The cyclic garbage collector is paused for the batch (when
        ``gc_pause``): the hot path makes many short-lived, acyclic
        containers, and full collections over a large live heap (the
        events themselves) would otherwise run many times per batch.
        Reference counting still frees everything at once; the collector
        resumes, with its counts, when the batch is done."""
        if not events or not self.rules:
            return []
        if self.gc_pause and gc.isenabled():
            gc.disable()
            try:
                return self._process_batch(events)
            finally:
                gc.enable()
        return self._process_batch(events)

    def _process_batch(self, events: Sequence[Event]) -> list[Alert]:
        self.batches += 1
        if self._degraded:
            self._skip = self._skipped()
        if not self.by_content:  # a rule reads @timestamp: every event needs its own
            for e in events:
                if e.fields is e.content:
                    e.settle()
        found: list[tuple[int, int, Alert]] = []
        hits = self._unit_hits(events)
        skip = self._skip
        for cr in self.single_rules:
            if cr.done or cr.index in skip:
                continue
            for i in hits.get(cr.units[0], ()):
                found.append((i, cr.index, self._alert1(cr, events[i])))
        if self.seq_rules:
            self._run_sequences(events, hits, found)
        if not found:
            return []
        found.sort(key=lambda t: (t[0], t[1]))
        return self._pipe([(r, a) for _, r, a in found])

    def _pipe(self, items: list[tuple[int, Alert]]) -> list[Alert]:
        out: list[Alert] = []
        for ridx, alert in items:
            cr = self._by_index[ridx]
            if cr.done:
                continue
            cr.emitted += 1
            if cr.head is not None and cr.emitted >= cr.head:
                cr.done = True
            if cr.tail_buf is not None:
                cr.tail_buf.append(alert)
            else:
                out.append(alert)
        return out

    def _alert1(self, cr: CompiledRule, e: Event) -> Alert:
        e.settle()  # an alert's events leave the engine: each with its own @timestamp
        f = e.fields
        return self._alert(cr, [e], {p: f.get(fid) for p, fid in cr.field_ids}, ())

    def _alert_seq(self, cr: CompiledRule, partial: Any) -> Alert:
        evs = list(partial.events)
        for e in evs:
            e.settle()
        fields = {p: [e.fields.get(fid) for e in evs] for p, fid in cr.field_ids}
        return self._alert(cr, evs, fields, key_tuple(partial.key, cr.scalar_key))

    @staticmethod
    def _alert(cr: CompiledRule, events: list[Event], fields: dict[str, Any], join_keys: tuple) -> Alert:
        r = cr.rule
        last = events[-1]
        return Alert(
            rule_id=r.id,
            rule_name=r.name,
            severity=r.severity,
            description=r.description,
            tags=r.tags,
            risk_score=r.risk_score,
            rule_mode=r.mode,
            rule_actions=r.actions,
            pack=r.pack,
            events=events,
            fields=fields,
            join_keys=join_keys,
            ts_mono_ns=last.ts_mono_ns,
            ts_wall_ns=last.ts_wall_ns,
        )

    def _run_sequences(self, events: Sequence[Event], hits: dict[int, list[int]], found: list) -> None:
        first_ts = events[0].ts_mono_ns
        last_ts = events[-1].ts_mono_ns
        skip = self._skip
        every = self.sample_every
        timed = self.accounting and self.batches % every == 0  # one batch in N: the state machines' cost
        clock = time.perf_counter_ns
        for cr in self.seq_rules:
            if cr.done or cr.index in skip:
                continue
            if timed:
                t0 = clock()
                self._run_sequence(cr, events, hits, found, first_ts, last_ts)
                cr.seq_ns += (clock() - t0) * every
            else:
                self._run_sequence(cr, events, hits, found, first_ts, last_ts)

    def _run_sequence(self, cr: CompiledRule, events: Sequence[Event], hits: dict[int, list[int]], found: list,
                      first_ts: int, last_ts: int) -> None:
        m = cr.matcher
        m.expire(first_ts)
        if m.__class__ is lazydfa.DfaSequenceMatcher and m.dfa_active():  # a hot sequence on its DFA
            if m.feed_hits(hits, events, lambda i, p, cr=cr: found.append((i, cr.index, self._alert_seq(cr, p)))):
                m.expire(last_ts)
            return
        marks: list[int] = []
        for uid, code, later in cr.marks_spec:
            h = hits.get(uid)
            if h:
                if later and not marks and not m.n_partials:
                    continue  # a later stage with nothing pending and no earlier hits
                marks.extend([i << 16 | code for i in h])
        if not marks and not m.pending:
            return
        marks.sort()
        ridx = cr.index

        def emit(i: int, p: Any, cr: CompiledRule = cr) -> None:
            found.append((i, ridx, self._alert_seq(cr, p)))

        m.feed(marks, events, emit)
        if m.pending:
            done: list = []
            m.release(last_ts, done)
            for p in done:
                emit(len(events) - 1, p)
        m.expire(last_ts)

    def expire(self, now_ns: int) -> None:
        """End the windows of pending sequences that can no longer complete at
        ``now_ns`` (the events' clock), without an event (a live run's tick)."""
        for cr in self.seq_rules:
            if not cr.done:
                cr.matcher.expire(now_ns)

    def set_sequence_listener(self, listener: Any) -> None:
        """``listener(rule_id, partial, armed, reason)`` is told when a pending
        sequence reaches the step before its last and when it goes away
        (:data:`kestrel_core.eql.sequence.ArmListener`); None: nobody asks."""
        self.sequence_listener = listener
        for cr in self.seq_rules:
            cr.matcher.listener = listener

    def flush(self) -> list[Alert]:
        """End of input: pending missing-event checks and tail buffers."""
        items: list[tuple[int, Alert]] = []
        for cr in self.seq_rules:
            if cr.done or not cr.matcher.pending:
                continue
            done: list = []
            cr.matcher.release(None, done)
            for p in done:
                items.append((cr.index, self._alert_seq(cr, p)))
        out = self._pipe(items)
        for cr in self.rules:
            if cr.tail_buf is not None:
                buf = list(cr.tail_buf)
                cr.tail_buf.clear()
                for name, n in cr.post_pipes:
                    buf = buf[:n] if name == "head" else buf[-n:]
                out.extend(buf)
        return out

    # ------------------------------------------------------------ budgets (kestrel_core/budgets.py)
    _degraded = False
    """Some rule is degraded to ``sample`` or ``offline`` (the per-batch skip set is needed)."""

    def _skipped(self) -> frozenset[int]:
        """Rules not evaluated on this batch: ``offline`` ones, and ``sample``
        ones except on one batch in :attr:`sample_every`."""
        sampled = self.batches % self.sample_every == 0
        return frozenset(cr.index for cr in self.rules
                         if cr.degraded == "offline" or (cr.degraded == "sample" and not sampled))

    def degrade(self, rule_id: str, step: str | None) -> bool:
        """Put rule ``rule_id`` at budget step ``step`` (None: evaluate it fully
        again).  ``prefilter`` puts each of the rule's step predicates that
        has a regex or wildcard conjunct with a required literal behind a
        substring test for it (the same matches; cheaper when the literal is
        rare); it applies only to predicates no other rule shares.  ``sample``
        and ``offline``: see :meth:`_skipped`.  Returns whether the step
        applies to this rule."""
        cr = next((c for c in self.rules if c.id == rule_id), None)
        if cr is None:
            return False
        if step == "prefilter":
            cheap = {}
            for uid in set(cr.units.values()):
                unit = self.units[uid]
                if unit.pred is None or unit.users != [cr.index]:
                    continue
                pred = _prefilter(unit)
                if pred is not None:
                    cheap[uid] = pred
            if not cheap:
                return False
            self._restore_preds(cr)
            for uid, pred in cheap.items():
                self._full_preds[uid] = self.units[uid].pred
                self.units[uid].pred = pred
        elif step not in (None, "sample", "offline"):
            raise ValueError(f"unknown budget step {step!r}")
        else:
            self._restore_preds(cr)
        cr.degraded = step
        self._degraded = any(c.degraded in ("sample", "offline") for c in self.rules)
        if not self._degraded:
            self._skip = frozenset()
        return True

    def _restore_preds(self, cr: CompiledRule) -> None:
        for uid in set(cr.units.values()):
            full = self._full_preds.pop(uid, None)
            if full is not None:
                self.units[uid].pred = full

    def shed(self, rule_id: str, reason: str = "watchdog") -> int | None:
        """Stop rule ``rule_id`` for the rest of the run (load shedding) and free
        its sequence state; counted in :attr:`disabled` and, for the sequences
        dropped, in :attr:`evictions`, both with ``reason``.  Returns the
        sequences dropped (None: no such running rule)."""
        cr = next((c for c in self.rules if c.id == rule_id and not c.done), None)
        if cr is None:
            return None
        cr.done = True
        self.disabled[(cr.id, reason)] += 1
        if cr.matcher is None:
            return 0
        n = cr.matcher.held
        cr.matcher.withdraw(reason)
        if n:
            self.evictions[(cr.id, reason)] += n
        cr.matcher = cr.fresh_matcher()
        cr.matcher.listener = self.sequence_listener
        return n

    def rule_costs(self) -> dict[str, tuple[int, int]]:
        """rule id -> (candidate events evaluated, ns): its predicates' measured
        time (a shared predicate's split among its rules) plus the sampled
        estimate of its sequence state machine."""
        out = {}
        unit_ns, unit_evals, units = self.unit_ns, self.unit_evals, self.units
        for cr in self.rules:
            n = ns = 0
            for uid in set(cr.units.values()):
                share = len(units[uid].users) or 1
                n += unit_evals[uid]
                ns += unit_ns[uid] // share
            out[cr.id] = (n, ns + cr.seq_ns)
        return out

    # ------------------------------------------------------------ hot reload
    def adopt_state(self, old: "DetectionEngine") -> tuple[int, int]:
        """Take over ``old``'s run-time state (hot reload, before this engine sees
        an event): rules whose id and compiled query are unchanged keep their
        pending sequences, pipe counters and disabled flag; the pending
        sequences of changed and removed rules are dropped and counted as
        evictions with reason ``reload``.  Both engines must share the schema.
        Returns (sequences kept, sequences dropped)."""
        previous = {cr.id: cr for cr in old.rules}
        if self.sequence_listener is None and old.sequence_listener is not None:
            self.set_sequence_listener(old.sequence_listener)
        for key, n in old.evictions.items():  # the counters go on (matchers hold this Counter)
            self.evictions[key] += n
        self.runtime_errors[:0] = old.runtime_errors
        self.disabled.update(old.disabled)
        kept = dropped = 0
        for cr in self.rules:
            prev = previous.pop(cr.id, None)
            if prev is None:
                continue
            if prev.signature != cr.signature:
                dropped += self._drop_state(prev)
                continue
            cr.done, cr.emitted = prev.done, prev.emitted
            if prev.tail_buf is not None and cr.tail_buf is not None:
                cr.tail_buf.extend(prev.tail_buf)
            if cr.matcher is not None and prev.matcher is not None:
                kept += cr.matcher.adopt(prev.matcher)
        for prev in previous.values():
            dropped += self._drop_state(prev)
        return kept, dropped

    def _drop_state(self, cr: CompiledRule) -> int:
        if cr.matcher is not None:
            cr.matcher.withdraw("reload")
        n = cr.matcher.held if cr.matcher is not None else 0
        if n:
            self.evictions[(cr.id, "reload")] += n
        return n

    # ------------------------------------------------------------ introspection
    def interest(self) -> Interest:
        """What the loaded rules need, for source push-down."""
        cats = frozenset(u.category for u in self.units if u.category is not None)
        fields = {self.category_field}
        for cr in self.rules:
            fields.update(cr.query.fields)
        from . import pushdown  # noqa: PLC0415 - kept local to this method (shared file)

        filters = pushdown.literal_filters((u.category, u.query, u.root) for u in self.units)
        any_units = any(u.category is None for u in self.units)
        return Interest(categories=cats, fields=frozenset(fields), wants_all=any_units or not self.units,
                        filters=filters)

    def active_partials(self) -> dict[str, int]:
        """rule id -> pending sequences held now."""
        return {cr.id: cr.matcher.active for cr in self.seq_rules}


