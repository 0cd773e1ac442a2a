"""``kestrel replay``: a recorded log through the detection engine, offline
and deterministically (docs/replay.md).

* Virtual clock: time is the events' own ``ts_mono_ns``; nothing reads the
  wall clock, so a replay today and next year agree.
* Order: events reach the engine in ``(ts_mono_ns, event_id, log,
  position)`` order, in bounded memory: each log through a reorder window of
  :data:`WINDOW` events and the logs k-way merged (one pass); when a log is
  further out of order than that (:class:`~kestrel_core.ordering.OutOfOrder`)
  the logs are read again into an external sort
  (:class:`~kestrel_core.ordering.Sorter`, spilling past the memory budget).
  Nothing is written before the pass that produced it is known to hold, so
  either path writes the same bytes.
* Actions are never executed: a rule asking for a blocking target says what
  it *would* have done.
* Output: JSON lines: a header, one line per alert (``Alert.to_dict``), a
  footer with the counts.  The header and footer carry the rule pack hash,
  the engine build id and the schema version, and name each log by its
  sha256, so an alert file says exactly what produced it.  Same log, rules
  and build give the same bytes, in any process (no set iteration order, no
  timestamps, no absolute paths in the output).
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import logging
import weakref
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import attrs
import orjson

from . import __version__
from .buildid import engine_build_id
from .event import Event, Gap, RecentGaps
from .incidents import correlator_for
from .jsonlines import dump_json
from .klog.format import KlogReader, LogWarning, _ext_hook, _pack_default
from .ordering import OutOfOrder, Sorter, in_order
from .schema import SCHEMA_VERSION, Schema

log = logging.getLogger("kestrel")

REPLAY_FORMAT = 1
BATCH = 1024
WINDOW = 4096
"""Events per log the window path holds to absorb disorder (a few MB)."""
DEFAULT_MEMORY_BUDGET_MB = 64
"""``--memory-budget``: MB of events the sort path holds before spilling a run."""
BLOCKING_ACTIONS = {
    "deny-exec": ("process.executable", "process.pid"),
    "deny-open": ("file.path", "process.pid"),
    "deny-connect": ("destination.ip", "destination.port"),
    "kill": ("process.pid", "process.executable"),
}
"""Blocking targets a rule may ask for -> the fields that say what would be blocked."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def alerts_table(alerts: Sequence[Any]) -> str:
    """The alerts of a replay by rule and severity, as a text table ("" for none)."""
    from collections import Counter

    from .alert import summary_table

    return "\n".join(summary_table(Counter((a.rule_id, a.severity) for a in alerts)))


