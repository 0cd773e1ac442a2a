"""Frame numbers and payload shapes (issue 14, reproducers 10, 10b and 11):
deleted, duplicated and swapped frames are reported by frame number, a
duplicate is skipped, a frame that cannot be read becomes a gap (its events
counted as lost, its time range from its neighbours) so replay flags the
sequence alerts across it, and a CRC-valid payload of the wrong shape is a
warning, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from kestrel_core.event import Event, Gap
from kestrel_core.klog import KlogError, KlogReader, KlogWriter
from kestrel_core.klog.format import FILE_HEADER, FRAME, FrameType
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.schema import Schema
from kestrel_core.testing import make_context

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_767_600_000_000_000_000
HOST = {"hostname": "test", "system": "Linux", "kernel": "6.18", "machine": "x86_64", "boot_id": "b"}


def kestrel(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], capture_output=True, env=env, timeout=120)


def doc(i: int, name: str = "filler", ppid: int = 1) -> dict:
    return {"@timestamp": T0 + i * 10, "event": {"category": ["process"], "action": "exec"},
            "process": {"name": name, "executable": f"/usr/bin/{name}", "pid": 100 + i, "parent": {"pid": ppid}}}


def write(path: Path, docs: list[dict], per_frame: int = 4) -> None:
    ctx = make_context()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), ctx)
    with KlogWriter(path, ctx.schema, events_per_frame=per_frame, host=HOST) as w:
        w.write_events([norm.normalize(d, "ebpf") for d in docs])


def frames(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(seq, start, end, type, count) of every frame of an undamaged log."""
    pos, out = FILE_HEADER.size, []
    while pos < len(data):
        _sync, ftype, _flags, count, seq, length, _crc = FRAME.unpack_from(data, pos)
        out.append((seq, pos, pos + FRAME.size + length, ftype, count))
        pos += FRAME.size + length
    return out


def rebuilt(data: bytes, order: list[int]) -> bytes:
    """The log with its frames in ``order`` (frame indexes; repeat one to duplicate it, leave it out to delete it)."""
    fr = frames(data)
    return data[:FILE_HEADER.size] + b"".join(data[fr[i][1]:fr[i][2]] for i in order)


def read(path: Path) -> tuple[KlogReader, list]:
    with KlogReader(path, Schema.ecs()) as reader:
        return reader, list(reader.records())


def kinds(reader: KlogReader) -> list[tuple[str, tuple[int, int] | None]]:
    return [(w.kind, w.frames) for w in reader.warnings]


@pytest.fixture
def log(tmp_path) -> tuple[Path, bytes, list]:
    path = tmp_path / "a.klog"
    write(path, [doc(i) for i in range(30)])
    data = path.read_bytes()
    return path, data, frames(data)


# --------------------------------------------------------------------------- 10: deleted, duplicated, swapped frames


def test_export_of_a_log_with_a_deleted_frame_says_which_and_exits_3(log, tmp_path):
    _, data, fr = log
    victim = next(i for i, f in enumerate(fr) if f[3] == FrameType.EVENTS and i > 2)
    bad = tmp_path / "deleted.klog"
    bad.write_bytes(rebuilt(data, [i for i in range(len(fr)) if i != victim]))
    proc = kestrel("export", str(bad), "-o", str(tmp_path / "out.jsonl"))
    seq = fr[victim][0]
    assert proc.returncode == 3, proc.stderr
    assert f"frame {seq} is missing: frame {seq + 1} at byte {fr[victim][1]} follows frame {seq - 1}".encode() \
        in proc.stderr
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 30 - fr[victim][4]


