"""JSONL -> klog -> JSONL is lossless on every conformance event file.

Lossless means: every exported line is byte-identical to the input line
re-serialized (``orjson.dumps(orjson.loads(line))``): the same keys in the
same order and nesting (dotted or nested), the same values with the same JSON
types (1 vs 1.0, "1" vs 1, string vs list category, non-canonical IPs and
timestamps as written).  Blank lines are not events and are not kept; the
input's whitespace inside a line is not kept either (the JSON text is)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from kestrel_core.cli import main

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "conformance" / "cases"
OPTIONS = {"--event-category-field", "--timestamp-field", "--timestamp-format"}


def _record_args(args: list[str]) -> list[str]:
    """The normalizer options of a case's `kestrel eval` arguments (last wins)."""
    chosen: dict[str, str] = {}
    for opt, value in zip(args[::2], args[1::2]):
        if opt in OPTIONS:
            chosen[opt] = value
    return [x for kv in chosen.items() for x in kv]


def event_files() -> list[tuple[str, str, list[str]]]:
    """(name, JSONL text, record options) of every event set and inline event list."""
    out = []
    for path in sorted(CASES.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        meta_args = data.get("meta", {}).get("args", [])
        sets = data.get("eventsets", {})
        users: dict[str, list[list[str]]] = {}
        for case in data.get("case", []):
            ref = case.get("events", data.get("meta", {}).get("events"))
            args = meta_args + case.get("args", [])
            if isinstance(ref, str) and ref in sets:
                users.setdefault(ref, []).append(_record_args(args))
            elif isinstance(ref, str) and ref.strip():
                out.append((f"{path.stem}:{case['id']}", ref, _record_args(args)))
        for name, text in sets.items():
            for args in {tuple(a) for a in users.get(name, [_record_args(meta_args)])}:
                out.append((f"{path.stem}:{name}{' ' + ' '.join(args) if args else ''}", text, list(args)))
    return out


FILES = event_files()


def test_there_are_conformance_event_files():
    assert len(FILES) >= 30
    assert sum(len([ln for ln in text.splitlines() if ln.strip()]) for _, text, _ in FILES) >= 300


@pytest.mark.parametrize("name,text,args", FILES, ids=[f[0] for f in FILES])
def test_jsonl_klog_jsonl_is_lossless(tmp_path, name, text, args):
    src = tmp_path / "events.jsonl"
    src.write_text(text, encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(main, ["record", "--input", str(src), "-o", str(tmp_path / "e.klog"),
                               "--default-category", "uncategorized", *args])  # as `kestrel eval` takes them
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["export", str(tmp_path / "e.klog"), "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    want = [orjson.dumps(orjson.loads(line)) for line in text.splitlines() if line.strip()]
    got = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert got == want


def test_shapes_the_field_table_cannot_rebuild_are_kept(tmp_path):
    lines = [
        {"@timestamp": "2026-01-05T08:00:00.5+02:00", "event.category": "process", "process": {"pid": 1.0}},
        {"@timestamp": 1767600000, "event": {"category": ["file"]}, "process.name": "dotted", "a": {}},
        {"event": {"category": "network"}, "destination": {"ip": "::FFFF:10.0.0.1"}, "k": {"b.c": [1, {"d": None}]}},
        {"@timestamp": "1767600000123", "event": {"category": "x"}, "n": 123456789012345678901234567890,
         "u": "unicode \u00e9\u4e2d\U0001F600", "f": -0.0, "t": True},
    ]
    src = tmp_path / "e.jsonl"
    src.write_bytes(b"\n".join(orjson.dumps(x) if "n" not in x else _bigjson(x) for x in lines) + b"\n\n")
    runner = CliRunner()
    assert runner.invoke(main, ["record", "-i", str(src), "-o", str(tmp_path / "e.klog")]).exit_code == 0
    res = runner.invoke(main, ["export", str(tmp_path / "e.klog")])
    assert res.exit_code == 0, res.output
    # JSON integers beyond 64 bits: orjson (the JSONL parser of every input) reads them as floats
    want = [orjson.dumps(orjson.loads(line)) for line in src.read_bytes().splitlines() if line.strip()]
    assert want[3] != src.read_bytes().splitlines()[3] and want[:3] == src.read_bytes().splitlines()[:3]
    assert res.stdout_bytes.splitlines() == want


def _bigjson(doc: dict) -> bytes:
    import json

    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def test_rejected_lines_are_named_and_the_rest_is_recorded(tmp_path):
    src = tmp_path / "e.jsonl"
    src.write_text('{"event": {"category": "process"}}\nnot json\n{"no": "category"}\n'
                   '{"event": {"category": "file"}}\n')
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "record", "-i", str(src), "-o",
                           str(tmp_path / "e.klog")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3  # bad data in an input; the good lines are recorded (docs/cli.md)
    assert f"{src}:2:1: invalid JSON" in proc.stderr and f"{src}:3: rejected: missing 'event.category'" in proc.stderr
    assert "recorded 2 events" in proc.stderr and "2 lines rejected" in proc.stderr
    out = subprocess.run([sys.executable, "-m", "kestrel_core", "export", str(tmp_path / "e.klog")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.splitlines() == [b'{"event":{"category":"process"}}', b'{"event":{"category":"file"}}']


def test_demo_capture_converts_losslessly_in_a_real_process(tmp_path):
    src = ROOT / "demo" / "capture.jsonl"
    out = tmp_path / "capture.klog"
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "record", "--input", str(src), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    exp = subprocess.run([sys.executable, "-m", "kestrel_core", "export", str(out)], capture_output=True, timeout=120)
    assert exp.returncode == 0, exp.stderr
    want = [orjson.dumps(orjson.loads(line)) for line in src.read_bytes().splitlines() if line.strip()]
    assert exp.stdout.splitlines() == want
    assert out.stat().st_size < src.stat().st_size / 4  # zstd frames


def test_only_what_export_needs_is_stored_besides_the_typed_fields():
    from kestrel_core.klog import source_extra
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.testing import make_context

    ctx = make_context()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), ctx)

    def extra(doc):
        return source_extra(norm.normalize(doc, "jsonl"), ctx.schema)

    ts = ctx.schema.resolve("@timestamp")
    assert extra({"@timestamp": 1767600000000000000, "event": {"category": ["process"]},
                  "process": {"name": "sh", "pid": 1}}) is None
    assert extra({"@timestamp": "2026-01-05T08:00:00Z", "event": {"category": ["process"]}}) == {
        "o": {ts: "2026-01-05T08:00:00Z"}}
    assert set(extra({"event.category": "process"})) == {"r"}  # dotted key: kept whole
