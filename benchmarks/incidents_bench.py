"""What alert correlation costs: ``kestrel replay`` in-process with and
without ``--incidents``, on the demo capture and on generated logs
(benchmarks/generate.py, fleet of 500 hosts, its attack stories on), medians
of ``--repeat`` runs.  Prints a table: events, alerts, incidents, records,
replay wall time without and with incidents, the difference per event, the
exec-chain learning alone per event, and the correlator's process-table size.

    python benchmarks/incidents_bench.py --events 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.generate import Generator, strip_private  # noqa: E402
from kestrel_core.event import Gap  # noqa: E402
from kestrel_core.incidents import Correlator  # noqa: E402
from kestrel_core.klog import KlogReader  # noqa: E402
from kestrel_core.plugins import rules_schema  # noqa: E402
from kestrel_core.replay import replay  # noqa: E402

PACK = ROOT / "rules" / "linux"
DEMO = ROOT / "demo" / "capture.klog"


def generated_log(cache: Path, n: int) -> Path:
    out = cache / f"incidents-{n}.klog"
    if out.exists():
        return out
    jsonl = cache / f"incidents-{n}.jsonl"
    with open(jsonl, "w") as f:
        for ev in Generator(seed=7, hosts=500).generate(n):
            f.write(json.dumps(strip_private(ev), separators=(",", ":")) + "\n")
    subprocess.run([sys.executable, "-m", "kestrel_core", "record", "--input", str(jsonl), "-o", str(out)],
                   check=True, capture_output=True)
    jsonl.unlink()
    return out


def measure(log: Path, repeat: int) -> dict:
    walls: dict[bool, list[float]] = {False: [], True: []}
    result: dict = {}
    replay([log], [PACK], io.BytesIO())  # warm-up: imports, rule compilation caches
    for _ in range(repeat):
        for on in (False, True):
            out = io.BytesIO()
            t0 = time.perf_counter()
            res = replay([log], [PACK], out, incidents=on)
            walls[on].append(time.perf_counter() - t0)
            if on:
                result = {"events": res.footer["counts"]["events"], "alerts": res.footer["counts"]["alerts"],
                          "incidents": res.footer["incidents"].get("closed", 0),
                          "records": out.getvalue().count(b'{"incident":')}
    off, on = statistics.median(walls[False]), statistics.median(walls[True])
    result.update(off_s=off, on_s=on, delta_us_per_event=(on - off) / max(1, result["events"]) * 1e6)
    # the exec-chain learning alone (every event goes through it), and the table it leaves
    with KlogReader(log, rules_schema()) as reader:
        batches = [b for b in reader.batches() if b.__class__ is not Gap]
        schema = reader.schema
    times = []
    for _ in range(repeat):
        c = Correlator(schema)
        t0 = time.perf_counter()
        for b in batches:
            c.observe(b)
        times.append(time.perf_counter() - t0)
    result.update(observe_us_per_event=statistics.median(times) / max(1, result["events"]) * 1e6,
                  processes=len(c.procs))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="*", default=[50_000, 200_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/kestrel-bench"))
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    logs = [("demo capture", DEMO)] + [(f"generated {n:,}", generated_log(args.cache, n)) for n in args.events]
    head = (f"{'log':<18} {'events':>9} {'alerts':>7} {'incidents':>9} {'records':>8} {'off s':>7} {'on s':>7} "
            f"{'+us/event':>9} {'observe us':>10} {'procs':>8}")
    print(head)
    print("-" * len(head))
    for name, log in logs:
        r = measure(log, args.repeat)
        print(f"{name:<18} {r['events']:>9,} {r['alerts']:>7,} {r['incidents']:>9,} {r['records']:>8,} "
              f"{r['off_s']:>7.2f} {r['on_s']:>7.2f} {r['delta_us_per_event']:>9.2f} {r['observe_us_per_event']:>10.2f} "
              f"{r['processes']:>8,}")
    print(f"(medians of {args.repeat} in-process replays each; off: without --incidents; observe us: the exec-chain "
          "learning alone per event; procs: processes in the correlator's table at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
