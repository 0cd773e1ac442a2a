"""Rule exceptions: structured entries that keep known-good activity from alerting.

An entry is a reason, an optional ``expires`` date and one condition (or
``all = [...]`` conditions that must all hold): a field, an operator and
values.  A rule's own ``[[exception]]`` tables and the entries of the shared
lists it names (``exception_lists = ["package_managers"]``, defined under
``[lists.NAME]`` in any loaded pack's ``pack.toml``) are compiled *into the
rule's predicate* as ``<query> and not (entry or entry ...)`` on every
positive step, built as syntax tree nodes like the query's own, so push-down,
the literal prefilter, the matchers and the lazy DFA all see them.

Operators (EQL's): ``==`` (exact; several values: any of them), ``in``,
``:`` (case-insensitive wildcard), ``wildcard`` (case-sensitive wildcard,
EQL ``like``) and ``cidr`` (EQL ``cidrMatch``).  See docs/rule-packs.md.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
from typing import Any, Callable

import attrs

Report = Callable[[str, int, int, "str | None"], None]
"""Where problems go: (message, line, column, source line); the caller makes them located RuleErrors."""

OPS = ("==", ":", "in", "wildcard", "cidr")
ENTRY_KEYS = ("reason", "expires", "field", "op", "value", "values", "all")
CONDITION_KEYS = ("field", "op", "value", "values")
LIST_KEYS = ("description", "entry")


@attrs.define(frozen=True)
class Condition:
    field: str
    op: str
    values: tuple[Any, ...]

    def canonical(self) -> dict[str, Any]:
        return {"field": self.field, "op": self.op, "values": list(self.values)}


@attrs.define(frozen=True)
class ExceptionEntry:
    reason: str
    conditions: tuple[Condition, ...]
    """All must hold for the entry to except an event."""
    expires: datetime.date | None = None
    list_name: str | None = None
    """The shared list it comes from (None: the rule's own)."""
    file: str | None = attrs.field(default=None, eq=False)
    line: int | None = attrs.field(default=None, eq=False)
    column: int | None = attrs.field(default=None, eq=False)
    field_pos: tuple[tuple[int, int, str | None], ...] = attrs.field(default=(), eq=False)
    """(line, column, source line) of each condition's field, for errors found after loading."""

    def canonical(self) -> dict[str, Any]:
        return {"reason": self.reason, "list": self.list_name,
                "expires": self.expires.isoformat() if self.expires else None,
                "all": [c.canonical() for c in self.conditions]}

    def expired(self, today: datetime.date) -> bool:
        """In force through its ``expires`` day (UTC) inclusive."""
        return self.expires is not None and today > self.expires


def utc_today() -> datetime.date:
    """The day exceptions are judged on: the UTC date when the packs are loaded."""
    return datetime.datetime.now(datetime.timezone.utc).date()


# --------------------------------------------------------------------------- parsing


def _find_text(lines: list[str], block: tuple[int, int], needle: str) -> tuple[int, int, str] | None:
    """(1-based line, column, source line) of the first quoted ``needle`` in the block's lines."""
    start, end = block
    for quote in ('"', "'"):
        text = f"{quote}{needle}{quote}"
        for i in range(max(start, 0), min(end, len(lines))):
            col = lines[i].find(text)
            if col >= 0:
                return i + 1, col + 1, lines[i]
    return None


def _values(table: dict[str, Any], what: str) -> tuple[tuple[Any, ...] | None, str | None]:
    if "value" in table and "values" in table:
        return None, f"{what}: give 'value' or 'values', not both"
    if "value" in table:
        raw = [table["value"]]
    elif "values" in table:
        raw = table["values"]
        if not isinstance(raw, list) or not raw:
            return None, f"{what}: 'values' must be a non-empty list"
    else:
        return None, f"{what}: missing 'value' (or 'values')"
    for v in raw:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            return None, f"{what}: values must be strings or numbers, not {type(v).__name__}"
    return tuple(raw), None


_TOML_KIND = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a table",
              datetime.time: "a time of day"}


