"""A run: sources -> normalizer -> bus -> engine -> actions -> sinks.

Sources run on their own threads; the engine and actions run on the main
thread (signal handlers live there); each sink has a bounded queue and a
thread of its own (kestrel_core/delivery.py), so a failing or stalled sink
never holds up detection.  Shutdown on SIGINT/SIGTERM: sources are told to
stop, every event already accepted is processed, the engine is flushed,
sinks take what is queued, flush and close within their bounded wait.  So
``read == processed + dropped``.
"""

from __future__ import annotations

import collections
import gc
import logging
import operator
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

import attrs

from .bus import EventBus
from .cliutil import StartError, start_error
from .delivery import Delivery, SinkWorker, sink_names
from .incidents import correlator_for, incidents_summary
from .event import Event, Gap, RecentGaps
from .interfaces import NormalizeError, Sink, Source
from .plugins import PluginHost, declare_plugin_fields
from .profile import ComponentSpec, Profile
from .runtime import RunContext
from .schema import Schema

log = logging.getLogger("kestrel")

LOSS_WARNING_INTERVAL_S = 10.0
"""At most one loss warning per source in this interval (the counter has every loss)."""


# --------------------------------------------------------------------------- words for the run's counters
#
# Counters keep short machine names (they are also metric labels and test
# keys); what a person reads at start and stop goes through these tables.

STAT_LABELS = {
    # Source.stats() keys (sources-ebpf and any source that reports its own counters)
    "received": "records received",
    "emitted": "events delivered",
    "dropped_kind": "records of kinds no rule needs, discarded",
    "lost": "events lost before they were read",
    "malformed": "malformed records",
    "table_size": "processes tracked",
    "table_evicted": "processes evicted from the process table",
    "table_seeded": "processes read from /proc at start",
    "stale_discarded": "records left by the program's previous user, discarded at start",
    "kernel_filtered": "events filtered in the kernel by rule push-down",
    # Stats.events_dropped / events_lost reasons
    "queue_full": "queue full",
    "overflow": "buffer overflow",
    "ringbuf_full": "eBPF ring buffer full",
    "fanotify_overflow": "fanotify queue overflow",
    "netlink_overflow": "netlink socket overflow",
    # Stats.evictions reasons (sequence partial matches that ended without an alert)
    "maxspan": "window (maxspan) passed",
    "until": "ended by until",
    "overwritten": "replaced by a newer match",
    "missing_event_seen": "missing-event step seen",
    "ttl": "state_ttl_s passed",
    "rule_quota": "rule budget full (max_partials_per_rule)",
    "entity_quota": "entity budget full (max_partials_per_entity)",
    "reload": "dropped by a rule reload",
    # Stats.sink_dropped reasons (kestrel_core/delivery.py); queue_full is above
    "failed": "the sink raised, retries exhausted",
    "bypassed": "arrived while the sink was bypassed",
    "shutdown": "still queued when the shutdown wait ran out",
    # load shedding (kestrel_core/watchdog.py)
    "watchdog": "shed by the watchdog",
    "watchdog_sample": "not evaluated: the watchdog is sampling",
    "watchdog_stop": "still queued at the watchdog's stop",
}
"""Counter key -> the words the start and stop lines use.  A key without a
label is shown with its underscores as spaces."""


def label(key: str) -> str:
    return STAT_LABELS.get(key) or key.replace("_", " ")


