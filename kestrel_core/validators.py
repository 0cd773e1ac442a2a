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
