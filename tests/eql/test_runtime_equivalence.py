"""The host runtime's fast code, its safe code and a direct interpreter of
the IR over the reference helpers (kestrel_core.eql.functions) agree on
random queries and random events (nulls, lists, odd types included)."""

from __future__ import annotations

import random

from kestrel_core.eql import functions as fn
from kestrel_core.eql.hostruntime import HostRuntime
from kestrel_core.eql.ir import compile_query


def interpret(q, nid, event):
    """Reference: three-valued evaluation of node ``nid`` on ``event``."""
    n = q.nodes[nid]
    a = [interpret(q, x, event) for x in n.args] if n.op not in ("and", "or") else None
    op = n.op
    if op == "const":
        return n.value
    if op == "field":
        return event.fields.get(n.field_id)
    if op == "and":
        vals = [interpret(q, x, event) for x in n.args]
        return False if any(v is False for v in vals) else (True if all(v is True for v in vals) else None)
    if op == "or":
        vals = [interpret(q, x, event) for x in n.args]
        return True if any(v is True for v in vals) else (False if all(v is False for v in vals) else None)
    if op == "not":
        return a[0] is not True  # must_not: true unless the operand is true
    if op in ("eq", "ne", "lt", "le", "gt", "ge"):
        return getattr(fn, op)(a[0], a[1])
    if op == "is_null":
        return fn.is_null(a[0])
    if op == "not_null":
        return not fn.is_null(a[0])
    if op == "in":
        return fn.in_(a[0], frozenset(v for v in n.value if v is not None), None in n.value, n.ci)
    if op in ("wildcard", "regex"):
        return fn.pattern_match(op, a[0], tuple(n.value), n.ci)
    if op == "call":
        return fn.call(n.value, n.ci, tuple(a))
    if op == "neg":
        return fn.neg(a[0])
    raise AssertionError(op)


STR_FIELDS = ["process.name", "process.executable", "?s"]
LIST_FIELDS = ["process.args", "?l"]
NUM_FIELDS = ["process.pid", "?n"]
WORDS = ["sh", "bash", "Bash", "a", "", "x*", "*sh", "b?sh", "*a*", "/tmp/*"]


def rand_leaf(r: random.Random) -> str:
    k = r.randrange(12)
    s = r.choice(STR_FIELDS + LIST_FIELDS)
    w = r.choice(WORDS)
    if k == 0:
        return f'{s} == "{w}"'
    if k == 1:
        return f'{s} != "{w}"'
    if k == 2:
        return f'{s} : "{w}"'
    if k == 3:
        return f'{s} like ("{w}", "{r.choice(WORDS)}")'
    if k == 4:
        return f'{s} in{r.choice(["", "~"])} ("{w}", "{r.choice(WORDS)}"{r.choice(["", ", null"])})'
    if k == 5:
        return f"{r.choice(NUM_FIELDS)} {r.choice(['<', '<=', '>', '>=', '==', '!='])} {r.randrange(-1, 4)}"
    if k == 6:
        return f"{r.choice(STR_FIELDS + LIST_FIELDS + NUM_FIELDS)} {r.choice(['==', '!='])} null"
    if k == 7:
        return f'{r.choice(["startsWith", "endsWith", "stringContains"])}{r.choice(["", "~"])}({s}, "{w.strip("*?")}")'
    if k == 8:
        return f'{s} regex{r.choice(["", "~"])} "{r.choice(["b.*", "[ab]+", ".*h", "BASH"])}"'
    if k == 9:
        return f"length({s}) {r.choice(['>', '=='])} {r.randrange(4)}"
    if k == 10:
        return f"{r.choice(NUM_FIELDS)} in ({r.randrange(3)}, {r.randrange(3)})"
    return f'{s} not in ("{w}")'


def rand_expr(r: random.Random, depth: int = 0) -> str:
    if depth > 2 or r.random() < 0.35:
        return rand_leaf(r)
    k = r.randrange(3)
    if k == 0:
        return f"({rand_expr(r, depth + 1)} and {rand_expr(r, depth + 1)})"
    if k == 1:
        return f"({rand_expr(r, depth + 1)} or {rand_expr(r, depth + 1)})"
    return f"not {rand_expr(r, depth + 1)}"


def test_fast_safe_and_reference_agree(ev, schema):
    r = random.Random(1234)
    values = ["sh", "bash", "Bash", "/tmp/sh", "a", "", None, "xash"]
    events = []
    for _ in range(60):
        fields = {
            "process__name": r.choice(values),
            "process__executable": r.choice(values),
            "process__args": r.choice([None, [], ["sh"], ["-c", "Bash"], ["a", "xash", "/tmp/q"]]),
            "process__pid": r.choice([None, 0, 1, 2, 3]),
        }
        # undeclared fields get odd types too
        fields["s"] = r.choice(values + [1, True, ["sh", 2]])
        fields["l"] = r.choice([None, [], ["sh"], ["a", 1], "sh"])
        fields["n"] = r.choice([None, 1, 2.5, "2", True, [1, 3]])
        fields = {k: v for k, v in fields.items() if v is not None or r.random() < 0.5}
        events.append(ev("process", **fields))
    rt = HostRuntime()
    checked = 0
    for _ in range(400):
        text = "process where " + rand_expr(r)
        q = compile_query(text, schema, strict="off")
        p = rt.compile(q.predicate(q.steps[0]), schema)
        fast = p.eval_batch(events)
        safe = p._safe["truth"](events)
        ref = [interpret(q, q.steps[0].pred, e) is True for e in events]
        assert fast == safe == ref, (text, p.source)
        checked += sum(ref)
    assert checked > 1000  # the queries do match things
