"""Kestrel's EQL engine (Elasticsearch EQL semantics).

Public entry points:

* :func:`parse` — text -> syntax tree; :func:`compile_query` — text -> IR
  (:mod:`kestrel_core.eql.ir`, documented in docs/ir.md);
* :class:`HostRuntime` — the Python predicate runtime;
* :class:`DetectionEngine` — rules + events -> alerts (single events and
  sequences);
* :class:`EqlError` — every located error (``.line``, ``.column``,
  ``.source_name``).

Imports are lazy so that importing the package costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import EqlError, EqlSemanticError, EqlSyntaxError, EqlWarning

__all__ = [
    "EqlError",
    "EqlSyntaxError",
    "EqlSemanticError",
    "EqlWarning",
    "parse",
    "compile_query",
    "HostRuntime",
    "DetectionEngine",
    "EngineLimits",
]

if TYPE_CHECKING:  # pragma: no cover
    from .engine import DetectionEngine, EngineLimits
    from .hostruntime import HostRuntime
    from .ir import compile_query
    from .parser import parse


def __getattr__(name: str) -> Any:
    if name == "parse":
        from .parser import parse

        return parse
    if name == "compile_query":
        from .ir import compile_query

        return compile_query
    if name == "HostRuntime":
        from .hostruntime import HostRuntime

        return HostRuntime
    if name in ("DetectionEngine", "EngineLimits"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
