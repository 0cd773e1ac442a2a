"""Kestrel vs the PyPI ``eql`` package (PythonEngine), same stream, same run.

    .venv/bin/python benchmarks/run.py [--events N] [--scenario a,b,c,d,e,f] [--matcher acdfa]
    .venv/bin/python benchmarks/run.py --klog [--events N]   # the .klog event log (benchmarks/klog_bench.py)
    .venv/bin/python benchmarks/run.py --runtime host,lua,wasm,wasm-strict --no-eql --repeat 3
                                      # the same scenarios per predicate runtime (plugins/runtime-*)

For every scenario each engine runs in its own subprocess (so peak RSS is not
mixed): the child loads the generated stream (cached in benchmarks/.cache/),
builds its engine's events and rules (NOT timed), then times only the engine:

* throughput: wall time of the loop that feeds the pre-built events to the
  engine (Kestrel: ``process_batch`` on slices of ``--batch`` events, then
  ``flush``; eql: ``stream_events(slice, finalize=False)`` on the same slices);
* latency: ``--latency`` events taken right after the first ``eql_events``
  events of the stream, fed ONE AT A TIME (``process_batch([e])`` /
  ``stream_event(e)``), each call timed with ``perf_counter_ns``; both engines
  see the same sample in the same state;
* memory: ``ru_maxrss`` of the child at the end (peak, includes the stream
  itself) and the RSS growth from just before the engine is built to the peak.

The match sets are compared on the common window (the first ``eql_events +
latency`` events, which both engines processed): a match is (rule id, ids of
the matched events in step order).  Streaming engines are causal, so matches
whose last event lies in the window are exactly those of a run on the window.

``--runtime host,lua,...`` adds a dimension: the Kestrel child runs once per
predicate runtime (``host``; ``lua`` = runtime-lua trusted, FFI transfer;
``lua/tables``, ``lua-strict``; ``wasm`` = runtime-wasm trusted;
``wasm-strict``), each in its own subprocess, runtimes interleaved within each
repeat.  A second table gives, per scenario and runtime, the MEDIAN events/s
of the ``--repeat`` runs, the ratio of medians to host in the same run, the
issue-12 goal, P50/P99 of the median run, and whether its matches (over the
whole stream) are identical to host's.

Results: a table on stdout and benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import marshal
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.scenarios import SCENARIOS  # noqa: E402

TARGETS = {"a": 2.0, "b": 20.0, "c": 10.0, "d": 20.0, "e": 100.0, "f": 20.0}
# issue 15's goals between scenarios (same run): (e) >= 0.5 x (b)'s events/s, (f) >= 0.5 x (d)'s
RELATIVE_GOALS = {"e": ("b", 0.5), "f": ("d", 0.5)}
# eql is slow on the big rule sets; by default it runs on a prefix of the
# stream (the ratio compares rates, the match check uses the common window).
EQL_DEFAULT_EVENTS = {"a": 1_000_000, "b": 200_000, "c": 1_000_000, "d": 20_000, "e": 2_000, "f": 5_000}
GEN_VERSION = 3  # bump when generate.py/attacks.py change the stream
# issue 12's goals for the predicate runtimes: events/s ratio to the host runtime, same run
RUNTIME_GOALS = {"lua": {"a": 0.5, "b": 1.0, "c": 0.5, "d": 0.5}, "wasm": {"b": 0.5}}


# --------------------------------------------------------------------------- stream


def stream_path(n: int, seed: int) -> Path:
    return CACHE / f"stream-v{GEN_VERSION}-s{seed}-n{n}.marshal"


def ensure_stream(n: int, seed: int) -> Path:
    p = stream_path(n, seed)
    if p.exists():
        return p
    from benchmarks.generate import Generator

    CACHE.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    gc.disable()
    g = Generator(seed=seed)
    evs = g.generate(n)
    ts = [e.pop("_ts_us") * 1000 for e in evs]
    for e in evs:
        e.pop("_story", None)
    gc.enable()
    tmp = p.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        marshal.dump((evs, ts, g.injected), f)
    os.replace(tmp, p)
    print(f"generated {n:,} events in {time.perf_counter() - t:.1f}s -> {p.relative_to(ROOT)} "
          f"(injected attack stories: {sum(g.injected.values())})", file=sys.stderr)
    return p


def load_stream(p: Path):
    gc.disable()
    with open(p, "rb") as f:
        evs, ts, injected = marshal.load(f)
    gc.enable()
    return evs, ts, injected


# --------------------------------------------------------------------------- helpers


def rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pct(sorted_vals: list[int], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def lat_summary(ns: list[int]) -> dict:
    s = sorted(ns)
    return {"n": len(s), "p50_us": pct(s, 0.50) / 1000, "p99_us": pct(s, 0.99) / 1000,
            "max_us": (s[-1] / 1000) if s else None, "mean_us": (sum(s) / len(s) / 1000) if s else None}


def write_rules_toml(rules: list[dict], path: Path) -> None:
    lines = []
    for r in rules:
        q = r["kestrel"].replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
        lines += ["[[rule]]", f'id = "{r["id"]}"', f'name = "{r["id"]}"', 'severity = "medium"',
                  f'description = "benchmark rule {r["id"]}"', 'tags = ["benchmark"]', f'query = """\n{q}\n"""', ""]
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- children


def time_engine(a, events: list, n_total: int, feed_batch, feed_one, finish) -> dict:
    """The timed part, identical for both engines: batches up to the window
    start, then ``a.latency`` events one per call (each timed), then the rest
    in batches and the engine's end-of-input flush."""
    w, B = a.window_start, a.batch
    part1 = [events[i:min(i + B, w)] for i in range(0, w, B)]
    sample = events[w:w + a.latency]
    part2 = [events[i:i + B] for i in range(w + a.latency, n_total, B)]
    gc.collect()
    gc.freeze()
    prof = None
    if a.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    for b in part1:
        feed_batch(b)
    t1 = time.perf_counter()
    lat = []
    pc = time.perf_counter_ns
    for e in sample:
        s = pc()
        feed_one(e)
        lat.append(pc() - s)
    t2 = time.perf_counter()
    for b in part2:
        feed_batch(b)
    finish()
    t3 = time.perf_counter()
    if prof is not None:
        prof.disable()
        prof.dump_stats(a.profile)
    timed_events = n_total - len(sample)
    seconds = (t1 - t0) + (t3 - t2)
    return {"events": timed_events, "seconds": seconds, "eps": timed_events / seconds, "latency": lat_summary(lat)}


