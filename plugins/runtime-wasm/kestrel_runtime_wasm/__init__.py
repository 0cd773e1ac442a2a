"""Kestrel predicate runtime: rule sets compiled to WebAssembly, run in wasmtime."""

from .runtime import WasmPredicateRuntime, WasmRuleSet, WasmSettings

__all__ = ["WasmPredicateRuntime", "WasmRuleSet", "WasmSettings"]
