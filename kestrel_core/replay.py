"""``kestrel replay``: a recorded log through the detection engine, offline
and deterministically (docs/replay.md).

* Virtual clock: time is the events' own ``ts_mono_ns``; nothing reads the
  wall clock, so a replay today and next year agree.
* Order: every event of every log is sorted by ``(ts_mono_ns, event_id)``
  (then log, then position) before the engine sees it: sources recorded in
  parallel are merged the same way every time.
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
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Callable, Sequence

import attrs
import orjson

from . import __version__
from .event import Event, Gap, RecentGaps
from .klog.format import KlogReader, LogWarning
from .schema import SCHEMA_VERSION, Schema

log = logging.getLogger("kestrel")

REPLAY_FORMAT = 1
BATCH = 1024
BLOCKING_ACTIONS = {
    "deny-exec": ("process.executable", "process.pid"),
    "deny-open": ("file.path", "process.pid"),
    "deny-connect": ("destination.ip", "destination.port"),
    "kill": ("process.pid", "process.executable"),
}
"""Blocking targets a rule may ask for -> the fields that say what would be blocked."""


@lru_cache(maxsize=1)
def engine_build_id() -> str:
    """sha256 over the kestrel_core sources (relative path and bytes, sorted)
    and the version: any change to the engine gives another id."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"kestrel {__version__}\0".encode())
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".lark")
                   and "__pycache__" not in p.parts)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


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


def replay(logs: Sequence[str | Path], rule_paths: Sequence[str | Path], out: BinaryIO | None = None, *,
           strict: str = "warn", runtime: str | None = None, matcher: str | None = None,
           profile: Any = None, host: Any = None) -> ReplayResult:
    """Replay ``logs`` against the rule packs; write the JSONL to ``out``.
    ``runtime``: the predicate runtime of rules that name none (default
    host); every runtime runs in its deterministic mode.  ``matcher``: the
    candidate pre-selection (``--matcher``; default ``literal-index``): the
    alerts are the same with every matcher, and so is the output.  ``profile``
    (with its loaded plugin ``host``): its ``[[detectors]]`` run after the
    rules on each batch, as in ``kestrel run``."""
    from .eql.engine import DetectionEngine
    from .plugins import rules_schema

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
        contents = read_logs(logs, schema)
        from .runtimes import resolve

        try:
            runtimes = resolve(runtime or "host", rules, common={"deterministic": True}).engine_kwargs()
        except ValueError as exc:
            raise RulesError([exc]) from None
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
        return _replay(engine, schema, contents, pack_hash, packs, len(rules), out, detectors)
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _replay(engine: Any, schema: Schema, contents: LogContents, pack_hash: str, packs: list[dict[str, Any]],
            nrules: int, out: BinaryIO | None, detectors: Any = None) -> ReplayResult:
    events, gaps, described, warnings = contents.events, contents.gaps, contents.described, contents.warnings
    ident = {"rule_pack_hash": pack_hash, "engine_build_id": engine_build_id(), "schema_version": SCHEMA_VERSION,
             "logs": [{"name": d["name"], "sha256": d["sha256"]} for d in described]}
    header = {"kestrel_replay": REPLAY_FORMAT, "kestrel_version": __version__, **ident, "packs": packs,
              "rules": nrules, "log_details": described}
    recent = RecentGaps(maxlen=max(1, len(gaps)))  # offline every gap is known up front
    for gap in gaps:
        recent.add(gap)
    alerts: list[Any] = []
    emit = out.write if out is not None else None
    if emit is not None:
        emit(orjson.dumps(header) + b"\n")
    counts = {"events": len(events), "gaps": len(gaps), "events_lost": sum(g.lost for g in gaps), "alerts": 0,
              "incomplete_due_to_loss": 0, "would_block": 0}
    by_rule: dict[str, int] = {}

    def deliver(batch_alerts: list[Any]) -> None:
        for alert in batch_alerts:
            for e in alert.events:  # shown as recorded, like a live run's events
                if e.raw is None:
                    e.raw = contents.document_of(e)
            alert.mode = "replay"
            alert.actions.extend(simulate_actions(alert, schema))
            if recent.flag(alert):
                counts["incomplete_due_to_loss"] += 1
            counts["alerts"] += 1
            counts["would_block"] += sum(1 for a in alert.actions if a.startswith("would block"))
            by_rule[alert.rule_id] = by_rule.get(alert.rule_id, 0) + 1
            alerts.append(alert)
            if emit is not None:
                emit(orjson.dumps(alert.to_dict(schema), default=str) + b"\n")

    for start in range(0, len(events), BATCH):
        chunk = events[start:start + BATCH]
        deliver(engine.process_batch(chunk))
        if detectors:
            deliver(detectors.process(chunk))
    deliver(engine.flush())
    if detectors:
        deliver(detectors.flush())
        detectors.close()
    footer = {"kestrel_replay_end": REPLAY_FORMAT, **ident, "counts": counts,
              "alerts_by_rule": dict(sorted(by_rule.items())),
              "evictions": {f"{r}/{why}": n for (r, why), n in sorted(getattr(engine, "evictions", {}).items())},
              # rules the engine stopped mid-replay: their alerts from then on are missing
              "rules_disabled": list(getattr(engine, "runtime_errors", ())),
              "warnings": [w.message for w in warnings]}
    if detectors:
        footer["detectors"] = detectors.names
        footer["detector_errors"] = dict(sorted(detectors.stats.detector_errors.items()))
    if emit is not None:
        emit(orjson.dumps(footer) + b"\n")
    return ReplayResult(header=header, footer=footer, alerts=alerts, warnings=warnings)
