"""Lean events (issue 16): with the rules' interest, the ECS normalizer reads
only the fields the rules use, and an event completes itself when it alerts.
These tests hold the lean path to the full one: same fields where the rules
look, same whole event after ``settle()``, byte-identical alerts from a real
``kestrel run`` over the Linux pack."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.interfaces import NormalizeError
from kestrel_core.normalize import EcsJsonNormalizer, LeanEvent
from kestrel_core.packs import load_packs
from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lean") / "stream.jsonl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--events", "6000", "--seed", "11",
                    "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def _normalizers(**settings):
    schema = Schema.ecs()
    engine = DetectionEngine(schema, load_packs([ROOT / "rules" / "linux"]).rules)
    ctx = RunContext(schema=schema)
    full = EcsJsonNormalizer(EcsJsonNormalizer.Settings(**settings), ctx)
    lean = EcsJsonNormalizer(EcsJsonNormalizer.Settings(**settings), ctx)
    lean.set_interest(engine.interest())
    return schema, engine, full, lean


def test_lean_events_hold_the_rules_fields_and_settle_to_the_full_event(stream):
    schema, engine, full, lean = _normalizers()
    # the rules' fields and the process keys (enforce arming reads a pending sequence's pid)
    wanted = {schema.resolve(p) for p in engine.interest().fields | {"process.pid", "process.entity_id"}}
    records = [orjson.loads(line) for line in stream.read_bytes().splitlines()]
    records += [orjson.loads(line) for line in (ROOT / "demo" / "capture.jsonl").read_bytes().splitlines()]
    # dotted spellings take the plan's search of splits
    records.append({"@timestamp": "2026-01-05T08:00:01Z", "event.category": ["process"], "event.action": "exec",
                    "process.name": "curl", "process": {"parent.name": "nginx", "pid": 7}, "user.name": "root"})
    for rec in records:
        a, b = full.normalize(rec, "s"), lean.normalize(rec, "s")
        assert isinstance(b, LeanEvent) and set(b.fields) <= set(a.fields) | wanted
        assert (a.category, a.ts_mono_ns, a.ts_wall_ns, a.source_id) == \
            (b.category, b.ts_mono_ns, b.ts_wall_ns, b.source_id)
        assert b.entity_key in (a.entity_key, -1)  # -1: the entity hash is left to settle()
        assert {k: v for k, v in a.fields.items() if k in wanted} == {k: v for k, v in b.fields.items() if k in wanted}
        b.settle()
        assert b.fields == a.fields and b.raw is rec and b.entity_key == a.entity_key
    lean.set_interest(None)  # no interest: whole events again
    assert type(lean.normalize(records[0], "s")) is not LeanEvent


def test_bad_values_are_errors_only_where_a_rule_reads():
    _schema, _engine, full, lean = _normalizers()
    base = {"@timestamp": "2026-01-05T08:00:01Z", "event": {"category": ["process"], "action": "exec"},
            "process": {"name": "sh"}}
    unread = dict(base, source={"port": "not a port"})  # source.port: a long no Linux rule reads
    with pytest.raises(NormalizeError, match="source.port"):
        full.normalize(unread, "s")
    ev = lean.normalize(unread, "s")
    ev.settle()  # the full pass fails: the event keeps the fields the rules read, no exception
    assert ev.category == "process"
    read = dict(base, destination={"port": "not a port"})  # destination.port: read by the pack
    for norm in (full, lean):
        with pytest.raises(NormalizeError, match="destination.port"):
            norm.normalize(read, "s")
    for norm in (full, lean):
        with pytest.raises(NormalizeError, match="missing 'event.category'"):
            norm.normalize({"@timestamp": 1, "process": {"name": "sh"}}, "s")


PROFILE = """
    [kestrel]
    mode = "detect"
    plugins = []
    [rules]
    paths = ["{rules}"]
    [[sources]]
    type = "jsonl"
    path = "{stream}"
    [[sinks]]
    type = "jsonl"
    path = "{alerts}"
"""


def _run(tmp_path: Path, name: str, body: str) -> tuple[bytes, str]:
    profile = tmp_path / f"{name}.toml"
    profile.write_text(textwrap.dedent(body))
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "run", "--profile", str(profile)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / f"{name}.alerts.jsonl").read_bytes(), proc.stderr


def test_kestrel_run_alerts_are_byte_identical_to_whole_events(tmp_path, stream):
    """The same stream with a bad line, run lean (a JSONL sink only) and whole
    (a klog sink writes every event, so the run keeps events whole)."""
    lines = stream.read_bytes().splitlines()
    lines.insert(100, b'{"@timestamp": "2026-01-05T08:00:01Z", "event": ')  # truncated JSON on line 101
    # a value the rules read that is not a port, on line 701 (the file goes over in batches: its own line number)
    lines.insert(700, b'{"@timestamp": "2026-01-05T08:00:02Z", "event": {"category": ["network"], '
                      b'"action": "connection_attempted"}, "destination": {"port": "http"}}')
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    fmt = dict(rules=ROOT / "rules" / "linux", stream=data)
    lean, lean_err = _run(tmp_path, "lean", PROFILE.format(alerts=tmp_path / "lean.alerts.jsonl", **fmt))
    whole, whole_err = _run(tmp_path, "whole", PROFILE.format(alerts=tmp_path / "whole.alerts.jsonl", **fmt)
                            + f'\n[[sinks]]\ntype = "klog"\npath = "{tmp_path / "all.klog"}"\n')
    assert lean.count(b"\n") > 10
    assert lean == whole
    good = len(lines) - 2
    for err in (lean_err, whole_err):
        assert f"{data}:101:49: truncated JSON value" in err, err  # the bad lines, located, and the rest processed
        assert f"{data}:701: field 'destination.port'" in err, err
        assert f"read {good + 2}, processed {good}, dropped 2," in err, err


def test_events_built_before_a_reload_are_completed_for_the_new_rules():
    """A reload may bring a rule reading a field the old interest left out:
    the events already queued (lean for the old rules) are settled whole
    before the new engine sees them; later ones are built for the new rules."""
    from kestrel_core.interfaces import Interest
    from kestrel_core.normalize import settle_stale

    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    norm.set_interest(Interest(fields=frozenset({"process.name", "event.category"})))
    rec = {"@timestamp": "2026-01-05T08:00:01Z", "event": {"category": ["process"]},
           "process": {"name": "sh", "command_line": "sh -c id"}}
    queued = [norm.normalize(rec, "s") for _ in range(3)]
    cmd = schema.resolve("process.command_line")
    assert all(cmd not in ev.fields for ev in queued)
    assert settle_stale(queued)  # the interest did not change: nothing to do
    assert all(cmd not in ev.fields for ev in queued)
    norm.set_interest(Interest(fields=frozenset({"process.command_line", "event.category"})))
    fresh = norm.normalize(rec, "s")
    assert not settle_stale(queued[:2])  # still old: the source's later events may be old too
    assert all(ev.fields.get(cmd) == "sh -c id" for ev in queued[:2])
    assert settle_stale([queued[2], fresh])  # ends with a current event: the source is caught up
    assert queued[2].fields.get(cmd) == "sh -c id" and fresh.fields.get(cmd) == "sh -c id"
    assert fresh.normalizer is not None  # current events stay lean
