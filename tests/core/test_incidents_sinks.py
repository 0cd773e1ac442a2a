"""Incident records and several sinks: found by writing a sink plugin that
trims its records (pops the timeline). Every sink was handed the same dict,
so the jsonl sink of the same run wrote 43 of the demo's 93 records without
their timeline (which ones depended on thread timing), and the trimming sink
also reached into the correlator's record."""

from __future__ import annotations

import copy
import json
import time

from kestrel_core.delivery import Delivery, SinkWorker
from kestrel_core.interfaces import Sink
from kestrel_core.runtime import Stats

from .test_incidents import SCHEMA, Correlator, _alert, _ev


class Trimming(Sink):
    PLUGIN_NAME = "trim"

    def write_alert(self, alert):
        pass

    def write_incident(self, record):
        record["incident"].pop("timeline")
        record["incident"]["processes"].clear()
        self.done.append(record["incident"]["id"])


class Writing(Sink):
    PLUGIN_NAME = "write"

    def write_alert(self, alert):
        pass

    def write_incident(self, record):
        self.lines.append(json.dumps(record, sort_keys=True))


def test_a_sink_that_edits_its_record_changes_no_other_sinks_record():
    c = Correlator(SCHEMA)
    e = _ev(1, "p", None, "sh")
    c.observe([e])
    (record,) = c.add(_alert(e))
    original = copy.deepcopy(record)
    stats = Stats()
    trim, write = Trimming(None, None), Writing(None, None)
    trim.done, write.lines = [], []
    first = SinkWorker(trim, "trim", Delivery(), stats)
    second = SinkWorker(write, "write", Delivery(), stats)
    first.put_incident(record)  # the engine thread hands the record to both before either runs
    second.put_incident(record)
    first.start()
    first.finish()
    assert first.wait(time.monotonic() + 10) and trim.done == [record["incident"]["id"]]
    second.start()  # only once the first sink has edited its record
    second.finish()
    assert second.wait(time.monotonic() + 10)
    assert write.lines == [json.dumps(original, sort_keys=True)]
    assert record == original and original["incident"]["timeline"]  # the correlator's record is untouched
    assert not stats.sink_errors and not stats.sink_dropped


def test_a_plugin_sink_that_takes_incidents_is_told_when_incidents_are_off(tmp_path, caplog):
    """A sink plugin written for incidents, under a profile without [incidents]
    enable, would get nothing silently; the run says so at start (the core's
    own sinks, which all take incidents, are not named)."""
    import logging
    import types

    from kestrel_core import hookimpl
    from kestrel_core.pipeline import Run, sinks_wanting_incidents
    from kestrel_core.plugins import PluginHost
    from kestrel_core.profile import build_profile, read_profile

    class Collecting(Writing):
        PLUGIN_NAME = "collecting"

    host = PluginHost()
    host.load([])
    mod = types.ModuleType("collecting_sink")
    mod.kestrel_register_sinks = hookimpl(lambda register: register(Collecting))
    host.add_module("collecting_sink", mod)
    (tmp_path / "events.jsonl").write_text("")
    for enable, told in ((False, True), (True, False)):
        prof = tmp_path / f"p{enable}.toml"
        prof.write_text(f'[incidents]\nenable = {str(enable).lower()}\n[rules]\npaths = []\n'
                        '[[sources]]\ntype = "jsonl"\npath = "events.jsonl"\n'
                        '[[sinks]]\ntype = "jsonl"\npath = "alerts.jsonl"\n[[sinks]]\ntype = "collecting"\n')
        data, validator = read_profile(prof)
        job = Run.build(build_profile(data, validator, host.registry), host)
        for sink in job.sinks:
            sink.lines = []
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kestrel"):
            job.open()
            assert job.execute() == "eof"
        assert sinks_wanting_incidents(job.sinks) == ["collecting"]
        hint = "sink 'collecting' takes incident records, but [incidents] enable is off"
        assert (hint in caplog.text) is told
        assert "sink 'jsonl'" not in caplog.text
