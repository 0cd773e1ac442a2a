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
