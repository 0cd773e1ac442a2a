"""The agent's footprint: memory, CPU, wakeups, start time, with the default profile on eBPF.

    sudo .venv/bin/python benchmarks/agent_bench.py [--idle-s 60] [--load-s 20] [--rate 10000] [--starts 3]

For each way of loading the eBPF programs (``loader = "objects"``: compiled
once in a helper process and cached, loaded without bcc; ``loader = "bcc"``:
bcc compiling in the agent, the way it was), a real ``kestrel run`` of the
bundled default profile (eBPF source, the bundled Linux pack, console sink
to a file) is started as a subprocess:

* ready, cold and cached: ``--starts`` starts with an empty cache directory
  and ``--starts`` with the filled one; the source's own "programs ready in"
  figure and the time from exec to that log line (Python start-up and rule
  compilation included); medians.  bcc has no cache: each start compiles.
* idle: one more start, then ``--idle-s`` seconds with no load of ours
  (this shared machine's own activity still produces some events: counted);
  RSS at the end, CPU (utime+stime over the window, % of one CPU) and
  wakeups (context switches of all threads) per second.
* no events: the same agent with one rule no event on this host can match
  instead of the pack (push-down then sends nothing): its own timers alone.
* load: a paced generator opens an existing file for writing ``--rate``
  times a second for ``--load-s`` seconds (open_write events pass the
  default pack's push-down); RSS at the end, CPU of the agent, events it read.

``--enforce``: instead, the enforcement example profile
(profiles/enforce-example.toml: fanotify source, actions-enforce with its
kill-at-exec and cgroup-connect BPF rungs) with the action's ``loader`` set
to each of ``--loaders``: time from exec to the enforcer's last "via" line
(median of ``--starts``, the cache filled by the first), then RSS and CPU
after ``--idle-s`` seconds.

Prints one table (Markdown).  Needs root (real kernel).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_KESTREL = REPO / ".venv" / "bin" / "kestrel"
DEFAULT_PROFILE = REPO / "kestrel_core" / "data" / "default.toml"
READY = re.compile(r"ebpf: watching \(programs ready in ([0-9.]+) s: ([^)]*)\)")
STOPPED = re.compile(r"stopped \(\w+\): read (\d+)")
TICK = os.sysconf("SC_CLK_TCK")

GENERATOR = r"""
import os, sys, time
rate, secs, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
start = time.monotonic(); done = 0
while True:
    now = time.monotonic() - start
    if now >= secs:
        break
    target = int(now * rate)
    if done >= target:
        time.sleep(0.001)
        continue
    for _ in range(min(target - done, 1000)):
        os.close(os.open(path, os.O_WRONLY))
        done += 1
