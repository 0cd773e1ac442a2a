"""Per-rule CPU accounting and budgets with automatic degradation (``[budgets]``).

Accounting costs almost nothing: the engine already times every predicate
evaluation of a batch for its batch watchdog (``rule_batch_ms``); it adds
those times to per-predicate totals, and times each sequence rule's state
machine on one batch in ``sample_every`` (scaled).  Shared predicates are
split among their rules.  Figures: docs/benchmarks.md ("Cost accounting").

Every ``window_s`` the controller (engine thread, between batches) compares
the window's figures with the budgets:

* ``rule_share``: a rule taking more than this share of the engine's time,
  while the engine is busy (at least ``busy_floor`` of a CPU), goes one step
  down ``degrade_order``;
* ``engine_cpu``: the engine thread using more than this fraction of a CPU:
  its costliest rule goes one step down (one rule per window).

Steps (:meth:`kestrel_core.eql.engine.DetectionEngine.degrade`): ``prefilter``
(the rule's costly conjuncts are skipped, its cheap ones decide: a superset,
alerts tagged), ``sample`` (one batch in ``sample_every``), ``offline`` (not
evaluated; state kept).  A step that does not apply to a rule is passed
over.  Each step is logged with its reason and counted
(``kestrel_rule_degraded_total{rule,step}``).  A degraded rule's full cost is
estimated from its last cost per event of its categories times the events
of those categories now; after ``recover_windows`` windows in a row in which
that estimate is under ``recover_ratio`` of the budgets (or the engine would
be under ``busy_floor`` with it), the rule goes one step back up (counted
``kestrel_rule_restored_total{rule,step}``).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable

log = logging.getLogger("kestrel")

STEPS = ("prefilter", "sample", "offline")


class BudgetController:
    """Budgets of one run; ``account`` after each engine batch, ``tick`` often."""

    def __init__(self, settings: Any, stats: Any, *, clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.settings, self.stats = settings, stats
        self.clock, self.cpu_clock = clock, cpu_clock
        self.order = tuple(settings.degrade_order)
        self.level: dict[str, int] = {}
        """rule id -> steps taken (0: fully evaluated); the step is order[level - 1]."""
        self.step_of: dict[str, str] = {}
        """rule id -> the step in force (a step that did not apply is passed over)."""
        self.calm: collections.Counter = collections.Counter()
        self.cost_per_event: dict[str, float] = {}
        """rule id -> ns per event of its categories, last measured fully evaluated."""
        self.degraded_total: collections.Counter = collections.Counter()
        """(rule, step) -> times the rule was put at that step."""
        self.restored_total: collections.Counter = collections.Counter()
        """(rule, step) -> times the rule came back up from that step."""
        self.history: collections.deque = collections.deque(maxlen=50)
        """The last decisions: {time, rule, action, step, reason}."""
        self.busy_ns = 0
        """Engine time (``process_batch`` wall ns) so far."""
        self.last_window: dict[str, Any] = {}
        """Figures of the last window (for ``kestrel top``)."""
        self.engine: Any = None
        self._snap: tuple | None = None

    # ------------------------------------------------------------ engine thread
    def account(self, ns: int) -> None:
        self.busy_ns += ns

    def tick(self, engine: Any) -> None:
        """At most once per ``window_s``: judge the window that ended."""
        now = self.clock()
        if engine is not self.engine:  # start or hot reload: rules keep their steps, counters start again
            self._adopt(engine)
            self._snap = self._snapshot(now)
            return
        if now - self._snap[0] < self.settings.window_s:
            return
        snap = self._snapshot(now)
        self._judge(self._snap, snap)
        self._snap = snap

    def _adopt(self, engine: Any) -> None:
        self.engine = engine
        engine.sample_every = self.settings.sample_every
        for rule_id, step in list(self.step_of.items()):
            if not engine.degrade(rule_id, step):
                self.step_of.pop(rule_id)
                self.level.pop(rule_id, None)

    def _snapshot(self, now: float) -> tuple:
        with self.stats.lock:
            cats = collections.Counter()
            for (_src, cat), n in self.stats.events_processed.items():
                cats[cat] += n
        return now, self.cpu_clock(), self.busy_ns, self.engine.rule_costs(), cats

    def _judge(self, old: tuple, new: tuple) -> None:
        s = self.settings
        dt = max(new[0] - old[0], 1e-9)
        cpu = (new[1] - old[1]) / dt
        busy = new[2] - old[2]
        total_events = sum(new[4].values()) - sum(old[4].values())
        d_ns: dict[str, int] = {}
        est: dict[str, float] = {}
        for cr in self.engine.rules:
            rid = cr.id
            ns = new[3].get(rid, (0, 0))[1] - old[3].get(rid, (0, 0))[1]
            d_ns[rid] = ns
            cats = {self.engine.units[u].category for u in cr.units.values()}
            n_ev = total_events if None in cats else sum(new[4].get(c, 0) - old[4].get(c, 0) for c in cats)
            if not self.step_of.get(rid):
                if n_ev > 0 and ns > 0:
                    self.cost_per_event[rid] = ns / n_ev
                est[rid] = ns
            else:
                est[rid] = self.cost_per_event.get(rid, 0.0) * n_ev
        est_busy = busy + sum(max(0.0, est[r] - d_ns[r]) for r in self.step_of)
        self.last_window = {"seconds": dt, "engine_cpu": cpu, "engine_busy": busy / 1e9 / dt,
                            "events": total_events,
                            "rules": {r: {"seconds": d_ns[r] / 1e9, "share": d_ns[r] / busy if busy else 0.0}
                                      for r in d_ns}}
        moved: set[str] = set()
        if s.rule_share > 0 and busy / 1e9 / dt >= s.busy_floor:
            for rid, ns in sorted(d_ns.items(), key=lambda kv: -kv[1]):
                share = ns / busy
                if share > s.rule_share and self._down(rid, f"{share:.0%} of the engine's time over the "
                                                            f"{s.rule_share:.0%} rule_share budget"):
                    moved.add(rid)
        if s.engine_cpu > 0 and cpu > s.engine_cpu:
            for rid, ns in sorted(d_ns.items(), key=lambda kv: -kv[1]):
                if rid in moved or not ns:
                    continue
                if self._down(rid, f"the engine thread used {cpu:.0%} of a CPU over the {s.engine_cpu:.0%} "
                                   f"engine_cpu budget; this rule was its costliest ({ns / busy:.0%})"):
                    moved.add(rid)
                    break
        for rid in list(self.step_of):
            if rid in moved or rid not in est:
                continue
            r = s.recover_ratio
            est_frac = est_busy / 1e9 / dt
            share_ok = (s.rule_share <= 0 or est_frac < s.busy_floor * r
                        or (est_busy > 0 and est[rid] / est_busy < s.rule_share * r))
            cpu_ok = s.engine_cpu <= 0 or cpu + max(0.0, est[rid] - d_ns[rid]) / 1e9 / dt < s.engine_cpu * r
            if share_ok and cpu_ok:
                self.calm[rid] += 1
                if self.calm[rid] >= s.recover_windows:
                    self._up(rid, f"estimated at {est[rid] / 1e9 / dt:.1%} of a CPU "
                                  f"({est[rid] / est_busy if est_busy else 0:.0%} of the engine's time) "
                                  f"for {s.recover_windows} windows")
            else:
                self.calm[rid] = 0

    def _down(self, rid: str, reason: str) -> bool:
        """One step further down ``degrade_order`` (passing over steps that do
        not apply); False when the rule is already at the last one."""
        level = self.level.get(rid, 0)
        while level < len(self.order):
            step = self.order[level]
            level += 1
            if self.engine.degrade(rid, step):
                self.level[rid], self.step_of[rid] = level, step
                self.calm[rid] = 0
                self.degraded_total[(rid, step)] += 1
                self._note(rid, "degraded", step, reason)
                log.warning("rule %s degraded to %s: %s", rid, step, reason)
                return True
            log.info("rule %s: budget step %s does not apply to it, passed over", rid, step)
        return False

    def _up(self, rid: str, reason: str) -> None:
        """One step back up (to the previous step that applies, or full evaluation)."""
        old = self.step_of[rid]
        level = self.level[rid] - 1
        while level > 0 and not self.engine.degrade(rid, self.order[level - 1]):
            level -= 1
        if level == 0:
            self.engine.degrade(rid, None)
            self.level.pop(rid, None)
            self.step_of.pop(rid, None)
        else:
            self.level[rid], self.step_of[rid] = level, self.order[level - 1]
        self.calm[rid] = 0
        self.restored_total[(rid, old)] += 1
        now = self.step_of.get(rid, "full evaluation")
        self._note(rid, "restored", old, reason)
        log.warning("rule %s restored from %s to %s: %s", rid, old, now, reason)

    def _note(self, rid: str, action: str, step: str, reason: str) -> None:
        self.history.append({"time": time.time(), "rule": rid, "action": action, "step": step, "reason": reason})

    # ------------------------------------------------------------ any thread
    def rule_rows(self) -> list[dict[str, Any]]:
        """Per rule, costliest first: evaluations, seconds, last window's share, step."""
        engine = self.engine
        if engine is None:
            return []
        window = self.last_window.get("rules", {})
        rows = []
        for rid, (n, ns) in engine.rule_costs().items():
            w = window.get(rid, {})
            rows.append({"rule": rid, "evaluations": n, "seconds": ns / 1e9, "window_share": w.get("share", 0.0),
                         "window_seconds": w.get("seconds", 0.0), "step": self.step_of.get(rid),
                         "degraded": sum(v for (r, _), v in self.degraded_total.items() if r == rid)})
        rows.sort(key=lambda r: (-r["seconds"], r["rule"]))
        return rows

    def publish(self) -> None:
        """Accounting and budget metrics in ``stats.extra["metrics"]`` (sink-prometheus)."""

        def costs(slot: int, scale: float) -> Callable[[], dict]:
            return lambda: ({(r,): v[slot] * scale for r, v in self.engine.rule_costs().items()}
                            if self.engine is not None else {})

        with self.stats.lock:
            m = self.stats.extra.setdefault("metrics", {})
            m["kestrel_rule_cost_seconds_total"] = {
                "type": "counter", "labels": ("rule",), "values": costs(1, 1e-9),
                "help": "Engine time attributed to each rule (its predicates, split when shared, and its "
                        "sequence state machine, sampled), always on."}
            m["kestrel_rule_cost_evaluations_total"] = {
                "type": "counter", "labels": ("rule",), "values": costs(0, 1),
                "help": "Candidate events each rule's predicates were evaluated on (cost accounting)."}
            m["kestrel_engine_busy_seconds_total"] = {
                "type": "counter", "values": lambda: self.busy_ns / 1e9,
                "help": "Wall time the engine spent evaluating batches."}
            m["kestrel_rule_degraded_total"] = {
                "type": "counter", "labels": ("rule", "step"), "values": lambda: dict(self.degraded_total),
                "help": "Times a rule over its budget was put at a degradation step ([budgets] degrade_order)."}
            m["kestrel_rule_restored_total"] = {
                "type": "counter", "labels": ("rule", "step"), "values": lambda: dict(self.restored_total),
                "help": "Times a degraded rule came back up from a step once the pressure went."}
            m["kestrel_rule_budget_step"] = {
                "type": "gauge", "labels": ("rule", "step"),
                "values": lambda: {(r, st): 1 for r, st in self.step_of.items()},
                "help": "1 for each rule at a degradation step now."}

    def summary(self) -> list[str]:
        """Stop-summary lines: each rule that was degraded, how, and where it is now."""
        lines = []
        rules = sorted({r for r, _ in self.degraded_total})
        for rid in rules:
            steps = ", ".join(f"{st} {n}" for (r, st), n in sorted(self.degraded_total.items()) if r == rid)
            back = sum(n for (r, _), n in self.restored_total.items() if r == rid)
            lines.append(f"budgets: rule {rid} degraded ({steps}), restored {back} time{'s' if back != 1 else ''}, "
                         f"now {self.step_of.get(rid, 'fully evaluated')}")
        return lines
