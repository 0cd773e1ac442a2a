"""What per-rule cost accounting costs: the engine with accounting on vs off.

    .venv/bin/python benchmarks/accounting_bench.py [--events N] [--runs R]

Rule sets: the bundled Linux pack (rules/linux) and scenario (b)'s 100
generated rules (benchmarks/scenarios.py).  Events: the generated Linux
fleet stream (benchmarks/generate.py, seed 7), normalized once.  Each run
builds a fresh engine and feeds the whole stream in batches of 1024.

* off: ``engine.accounting = False`` (the per-predicate clock reads of the
  batch watchdog, ``[budgets] rule_batch_ms``, stay: they predate accounting);
* on: accounting as ``kestrel run`` does it: per-unit totals, the sampled
  sequence timing, and the :class:`~kestrel_core.budgets.BudgetController`'s
  ``account`` + ``tick`` after every batch (window 2 s, as the default).

Runs alternate (off, on, then on, off, ...) so load drift on a shared machine
hits both; times are the engine thread's CPU time; the table gives the median engine time of each, and the overhead as
the median of the paired ratios (on / off of the same round), which drift
between rounds does not move.  On a loaded shared machine that A/B figure
moves by a few percent either way, more than accounting costs, so the table
also times the accounting work by itself (:func:`direct_cost`) and gives its
share of the engine's time with accounting off.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run import ensure_stream, load_stream  # noqa: E402


def one_run(schema, rules, events, accounting: bool) -> tuple[float, int]:
    from kestrel_core.budgets import BudgetController
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.profile import BudgetsSection
    from kestrel_core.runtime import Stats

    eng = DetectionEngine(schema, rules)
    eng.accounting = accounting
    ctl = BudgetController(BudgetsSection(), Stats()) if accounting else None
    if ctl is not None:
        ctl.tick(eng)
    n_alerts = 0
    clock = time.perf_counter_ns
    gc.collect()
    t0 = time.thread_time()  # CPU time of this thread: other processes' load moves it less than wall time
    for i in range(0, len(events), 1024):
        b0 = clock()
        n_alerts += len(eng.process_batch(events[i:i + 1024]))
        if ctl is not None:
            ctl.account(clock() - b0)
            ctl.tick(eng)
    n_alerts += len(eng.flush())
    return time.thread_time() - t0, n_alerts


def direct_cost(schema, rules, events) -> tuple[float, int]:
    """The accounting work of one run, timed by itself (seconds), and the
    entries accumulated: the per-unit additions replayed on the same timings
    (counted in a run), the sampled sequence timing's clock reads, and the
    controller's ``account`` + ``tick`` calls measured around them."""
    from kestrel_core.budgets import BudgetController
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.profile import BudgetsSection
    from kestrel_core.runtime import Stats

    eng = DetectionEngine(schema, rules)
    recorded: list[list[tuple[int, int, int]]] = []
    watchdog = eng._watchdog
    eng._watchdog = lambda timed: (recorded.append(list(timed)), watchdog(timed))
    ctl = BudgetController(BudgetsSection(), Stats())
    ctl.tick(eng)
    clock = time.perf_counter_ns
    ctl_ns = 0
    for i in range(0, len(events), 1024):
        b0 = clock()
        eng.process_batch(events[i:i + 1024])
        gc.disable()  # a collection the batch's allocations owe would otherwise land in this interval
        c0 = time.thread_time_ns()  # CPU time: a preemption by another process is not accounting's cost
        ctl.account(clock() - b0)
        ctl.tick(eng)
        ctl_ns += time.thread_time_ns() - c0
        gc.enable()
    unit_ns, unit_evals = [0] * len(eng.units), [0] * len(eng.units)
    gc.disable()  # as in process_batch, where this loop runs: no collection of the event heap inside it
    t0 = time.thread_time()
    for timed in recorded:  # the loop engine._watchdog runs when accounting is on
        for uid, ns, n in timed:
            unit_ns[uid] += ns
            unit_evals[uid] += n
    accum = time.thread_time() - t0
    seq_timings = len(eng.seq_rules) * (eng.batches // eng.sample_every)
    t0 = time.thread_time()
    for _ in range(seq_timings):
        a = clock()
        eng.seq_rules[0].seq_ns += (clock() - a) * 8
    seq = time.thread_time() - t0
    gc.enable()
    return accum + seq + ctl_ns / 1e9, sum(map(len, recorded))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args(argv)

    from benchmarks.scenarios import scenario_b
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.packs import load_packs
    from kestrel_core.rules import Rule
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    raw, _ts, _inj = load_stream(ensure_stream(a.events, 7))
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    events = [norm.normalize(e, "bench") for e in raw]
    sets = {
        "linux pack": load_packs([ROOT / "rules" / "linux"]).rules,
        "scenario (b), 100 rules": [Rule(id=r["id"], name=r["id"], query=r["kestrel"]) for r in scenario_b(100)],
    }
    print(f"{len(events):,} events, {a.runs} runs each (alternating), median engine CPU seconds\n")
    print("| rule set | rules | accounting off (s) | accounting on (s) | A/B overhead (median of paired ratios) "
          "| accounting work timed by itself | its share of engine time | alerts |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rules in sets.items():
        times: dict[bool, list[float]] = {False: [], True: []}
        alerts = set()
        one_run(schema, rules, events[:20_000], True)  # warm the compile cache and the interpreter
        for k in range(a.runs):
            for acc in ((False, True) if k % 2 == 0 else (True, False)):  # neither always goes first
                t, n = one_run(schema, rules, events, acc)
                times[acc].append(t)
                alerts.add(n)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        paired = statistics.median(b / a for a, b in zip(times[False], times[True]))
        assert len(alerts) == 1, f"accounting changed the alerts: {alerts}"
        work = statistics.median(direct_cost(schema, rules, events)[0] for _ in range(3))
        print(f"| {name} | {len(rules)} | {off:.3f} | {on:.3f} | {(paired - 1) * 100:+.2f}% | {work * 1000:.1f} ms "
              f"| {work / off * 100:.2f}% | {alerts.pop():,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