print(done)
"""


QUIET_RULE = """id = "bench.quiet"
name = "a module load (this kernel has no module support: no event ever reaches user space)"
description = "agent_bench: the agent with nothing to do, to measure its timers alone"
severity = "low"
query = 'driver where event.action == "load_module"'
"""


def profile_for(loader: str, where: Path, quiet: bool = False) -> Path:
    """The bundled default profile, with absolute paths and the given loader
    (``quiet``: one rule no event on this host can match instead of the pack)."""
    text = DEFAULT_PROFILE.read_text()
    data = DEFAULT_PROFILE.parent
    rules = data / "rules" / "linux"
    if quiet:
        rules = where / "quiet-rules"
        rules.mkdir(exist_ok=True)
        (rules / "quiet.toml").write_text(QUIET_RULE)
    text = text.replace('paths = ["rules/linux"]', f'paths = ["{rules}"]')
    text = text.replace('path = "demo.klog"', f'path = "{data / "demo.klog"}"')
    text = text.replace('type = "ebpf"\n', f'type = "ebpf"\nloader = "{loader}"\n', 1)
    if f'loader = "{loader}"' not in text:
        raise SystemExit(f"{DEFAULT_PROFILE}: no [[sources]] type = \"ebpf\" table to set the loader in")
    path = where / f"agent-{loader}{'-quiet' if quiet else ''}.toml"
    path.write_text(text)
    return path


class Agent:
    def __init__(self, profile: Path, cache: Path, log: Path) -> None:
        # As the systemd unit runs it: the rule compile cache next to the eBPF
        # one (filled by the first start), so a restart does not load the parser.
        env = dict(os.environ, KESTREL_EBPF_CACHE=str(cache), KESTREL_COMPILE_CACHE=str(cache / "compile"),
                   PYTHONUNBUFFERED="1")
        self.log_path = log
        self.log = open(log, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(VENV_KESTREL), "run", "--profile", str(profile)], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> tuple[float, float, str]:
        """(source's ready seconds, exec -> ready line seconds, how it loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = READY.search(self.log_path.read_text(errors="replace"))
            if m:
                return float(m.group(1)), time.monotonic() - self.started, m.group(2)
            if self.proc.poll() is not None:
                raise SystemExit(f"the agent exited ({self.proc.returncode}) before it was ready:\n"
                                 + self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.02)
        raise SystemExit(f"the agent was not ready within {timeout} s; log {self.log_path}")

    def sample(self) -> tuple[float, int, int, float]:
        """(cpu seconds, context switches of all threads, RSS kB, time)."""
        pid = self.proc.pid
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)
        switches = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
            except OSError:  # a thread that ended meanwhile
                continue
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return cpu, switches, rss, time.monotonic()

    def stop(self) -> int:
        """SIGINT, wait; the events the run read (its stop line)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        m = STOPPED.search(self.log_path.read_text(errors="replace"))
        return int(m.group(1)) if m else -1


def window(agent: Agent, seconds: float) -> dict[str, float]:
    c0, s0, _, t0 = agent.sample()
    time.sleep(seconds)
    c1, s1, rss, t1 = agent.sample()
    return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "wakeups": (s1 - s0) / (t1 - t0), "rss_mb": rss / 1024}


def measure(loader: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    profile = profile_for(loader, tmp)
    cache = tmp / f"cache-{loader}"
    out: dict[str, object] = {"loader": loader}
    cold, cached = [], []
    for i in range(args.starts):
        for d in cache.glob("*.json"):
            d.unlink()
        a = Agent(profile, cache, tmp / f"{loader}-cold-{i}.log")
        cold.append(a.wait_ready()[:2])
        how = a.wait_ready()[2]
        a.stop()
        a = Agent(profile, cache, tmp / f"{loader}-cached-{i}.log")
        cached.append(a.wait_ready()[:2])
        out["how_cached"] = a.wait_ready()[2]
        a.stop()
    out["how_cold"] = how
    out["ready_cold"] = tuple(statistics.median(x[j] for x in cold) for j in (0, 1))
    out["ready_cached"] = tuple(statistics.median(x[j] for x in cached) for j in (0, 1))

    a = Agent(profile, cache, tmp / f"{loader}-idle.log")
    a.wait_ready()
    time.sleep(2)  # start-up work (the /proc seed, first events) is not idling
    out["idle"] = window(a, args.idle_s)
    out["idle_events"] = a.stop()

    # The same agent with nothing to deliver: what its own timers cost, apart
    # from this (shared) host's activity.
    a = Agent(profile_for(loader, tmp, quiet=True), cache, tmp / f"{loader}-quiet.log")
    a.wait_ready()
    time.sleep(2)
    out["quiet"] = window(a, args.idle_s)
    out["quiet_events"] = a.stop()

    target = tmp / "load.dat"
    target.write_bytes(b"x")
    a = Agent(profile, cache, tmp / f"{loader}-load.log")
    a.wait_ready()
    time.sleep(2)
    gen = subprocess.Popen([sys.executable, "-c", GENERATOR, str(args.rate), str(args.load_s), str(target)],
                           stdout=subprocess.PIPE, text=True)
    out["load"] = window(a, args.load_s)
    generated = int(gen.communicate()[0].strip() or 0)
    time.sleep(1)
    out["load_generated"] = generated
    out["load_events"] = a.stop()
    return out


ENFORCE_PROFILE = REPO / "profiles" / "enforce-example.toml"
ENFORCE_READY = re.compile(r"enforce: arm via ")


def enforce_profile_for(loader: str, where: Path) -> Path:
    text = ENFORCE_PROFILE.read_text()
    text = text.replace('"../rules/linux"', f'"{REPO / "rules" / "linux"}"')
    text = text.replace('/var/log/kestrel/enforce-audit.jsonl', str(where / f"audit-{loader}.jsonl"))
    text = text.replace('"/run/kestrel"', f'"{where / f"run-{loader}"}"')
    text = text.replace('/var/log/kestrel/alerts.jsonl', str(where / f"alerts-{loader}.jsonl"))
    text = text.replace('\nrungs = []', f'\nloader = "{loader}"\nrungs = []', 1)
    if f'loader = "{loader}"' not in text:
        raise SystemExit(f"{ENFORCE_PROFILE}: no rungs = [] line in the enforce action to set the loader by")
    path = where / f"enforce-{loader}.toml"
    path.write_text(text)
    return path


def measure_enforce(loader: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    profile = enforce_profile_for(loader, tmp)
    cache = tmp / f"cache-enforce-{loader}"
    ready = []
    for i in range(args.starts + 1):  # the first fills the cache (objects): not counted
        a = Agent(profile, cache, tmp / f"enforce-{loader}-{i}.log")
        deadline = time.monotonic() + 120
        while not ENFORCE_READY.search(a.log_path.read_text(errors="replace")):
            if a.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the enforce agent did not start:\n{a.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        if i:
            ready.append(time.monotonic() - a.started)
        if i < args.starts:
            a.stop()
    time.sleep(2)
    idle = window(a, args.idle_s)
    maps = Path(f"/proc/{a.proc.pid}/maps").read_text()
    a.stop()
    return {"loader": loader, "ready": statistics.median(ready), "idle": idle,
            "compiler": any(s in maps for s in ("libbcc", "LLVM", "libclang"))}


def enforce_table(results: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [f"| enforce loader | exec -> enforcer ready (s) | idle {args.idle_s:.0f} s: RSS MB | CPU % "
             "| libbcc/LLVM mapped |", "|---|---:|---:|---:|---|"]
    for r in results:
        lines.append(f"| {r['loader']} | {r['ready']:.2f} | {r['idle']['rss_mb']:.1f} | {r['idle']['cpu_pct']:.2f} "
                     f"| {'yes' if r['compiler'] else 'no'} |")
    return "\n".join(lines)


def table(results: list[dict[str, object]], args: argparse.Namespace) -> str:
    idle = f"{args.idle_s:.0f} s"
    lines = [
        f"| loader | programs ready, cold: source / exec -> ready (s) | cached (s) | idle {idle}: RSS MB "
        f"| idle CPU % | idle wakeups/s | events read while idle | no events {idle}: RSS MB | CPU % | wakeups/s "
        f"| {args.rate:,}/s load: RSS MB | load CPU % | load events read / generated |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cold, cached, idle, quiet, load = r["ready_cold"], r["ready_cached"], r["idle"], r["quiet"], r["load"]
        cached_text = (f"{cached[0]:.2f} / {cached[1]:.2f}" if r["loader"] != "bcc"
                       else f"{cached[0]:.2f} / {cached[1]:.2f} (no cache: compiles every start)")
        lines.append(
            f"| {r['loader']} | {cold[0]:.2f} / {cold[1]:.2f} | {cached_text} | {idle['rss_mb']:.1f} "
            f"| {idle['cpu_pct']:.2f} | {idle['wakeups']:.1f} | {r['idle_events']:,} | {quiet['rss_mb']:.1f} "
            f"| {quiet['cpu_pct']:.2f} | {quiet['wakeups']:.1f} | {load['rss_mb']:.1f} "
            f"| {load['cpu_pct']:.1f} | {r['load_events']:,} / {r['load_generated']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--load-s", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--starts", type=int, default=3, help="cold and cached starts per loader (median)")
    ap.add_argument("--loaders", default="objects,bcc")
    ap.add_argument("--enforce", action="store_true", help="the enforcement example profile instead (see above)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("agent_bench: needs root (it loads BPF programs)")
    with tempfile.TemporaryDirectory(prefix="kestrel-agent-bench-") as d:
        results = []
        if args.enforce:
            for loader in args.loaders.split(","):
                print(f"measuring enforce loader = {loader} ...", file=sys.stderr, flush=True)
                results.append(measure_enforce(loader, args, Path(d)))
            print(enforce_table(results, args))
            return
        for loader in args.loaders.split(","):
            print(f"measuring loader = {loader} ...", file=sys.stderr, flush=True)
            results.append(measure(loader, args, Path(d)))
            for r in results[-1:]:
                print(f"  cold: {r['how_cold']}; cached: {r['how_cached']}", file=sys.stderr)
    print(table(results, args))


if __name__ == "__main__":
    main()