def rss_report(rss_before: float) -> dict:
    return {"rss_before_engine_mb": rss_before, "rss_after_mb": rss_now_mb(), "rss_peak_mb": rss_peak_mb(),
            "rss_engine_mb": rss_now_mb() - rss_before}


def child_kestrel(a) -> dict:
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.packs import load_rule_pack
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    evs, _ts, _inj = load_stream(Path(a.stream))
    n_total = a.events + a.latency
    evs = evs[:n_total]
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    t = time.perf_counter()
    gc.disable()
    events = [norm.normalize(e, "bench") for e in evs]
    gc.enable()
    normalize_s = time.perf_counter() - t
    rules, errors = load_rule_pack([a.rules])
    if errors:
        raise SystemExit(f"rule errors: {errors}")
    runtime = None
    if a.runtime_name != "host":
        from benchmarks.runtime_bench import _runtime

        runtime = _runtime(a.runtime_name)
    gc.collect()
    rss_before = rss_now_mb()
    t = time.perf_counter()
    kw = {}
    if a.matcher:
        from kestrel_core.matchers import make_matcher

        kw = {"matcher": make_matcher(a.matcher), "direct": False}
    if a.no_lazy_dfa:
        from kestrel_core.eql.sequence import EngineLimits

        kw["limits"] = EngineLimits(lazy_dfa=False)
    engine = DetectionEngine(schema, rules, runtime=runtime, **kw)
    build_s = time.perf_counter() - t
    if engine.rule_errors:
        raise SystemExit(f"{a.runtime_name}: rule errors: {engine.rule_errors[:3]}")

    alerts: list = []

    def feed(batch):
        alerts.extend(engine.process_batch(batch))

    res = time_engine(a, events, n_total, feed, lambda e: feed([e]), lambda: alerts.extend(engine.flush()))
    res["matches"] = [[al.rule_id, [ev.raw["event"]["id"] for ev in al.events]] for al in alerts]
    dfa = getattr(engine, "dfa_cache", None)
    res["lazy_dfa"] = dict(dfa.counts) if dfa is not None and not a.no_lazy_dfa else None
    return {"engine": "kestrel", "runtime": a.runtime_name, "matcher": a.matcher or "literal-index", **res, "build_s": build_s, "prepare_s": normalize_s,
            **rss_report(rss_before)}


