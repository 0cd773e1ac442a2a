"""Enforcement decision-path latency (root only).

    .venv/bin/python benchmarks/enforce_bench.py [--opens N] [--execs N] [--connects N]

* fanotify deny path: a child times each open+close (``perf_counter_ns``) of
  files in a directory, with no fanotify group, then under the enforcement
  policy (``FanotifyDenyPath.decide`` via the sources-fanotify responder; an
  inode mark on the directory, 1000 protected paths) for allowed files and
  for protected files (EPERM).  Also the policy's own time per call and the
  responder's read-to-answer P50/P99.
* kill-at-exec: fork+exec+wait of /bin/true, timed in a child, with no
  program, with the program loaded and empty maps, and with 1000 denied paths
  and 1000 armed (other) tgids: the map-lookup overhead on every exec.
* inline decisions (rules decide in the responder, issue 6): opens and
  execs under an inode mark, the policy being :class:`InlinePolicy` over 50
  enforce-mode rules (deny-open on literal paths, deny-exec on wildcards):
  each event becomes an ECS record (/proc read) and runs through the inline
  engine.  Allowed and denied (EPERM) opens, denied execs, the policy's own
  time and the responder's read-to-answer P50/P99; also arm+disarm of a tgid
  (sequence-armed blocking) through the enforcer.
* cgroup connect: connect+close to a local listener from a child in a
  cgroup2 directory, without and with the connect program (100 denied
  destinations, none matching).

Prints a table (µs); ``--json`` prints the numbers as JSON too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kestrel_core.rules import Rule
from kestrel_core.schema import Schema

from kestrel_actions_enforce.connect import CgroupConnectPath, cgroup2_root
from kestrel_actions_enforce.enforcer import Enforcer
from kestrel_actions_enforce.execkill import ExecKillPath
from kestrel_actions_enforce.fanotify_deny import FanotifyDenyPath
from kestrel_actions_enforce.inline import InlinePolicy

CHILD_OPENS = """
import json, os, sys, time
paths = open(sys.argv[1][1:]).read().split("\\n") if sys.argv[1].startswith("@") else sys.argv[1:]
lat = []
for p in paths:
    t = time.perf_counter_ns()
    try:
        os.close(os.open(p, os.O_RDONLY))
    except PermissionError:
        pass
    lat.append(time.perf_counter_ns() - t)
print(json.dumps(lat))
"""

CHILD_EXECS = """
import json, os, sys, time
n = int(sys.argv[1])
lat = []
for _ in range(n):
    t = time.perf_counter_ns()
    pid = os.posix_spawn("/bin/true", ["true"], os.environ)
    os.waitpid(pid, 0)
    lat.append(time.perf_counter_ns() - t)
print(json.dumps(lat))
"""

CHILD_EXEC_PATH = """
import json, os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
lat = []
for _ in range(n):
    t = time.perf_counter_ns()
    try:
        pid = os.posix_spawn(path, [path], os.environ)
        os.waitpid(pid, 0)
    except PermissionError:
        pass
    lat.append(time.perf_counter_ns() - t)
print(json.dumps(lat))
"""

CHILD_CONNECTS = """
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lat = []
for _ in range(n):
    s = socket.socket()
    t = time.perf_counter_ns()
    s.connect((host, port))
    lat.append(time.perf_counter_ns() - t)
    s.close()
print(json.dumps(lat))
"""


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def opens(paths: list[str]) -> list[float]:
    """CHILD_OPENS over ``paths``, handed over in a file (not argv: the inline
    path reads the opener's /proc/<pid>/cmdline)."""
    with tempfile.NamedTemporaryFile("w", prefix="kestrel-bench-paths-", dir="/dev/shm", delete=False) as fh:
        fh.write("\n".join(paths))
    try:
        return child(CHILD_OPENS, "@" + fh.name)
    finally:
        os.unlink(fh.name)


def child(code: str, *args: str, cgroup: str | None = None) -> list[float]:
    def enter() -> None:
        if cgroup:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                fh.write("0")

    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                         preexec_fn=enter)
    return [x / 1000 for x in json.loads(out.stdout)]


