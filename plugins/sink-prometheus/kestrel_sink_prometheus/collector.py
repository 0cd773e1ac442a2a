"""A Prometheus collector that reads a run's :class:`~kestrel_core.runtime.Stats`
at scrape time.  Nothing is counted twice: the engine keeps its counters,
this module only translates them into metric families when asked."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
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
    ("kestrel_events_processed_total", "Events the engine evaluated.", ("source", "event_category"), "events_processed"),
    ("kestrel_events_read_total", "Records sources handed to the bus (accepted or dropped).", ("source",), "events_read"),
    ("kestrel_events_dropped_total", "Records lost before evaluation, by reason.", ("source", "reason"), "events_dropped"),
    ("kestrel_alerts_total", "Alerts raised.", ("rule", "severity"), "alerts"),
    ("kestrel_sequence_evictions_total", "Sequence partial matches evicted, by reason.", ("rule", "reason"), "evictions"),
    ("kestrel_events_lost_total", "Events lost on the kernel side before a source read them (ring buffer or queue "
     "overflow), by reason.", ("source", "reason"), "events_lost"),
    ("kestrel_alerts_incomplete_due_to_loss_total", "Sequence alerts whose window overlaps lost events.", ("rule",),
     "alerts_incomplete"),
    ("kestrel_sink_errors_total", "Calls of a sink that raised (each failed attempt, retries included).", ("sink",),
     "sink_errors"),
    ("kestrel_sink_dropped_total", "Alerts, events and gaps a sink never took, by kind and reason.",
     ("sink", "kind", "reason"), "sink_dropped"),
)
CORE_GAUGES: tuple[tuple[str, str], ...] = (
    ("kestrel_last_event_timestamp_seconds", "Timestamp of the last event processed (0 before the first)."),
    ("kestrel_queue_events", "Records waiting on the bus."),
)
BUILD_INFO = "kestrel_build_info"
BUILD_LABELS = ("version", "python", "schema", "engine_build_id")
RESERVED_NAMES = frozenset(n for n, *_ in CORE_COUNTERS) | frozenset(n for n, _ in CORE_GAUGES) | {BUILD_INFO}
RETIRED_NAMES = {"kestrel_events_total": "kestrel_events_processed_total", "kestrel_queue_depth": "kestrel_queue_events"}
"""Names earlier versions exported -> their new names; never exported again (README.md, "Renamed metrics")."""

CORE_DISTRIBUTIONS = ("kestrel-edr", "kestrel")
"""Distribution names of the core, newest first (it was renamed from ``kestrel``)."""

# Units Prometheus wants expressed in base units (seconds, bytes, ratios).
_NON_BASE_UNITS = frozenset(
    "ms us ns msec usec nsec millis micros nanos milliseconds microseconds nanoseconds minutes hours days "
    "kb mb gb kib mib gib kilobytes megabytes gigabytes percent".split()
)


def naming_problem(name: str, kind: str) -> str | None:
    """What in an exposed metric name breaks Prometheus naming conventions
    (https://prometheus.io/docs/practices/naming/), or None."""
    tokens = name.split("_")
    if kind == "counter" and tokens[-1] != "total":
        return "a counter's name must end in _total"
    if kind != "counter" and tokens[-1] in ("total", "count", "sum", "bucket"):
        return f"a {kind}'s name must not end in _{tokens[-1]} (kept for counters, summaries and histograms)"
    bad = [t for t in tokens if t.lower() in _NON_BASE_UNITS]
    if bad:
        return f"{bad[0]!r} is not a base unit (use seconds, bytes, or a 0-1 ratio)"
    return None


def _ships_core(dist: importlib.metadata.Distribution) -> bool:
    """False for an unrelated package that happens to carry the name."""
    top = dist.read_text("top_level.txt")
    if top is not None:
        return "kestrel_core" in top.split()
    files = dist.files
    return files is None or any(f.parts[:1] == ("kestrel_core",) for f in files)


def core_version() -> str:
    """Version of the installed core distribution (``kestrel_core.__version__``
    when running from a source tree without installed metadata)."""
    for name in CORE_DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if _ships_core(dist):
            return dist.version
    from kestrel_core import __version__

    return __version__


def build_labels() -> dict[str, str]:
    """Label values of ``kestrel_build_info`` (engine_build_id as in replay headers)."""
    from kestrel_core.buildid import engine_build_id
    from kestrel_core.schema import SCHEMA_VERSION

    values = (core_version(), platform.python_version(), SCHEMA_VERSION, engine_build_id())
    return dict(zip(BUILD_LABELS, values))


def _base_name(name: str) -> str:
    return name[: -len("_total")] if name.endswith("_total") else name


_RESERVED_BASES = frozenset(_base_name(n) for n in RESERVED_NAMES)
_RETIRED_BASES = {_base_name(old): new for old, new in RETIRED_NAMES.items()}


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
        self._build = build_labels()  # fixed for the process: computed once

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
        build = GaugeMetricFamily(BUILD_INFO, "Kestrel build (value 1): core version, Python, event schema, engine "
                                  "build id (as in replay headers).", labels=BUILD_LABELS)
        build.add_metric([self._build[k] for k in BUILD_LABELS], 1)
        yield build
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
        if _base_name(exposed) in _RETIRED_BASES:
            self._warn(name, f"retired name (now {_RETIRED_BASES[_base_name(exposed)]})")
            return None
        problem = naming_problem(exposed, kind)
        if problem is not None:
            self._warn(name, problem)
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