def child_eql(a) -> dict:
    import eql
    from eql.ast import EqlAnalytic
    from eql.events import Event as EqlEvent
    from eql.parser import elasticsearch_syntax, ignore_missing_functions, parse_query

    evs, ts, _inj = load_stream(Path(a.stream))
    n_total = a.events + a.latency
    t = time.perf_counter()
    gc.disable()
    events = [EqlEvent(e["event"]["category"][0], ts[i], e) for i, e in enumerate(evs[:n_total])]
    gc.enable()
    prepare_s = time.perf_counter() - t
    rules = json.loads(Path(a.rules_json).read_text())
    out = []
    gc.collect()
    rss_before = rss_now_mb()
    t = time.perf_counter()
    engine = eql.PythonEngine({"time_unit": 10**9, "hooks": [out.append]})
    for r in rules:
        with elasticsearch_syntax, ignore_missing_functions:
            q = parse_query(r["eql"])
        engine.add_analytic(EqlAnalytic(q, {"id": r["id"]}))
    build_s = time.perf_counter() - t

    res = time_engine(a, events, n_total, lambda b: engine.stream_events(b, finalize=False), engine.stream_event,
                      engine.finalize)
    res["matches"] = [[o.analytic_id, [ev.data["event"]["id"] for ev in o.events]] for o in out]
    return {"engine": "eql", **res, "build_s": build_s, "prepare_s": prepare_s, **rss_report(rss_before)}


# --------------------------------------------------------------------------- parent


def run_child(engine: str, scen: str, stream: Path, events: int, window_start: int, a, rules_toml: Path,
              rules_json: Path, runtime: str = "host") -> dict:
    tag = engine if runtime == "host" else f"{engine}-{runtime.replace('/', '_')}"
    out = CACHE / f"result-{scen}-{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--stream", str(stream),
           "--events", str(events), "--window-start", str(window_start), "--latency", str(a.latency),
           "--batch", str(a.batch), "--rules", str(rules_toml), "--rules-json", str(rules_json), "--out", str(out),
           "--runtime-name", runtime]
    matcher = _matcher_for(a.matcher, scen)
    if engine == "kestrel" and matcher:
        cmd += ["--matcher", matcher]
    if engine == "kestrel" and a.no_lazy_dfa:
        cmd += ["--no-lazy-dfa"]
    if a.profile:
        cmd += ["--profile-out", str(RESULTS / f"profile-{scen}-{tag}.pstats")]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.timeout)
    if p.returncode != 0:
        return {"engine": engine, "error": (p.stderr or p.stdout).strip().splitlines()[-15:]}
    res = json.loads(out.read_text())
    res["child_wall_s"] = time.perf_counter() - t
    return res


def _matcher_for(spec: str, scen: str) -> str:
    """``--matcher``: one name for every scenario, or ``s:NAME,s:NAME``."""
    if ":" not in spec:
        return spec
    return dict(part.split(":", 1) for part in spec.split(",") if part).get(scen, "")


