"""fanotify notification throughput and permission-responder latency (root only).

    .venv/bin/python benchmarks/fanotify_bench.py [--opens N] [--checked N]

On a private tmpfs (mounted and unmounted by the script):

* notifications: a child process opens and closes ``--opens`` distinct-file
  opens as fast as it can while a ``FanotifyNotifier`` (mount mark,
  FAN_OPEN, unlimited queue) reads them; events/s is events read over the
  time from the first open to the last event read.  Then the same with
  ``FanotifySource.records`` (ECS records with /proc process fields) on top.
* responder: a child times each of ``--checked`` opens (``perf_counter_ns``
  around open+close) with no group, then under a ``PermissionResponder``
  (FAN_OPEN_PERM, allow-all policy) and one whose policy checks a path set;
  the table shows P50/P99 per open as the opener sees it, and the
  responder's own read-to-answer P50/P99.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kestrel_core.testing import make_context
from kestrel_sources_fanotify import fanotify as fan
from kestrel_sources_fanotify.responder import PermissionResponder
from kestrel_sources_fanotify.source import FanotifySource

OPENER = """
import json, os, sys, time
root, n, files, timed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
paths = [os.path.join(root, f"f{i}") for i in range(files)]
lat = []
t0 = time.perf_counter_ns()
for i in range(n):
    s = time.perf_counter_ns()
    os.close(os.open(paths[i % files], os.O_RDONLY))
    if timed:
        lat.append(time.perf_counter_ns() - s)
total = time.perf_counter_ns() - t0
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else 0.0
print(json.dumps({"total_s": total / 1e9, "p50_us": pick(0.5), "p99_us": pick(0.99)}))
"""


def opener(root: Path, n: int, files: int, timed: bool) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", OPENER, str(root), str(n), str(files), "1" if timed else "0"],
                            stdout=subprocess.PIPE, text=True)


def bench_notifications(root: Path, n: int, files: int, with_records: bool) -> dict[str, float]:
    source = FanotifySource(FanotifySource.Settings(paths=[str(root)], mark="mount", events=["open"]),
                            make_context())
    got = records = 0
    with fan.FanotifyNotifier(fan.FAN_OPEN, [(str(root), "mount")], unlimited_queue=True) as notifier:
        t0 = time.perf_counter()
        child = opener(root, n, files, False)
        last = t0
        while True:
            events = notifier.read(0.5)
            if not events:
                if child.poll() is not None:
                    break
                continue
            got += len(events)
            if with_records:
                records += len(source.records(events))
            last = time.perf_counter()
        child.communicate()
        overflows = notifier.overflows
    elapsed = last - t0
    return {"opens": n, "events": got, "records": records, "events_per_s": got / elapsed, "overflows": overflows,
            "opens_per_s": n / elapsed}


def bench_responder(root: Path, n: int, files: int, policy: str | None) -> dict[str, float]:
    responder = None
    if policy == "allow-all":
        responder = PermissionResponder([(str(root), "mount")], events=["open"], budget_ms=50)
    elif policy == "path-set":
        protected = {str(root / f"protected{i}") for i in range(100)}
        responder = PermissionResponder([(str(root), "mount")], lambda ev: ev.path not in protected,
                                        events=["open"], budget_ms=50)
    try:
        child = opener(root, n, files, True)
        out = json.loads(child.communicate()[0])
        if responder is not None:
            stats = responder.stats()
            out["responder_p50_us"] = stats["p50_us"]
            out["responder_p99_us"] = stats["p99_us"]
            out["timeouts"] = stats["decisions"]["timeout"]
            out["answered"] = sum(stats["answers"].values())
    finally:
        if responder is not None:
            responder.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--opens", type=int, default=200_000, help="opens for the notification runs")
    ap.add_argument("--checked", type=int, default=20_000, help="opens for the responder runs")
    ap.add_argument("--files", type=int, default=20000, help="distinct files the opener cycles over")
    args = ap.parse_args()
    ok, reason = fan.probe("/", permission=True)
    if not ok:
        print(f"fanotify unavailable: {reason}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mnt"
        root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "kestrel-fan-bench", str(root)], check=True)
        try:
            for i in range(args.files):
                (root / f"f{i}").touch()
            rows = []
            for label, records in (("notifier.read", False), ("+ source.records (ECS, /proc)", True)):
                r = bench_notifications(root, args.opens, args.files, records)
                rows.append((label, r))
            print(f"\nfanotify notifications ({os.uname().release}, {os.cpu_count()} cpus, mount mark, FAN_OPEN)")
            print("(events < opens: the kernel merges opens of a file by one pid while an earlier one is queued)")
            print(f"{'reader':34} {'opens':>9} {'opens/s':>10} {'events':>9} {'events/s':>11} {'overflows':>9}")
            for label, r in rows:
                print(f"{label:34} {r['opens']:>9} {r['opens_per_s']:>10,.0f} {r['events']:>9} "
                      f"{r['events_per_s']:>11,.0f} {r['overflows']:>9}")
            print(f"\npermission responder (FAN_OPEN_PERM, {args.checked} opens, per open as the opener sees it)")
            print(f"{'policy':14} {'open P50 µs':>12} {'open P99 µs':>12} {'resp P50 µs':>12} {'resp P99 µs':>12}"
                  f" {'timeouts':>9}")
            base = None
            for policy in (None, "allow-all", "path-set"):
                r = bench_responder(root, args.checked, args.files, policy)
                if policy is None:
                    base = r
                print(f"{policy or 'none (no group)':14} {r['p50_us']:>12.1f} {r['p99_us']:>12.1f} "
                      f"{r.get('responder_p50_us', 0):>12.1f} {r.get('responder_p99_us', 0):>12.1f} "
                      f"{r.get('timeouts', 0):>9}")
            assert base is not None
        finally:
            subprocess.run(["umount", "-l", str(root)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
