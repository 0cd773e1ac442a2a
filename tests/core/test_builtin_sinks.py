import json

import pytest

from kestrel_core.builtins.console import ConsoleSink
from kestrel_core.builtins.jsonl import JsonlAlertSink, JsonlSource
from kestrel_core.testing import SinkContract, collect_records, make_alert, make_context


class TestConsoleSink(SinkContract):
    @pytest.fixture
    def sink(self):
        return ConsoleSink(ConsoleSink.Settings(), make_context())

    def test_readable_output(self, capsys):
        sink = ConsoleSink(ConsoleSink.Settings(), make_context())
        sink.open()
        sink.write_alert(make_alert(sink.context, "demo.rule", "critical"))
        sink.close()
        out = capsys.readouterr().out
        assert "CRITICAL" in out and "rule demo.rule" in out and "process.name" in out


class TestJsonlAlertSink(SinkContract):
    @pytest.fixture
    def sink(self, tmp_path):
        return JsonlAlertSink(JsonlAlertSink.Settings(path=str(tmp_path / "a.jsonl")), make_context())

    def test_one_json_object_per_alert(self, tmp_path):
        path = tmp_path / "alerts.jsonl"
        for append in (False, True):
            sink = JsonlAlertSink(JsonlAlertSink.Settings(path=str(path), append=append), make_context())
            sink.open()
            sink.write_alert(make_alert(sink.context, "r1"))
            sink.write_alert(make_alert(sink.context, "r2", n_events=2))
            sink.close()
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert [r["rule"]["id"] for r in rows] == ["r1", "r2", "r1", "r2"]
        assert rows[1]["events"][1] == {"process": {"name": "p1"}}


def test_jsonl_source_reads_and_reports_bad_lines(tmp_path, caplog):
    path = tmp_path / "e.jsonl"
    path.write_text('{"a": 1}\n\n[broken\n{"b": 2}\n')
    ctx = make_context()
    src = JsonlSource(JsonlSource.Settings(path=str(path)), ctx)
    assert collect_records(src) == [{"a": 1}, {"b": 2}]
    assert f"{path}:3:2: invalid JSON: expected a JSON value" in caplog.text
    assert ctx.stats.events_dropped[("jsonl", "malformed")] == 1
    assert src.progress() == (path.stat().st_size, path.stat().st_size)
