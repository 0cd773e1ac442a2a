"""Which fields the sources emit, and which rules read fields none of them does.

A source declares its event kinds and their fields with the classmethod
``Source.emitted_kinds()`` (:class:`~kestrel_core.interfaces.EmittedKind`),
``EMITS_ANY`` when its input decides (``jsonl``, ``klog``), or nothing.
``kestrel fields`` lists the declarations of the installed sources;
``kestrel rules check`` compares every rule's fields with what the installed
(or a profile's) declaring sources emit and warns, per rule, located, when a
rule reads a field none of them emits.
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from .interfaces import EMITS_ANY, EmittedKind


@attrs.define
class SourceFields:
    plugin: str
    source: str
    kinds: tuple[EmittedKind, ...] | str | None
    """The declaration: kinds, ``EMITS_ANY``, or None (not declared)."""
    error: str | None = None
    """The plugin failed to load, or its declaration raised."""

    @property
    def declared(self) -> bool:
        return isinstance(self.kinds, tuple)

    def fields(self) -> dict[str, list[str]]:
        """field path -> names of the kinds that carry it (declared sources only)."""
        out: dict[str, list[str]] = {}
        for kind in self.kinds if self.declared else ():
            for path in kind.fields:
                out.setdefault(path, []).append(kind.name)
        return dict(sorted(out.items()))


def _declaration(plugin: str, cls: Any) -> SourceFields:
    try:
        kinds = cls.emitted_kinds()
        if kinds is not None and kinds != EMITS_ANY:
            kinds = tuple(kinds)
            if not all(isinstance(k, EmittedKind) for k in kinds):
                raise TypeError("emitted_kinds() must return EmittedKind objects, EMITS_ANY or None")
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported by name
        return SourceFields(plugin, cls.PLUGIN_NAME, None, f"emitted_kinds() raised {type(exc).__name__}: {exc}")
    return SourceFields(plugin, cls.PLUGIN_NAME, kinds)


def installed_sources() -> list[SourceFields]:
    """Every installed plugin's sources with their declarations; a plugin that
    fails to import is listed with its error (as ``kestrel plugins list``)."""
    from importlib.metadata import entry_points

    from .plugins import BUILTIN_PLUGIN, ENTRY_POINT_GROUP, PluginHost

    out = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name != BUILTIN_PLUGIN, e.name)):
        host = PluginHost()
        try:
            host.add_module(ep.name, ep.load())
        except Exception as exc:  # noqa: BLE001 - listed, not fatal
            out.append(SourceFields(ep.name, "?", None, f"plugin failed to load: {type(exc).__name__}: {exc}"))
            continue
        for role, comp in host.registry.components(ep.name):
            if role == "source":
                out.append(_declaration(ep.name, comp.cls))
    return out


def profile_sources(profile: Any, host: Any) -> list[SourceFields]:
    """The sources a profile may run (each ``[[sources]]`` table and its fallbacks)."""
    out = []
    for spec in profile.sources:
        for s in spec.chain():
            if s.unavailable:
                continue
            comp = host.registry.get("source", s.type)
            out.append(_declaration(comp.plugin, comp.cls))
    return out


@attrs.frozen
class Emitted:
    """What a field check compares rules with."""

    fields: frozenset[str]
    sources: tuple[str, ...]
    """The declaring sources counted (``source (plugin)``)."""
    any_sources: tuple[str, ...] = ()
    """Sources whose input decides (not counted without a profile; with one, they stop the check)."""
    undeclared: tuple[str, ...] = ()
    """Sources that declare nothing."""


def emitted(sources: Iterable[SourceFields]) -> Emitted:
    fields: set[str] = set()
    used, anys, undeclared = [], [], []
    for s in sources:
        label = f"{s.source} ({s.plugin})"
        if s.declared:
            used.append(label)
            fields.update(s.fields())
        elif s.kinds == EMITS_ANY:
            anys.append(label)
        elif s.error is None:
            undeclared.append(label)
    return Emitted(frozenset(fields), tuple(used), tuple(anys), tuple(undeclared))


# --------------------------------------------------------------------------- rules


def _walk(node: Any) -> Iterable[Any]:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list):
            stack.extend(reversed(n))
        elif attrs.has(type(n)):
            yield n
            stack.extend(reversed([getattr(n, a.name) for a in attrs.fields(type(n)) if a.name != "pos"]))


def _required(expr: Any) -> set[str]:
    """Fields ``expr`` can be true only with a value of (positive comparisons
    reached through ``and`` only, or in every branch of an ``or``)."""
    from .eql import ast as A

    if isinstance(expr, A.And):
        return set().union(*(_required(e) for e in expr.items))
    if isinstance(expr, A.Or):
        parts = [_required(e) for e in expr.items]
        return set.intersection(*parts) if parts else set()
    operand = None
    if isinstance(expr, A.Compare) and expr.op != "!=":
        operand = expr.left if isinstance(expr.left, A.Field) else expr.right
    elif isinstance(expr, A.In) and not expr.negate or isinstance(expr, A.Pattern):
        operand = expr.operand
    if isinstance(operand, A.Field) and not (isinstance(expr, A.Compare) and isinstance(
            expr.right if operand is expr.left else expr.left, A.Literal) and
            (expr.right if operand is expr.left else expr.left).value is None):
        return {operand.path}
    return set()


def rule_field_uses(query: str) -> tuple[list[tuple[str, tuple[int, int]]], set[str]]:
    """([(field, (line, column)) of each field's first use, in order], fields
    some non-missing step or the event query needs a value of)."""
    from .eql import ast as A
    from .eql.parser import parse

    tree = parse(query)
    first: dict[str, tuple[int, int]] = {}
    for n in _walk(tree):
        if isinstance(n, A.Field) and n.path not in first:
            first[n.path] = tuple(n.pos)
    body = tree.body
    if isinstance(body, A.EventQuery):
        required = _required(body.expr)
    else:
        required = set().union(*(_required(s.query.expr) for s in body.steps if not s.missing))
    return sorted(first.items(), key=lambda kv: kv[1]), required


def unemitted_warnings(rules: Iterable[Any], emits: Emitted) -> list[Any]:
    """One located warning (a ``RuleError``) per rule reading a field no counted source emits."""
    from .eql.errors import EqlError
    from .rules import RuleError, locate_eql_error

    where = ", ".join(emits.sources)
    out = []
    for rule in rules:
        try:
            uses, required = rule_field_uses(rule.query)
        except EqlError:
            continue  # a syntax error is reported by the compiler already
        missing = [(path, pos) for path, pos in uses if path not in emits.fields and path != "@timestamp"]
        if not missing:
            continue
        fatal = [(p, pos) for p, pos in missing if p in required]
        path, (line, col) = (fatal or missing)[0]
        names = ", ".join(p for p, _ in missing)
        if fatal:
            why = f"this rule can never fire on this host: it needs a value of {fatal[0][0]}"
        else:
            why = "conditions on them never see a value on this host"
        err = EqlError(f"reads {names}, which no source here emits ({where}): {why}", line, col,
                       rule.source_name, severity="warning", length=len(path))
        out.append(RuleError.from_eql(locate_eql_error(rule, err), rule.id))
    return out
