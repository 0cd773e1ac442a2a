"""Entry point module (``kestrel.plugins`` -> ``sources-portable``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kestrel_core.hookspecs import hookimpl

from .ecs import EXTRA_FIELDS
from .source import PortableSource


@hookimpl
def kestrel_declare_fields(schema: Any) -> None:
    for path, ftype in EXTRA_FIELDS:
        schema.declare(path, ftype)


@hookimpl
def kestrel_register_sources(register: Callable[[type], None]) -> None:
    register(PortableSource)
