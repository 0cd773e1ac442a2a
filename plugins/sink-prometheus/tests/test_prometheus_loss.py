"""Kernel-side loss reported by a source reaches the metrics page (real HTTP)."""

from __future__ import annotations

from kestrel_core.alert import Alert
from kestrel_core.bus import EventBus
from kestrel_core.event import RecentGaps
from kestrel_core.pipeline import SourceEmitter
from kestrel_core.testing import make_event


def L(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class _Src:
    PLUGIN_NAME = "ebpf"

    def describe_record(self, record):
        return "ebpf"


def test_events_lost_and_incomplete_alerts_are_scraped(context, open_sink, scrape):
    bus = EventBus(100, context.stats)
    emitter = SourceEmitter(_Src(), "ebpf", normalizer=None, bus=bus, context=context, batch_size=10)
    sink = open_sink()
    emitter.loss(25, 1_000, 2_000)
    emitter.loss(5, 3_000, 4_000, reason="fanotify_queue_overflow")
    emitter.loss(1, 5_000, 5_000)
    m = scrape(sink)
    assert m[("kestrel_events_lost_total", L(source="ebpf", reason="overflow"))] == 26
    assert m[("kestrel_events_lost_total", L(source="ebpf", reason="fanotify_queue_overflow"))] == 5
    # loss is outside the read/processed/dropped balance
    assert not [k for k in m if k[0] in ("kestrel_events_read_total", "kestrel_events_dropped_total")]

    gaps = RecentGaps()
    for _, gap in emitter.gaps:
        gaps.add(gap)
    alert = Alert(rule_id="r-seq", rule_name="seq", events=[make_event(context, "process", ts_ns=1_500),
                                                           make_event(context, "process", ts_ns=9_000)])
    assert gaps.flag(alert)
    context.stats.alerts_incomplete[alert.rule_id] += 1
    assert scrape(sink)[("kestrel_alerts_incomplete_due_to_loss_total", L(rule="r-seq"))] == 1
