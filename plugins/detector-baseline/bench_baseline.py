"""Cost per event of the baseline detector alone, on a .klog (default: the
demo capture): the events are read once, then fed in 1,024-event batches to
a fresh detector, ``--repeat`` times; prints the best time per event, the
alerts by kind and the learned size.

    .venv/bin/python plugins/detector-baseline/bench_baseline.py [LOG] [--warmup 10m] [--repeat 5]
    .venv/bin/python plugins/detector-baseline/bench_baseline.py --generate 200000 --warmup 20000

``--generate N``: instead of a log, N events (fixed seed) from 50 hosts with
a stable repertoire (12 programs, their children, peers and paths with
per-event pids, temp names and ids), and one deviation per host after its
warm-up (a new child, peer or path, by turns); ``--warmup`` is then an
event count per host.
"""

from __future__ import annotations

import argparse
import collections
import random
import time
from pathlib import Path

from kestrel_core.event import Event
from kestrel_core.klog.format import KlogReader
from kestrel_core.plugins import rules_schema
from kestrel_core.runtime import RunContext
from kestrel_detector_baseline import BaselineDetector

ROOT = Path(__file__).resolve().parents[2]


def generate(schema, n: int, warmup: int) -> list[Event]:
    rnd = random.Random(17)
    ids = {p: schema.resolve(p) for p in ("host.name", "event.action", "process.name", "process.args",
                                         "process.parent.name", "destination.ip", "destination.port", "file.path")}
    progs = [f"prog{i}" for i in range(12)]
    hosts = [f"host-{i:02d}" for i in range(50)]
    out, t = [], 1_767_600_000 * 10**9
    per_host = collections.Counter()
    for i in range(n):
        host = hosts[i % len(hosts)]
        per_host[host] += 1
        late = per_host[host] == warmup + 50  # one deviation of each kind per host, after its warm-up
        prog = rnd.choice(progs)
        kind = i % 3
        t += 1_000_000
        if kind == 0:
            child = "intruder" if late else progs[(progs.index(prog) + 1) % len(progs)]
            fields = {ids["host.name"]: host, ids["event.action"]: "exec", ids["process.name"]: child,
                      ids["process.parent.name"]: prog,
                      ids["process.args"]: [child, "--pid", str(rnd.randint(1, 99999)), f"/tmp/job{rnd.random()}"]}
            out.append(Event("process", fields, t, t, i + 1))
        elif kind == 1:
            ip = "203.0.113.66" if late else f"10.0.{progs.index(prog)}.{rnd.randint(1, 3)}"
            fields = {ids["host.name"]: host, ids["process.name"]: prog, ids["destination.ip"]: ip,
                      ids["destination.port"]: 443}
            out.append(Event("network", fields, t, t, i + 1))
        else:
            path = "/root/.ssh/authorized_keys" if late else f"/var/lib/{prog}/{rnd.randint(1, 9999)}/data.db"
            fields = {ids["host.name"]: host, ids["process.name"]: prog, ids["file.path"]: path}
            out.append(Event("file", fields, t, t, i + 1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log", nargs="?", default=str(ROOT / "demo" / "capture.klog"))
    ap.add_argument("--warmup", default="10m")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--generate", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="Do not list the alerts.")
    args = ap.parse_args()
    schema = rules_schema()
    if args.generate:
        events = generate(schema, args.generate, int(args.warmup))
        settings = dict(warmup="", warmup_events=int(args.warmup))
    else:
        with KlogReader(args.log, schema) as reader:
            events = [e for b in reader.batches() if isinstance(b, list) for e in b]
        events.sort(key=lambda e: (e.ts_mono_ns, e.event_id))
        settings = dict(warmup=args.warmup)
    best = float("inf")
    for _ in range(args.repeat):
        det = BaselineDetector(BaselineDetector.Settings(snapshot="", **settings), RunContext(schema=schema))
        det.open()
        alerts = []
        t0 = time.process_time()
        for i in range(0, len(events), 1024):
            alerts.extend(det.process(events[i:i + 1024]))
        alerts.extend(det.flush())
        best = min(best, time.process_time() - t0)
    kinds = collections.Counter(a.rule_id for a in alerts)
    nodes = sum(s.nodes for s in det.scopes.values())
    print(f"{len(events):,} events, {len(det.scopes)} scopes, {nodes:,} nodes; best of {args.repeat}: "
          f"{best * 1e3:.1f} ms CPU, {best / len(events) * 1e6:.2f} us/event; alerts {dict(sorted(kinds.items()))}")
    for a in [] if args.quiet else alerts:
        print(f"  {a.fields['host.name']}: {a.fields['baseline.reason']}")


if __name__ == "__main__":
    main()
