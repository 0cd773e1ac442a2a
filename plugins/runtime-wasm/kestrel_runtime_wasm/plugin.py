"""Entry point module (``kestrel.plugins`` -> ``runtime-wasm``)."""

from __future__ import annotations

from typing import Callable

from kestrel_core.hookspecs import hookimpl


@hookimpl
def kestrel_register_runtimes(register: Callable[[type], None]) -> None:
    from .runtime import WasmPredicateRuntime  # wasmtime is imported when a rule set compiles, not here

    register(WasmPredicateRuntime)
