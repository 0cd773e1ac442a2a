"""What every enforcement mechanism (a rung of the capability ladder) offers."""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

from kestrel_core.interfaces import Probe

BLOCKABLE_ACTIONS = ("deny-exec", "deny-open", "deny-connect", "kill")

Report = Callable[[dict[str, Any]], None]
"""Receives a decision the kernel side took on its own (a kill at exec, a
denied connect) as audit-record fields; called from a reporter thread."""


class EnforcementPath(abc.ABC):
    """One mechanism.  ``probe`` (classmethod) says whether it works here;
    ``install`` acquires kernel objects; ``set_enabled(False)`` makes it allow
    everything at once without forgetting its denies; ``clear`` forgets them;
    ``close`` releases everything (kernel objects detach with their fds)."""

    NAME: ClassVar[str]
    ACTIONS: ClassVar[frozenset[str]]
    """Blockable actions this mechanism can carry out."""

    def __init__(self, report: Report | None = None) -> None:
        self.report: Report = report or (lambda _record: None)

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Probe:
        """Try the mechanism for real (load a program, open a group) and undo it."""

    @abc.abstractmethod
    def install(self) -> None:
        """Acquire the kernel objects; raise ``bccload.Unavailable`` with the reason."""

    @abc.abstractmethod
    def set_enabled(self, enabled: bool) -> None: ...

    @abc.abstractmethod
    def clear(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def metrics(self) -> dict[str, float]:
        """Kernel-side counters (name -> value) for the metrics export."""
        return {}