def _hint(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"did you mean '{close[0]}'?" if close else f"keys: {', '.join(valid)}"


def parse_entries(tables: Any, lines: list[str], blocks: list[tuple[int, int]], file: str, where: str,
                  report: Report, list_name: str | None = None) -> list[ExceptionEntry]:
    """The entries of an array of ``[[exception]]`` (or ``[[lists.NAME.entry]]``)
    tables (``blocks``: their line ranges); every problem goes to ``report``."""
    out: list[ExceptionEntry] = []
    if not isinstance(tables, list):
        ln = blocks[0][0] + 1 if blocks else 1
        report(f"'{where}' must be an array of tables: write [[{where}]]", ln, 1, None)
        return out
    for n, table in enumerate(tables):
        block = blocks[n] if n < len(blocks) else (-1, len(lines))
        header = block[0] + 1 if block[0] >= 0 else 1
        label = f"[[{where}]] #{n + 1}"
        bad = False

        cond_at: str | None = None  # inside 'all = [...]': the condition's field, whose line it is on

        def err(msg: str, needle: str | None = None, key: str | None = None) -> None:
            pos = _find_text(lines, block, needle) if needle is not None else None
            if pos is None and cond_at is not None:
                pos = _find_text(lines, block, cond_at)
            if pos is None and key is not None:  # the key's own line
                for i in range(max(block[0] + 1, 0), min(block[1], len(lines))):
                    if lines[i].lstrip().startswith(key):
                        pos = (i + 1, len(lines[i]) - len(lines[i].lstrip()) + 1, lines[i])
                        break
            nonlocal bad
            bad = True
            ln, col, src = pos or (header, 1, lines[header - 1] if 0 < header <= len(lines) else None)
            report(msg, ln, col, src)

        if not isinstance(table, dict):
            err(f"{label} must be a table")
            continue
        for key in table:
            if key not in ENTRY_KEYS:
                err(f"unknown key '{key}' in {label} ({_hint(key, ENTRY_KEYS)})", key=key)
        reason = table.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            err(f"{label} needs a 'reason' (why this activity is known to be good)", key="reason")
        expires = table.get("expires")
        if isinstance(expires, str):
            try:
                expires = datetime.date.fromisoformat(expires)
            except ValueError:
                err(f"{label}: 'expires' must be a date such as 2027-01-31, not '{expires}'", needle=expires)
                expires = None
        elif expires is not None and (isinstance(expires, datetime.datetime)
                                      or not isinstance(expires, datetime.date)):
            what = ("no time of day" if isinstance(expires, datetime.datetime)
                    else f"not {expires!r}, " + _TOML_KIND.get(type(expires), type(expires).__name__))
            err(f"{label}: 'expires' must be a date such as 2027-01-31 ({what})", key="expires")
            expires = None
        if "all" in table:
            if any(k in table for k in CONDITION_KEYS):
                err(f"{label}: give one condition (field, op, values) or 'all = [...]', not both", key="all")
                continue
            raw = table["all"]
            if not isinstance(raw, list) or not raw or not all(isinstance(c, dict) for c in raw):
                err(f"{label}: 'all' must be a non-empty list of {{field, op, values}} tables", key="all")
                continue
        else:
            raw = [{k: table[k] for k in CONDITION_KEYS if k in table}]
        conds = []
        for c in raw:
            cond_at = c["field"] if "all" in table and isinstance(c.get("field"), str) and c["field"] else None
            for key in c:
                if key not in CONDITION_KEYS:
                    err(f"unknown key '{key}' in a condition of {label} ({_hint(key, CONDITION_KEYS)})", key="all")
            field, op = c.get("field"), c.get("op")
            if not isinstance(field, str) or not field:
                err(f"{label}: a condition needs 'field' (an ECS field name)", key="field")
                continue
            if op not in OPS:
                shown = op if isinstance(op, str) else None
                close = ([o for o in OPS if o == op.lower()] or difflib.get_close_matches(op, OPS, n=1)
                         if isinstance(op, str) else [])
                hint = f"did you mean '{close[0]}'? " if close else ""
                err(f"{label}: unknown operator {op!r} for {field} ({hint}operators: {', '.join(OPS)})"
                    if op is not None else f"{label}: a condition on {field} needs 'op' ({', '.join(OPS)})",
                    needle=shown, key="op")
                continue
            values, msg = _values(c, f"{label} ({field} {op})")
            if msg:
                err(msg, key="value")
                continue
            assert values is not None
            if op in (":", "wildcard") and not all(isinstance(v, str) for v in values):
                err(f"{label}: the '{op}' operator takes string patterns", key="value")
                continue
            if op == "cidr":
                for v in values:
                    try:
                        ipaddress.ip_network(v if isinstance(v, str) else "", strict=False)
                    except ValueError:
                        err(f"{label}: bad cidr {v!r} for {field} (write an address or network such as "
                            "10.0.0.0/8 or fd00::/8)", needle=v if isinstance(v, str) else None, key="value")
                        break
                else:
                    conds.append(Condition(field, op, values))
                continue
            conds.append(Condition(field, op, values))
        if bad:
            continue
        fpos = tuple(_find_text(lines, block, c.field) or (header, 1, None) for c in conds)
        out.append(ExceptionEntry(reason=reason, conditions=tuple(conds), expires=expires, list_name=list_name,
                                  file=file, line=header, column=1, field_pos=fpos))
    return out


def check_fields(entries: list[ExceptionEntry], schema: Any, report: Callable[[ExceptionEntry, str, int, int,
                                                                               "str | None"], None]) -> None:
    """An entry naming a field the schema does not know could never match: an error, with the nearest field."""
    from .eql.ir import _nearest_field

    for e in entries:
        for c, (ln, col, src) in zip(e.conditions, e.field_pos or ((e.line, 1, None),) * len(e.conditions)):
            fd = schema.get(c.field)
            if fd is None or not fd.declared:
                near = _nearest_field(schema, c.field)
                hint = f"; did you mean {near}?" if near else ""
                report(e, f"unknown field '{c.field}' in an exception{hint}", ln, col, src)


# --------------------------------------------------------------------------- compiling


def exception_node(entries: tuple[ExceptionEntry, ...]) -> Any:
    """``not (entry or entry ...)`` as EQL syntax tree nodes (None when there are no entries)."""
    from .eql import ast as A

    def cond(c: Condition) -> Any:
        f = A.Field(c.field)
        lits = [A.Literal(v) for v in c.values]
        if c.op == "==" and len(lits) == 1:
            return A.Compare("==", f, lits[0])
        if c.op in ("==", "in"):
            return A.In(f, lits, False, False)
        if c.op == ":":
            return A.Pattern("seq", f, lits, True)
        if c.op == "wildcard":
            return A.Pattern("like", f, lits, False)
        return A.Call("cidrMatch", False, [f, *lits])

    items = []
    for e in entries:
        parts = [cond(c) for c in e.conditions]
        items.append(parts[0] if len(parts) == 1 else A.And(parts))
    if not items:
        return None
    return A.Not(items[0] if len(items) == 1 else A.Or(items))


def with_exceptions(tree: Any, entries: tuple[ExceptionEntry, ...]) -> Any:
    """The parsed query with the exceptions and-ed into every positive step (in place)."""
    from .eql import ast as A

    def guard(q: Any) -> None:
        node = exception_node(entries)
        if node is not None:
            q.expr = A.And([q.expr, node], pos=q.expr.pos)

    body = tree.body
    if isinstance(body, A.EventQuery):
        guard(body)
    else:
        for step in body.steps:
            if not step.missing:  # an excepted event must not complete a "missing" step either way
                guard(step.query)
    return tree


def compile_rule_query(rule: Any, schema: Any, *, strict: str = "warn") -> Any:
    """The rule's IR: its query, with its exceptions compiled in.  Rules with
    exceptions bypass the persistent compile cache (its entries are keyed
    by query text alone)."""
    from .eql import compilecache, ir

    if not rule.exceptions:
        return compilecache.compile_query(rule.query, schema, strict=strict, source_name=rule.source_name)
    from .eql.parser import parse  # here: lark stays out of a run whose compile cache holds every rule

    tree = with_exceptions(parse(rule.query, rule.source_name), tuple(rule.exceptions))
    return ir.compile_query(tree, schema, strict=strict, source_name=rule.source_name)
