"""Entry point module (``kestrel.plugins`` -> ``actions-enforce``)."""

from __future__ import annotations

from typing import Any, Callable

from kestrel_core.hookspecs import hookimpl


def _enforce_actions(context: Any) -> list[Any]:
    from .action import EnforceAction

    return [a for a in context.components.get("action", []) if isinstance(a, EnforceAction)]


@hookimpl
def kestrel_register_actions(register: Callable[[type], None]) -> None:
    from .action import EnforceAction

    register(EnforceAction)


@hookimpl
def kestrel_run_start(context: Any) -> None:
    """Install the mechanisms before any event is read (so the first alert blocks at once)."""
    for action in _enforce_actions(context):
        action.start()


@hookimpl
def kestrel_run_stop(context: Any) -> None:
    for action in _enforce_actions(context):
        action.stop()
