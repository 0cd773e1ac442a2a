"""sources-ebpf: ring buffer ceiling, ring buffer -> alert throughput, push-down.

    .venv/bin/python benchmarks/ebpf_bench.py [--opens N] [--seconds S]

Needs root, bcc and the merged kernel headers (plugins/sources-ebpf/scripts/install.sh).
One compiled program set is shared by every phase of the run:

1. ceiling: a C loop opens and closes a file ``--opens`` times; the ring
   buffer callback only counts.  Records/s delivered to Python (and records
   the kernel counted as lost) while the loop runs.
2. pipeline: the same load through a real ``Run``: the ebpf source (push-down
   off, so every open reaches Python), the bundled ``rules/linux`` pack and a
   JSONL alert sink; every 10,000th open reads /etc/shadow, which the pack
   alerts on.  Events/s processed by the engine, alerts, losses.
3. push-down: a mixed shell workload (ls, cat, python imports, a compile)
   run once with every kind enabled and once with the plan the default pack
   computes; records that reached Python in each case.

Prints a table; the numbers in plugins/sources-ebpf/README.md come from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RING_PAGES = 16384  # 64 MiB: room for a whole drain measurement
RULES = REPO / "rules" / "linux"

FLOOD_C = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    for (long i = 0; i < n; i++) {
        int fd = open(i % 10000 == 9999 ? "/etc/shadow" : argv[2], O_RDONLY);
        if (fd >= 0) close(fd);
    }
    return 0;
}
"""

WORKLOAD = """
for i in $(seq 100); do ls /usr/lib > /dev/null; cat /etc/hostname /etc/passwd > /dev/null; done
python3 -c 'import json, email, http.client, decimal, sqlite3' 
printf 'int main(void){return 0;}' > "$D/t.c" && gcc -o "$D/t" "$D/t.c" && "$D/t"
echo x > "$D/f"; chmod 600 "$D/f"; mv "$D/f" "$D/g"; rm "$D/g"
"""


DRAIN_FILL = 40_000
"""Opens per drain measurement (records of 664 bytes: ~26 MB, inside the 64 MiB ring)."""


def build_flood(workdir: Path) -> list[str]:
    src, exe = workdir / "flood.c", workdir / "flood"
    src.write_text(FLOOD_C)
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return [str(exe)]


def ceiling(program, flood: list[str], opens: int, target: Path) -> dict:
    from kestrel_sources_ebpf.kinds import BY_NAME
    from kestrel_sources_ebpf.plan import Plan

    count = [0]

    def on_record(_ctx, _data, _size):
        count[0] += 1

    program.open_ring(lambda _c, _d, _s: None)
    program.consume()
    program.open_ring(on_record)
    program.configure(Plan(frozenset({BY_NAME["open_read"].code})))
    program.take_loss()
    t0 = time.perf_counter()
    proc = subprocess.Popen(flood + [str(opens), str(target)])
    while proc.poll() is None:
        program.poll(50)
    program.consume()
    elapsed = time.perf_counter() - t0
    lost, _, _ = program.take_loss()
    sustained = {"delivered": count[0], "lost": lost, "seconds": elapsed, "rate": count[0] / elapsed}
    # Drain rate: fill the ring while nobody reads, then time reading it out.
    best = None
    for _ in range(5):
        count[0] = 0
        subprocess.run(flood + [str(DRAIN_FILL), str(target)], check=True)
        t0 = time.perf_counter()
        program.consume()
        dt = time.perf_counter() - t0
        lost, _, _ = program.take_loss()
        rate = count[0] / dt
        if best is None or rate > best["rate"]:
            best = {"delivered": count[0], "lost": lost, "seconds": dt, "rate": rate}
    program.configure(Plan(frozenset()))
    return {"sustained": sustained, "drain": best}


def pipeline(program, flood: list[str], opens: int, target: Path, workdir: Path) -> dict:
    from kestrel_core.cli import load_profile
    from kestrel_core.pipeline import Run

    profile_path = workdir / "bench.toml"
    profile_path.write_text(f'''
[kestrel]
plugins = ["sources-ebpf"]
log_level = "error"
[rules]
paths = ["{RULES}"]
[[sources]]
type = "ebpf"
pushdown = false
[[sinks]]
type = "jsonl"
path = "{workdir / 'alerts.jsonl'}"
''')
    profile, host = load_profile(profile_path)
    job = Run.build(profile, host)
    src = job.sources[0][0]
    src.program = program
    job.open()
    runner = threading.Thread(target=job.execute, daemon=True)
    runner.start()
    while not src.ready.is_set():
        time.sleep(0.01)
    stats = job.context.stats
    bal = stats.balance()
    base = bal["processed"] + bal["dropped"] - src.emitted
    t0 = time.perf_counter()
    proc = subprocess.run(flood + [str(opens), str(target)], check=True)
    del proc
    # wait until the engine has caught up with what the source received
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        bal = stats.balance()
        if bal["processed"] + bal["dropped"] - base >= src.emitted:
            break
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    processed = src.emitted
    job.request_stop("bench")
    runner.join(60)
    with open(workdir / "alerts.jsonl") as fh:
        alerts = sum(1 for _ in fh)
    return {"processed": processed, "lost": src.lost, "alerts": alerts, "seconds": elapsed,
            "rate": processed / elapsed}


