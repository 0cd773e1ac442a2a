"""Entry point module (``kestrel.plugins`` -> ``sources-falco``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kestrel_core.hookspecs import hookimpl

from .mapping import EXTRA_FIELDS
from .source import FalcoSource


@hookimpl
def kestrel_declare_fields(schema: Any) -> None:
    for path, ftype in EXTRA_FIELDS:
        if path not in schema or not schema.get(path).declared:  # another source may declare it too
            schema.declare(path, ftype)


@hookimpl
def kestrel_register_sources(register: Callable[[type], None]) -> None:
    register(FalcoSource)
