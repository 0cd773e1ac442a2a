"""Entry point module (``kestrel.plugins`` -> ``sink-prometheus``)."""

from __future__ import annotations

from typing import Callable

from kestrel_core.hookspecs import hookimpl

from .sink import PrometheusSink


@hookimpl
def kestrel_register_sinks(register: Callable[[type], None]) -> None:
    register(PrometheusSink)
