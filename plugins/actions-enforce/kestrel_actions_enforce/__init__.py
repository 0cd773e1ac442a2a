"""Kestrel action plugin: enforcement (deny exec/open/connect, kill at exec).

A capability ladder probes each kernel mechanism at start and picks the
strongest available one per blockable action; ``set_enforcement`` is the
instant rollback; every decision goes to a JSONL audit log.  See README.md.
"""

from .control import enforce_command, set_enforcement

__all__ = ["enforce_command", "set_enforcement"]