def test_export_of_a_log_with_a_duplicated_frame_skips_the_copy_and_exits_3(log, tmp_path):
    _, data, fr = log
    bad = tmp_path / "dup.klog"
    order = list(range(len(fr)))
    bad.write_bytes(rebuilt(data, order[:4] + [3] + order[4:]))
    proc = kestrel("export", str(bad), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 3
    assert f"frame {fr[3][0]} at byte {fr[4][1]} repeats frame {fr[3][0]} (first at byte {fr[3][1]}); skipped " \
           f"({fr[3][4]} events)".encode() in proc.stderr
    out = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert len(out) == 30 and len(set(out)) == 30


def test_swapped_frames_are_reported_and_every_event_read_once(log, tmp_path):
    _, data, fr = log
    bad = tmp_path / "swap.klog"
    order = list(range(len(fr)))
    order[3], order[4] = order[4], order[3]
    bad.write_bytes(rebuilt(data, order))
    reader, recs = read(bad)
    assert kinds(reader) == [("reordered_frame", (fr[3][0], fr[3][0]))]
    assert sorted(e.event_id for e in recs) == list(range(1, 31))
    assert not any(isinstance(r, Gap) for r in recs)


def test_every_deletion_duplication_and_swap_is_reported(log, tmp_path):
    # The fuzzer: 102 of 179 deletions, all 111 duplications and 117 of
    # 145 swaps went unreported.  Here every one of each kind, on every frame.
    _, data, fr = log
    n = len(fr)
    cases = []
    for i in range(1, n):  # frame 0 is the header
        cases.append(("delete", i, [j for j in range(n) if j != i]))
        cases.append(("duplicate", i, list(range(i + 1)) + list(range(i, n))))
        if i + 1 < n:
            cases.append(("swap", i, list(range(i)) + [i + 1, i] + list(range(i + 2, n))))
    bad = tmp_path / "m.klog"
    for what, i, order in cases:
        bad.write_bytes(rebuilt(data, order))
        reader, recs = read(bad)
        reported = [k for k, _ in kinds(reader) if k != "no_end"]
        events = [r for r in recs if isinstance(r, Event)]
        if what == "delete" and fr[i][3] == FrameType.END:  # as a log that was never closed
            assert kinds(reader) == [("no_end", None)]
        else:
            assert reported, (what, i)
        if what == "delete":
            assert len(events) == 30 - fr[i][4], (what, i)
            # an EVENTS frame: a gap of its events; a DEFS frame: no event lost, no gap
            want = [fr[i][4]] if fr[i][3] == FrameType.EVENTS else []
            assert [r.lost for r in recs if isinstance(r, Gap)] == want, (what, i)
        else:
            assert sorted(e.event_id for e in events) == list(range(1, 31)), (what, i)


# --------------------------------------------------------------------------- 10b: a lost frame is a gap


SEQ_RULE = textwrap.dedent('''
    id = "t.seq"
    name = "curl then chmod"
    description = "download then make executable"
    query = """
    sequence by process.parent.pid with maxspan=1h
      [process where process.name == "curl"]
      [process where process.name == "chmod"]
    """
''')


def _replay(tmp_path: Path, log_path: Path) -> tuple[subprocess.CompletedProcess, dict, list[dict]]:
    (tmp_path / "pack").mkdir(exist_ok=True)
    (tmp_path / "pack" / "pack.toml").write_text('[pack]\nname = "t"\nversion = "1"\npriority = 1\n')
    (tmp_path / "pack" / "seq.toml").write_text(SEQ_RULE)
    proc = kestrel("replay", str(log_path), "--rules", str(tmp_path / "pack"))
    out = [orjson.loads(x) for x in proc.stdout.splitlines()]
    return proc, out[-1], out[1:-1]


def _sequence_log(path: Path) -> None:
    # frame 1: curl (parent 7) and fillers, frame 2: fillers, frame 3: chmod (parent 7)
    docs = [doc(0, "curl", 7)] + [doc(i) for i in range(1, 8)] + [doc(8, "chmod", 7)] + [doc(9)]
    write(path, docs, per_frame=4)


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_a_lost_frame_counts_its_events_and_flags_the_sequence_across_it(tmp_path, damage):
    path = tmp_path / "a.klog"
    _sequence_log(path)
    data = bytearray(path.read_bytes())
    ev = [f for f in frames(bytes(data)) if f[3] == FrameType.EVENTS]
    assert [f[4] for f in ev] == [4, 4, 2]
    middle = ev[1]
    if damage == "flip":
        data[middle[1] + FRAME.size + 3] ^= 0xFF
    else:
        del data[middle[1]:middle[2]]
    bad = tmp_path / "bad.klog"
    bad.write_bytes(bytes(data))
    proc, footer, alerts = _replay(tmp_path, bad)
    assert proc.returncode == 3, proc.stderr
    assert f"frame {middle[0]}".encode() in proc.stderr
    assert footer["counts"]["events"] == 6 and footer["counts"]["events_lost"] == 4
    assert [a["incomplete_due_to_loss"] for a in alerts] == [True]
    assert footer["counts"]["incomplete_due_to_loss"] == 1
    reader, recs = read(bad)
    (gap,) = [r for r in recs if isinstance(r, Gap)]
    # from the last event before the hole (doc 3) to the first after it (doc 8)
    assert (gap.lost, gap.first_ts_ns, gap.last_ts_ns) == (4, T0 + 30, T0 + 80)
    assert gap.reason == ("damaged_frames" if damage == "flip" else "missing_frames")


def test_an_intact_log_flags_nothing(tmp_path):
    path = tmp_path / "a.klog"
    _sequence_log(path)
    proc, footer, alerts = _replay(tmp_path, path)
    assert proc.returncode == 0, proc.stderr
    assert footer["counts"]["events_lost"] == 0 and [a["incomplete_due_to_loss"] for a in alerts] == [False]


def test_a_torn_tail_is_a_gap_after_the_last_event(tmp_path):
    path = tmp_path / "a.klog"
    _sequence_log(path)
    data = path.read_bytes()
    last = [f for f in frames(data) if f[3] == FrameType.EVENTS][-1]
    (tmp_path / "torn.klog").write_bytes(data[:last[1] + FRAME.size + 2])
    reader, recs = read(tmp_path / "torn.klog")
    assert [w.kind for w in reader.warnings] == ["torn_tail"]
    gap = recs[-1]
    assert isinstance(gap, Gap) and gap.lost == 2 and gap.reason == "torn_tail"
    assert gap.first_ts_ns == T0 + 70 and gap.last_ts_ns == (1 << 63) - 1


# --------------------------------------------------------------------------- 11: CRC-valid payloads of the wrong shape


class _RawWriter(KlogWriter):
    """A writer that can put any payload in a frame (with a good CRC)."""

    def raw(self, ftype: FrameType, payload, count: int = 0) -> None:
        self._frame(ftype, payload, count)


def _shaped(path: Path, ftype: FrameType, payload, count: int = 0) -> list[Event]:
    ctx = make_context()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), ctx)
    with _RawWriter(path, ctx.schema, events_per_frame=4, host=HOST, sources=["ebpf"]) as w:
        w.write_events([norm.normalize(doc(0), "ebpf")])
        w.raw(ftype, payload, count)
        w.write_events([norm.normalize(doc(1), "ebpf")])
    return []


