"""Seeded generator of random event sets and random EQL queries drawn from a small
grammar of constructs on which Elasticsearch EQL semantics (Kestrel's target) and
the Endgame semantics of the `eql` package coincide.  See README.md for why each
construct is in or out.

Invariants the grammar relies on:
  * every generated event has every field (name, n, h) with a non-null value, so
    no three-valued logic is involved (eql folds null differently under `not`);
  * string matching is only done with case-insensitive forms (`:`, like~, in~,
    regex~, fn~), `:`/like~ patterns use `*` only (eql treats `?` literally),
    regex~ patterns end in `.*` (eql anchors a regex at the start only);
  * numbers are small non-negative integers, divisors positive (Python floor and
    Java truncation agree there);
  * sequences: timestamps strictly increase (no ties); maxspan in whole seconds;
    `until` uses the `network` category, which no step uses, so an event never is
    both an expiration event and a step event; no head/tail on sequences (eql
    orders sequence output by the last event, ES by the first).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["cmd.exe", "CMD.EXE", "Cmd.exe", "powershell.exe", "PowerShell.EXE", "svchost.exe",
         "abc", "ABC.txt", "note.txt", "notepad.exe", "a.b.c", "xcmd.exe"]
CATEGORIES = ["process", "file"]
HOSTS = ["h1", "h2", "h3"]


@dataclass
class GenCase:
    seed: int
    query: str
    events: list[dict]


def gen_events(rng: random.Random, count: int, with_network: bool) -> list[dict]:
    t = 1_700_000_000_000
    events = []
    cats = CATEGORIES + (["network"] if with_network else [])
    for i in range(1, count + 1):
        t += rng.choice([500, 1000, 1500, 2000, 3000, 5000, 8000])
        events.append({
            "id": i,
            "category": rng.choice(cats),
            "ts_ms": t,
            "name": rng.choice(NAMES),
            "n": rng.randrange(0, 10),
            "h": rng.choice(HOSTS),
        })
    return events


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _case_mix(rng: random.Random, s: str) -> str:
    return "".join(c.upper() if rng.random() < 0.4 else c.lower() for c in s)


def _fragment(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    start = rng.randrange(0, len(name))
    end = rng.randrange(start + 1, len(name) + 1)
    return _case_mix(rng, name[start:end])


def _wildcard(rng: random.Random) -> str:
    shape = rng.randrange(5)
    frag = _fragment(rng)
    if shape == 0:
        return frag + "*"
    if shape == 1:
        return "*" + frag
    if shape == 2:
        return "*" + frag + "*"
    if shape == 3:
        return _case_mix(rng, rng.choice(NAMES))
    other = _fragment(rng)
    return frag + "*" + other


def _regex_prefix(rng: random.Random) -> str:
    frag = _fragment(rng)
    escaped = "".join("\\." if c == "." else c for c in frag)
    return rng.choice(["", ".*"]) + escaped + ".*"


def gen_comparison(rng: random.Random) -> str:
    kind = rng.randrange(13)
    if kind == 0:
        return f"name : {_q(_wildcard(rng))}"
    if kind == 1:
        pats = ", ".join(_q(_wildcard(rng)) for _ in range(rng.randrange(1, 4)))
        return f"name : ({pats})"
    if kind == 2:
        return f"name like~ {_q(_wildcard(rng))}"
    if kind == 3:
        vals = ", ".join(_q(_case_mix(rng, rng.choice(NAMES))) for _ in range(rng.randrange(1, 4)))
        neg = rng.choice(["", "not "])
        return f"name {neg}in~ ({vals})"
    if kind == 4:
        return f"name regex~ {_q(_regex_prefix(rng))}"
    if kind == 5:
        op = rng.choice(["==", "!=", "<", "<=", ">", ">="])
        return f"n {op} {rng.randrange(0, 10)}"
    if kind == 6:
        vals = ", ".join(str(rng.randrange(0, 10)) for _ in range(rng.randrange(1, 4)))
        neg = rng.choice(["", "not "])
        return f"n {neg}in ({vals})"
    if kind == 7:
        fn = rng.choice(["startsWith~", "endsWith~", "stringContains~"])
        return f"{fn}(name, {_q(_fragment(rng))})"
    if kind == 8:
        op = rng.choice(["==", "<", ">="])
        return f"length(name) {op} {rng.randrange(3, 15)}"
    if kind == 9:
        fn = rng.choice(["add", "multiply", "subtract"])
        return f"{fn}(n, {rng.randrange(0, 4)}) {rng.choice(['==', '>', '<='])} {rng.randrange(0, 20)}"
    if kind == 10:
        op = rng.choice(["+", "*", "-"])
        return f"n {op} {rng.randrange(1, 4)} {rng.choice(['==', '<', '>='])} {rng.randrange(0, 20)}"
    if kind == 11:
        op = rng.choice(["/", "%"])
        return f"n {op} {rng.randrange(1, 4)} == {rng.randrange(0, 4)}"
    return rng.choice(["true", "false"])


def gen_condition(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth >= 2 or r < 0.45:
        return gen_comparison(rng)
    if r < 0.65:
        return f"{gen_condition(rng, depth + 1)} and {gen_condition(rng, depth + 1)}"
    if r < 0.85:
        return f"({gen_condition(rng, depth + 1)} or {gen_condition(rng, depth + 1)})"
    return f"not ({gen_condition(rng, depth + 1)})"


def gen_event_query(rng: random.Random) -> str:
    cat = rng.choice(CATEGORIES + ["any"])
    q = f"{cat} where {gen_condition(rng)}"
    r = rng.random()
    if r < 0.15:
        q += f" | head {rng.randrange(1, 5)}"
    elif r < 0.3:
        q += f" | tail {rng.randrange(1, 5)}"
    return q


def gen_sequence(rng: random.Random, until: bool) -> str:
    steps = rng.randrange(2, 4)
    head = "sequence"
    seq_by = rng.random() < 0.5
    if seq_by:
        head += " by h"
    if rng.random() < 0.5:
        head += f" with maxspan={rng.choice(['3s', '5s', '10s', '20s', '1m'])}"
    step_by = (not seq_by) and rng.random() < 0.3
    parts = [head]
    for _ in range(steps):
        cat = rng.choice(CATEGORIES) if until else rng.choice(CATEGORIES + ["any"])
        step = f"[{cat} where {gen_condition(rng, 1)}]"
        if step_by:
            step += " by h"
        parts.append(step)
    if until:
        u = f"until [network where {gen_condition(rng, 1)}]"
        if step_by:
            u += " by h"
        parts.append(u)
    return "\n  ".join(parts)


def generate(seed: int) -> GenCase:
    rng = random.Random(seed)
    kind = rng.random()
    if kind < 0.5:
        query = gen_event_query(rng)
        events = gen_events(rng, rng.randrange(5, 25), with_network=False)
    else:
        until = rng.random() < 0.3
        query = gen_sequence(rng, until)
        events = gen_events(rng, rng.randrange(6, 30), with_network=until)
    return GenCase(seed, query, events)


def generate_dense(seed: int) -> GenCase:
    """Long event streams with few distinct values, so that many partial sequences
    compete (overwrites, maxspan expiry, until) — same coinciding subset as above."""
    rng = random.Random(seed)
    until = rng.random() < 0.35
    cats = ["process", "file"] + (["network"] if until else [])
    t = 1_700_000_000_000
    events = []
    for i in range(1, rng.randrange(30, 90)):
        t += rng.choice([1000, 2000, 3000, 4000])
        events.append({"id": i, "category": rng.choice(cats), "ts_ms": t,
                       "name": rng.choice(["a", "A", "b", "B", "c"]), "n": rng.randrange(0, 3),
                       "h": rng.choice(["h1", "h2"])})
    steps = []
    for _ in range(rng.randrange(2, 5)):
        cat = rng.choice(["process", "file"] + ([] if until else ["any"]))
        cond = rng.choice([f'name : "{rng.choice("abc")}"', f"n == {rng.randrange(0, 3)}", "true",
                           f'name in~ ("{rng.choice("abc")}", "{rng.choice("abc")}")'])
        steps.append(f"[{cat} where {cond}]")
    head = "sequence"
    if rng.random() < 0.6:
        head += " by h"
    if rng.random() < 0.6:
        head += f" with maxspan={rng.choice([3, 5, 8, 12, 30])}s"
    query = " ".join([head, *steps])
    if until:
        query += f' until [network where name : "{rng.choice("abc")}"]'
    return GenCase(seed, query, events)
