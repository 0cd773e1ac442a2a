"""Entry point module (``kestrel.plugins`` -> ``matcher-acdfa``)."""

from __future__ import annotations

from typing import Callable

from kestrel_core.hookspecs import hookimpl


@hookimpl
def kestrel_register_matchers(register: Callable[[type], None]) -> None:
    from .matcher import AcdfaMatcher  # pyahocorasick is imported only when the matcher builds

    register(AcdfaMatcher)