ROW = ["process", T0, T0, 5, 9, 0, {}, None]
BAD_PAYLOADS = [
    ("gap, short", FrameType.GAP, [0, 3], 0),
    ("gap, not a list", FrameType.GAP, {"lost": 3}, 0),
    ("gap, source out of range", FrameType.GAP, [1 << 20, 3, 1, 2, "overflow", 0, 0], 0),
    ("gap, times reversed", FrameType.GAP, [0, 3, 2, 1, "overflow", 0, 0], 0),
    ("gap, text count", FrameType.GAP, [0, "3", 1, 2, "overflow", 0, 0], 0),
    ("defs, a list", FrameType.DEFS, [[1, "a", "keyword"]], 0),
    ("defs, short field", FrameType.DEFS, {"fields": [[900]], "sources": []}, 0),
    ("defs, huge id", FrameType.DEFS, {"fields": [[10**9, "x.y", "keyword"]], "sources": []}, 0),
    ("defs, bad type", FrameType.DEFS, {"fields": [[900, "x.y", "no-such-type"]], "sources": []}, 0),
    ("defs, bad source", FrameType.DEFS, {"fields": [], "sources": ["ebpf"]}, 0),
    ("events, a map", FrameType.EVENTS, {"a": 1}, 1),
    ("events, count differs", FrameType.EVENTS, [ROW], 2),
    ("events, short row", FrameType.EVENTS, [ROW[:5]], 1),
    ("events, row not a list", FrameType.EVENTS, ["x"], 1),
    ("events, category int", FrameType.EVENTS, [[1] + ROW[1:]], 1),
    ("events, text ts", FrameType.EVENTS, [ROW[:1] + ["1"] + ROW[2:]], 1),
    ("events, source out of range", FrameType.EVENTS, [ROW[:5] + [1 << 20] + ROW[6:]], 1),
    ("events, negative source", FrameType.EVENTS, [ROW[:5] + [-1] + ROW[6:]], 1),
    ("events, text source", FrameType.EVENTS, [ROW[:5] + ["ebpf"] + ROW[6:]], 1),
    ("events, fields a list", FrameType.EVENTS, [ROW[:6] + [[1, 2]] + ROW[7:]], 1),
    ("events, text field ids", FrameType.EVENTS, [ROW[:6] + [{"process.name": "x"}] + ROW[7:]], 1),
    ("events, negative field id", FrameType.EVENTS, [ROW[:6] + [{-1: "x"}] + ROW[7:]], 1),
    ("events, extra a list", FrameType.EVENTS, [ROW[:7] + [[1]]], 1),
    ("events, entity key text", FrameType.EVENTS, [ROW[:4] + ["k"] + ROW[5:]], 1),
    ("end, a list", FrameType.END, [1, 2], 0),
    ("end, text count", FrameType.END, {"events": "2", "gaps": 0}, 0),
    ("end, empty", FrameType.END, {}, 0),
    ("defs, empty", FrameType.DEFS, {}, 0),
]


