"""Matchers at 10, 100 and 1,000 rules: literal-index (default) vs acdfa, with
eql's PythonEngine as the peer in the same run.

    .venv/bin/python benchmarks/matcher_bench.py [--events N] [--runs R] [--sizes 10,100,1000]

Rules: the (b) scenario's generator (benchmarks/scenarios.py: long ``in``
lists, ``:`` wildcards, ``like~``, cidrMatch, ``event.action`` gates) plus
one regex rule in every seven (``process.command_line regex~``,
``file.path regex``), up to the size asked.  Events: the generated Linux
fleet stream (benchmarks/generate.py, seed 7), normalized once; each Kestrel
matcher gets a fresh engine per run and the whole stream in batches of 1024;
events/s is the median of ``--runs`` runs.  The alerts of the two matchers
are compared (they must be identical, in order).  eql runs the same rules'
eql texts (rules it cannot parse are left out and counted) over a sample
(200,000 / rules events, at most the stream), once: it is the speed peer,
not an oracle (its semantics differ, see benchmarks/scenarios.py).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import ensure_stream, load_stream  # noqa: E402
from benchmarks.scenarios import CMD_TOKENS, _rule, scenario_b, scenario_e  # noqa: E402


def regex_rule(i: int, r: random.Random) -> dict:
    tok = r.choice(CMD_TOKENS)
    esc = "".join(f"[{c}]" if c in ".+*?(){}|^$" else c for c in tok)
    if i % 2:
        q = f'process where event.action == "exec" and process.command_line regex~ ".*{esc}.*"'
    else:
        d = r.choice(["/etc/cron", "/tmp/", "/dev/shm/", "/var/spool/cron", "/root/[.]ssh", "/etc/systemd/system"])
        q = f'file where file.path regex "{d}.*[.](sh|py|service|conf)"'
    return _rule(f"m.regex{i}", q, compare=False, note="regex: eql anchors at the start only")


def rules_published(n: int) -> list[dict]:
    """Rules in the style of published Linux detection rules (benchmark scenario (e)'s
    generator, benchmarks/scenarios.py): each names tools, paths or command-line
    fragments that benign fleet activity rarely shows, so most rules fire rarely
    or never, as in a real pack."""
    return scenario_e(n)


def rules_for(n: int, seed: int = 11) -> list[dict]:
    base = scenario_b(n, seed)
    r = random.Random(seed + n)
    out = []
    for i, rule in enumerate(base):
        out.append(regex_rule(i, r) if i % 7 == 6 else rule)
    return out


def kestrel_run(events, rules, matcher_name: str):
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.matchers import make_matcher
    from kestrel_core.schema import Schema

    schema = events[0]
    t0 = time.perf_counter()
    eng = DetectionEngine(schema, rules, matcher=make_matcher(matcher_name))
    build = time.perf_counter() - t0
    assert not eng.rule_errors, eng.rule_errors[:2]
    evs = events[1]
    alerts = []
    gc.collect()
    t0 = time.perf_counter()
    for i in range(0, len(evs), 1024):
        alerts.extend(eng.process_batch(evs[i:i + 1024]))
    alerts.extend(eng.flush())
    dt = time.perf_counter() - t0
    return len(evs) / dt, build, [(a.rule_id, tuple(e.event_id for e in a.events)) for a in alerts]


def eql_run(raw, ts, rules, limit: int):
    import eql
    from eql.ast import EqlAnalytic
    from eql.events import Event as EqlEvent
    from eql.parser import elasticsearch_syntax, ignore_missing_functions, parse_query

    out = []
    engine = eql.PythonEngine({"time_unit": 10**9, "hooks": [out.append]})
    skipped = 0
    for r in rules:
        try:
            with elasticsearch_syntax, ignore_missing_functions:
                q = parse_query(r["eql"])
        except Exception:
            skipped += 1
            continue
        engine.add_analytic(EqlAnalytic(q, {"id": r["id"]}))
    events = [EqlEvent(e["event"]["category"][0], ts[i], e) for i, e in enumerate(raw[:limit])]
    gc.collect()
    t0 = time.perf_counter()
    engine.stream_events(events, finalize=False)
    engine.finalize()
    return len(events) / (time.perf_counter() - t0), skipped


_LOAD_CHILD = """
import sys, time, json
t0 = time.perf_counter()
from kestrel_core.eql import compilecache
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.packs import load_rule_pack
from kestrel_core.schema import Schema
from kestrel_matcher_acdfa import AcdfaMatcher, AcdfaSettings
cache = sys.argv[2]
compilecache.configure(cache or None)
t1 = time.perf_counter()
rules, errors = load_rule_pack([sys.argv[1]])
t2 = time.perf_counter()
m = AcdfaMatcher(AcdfaSettings(cache_dir=sys.argv[3]))
DetectionEngine(Schema.ecs(), rules, matcher=m)
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "build": t3 - t2, "matcher": m.build_ns / 1e9,
                  "errors": len(errors)}))
