"""Kestrel predicate runtime: rule sets compiled to Lua, run in LuaJIT."""

from .runtime import LuaPredicateRuntime, LuaRuleSet

__all__ = ["LuaPredicateRuntime", "LuaRuleSet"]
