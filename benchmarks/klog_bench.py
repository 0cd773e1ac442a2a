"""Throughput and size of the .klog event log, per compression codec.

Events come from the seeded fleet generator (benchmarks/generate.py),
normalized once up front; the timings cover only the log:

* write: ``KlogWriter.write_events`` in pipeline-sized batches, to a file
  (flushed per frame), events without a source document (a live source);
* write+doc: the same events keeping their JSONL document (``kestrel record
  --input``: stores what lossless export needs);
* read: ``KlogReader`` back into ``Event`` objects (replay);
* read+doc: also rebuilding each source document (``kestrel export``).

It also compares msgpack with orjson as the frame payload encoding.

    .venv/bin/python benchmarks/klog_bench.py [--events 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.generate import generate  # noqa: E402
from kestrel_core.klog import KlogReader, KlogWriter  # noqa: E402
from kestrel_core.normalize import EcsJsonNormalizer  # noqa: E402
from kestrel_core.testing import make_context  # noqa: E402

CODECS = ("none", "zlib", "zstd", "lz4")
CLOCK = time.perf_counter


COMPACT_FIELDS = ("@timestamp", "event.category", "event.type", "event.action", "host.name", "process.pid",
                  "process.entity_id", "process.name", "process.executable", "process.args", "process.parent.pid",
                  "user.id", "file.path", "destination.ip", "destination.port")
"""What a live eBPF/fanotify event carries (the fleet generator adds host OS,
parent details, ...: ~29 fields)."""


def compact(doc: dict) -> dict:
    from kestrel_core.klog.format import _nest
    from kestrel_core.normalize import flatten

    flat = flatten(doc)
    return _nest((k.split("."), flat[k]) for k in COMPACT_FIELDS if k in flat)


def normalized(n: int, seed: int, shape: str) -> tuple[Any, list]:
    ctx = make_context()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), ctx)
    docs = generate(n, seed=seed)
    if shape == "compact":
        docs = [compact(d) for d in docs]
    return ctx, [norm.normalize(doc, "bench") for doc in docs]


def best(repeat: int, fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def write(path: str, ctx: Any, events: list, codec: str, batch: int = 256) -> None:
    with KlogWriter(path, ctx.schema, compression=codec, fsync="never") as w:
        for i in range(0, len(events), batch):
            w.write_events(events[i:i + batch])


def read(path: str, documents: bool) -> int:
    with KlogReader(path, documents=documents) as r:
        return sum(len(b) for b in r.batches() if b.__class__ is list)


def payload_encodings(events: list) -> list[tuple[str, float, float]]:
    """msgpack vs orjson for one frame's rows (encode+decode, events/s)."""
    import msgpack
    import orjson

    rows = [[e.category, e.ts_mono_ns, e.ts_wall_ns, e.event_id, e.entity_key & (2**63 - 1), 0,
             {str(k): v for k, v in e.fields.items()}, None] for e in events[:512]]
    int_rows = [r[:6] + [dict((int(k), v) for k, v in r[6].items()), None] for r in rows]
    frames = max(1, 20_000 // len(rows))
    out = []
    for name, enc, dec, data in (
        ("msgpack", msgpack.packb, lambda b: msgpack.unpackb(b, strict_map_key=False), int_rows),
        ("orjson", orjson.dumps, orjson.loads, rows),  # JSON keys must be strings: ids come back as str
    ):
        t0 = CLOCK()
        for _ in range(frames):
            blob = enc(data)
        t1 = CLOCK()
        for _ in range(frames):
            dec(blob)
        t2 = CLOCK()
        n = frames * len(rows)
        out.append((name, n / (t1 - t0), n / (t2 - t1), len(blob) / len(rows)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--shapes", default="fleet,compact", help="fleet (~29 fields/event), compact (~13)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this process's CPU time (steadier when other jobs share the machine)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    for shape in args.shapes.split(","):
        bench_shape(args, shape)
    return 0


def bench_shape(args: argparse.Namespace, shape: str) -> None:
    ctx, events = normalized(args.events, args.seed, shape)
    bare = [type(e)(e.category, e.fields, e.ts_mono_ns, e.ts_wall_ns, e.event_id, e.entity_key, e.source_id)
            for e in events]
    n = len(events)
    # The GC settings of a run (pipeline.Run.execute) and of a replay: freeze
    # what start-up built and collect young objects less often.  With
    # Python's defaults the collector rescans the events read so far again
    # and again, and costs more than the log itself.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    nfields = sum(len(e.fields) for e in events) / n
    print(f"klog, {shape} events ({nfields:.1f} fields/event): {n:,} events, best of {args.repeat}, "
          f"{args.clock} clock, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'codec':<6} {'write ev/s':>11} {'write+doc':>11} {'read ev/s':>11} {'read+doc':>11} "
          f"{'B/event':>8} {'B/ev+doc':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for codec in args.codecs.split(","):
            p, pd = os.path.join(tmp, f"{codec}.klog"), os.path.join(tmp, f"{codec}-doc.klog")
            try:
                tw = best(args.repeat, lambda: write(p, ctx, bare, codec))
            except ImportError as exc:
                print(f"{codec:<6} unavailable: {exc}")
                continue
            twd = best(args.repeat, lambda: write(pd, ctx, events, codec))
            tr = best(args.repeat, lambda: read(p, False))
            trd = best(args.repeat, lambda: read(pd, True))
            print(f"{codec:<6} {n / tw:>11,.0f} {n / twd:>11,.0f} {n / tr:>11,.0f} {n / trd:>11,.0f} "
                  f"{os.path.getsize(p) / n:>8.1f} {os.path.getsize(pd) / n:>9.1f}")
    print()
    print("frame payload encoding (512-event frames, no compression):")
    print(f"{'codec':<8} {'encode ev/s':>12} {'decode ev/s':>12} {'B/event':>8}")
    for name, enc, dec, size in payload_encodings(bare):
        print(f"{name:<8} {enc:>12,.0f} {dec:>12,.0f} {size:>8.1f}")
    print()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


if __name__ == "__main__":
    sys.exit(main())
