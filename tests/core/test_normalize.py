import pytest

from kestrel_core.interfaces import NormalizeError
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.timestamps import parse_timestamp
from kestrel_core.runtime import RunContext
from kestrel_core.schema import FieldType, Schema


@pytest.fixture
def norm():
    return EcsJsonNormalizer(EcsJsonNormalizer.Settings(missing_timestamp="error"), RunContext(schema=Schema.ecs()))


def test_nested_and_dotted_keys_give_the_same_fields(norm):
    a = norm.normalize({"@timestamp": 1, "event": {"category": ["process"]}, "process": {"name": "sh", "pid": "42"}}, "t")
    b = norm.normalize({"@timestamp": 1, "event.category": "process", "process.name": "sh", "process.pid": 42}, "t")
    s = norm.schema
    for ev in (a, b):
        assert ev.category == "process"
        assert ev.fields[s.resolve("process.name")] == "sh"
        assert ev.fields[s.resolve("process.pid")] == 42  # coerced from "42"
        assert ev.ts_mono_ns == 10**9
    assert b.fields[s.resolve("event.category")] == ["process"]  # keyword list


def test_unknown_fields_are_registered_as_any(norm):
    ev = norm.normalize({"@timestamp": 5, "event.category": "file", "custom": {"x": [1, 2]}}, "t")
    fdef = norm.schema.get("custom.x")
    assert fdef.type is FieldType.ANY and ev.fields[fdef.id] == [1, 2]


@pytest.mark.parametrize("record, message", [
    ({"@timestamp": 1}, "missing 'event.category'"),
    ({"event.category": "process"}, "missing '@timestamp'"),
    ({"@timestamp": 1, "event.category": "network", "destination.ip": "999.1.1.1"}, "field 'destination.ip': expected an IP address"),
    ({"@timestamp": 1, "event.category": "process", "process.pid": "abc"}, "field 'process.pid': expected an integer"),
    ({"@timestamp": "yesterday", "event.category": "process"}, "not ISO 8601"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_records_are_rejected_with_a_reason(norm, record, message):
    with pytest.raises(NormalizeError, match=message.replace("(", r"\(")):
        norm.normalize(record, "t")


@pytest.mark.parametrize("value, fmt, ns", [
    ("2024-05-01T10:00:00Z", "auto", 1714557600 * 10**9),
    ("2024-05-01T10:00:00.123456789Z", "iso8601", 1714557600 * 10**9 + 123456789),
    ("2024-05-01T12:00:00.5+02:00", "auto", 1714557600 * 10**9 + 500_000_000),
    (1714557600, "auto", 1714557600 * 10**9),
    (1714557600123, "auto", 1714557600123 * 10**6),
    (1714557600123456789, "auto", 1714557600123456789),
    ("1714557600", "epoch_s", 1714557600 * 10**9),
    (1.5, "epoch_s", 1_500_000_000),
    (1500, "epoch_ms", 1_500_000_000),
    (7, "epoch_ns", 7),
])
def test_timestamps(value, fmt, ns):
    assert parse_timestamp(value, fmt) == ns


def test_entity_key_is_stable_across_runs(norm):
    rec = {"@timestamp": 1, "event.category": "process", "process.entity_id": "abc"}
    k1 = norm.normalize(rec, "t").entity_key
    import hashlib
    assert k1 == int.from_bytes(hashlib.blake2b(b"abc", digest_size=16).digest(), "big")


def test_events_sharing_one_fields_dict_read_their_own_timestamp():
    """A source may give events one shared fields dict (``fields is content``)
    whose @timestamp belongs to another event: ``get``, ``to_ecs`` and
    ``to_nested`` give each event its own time (ts_wall_ns), in the field's
    place, and ``settle`` gives it a dict of its own."""
    from kestrel_core.event import Event
    from kestrel_core.schema import TIMESTAMP_ID

    schema = Schema.ecs()
    assert schema.resolve("@timestamp") == TIMESTAMP_ID
    name = schema.resolve("process.name")
    shared = {TIMESTAMP_ID: 1, name: "sh"}
    a, b = (Event("process", shared, t, t, content=shared) for t in (1, 2))
    assert a.get(TIMESTAMP_ID) == 1 and b.get(TIMESTAMP_ID) == 2 and b.get(name) == "sh"
    assert list(b.to_ecs(schema).items()) == [("@timestamp", 2), ("process.name", "sh")]
    assert b.to_nested(schema) == {"@timestamp": 2, "process": {"name": "sh"}}
    b.settle()
    assert b.fields == {TIMESTAMP_ID: 2, name: "sh"} and b.fields is not shared and shared[TIMESTAMP_ID] == 1
    own = Event("process", {TIMESTAMP_ID: 5}, 5, 5, content=object())  # content without a shared dict
    own.settle()
    assert own.get(TIMESTAMP_ID) == 5 and own.own_fields() is own.fields