def _best(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    best = max(ok, key=lambda r: r["eps"])
    best["all_eps"] = [r["eps"] for r in ok]
    return best


def compare(rules: list[dict], k: dict, e: dict, window: int) -> dict:
    comparable = {r["id"] for r in rules if r["compare"]}

    def inwin(ms):
        s = set()
        for rid, ids in ms:
            if rid in comparable and max(int(x) for x in ids) < window:
                s.add((rid, tuple(ids)))
        return s

    ks, es = inwin(k["matches"]), inwin(e["matches"])
    only_k, only_e = sorted(ks - es), sorted(es - ks)
    per_rule: dict[str, list[int]] = {}
    for rid, _ in ks:
        per_rule.setdefault(rid, [0, 0])[0] += 1
    for rid, _ in es:
        per_rule.setdefault(rid, [0, 0])[1] += 1
    return {"window_events": window, "compared_rules": len(comparable), "kestrel": len(ks), "eql": len(es),
            "identical": ks == es, "only_kestrel": [list(x) for x in only_k[:20]],
            "only_eql": [list(x) for x in only_e[:20]], "n_only_kestrel": len(only_k), "n_only_eql": len(only_e),
            "rules_with_matches": sum(1 for v in per_rule.values() if max(v) > 0),
            "rules_differing": sorted(rid for rid, v in per_rule.items() if v[0] != v[1])}


def machine() -> dict:
    import platform

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(open("/proc/meminfo").readline().split()[1]) // 1024
    except OSError:
        pass
    try:
        import eql

        eqlv = eql.__version__
    except Exception:  # noqa: BLE001
        eqlv = "?"
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_mb": mem, "eql": eqlv, "git": rev}


def fmt_eps(x):
    return f"{x / 1000:,.1f}k" if x < 1e6 else f"{x / 1e6:,.2f}M"


def print_table(rows: list[dict]) -> None:
    hdr = ["scen", "rules", "events K/eql", "Kestrel ev/s", "eql ev/s", "ratio", "target", "K p50/p99 µs",
           "eql p50/p99 µs", "K RSS MB", "eql RSS MB", "matches K/eql", "match check"]
    body = []
    for r in rows:
        k, e = r.get("kestrel", {}), r.get("eql", {})
        if "error" in k or "error" in e:
            body.append([r["scenario"], str(r["rules"]), "-", "ERROR" if "error" in k else fmt_eps(k["eps"]),
                         "ERROR" if "error" in e else fmt_eps(e["eps"]), "-", f'{r["target"]}x', "-", "-", "-", "-",
                         "-", "n/a"])
            continue
        c = r["check"]
        body.append([
            r["scenario"], str(r["rules"]), f'{k["events"]:,}/{e["events"]:,}', fmt_eps(k["eps"]), fmt_eps(e["eps"]),
            f'{r["ratio"]:.1f}x', f'{r["target"]:.0f}x {"ok" if r["ratio"] >= r["target"] else "MISS"}',
            f'{k["latency"]["p50_us"]:.1f}/{k["latency"]["p99_us"]:.1f}',
            f'{e["latency"]["p50_us"]:.1f}/{e["latency"]["p99_us"]:.1f}',
            f'{k["rss_engine_mb"]:.0f} ({k["rss_peak_mb"]:.0f})', f'{e["rss_engine_mb"]:.0f} ({e["rss_peak_mb"]:.0f})',
            f'{c["kestrel"]}/{c["eql"]}', "PASS" if c["identical"] else f'FAIL (+{c["n_only_kestrel"]}/-{c["n_only_eql"]})'])
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="Kestrel vs eql PythonEngine")
        for h in hdr:
            t.add_column(h, justify="right" if h not in ("scen", "match check") else "left")
        for b in body:
            t.add_row(*b)
        Console(width=200).print(t)
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(hdr)]
        print("  ".join(h.ljust(w) for h, w in zip(hdr, widths)))
        for b in body:
            print("  ".join(c.ljust(w) for c, w in zip(b, widths)))
    print("RSS MB: RSS growth from just before the engine is built to the end of the run (child peak ru_maxrss, which includes the stream, in brackets).")
    print("Latency: one event per call (process_batch([e]) / stream_event(e)), sampled after the eql prefix.")


def print_relative(rows: list[dict]) -> None:
    """Issue 15's goals between scenarios of the same run: (e) vs (b), (f) vs (d)."""
    eps = {r["scenario"]: r["kestrel"]["eps"] for r in rows if "error" not in r["kestrel"]}
    for s, (base, goal) in RELATIVE_GOALS.items():
        if s in eps and base in eps:
            x = eps[s] / eps[base]
            print(f"({s}) / ({base}) Kestrel events/s: {fmt_eps(eps[s])} / {fmt_eps(eps[base])} = {x:.2f} "
                  f"(goal >= {goal}: {'met' if x >= goal else 'MISSED'})")


