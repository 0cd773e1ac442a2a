"""Loss plumbing: a source's ``emit.loss`` -> Stats, sinks' ``write_gap``, and
``incomplete_due_to_loss`` on sequence alerts whose window overlaps the gap."""

from __future__ import annotations

import logging
import textwrap

from kestrel_core.startup import load_profile
from kestrel_core.event import Gap, RecentGaps
from kestrel_core.interfaces import Sink, Source
from kestrel_core.pipeline import SourceEmitter, Run
from kestrel_core.testing import make_alert, make_context, make_event

RULES = textwrap.dedent('''
    [[rule]]
    id = "seq.download-exec"
    name = "curl then chmod"
    severity = "high"
    query = """
    sequence by process.parent.pid
      [process where process.name == "curl"]
      [process where process.name == "chmod"]
    """

    [[rule]]
    id = "single.nc"
    name = "nc"
    severity = "low"
    query = 'process where process.name == "nc"'
''')


BASE = 1_700_000_000_000_000_000  # epoch ns: the normalizer reads it as ns


def ev(ts: int, name: str, ppid: int = 1) -> dict:
    return {"@timestamp": BASE + ts, "event": {"category": "process"}, "process": {"name": name, "parent": {"pid": ppid}}}


class LossySource(Source):
    """Emits a curl/chmod pair around a reported loss, and one outside any loss."""

    PLUGIN_NAME = "lossy"

    def run(self, emit, stop):
        emit(ev(1_000, "curl", ppid=1))
        emit.loss(7, BASE + 1_500, BASE + 1_800)  # the kernel dropped 7 events between the two
        emit(ev(2_000, "chmod", ppid=1))
        emit(ev(2_100, "nc", ppid=1))  # single-event alert inside no window: never flagged
        emit(ev(10_000, "curl", ppid=2))
        emit(ev(11_000, "chmod", ppid=2))


class GapSink(Sink):
    PLUGIN_NAME = "gaps"

    def open(self):
        self.gaps, self.alerts, self.order = [], [], []

    def write_alert(self, alert):
        self.alerts.append(alert)

    def write_events(self, events):
        self.order.extend(("event", e.ts_mono_ns) for e in events)

    def write_gap(self, gap):
        self.gaps.append(gap)
        self.order.append(("gap", gap.first_ts_ns))


def build(tmp_path) -> tuple[Run, GapSink]:
    (tmp_path / "rules.toml").write_text(RULES)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "p.toml").write_text(textwrap.dedent('''
        [kestrel]
        log_level = "warning"
        [rules]
        paths = ["rules.toml"]
        [bus]
        batch_size = 100
        [[sources]]
        type = "jsonl"
        path = "empty.jsonl"
    '''))
    profile, host = load_profile(tmp_path / "p.toml")
    job = Run.build(profile, host)
    src, emitter = job.sources[0]
    lossy = LossySource(None, job.context)
    lossy.name = "lossy"
    job.sources = [(lossy, SourceEmitter(lossy, "lossy", emitter.normalizer, job.bus, job.context, 100))]
    sink = GapSink(None, job.context)
    job.sinks = [sink]
    return job, sink


def test_loss_flags_overlapping_sequence_and_counts(tmp_path, caplog):
    job, sink = build(tmp_path)
    job.open()
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        job.execute()
    stats = job.context.stats
    assert stats.events_lost == {("lossy", "overflow"): 7}
    assert stats.balance() == {"read": 5, "processed": 5, "dropped": 0}  # loss is outside the balance
    assert [g.lost for g in sink.gaps] == [7] and sink.gaps[0].source_id == "lossy"
    flags = sorted((a.rule_id, a.events[0].ts_mono_ns - BASE, a.incomplete_due_to_loss) for a in sink.alerts)
    assert flags == [("seq.download-exec", 1_000, True), ("seq.download-exec", 10_000, False),
                     ("single.nc", 2_100, False)]
    assert stats.alerts_incomplete == {"seq.download-exec": 1}
    assert any("lost 7 events" in r.getMessage() for r in caplog.records)
    # the gap reached the sinks exactly between the events emitted before and after it
    assert sink.order[:3] == [("event", BASE + 1_000), ("gap", BASE + 1_500), ("event", BASE + 2_000)]
    assert next(a for a in sink.alerts if a.incomplete_due_to_loss).to_dict(job.context.schema)[
        "incomplete_due_to_loss"] is True


def test_loss_warning_is_rate_limited(caplog):
    from kestrel_core.bus import EventBus

    ctx = make_context()
    emitter = SourceEmitter(LossySource(None, ctx), "lossy", None, EventBus(10, ctx.stats), ctx, 10)
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        for i in range(50):
            emitter.loss(1, i, i)
    assert len([r for r in caplog.records if "lost" in r.getMessage()]) == 1
    assert ctx.stats.events_lost[("lossy", "overflow")] == 50
    assert len(emitter.gaps) == 50


def test_gap_overlap_is_closed_interval():
    ctx = make_context()
    gaps = RecentGaps()
    gaps.add(Gap("s", 3, 100, 200))
    alert = make_alert(ctx, n_events=2)
    for ts, want in (((0, 99), False), ((0, 100), True), ((200, 300), True), ((201, 300), False),
                     ((120, 150), True), ((0, 1000), True)):
        alert.events = [make_event(ctx, "process", ts[0]), make_event(ctx, "process", ts[1])]
        alert.incomplete_due_to_loss = False
        assert gaps.flag(alert) is want, ts
    alert.events = [make_event(ctx, "process", 150)]  # not a sequence
    assert gaps.flag(alert) is False


def test_recent_gaps_are_bounded():
    gaps = RecentGaps(maxlen=3)
    for i in range(10):
        gaps.add(Gap("s", 1, i * 10, i * 10))
    assert len(gaps) == 3 and gaps.overlapping(0, 75) == [Gap("s", 1, 70, 70)]


class ManyBatchesSource(Source):
    """Runs ahead of the engine: most batches are still on the bus when the loss is reported."""

    PLUGIN_NAME = "many"

    def run(self, emit, stop):
        for i in range(60):
            emit(ev(i * 10, f"p{i}"))
            if i == 31:
                emit.loss(3, BASE + 315, BASE + 318)


def test_gap_order_is_exact_when_batches_are_still_queued(tmp_path):
    job, sink = build(tmp_path)
    many = ManyBatchesSource(None, job.context)
    many.name = "many"
    normalizer = job.sources[0][1].normalizer
    job.sources = [(many, SourceEmitter(many, "many", normalizer, job.bus, job.context, 4))]
    job.open()
    job.execute()
    gap_at = sink.order.index(("gap", BASE + 315))
    assert [ts - BASE for kind, ts in sink.order[:gap_at]] == [i * 10 for i in range(32)]
    assert [ts - BASE for kind, ts in sink.order[gap_at + 1:]] == [i * 10 for i in range(32, 60)]
    emitter = job.sources[0][1]
    assert emitter.batches_put == emitter.batches_processed == 15 and not emitter.in_flight