class RulesError(ValueError):
    """The rule packs have errors (each located); replay refuses a partial set."""

    def __init__(self, errors: list[Any]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@attrs.define
class ReplayResult:
    header: dict[str, Any]
    footer: dict[str, Any]
    alerts: list[Any]
    warnings: list[LogWarning]
    stats: dict[str, Any] = attrs.field(factory=dict)
    """How the events were ordered: ``path`` (window or sort), ``passes``,
    ``runs_spilled``, ``renumbered`` (colliding ids across logs)."""


def load_rules(paths: Sequence[str | Path]) -> tuple[list[Any], str, list[dict[str, Any]]]:
    """(rules, rule pack hash, pack descriptions); raises RulesError."""
    from .packs import load_packs

    packset = load_packs(list(paths))
    if packset.errors:
        raise RulesError(packset.errors)
    packs = [{"name": p.name, "version": p.version, "priority": p.priority, "hash": p.hash} for p in packset.packs]
    return packset.rules, packset.hash, packs


@attrs.define
class LogContents:
    events: list[Event]
    """In replay order."""
    gaps: list[Gap]
    described: list[dict[str, Any]]
    warnings: list[LogWarning]
    document_of: Callable[[Event], dict[str, Any]]
    """The source document of one of ``events`` (built on demand: only alerts need them)."""


def read_logs(paths: Sequence[str | Path], schema: Schema) -> LogContents:
    """Every readable event and gap of the logs, events in replay order."""
    keyed: list[tuple[int, int, int, int, Event]] = []
    gaps: list[Gap] = []
    described: list[dict[str, Any]] = []
    warnings: list[LogWarning] = []
    readers: list[KlogReader] = []
    owner: dict[int, KlogReader] = {}  # id(event) -> its reader, with several logs
    for li, path in enumerate(paths):
        with KlogReader(path, schema, lazy_documents=True) as reader:
            readers.append(reader)
            for batch in reader.batches():
                if batch.__class__ is Gap:
                    gaps.append(batch)  # type: ignore[arg-type]
                    continue
                n = len(keyed)
                keyed.extend((e.ts_mono_ns, e.event_id, li, n + i, e) for i, e in enumerate(batch))  # type: ignore
                if len(paths) > 1:
                    owner.update((id(e), reader) for e in batch)  # type: ignore[union-attr]
            hdr = reader.header
            described.append({"name": Path(path).name, "sha256": file_sha256(path),
                              "format_version": hdr.get("format_version"), "schema_version": hdr.get("schema_version"),
                              "sources": [s for s in reader.sources if s], "events": reader.events_read,
                              "gaps": reader.gaps_read, "gaps_inferred": reader.gaps_inferred,
                              "duplicate_frames": reader.frames_skipped, "closed": reader.end is not None,
                              "warnings": [w.message for w in reader.warnings]})
            warnings.extend(reader.warnings)
    keyed.sort(key=lambda t: t[:4])
    events = [t[4] for t in keyed]
    if len(paths) > 1 and len({e.event_id for e in events}) != len(events):
        for i, e in enumerate(events, 1):  # ids from several logs collide: renumber in replay order
            e.event_id = i

    def document_of(event: Event) -> dict[str, Any]:
        return (readers[0] if len(readers) == 1 else owner[id(event)]).document_of(event)

    return LogContents(events, gaps, described, warnings, document_of)


def simulate_actions(alert: Any, schema: Schema) -> list[str]:
    """What the rule's blocking actions would have done (never done in replay)."""
    lines = []
    targets = getattr(alert, "rule_actions", None) or ()
    mode = getattr(alert, "rule_mode", "observe")
    last = alert.events[-1] if alert.events else None
    for target in targets:
        keys = BLOCKING_ACTIONS.get(target)
        if keys is None:
            continue
        what = []
        if last is not None:
            for path in keys:
                fdef = schema.get(path)
                value = last.fields.get(fdef.id) if fdef is not None else None
                if value is not None:
                    what.append(f"{path}={value}")
        detail = f" ({', '.join(what)})" if what else ""
        if mode == "enforce":
            lines.append(f"would block: {target}{detail}")
        else:
            lines.append(f"would not block: {target}{detail} (rule mode {mode})")
    return lines


class _LogPass:
    """One read of the logs, events in replay order, in bounded memory.

    ``path`` "window": each log through a reorder window, the logs merged;
    raises OutOfOrder when a log is further out of order than the window.
    "sort": every event packed into a Sorter (spilling past ``budget``
    bytes), then merged back.  Gaps, per-log descriptions and warnings are
    complete once :meth:`events` is exhausted."""

    def __init__(self, paths: Sequence[str | Path], schema: Schema, path: str, budget: int,
                 renumber: bool, stack: ExitStack) -> None:
        self.paths, self.schema, self.path, self.budget, self.renumber = paths, schema, path, budget, renumber
        self.readers = [stack.enter_context(KlogReader(p, schema, lazy_documents=True)) for p in paths]
        self.gaps: list[list[Gap]] = [[] for _ in paths]
        # per log: (first id, last id, ids strictly increasing in file order) to prove ids unique cheaply
        self.ids: list[list[Any]] = [[None, None, True] for _ in paths]
        self.events = 0
        self.runs_spilled = 0
        self._owner: weakref.WeakKeyDictionary[Event, int] = weakref.WeakKeyDictionary()
        self._sorted_docs: weakref.WeakKeyDictionary[Event, tuple[int, Any, Any]] = weakref.WeakKeyDictionary()

    def _log(self, li: int) -> Iterator[tuple[tuple[int, int, int, int], Event]]:
        reader, gaps, ids = self.readers[li], self.gaps[li], self.ids[li]
        owner = self._owner if len(self.readers) > 1 and self.path == "window" else None
        pos = 0
        for batch in reader.batches():
            if batch.__class__ is Gap:
                gaps.append(batch)  # type: ignore[arg-type]
                continue
            for e in batch:  # type: ignore[union-attr]
                eid = e.event_id
                if ids[0] is None:
                    ids[0] = eid
                elif eid <= ids[1]:
                    ids[2] = False
                ids[1] = eid if ids[1] is None else max(ids[1], eid)
                if owner is not None:
                    owner[e] = li
                yield (e.ts_mono_ns, eid, li, pos), e
                pos += 1

    def ids_unique(self) -> bool:
        """Whether the logs' event ids are provably distinct (each log's
        strictly increasing, the logs' ranges disjoint)."""
        if len(self.readers) < 2:
            return True
        spans = sorted((lo, hi) for lo, hi, rising in self.ids if lo is not None)
        if not all(rising for lo, _hi, rising in self.ids if lo is not None):
            return False
        return all(a[1] < b[0] for a, b in zip(spans, spans[1:]))

    def ordered(self) -> Iterator[Event]:
        if self.path == "window":
            merged: Iterator[tuple[tuple, Event]] = heapq.merge(
                *(in_order(self._log(li), WINDOW) for li in range(len(self.readers))), key=_first)
            events: Iterator[Event] = (e for _k, e in merged)
        else:
            events = self._sorted()
        n = 0
        renumber = self.renumber
        for e in events:
            n += 1
            if renumber:  # ids from several logs collide: renumber in replay order
                e.event_id = n
            yield e
        self.events = n

    def _sorted(self) -> Iterator[Event]:
        sorter = Sorter(self.budget)
        try:
            pack = __import__("msgpack").Packer(use_bin_type=True, default=_pack_default).pack
            for li, reader in enumerate(self.readers):
                state = reader.document_state
                for key, e in self._log(li):
                    fields, extra = state(e)
                    sorter.add(key, pack((e.category, e.ts_mono_ns, e.ts_wall_ns, e.event_id, e.entity_key,
                                          e.source_id, e.fields, None if fields is e.fields else fields, extra)))
            self.runs_spilled = sorter.runs
            unpackb = __import__("msgpack").unpackb
            docs = self._sorted_docs
            for key, payload in sorter.sorted():
                cat, ts, wall, eid, ekey, src, fields, dfields, extra = unpackb(
                    payload, strict_map_key=False, ext_hook=_ext_hook, raw=False)
                e = Event(cat, fields, ts, wall, eid, ekey, src)
                if dfields is not None or extra is not None or len(self.readers) > 1:
                    docs[e] = (key[2], dfields, extra)
                yield e
        finally:
            sorter.close()

    def document_of(self, event: Event) -> dict[str, Any]:
        """The source document of an event this pass yielded (built on demand: only alerts need them)."""
        got = self._sorted_docs.get(event)
        if got is not None:
            li, fields, extra = got
            return self.readers[li].document_from(event.fields if fields is None else fields, extra)
        return self.readers[self._owner.get(event, 0)].document_of(event)

    def described(self) -> list[dict[str, Any]]:
        out = []
        for path, reader in zip(self.paths, self.readers):
            hdr = reader.header
            out.append({"name": Path(path).name, "sha256": file_sha256(path),
                        "format_version": hdr.get("format_version"), "schema_version": hdr.get("schema_version"),
                        "sources": [s for s in reader.sources if s], "events": reader.events_read,
                        "gaps": reader.gaps_read, "gaps_inferred": reader.gaps_inferred,
                        "duplicate_frames": reader.frames_skipped, "closed": reader.end is not None,
                        "warnings": [w.message for w in reader.warnings]})
        return out


def _first(item: tuple[tuple, Any]) -> tuple:
    return item[0]


def _ids_collide(paths: Sequence[str | Path], schema: Schema, budget: int) -> bool:
    """Whether two events of the logs share an id (exact, in bounded memory:
    the ids through a Sorter); only asked when the cheap proof fails."""
    sorter = Sorter(budget)
    try:
        for p in paths:
            with KlogReader(p, schema) as reader:
                for batch in reader.batches():
                    if batch.__class__ is not Gap:
                        for e in batch:  # type: ignore[union-attr]
                            sorter.add((e.event_id,), 0)
        last = None
        for (eid,), _ in sorter.sorted():
            if eid == last:
                return True
            last = eid
        return False
    finally:
        sorter.close()


def replay(logs: Sequence[str | Path], rule_paths: Sequence[str | Path], out: BinaryIO | None = None, *,
           strict: str = "warn", runtime: str | None = None, matcher: str | None = None,
           profile: Any = None, host: Any = None, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
           path: str = "auto", progress: Callable[[int, int], None] | None = None,
           incidents: bool = False) -> ReplayResult:
    """Replay ``logs`` against the rule packs; write the JSONL to ``out``.
    ``runtime``: the predicate runtime of rules that name none (default
    host); every runtime runs in its deterministic mode.  ``matcher``: the
    candidate pre-selection (``--matcher``; default ``literal-index``): the
    alerts are the same with every matcher, and so is the output.  ``profile``
    (with its loaded plugin ``host``): its ``[[detectors]]`` run after the
    rules on each batch, as in ``kestrel run``.  ``memory_budget_mb``: what
    the sort path holds before spilling; ``path``: "auto" (the window, the
    sort when the window cannot order the logs) or "sort".  ``incidents``:
    correlate the alerts into incidents (also when the profile's
    ``[incidents] enable`` says so) and write their records between the
    alerts, as a run's sinks get them (docs/incidents.md).  ``progress``: told
    (bytes of the logs read, alerts so far) as the replay goes (a bar)."""
    from .eql.engine import DetectionEngine
    from .plugins import rules_schema
    from .suppression import Suppressor, profile_default

    if memory_budget_mb <= 0:
        raise ValueError("the memory budget must be positive")
    if path not in ("auto", "sort"):
        raise ValueError(f"unknown ordering path {path!r}")
    rules, pack_hash, packs = load_rules(rule_paths)
    schema = rules_schema()
    # As in a run (pipeline.Run.execute): events are acyclic and many; keep
    # the cyclic collector from rescanning them all as they accumulate.
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        # Logs first: their fields then get the ids they were recorded with
        # (no remapping); fields only the rules name are registered after.
        for p in logs:
            _define_fields(p, schema)
        from .runtimes import resolve

        try:
            runtimes = resolve(runtime or "host", rules, common={"deterministic": True}).engine_kwargs()
        except ValueError as exc:
            raise RulesError([exc]) from None

        def make_engine() -> tuple[Any, Any]:
            chosen = None
            if matcher is not None:
                from .matchers import make_matcher

                try:
                    chosen = make_matcher(matcher)
                except ValueError as exc:
                    raise RulesError([exc]) from None
            engine = DetectionEngine(schema, rules, strict=strict, **runtimes, matcher=chosen,
                                     direct=False if chosen is not None else None)
            if engine.rule_errors:
                raise RulesError(engine.rule_errors)
            detectors = None
            if profile is not None and profile.detectors:
                from .detectors import DetectorSet
                from .runtime import RunContext

                detectors = DetectorSet.build(profile, host.registry, RunContext(schema=schema, profile=profile,
                                                                                mode="replay"))
            return engine, detectors

        budget = max(1, int(memory_budget_mb * 1024 * 1024))
        order = "window" if path == "auto" else "sort"
        renumber = False
        passes = 0
        while True:
            passes += 1
            with ExitStack() as stack:
                lp = _LogPass(logs, schema, order, budget, renumber, stack)
                engine, detectors = make_engine()
                try:
                    result, lines = _replay(engine, schema, lp, pack_hash, packs, len(rules), detectors, progress,
                                            correlator_for(profile, schema, force=incidents),
                                            suppressor=Suppressor(schema, rules, default=profile_default(profile)))
                except OutOfOrder as exc:
                    if detectors:
                        detectors.close()
                    log.info("replay: a log is further out of time order than the %d-event window (%s); "
                             "ordering by an external sort", WINDOW, exc)
                    order = "sort"
                    continue
                if not renumber and not lp.ids_unique() and _ids_collide(logs, schema, budget):
                    renumber = True  # the first pass fed the original ids: run again with the new ones
                    passes += 1
                    continue
                result.stats = {"path": order, "passes": passes, "runs_spilled": lp.runs_spilled,
                                "renumbered": renumber, "memory_budget_mb": memory_budget_mb}
                if out is not None:
                    out.write(orjson.dumps(result.header) + b"\n")
                    for line in lines:
                        out.write(line)
                    out.write(orjson.dumps(result.footer) + b"\n")
                return result
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _define_fields(path: str | Path, schema: Schema) -> None:
    """Register the log's fields (its definitions frames up to its first
    events) before the engine registers the fields only the rules name, so
    they keep the ids they were recorded with (no remapping)."""
    with KlogReader(path, schema) as reader:
        for batch in reader.batches():
            if batch.__class__ is not Gap:
                return


def _replay(engine: Any, schema: Schema, lp: _LogPass, pack_hash: str, packs: list[dict[str, Any]],
            nrules: int, detectors: Any = None,
            progress: Callable[[int, int], None] | None = None,
            incidents: Any = None,
            suppressor: Any = None) -> tuple[ReplayResult, list[bytes]]:
    alerts: list[Any] = []
    records: list[tuple[int, dict[str, Any]]] = []
    """(alerts before it, incident record): where each record goes between the alert lines."""
    by_rule: dict[str, int] = {}
    would_block = 0

    def deliver(batch_alerts: list[Any]) -> None:
        nonlocal would_block
        for alert in batch_alerts:
            if suppressor is not None and suppressor.specs and not suppressor.offer(alert):
                continue  # a repeat within its window (kestrel_core/suppression.py), counted
            for e in alert.events:  # shown as recorded, like a live run's events
                if e.raw is None:
                    e.raw = lp.document_of(e)
            alert.mode = "replay"
            alert.actions.extend(simulate_actions(alert, schema))
            would_block += sum(1 for a in alert.actions if a.startswith("would block"))
            by_rule[alert.rule_id] = by_rule.get(alert.rule_id, 0) + 1
            alerts.append(alert)
            if incidents is not None:  # after its alert, as a run's sinks get them
                records.extend((len(alerts), r) for r in incidents.add(alert))

    def observe(events: list[Event]) -> None:
        if incidents is not None:
            incidents.observe(events)

    def tick(events: list[Event]) -> None:
        if incidents is not None:
            records.extend((len(alerts), r) for r in incidents.tick(events[-1].ts_mono_ns))

    chunk: list[Event] = []
    for e in lp.ordered():
        chunk.append(e)
        if len(chunk) == BATCH:
            found = engine.process_batch(chunk)
            observe(chunk)
            deliver(found)
            if detectors:
                deliver(detectors.process(chunk))
            tick(chunk)
            chunk = []
            if progress is not None:
                progress(sum(r.bytes_read for r in lp.readers), len(alerts))
    if chunk:
        found = engine.process_batch(chunk)
        observe(chunk)
        deliver(found)
        if detectors:
            deliver(detectors.process(chunk))
        tick(chunk)
    deliver(engine.flush())
    if detectors:
        deliver(detectors.flush())
        detectors.close()
    if incidents is not None:
        records.extend((len(alerts), r) for r in incidents.close_all())
    # Every gap is known now (offline, up front for the flags); the output is
    # built only once the pass has held.
    gaps = [g for per_log in lp.gaps for g in per_log]
    described = lp.described()
    warnings = [w for r in lp.readers for w in r.warnings]
    ident = {"rule_pack_hash": pack_hash, "engine_build_id": engine_build_id(), "schema_version": SCHEMA_VERSION,
             "logs": [{"name": d["name"], "sha256": d["sha256"]} for d in described]}
    header = {"kestrel_replay": REPLAY_FORMAT, "kestrel_version": __version__, **ident, "packs": packs,
              "rules": nrules, "log_details": described}
    recent = RecentGaps(maxlen=max(1, len(gaps)))
    for gap in gaps:
        recent.add(gap)
    incomplete = sum(1 for alert in alerts if recent.flag(alert))
    lines = []
    j = 0
    for i, alert in enumerate(alerts):
        while j < len(records) and records[j][0] <= i:  # each record after the alert that caused it
            lines.append(dump_json(records[j][1]) + b"\n")
            j += 1
        lines.append(dump_json(alert.to_dict(schema)) + b"\n")
    lines.extend(dump_json(record) + b"\n" for _, record in records[j:])
    summaries = suppressor.finish() if suppressor is not None and suppressor.specs else []
    for record in summaries:  # windows whose suppressed count no later alert took, after every alert
        for e in record.events:
            if e.raw is None:
                e.raw = lp.document_of(e)
        record.mode = "replay"
        lines.append(dump_json(record.to_dict(schema)) + b"\n")
    counts = {"events": lp.events, "gaps": len(gaps), "events_lost": sum(g.lost for g in gaps),
              "alerts": len(alerts), "incomplete_due_to_loss": incomplete, "would_block": would_block}
    if suppressor is not None and suppressor.specs:
        counts["suppressed"] = sum(suppressor.suppressed.values())
        counts["suppression_summaries"] = len(summaries)
    footer = {"kestrel_replay_end": REPLAY_FORMAT, **ident, "counts": counts,
              "alerts_by_rule": dict(sorted(by_rule.items())),
              "evictions": {f"{r}/{why}": n for (r, why), n in sorted(getattr(engine, "evictions", {}).items())},
              # rules the engine stopped mid-replay: their alerts from then on are missing
              "rules_disabled": list(getattr(engine, "runtime_errors", ())),
              "warnings": [w.message for w in warnings]}
    if incidents is not None:
        footer["incidents"] = dict(sorted(incidents.counts.items()))
    if detectors:
        footer["detectors"] = detectors.names
        footer["detector_errors"] = dict(sorted(detectors.stats.detector_errors.items()))
    return ReplayResult(header=header, footer=footer, alerts=alerts, warnings=warnings), lines
