"""Values orjson refuses (integers past 64 bits, lone surrogates) still reach
the alert file as valid JSON, not as a sink failure that loses the alert."""

from __future__ import annotations

import json

from kestrel_core.builtins.jsonl import JsonlAlertSink
from kestrel_core.jsonlines import dump_json
from kestrel_core.testing import make_alert, make_context


def test_dump_json_matches_orjson_and_takes_what_it_refuses():
    import orjson

    plain = {"a": [1, 2.5, None, True], "b": "é", "c": {"d": -(2**63)}}
    assert dump_json(plain) == orjson.dumps(plain)
    odd = {"big": 2**70, "neg": -(2**80), "s": "x\ud800y", "t": ("tuple",), "o": object}
    back = json.loads(dump_json(odd).decode("ascii"))
    assert back["big"] == 2**70 and back["neg"] == -(2**80) and back["s"] == "x\ud800y"
    assert back["t"] == ["tuple"] and back["o"] == str(object)


def test_jsonl_sink_writes_an_alert_whose_event_holds_a_huge_integer(tmp_path):
    ctx = make_context()
    alert = make_alert(ctx)
    alert.events[0].fields[ctx.schema.resolve("custom.counter")] = 2**70
    alert.events[0].raw = None  # the document is rebuilt from the typed fields, as for a plugin source's event
    path = tmp_path / "alerts.jsonl"
    sink = JsonlAlertSink(JsonlAlertSink.Settings(path=str(path)), ctx)
    sink.open()
    sink.write_alert(alert)
    sink.close()
    (line,) = path.read_text().splitlines()
    assert "test.rule" in json.dumps(json.loads(line))  # valid JSON, the alert's own
    assert "1180591620717411303424" in line