def bench_fanotify(n: int, rows: list[tuple[str, float, float, int]]) -> None:
    with tempfile.TemporaryDirectory(prefix="kestrel-enforce-bench-") as d:
        files = [os.path.join(d, f"f{i}") for i in range(200)]
        for f in files:
            Path(f).touch()
        seq = [files[i % len(files)] for i in range(n)]
        base = opens(seq)
        rows.append(("open, no fanotify group", pct(base, .5), pct(base, .99), len(base)))
        path = FanotifyDenyPath(marks=[(d, "inode")], budget_ms=50)
        path.install()
        for i in range(1000):
            path.deny_open(os.path.join(d, f"protected{i}"))
        protected = os.path.join(d, "protected0")
        Path(protected).touch()
        path.deny_open(protected)  # now with its inode
        timings = time_decisions(path)
        try:
            allowed = opens(seq)
            rows.append(("open, enforce policy, allowed", pct(allowed, .5), pct(allowed, .99), len(allowed)))
            responder = path._responder.latency_percentiles()
            denied = opens([protected] * max(1, n // 4))
            rows.append(("open, enforce policy, denied (EPERM)", pct(denied, .5), pct(denied, .99), len(denied)))
            rows.append(("  policy decide() per event", pct(timings, .5), pct(timings, .99), len(timings)))
            rows.append(("  responder read-to-answer (allowed)", responder["p50_us"], responder["p99_us"],
                         int(responder["samples"])))
        finally:
            path.close()


def time_decisions(path: FanotifyDenyPath) -> list[float]:
    """Wrap the path's policy so each decide() call's duration (µs) lands in the returned list."""
    timings: list[float] = []
    real = path.decide

    def timed(event):  # noqa: ANN001
        t = time.perf_counter_ns()
        try:
            return real(event)
        finally:
            timings.append((time.perf_counter_ns() - t) / 1000)

    path._responder.set_policy(timed)
    return timings


def inline_rules(d: str, n: int = 50) -> list[Rule]:
    rules = []
    for i in range(n):
        if i % 2:
            rules.append(Rule(id=f"open-{i}", name="open", mode="enforce", actions=("alert", "deny-open"),
                              query=f'file where file.path == "{d}/protected{i}"'))
        else:
            rules.append(Rule(id=f"exec-{i}", name="exec", mode="enforce", actions=("alert", "deny-exec"),
                              query=f'process where event.action == "exec" and process.executable : "{d}/bad{i}-*"'))
    return rules


def bench_inline(n: int, rows: list[tuple[str, float, float, int]]) -> None:
    with tempfile.TemporaryDirectory(prefix="kestrel-inline-bench-") as d:
        files = [os.path.join(d, f"f{i}") for i in range(200)]
        for f in files:
            Path(f).touch()
        protected = os.path.join(d, "protected1")
        Path(protected).touch()
        denied_binary = os.path.join(d, "bad0-x")
        shutil.copy("/bin/true", denied_binary)
        enforcer = Enforcer(None)
        policy = InlinePolicy(Schema.ecs(), enforcer, enforcing=True, budget_ms=50)
        policy.load(inline_rules(d))
        path = FanotifyDenyPath(marks=[(d, "inode")], budget_ms=50)
        path.install()
        path.inline = policy.decide
        timings = time_decisions(path)
        try:
            seq = [files[i % len(files)] for i in range(n)]
            allowed = opens(seq)
            rows.append(("open, inline rules (50), allowed", pct(allowed, .5), pct(allowed, .99), len(allowed)))
            responder = path._responder.latency_percentiles()
            rows.append(("  policy decide() per event (inline)", pct(timings, .5), pct(timings, .99), len(timings)))
            rows.append(("  responder read-to-answer (inline)", responder["p50_us"], responder["p99_us"],
                         int(responder["samples"])))
            denied = opens([protected] * max(1, n // 4))
            rows.append(("open, inline rule denies (EPERM)", pct(denied, .5), pct(denied, .99), len(denied)))
            execs = child(CHILD_EXEC_PATH, denied_binary, str(max(1, n // 20)))
            rows.append(("exec, inline rule denies (EPERM)", pct(execs, .5), pct(execs, .99), len(execs)))
            outcomes = {k[3]: v for k, v in enforcer.decisions.items()}
            if not outcomes.get("denied"):
                raise SystemExit(f"inline rules denied nothing: {dict(enforcer.decisions)}")
        finally:
            path.close()
    arm = Enforcer(None, rungs=["kill-at-exec"])
    arm.start()
    try:
        lat = []
        for i in range(2000):
            t = time.perf_counter_ns()
            arm.arm("deny-exec", 4_100_000 + i, "bench")
            arm.disarm("deny-exec", 4_100_000 + i, "bench", reason="bench")
            lat.append((time.perf_counter_ns() - t) / 1000)
        rows.append(("arm + disarm a tgid (sequence-armed)", pct(lat, .5), pct(lat, .99), len(lat)))
    finally:
        arm.close()


def bench_exec(n: int, rows: list[tuple[str, float, float, int]]) -> None:
    base = child(CHILD_EXECS, str(n))
    rows.append(("exec /bin/true, no program", pct(base, .5), pct(base, .99), len(base)))
    path = ExecKillPath()
    path.install()
    try:
        empty = child(CHILD_EXECS, str(n))
        rows.append(("exec, kill-at-exec loaded, empty maps", pct(empty, .5), pct(empty, .99), len(empty)))
        for i in range(1000):
            path.deny_exec(f"/nonexistent/denied/binary-{i}")
            path.arm_pid(4_000_000 + i)  # tgids that do not exist
        full = child(CHILD_EXECS, str(n))
        rows.append(("exec, 1000 denied paths + 1000 armed", pct(full, .5), pct(full, .99), len(full)))
    finally:
        path.close()


def bench_connect(n: int, rows: list[tuple[str, float, float, int]]) -> None:
    root = cgroup2_root()
    if root is None:
        rows.append(("connect: no cgroup2 mount", 0.0, 0.0, 0))
        return
    cg = os.path.join(root, f"kestrel-bench-{os.getpid()}")
    os.makedirs(cg, exist_ok=True)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    host, port = srv.getsockname()
    import threading

    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        base = child(CHILD_CONNECTS, host, str(port), str(n), cgroup=cg)
        rows.append(("connect, no program", pct(base, .5), pct(base, .99), len(base)))
        path = CgroupConnectPath()
        path.install()
        try:
            for i in range(100):
                path.deny_connect(cg, f"10.99.{i // 250}.{i % 250 + 1}", 443)
            with_prog = child(CHILD_CONNECTS, host, str(port), str(n), cgroup=cg)
            rows.append(("connect, cgroup program, 100 denies", pct(with_prog, .5), pct(with_prog, .99),
                         len(with_prog)))
        finally:
            path.close()
    finally:
        stop.set()
        t.join()
        srv.close()
        os.rmdir(cg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--opens", type=int, default=20000)
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--connects", type=int, default=5000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("enforce_bench needs root (fanotify permission events, BPF programs)")
    rows: list[tuple[str, float, float, int]] = []
    bench_fanotify(args.opens, rows)
    bench_inline(args.opens, rows)
    bench_exec(args.execs, rows)
    bench_connect(args.connects, rows)
    width = max(len(r[0]) for r in rows)
    print(f"{'decision path':<{width}}  {'P50 µs':>9}  {'P99 µs':>9}  {'samples':>8}")
    for name, p50, p99, count in rows:
        print(f"{name:<{width}}  {p50:>9.1f}  {p99:>9.1f}  {count:>8}")
    if args.json:
        print(json.dumps([{"path": r[0], "p50_us": r[1], "p99_us": r[2], "samples": r[3]} for r in rows]))


if __name__ == "__main__":
    main()
