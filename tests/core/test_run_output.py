"""What a person reads from a run: the start line, the stop summary in words,
and console alerts where each value sits under the event it came from."""

from __future__ import annotations

import json
import re
import threading
import types

from kestrel_core import hookimpl
from kestrel_core.alert import Alert, summary_table
from kestrel_core.builtins.console import ConsoleSink
from kestrel_core.interfaces import Probe, Source
from kestrel_core.pipeline import STAT_LABELS, Run, describe_counts
from kestrel_core.plugins import PluginHost
from kestrel_core.profile import build_profile, read_profile
from kestrel_core.testing import make_context, make_event


class BlindSource(Source):
    PLUGIN_NAME = "blind"

    @classmethod
    def probe(cls) -> Probe:
        return Probe.missing("no such kernel feature here")

    def run(self, emit, stop: threading.Event) -> None:  # pragma: no cover - never chosen
        raise AssertionError


def build_run(tmp_path) -> Run:
    (tmp_path / "events.jsonl").write_text(json.dumps({"@timestamp": 1, "event": {"category": "process"}}) + "\n")
    path = tmp_path / "p.toml"
    path.write_text('[[sources]]\ntype = "blind"\nfallback = { type = "jsonl", path = "events.jsonl" }\n'
                    '[[sinks]]\ntype = "jsonl"\npath = "alerts.jsonl"\n[[sinks]]\ntype = "console"\n')
    host = PluginHost()
    host.load([])
    mod = types.ModuleType("blind")
    mod.kestrel_register_sources = hookimpl(lambda register: register(BlindSource))
    host.add_module("blind", mod)
    data, validator = read_profile(path)
    return Run.build(build_profile(data, validator, host.registry), host)


def test_start_line_names_profile_sources_passed_over_sinks_and_how_to_stop(tmp_path):
    line = build_run(tmp_path).start_message()
    assert line == (f"running {tmp_path / 'p.toml'} (mode detect, 0 rules): sources jsonl (events.jsonl); "
                    "passed over: blind (no such kernel feature here); sinks jsonl (alerts.jsonl), console; "
                    "Ctrl-C to stop")


EBPF_LIKE = {"received": 40123, "emitted": 7000, "dropped_kind": 12, "lost": 0, "malformed": 0, "table_size": 310,
             "table_evicted": 0, "table_seeded": 295, "kernel_filtered": {"open_read": 32437, "exit": 5}}


def test_stop_summary_is_words_not_dicts_or_counter_names(tmp_path):
    job = build_run(tmp_path)

    class Reporting:  # a source that reports its own counters, as sources-ebpf does
        def stats(self):
            return EBPF_LIKE

    emitter = job.sources[0][1]
    job.sources.append((Reporting(), emitter))
    stats = job.context.stats
    stats.events_read["jsonl"] = 5
    stats.events_processed[("jsonl", "process")] = 4
    stats.events_dropped[("jsonl", "malformed")] = 1
    stats.alerts[("r1", "high")] = 2
    stats.alerts[("r2", "critical")] = 1
    stats.evictions[("r1", "maxspan")] = 3
    stats.events_lost[("jsonl", "overflow")] = 7
    lines = job.stop_summary("eof")
    assert lines[0] == "stopped (eof): read 5, processed 4, dropped 1, alerts 3"  # tests and docs rely on this line
    assert "alerts by severity: 1 critical, 2 high" in lines
    assert "dropped: 1 from jsonl (malformed records)" in lines
    assert "lost before they were read: 7 from jsonl (buffer overflow)" in lines
    assert "sequence partial matches that ended without an alert: 3 window (maxspan) passed" in lines
    src = next(ln for ln in lines if ln.startswith("source jsonl: 40,123"))
    assert src == ("source jsonl: 40,123 records received, 7,000 events delivered, 12 records of kinds no rule needs, "
                   "discarded, 310 processes tracked, 295 processes read from /proc at start, 32,442 events filtered "
                   "in the kernel by rule push-down (exit 5, open_read 32,437)")
    text = "\n".join(lines)
    assert "{" not in text and not re.search(r"\b(table_seeded|dropped_kind|kernel_filtered|table_size)\b", text)


def test_every_ebpf_counter_has_a_label():
    assert set(EBPF_LIKE) <= set(STAT_LABELS)
    assert describe_counts({"new_counter": 3}) == "3 new counter"  # unlabelled keys still read as words


def seq_alert(ctx) -> Alert:
    e1 = make_event(ctx, "process", 1_000_000_000, 1, process__name="bash", host__name="h1", file__path="/tmp/x",
                    process__pid=10)
    e2 = make_event(ctx, "network", 2_000_000_000, 2, process__name="bash", host__name="h1",
                    destination__ip="1.2.3.4", process__pid=11)
    return Alert(rule_id="seq", rule_name="a sequence", severity="high", events=[e1, e2],
                 fields={"process.name": ["bash", "bash"], "file.path": ["/tmp/x", None],
                         "destination.ip": [None, "1.2.3.4"]}, ts_wall_ns=2_000_000_000)


def console_output(capsys, *alerts) -> str:
    sink = ConsoleSink(ConsoleSink.Settings(), make_context())
    sink.open()
    for make in alerts:
        sink.write_alert(make(sink.context))
    sink.close()
    return capsys.readouterr().out


def test_sequence_alert_shows_each_event_under_its_own_heading(capsys):
    out = console_output(capsys, seq_alert)
    blocks = out.split("    event ")
    common, first, second = blocks[0], blocks[1], blocks[2].split("\n\n")[0]
    assert "all 2 events:" in common and "process.name = 'bash'" in common and "host.name = 'h1'" in common
    assert first.startswith("1 of 2 process 1970-01-01T00:00:01.000+00:00")
    assert "file.path = '/tmp/x'" in first and "process.pid = 10" in first and "destination.ip" not in first
    assert second.startswith("2 of 2 network 1970-01-01T00:00:02.000+00:00")
    assert "destination.ip = '1.2.3.4'" in second and "process.pid = 11" in second and "file.path" not in second
    assert "[" not in out.split("\n\n")[0].split("\n", 1)[1]  # no per-event lists like ['/tmp/x', None]


def test_console_ends_with_a_count_by_rule_and_severity(capsys):
    out = console_output(capsys, seq_alert, seq_alert, lambda ctx: Alert(
        rule_id="single", rule_name="one", severity="low", events=[make_event(ctx, "process", 1, 3)]))
    tail = out.split("\n\n")[-1].splitlines()
    assert tail[0] == "3 alerts from 2 rules"
    assert [row.split() for row in tail[1:]] == [["rule", "high", "low", "total"], ["seq", "2", "2"],
                                                 ["single", "1", "1"], ["total", "2", "1", "3"]]


def test_summary_table_orders_severities_and_rules():
    rows = summary_table({("b", "low"): 1, ("a", "critical"): 1, ("c", "weird"): 5})
    assert rows[0].split() == ["rule", "critical", "low", "weird", "total"]
    assert [r.split()[0] for r in rows[1:]] == ["c", "a", "b", "total"]
    assert len({len(r) for r in rows}) == 1  # columns line up
