"""Syntax tree produced by the parser (positions kept for diagnostics).

The tree is short-lived: :mod:`kestrel_core.eql.ir` lowers it to the IR
(predicate DAG + steps) after semantic checks.
"""

from __future__ import annotations

from typing import Any

import attrs

Pos = tuple  # (line, column), 1-based


@attrs.define(eq=False)
class Node:
    pos: Pos = attrs.field(kw_only=True, default=(1, 1))


@attrs.define(eq=False)
class Literal(Node):
    value: Any  # str, int, float, bool, None


@attrs.define(eq=False)
class Field(Node):
    path: str
    optional: bool = False


@attrs.define(eq=False)
class Call(Node):
    name: str  # canonical spelling, e.g. "startsWith"
    ci: bool  # the ~ variant
    args: list


@attrs.define(eq=False)
class Arith(Node):
    op: str  # + - * / %
    left: Node
    right: Node


@attrs.define(eq=False)
class Neg(Node):
    operand: Node


@attrs.define(eq=False)
class Compare(Node):
    op: str  # == != < <= > >=
    left: Node
    right: Node


@attrs.define(eq=False)
class In(Node):
    operand: Node
    values: list
    ci: bool
    negate: bool


@attrs.define(eq=False)
class Pattern(Node):
    kind: str  # "seq" (the ':' operator), "like", "regex"
    operand: Node
    patterns: list
    ci: bool


@attrs.define(eq=False)
class And(Node):
    items: list


@attrs.define(eq=False)
class Or(Node):
    items: list


@attrs.define(eq=False)
class Not(Node):
    operand: Node


@attrs.define(eq=False)
class EventQuery(Node):
    category: str | None  # None: any
    expr: Node


@attrs.define(eq=False)
class Step(Node):
    query: EventQuery
    keys: list  # list[Field]
    runs: int = 1
    missing: bool = False


@attrs.define(eq=False)
class Sequence(Node):
    by: list  # list[Field]
    maxspan_ns: int | None
    steps: list  # list[Step]
    until: Step | None


@attrs.define(eq=False)
class Pipe(Node):
    name: str  # head | tail
    count: int


@attrs.define(eq=False)
class Query(Node):
    body: Any  # EventQuery | Sequence
    pipes: list
    source: str = ""