def _median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def runtime_rows(s: str, runs: dict[str, list[dict]]) -> list[dict]:
    """Per runtime: median events/s of its runs, ratio of medians to host, the
    goal, and the median run's latency; matches compared with host's first run."""
    host_ok = [r for r in runs.get("host", []) if "error" not in r]
    ref = sorted(map(tuple, ((m[0], tuple(m[1])) for m in host_ok[0]["matches"]))) if host_ok else None
    host_med = _median([r["eps"] for r in host_ok]) if host_ok else None
    out = []
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out.append({"scenario": s, "runtime": name, "error": rs[0].get("error")})
            continue
        eps = sorted(r["eps"] for r in ok)
        med = _median(eps)
        mid = min(ok, key=lambda r: abs(r["eps"] - med))
        same = [sorted((m[0], tuple(m[1])) for m in r["matches"]) == ref for r in ok] if ref is not None else []
        goal = RUNTIME_GOALS.get(name.split("/")[0], {}).get(s)  # trusted modes only: lua, lua/tables, wasm
        ratio = med / host_med if host_med else None
        out.append({"scenario": s, "runtime": name, "runs": len(ok), "eps_median": med, "eps_all": eps,
                    "ratio_to_host": ratio, "goal": goal, "meets_goal": None if goal is None or ratio is None
                    else ratio >= goal, "p50_us": mid["latency"]["p50_us"], "p99_us": mid["latency"]["p99_us"],
                    "rss_engine_mb": mid["rss_engine_mb"], "build_s": mid["build_s"],
                    "n_matches": len(mid["matches"]), "matches_identical_to_host": all(same) if same else None})
    return out


def _us(x: float) -> str:
    return "-" if x != x else f"{x:.1f}"  # NaN: no latency sample (--latency 0)


def print_runtime_table(rows: list[dict], events: int, repeat: int) -> None:
    print(f"\nPredicate runtimes: {events:,} events timed per run, median of {repeat} runs per runtime "
          f"(runtimes interleaved), ratio = median / host's median in this run")
    print("| scenario | runtime | events/s (median) | min-max | ratio to host | goal | P50 / P99 µs | "
          "build s | matches | same as host |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| ({r['scenario']}) | {r['runtime']} | ERROR: {' '.join(r['error'] or [])[-200:]} |||||||")
            continue
        goal = "" if r["goal"] is None else f"{r['goal']:.1f}x: {'met' if r['meets_goal'] else 'MISSED'}"
        print(f"| ({r['scenario']}) | {r['runtime']} | {r['eps_median']:,.0f} | {r['eps_all'][0]:,.0f}-"
              f"{r['eps_all'][-1]:,.0f} | {r['ratio_to_host']:.2f}x | {goal} | {_us(r['p50_us'])} / "
              f"{_us(r['p99_us'])} | {r['build_s']:.2f} | {r['n_matches']:,} | "
              f"{'yes' if r['matches_identical_to_host'] else 'NO'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Kestrel vs eql PythonEngine benchmark")
    ap.add_argument("--events", type=int, default=1_000_000, help="events timed for Kestrel (default 1,000,000)")
    ap.add_argument("--eql-events", default="",
                    help="events timed for eql: N or a:N,b:N,... (default a,c: all; b: 200k; d: 20k)")
    ap.add_argument("--scenario", default="a,b,c,d")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--latency", type=int, default=2000, help="events fed one at a time for latency")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each engine N times (alternating) and keep its best throughput (default 1)")
    ap.add_argument("--profile", action="store_true", help="cProfile the timed loops (slower; for diagnosis)")
    ap.add_argument("--runtime", default="host",
                    help="predicate runtimes for the Kestrel child, comma-separated: host, lua, lua/tables, "
                         "lua-strict, wasm, wasm-strict (default host); more than host adds the runtime table "
                         "(medians of --repeat)")
    ap.add_argument("--no-eql", action="store_true", help="skip the eql children (runtime table only)")
    ap.add_argument("--matcher", default="",
                    help="candidate matcher of the Kestrel child (default: the engine's own, literal-index); "
                         "e.g. acdfa (plugins/matcher-acdfa), or per scenario: e:acdfa,f:acdfa")
    ap.add_argument("--no-lazy-dfa", action="store_true",
                    help="Kestrel child: every sequence on the NFA ([engine] lazy_dfa = false)")
    ap.add_argument("--out", default=str(RESULTS / "latest.json"))
    ap.add_argument("--klog", action="store_true",
                    help="benchmark the .klog event log instead (benchmarks/klog_bench.py, --events and --repeat apply)")
    # child mode
    ap.add_argument("--child", choices=["kestrel", "eql"])
    ap.add_argument("--stream")
    ap.add_argument("--window-start", type=int)
    ap.add_argument("--rules")
    ap.add_argument("--rules-json")
    ap.add_argument("--profile-out")
    ap.add_argument("--runtime-name", default="host")
    a = ap.parse_args(argv)

    if a.klog:
        from benchmarks import klog_bench

        return klog_bench.main(["--events", str(min(a.events, 200_000)), "--repeat", str(max(a.repeat, 3))])
    if a.child:
        a.profile = a.profile_out
        res = (child_kestrel if a.child == "kestrel" else child_eql)(a)
        Path(a.out).write_text(json.dumps(res))
        return 0
    return parent(a)


