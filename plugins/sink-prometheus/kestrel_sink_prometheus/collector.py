"""A Prometheus collector that reads a run's :class:`~kestrel_core.runtime.Stats`
at scrape time.  Nothing is counted twice: the engine keeps its counters,
this module only translates them into metric families when asked."""

from __future__ import annotations

import logging
import re
from numbers import Real
from typing import Any, Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

EXTRA_KEY = "metrics"
"""Key of ``stats.extra`` holding metrics published by other components."""

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# name (as exposed) -> (type, help, label names, Stats attribute)
CORE_COUNTERS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("kestrel_events_total", "Events the engine evaluated.", ("source", "event_category"), "events_processed"),
    ("kestrel_events_read_total", "Records sources handed to the bus (accepted or dropped).", ("source",), "events_read"),
    ("kestrel_events_dropped_total", "Records lost before evaluation, by reason.", ("source", "reason"), "events_dropped"),
    ("kestrel_alerts_total", "Alerts raised.", ("rule", "severity"), "alerts"),
    ("kestrel_sequence_evictions_total", "Sequence partial matches evicted, by reason.", ("rule", "reason"), "evictions"),
    ("kestrel_events_lost_total", "Events lost on the kernel side before a source read them (ring buffer or queue "
     "overflow), by reason.", ("source", "reason"), "events_lost"),
    ("kestrel_alerts_incomplete_due_to_loss_total", "Sequence alerts whose window overlaps lost events.", ("rule",),
     "alerts_incomplete"),
)
CORE_GAUGES: tuple[tuple[str, str], ...] = (
    ("kestrel_last_event_timestamp_seconds", "Timestamp of the last event processed (0 before the first)."),
    ("kestrel_queue_depth", "Records waiting on the bus."),
)
RESERVED_NAMES = frozenset(n for n, *_ in CORE_COUNTERS) | frozenset(n for n, _ in CORE_GAUGES)


def _base_name(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name


_RESERVED_BASES = frozenset(_base_name(n) for n in RESERVED_NAMES)


def _label_values(key: Any, n: int) -> tuple[str, ...] | None:
    """A counter key as a tuple of ``n`` label values, or None if it has another shape."""
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) != n:
        return None
    return tuple("" if v is None else str(v) for v in key)


def _number(value: Any) -> float | None:
    if isinstance(value, Real) and not isinstance(value, bool):
        return float(value)
    return None


class StatsCollector(Collector):
    """Collects ``context.stats`` of one run.

    :param get_stats: returns the current :class:`Stats` (read on every scrape).
    :param log: where problems with published extra metrics are reported,
        once per metric and problem.
    """

    def __init__(self, get_stats: Callable[[], Any], log: logging.Logger | None = None) -> None:
        self._get_stats = get_stats
        self._log = log or logging.getLogger("kestrel.sink.prometheus")
        self._warned: set[tuple[str, str]] = set()

    def _warn(self, name: str, problem: str) -> None:
        if (name, problem) not in self._warned:
            self._warned.add((name, problem))
            self._log.warning("prometheus sink: ignoring extra metric %r: %s", name, problem)

    # ------------------------------------------------------------------ snapshot

    def _snapshot(self, stats: Any) -> tuple[dict[str, dict], float, float, dict[str, Any]]:
        """Copy the counters under ``stats.lock``.  ``dict(counter)`` is a
        C-level copy, so writers that do not take the lock (the engine
        thread) cannot make it fail half-way."""
        with stats.lock:
            counters = {attr: dict(getattr(stats, attr)) for *_, attr in CORE_COUNTERS}
            last_ts = stats.last_event_ts_ns
            depth = stats.queue_depth
            extra = stats.extra.get(EXTRA_KEY)
            extra = dict(extra) if isinstance(extra, Mapping) else {}
            extra = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in extra.items()}
            for spec in extra.values():
                if isinstance(spec, dict) and isinstance(spec.get("values"), Mapping):
                    spec["values"] = dict(spec["values"])
        last_ts = int(last_ts or 0)
        seconds = last_ts // 10**9 + (last_ts % 10**9) / 1e9  # closer than last_ts / 1e9
        return counters, seconds, float(depth or 0), extra

    # ------------------------------------------------------------------ collect

    def collect(self) -> Iterator[Metric]:
        stats = self._get_stats()
        counters, last_ts, depth, extra = self._snapshot(stats)
        for name, help_text, labels, attr in CORE_COUNTERS:
            family = CounterMetricFamily(_base_name(name), help_text, labels=labels)
            for key, value in sorted(counters[attr].items(), key=lambda kv: repr(kv[0])):
                values = _label_values(key, len(labels))
                if values is not None:
                    family.add_metric(values, float(value))
            yield family
        yield GaugeMetricFamily(CORE_GAUGES[0][0], CORE_GAUGES[0][1], value=last_ts)
        yield GaugeMetricFamily(CORE_GAUGES[1][0], CORE_GAUGES[1][1], value=depth)
        for name in sorted(extra, key=str):
            family = self._extra_family(name, extra[name])
            if family is not None:
                yield family

    def _extra_family(self, name: Any, spec: Any) -> Metric | None:
        """One metric of ``stats.extra["metrics"]`` (format: README.md)."""
        if not isinstance(name, str) or not METRIC_NAME_RE.match(name):
            self._warn(str(name), "not a valid Prometheus metric name")
            return None
        if not name.startswith("kestrel_"):
            self._warn(name, "name must start with 'kestrel_'")
            return None
        if not isinstance(spec, Mapping):
            spec = {"values": spec}
        kind = spec.get("type", "gauge")
        if kind not in ("gauge", "counter"):
            self._warn(name, f"unknown type {kind!r} (expected 'gauge' or 'counter')")
            return None
        exposed = name if kind == "gauge" else _base_name(name) + "_total"
        if _base_name(exposed) in _RESERVED_BASES:
            self._warn(name, "clashes with a metric this sink exports itself")
            return None
        labels = spec.get("labels", ())
        if isinstance(labels, str):
            labels = (labels,)
        labels = tuple(labels)
        if not all(isinstance(l, str) and LABEL_NAME_RE.match(l) and not l.startswith("__") for l in labels):
            self._warn(name, f"invalid label names {labels!r}")
            return None
        values = spec.get("values", {})
        if callable(values):
            try:
                values = values()
            except Exception as exc:  # a broken publisher must not break the scrape
                self._warn(name, f"values() raised {exc!r}")
                return None
        if not isinstance(values, Mapping):
            values = {(): values}
        help_text = str(spec.get("help") or name)
        if kind == "counter":
            family: Metric = CounterMetricFamily(_base_name(name), help_text, labels=labels)
        else:
            family = GaugeMetricFamily(name, help_text, labels=labels)
        for key, raw in sorted(values.items(), key=lambda kv: repr(kv[0])):
            label_values = _label_values(key, len(labels))
            value = _number(raw)
            if label_values is None:
                self._warn(name, f"key {key!r} does not match labels {labels!r}")
                continue
            if value is None:
                self._warn(name, f"value {raw!r} is not a number")
                continue
            family.add_metric(label_values, value)
        return family
