"""Run the bundled Linux rule pack (rules/linux) over the generated stream
and report alerts per rule next to the attack stories injected, plus alerts
raised by benign events (false positives against this simulation).

    .venv/bin/python benchmarks/pack_coverage.py [--events 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.generate import Generator  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)

    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.rules import load_rule_pack
    from kestrel_core.runtime import RunContext
    from kestrel_core.schema import Schema

    g = Generator(seed=a.seed)
    raw = g.generate(a.events)
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    events = []
    story = {}
    for e in raw:
        e.pop("_ts_us", None)
        s = e.pop("_story", None)
        if s:
            story[e["event"]["id"]] = s
        events.append(norm.normalize(e, "gen"))
    rules, errors = load_rule_pack([ROOT / "rules" / "linux"])
    assert not errors, errors
    eng = DetectionEngine(schema, rules)
    t = time.perf_counter()
    alerts = []
    for i in range(0, len(events), 1024):
        alerts += eng.process_batch(events[i:i + 1024])
    alerts += eng.flush()
    dt = time.perf_counter() - t
    per_rule = Counter(al.rule_id for al in alerts)
    benign = [al for al in alerts if not any(ev.raw["event"]["id"] in story for ev in al.events)]
    by_story = Counter((al.rule_id, story.get(al.events[-1].raw["event"]["id"], "-")) for al in alerts)
    print(f"{a.events:,} events, {len(rules)} rules, {len(alerts)} alerts, {a.events / dt:,.0f} ev/s")
    print("injected stories:", dict(sorted(g.injected.items())))
    print(f"alerts with no story event (benign false positives): {len(benign)}")
    for al in benign[:10]:
        print("   FP", al.rule_id, [ev.raw.get("process", {}).get("command_line") for ev in al.events])
    for rid in sorted(r.id for r in rules):
        src = ", ".join(f"{s}:{n}" for (r_, s), n in sorted(by_story.items()) if r_ == rid)
        print(f"  {per_rule.get(rid, 0):6d}  {rid}  [{src}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