def parent(a) -> int:
    CACHE.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    scens = [s.strip() for s in a.scenario.split(",") if s.strip()]
    eql_n = dict(EQL_DEFAULT_EVENTS)
    if a.eql_events:
        if ":" in a.eql_events:
            for part in a.eql_events.split(","):
                k, v = part.split(":")
                eql_n[k.strip()] = int(v)
        else:
            eql_n = {k: int(a.eql_events) for k in eql_n}
    stream = ensure_stream(a.events + a.latency, a.seed)
    runtimes = [r.strip() for r in a.runtime.split(",") if r.strip()]
    if "host" not in runtimes:
        runtimes.insert(0, "host")  # the ratios are to host in the same run
    rows: list[dict] = []
    rt_rows: list[dict] = []
    for s in scens:
        title, fn = SCENARIOS[s]
        rules = fn()
        rt, rj = CACHE / f"rules-{s}.toml", CACHE / f"rules-{s}.json"
        write_rules_toml(rules, rt)
        rj.write_text(json.dumps(rules))
        ne = min(a.events, eql_n.get(s, a.events))
        print(f"[{s}] {title}: {len(rules)} rules; Kestrel {a.events:,} events, eql {ne:,} events ...", file=sys.stderr)
        runs: dict[str, list[dict]] = {name: [] for name in runtimes}
        es = []
        for _ in range(max(1, a.repeat)):  # alternate K (each runtime), eql, K, eql, ...
            for name in runtimes:
                runs[name].append(run_child("kestrel", s, stream, a.events, ne, a, rt, rj, runtime=name))
                r = runs[name][-1]
                print(f"[{s}]   kestrel/{name}: {r.get('error') or fmt_eps(r['eps']) + ' ev/s'}", file=sys.stderr)
            if a.no_eql:
                continue
            es.append(run_child("eql", s, stream, ne, ne, a, rt, rj))
            print(f"[{s}]   eql:     {es[-1].get('error') or fmt_eps(es[-1]['eps']) + ' ev/s'}", file=sys.stderr)
        if len(runtimes) > 1 or runtimes != ["host"]:
            rt_rows += runtime_rows(s, runs)
        if a.no_eql:
            continue
        ks = runs["host"]
        k, e = _best(ks), _best(es)
        row = {"scenario": s, "title": title, "rules": len(rules), "target": TARGETS[s], "kestrel": k, "eql": e,
               "rule_set": rules}
        if "error" not in k and "error" not in e:
            row["ratio"] = k["eps"] / e["eps"]
            row["check"] = compare(rules, k, e, ne + a.latency)
            row["meets_target"] = row["ratio"] >= TARGETS[s]
        for side in (k, e):
            if "matches" in side:
                side["n_matches"] = len(side.pop("matches"))
        rows.append(row)
    if rows:
        print_table(rows)
        print_relative(rows)
    if rt_rows:
        print_runtime_table(rt_rows, a.events, max(1, a.repeat))
    doc = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
           "params": {"events": a.events, "eql_events": {s: min(a.events, eql_n.get(s, a.events)) for s in scens},
                      "seed": a.seed, "batch": a.batch, "latency_sample": a.latency, "repeat": a.repeat,
                      "runtimes": runtimes, "eql": not a.no_eql},
           "method": __doc__, "scenarios": rows, "runtimes": rt_rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(f"wrote {a.out}", file=sys.stderr)
    ok = all("error" not in r["kestrel"] and "error" not in r["eql"] for r in rows)
    ok = ok and all("error" not in r and r["matches_identical_to_host"] is not False for r in rt_rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
