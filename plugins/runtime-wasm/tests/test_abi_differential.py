"""The generated Wasm against the ABI's executable meaning: random IR units
(every native leaf of docs/predicate-abi.md on every slot kind, including
forms the EQL front end no longer emits, such as ``ne`` on a field, plus
host tests, constants and deep and/or/not) over random events, evaluated by
wasm, by the reference runtime ``abi-ref`` and by the host runtime."""

from __future__ import annotations

import random

import pytest

from kestrel_core.eql.abi import AbiUnit, ReferenceRuntime
from kestrel_core.eql.hostruntime import HostRuntime
from kestrel_core.eql.ir import Node, Predicate
from kestrel_core.testing import make_context, make_event
from kestrel_runtime_wasm import WasmPredicateRuntime, WasmSettings

STRS = ["bash", "sh", "SH", "curl", "", "a b", "é"]
NUMS = [0, 1, 2, 5, -3, 2.5, 100, 2**40]
FIELDS = {"process.name": ("str", False), "process.pid": ("num", False), "process.args": ("str", True),
          "destination.ip": ("ip", False), "custom.x": ("any", False)}


class _Gen:
    def __init__(self, rng: random.Random, schema) -> None:
        self.rng = rng
        self.schema = schema
        self.nodes: list[Node] = []

    def add(self, op, args=(), **kw) -> int:
        self.nodes.append(Node(len(self.nodes), op, tuple(args), **kw))
        return len(self.nodes) - 1

    def field(self, path: str) -> int:
        t, multi = FIELDS[path]
        return self.add("field", value=path, field_id=self.schema.resolve(path), type=t, multi=multi)

    def const(self, v) -> int:
        t = "null" if v is None else ("str" if isinstance(v, str) else "num")
        return self.add("const", value=v, type=t)

    def leaf(self) -> int:
        r = self.rng
        path = r.choice(list(FIELDS))
        kind = FIELDS[path][0]
        choice = r.random()
        if choice < 0.15:
            return self.add(r.choice(["is_null", "not_null"]), (self.field(path),), type="bool")
        if choice < 0.25:
            return self.add("const", value=r.choice([True, False, None]), type="bool")
        if kind == "num":
            if choice < 0.7:
                return self.add(r.choice(["eq", "ne", "lt", "le", "gt", "ge"]), (self.field(path), self.const(r.choice(NUMS))),
                                type="bool")
            vals = tuple(r.sample(NUMS, r.randint(1, 4))) + ((None,) if r.random() < 0.3 else ())
            return self.add("in", (self.field(path),), value=vals, type="bool")
        if kind == "any":
            return self.add("eq", (self.field(path), self.const(r.choice(STRS + NUMS))), type="bool")
        pool = STRS if kind == "str" else ["10.0.0.1", "::1", "192.168.1.1"]
        if choice < 0.6:
            return self.add(r.choice(["eq", "ne"]), (self.field(path), self.const(r.choice(pool))), type="bool")
        if choice < 0.85:
            vals = tuple(r.sample(pool, r.randint(1, 3))) + ((None,) if r.random() < 0.3 else ())
            return self.add("in", (self.field(path),), value=vals, type="bool")
        return self.add("wildcard", (self.field(path),), value=(r.choice(["*sh*", "b*", "?"]),), ci=r.random() < 0.5,
                        type="bool")

    def expr(self, depth: int) -> int:
        r = self.rng
        if depth == 0 or r.random() < 0.3:
            return self.leaf()
        op = r.choice(["and", "or", "not"])
        if op == "not":
            return self.add("not", (self.expr(depth - 1),), type="bool")
        return self.add(op, [self.expr(depth - 1) for _ in range(r.randint(2, 3))], type="bool")


def _event(ctx, rng, i):
    f = {}
    cat = rng.choice(["process", "network"])
    if rng.random() < 0.8:
        f["process__name"] = rng.choice(STRS)
    if rng.random() < 0.8:
        f["process__pid"] = rng.choice(NUMS)
    if rng.random() < 0.7:
        f["process__args"] = rng.sample(STRS, rng.randint(0, 3))
    if rng.random() < 0.5:
        f["destination__ip"] = rng.choice(["10.0.0.1", "::1", "192.168.1.1"])
    if rng.random() < 0.5:
        f["custom__x"] = rng.choice(STRS + NUMS + [[], ["sh"], True])
    return make_event(ctx, cat, i, i + 1, **f)


@pytest.mark.parametrize("seed", range(12))
def test_random_units_match_the_reference_and_host_runtimes(seed):
    rng = random.Random(seed)
    ctx = make_context()
    units, preds = [], []
    for uid in range(40):
        g = _Gen(rng, ctx.schema)
        root = g.expr(rng.randint(1, 4))
        cat = rng.choice(["process", "network", None])
        units.append(AbiUnit(uid, cat, tuple(g.nodes), root))
        preds.append(Predicate(tuple(g.nodes), root, cat))
    events = [_event(ctx, rng, i) for i in range(300)]
    wasm = WasmPredicateRuntime(WasmSettings(disk_cache=False), None).compile_rule_set(units, ctx.schema)
    ref = ReferenceRuntime(None, None).compile_rule_set(units, ctx.schema)
    for lo in range(0, len(events), 64):
        batch = events[lo:lo + 64]
        got, want = wasm.eval_units(batch), ref.eval_units(batch)
        assert not got.failed
        assert got.hits == want.hits
        for u, p in zip(units, preds):
            host = HostRuntime().compile(p, ctx.schema).eval_batch(batch)
            assert got.hits.get(u.id, []) == [i for i, x in enumerate(host) if x], (u.id, p)
    assert sum(1 for e in wasm.program.exprs if e.op == "cmp" and e.cmp == "ne") >= 3  # the forms are covered
    assert any(e.op == "in" and e.has_null for e in wasm.program.exprs)
