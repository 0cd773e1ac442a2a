"""Whole process, file to matches: ``kestrel eval`` against ``eql query`` side by side.

    .venv/bin/python benchmarks/process_bench.py                          # 300,000 events, 3 runs
    .venv/bin/python benchmarks/process_bench.py --events 300000,3000000 --runs 3
    .venv/bin/python benchmarks/process_bench.py --run --events 300000   # kestrel run, JSONL source, Linux pack

What a user runs: a fresh process reads a JSONL file and prints the matches.
Per stream size, benchmarks/generate.py writes the fleet stream once (cached
under ``--cache``, by size and seed) and an eql copy of it (the same objects
plus ``event_type`` = the first ``event.category`` and ``timestamp`` in
nanoseconds, which eql 1.0.1's ``query`` command reads events by; eql runs
with ``time_unit`` 10^9 so ``maxspan`` means seconds).  Each query runs
``--runs`` times per engine, the engines alternating, and the table gives
medians: wall seconds, peak RSS (the child's own ``ru_maxrss``), the match
count of each (sequences: eql prints a match as one line per event, counted
here as matches), and eql's time over Kestrel's (above 1: Kestrel is faster).

``--run`` measures ``kestrel run`` instead: a profile with the ``jsonl``
source on the same stream, the bundled Linux pack (rules/linux) and a JSONL
alert sink, as a user runs it (a fresh process, start-up included).  The
table gives medians of wall seconds, CPU seconds (user + system of the
child), peak RSS, events/s over the wall time and over the CPU time (what the
machine could do unshared), and the alert count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

QUERIES = {
    "single": ('process where process.name == "curl" and user.name == "root"', 1.5),
    "sequence": ('sequence by process.entity_id with maxspan=30s '
                 '[process where event.action == "exec" and process.name in ("curl", "wget", "bash")] '
                 '[network where event.action == "connection_attempted"] '
                 '[file where event.action == "creation"]', 5.0),
}
"""name -> (query, goal: eql wall time over Kestrel's)."""


def streams(n: int, seed: int, cache: Path, eql: bool = True) -> tuple[Path, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    ecs, eqlf = cache / f"stream-{n}-{seed}.jsonl", cache / f"stream-{n}-{seed}.eql.jsonl"
    if not ecs.exists():
        print(f"generating {n:,} events -> {ecs}", file=sys.stderr)
        tmp = ecs.with_suffix(".tmp")
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "generate.py"), "--events", str(n), "--seed",
                        str(seed), "--out", str(tmp)], check=True, stdout=subprocess.DEVNULL)
        tmp.rename(ecs)
    if eql and not eqlf.exists():
        tmp = eqlf.with_suffix(".tmp")
        with open(ecs, "rb") as src, open(tmp, "wb") as out:
            for line in src:
                rec = orjson.loads(line)
                rec["event_type"] = rec["event"]["category"][0]
                ts = datetime.fromisoformat(rec["@timestamp"].replace("Z", "+00:00"))
                rec["timestamp"] = int(ts.timestamp()) * 10**9 + ts.microsecond * 1000
                out.write(orjson.dumps(rec) + b"\n")
        tmp.rename(eqlf)
    return ecs, eqlf


def timed(argv: list[str]) -> tuple[float, float, bytes]:
    """(wall s, peak RSS MB, stdout) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} exited {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024, out


RUN_PROFILE = """[kestrel]
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


def timed_cpu(argv: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one child process whose output is not needed."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} exited {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_bench(args: argparse.Namespace) -> int:
    rows = []
    for n in (int(x) for x in args.events.split(",")):
        ecs, _eqlf = streams(n, args.seed, args.cache, eql=False)
        profile, alerts = args.cache / f"run-{n}.toml", args.cache / f"run-{n}.alerts.jsonl"
        profile.write_text(RUN_PROFILE.format(rules=ROOT / "rules" / "linux", stream=ecs, alerts=alerts))
        runs = [timed_cpu([str(VENV_BIN / "kestrel"), "run", "--profile", str(profile)]) for _ in range(args.runs)]
        wall = statistics.median(w for w, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        rss = statistics.median(r for _, _, r in runs)
        n_alerts = alerts.read_bytes().count(b"\n")
        rows.append([f"{n:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{rss:.0f}", f"{n / wall:,.0f}", f"{n / cpu:,.0f}",
                     f"{n_alerts:,}"])
        print(" | ".join(rows[-1]), file=sys.stderr)
    hdr = ["events", "wall s", "CPU s", "peak MB", "events/s (wall)", "events/s (CPU)", "alerts"]
    print(f"kestrel run, jsonl source, rules/linux, median of {args.runs}")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", default="300000", help="stream sizes, comma-separated (default 300000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "kestrel-process-bench")
    ap.add_argument("--queries", default=",".join(QUERIES), help="which of: " + ", ".join(QUERIES))
    ap.add_argument("--run", action="store_true", help="measure kestrel run (jsonl source, Linux pack) instead")
    args = ap.parse_args()
    if args.run:
        return run_bench(args)
    cfg = args.cache / "eql-config.json"
    args.cache.mkdir(parents=True, exist_ok=True)
    cfg.write_text('{"time_unit": 1000000000}')
    rows = []
    for n in (int(x) for x in args.events.split(",")):
        ecs, eqlf = streams(n, args.seed, args.cache)
        for name in args.queries.split(","):
            query, goal = QUERIES[name]
            kest = [str(VENV_BIN / "kestrel"), "eval", query, "--input", str(ecs)]
            peer = [str(VENV_BIN / "eql"), "query", query, "-c", str(cfg), "-f", str(eqlf)]
            k_runs, e_runs = [], []
            k_out = e_out = b""
            for _ in range(args.runs):
                w, r, k_out = timed(kest)
                k_runs.append((w, r))
                w, r, e_out = timed(peer)
                e_runs.append((w, r))
            k_matches = k_out.count(b"\n")
            steps = query.count("[")
            e_matches = e_out.count(b"\n") // (steps if name == "sequence" else 1)
            kw = statistics.median(w for w, _ in k_runs)
            ew = statistics.median(w for w, _ in e_runs)
            rows.append([f"{n:,}", name, f"{kw:.2f}", f"{statistics.median(r for _, r in k_runs):.0f}",
                         f"{ew:.2f}", f"{statistics.median(r for _, r in e_runs):.0f}", f"{ew / kw:.2f}x",
                         f"{goal:g}x", f"{k_matches:,} / {e_matches:,}"])
            print(" | ".join(rows[-1]), file=sys.stderr)
    hdr = ["events", "query", "kestrel s", "kestrel MB", "eql s", "eql MB", "eql s / kestrel s", "goal",
           "matches kestrel / eql"]
    print(f"whole process, median of {args.runs} (wall seconds, peak RSS MB)")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