"""


def load_times(spec: list[dict], runs: int = 3) -> dict:
    """Pack load of ``spec`` as a rule file, each run in a fresh process (no memo
    survives): reading the pack (TOML, rule checks) and building the engine with
    acdfa, cold (no compile cache), from the core's warm compile cache (IR and
    predicate code), and with acdfa's own key cache too; medians of ``runs``."""
    import json
    import subprocess
    import tempfile

    from benchmarks.run import write_rules_toml

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        pack, cache = Path(tmp) / "pack.toml", Path(tmp) / "cache"
        write_rules_toml(spec, pack)
        cache.mkdir(mode=0o700)

        def child(cache_dir: str, acdfa_cache: str = "") -> dict:
            p = subprocess.run([sys.executable, "-c", _LOAD_CHILD, str(pack), cache_dir, acdfa_cache],
                               capture_output=True, text=True, cwd=ROOT, check=True)
            return json.loads(p.stdout.strip().splitlines()[-1])

        child(str(cache), str(cache))  # fills the caches
        for label, cache_dir, acdfa_cache in (("cold", "", ""), ("cached", str(cache), ""),
                                              ("cached + acdfa key cache", str(cache), str(cache))):
            rs = [child(cache_dir, acdfa_cache) for _ in range(runs)]
            assert all(r["errors"] == 0 for r in rs)
            out[label] = {k: statistics.median(r[k] for r in rs) for k in ("import", "read", "build", "matcher")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--no-eql", action="store_true")
    ap.add_argument("--rules", choices=["published", "b"], default="published",
                    help="published: rules in the style of published packs (most fire rarely); b: scenario (b)'s "
                         "generator plus regex rules (most fire often)")
    a = ap.parse_args(argv)
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.rules import Rule
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    raw, ts, _inj = load_stream(ensure_stream(a.events, 7))
    raw = raw[:a.events]
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    gc.disable()
    evs = [norm.normalize(e, "bench") for e in raw]
    for i, e in enumerate(evs, 1):
        e.event_id = i
    gc.enable()
    rows = []
    for n in (int(x) for x in a.sizes.split(",")):
        spec = rules_published(n) if a.rules == "published" else rules_for(n)
        rules = [Rule(id=r["id"], name=r["id"], query=r["kestrel"]) for r in spec]
        res = {}
        for name in ("literal-index", "acdfa"):
            eps, builds, alerts = [], [], None
            for _ in range(a.runs):
                x, b, al = kestrel_run((schema, evs), rules, name)
                eps.append(x)
                builds.append(b)
                if alerts is None:
                    alerts = al
                assert al == alerts, f"{name}: runs differ"
            res[name] = (statistics.median(eps), statistics.median(builds), alerts)
        identical = res["literal-index"][2] == res["acdfa"][2]
        if a.no_eql:
            e_eps, skipped, limit = None, 0, 0
        else:
            limit = min(len(raw), max(1000, 200_000 // n))
            e_eps, skipped = eql_run(raw, ts, spec, limit)
        rows.append((n, res, identical, e_eps, skipped, limit))
        print(f"... {n} rules done", file=sys.stderr)
    print(f"\n{len(evs):,} events, batches of 1024, median of {a.runs} runs (eql: one run on a sample)\n")
    print("| rules | literal-index ev/s | acdfa ev/s | acdfa / literal-index | eql ev/s (events) | acdfa / eql | "
          "build ms, literal-index / acdfa | alerts | identical |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, res, identical, e_eps, skipped, limit in rows:
        li, ac = res["literal-index"], res["acdfa"]
        eql_cell = "-" if e_eps is None else f"{e_eps:,.0f} ({limit:,}{f', {skipped} rules unparsed' if skipped else ''})"
        ratio = "-" if e_eps is None else f"{ac[0] / e_eps:.1f}x"
        print(f"| {n:,} | {li[0]:,.0f} | {ac[0]:,.0f} | {ac[0] / li[0]:.2f}x | {eql_cell} | {ratio} | "
              f"{li[1] * 1000:.0f} / {ac[1] * 1000:.0f} | {len(li[2]):,} | {'PASS' if identical else 'FAIL'} |")
    n = max(int(x) for x in a.sizes.split(","))
    spec = rules_published(n) if a.rules == "published" else rules_for(n)
    lt = load_times(spec)
    print(f"\nPack load, {n:,} rules as one rule file, fresh process per run (median of 3), acdfa matcher:")
    print("| compile cache | read pack ms | engine build ms | load total (read + build) ms | of it acdfa ms | imports ms |")
    print("|---|---|---|---|---|---|")
    for label, t in lt.items():
        print(f"| {label} | {t['read'] * 1000:,.0f} | {t['build'] * 1000:,.0f} | {(t['read'] + t['build']) * 1000:,.0f} | "
              f"{t['matcher'] * 1000:,.0f} | {t['import'] * 1000:,.0f} |")
    return 0 if all(r[2] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
