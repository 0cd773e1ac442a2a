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

# The generator names actions the way Elastic's endpoint does, as Kestrel's
# live sources now do too (schema 1.1); Defend has no Linux file-write event,
# where Kestrel's sources report open_write.  Network types as the live sources set them.
_LIVE_ACTIONS = {
    ("file", "modification"): ("open_write", ["change"]),
    ("network", "connection_attempted"): ("connection_attempted", ["connection"]),
    ("network", "connection_accepted"): ("connection_accepted", ["connection"]),
}


# The generator deletes files picked from a list that includes live system
# logs, from any process; real services delete rotated copies, never the live
# log (kestrel.linux.log_file_deleted watches the live ones).
_LIVE_LOGS = ("/var/log/auth.log", "/var/log/syslog", "/var/log/kern.log")


def live_shape(ev: dict) -> dict:
    """A generated event in the shape Kestrel's eBPF source records (in place)."""
    e = ev["event"]
    action = _LIVE_ACTIONS.get((e["category"][0], e["action"]))
    if action is not None:
        e["action"], e["type"] = action
    f = ev.get("file")
    if e["action"] == "deletion" and f["path"] in _LIVE_LOGS and "_story" not in ev:
        f["path"] += ".7.gz"
        f["name"] += ".7.gz"
        f["extension"] = "gz"
    e["module"] = "ebpf"
    e.pop("dataset", None)
    ev["host"].pop("os", None)
    user = ev.get("user")
    if user is not None:
        user.setdefault("effective", {"id": user["id"]})
    return ev


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)

    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.normalize import EcsJsonNormalizer
    from kestrel_core.packs import load_packs
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
        live_shape(e)
        s = e.pop("_story", None)
        if s:
            story[e["event"]["id"]] = s
        events.append(norm.normalize(e, "gen"))
    packset = load_packs([ROOT / "rules" / "linux"])
    assert packset.ok, [str(e) for e in packset.errors]
    rules = packset.rules
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
