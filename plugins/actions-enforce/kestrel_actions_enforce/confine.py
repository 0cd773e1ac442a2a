"""deny-connect rules -> cgroup connect denies for the confined cgroups.

A connect is refused in the kernel (cgroup/connect4+6 program, before the
SYN), where no rule can run; so what a rule may ask for is what the
program's map holds: (cgroup, destination address, destination port or
any).  A single-event enforce-mode rule with ``deny-connect`` is enforced
for every cgroup in the action's ``confine_cgroups`` when its condition is a
conjunction of

* ``destination.ip == "a.b.c.d"`` or ``destination.ip in (...)`` (required),
* ``destination.port == N`` or ``destination.port in (...)`` (optional: any port),
* conditions on ``event.*`` fields (they describe the connect itself).

Anything else (a process name, an ``or``, a CIDR, a sequence) cannot be
checked by the kernel program: such a rule is not confined (logged, with
the reason) and its alerts still block through the per-alert path.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Iterable

from kestrel_core.eql.errors import EqlError

log = logging.getLogger("kestrel.enforce")


def connect_targets(rule: Any, schema: Any) -> tuple[list[tuple[str, int]], str | None]:
    """((ip, port or 0) pairs, None) or ([], why the rule cannot be confined)."""
    from kestrel_core.exceptionlists import compile_rule_query

    try:  # with the rule's exceptions: an excepted connect must not be refused in the kernel
        q = compile_rule_query(rule, schema, strict="off")
    except EqlError as exc:
        return [], f"query does not compile: {exc.message}"
    if q.kind != "event":
        return [], "a sequence cannot be decided by the connect program"
    nodes = q.nodes
    root = nodes[q.steps[0].pred]
    conjuncts = [nodes[a] for a in root.args] if root.op == "and" else [root]
    ips: set[str] = set()
    ports: set[int] = set()
    for c in conjuncts:
        field = nodes[c.args[0]] if c.args and nodes[c.args[0]].op == "field" else None
        path = field.value if field is not None else None
        values: tuple = ()
        if c.op == "eq" and len(c.args) == 2 and nodes[c.args[1]].op == "const":
            values = (nodes[c.args[1]].value,)
        elif c.op == "in":
            values = tuple(c.value)
        if path == "destination.ip" and values:
            ips.update(str(v) for v in values)
        elif path == "destination.port" and values:
            ports.update(int(v) for v in values)
        elif path is not None and path.startswith("event."):
            continue
        else:
            return [], "its condition has more than literal destination.ip/destination.port constraints"
    if not ips:
        return [], "no literal destination.ip constraint"
    return sorted(itertools.product(sorted(ips), sorted(ports) or [0])), None


def confine_plan(rules: Iterable[Any], schema: Any, cgroups: list[str]) -> dict[tuple[str, str, int], str]:
    """(cgroup, ip, port) -> rule id for the enforce-mode deny-connect rules that can be confined."""
    plan: dict[tuple[str, str, int], str] = {}
    if not cgroups:
        return plan
    for rule in rules:
        if not rule.enabled or rule.mode != "enforce" or "deny-connect" not in rule.actions:
            continue
        targets, why = connect_targets(rule, schema)
        if why:
            log.warning("enforce: rule %s: deny-connect not confined in the kernel: %s (it blocks per alert)",
                        rule.id, why)
            continue
        for cgroup in cgroups:
            for ip, port in targets:
                plan.setdefault((cgroup, ip, port), rule.id)
    return plan
