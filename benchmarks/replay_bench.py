"""Whole-process ``kestrel replay`` on large logs: wall time and peak RSS.

A base stream of ``--base`` events (benchmarks/generate.py) is recorded with
``kestrel record --input``; a log of ``--events`` events is then written by
repeating the base events, each repetition shifted later in time and in event
id (so the log stays time ordered and ids unique), frame by frame: nothing
holds the big log in memory.  ``--skewed`` also writes a log of the same
events whose frames are out of time order (two sources interleaved, one
lagging), which takes the sort path.  Logs are cached under ``--cache``.

    python benchmarks/replay_bench.py --events 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.generate import Generator, strip_private  # noqa: E402
from kestrel_core.klog import KlogReader, KlogWriter  # noqa: E402

PACK = ROOT / "rules" / "linux"


def kestrel(*args: str) -> list[str]:
    return [sys.executable, "-m", "kestrel_core", *args]


def base_log(cache: Path, n: int) -> Path:
    out = cache / f"base-{n}.klog"
    if out.exists():
        return out
    jsonl = cache / f"base-{n}.jsonl"
    with open(jsonl, "w") as f:
        for ev in Generator(seed=7, hosts=500).generate(n):
            f.write(json.dumps(strip_private(ev), separators=(",", ":")) + "\n")
    subprocess.run(kestrel("record", "--input", str(jsonl), "-o", str(out)), check=True, capture_output=True)
    return out


def big_log(cache: Path, base: Path, n: int, skewed: bool) -> Path:
    out = cache / f"replay-{n}{'-skewed' if skewed else ''}.klog"
    if out.exists():
        return out
    with KlogReader(base, documents=True) as reader:
        events = list(reader.records())
        schema = reader.schema
    span = events[-1].ts_mono_ns - events[0].ts_mono_ns + 1_000_000_000
    tmp = out.with_suffix(".tmp")
    lag = 20_000  # events source b's frames trail source a's by when skewed
    with KlogWriter(tmp, schema) as w:
        pending_b: list = []
        chunk: list = []
        written = rep = 0
        while written < n:
            for e in events[:n - written]:
                e2 = e.__class__(e.category, e.fields, e.ts_mono_ns + rep * span, e.ts_wall_ns + rep * span,
                                 e.event_id + rep * len(events), e.entity_key, e.source_id, e.raw)
                if skewed:
                    e2.source_id = "b" if e2.event_id % 2 else "a"
                    if e2.source_id == "b":
                        pending_b.append(e2)
                        continue
                chunk.append(e2)
                if len(chunk) == 512:  # a frame as the recorder writes them
                    w.write_events(chunk)
                    chunk = []
                if len(pending_b) > lag:
                    w.write_events(pending_b[:512])
                    del pending_b[:512]
            written += min(len(events), n - written)
            rep += 1
        w.write_events(chunk)
        w.write_events(pending_b)
    tmp.rename(out)
    return out


def measure(log: Path, budget: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(kestrel("replay", str(log), "--rules", str(PACK), "--memory-budget", str(budget),
                                    "-o", os.devnull), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        raise SystemExit(f"replay of {log} failed:\n{err}")
    m = re.search(r"replay order: (\w+) path \((\d+) pass\(es\), (\d+) run", err)
    ev = re.search(r"replayed (\d+) events: (\d+) alerts", err)
    return {"events": int(ev.group(1)), "alerts": int(ev.group(2)), "wall_s": round(wall, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "path": m.group(1), "runs": int(m.group(3))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--base", type=int, default=20_000)
    ap.add_argument("--budget", type=float, default=64, help="--memory-budget MB of the replays")
    ap.add_argument("--skewed", action="store_true", help="also replay a log whose frames are out of time order")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/kestrel-replay-bench"))
    a = ap.parse_args(argv)
    a.cache.mkdir(parents=True, exist_ok=True)
    base = base_log(a.cache, a.base)
    rows = []
    for skewed in (False, True) if a.skewed else (False,):
        log = big_log(a.cache, base, a.events, skewed)
        rows.append({"log": log.name, "size_mb": round(log.stat().st_size / 2**20), **measure(log, a.budget)})
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