@pytest.mark.parametrize("what, ftype, payload, count", BAD_PAYLOADS, ids=[b[0] for b in BAD_PAYLOADS])
@pytest.mark.parametrize("documents", [False, True])
def test_wrongly_shaped_payload_is_a_warning_and_the_rest_reads(tmp_path, what, ftype, payload, count, documents):
    path = tmp_path / "shape.klog"
    _shaped(path, ftype, payload, count)
    with KlogReader(path, Schema.ecs(), documents=documents) as reader:
        recs = list(reader.records())
    events = [r for r in recs if isinstance(r, Event)]
    assert [e.fields[reader.schema.resolve("process.pid")] for e in events] == [100, 101]
    bad = [w for w in reader.warnings if w.kind == "bad_payload"]
    assert len(bad) == 1 and f"frame 2 at byte" in bad[0].message, reader.warnings
    assert "Error" not in bad[0].message  # said in words, not as a Python exception
    gaps = [r for r in recs if isinstance(r, Gap)]
    if ftype == FrameType.EVENTS:  # its events are lost: the CRC-checked header says how many
        assert [g.lost for g in gaps] == [count]
    elif ftype == FrameType.GAP:  # a loss record that cannot be read: a loss of unknown size
        assert [g.lost for g in gaps] == [0]
    else:
        assert gaps == []


def test_records_of_a_source_no_definition_declares_keep_a_placeholder_name(tmp_path):
    path = tmp_path / "src.klog"
    ctx = make_context()
    pid = ctx.schema.resolve("process.pid")
    _shaped(path, FrameType.EVENTS, [ROW[:5] + [3] + [{pid: 7}, None]], 1)
    with KlogReader(path, Schema.ecs()) as reader:
        events = [r for r in reader.records() if isinstance(r, Event)]
    assert [e.source_id for e in events] == ["ebpf", "source-3", "ebpf"]
    assert [w.kind for w in reader.warnings] == ["unknown_source"]


def test_extra_that_cannot_rebuild_the_document_falls_back_to_the_typed_fields(tmp_path):
    path = tmp_path / "extra.klog"
    ctx = make_context()
    pid = ctx.schema.resolve("process.pid")
    _shaped(path, FrameType.EVENTS, [ROW[:6] + [{pid: 7}, {"r": b"{not json"}]], 1)
    with KlogReader(path, Schema.ecs(), documents=True) as reader:
        docs = [r.raw for r in reader.records() if isinstance(r, Event)]
    assert docs[1] == {"process": {"pid": 7}}
    assert [w.kind for w in reader.warnings] == ["bad_payload"]


@pytest.mark.parametrize("header", [[1, 2], {"fields": [["x"]], "sources": []}, {"fields": [], "sources": [3]},
                                    {}, "text"])