def pushdown(program, workdir: Path) -> dict:
    from kestrel_sources_ebpf.plan import ALL, plan_for

    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.rules import load_rule_pack
    from kestrel_core.schema import Schema

    rules, _errors = load_rule_pack([RULES])
    pack_plan = plan_for(DetectionEngine(Schema.ecs(), rules).interest())
    out = {}
    for name, plan in (("all kinds", ALL), ("default pack", pack_plan)):
        count = [0]

        def on_record(_ctx, _data, _size, count=count):
            count[0] += 1

        program.open_ring(lambda _c, _d, _s: None)
        program.consume()
        program.open_ring(on_record)
        before = sum(program.filtered_counts().values())
        program.configure(plan)
        env = dict(os.environ, D=str(workdir))
        proc = subprocess.Popen(["/bin/sh", "-c", WORKLOAD], env=env, stdout=subprocess.DEVNULL)
        while proc.poll() is None:
            program.poll(50)
        program.poll(50)
        program.consume()
        program.configure(type(plan)(frozenset()))
        out[name] = {"received": count[0], "kernel_filtered": sum(program.filtered_counts().values()) - before}
    out["plan"] = pack_plan.describe()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--opens", type=int, default=1_000_000)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "plugins" / "sources-ebpf"))
    from kestrel_sources_ebpf.program import Program
    from kestrel_sources_ebpf.source import probe_host

    probe = probe_host()
    if not probe.available:
        sys.exit(f"ebpf_bench: the eBPF source cannot run here: {probe.reason}")
    with tempfile.TemporaryDirectory(prefix="kestrel-ebpf-bench-") as tmp:
        workdir = Path(tmp)
        flood = build_flood(workdir)
        target = workdir / "target"
        target.write_text("x")
        t0 = time.perf_counter()
        program = Program(ringbuf_pages=RING_PAGES)
        load_s = time.perf_counter() - t0
        try:
            ceil = ceiling(program, flood, args.opens, target)
            pipe = pipeline(program, flood, args.opens, target, workdir)
            push = pushdown(program, workdir)
        finally:
            program.close()
    print(f"sources-ebpf benchmark  (kernel {os.uname().release}, {os.cpu_count()} CPUs, "
          f"compile+load {load_s:.1f} s, ring buffer {RING_PAGES * 4 // 1024} MiB)")
    print()
    print(f"{'phase':<44}{'records':>11}{'lost':>10}{'seconds':>9}{'per second':>13}")
    sus, drain = ceil["sustained"], ceil["drain"]
    print(f"{'ring buffer, count-only, during the flood':<44}{sus['delivered']:>11,}{sus['lost']:>10,}"
          f"{sus['seconds']:>9.2f}{sus['rate']:>13,.0f}")
    print(f"{'ring buffer ceiling: count-only drain':<44}{drain['delivered']:>11,}{drain['lost']:>10,}"
          f"{drain['seconds']:>9.2f}{drain['rate']:>13,.0f}")
    print(f"{'ring buffer -> alert, default pack':<44}{pipe['processed']:>11,}{pipe['lost']:>10,}"
          f"{pipe['seconds']:>9.2f}{pipe['rate']:>13,.0f}")
    print(f"  alerts raised: {pipe['alerts']:,}; pipeline / drain ceiling = {pipe['rate'] / drain['rate']:.2f}")
    print()
    allk, pack = push["all kinds"], push["default pack"]
    kept = 1 - pack["received"] / allk["received"] if allk["received"] else 0.0
    print(f"{'push-down, mixed shell workload':<44}{'to Python':>11}{'path-filtered in kernel':>25}")
    print(f"{'  every kind enabled':<44}{allk['received']:>11,}{allk['kernel_filtered']:>25,}")
    print(f"{'  default pack plan':<44}{pack['received']:>11,}{pack['kernel_filtered']:>25,}")
    print(f"  kept out of user space by push-down: {kept:.1%}")
    print(f"  plan: {push['plan']}")


if __name__ == "__main__":
    main()
