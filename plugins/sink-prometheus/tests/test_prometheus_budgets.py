"""The cost-accounting, budget and watchdog metrics (kestrel_core/budgets.py,
kestrel_core/watchdog.py) as this sink exports them: every family present,
typed, named by Prometheus' rules, with the values the components hold."""

from __future__ import annotations

import logging

from kestrel_core.budgets import BudgetController
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.profile import BudgetsSection, WatchdogSection
from kestrel_core.rules import Rule
from kestrel_core.schema import Schema
from kestrel_core.watchdog import Watchdog


def test_budget_and_watchdog_metrics_are_exported(context, open_sink, scrape, metric_types, caplog):
    engine = DetectionEngine(Schema.ecs(), [Rule(id="r1", name="R1", query='process where process.name == "nc"')])
    engine.unit_ns[0], engine.unit_evals[0] = 2_500_000_000, 40
    budgets = BudgetController(BudgetsSection(rule_share=0.5), context.stats)
    budgets.tick(engine)
    budgets.busy_ns = 3_000_000_000
    budgets.degraded_total[("r1", "sample")] = 2
    budgets.restored_total[("r1", "sample")] = 1
    budgets.step_of["r1"] = "sample"
    budgets.publish()
    wd = Watchdog(WatchdogSection(memory_mb=100), context.stats, rss=lambda: 42 * 2**20)
    wd.shed_total[("low_priority_packs", "memory")] = 1
    wd.taken["low_priority_packs"] = "memory"
    wd.last_rss = 42 * 2**20
    wd.publish()
    sink = open_sink()
    with caplog.at_level(logging.WARNING):
        m = scrape(sink)
        types = metric_types(sink)
    assert "ignoring extra metric" not in caplog.text
    assert m[("kestrel_rule_cost_seconds_total", (("rule", "r1"),))] == 2.5
    assert m[("kestrel_rule_cost_evaluations_total", (("rule", "r1"),))] == 40
    assert m[("kestrel_engine_busy_seconds_total", ())] == 3.0
    assert m[("kestrel_rule_degraded_total", (("rule", "r1"), ("step", "sample")))] == 2
    assert m[("kestrel_rule_restored_total", (("rule", "r1"), ("step", "sample")))] == 1
    assert m[("kestrel_rule_budget_step", (("rule", "r1"), ("step", "sample")))] == 1
    assert m[("kestrel_watchdog_shed_total", (("step", "low_priority_packs"), ("trigger", "memory")))] == 1
    assert m[("kestrel_watchdog_rss_bytes", ())] == 42 * 2**20
    assert m[("kestrel_watchdog_shedding", (("step", "low_priority_packs"),))] == 1
    assert types["kestrel_rule_degraded"] == "counter" and types["kestrel_rule_budget_step"] == "gauge"