def test_header_of_the_wrong_shape_is_a_klog_error(tmp_path, header):
    path = tmp_path / "h.klog"
    ctx = make_context()
    w = _RawWriter(path, ctx.schema, host=HOST)
    w.close()
    data = path.read_bytes()
    fr = frames(data)
    import msgpack
    import struct
    import zlib

    body = msgpack.packb(header)
    head = struct.pack("<BBHII", FrameType.HEADER, 0, 0, 0, len(body))
    frame = b"\xf7KF\xa5" + head + struct.pack("<I", zlib.crc32(body, zlib.crc32(head))) + body
    path.write_bytes(data[:FILE_HEADER.size] + frame + data[fr[1][1]:])
    with pytest.raises(KlogError, match="damaged log header"):
        KlogReader(path)
    proc = kestrel("export", str(path))
    assert proc.returncode == 3 and b"damaged log header" in proc.stderr and b"Traceback" not in proc.stderr


def test_wrong_shapes_through_export_and_replay_exit_3_without_traceback(tmp_path):
    path = tmp_path / "shape.klog"
    _shaped(path, FrameType.GAP, [0, 3], 0)
    proc = kestrel("export", str(path), "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 3 and b"Traceback" not in proc.stderr and b"cannot decode its payload" in proc.stderr
    proc, footer, _ = _replay(tmp_path, path)
    assert proc.returncode == 3 and b"Traceback" not in proc.stderr and footer["counts"]["events"] == 2


def test_a_frame_repeated_thousands_of_times_is_read_once(log, tmp_path):
    _, data, fr = log
    bad = tmp_path / "many.klog"
    bad.write_bytes(rebuilt(data, [0, 1, 2] + [3] * 3000 + list(range(4, len(fr)))))
    reader, recs = read(bad)
    assert sorted(e.event_id for e in recs if isinstance(e, Event)) == list(range(1, 31))
    assert [w.kind for w in reader.warnings].count("duplicate_frame") == 2999 and reader.frames_skipped == 2999


# --------------------------------------------------------------------------- replay says when a rule stopped


class _Raising:
    """A compiled predicate that fails on any batch, as a runtime bug would."""

    def __init__(self, pred):
        self._pred = pred

    def __getattr__(self, name):
        attr = getattr(self._pred, name)
        if not callable(attr):
            return attr

        def fail(*args, **kwargs):
            raise ZeroDivisionError("boom")

        return fail


def test_replay_reports_a_rule_disabled_while_replaying(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from kestrel_core.eql import engine as engine_mod
    from kestrel_core.klog.cli import replay_command

    path = tmp_path / "a.klog"
    _sequence_log(path)
    (tmp_path / "pack").mkdir()
    (tmp_path / "pack" / "pack.toml").write_text('[pack]\nname = "t"\nversion = "1"\npriority = 1\n')
    (tmp_path / "pack" / "seq.toml").write_text(SEQ_RULE)
    init = engine_mod.DetectionEngine.__init__

    def raising_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        for unit in self.units:
            unit.pred = _Raising(unit.pred)

    monkeypatch.setattr(engine_mod.DetectionEngine, "__init__", raising_init)
    res = CliRunner().invoke(replay_command, [str(path), "--rules", str(tmp_path / "pack")])
    footer = orjson.loads(res.stdout.splitlines()[-1])
    assert footer["rules_disabled"] == ["rule t.seq disabled: its predicate raised ZeroDivisionError: boom"]
    assert res.exit_code == 1, res.output
    assert "1 rule(s) stopped while replaying" in res.stderr


def test_garbage_between_frames_is_damage_but_loses_no_frame(log, tmp_path):
    _, data, fr = log
    bad = tmp_path / "garbage.klog"
    bad.write_bytes(data[:fr[4][1]] + b"\xf7KF\xa5" + b"\x00" * 40 + data[fr[4][1]:])
    reader, recs = read(bad)
    assert kinds(reader) == [("corrupt_frame", None)]
    assert "no frame number is missing" in reader.warnings[0].message
    assert sorted(e.event_id for e in recs if isinstance(e, Event)) == list(range(1, 31))
    assert not any(isinstance(r, Gap) for r in recs)
