"""Metrics other components publish through ``stats.extra["metrics"]``."""

from __future__ import annotations

import logging


def L(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_extra_gauges_and_counters(context, open_sink, scrape, metric_types):
    context.stats.extra["metrics"] = {
        "kestrel_rule_eval_seconds": {
            "type": "counter",
            "help": "Time spent evaluating each rule's predicate.",
            "labels": ("rule",),
            "values": {("r1",): 0.25, ("r2",): 1.5},
        },
        "kestrel_sequence_partials": {
            "labels": ("rule", "shard"),
            "values": {("r-seq", 0): 3, ("r-seq", 1): 4},
        },
        "kestrel_rules_loaded": 42,
        "kestrel_rule_state": {"labels": "rule", "values": {"r1": 1}},  # one label: plain key allowed
    }
    sink = open_sink()
    m = scrape(sink)
    assert m[("kestrel_rule_eval_seconds_total", L(rule="r1"))] == 0.25
    assert m[("kestrel_rule_eval_seconds_total", L(rule="r2"))] == 1.5
    assert m[("kestrel_sequence_partials", L(rule="r-seq", shard="0"))] == 3
    assert m[("kestrel_sequence_partials", L(rule="r-seq", shard="1"))] == 4
    assert m[("kestrel_rules_loaded", ())] == 42
    assert m[("kestrel_rule_state", L(rule="r1"))] == 1
    types = metric_types(sink)
    assert types["kestrel_rule_eval_seconds"] == "counter"
    assert types["kestrel_sequence_partials"] == "gauge"
    assert types["kestrel_rules_loaded"] == "gauge"


def test_extra_counter_name_may_carry_total(context, open_sink, scrape):
    context.stats.extra["metrics"] = {"kestrel_restarts_total": {"type": "counter", "values": 2}}
    assert scrape(open_sink())[("kestrel_restarts_total", ())] == 2


def test_extra_values_callable_is_called_per_scrape(context, open_sink, scrape):
    live = {("r1",): 1}
    context.stats.extra["metrics"] = {"kestrel_active_partials": {"labels": ("rule",), "values": lambda: dict(live)}}
    sink = open_sink()
    assert scrape(sink)[("kestrel_active_partials", L(rule="r1"))] == 1
    live[("r1",)] = 5
    live[("r2",)] = 7
    m = scrape(sink)
    assert m[("kestrel_active_partials", L(rule="r1"))] == 5
    assert m[("kestrel_active_partials", L(rule="r2"))] == 7


def test_extra_published_after_open_is_seen(context, open_sink, scrape):
    sink = open_sink()
    assert ("kestrel_late", ()) not in scrape(sink)
    context.stats.extra["metrics"] = {"kestrel_late": 1}
    assert scrape(sink)[("kestrel_late", ())] == 1


def test_other_extra_keys_are_ignored(context, open_sink, scrape):
    context.stats.extra["profiler"] = {"kestrel_not_a_metric": 1}
    m = scrape(open_sink())
    assert not [k for k in m if k[0] == "kestrel_not_a_metric"]


def test_bad_extra_entries_are_skipped_with_one_warning_each(context, open_sink, scrape, caplog):
    def boom():
        raise RuntimeError("publisher broke")

    context.stats.extra["metrics"] = {
        "kestrel_good": {"labels": ("rule",), "values": {("r1",): 1, ("r2",): "NaN-ish", ("a", "b"): 2}},
        "bad name": 1,
        "rule_eval": 1,  # no kestrel_ prefix
        "kestrel_events_processed_total": 1,  # clashes with a core metric
        "kestrel_alerts": {"type": "gauge", "values": 1},  # clashes with kestrel_alerts_total's family
        "kestrel_histo": {"type": "histogram", "values": 1},
        "kestrel_badlabels": {"labels": ("__x",), "values": {("a",): 1}},
        "kestrel_boom": {"values": boom},
    }
    sink = open_sink()
    with caplog.at_level(logging.WARNING):
        m = scrape(sink)
        scrape(sink)
    # the good samples of the good metric survive; core metrics are untouched
    assert [k for k in m if k[0] == "kestrel_good"] == [("kestrel_good", L(rule="r1"))]
    assert ("kestrel_events_processed_total", ()) not in m
    assert not [k for k in m if k[0] in ("rule_eval", "kestrel_alerts", "kestrel_histo", "kestrel_badlabels", "kestrel_boom")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = {
        "'kestrel_good': value 'NaN-ish' is not a number",
        "'kestrel_good': key ('a', 'b') does not match labels ('rule',)",
        "'bad name': not a valid Prometheus metric name",
        "'rule_eval': name must start with 'kestrel_'",
        "'kestrel_events_processed_total': clashes with a metric this sink exports itself",
        "'kestrel_alerts': clashes with a metric this sink exports itself",
        "'kestrel_histo': unknown type 'histogram'",
        "'kestrel_badlabels': invalid label names",
        "'kestrel_boom': values() raised RuntimeError('publisher broke')",
    }
    for fragment in expected:
        hits = [w for w in warnings if fragment in w]
        assert len(hits) == 1, (fragment, warnings)  # once, though scraped twice
    assert len(warnings) == len(expected)
