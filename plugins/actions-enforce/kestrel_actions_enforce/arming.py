"""Sequence-armed blocking: deny a sequence's last step before it happens.

The detection engine tells :class:`ArmTracker` (its sequence listener, see
:data:`kestrel_core.eql.sequence.ArmListener`) when a pending sequence of a
rule reaches the step before its last, and when that sequence goes away
(completed, window expired, ``until``, evicted, rule withdrawn by a reload).
For rules whose blockable action is

* ``deny-exec``: the process (``process.pid`` of the latest matched event,
  a tgid) is armed in the kill-at-exec program: killed at its next exec;
* ``deny-open``: the process is armed in the fanotify policy: its next
  opens under the marks get EPERM;

and disarmed when the sequence goes away.  Arms are counted per (process,
action), so two sequences arming one process keep it armed until both are
gone.  Shadow-mode rules and runs that are not ``mode = "enforce"`` arm
nothing; they audit ``would-arm``.  All calls come from the engine thread.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Iterable

log = logging.getLogger("kestrel.enforce")

ARMABLE = ("deny-exec", "deny-open")


def arm_rules(rules: Iterable[Any]) -> dict[str, tuple[str, str]]:
    """rule id -> (mode, action) for sequence rules that may arm (mode enforce or shadow)."""
    out = {}
    for r in rules:
        if not r.enabled or r.mode not in ("enforce", "shadow") or not r.query.lstrip().startswith("sequence"):
            continue
        action = next((a for a in ARMABLE if a in r.actions), None)
        if action is not None:
            out[r.id] = (r.mode, action)
    return out


class ArmTracker:
    def __init__(self, enforcer: Any, schema: Any, *, enforcing: bool) -> None:
        self.enforcer = enforcer
        self.enforcing = enforcing
        self.pid_fid = schema.resolve("process.pid")
        self.rules: dict[str, tuple[str, str]] = {}
        self._by_partial: dict[int, tuple[str, str, int]] = {}
        """id(partial) -> (rule, action, tgid) of the arms this tracker holds."""
        self._counts: collections.Counter[tuple[int, str]] = collections.Counter()

    def load(self, rules: Iterable[Any]) -> int:
        self.rules = arm_rules(rules)
        log.info("enforce: %d sequence rule(s) arm their last step (%s)", len(self.rules),
                 ", ".join(sorted(self.rules)) or "-")
        return len(self.rules)

    def _pid(self, partial: Any) -> int | None:
        value = partial.events[-1].fields.get(self.pid_fid)
        if isinstance(value, list):
            value = value[0] if value else None
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    def __call__(self, rule_id: str, partial: Any, armed: bool, reason: str) -> None:
        try:
            if armed:
                self._arm(rule_id, partial)
            else:
                self._disarm(partial, reason)
        except Exception as exc:  # the engine thread must go on
            log.error("enforce: sequence arming for %s failed: %s: %s", rule_id, type(exc).__name__, exc)

    def _arm(self, rule_id: str, partial: Any) -> None:
        spec = self.rules.get(rule_id)
        if spec is None:
            return
        mode, action = spec
        tgid = self._pid(partial)
        if tgid is None:
            self.enforcer.record(rule_id, "arm", None, "no-target", reason="no process.pid in the sequence's events")
            return
        if mode != "enforce" or not self.enforcing:
            why = "shadow mode" if mode != "enforce" else "simulated run"
            self.enforcer.record(rule_id, "arm", None, "would-arm", pid=tgid, target=action, why=why, mode=mode)
            return
        if self._counts[(tgid, action)] == 0:
            self.enforcer.arm(action, tgid, rule_id)  # raises: nothing is held
        self._by_partial[id(partial)] = (rule_id, action, tgid)
        self._counts[(tgid, action)] += 1

    def _disarm(self, partial: Any, reason: str) -> None:
        held = self._by_partial.pop(id(partial), None)
        if held is None:
            return
        rule_id, action, tgid = held
        self._counts[(tgid, action)] -= 1
        if self._counts[(tgid, action)] <= 0:
            del self._counts[(tgid, action)]
            self.enforcer.disarm(action, tgid, rule_id, reason=reason)

    def armed(self) -> dict[tuple[int, str], int]:
        return dict(self._counts)

    def release_all(self, reason: str = "stop") -> None:
        for key in list(self._by_partial):
            rule_id, action, tgid = self._by_partial.pop(key)
            self._counts[(tgid, action)] -= 1
            if self._counts[(tgid, action)] <= 0:
                del self._counts[(tgid, action)]
                try:
                    self.enforcer.disarm(action, tgid, rule_id, reason=reason)
                except Exception as exc:
                    log.error("enforce: disarming %d failed: %s", tgid, exc)
