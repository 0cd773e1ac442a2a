"""Metric names: ``kestrel_build_info``, retired names kept out, Prometheus naming checks."""

from __future__ import annotations

import importlib.metadata
import logging
import platform

import pytest

from kestrel_core.buildid import engine_build_id
from kestrel_core.schema import SCHEMA_VERSION
from kestrel_sink_prometheus import collector
from kestrel_sink_prometheus.collector import RETIRED_NAMES, core_version, naming_problem


def test_build_info_labels(open_sink, scrape):
    (key,) = [k for k in scrape(open_sink()) if k[0] == "kestrel_build_info"]
    labels = dict(key[1])
    installed = []
    for name in ("kestrel-edr", "kestrel"):
        try:
            installed.append(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            pass
    assert installed, "neither kestrel-edr nor kestrel is installed"
    assert labels == {"version": installed[0], "python": platform.python_version(), "schema": SCHEMA_VERSION,
                      "engine_build_id": engine_build_id()}


class _Dist:
    def __init__(self, version: str, top_level: str | None) -> None:
        self.version, self._top, self.files = version, top_level, None

    def read_text(self, name: str) -> str | None:
        return self._top if name == "top_level.txt" else None


@pytest.mark.parametrize(
    "installed, expected",
    [
        ({"kestrel-edr": _Dist("2.0", "kestrel_core\n"), "kestrel": _Dist("1.0", "kestrel_core\n")}, "2.0"),
        ({"kestrel": _Dist("1.0", "kestrel_core\n")}, "1.0"),  # before the rename
        ({"kestrel": _Dist("9.9", "moondream\n")}, "fallback"),  # the index's unrelated `kestrel`
        ({}, "fallback"),
    ],
)
def test_core_version_prefers_the_new_distribution_name(monkeypatch, installed, expected):
    def distribution(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(collector.importlib.metadata, "distribution", distribution)
    monkeypatch.setattr("kestrel_core.__version__", "fallback")
    assert core_version() == expected


def test_retired_names_are_not_exported(context, open_sink, scrape, caplog):
    context.stats.events_processed[("jsonl", "process")] = 5
    context.stats.queue_depth = 2
    context.stats.extra["metrics"] = {"kestrel_events_total": 1, "kestrel_queue_depth": 1,
                                      "kestrel_events": {"type": "counter", "values": 1}}
    with caplog.at_level(logging.WARNING):
        m = scrape(open_sink())
    names = {name for name, _ in m}
    assert not names & set(RETIRED_NAMES) and "kestrel_events_total" not in names
    assert m[("kestrel_events_processed_total", (("event_category", "process"), ("source", "jsonl")))] == 5
    assert m[("kestrel_queue_events", ())] == 2
    assert "'kestrel_queue_depth': retired name (now kestrel_queue_events)" in caplog.text
    assert "'kestrel_events': retired name (now kestrel_events_processed_total)" in caplog.text


@pytest.mark.parametrize(
    "name, kind, problem",
    [
        ("kestrel_alerts_total", "counter", None),
        ("kestrel_rule_eval_seconds_total", "counter", None),
        ("kestrel_queue_events", "gauge", None),
        ("kestrel_build_info", "gauge", None),
        ("kestrel_alerts", "counter", "must end in _total"),
        ("kestrel_alerts_total", "gauge", "must not end in _total"),
        ("kestrel_rules_count", "gauge", "must not end in _count"),
        ("kestrel_eval_ms", "gauge", "'ms' is not a base unit"),
        ("kestrel_eval_microseconds_total", "counter", "'microseconds' is not a base unit"),
        ("kestrel_rss_MB", "gauge", "'MB' is not a base unit"),
        ("kestrel_cpu_percent", "gauge", "'percent' is not a base unit"),
    ],
)
def test_naming_problem(name, kind, problem):
    got = naming_problem(name, kind)
    assert (got is None) if problem is None else (got is not None and problem in got), got


def test_every_exported_name_follows_prometheus_naming(context, open_sink, metric_types):
    for _, _, labels, attr in collector.CORE_COUNTERS:  # a sample in each, so each family is typed
        getattr(context.stats, attr)[tuple("x" for _ in labels) if len(labels) > 1 else "x"] = 1
    types = metric_types(open_sink())
    assert len(types) == 12
    for family, kind in types.items():
        name = family + "_total" if kind == "counter" else family
        assert naming_problem(name, kind) is None, name


def test_extra_metrics_breaking_naming_are_skipped(context, open_sink, scrape, caplog):
    context.stats.extra["metrics"] = {
        "kestrel_latency_ms": 3,
        "kestrel_restarts_total": 1,  # a gauge
        "kestrel_eval_seconds": {"type": "counter", "values": 0.5},
    }
    with caplog.at_level(logging.WARNING):
        names = {name for name, _ in scrape(open_sink())}
    assert "kestrel_eval_seconds_total" in names
    assert not names & {"kestrel_latency_ms", "kestrel_restarts_total"}
    assert "'kestrel_latency_ms': 'ms' is not a base unit" in caplog.text
    assert "'kestrel_restarts_total': a gauge's name must not end in _total" in caplog.text
