"""Entry point module (``kestrel.plugins`` -> ``sources-portable``)."""

from __future__ import annotations

from collections.abc import Callable

from kestrel_core.hookspecs import hookimpl

from .source import PortableSource


@hookimpl
def kestrel_register_sources(register: Callable[[type], None]) -> None:
    register(PortableSource)
