""".klog v1: typed round trip, torn tails at every byte, flipped bytes, resync,
field remapping, damaged headers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kestrel_core.event import Event, Gap
from kestrel_core.klog import KlogError, KlogReader, KlogWriter
from kestrel_core.klog.format import FILE_HEADER, FRAME, SYNC, FrameType
from kestrel_core.schema import SCHEMA_VERSION, Schema
from kestrel_core.testing import make_context, make_event

HOST = {"hostname": "test", "system": "Linux", "kernel": "6.18", "machine": "x86_64", "boot_id": "b"}


def sample_events(ctx, n: int) -> list[Event]:
    out = []
    for i in range(n):
        e = make_event(ctx, "process" if i % 3 else "network", 1_000 + i * 10, i + 1, source_id=f"src{i % 2}",
                       process__name=f"p{i}", process__pid=100 + i, process__args=["a", f"é{i}", ""],
                       destination__port=443 if i % 2 else None)
        e.entity_key = (2**127 + i) if i % 4 == 0 else i
        e.fields[ctx.schema.resolve(f"custom.f{i % 5}")] = {"nested": [1, 2.5, True, None, "x"], "big": 2**70 + i}
        out.append(e)
    return out


def write_log(path: Path, ctx, events, gaps=(), per_frame: int = 3, compression: str = "zstd") -> None:
    with KlogWriter(path, ctx.schema, compression=compression, events_per_frame=per_frame, host=HOST) as w:
        half = len(events) // 2
        w.write_events(events[:half])
        for g in gaps:
            w.write_gap(g)
        w.write_events(events[half:])


def key(ev: Event, schema: Schema) -> tuple:
    return (ev.category, ev.ts_mono_ns, ev.ts_wall_ns, ev.event_id, ev.entity_key, ev.source_id,
            sorted((schema.path(k), repr(v)) for k, v in ev.fields.items()))


def read_all(path: Path, schema: Schema | None = None) -> tuple[KlogReader, list]:
    reader = KlogReader(path, schema or Schema.ecs())
    recs = list(reader.records())
    reader.close()
    return reader, recs


@pytest.mark.parametrize("compression", ["zstd", "zlib", "none"])
def test_round_trip_keeps_every_typed_value(tmp_path, compression):
    ctx = make_context()
    events = sample_events(ctx, 40)
    gap = Gap("src0", 12, 1_100, 1_150, "overflow", 5, 6)
    write_log(tmp_path / "a.klog", ctx, events, [gap], compression=compression)
    schema = Schema.ecs()
    reader, recs = read_all(tmp_path / "a.klog", schema)
    assert reader.warnings == []
    assert reader.end == {"events": 40, "gaps": 1}
    assert reader.header["schema_version"] == SCHEMA_VERSION and reader.header["host"] == HOST
    assert [r for r in recs if isinstance(r, Gap)] == [gap]
    got = [key(r, schema) for r in recs if isinstance(r, Event)]
    assert got == [key(e, ctx.schema) for e in events]
    # values keep their exact Python types (bool is not int, float is not int)
    first = next(r for r in recs if isinstance(r, Event))
    custom = first.fields[schema.resolve("custom.f0")]
    assert [type(v) for v in custom["nested"]] == [int, float, bool, type(None), str]
    assert custom["big"] == 2**70


def test_log_field_ids_are_mapped_by_path(tmp_path):
    ctx = make_context()
    events = sample_events(ctx, 10)
    write_log(tmp_path / "a.klog", ctx, events)
    schema = Schema.ecs()
    schema.resolve("zzz.registered.first")  # shifts every first-seen field id in the reading schema
    reader, recs = read_all(tmp_path / "a.klog", schema)
    assert not reader.warnings
    assert [key(r, schema) for r in recs] == [key(e, ctx.schema) for e in events]
    assert schema.resolve("custom.f0") != ctx.schema.resolve("custom.f0")


def frame_table(path: Path) -> list[tuple[int, int, int, int, int]]:
    reader, _ = read_all(path)
    assert not reader.warnings
    return reader.frames


def test_truncation_at_every_byte_reads_every_complete_frame(tmp_path):
    ctx = make_context()
    events = sample_events(ctx, 24)
    full = tmp_path / "full.klog"
    write_log(full, ctx, events, [Gap("src1", 3, 1, 2)], per_frame=2)
    data = full.read_bytes()
    frames = frame_table(full)
    header_end = frames[0][2]
    cut_path = tmp_path / "cut.klog"
    for cut in range(len(data)):
        cut_path.write_bytes(data[:cut])
        if cut < header_end:  # no complete header frame: nothing can be read, and it says so
            with pytest.raises(KlogError):
                KlogReader(cut_path)
            continue
        reader, recs = read_all(cut_path)
        complete = [f for f in frames if f[2] <= cut]
        want_events = sum(f[4] for f in complete if f[3] == FrameType.EVENTS)
        assert sum(isinstance(r, Event) for r in recs) == want_events, cut
        assert [key(r, ctx.schema) for r in recs if isinstance(r, Event)] == [
            key(e, ctx.schema) for e in events[:want_events]], cut
        (warning,) = reader.warnings
        last_end = complete[-1][2]
        if cut == last_end:  # cut on a frame boundary: nothing torn, but the log was not closed
            assert warning.kind == "no_end" and warning.end == cut, cut
        else:
            assert warning.kind == "torn_tail", (cut, warning)
            assert warning.offset == last_end and warning.end == cut
            assert f"byte {cut}" in warning.message and f"byte {last_end}" in warning.message
            assert warning.frames == (complete[-1][0] + 1,) * 2


def flip(data: bytes, pos: int, rng: random.Random) -> bytes:
    b = bytearray(data)
    b[pos] ^= rng.randrange(1, 256)
    return bytes(b)


def test_flipped_byte_is_reported_by_frame_number_and_the_rest_replays(tmp_path):
    ctx = make_context()
    events = sample_events(ctx, 30)
    full = tmp_path / "full.klog"
    write_log(full, ctx, events, per_frame=3)
    data = full.read_bytes()
    frames = frame_table(full)
    rng = random.Random(1)
    bad = tmp_path / "bad.klog"
    event_frames = [f for f in frames if f[3] == FrameType.EVENTS]
    positions = []
    for seq, start, end, _t, _n in event_frames:  # every header byte, and payload bytes, of each events frame
        positions += [(seq, p) for p in range(start, start + FRAME.size)]
        positions += [(seq, p) for p in rng.sample(range(start + FRAME.size, end), min(8, end - start - FRAME.size))]
    ids_by_frame = {}
    it = iter(events)
    for seq, _s, _e, _t, n in event_frames:
        ids_by_frame[seq] = [next(it).event_id for _ in range(n)]
    for seq, pos in positions:
        bad.write_bytes(flip(data, pos, rng))
        reader, recs = read_all(bad)
        damage = [w for w in reader.warnings if w.kind == "corrupt_frame"]
        assert len(damage) == 1 and damage[0].frames == (seq, seq), (seq, pos, reader.warnings)
        assert f"frame {seq} " in damage[0].message
        assert damage[0].offset == frames[seq][1]
        assert [w.kind for w in reader.warnings] == ["corrupt_frame"]  # END still read: the rest replayed
        want = [i for s, ids in ids_by_frame.items() if s != seq for i in ids]
        assert [r.event_id for r in recs if isinstance(r, Event)] == want, (seq, pos)


def test_several_damaged_frames_and_a_torn_tail(tmp_path):
    ctx = make_context()
    events = sample_events(ctx, 30)
    full = tmp_path / "full.klog"
    write_log(full, ctx, events, per_frame=3)
    data = full.read_bytes()
    frames = frame_table(full)
    ev_frames = [f for f in frames if f[3] == FrameType.EVENTS]
    a, b = ev_frames[1], ev_frames[4]
    damaged = bytearray(data)
    damaged[a[1] + 30] ^= 0xFF
    damaged[b[2] - 1] ^= 0xFF
    cut = ev_frames[-1][1] + 7
    (tmp_path / "bad.klog").write_bytes(bytes(damaged[:cut]))
    reader, recs = read_all(tmp_path / "bad.klog")
    assert [(w.kind, w.frames) for w in reader.warnings] == [
        ("corrupt_frame", (a[0], a[0])), ("corrupt_frame", (b[0], b[0])), ("torn_tail", (ev_frames[-1][0],) * 2)]
    assert sum(isinstance(r, Event) for r in recs) == 3 * (len(ev_frames) - 3)


def test_adjacent_damaged_frames_are_named_as_a_range(tmp_path):
    ctx = make_context()
    full = tmp_path / "full.klog"
    write_log(full, ctx, sample_events(ctx, 30), per_frame=3)
    frames = frame_table(full)
    ev = [f for f in frames if f[3] == FrameType.EVENTS]
    data = bytearray(full.read_bytes())
    for f in ev[2:5]:
        data[f[1]] ^= 0x01  # break each sync marker
    (tmp_path / "bad.klog").write_bytes(bytes(data))
    reader, _ = read_all(tmp_path / "bad.klog")
    (w,) = reader.warnings
    assert w.kind == "corrupt_frame" and w.frames == (ev[2][0], ev[4][0])
    assert f"frames {ev[2][0]}-{ev[4][0]}" in w.message and w.end == ev[5][1]


def test_not_a_log_and_damaged_header_raise_a_clear_error(tmp_path):
    p = tmp_path / "x.klog"
    p.write_bytes(b'{"not": "a log"}\n')
    with pytest.raises(KlogError, match="not a .klog file"):
        KlogReader(p)
    ctx = make_context()
    write_log(p, ctx, sample_events(ctx, 3))
    data = bytearray(p.read_bytes())
    data[8] = 9  # format version
    p.write_bytes(bytes(data))
    with pytest.raises(KlogError, match="format version 9"):
        KlogReader(p)
    data[8] = 1
    data[FILE_HEADER.size + FRAME.size + 3] ^= 0xFF  # inside the header frame's payload
    p.write_bytes(bytes(data))
    with pytest.raises(KlogError, match="damaged log header"):
        KlogReader(p)


def test_a_flipped_reserved_header_bit_is_reported_and_every_event_still_reads(tmp_path):
    """Fuzz finding F3 (docs/reliability.md): bit 6 of byte 11 (the file header's
    reserved field) flipped read silently; now a warning, export exits 3."""
    import subprocess
    import sys

    ctx = make_context()
    events = sample_events(ctx, 9)
    p = tmp_path / "r.klog"
    write_log(p, ctx, events)
    data = bytearray(p.read_bytes())
    data[11] ^= 1 << 6
    p.write_bytes(bytes(data))
    reader, recs = read_all(p)
    assert [w.kind for w in reader.warnings] == ["corrupt_header"]
    assert "reserved bytes 10-11 are 0x4000, not 0" in reader.warnings[0].message
    assert len([r for r in recs if isinstance(r, Event)]) == len(events)
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "export", str(p)], capture_output=True, text=True)
    assert proc.returncode == 3 and "file header damaged" in proc.stderr
    assert proc.stdout.count("\n") == len(events)


def test_sync_marker_inside_a_payload_does_not_fool_the_reader(tmp_path):
    ctx = make_context()
    events = sample_events(ctx, 6)
    for e in events:
        e.fields[ctx.schema.resolve("custom.blob")] = [int.from_bytes(SYNC, "big")] * 3  # msgpack: 0xce + SYNC
    p = tmp_path / "a.klog"
    write_log(p, ctx, events, compression="none")
    data = bytearray(p.read_bytes())
    assert data.count(SYNC) > len(frame_table(p))  # markers inside payloads
    first = next(f for f in frame_table(p) if f[3] == FrameType.EVENTS)
    data[first[1] + 4] ^= 0x40  # damage the first events frame's type byte
    p.write_bytes(bytes(data))
    reader, recs = read_all(p)
    assert [(w.kind, w.frames) for w in reader.warnings] == [("corrupt_frame", (first[0], first[0]))]
    assert len([r for r in recs if isinstance(r, Event)]) == len(events) - first[4]


def test_writer_flushes_each_frame_so_a_reader_sees_it_before_close(tmp_path):
    ctx = make_context()
    p = tmp_path / "live.klog"
    w = KlogWriter(p, ctx.schema, host=HOST)
    w.write_events(sample_events(ctx, 5))
    reader, recs = read_all(p)  # while the writer is still open (a crash now loses nothing written)
    assert len(recs) == 5 and [x.kind for x in reader.warnings] == ["no_end"]
    w.close()
    reader, recs = read_all(p)
    assert len(recs) == 5 and not reader.warnings


def test_bad_writer_options_are_refused(tmp_path):
    ctx = make_context()
    with pytest.raises(ValueError, match="fsync"):
        KlogWriter(tmp_path / "a.klog", ctx.schema, fsync="sometimes")
    with pytest.raises(ValueError, match="compression"):
        KlogWriter(tmp_path / "b.klog", ctx.schema, compression="brotli")
