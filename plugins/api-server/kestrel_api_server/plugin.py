"""Entry point module (``kestrel.plugins`` -> ``api-server``)."""

from __future__ import annotations

from typing import Callable

from kestrel_core.hookspecs import hookimpl

from .sink import ApiSink


@hookimpl
def kestrel_register_sinks(register: Callable[[type], None]) -> None:
    register(ApiSink)
