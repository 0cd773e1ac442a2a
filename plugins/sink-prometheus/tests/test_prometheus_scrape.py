"""Real HTTP scrapes of a sink whose RunContext stats the test fills."""

from __future__ import annotations

import math
import threading

from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema


def L(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def fill(stats) -> None:
    stats.events_read.update({"jsonl": 7, "ebpf": 3})
    stats.events_processed.update({("jsonl", "process"): 4, ("jsonl", "file"): 2, ("ebpf", "network"): 3})
    stats.events_dropped.update({("jsonl", "malformed"): 1, ("ebpf", "queue_full"): 5})
    stats.alerts.update({("r-whoami", "low"): 2, ("r-ssh", "high"): 1})
    stats.evictions.update({("r-seq", "maxspan"): 4, ("r-seq", "quota"): 1})
    stats.events_lost.update({("ebpf", "overflow"): 40})
    stats.alerts_incomplete.update({"r-seq": 2})
    stats.last_event_ts_ns = 1_700_000_000_123_000_000
    stats.queue_depth = 12


def test_scrape_exports_every_core_counter(context, open_sink, scrape):
    fill(context.stats)
    sink = open_sink()
    m = scrape(sink)
    assert m[("kestrel_events_processed_total", L(source="jsonl", event_category="process"))] == 4
    assert m[("kestrel_events_processed_total", L(source="jsonl", event_category="file"))] == 2
    assert m[("kestrel_events_processed_total", L(source="ebpf", event_category="network"))] == 3
    assert m[("kestrel_events_read_total", L(source="jsonl"))] == 7
    assert m[("kestrel_events_read_total", L(source="ebpf"))] == 3
    assert m[("kestrel_last_event_timestamp_seconds", ())] == 1_700_000_000.123
    assert m[("kestrel_queue_events", ())] == 12
    # nothing the stats do not hold (e.g. no process_*/python_* metrics from the global registry)
    assert {name for name, _ in m} == {
        "kestrel_events_processed_total",
        "kestrel_events_read_total",
        "kestrel_events_dropped_total",
        "kestrel_alerts_total",
        "kestrel_sequence_evictions_total",
        "kestrel_events_lost_total",
        "kestrel_alerts_incomplete_due_to_loss_total",
        "kestrel_last_event_timestamp_seconds",
        "kestrel_queue_events",
        "kestrel_build_info",
    }


def test_metric_types(context, open_sink, metric_types):
    fill(context.stats)
    types = metric_types(open_sink())
    assert types == {
        "kestrel_events_processed": "counter",
        "kestrel_events_read": "counter",
        "kestrel_events_dropped": "counter",
        "kestrel_alerts": "counter",
        "kestrel_sequence_evictions": "counter",
        "kestrel_events_lost": "counter",
        "kestrel_alerts_incomplete_due_to_loss": "counter",
        "kestrel_sink_errors": "counter",
        "kestrel_sink_dropped": "counter",
        "kestrel_last_event_timestamp_seconds": "gauge",
        "kestrel_queue_events": "gauge",
        "kestrel_build_info": "gauge",
    }


def test_alerts_by_rule_and_severity(context, open_sink, scrape):
    fill(context.stats)
    m = scrape(open_sink())
    alerts = {labels: v for (name, labels), v in m.items() if name == "kestrel_alerts_total"}
    assert alerts == {L(rule="r-whoami", severity="low"): 2, L(rule="r-ssh", severity="high"): 1}


def test_drops_by_reason(context, open_sink, scrape):
    fill(context.stats)
    m = scrape(open_sink())
    drops = {labels: v for (name, labels), v in m.items() if name == "kestrel_events_dropped_total"}
    assert drops == {L(source="jsonl", reason="malformed"): 1, L(source="ebpf", reason="queue_full"): 5}


def test_evictions_by_rule_and_reason(context, open_sink, scrape):
    fill(context.stats)
    m = scrape(open_sink())
    ev = {labels: v for (name, labels), v in m.items() if name == "kestrel_sequence_evictions_total"}
    assert ev == {L(rule="r-seq", reason="maxspan"): 4, L(rule="r-seq", reason="quota"): 1}


def test_empty_stats_scrape(open_sink, scrape):
    m = scrape(open_sink())
    build = [k for k in m if k[0] == "kestrel_build_info"]
    assert len(build) == 1 and m[build[0]] == 1
    del m[build[0]]
    assert m == {("kestrel_last_event_timestamp_seconds", ()): 0, ("kestrel_queue_events", ()): 0}


def test_counts_are_read_at_scrape_time(context, open_sink, scrape):
    """No bookkeeping in the sink: a later scrape sees later counts, exactly."""
    sink = open_sink()
    assert ("kestrel_alerts_total", L(rule="r1", severity="high")) not in scrape(sink)
    context.stats.alerts[("r1", "high")] += 1
    context.stats.events_processed[("s", "process")] += 1000
    m = scrape(sink)
    assert m[("kestrel_alerts_total", L(rule="r1", severity="high"))] == 1
    assert m[("kestrel_events_processed_total", L(source="s", event_category="process"))] == 1000
    context.stats.alerts[("r1", "high")] += 2
    assert scrape(sink)[("kestrel_alerts_total", L(rule="r1", severity="high"))] == 3


def test_write_methods_do_not_count(context, open_sink, scrape):
    """Alerts are counted once, by the engine in stats; the sink's write hooks add nothing."""
    from kestrel_core.alert import Alert

    sink = open_sink()
    sink.write_alert(Alert(rule_id="r1", rule_name="r1", severity="high"))
    sink.write_events([])
    sink.flush()
    assert not [k for k in scrape(sink) if k[0] == "kestrel_alerts_total"]


def test_snapshot_holds_stats_lock(context, open_sink, http_get):
    """The collector copies counters under stats.lock: a scrape waits while a writer holds it."""
    sink = open_sink()
    result = {}
    with context.stats.lock:
        t = threading.Thread(target=lambda: result.setdefault("r", http_get(sink.url)))
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive(), "scrape finished while stats.lock was held"
        context.stats.alerts[("r-late", "low")] = 9
    t.join(timeout=10)
    status, _, body = result["r"]
    assert status == 200
    assert 'kestrel_alerts_total{rule="r-late",severity="low"} 9.0' in body


def test_two_sinks_in_one_process_have_separate_registries(open_sink, scrape):
    a, b = RunContext(schema=Schema()), RunContext(schema=Schema())
    a.stats.alerts[("ra", "low")] = 1
    b.stats.alerts[("rb", "low")] = 2
    ma, mb = scrape(open_sink(a)), scrape(open_sink(b))
    assert [k for k in ma if k[0] == "kestrel_alerts_total"] == [("kestrel_alerts_total", L(rule="ra", severity="low"))]
    assert [k for k in mb if k[0] == "kestrel_alerts_total"] == [("kestrel_alerts_total", L(rule="rb", severity="low"))]


def test_label_values_are_escaped(context, open_sink, scrape):
    context.stats.alerts[('rule "q"\\x\nnext', "high")] = 1
    m = scrape(open_sink())
    assert m[("kestrel_alerts_total", L(rule='rule "q"\\x\nnext', severity="high"))] == 1


def test_path_setting_and_404_elsewhere(context, open_sink, http_get, scrape):
    sink = open_sink(path="/kestrel/metrics")
    assert sink.url.endswith("/kestrel/metrics")
    scrape(sink)
    status, _, body = http_get(f"http://{sink.bound_address}/metrics")
    assert status == 404
    assert "/kestrel/metrics" in body


def test_openmetrics_negotiation(context, open_sink):
    import urllib.request

    context.stats.alerts[("r1", "high")] = 1
    sink = open_sink()
    req = urllib.request.Request(sink.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert 'kestrel_alerts_total{rule="r1",severity="high"} 1.0' in body


def test_timestamp_is_seconds(context, open_sink, scrape):
    context.stats.last_event_ts_ns = 1_500_000_000_000_000_000
    assert math.isclose(scrape(open_sink())[("kestrel_last_event_timestamp_seconds", ())], 1.5e9)


def test_gzip_when_asked(context, open_sink):
    import gzip
    import urllib.request

    context.stats.queue_depth = 4
    sink = open_sink()
    req = urllib.request.Request(sink.url, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        body = gzip.decompress(resp.read()).decode()
    assert "kestrel_queue_events 4.0" in body
