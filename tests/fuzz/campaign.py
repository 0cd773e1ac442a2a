"""The long fuzz campaign (``make fuzz``): every entry point of
fuzz_targets.py for a share of the time asked, each in a child process of
its own, then a table per entry point: inputs tried, unexpected exceptions,
hangs (one input over ``--hang`` seconds), peak memory.

    .venv/bin/python tests/fuzz/campaign.py --minutes 20 [--targets eql-compile,klog] [--json out.json]
    make fuzz FUZZ_MINUTES=20

Hypothesis generates (phase ``generate`` only, no example database, no
shrinking: the short tests in test_fuzz.py shrink what this finds).  A child
that stays on one input for ``--kill-after`` seconds (a hang in C code that
nothing can interrupt) is killed; the input is reported and the target goes
on in a new child.  The address space of a child is capped (``--memory-mb``),
so unbounded memory shows up as a MemoryError, counted as unexpected.
Exit status: 0 when every count of unexpected exceptions and hangs is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def safe_repr(value: Any, limit: int = 3000) -> str:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        text = repr(value)
    except RecursionError:
        text = "<nested too deeply to print>"
    finally:
        sys.set_int_max_str_digits(old)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def where(exc: BaseException) -> str:
    """The innermost frame in Kestrel's code (else the innermost at all), as file:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if "kestrel_core" in f.filename or "/plugins/" in f.filename]
    f = (own or frames or [None])[-1]
    if f is None:
        return "?"
    path = f.filename.split("/work/main/")[-1]
    return f"{path}:{f.lineno}"


# --------------------------------------------------------------------------- child


class _Stop(BaseException):
    """Time is up: leaves hypothesis's loop (not an Exception, so not a test failure)."""


