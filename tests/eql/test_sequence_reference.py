"""The optimized sequence engine (batched marks, FIFO expiry, early rejection,
skipped stages) against a plain one-event-at-a-time reference of the same
Elasticsearch state machine, on random streams and batch sizes."""

from __future__ import annotations

import random

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.rules import Rule

S = 10**9


def reference(events, stages, until, maxspan, keyf):
    """stages: list of category names (positive steps); until: category or None."""
    n = len(stages)
    slots: dict = {}
    out = []
    for e in events:
        cat = e.raw["cat"]
        key = keyf(e)
        if key is None:
            continue
        for s in reversed(range(n)):
            if stages[s] != cat:
                continue
            if s == 0:
                if n == 1:
                    out.append([e])
                    continue
                slots.setdefault(key, [None] * n)[0] = [e]
                continue
            st = slots.get(key)
            if st is None or st[s - 1] is None:
                continue
            seq = st[s - 1]
            st[s - 1] = None
            if maxspan is not None and e.ts_mono_ns - seq[0].ts_mono_ns > maxspan:
                continue
            seq = seq + [e]
            if s == n - 1:
                out.append(seq)
            else:
                st[s] = seq
        if until is not None and cat == until:
            slots.pop(key, None)
    return [tuple(x.raw["n"] for x in seq) for seq in out]


def test_random_streams_match_the_reference(ev, schema):
    r = random.Random(77)
    total = 0
    for trial in range(60):
        n_steps = r.randint(2, 4)
        stages = [r.choice("abc") for _ in range(n_steps)]
        until = r.choice([None, "d", "c"])
        maxspan = r.choice([None, 3, 10])
        keyed = r.random() < 0.7
        events = []
        t = 0
        for i in range(r.randint(20, 200)):
            t += r.choice([0, 0, 1, 1, 2, 5])
            fields = {"cat": r.choice("abcd"), "n": i}
            if keyed:
                k = r.choice(["x", "y", "z", None])
                if k is not None:
                    fields["k"] = k
            events.append(ev(fields["cat"], ts=t * S, **fields))
        steps = " ".join(f"[{c} where true]" for c in stages)
        q = "sequence"
        if keyed:
            q += " by k"
        if maxspan is not None:
            q += f" with maxspan={maxspan}s"
        q += " " + steps
        if until:
            q += f" until [{until} where true]"
        keyf = (lambda e: e.raw.get("k")) if keyed else (lambda e: ())
        want = reference(events, stages, until, None if maxspan is None else maxspan * S, keyf)
        total += len(want)
        for batch in (1, 5, 64, 1000):
            eng = DetectionEngine(schema, [Rule(id="r", name="r", query=q)], strict="off")
            got = []
            for i in range(0, len(events), batch):
                got += [tuple(x.raw["n"] for x in a.events) for a in eng.process_batch(events[i : i + batch])]
            got += [tuple(x.raw["n"] for x in a.events) for a in eng.flush()]
            assert got == want, (trial, q, batch)
    assert total > 300
