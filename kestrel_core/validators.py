"""attrs validators for component ``Settings`` classes (the core's and every
plugin's), so that a bad profile value reads the same whoever checks it:
``<key> must be positive, not 0``.  The profile loader adds file:line:column."""

from __future__ import annotations

from typing import Any, Callable

Validator = Callable[[Any, Any, Any], None]


def one_of(*choices: Any) -> Validator:
    def check(_inst: Any, attribute: Any, value: Any) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(map(repr, choices))}, not {value!r}")

    return check


def positive(_inst: Any, attribute: Any, value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def non_negative(_inst: Any, attribute: Any, value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


def power_of_two(_inst: Any, attribute: Any, value: Any) -> None:
    if value <= 0 or value & (value - 1):
        raise ValueError(f"{attribute.name} must be a power of two, not {value!r}")


def fraction(_inst: Any, attribute: Any, value: Any) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be between 0 and 1, not {value!r}")


def ordered_steps(*choices: str) -> Validator:
    """A non-empty list of distinct names from ``choices`` (an order of steps)."""

    def check(_inst: Any, attribute: Any, value: Any) -> None:
        bad = [v for v in value if v not in choices]
        if bad or not value or len(set(value)) != len(value):
            why = f"unknown step {bad[0]!r}" if bad else "empty" if not value else "a step is listed twice"
            raise ValueError(f"{attribute.name}: {why}; steps: {', '.join(map(repr, choices))}")

    return check