def child(name: str, seconds: float, hang_s: float, state: Path, memory_mb: int) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    from fuzz_targets import TARGETS, Finding

    if memory_mb:
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import logging

    logging.disable(logging.CRITICAL)  # the targets' own error logs are expected output
    target = TARGETS[name]
    deadline = time.monotonic() + seconds
    stats: dict[str, Any] = {"tried": 0, "unexpected": {}, "hangs": [], "slowest_s": 0.0}
    current = state / f"{name}.current"
    progress = state / f"{name}.json"
    skip_file = state / f"{name}.killed"
    # Inputs an earlier child was killed on: hypothesis tries simple inputs first, so a new child would meet
    # the same one again.
    skip = set(json.loads(skip_file.read_text())) if skip_file.exists() else set()
    last_write = [0.0]

    def save(force: bool = False) -> None:
        now = time.monotonic()
        if force or now - last_write[0] > 1.0:
            last_write[0] = now
            stats["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            tmp = progress.with_suffix(".tmp")
            tmp.write_text(json.dumps(stats))
            tmp.replace(progress)

    @settings(max_examples=10**9, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(target.strategy)
    def one(value: Any) -> None:
        if time.monotonic() > deadline:
            raise _Stop
        text = safe_repr(value)
        if text in skip:
            return
        current.write_text(f"{time.time()}\n{text}")
        start = time.monotonic()
        try:
            target.run(value)
        except Exception as exc:  # noqa: BLE001 - everything a target raises is a finding
            kind = "finding" if isinstance(exc, Finding) else type(exc).__name__
            key = f"{kind} at {where(exc)}"
            entry = stats["unexpected"].setdefault(key, {"count": 0, "message": str(exc)[:500], "input": text})
            entry["count"] += 1
            if len(text) < len(entry["input"]):  # keep the shortest reproducer seen
                entry["input"], entry["message"] = text, str(exc)[:500]
        took = time.monotonic() - start
        if took > hang_s:  # confirm: on a shared machine one slow run can be the load, not the input
            stats["rechecked"] = stats.get("rechecked", 0) + 1
            start = time.monotonic()
            try:
                target.run(value)
            except Exception:  # noqa: BLE001 - counted above
                pass
            took = min(took, time.monotonic() - start)
        stats["tried"] += 1
        stats["slowest_s"] = max(stats["slowest_s"], took)
        if took > hang_s:
            stats["hangs"].append({"seconds": round(took, 2), "input": text})
            stats["hangs"] = sorted(stats["hangs"], key=lambda h: len(h["input"]))[:20]
            stats["hang_count"] = stats.get("hang_count", 0) + 1
        save()

    try:
        while time.monotonic() < deadline:
            try:
                one()
            except _Stop:
                break
            # hypothesis ended its run (it can run out of distinct inputs for a small strategy): go again
    finally:
        save(force=True)
        current.unlink(missing_ok=True)


# --------------------------------------------------------------------------- parent


def run_target(name: str, seconds: float, args: argparse.Namespace, state: Path) -> dict[str, Any]:
    total: dict[str, Any] = {"tried": 0, "unexpected": {}, "hangs": [], "hang_count": 0, "peak_rss_mb": 0.0,
                             "killed": 0, "slowest_s": 0.0}
    end = time.monotonic() + seconds
    while time.monotonic() < end - 1:
        progress, current = state / f"{name}.json", state / f"{name}.current"
        progress.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--seconds", str(end - time.monotonic()),
                                 "--hang", str(args.hang), "--state", str(state), "--memory-mb", str(args.memory_mb)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        killed_input = None
        while proc.poll() is None:
            time.sleep(0.5)  # polling a child process's files; nothing to wait on
            try:
                started, text = current.read_text().split("\n", 1)
            except (OSError, ValueError):
                continue
            if time.time() - float(started) > args.kill_after:
                proc.kill()
                proc.wait()
                killed_input = text
        err = proc.stderr.read() if proc.stderr else ""
        got = json.loads(progress.read_text()) if progress.exists() else {"tried": 0, "unexpected": {}, "hangs": []}
        total["tried"] += got["tried"]
        total["peak_rss_mb"] = max(total["peak_rss_mb"], got.get("peak_rss_mb", 0.0))
        total["slowest_s"] = max(total["slowest_s"], got.get("slowest_s", 0.0))
        total["hang_count"] += got.get("hang_count", 0)
        total["hangs"].extend(got["hangs"])
        for key, entry in got["unexpected"].items():
            have = total["unexpected"].setdefault(key, {**entry, "count": 0})
            have["count"] += entry["count"]
        if killed_input is not None:
            killed = state / f"{name}.killed"
            known = json.loads(killed.read_text()) if killed.exists() else []
            killed.write_text(json.dumps(known + [killed_input]))
            total["killed"] += 1
            total["hang_count"] += 1
            total["tried"] += 1
            total["hangs"].append({"seconds": f">{args.kill_after:g} (killed)", "input": killed_input})
        elif proc.returncode != 0:
            key = f"child exited {proc.returncode}"
            entry = total["unexpected"].setdefault(key, {"count": 0, "message": err[-2000:], "input": ""})
            entry["count"] += 1
            if not got["tried"]:
                break  # it cannot even start: do not spin
    return total


def table(results: dict[str, dict[str, Any]], seconds: dict[str, float]) -> str:
    rows = ["| entry point | time s | inputs tried | unexpected exceptions (distinct) | hangs > 1 s | slowest input s "
            "| peak memory MB |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        unexpected = sum(e["count"] for e in r["unexpected"].values())
        rows.append(f"| {name} | {seconds[name]:.0f} | {r['tried']:,} | {unexpected:,} ({len(r['unexpected'])}) | "
                    f"{r['hang_count']:,} | {r['slowest_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=float(os.environ.get("FUZZ_MINUTES", "30")),
                    help="total time, shared equally by the targets (env FUZZ_MINUTES; default 30)")
    ap.add_argument("--targets", default="", help="comma-separated entry points (default: all)")
    ap.add_argument("--hang", type=float, default=1.0, help="one input slower than this (s) is a hang")
    ap.add_argument("--kill-after", type=float, default=10.0, help="kill a child stuck this long on one input (s)")
    ap.add_argument("--memory-mb", type=int, default=3072, help="address-space cap of a child (0: none)")
    ap.add_argument("--json", default="", help="write every count, finding and hang input here")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--state", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.seconds, args.hang, Path(args.state), args.memory_mb)
        return 0
    from fuzz_targets import TARGETS

    names = [n for n in args.targets.split(",") if n] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    share = args.minutes * 60 / len(names)
    results, took = {}, {}
    with tempfile.TemporaryDirectory(prefix="kestrel-fuzz-") as state:
        for name in names:
            print(f"fuzzing {name} for {share:.0f} s: {TARGETS[name].what}", file=sys.stderr, flush=True)
            start = time.monotonic()
            results[name] = run_target(name, share, args, Path(state))
            took[name] = time.monotonic() - start
    print(table(results, took))
    for name, r in results.items():
        for key, e in sorted(r["unexpected"].items(), key=lambda kv: -kv[1]["count"]):
            print(f"\n{name}: {e['count']:,} x {key}: {e['message'][:300]}\n  input: {e['input'][:600]}")
        for h in r["hangs"][:5]:
            print(f"\n{name}: hang {h['seconds']} s\n  input: {h['input'][:600]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"minutes": args.minutes, "results": results, "seconds": took},
                                              indent=1))
    bad = sum(sum(e["count"] for e in r["unexpected"].values()) + r["hang_count"] for r in results.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