def describe_counts(counts: dict[str, Any]) -> str:
    """``{"received": 40123, "kernel_filtered": {"open_read": 32437}}`` ->
    ``40,123 records received, 32,437 events filtered in the kernel by rule
    push-down (open_read 32,437)``; zero and empty entries are left out."""
    parts = []
    for key, value in counts.items():
        if isinstance(value, dict):
            nested = {k: v for k, v in value.items() if v}
            if not nested:
                continue
            total = sum(v for v in nested.values() if isinstance(v, (int, float)))
            detail = ", ".join(f"{k} {_num(v)}" for k, v in sorted(nested.items()))  # kinds, as rules name them
            parts.append(f"{_num(total)} {label(key)} ({detail})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            parts.append(f"{label(key)}: {value}")
        elif value:
            parts.append(f"{_num(value)} {label(key)}")
    return ", ".join(p for p in parts if p)


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def describe_component(spec: ComponentSpec) -> str:
    """``jsonl (alerts.jsonl)``: the type and where it reads or writes, as the profile wrote it."""
    settings = spec.settings
    where = [str(getattr(settings, key)) for key in ("address", "path") if getattr(settings, key, None)]
    return f"{spec.type} ({', '.join(where)})" if where else spec.type


_source_and_category = operator.attrgetter("source_id", "category")


class SourceEmitter:
    """The ``emit`` a source calls: normalize, batch, hand batches to the bus.
    Thread-safe because the engine thread flushes partial batches of quiet sources."""

    def __init__(self, source: Source, name: str, normalizer: Any, bus: EventBus, context: RunContext,
                 batch_size: int) -> None:
        self.source, self.name, self.normalizer, self.bus = source, name, normalizer, bus
        self.context, self.batch_size = context, batch_size
        self._buf: list[Event] = []
        self._lock = threading.Lock()
        self.closed = False
        """Set when the run has ended: a source thread still blocked in a read
        at that moment must not hand over (and count) records nobody will process."""
        self.gaps: collections.deque[tuple[int, Gap]] = collections.deque()
        """Losses reported by the source, each with the number of batches this
        emitter had handed to the bus before it: the engine thread releases a
        gap once it has processed those batches, so sinks see it exactly
        between the events emitted before and after the loss."""
        self.in_flight: collections.deque[Event] = collections.deque()
        """Last event of each batch on the bus (the engine pops it when it
        processes that batch; the bus keeps the event objects)."""
        self.batches_put = 0
        self.batches_processed = 0
        self._loss_warned_at = -LOSS_WARNING_INTERVAL_S
        self._loss_unwarned = 0

    def __call__(self, record: Any) -> bool:
        if self.closed:
            return False
        try:
            event = self.normalizer.normalize(record, self.name)
        except NormalizeError as exc:
            log.error("%s: %s", self.source.describe_record(record), exc)
            self.context.reject(self.name, "malformed")
            return False
        with self._lock:
            if self.closed:
                return False
            self._buf.append(event)
            if len(self._buf) < self.batch_size:
                return True
            batch, self._buf = self._buf, []
            return self._put(batch)

    def emit_batch(self, records: list[Any]) -> int:
        """``emit`` for many records at once (one lock round-trip): sources that
        read in bulk call this when they see it.  Returns how many were accepted."""
        if self.closed or not records:
            return 0
        normalize, name, events = self.normalizer.normalize, self.name, []
        for record in records:
            try:
                events.append(normalize(record, name))
            except NormalizeError as exc:
                log.error("%s: %s", self.source.describe_record(record), exc)
                self.context.reject(self.name, "malformed")
        return self.emit_events(events)

    def emit_events(self, events: list[Event]) -> int:
        """``emit_batch`` for a source that builds its events itself, with
        ``source_id`` set to its name: no normalizer pass (one call per batch,
        not per event).  Returns how many were accepted."""
        if self.closed or not events:
            return 0
        with self._lock:
            if self.closed:
                return 0
            self._buf.extend(events)
            size = self.batch_size
            while len(self._buf) >= size:  # batches of [bus] batch_size, however many a source hands over
                batch, self._buf = self._buf[:size], self._buf[size:]
                if not self._put(batch):
                    return 0
            return len(events)

    def _put(self, batch: list[Event], wait: bool = True) -> bool | None:
        """Under ``_lock``: hand a batch to the bus, tracking it for gap order
        (None: not ``wait``-ing for room, nothing handed over)."""
        self.in_flight.append(batch[-1])  # before put: the engine may take the batch at once
        queued = self.bus.put(self.name, batch, wait)
        if queued:
            self.batches_put += 1
            return True
        self.in_flight.pop()  # dropped (queue_full) or not queued: never processed
        return queued

    def flush(self) -> None:
        """Hand over a partial batch (the engine thread, while the source is
        quiet).  A full queue keeps it buffered: the engine is the one that
        makes room, so it must not wait for it."""
        with self._lock:
            if self._buf and not self.closed and self._put(self._buf, wait=False) is not None:
                self._buf = []

    def loss(self, lost: int, first_ts_ns: int, last_ts_ns: int, reason: str = "overflow", *,
             first_wall_ns: int = 0, last_wall_ns: int = 0) -> None:
        """The source learned that the kernel dropped ``lost`` events between
        ``first_ts_ns`` and ``last_ts_ns`` (the events' ``ts_mono_ns`` clock).
        Counted in ``stats.events_lost`` (not in the read/processed/dropped
        balance), logged (rate-limited), and handed to the engine thread as a
        :class:`Gap` for sinks and for flagging sequence alerts.  Wall times
        (0: unknown) are for display."""
        if first_ts_ns > last_ts_ns:
            first_ts_ns, last_ts_ns = last_ts_ns, first_ts_ns
        gap = Gap(source_id=self.name, lost=int(lost), first_ts_ns=first_ts_ns, last_ts_ns=last_ts_ns, reason=reason,
                  first_wall_ns=first_wall_ns, last_wall_ns=last_wall_ns)
        stats = self.context.stats
        with stats.lock:
            stats.events_lost[(self.name, reason)] += gap.lost
        with self._lock:  # events emitted before the loss go first
            batch, self._buf = self._buf, []
            if batch and not self.closed:
                self._put(batch)
            self.gaps.append((self.batches_put, gap))
        now = time.monotonic()
        self._loss_unwarned += gap.lost
        if now - self._loss_warned_at >= LOSS_WARNING_INTERVAL_S:
            log.warning("source %r lost %d events (%s) in the last %.0f s; sequences overlapping the loss are "
                        "flagged incomplete_due_to_loss", self.name, self._loss_unwarned, reason,
                        min(now - self._loss_warned_at, LOSS_WARNING_INTERVAL_S))
            self._loss_warned_at, self._loss_unwarned = now, 0

    def close(self) -> None:
        """Hand over what is buffered, then accept nothing more."""
        with self._lock:
            batch, self._buf = self._buf, []
            if batch and not self.closed:
                self._put(batch)
            self.closed = True


def _first_available(spec: ComponentSpec, registry: Any, make: Callable[[ComponentSpec], Any],
                     passed_over: list[tuple[str, str]] | None = None) -> tuple[ComponentSpec, Source] | None:
    """The first source of ``spec``'s fallback chain whose plugin is loaded and
    whose probe passes; each one passed over is logged with its reason (and
    added to ``passed_over`` as (type, why))."""
    for option in spec.chain():
        why = option.unavailable
        if not why:
            try:
                probe = registry.get("source", option.type).cls.probe()
                why = "" if probe.available else probe.reason or "probe failed"
            except Exception as exc:  # a probe must not crash the run: treat it as unavailable
                why = f"probe raised {type(exc).__name__}: {exc}"
        if not why:
            try:
                return option, make(option)
            except Exception as exc:  # e.g. a BPF program that fails to load: degrade when there is somewhere to go
                if option.fallback is None:
                    raise
                # a StartError already names the profile entry and the cause
                why = f"failed to start: {exc}" if isinstance(exc, StartError) else \
                    f"failed to start: {type(exc).__name__}: {exc}"
        nxt = option.fallback
        log.warning("source %r unavailable: %s%s", option.type, why,
                    f"; using fallback {nxt.type!r}" if nxt else "; skipped")
        if passed_over is not None:
            passed_over.append((option.type, why))
    return None


@attrs.define(eq=False)
class Run:
    profile: Profile
    host: PluginHost
    context: RunContext
    engine: Any
    sources: list[tuple[Source, SourceEmitter]]
    sinks: list[Any]
    actions: list[Any]
    bus: EventBus
    stop: threading.Event = attrs.Factory(threading.Event)
    stop_reason: str = "eof"
    signalled: str | None = None
    """Name of the SIGINT/SIGTERM received, for the run loop to act on."""
    progress: Callable[[list[Source]], None] | None = None
    recent_gaps: RecentGaps = attrs.Factory(RecentGaps)
    packset: Any = None
    """The rule pack set running now (:class:`kestrel_core.packs.PackSet`)."""
    reloader: Any = None
    """Hot reload of the rule packs (``[rules] watch``), or None."""
    clock_offset_ns: int | None = None
    """Events' clock minus time.monotonic_ns() at the last batch (for the expiry tick)."""
    last_sink_flush: float = 0.0
    sinks_dirty: bool = False
    disabled_published: int = 0
    """Rules disabled so far that ``kestrel_rule_disabled_total`` already shows."""
    """Alerts written since the last sink flush (flushed when the bus goes quiet)."""
    source_specs: list[ComponentSpec] = attrs.Factory(list)
    """The spec each running source was built from (the chosen link of its fallback chain)."""
    passed_over: list[tuple[str, str]] = attrs.Factory(list)
    """Sources of the profile's fallback chains that could not run here: (type, why)."""
    sink_delivery: dict[int, Delivery] = attrs.Factory(dict)
    """id(sink) -> its profile entry's ``delivery`` settings (sinks added later get the defaults)."""
    workers: list[SinkWorker] = attrs.Factory(list)
    """One per sink, built by ``open()``: the sink's queue and thread (kestrel_core/delivery.py)."""
    suppressor: Any = None
    """Alert suppression (:class:`kestrel_core.suppression.Suppressor`), built from the rules and the profile."""
    suppressed_published: int = 0
    detectors: Any = None
    """The ``[[detectors]]`` (:class:`kestrel_core.detectors.DetectorSet`), run after the engine on each batch."""
    lean_pending: set[str] = attrs.Factory(set)
    """Sources whose queued events may be lean events of the rules before a reload."""
    budgets: Any = None
    """Cost accounting and per-rule budgets (:class:`kestrel_core.budgets.BudgetController`)."""
    watchdog: Any = None
    """Memory/CPU limits and load shedding (:class:`kestrel_core.watchdog.Watchdog`), or None."""
    status: Any = None
    """The status file for ``kestrel top`` (:class:`kestrel_core.status.StatusWriter`), or None."""
    incidents: Any = None
    """Alert correlation (:class:`kestrel_core.incidents.Correlator`) when ``[incidents] enable``, or None."""

    def __attrs_post_init__(self) -> None:
        if self.suppressor is None:
            from .suppression import Suppressor, profile_default

            rules = self.packset.rules if self.packset is not None else ()
            self.suppressor = Suppressor(self.context.schema, rules, default=profile_default(self.profile))
            self.context.reload_listeners.append(self._reloaded)

    def _reloaded(self, packset: Any, _engine: Any) -> None:
        """After a hot reload (engine thread, as _deliver): the rules' suppress
        settings, and the new set's warnings (an exception entry that expired)."""
        self.suppressor.set_rules(packset.rules)
        for warning in packset.warnings:
            log.warning("%s", str(warning).replace(": error:", ": warning:", 1))

    # ------------------------------------------------------------------ build

    @classmethod
    def build(cls, profile: Profile, host: PluginHost) -> "Run":
        from .eql.engine import DetectionEngine
        from .eql.sequence import EngineLimits
        from .packs import PackSet, load_packs
        from .reload import RuleReloader, publish_packs

        schema = declare_plugin_fields(Schema.ecs(), host)  # before any rule compiles
        context = RunContext(schema=schema, profile=profile, mode=profile.kestrel.mode)
        registry = host.registry

        rule_paths = [profile.resolve_path(p) for p in profile.rules.paths]
        if profile.rules.compile_cache:
            from .eql import compilecache

            compilecache.configure(profile.resolve_path(profile.rules.compile_cache))
        packset = load_packs(rule_paths)
        for err in packset.errors:  # a bad rule never takes down the others
            log.error("%s", err)
        for warning in packset.warnings:  # (an expired exception entry)
            log.warning("%s", str(warning).replace(": error:", ": warning:", 1))
        budgets = profile.budgets
        limits = EngineLimits(max_partials_per_rule=budgets.max_partials_per_rule,
                              max_partials_per_entity=budgets.max_partials_per_entity,
                              ttl_ns=int(budgets.state_ttl_s * 1e9), lazy_dfa=profile.engine.lazy_dfa,
                              dfa_hot_hits=profile.engine.dfa_hot_hits, dfa_max_states=profile.engine.dfa_max_states,
                              dfa_max_transitions=profile.engine.dfa_max_transitions,
                              dfa_cache=profile.engine.dfa_cache)

        def build_engine(ps: PackSet, reuse: Any = None) -> tuple[Any, dict[str, Any]]:
            """A new engine with its own runtime and matcher (hot reload builds one
            on the watcher thread while the running one is in use; ``reuse``: the
            previous engine, whose compiled host predicates are shared)."""
            from .runtimes import resolve

            runtimes = resolve(profile.engine.runtime, ps.rules, context=context, host=host,
                               settings=profile.engine.runtime_settings)
            matcher_cls = registry.get("matcher", profile.engine.matcher).cls
            msettings = profile.engine.matcher_settings
            matcher = matcher_cls(msettings if isinstance(msettings, matcher_cls.Settings) else matcher_cls.Settings(),
                                  context)
            engine = DetectionEngine(schema, ps.rules, strict=profile.rules.strictness, limits=limits,
                                     matcher=matcher, reuse=reuse, **runtimes.engine_kwargs(),
                                     eval_budget_ms=budgets.rule_batch_ms,
                                     runtime_fallback=profile.engine.runtime_fallback == "host")
            for why in engine.fallbacks:
                log.warning("%s", why)
            if profile.engine.cost_profile:
                from .eql.classify import instrument, publish_costs

                publish_costs(context.stats, engine, instrument(engine))
            return engine, {"runtime": list(runtimes.by_name.values()), "matcher": [matcher]}

        engine, parts = build_engine(packset)
        for err in engine.rule_errors:
            log.error("%s", err)
        for warning in engine.warnings:
            log.warning("%s", warning)
        rules = packset.rules
        rejected = sum(not e.still_runs for e in packset.errors) + len(engine.rule_errors)
        if rejected and profile.rules.on_error == "refuse":  # the verdict of `kestrel profile check`
            from .cliutil import EXIT_USAGE

            raise StartError(f"{profile.path}: {rejected} rule error(s) (above); not starting ([rules] on_error = "
                             f"\"refuse\"; \"skip\" runs the other rules)", EXIT_USAGE)
        log.info("loaded %d rules (%d rejected), rule set hash %s", len(rules) - len(engine.rule_errors),
                 len(packset.errors) + len(engine.rule_errors), packset.hash[:12])
        if rejected:
            log.error("%d rule error(s): those rules are NOT running ([rules] on_error = \"skip\"; "
                      "kestrel profile check fails on this profile)", rejected)
        publish_packs(context.stats, packset, len(engine.rules))
        context.engine, context.packset = engine, packset
        reloader = (RuleReloader(rule_paths, build_engine, packset, context.stats, engine=engine)
                    if profile.rules.watch else None)

        bus = EventBus(profile.bus.capacity, context.stats, profile.bus.backpressure)

        def make(spec: ComponentSpec) -> Any:
            comp_cls = registry.get(spec.role, spec.type).cls
            try:
                return comp_cls(spec.settings, context)
            except (OSError, ValueError) as exc:  # name the profile entry, not just the cause
                raise start_error(f"{profile.path}:{spec.line}:{spec.column}: {spec.role} {spec.type!r}", exc) from None

        from .detectors import DetectorSet

        detectors = DetectorSet.build(profile, registry, context)
        interest = detectors.widen(engine.interest())
        sources = []
        source_specs, passed_over = [], []
        names: collections.Counter[str] = collections.Counter()
        for name, why in host.unavailable.items():
            log.warning("optional plugin %r unavailable: %s", name, why)
        for spec in profile.sources:
            chosen = _first_available(spec, registry, make, passed_over)
            if chosen is None:
                continue
            spec, src = chosen
            source_specs.append(spec)
            names[spec.type] += 1
            name = spec.type if names[spec.type] == 1 else f"{spec.type}#{names[spec.type]}"
            src.name = name
            src.set_interest(interest)
            norm_cls = registry.get("normalizer", src.NORMALIZER).cls
            normalizer = norm_cls(getattr(spec, "normalizer_settings", None) or norm_cls.Settings(), context)
            sources.append((src, SourceEmitter(src, name, normalizer, bus, context, profile.bus.batch_size)))
        sinks = [make(s) for s in profile.sinks]
        sink_delivery = {id(sink): spec.delivery for sink, spec in zip(sinks, profile.sinks) if spec.delivery}
        actions = [make(a) for a in profile.actions]
        context.components = {"source": [s for s, _ in sources], "sink": sinks, "action": actions,
                              "detector": detectors.detectors, **parts}
        return cls(profile=profile, host=host, context=context, engine=engine, sources=sources, sinks=sinks,
                   actions=actions, bus=bus, packset=packset, reloader=reloader, source_specs=source_specs,
                   passed_over=passed_over, sink_delivery=sink_delivery, detectors=detectors,
                   **_governors(profile, context), incidents=correlator_for(profile, schema))

    # ------------------------------------------------------------------ what a person reads

    def start_message(self) -> str:
        """One line: the profile, the sources running (and those passed over,
        with why), the sinks and actions, and how to stop."""
        prof = self.profile
        nrules = len(getattr(self.engine, "rules", ()) or ())
        srcs = ", ".join(describe_component(s) for s in self.source_specs) or "none"
        if self.passed_over:
            srcs += "; passed over: " + "; ".join(f"{t} ({why})" for t, why in self.passed_over)
        parts = [f"sources {srcs}", f"sinks {', '.join(describe_component(s) for s in prof.sinks) or 'none'}"]
        if prof.actions:
            parts.append(f"actions {', '.join(describe_component(a) for a in prof.actions)}")
        return (f"running {prof.path} (mode {prof.kestrel.mode}, {nrules} rules): {'; '.join(parts)}; "
                f"Ctrl-C to stop")

    def stop_summary(self, reason: str) -> list[str]:
        """The lines a person reads when the run ends: the balance first (read =
        processed + dropped), then what explains it, in words."""
        stats = self.context.stats
        with stats.lock:
            b = stats.balance()
            alerts = collections.Counter(stats.alerts)
            dropped = collections.Counter(stats.events_dropped)
            lost = collections.Counter(stats.events_lost)
            incomplete = sum(stats.alerts_incomplete.values())
            evicted = collections.Counter()
            for (_rule, why), n in stats.evictions.items():
                evicted[why] += n
        lines = [f"stopped ({reason}): read {b['read']}, processed {b['processed']}, dropped {b['dropped']}, "
                 f"alerts {sum(alerts.values())}"]
        if alerts:
            by_severity = collections.Counter()
            for (_rule, severity), n in alerts.items():
                by_severity[severity] += n
            order = {s: i for i, s in enumerate(("critical", "high", "medium", "low"))}
            lines.append("alerts by severity: " + ", ".join(
                f"{by_severity[s]:,} {s}" for s in sorted(by_severity, key=lambda s: (order.get(s, 9), s))))
        if dropped:
            lines.append("dropped: " + ", ".join(f"{n:,} from {src} ({label(why)})"
                                                 for (src, why), n in sorted(dropped.items())))
        if lost:
            lines.append("lost before they were read: " + ", ".join(f"{n:,} from {src} ({label(why)})"
                                                                    for (src, why), n in sorted(lost.items())))
        if incomplete:
            lines.append(f"sequence alerts flagged incomplete due to loss: {incomplete:,}")
        if evicted:
            lines.append("sequence partial matches that ended without an alert: " + ", ".join(
                f"{n:,} {label(why)}" for why, n in evicted.most_common()))
        suppressed = self.suppressor.suppressed if self.suppressor is not None else {}
        if suppressed:
            lines.append(f"alerts suppressed as repeats within their window: {sum(suppressed.values()):,} ("
                         + ", ".join(f"{n:,} {rule}" for rule, n in sorted(suppressed.items())) + ")")
        if self.incidents is not None:
            lines.append(incidents_summary(self.incidents.counts))
        lines.extend(self._sink_summary())
        for governor in (self.budgets, self.watchdog):
            if governor is not None:
                lines.extend(governor.summary())
        with stats.lock:
            detector_errors = sorted(stats.detector_errors.items())
        for name, n in detector_errors:
            lines.append(f"detector {name}: {n:,} call{'s' if n != 1 else ''} raised "
                         "(logged; those calls gave no alerts)")
        for src, emitter in self.sources:
            own = getattr(src, "stats", None)
            if not callable(own):
                continue
            try:
                text = describe_counts(own())
            except Exception as exc:  # noqa: BLE001 - a summary must not fail the stop
                text = f"stats unavailable ({type(exc).__name__}: {exc})"
            if text:
                lines.append(f"source {emitter.name}: {text}")
        return lines

    def _sink_summary(self) -> list[str]:
        """``sink webhook: 4 errors (last: ...); not delivered: 3 alerts (failed)``, per sink that had trouble."""
        stats = self.context.stats
        with stats.lock:
            errors = collections.Counter(stats.sink_errors)
            dropped = collections.Counter(stats.sink_dropped)
        lines = []
        for worker in self.workers:
            name = worker.name
            n_err = errors.get(name, 0)
            lost = sorted((kind, why, n) for (sink, kind, why), n in dropped.items() if sink == name and n)
            if not n_err and not lost:
                continue
            parts = []
            if n_err:
                parts.append(f"{n_err:,} error{'s' if n_err != 1 else ''}"
                             + (f" (last: {worker.last_error})" if worker.last_error else ""))
            if lost:
                parts.append("not delivered: " + ", ".join(
                    f"{n:,} {kind}{'s' if n != 1 else ''} ({label(why)})" for kind, why, n in lost))
            lines.append(f"sink {name}: " + "; ".join(parts))
        return lines

    # ------------------------------------------------------------------ run

    def request_stop(self, reason: str = "signal") -> None:
        self.stop_reason = reason
        self.stop.set()
        self.bus.close()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            # Only note it: the handler runs on the engine thread between two
            # bytecodes, maybe while that thread holds the stats lock, which
            # request_stop takes (the lock is not reentrant).  The run loop
            # acts on it within one flush interval.
            self.signalled = signal.Signals(signum).name

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _source_thread(self, src: Source, emitter: SourceEmitter) -> None:
        try:
            src.run(emitter, self.stop)
        except Exception as exc:  # one failing source must not take the run down
            log.error("source %r failed: %s: %s", emitter.name, type(exc).__name__, exc)
        finally:
            emitter.flush()
            self.bus.producer_done()

    def open(self) -> None:
        """Open sinks, then start a worker for each; if one fails to open, close
        those already open and re-raise."""
        opened = []
        try:
            for sink in self.sinks:
                try:
                    sink.open()
                except (OSError, ValueError) as exc:  # name the sink; the CLI's exit code follows the cause
                    raise start_error(f"sink {sink.PLUGIN_NAME!r}", exc) from None
                opened.append(sink)
        except BaseException:
            for sink in opened:
                sink.close()
            raise
        if self.incidents is None:
            for name in sinks_wanting_incidents(self.sinks):
                log.info("sink %r takes incident records, but [incidents] enable is off, so it gets none "
                         "(docs/incidents.md)", name)
        self._start_workers()

    def _start_workers(self) -> None:
        if self.workers:
            return
        self.workers = [SinkWorker(sink, name, self.sink_delivery.get(id(sink)) or Delivery.for_sink(sink),
                                   self.context.stats)
                        for sink, name in zip(self.sinks, sink_names(self.sinks))]
        for worker in self.workers:
            worker.start()

    def execute(self) -> str:
        """Run until the inputs end or a stop is requested; ``open()`` first."""
        ctx = self.context
        threads: list[threading.Thread] = []
        wait = self.profile.bus.flush_interval_ms / 1000
        # Events are acyclic and freed by reference counting, yet each one
        # allocates dozens of containers, which keeps triggering the cyclic
        # collector over the large long-lived rule state.  Freezing what
        # start-up built and collecting young objects less often makes a
        # JSONL replay ~35% faster.
        self._start_workers()  # open() does it; a caller that opened the sinks itself gets them here
        self._narrow_normalizers(self.engine.interest())
        thresholds = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        try:
            self.host.hook.kestrel_run_start(context=ctx)
            for src, emitter in self.sources:
                self.bus.producer_started()
                t = threading.Thread(target=self._source_thread, args=(src, emitter), name=f"source-{emitter.name}",
                                     daemon=True)
                t.start()
                threads.append(t)
            if self.reloader is not None:
                self.reloader.start()
            while True:
                self._take_signal()
                batch = self.bus.get(wait)
                if self.reloader is not None:  # between two batches: no event meets a half-loaded pack
                    self._swap_engine()
                if batch is None:
                    for _, emitter in self.sources:  # hand over partial batches of quiet sources
                        emitter.flush()
                    self._take_gaps()
                    self._idle()
                    self._take_signal()  # a signal before the inputs ended is why the run stops
                    if self.bus.finished or (self.stop.is_set() and self._drained(threads)):
                        break
                    continue
                self._process(batch)
                self._govern()
                if ctx.alert_inbox:
                    self._deliver_inbox()
                if self.progress:
                    self.progress([s for s, _ in self.sources])
        except BaseException:
            self.stop_reason = "error"
            raise
        finally:
            self.stop.set()
            if self.reloader is not None:
                self.reloader.stop()
            self._finish()
            gc.set_threshold(*thresholds)
            gc.unfreeze()
        return self.stop_reason

    def _govern(self) -> None:
        """Engine thread, between batches: budgets, watchdog, status file (each
        acts at most once per its own interval)."""
        if self.budgets is not None:
            self.budgets.tick(self.engine)
        if self.watchdog is not None:
            self.watchdog.tick(self)
        if self.status is not None:
            self.status.tick(self)

    def _narrow_normalizers(self, interest: Any) -> None:
        """Let normalizers build events with only the rules' fields (completed
        by ``Event.settle()`` for the events that alert), unless something
        reads every event whole: detectors, a sink that writes events, incidents."""
        whole = (bool(self.detectors) or any(w.takes_events for w in self.workers)
                 or getattr(self, "incidents", None) is not None)
        for _, emitter in self.sources:
            try:
                emitter.normalizer.set_interest(None if whole else interest)
            except Exception as exc:  # noqa: BLE001 - a normalizer that cannot narrow builds whole events
                log.error("normalizer of %r: set_interest failed: %s: %s", emitter.name, type(exc).__name__, exc)

    def _take_signal(self) -> None:
        if self.signalled is not None and not self.stop.is_set():
            log.info("%s: stopping (queued events are still processed)", self.signalled)
            self.request_stop("signal")

    def _swap_engine(self) -> None:
        """Switch to a reloaded engine, if one is ready: unchanged rules keep
        their sequence state, sources get the new interest."""
        swap = self.reloader.take()
        if swap is None:
            return
        kept, dropped = swap.engine.adopt_state(self.engine)
        self.engine = swap.engine
        self.packset = swap.packset
        self.context.components.update(swap.extra)
        with self.context.stats.lock:
            self.context.stats.evictions = collections.Counter(self.engine.evictions)
        interest = self.detectors.widen(self.engine.interest()) if self.detectors else self.engine.interest()
        for src, _ in self.sources:
            try:
                src.set_interest(interest)
            except Exception as exc:  # a source that cannot narrow keeps delivering everything
                log.error("source %r: set_interest failed after reload: %s: %s", src.name, type(exc).__name__, exc)
        self._narrow_normalizers(self.engine.interest())
        self.lean_pending = {emitter.name for _, emitter in self.sources}
        self.reloader.applied(swap, kept, dropped)
        self.context.engine, self.context.packset = self.engine, self.packset
        for listener in list(self.context.reload_listeners):
            try:
                listener(self.packset, self.engine)
            except Exception as exc:  # a component that cannot follow keeps its previous view
                log.error("reload listener %r failed: %s: %s", listener, type(exc).__name__, exc)

    def _idle(self) -> None:
        """No batch this interval: deliver alerts raised off the engine thread and,
        in live runs that ask for it, end sequence windows on the clock (the
        events' clock, advanced by the time elapsed since the last batch); close
        incidents inactive for their window on that clock."""
        if self.context.alert_inbox:
            self._deliver_inbox()
        self._govern()
        if self.sinks_dirty:
            self._flush_alerts()
        if self.context.expiry_tick and self.clock_offset_ns is not None:
            expire = getattr(self.engine, "expire", None)
            if expire is not None:
                expire(time.monotonic_ns() + self.clock_offset_ns)
        if self.incidents is not None and self.clock_offset_ns is not None:
            # a quiet host: incidents still close a window after their last alert
            self._put_incidents(self.incidents.tick(time.monotonic_ns() + self.clock_offset_ns))

    def _flush_alerts(self) -> None:
        """Alerts reach files and pipes while the run goes on, not when a buffer
        fills: sinks are flushed after alerts, at most once per flush interval."""
        now = time.monotonic()
        if now - self.last_sink_flush < self.profile.bus.flush_interval_ms / 1000:
            self.sinks_dirty = True
            return
        self.last_sink_flush, self.sinks_dirty = now, False
        for worker in self.workers:  # the flush runs on the sink's own thread
            worker.request_flush()

    def _deliver_inbox(self) -> None:
        inbox = self.context.alert_inbox
        alerts = []
        while inbox:
            alerts.append(inbox.popleft())
        self._deliver(alerts)

    def _drained(self, threads: list[threading.Thread]) -> bool:
        """After a stop request: sources still blocked in a read (stdin) hold no
        accepted event, so once the queue is empty the run may end."""
        for t in threads:
            t.join(timeout=0.2)
        if not self.bus.empty():
            return False
        for _, emitter in self.sources:
            emitter.close()
        return self.bus.empty()  # close() may have handed over a last batch

    def _take_gaps(self, final: bool = False) -> None:
        """Engine thread: release the losses whose preceding batches have been
        processed (all of them when ``final``) to the recent-gap list (for
        flagging alerts) and to the sinks."""
        for _, emitter in self.sources:
            while emitter.gaps and (final or emitter.gaps[0][0] <= emitter.batches_processed):
                _, gap = emitter.gaps.popleft()
                self.recent_gaps.add(gap)
                for worker in self.workers:
                    worker.put_gap(gap)

    def _process(self, batch: list[Event]) -> None:
        self._take_gaps()
        tail = batch[-1]
        for _, emitter in self.sources:  # whose batch this is, for gap order
            if emitter.in_flight and emitter.in_flight[0] is tail:
                emitter.in_flight.popleft()
                emitter.batches_processed += 1
                break
        if self.lean_pending:  # events built for the rules before a reload: complete them
            from .normalize import settle_stale

            if settle_stale(batch):
                self.lean_pending.discard(tail.source_id)
        stats = self.context.stats
        shed = self.watchdog.drop(batch) if self.watchdog is not None else None
        if shed is not None:  # load shedding: counted, never silently lost
            with stats.lock:
                stats.events_dropped.update(collections.Counter((ev.source_id, shed) for ev in batch))
            return
        t0 = time.perf_counter_ns()
        alerts = self.engine.process_batch(batch)
        if self.budgets is not None:
            self.budgets.account(time.perf_counter_ns() - t0)
        if self.detectors:  # after the engine, on the same batch (replay does the same)
            alerts = alerts + self.detectors.process(batch)
        if self.incidents is not None:  # the exec chain, before the batch's alerts are correlated
            self.incidents.observe(batch)
        self.clock_offset_ns = batch[-1].ts_mono_ns - time.monotonic_ns()
        counts = collections.Counter(map(_source_and_category, batch))
        with stats.lock:
            stats.events_processed.update(counts)
            stats.last_event_ts_ns = max(stats.last_event_ts_ns, batch[-1].ts_wall_ns)
        event_sinks = [worker for worker in self.workers if worker.takes_events]
        if event_sinks:
            for ev in batch:  # sinks see each event with its own @timestamp (see Event.content)
                if ev.fields is ev.content:
                    ev.settle()
            for worker in event_sinks:
                worker.put_events(batch)
        self._deliver(alerts)
        if self.incidents is not None:
            self._put_incidents(self.incidents.tick(batch[-1].ts_mono_ns))
        self._take_gaps()

    def _put_incidents(self, records: list[Any]) -> None:
        for record in records:
            for worker in self.workers:
                worker.put_incident(record)

    def _deliver(self, alerts: list[Any]) -> None:
        stats = self.context.stats
        simulate = self.context.mode != "enforce"
        for alert in alerts:
            alert.mode = self.context.mode
            if self.recent_gaps.flag(alert):
                with stats.lock:
                    stats.alerts_incomplete[alert.rule_id] += 1
            for action in self.actions:
                try:
                    alert.actions.append(action.execute(alert, simulate))
                except Exception as exc:
                    log.error("action %r failed on %s: %s", action.PLUGIN_NAME, alert.rule_id, exc)
            if self.suppressor.specs and not self.suppressor.offer(alert):
                continue  # a repeat: its actions ran, the sinks get the count later (kestrel_core/suppression.py)
            with stats.lock:
                stats.alerts[(alert.rule_id, alert.severity)] += 1
            for worker in self.workers:  # queued: a slow or failing sink never holds up detection
                worker.put_alert(alert)
            if self.incidents is not None:  # after its alert, so a sink reads the alert first
                self._put_incidents(self.incidents.add(alert))
        self._put_summaries(self.suppressor.take())
        if alerts:
            self._flush_alerts()
        evictions = getattr(self.engine, "evictions", None)
        if evictions:
            with stats.lock:
                stats.evictions = collections.Counter(evictions)
        disabled = getattr(self.engine, "disabled", None)
        if disabled and sum(disabled.values()) != self.disabled_published:
            from .runtimes import publish_disabled

            publish_disabled(stats, disabled)
            self.disabled_published = sum(disabled.values())

    def _put_summaries(self, records: list[Any]) -> None:
        """Suppression summaries (windows whose count no later alert took) to the
        sinks, as alert records; the metric follows the count."""
        for record in records:
            record.mode = self.context.mode
            for worker in self.workers:
                worker.put_alert(record)
        total = sum(self.suppressor.suppressed.values())
        if total != self.suppressed_published:
            self.suppressor.publish(self.context.stats)
            self.suppressed_published = total

    def _finish(self) -> None:
        try:
            self._take_gaps(final=True)
            if self.context.alert_inbox:
                self._deliver_inbox()
            self._deliver(self.engine.flush())
            if self.detectors:
                self._deliver(self.detectors.flush())
                self.detectors.close()
            self._put_summaries(self.suppressor.finish())
            if self.incidents is not None:  # every incident still open closes with the run
                self._put_incidents(self.incidents.close_all())
        finally:
            try:
                # Every sink drains, flushes and closes on its own thread at
                # once; each gets its shutdown_timeout_s, so the wait is bounded.
                start = time.monotonic()
                for worker in self.workers:
                    worker.finish()
                for worker in self.workers:
                    worker.wait(start + worker.delivery.shutdown_timeout_s)
            finally:
                if self.status is not None:
                    self.status.tick(self, force=True)  # the final counts, marked stopped
                self.host.hook.kestrel_run_stop(context=self.context, reason=self.stop_reason)


def _governors(profile: Profile, context: RunContext) -> dict[str, Any]:
    """The run's budget controller (always: accounting is always on), watchdog
    and status writer (when the profile asks for them)."""
    from .budgets import BudgetController
    from .status import StatusWriter, default_path
    from .watchdog import Watchdog

    budgets = BudgetController(profile.budgets, context.stats)
    budgets.publish()
    watchdog = Watchdog(profile.watchdog, context.stats)
    if watchdog.enabled:
        watchdog.publish()
    path = default_path(profile)
    return {"budgets": budgets, "watchdog": watchdog if watchdog.enabled else None,
            "status": StatusWriter(path, profile.status.interval_s) if path is not None else None}


def sinks_wanting_incidents(sinks: list[Any]) -> list[str]:
    """Plugin sinks that implement ``write_incident`` (the core's own sinks
    all do, so they are left out: a run without incidents is their normal case)."""
    return [sink.PLUGIN_NAME for sink in sinks
            if type(sink).write_incident is not Sink.write_incident
            and not type(sink).__module__.startswith("kestrel_core.")]


def leave_past_blocked_sources(code: int = 0) -> None:
    """Call once a run has ended and its sinks are closed.  A source thread
    still blocked in a read (stdin) holds its stream's lock, and interpreter
    shutdown would then abort ("could not acquire lock for <stdin> at
    interpreter shutdown"): leave without that shutdown, exit status ``code``."""
    # A sink thread left behind by the bounded shutdown wait may hold stdout's lock the same way.
    if any(t.name.startswith(("source-", "sink-")) and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
