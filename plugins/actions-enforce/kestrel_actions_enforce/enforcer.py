"""The capability ladder and the enforcer that drives the chosen mechanisms.

Per blockable action, the rungs in order of strength:

* deny-exec:    bpf-lsm > fanotify (EPERM before the image loads) > kill-at-exec
* deny-open:    bpf-lsm > fanotify
* deny-connect: bpf-lsm > cgroup-connect
* kill:         signal (SIGKILL now, via pidfd)
* arming (sequence-armed blocking of a process's next exec): kill-at-exec

bpf-lsm decides in the kernel at the security hook; fanotify asks a Python
responder (fail-open/closed past its budget); kill-at-exec kills after the
exec succeeded, before user code runs, and matches the path as given to
execve only.  Each rung is probed for real; the first available rung that
installs is used, and the choice and every rung's reason are recorded.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Iterable

from kestrel_core.interfaces import Probe

from .audit import AuditLog
from .base import EnforcementPath
from .bccload import Unavailable
from .connect import CgroupConnectPath
from .execkill import ExecKillPath
from .fanotify_deny import FanotifyDenyPath
from .lsm import BpfLsmPath
from .signal_kill import SignalKillPath

log = logging.getLogger("kestrel.enforce")

PATH_CLASSES: dict[str, type[EnforcementPath]] = {
    cls.NAME: cls for cls in (BpfLsmPath, FanotifyDenyPath, ExecKillPath, CgroupConnectPath, SignalKillPath)
}
LADDER: dict[str, tuple[str, ...]] = {
    "deny-exec": ("bpf-lsm", "fanotify", "kill-at-exec"),
    "deny-open": ("bpf-lsm", "fanotify"),
    "deny-connect": ("bpf-lsm", "cgroup-connect"),
    "kill": ("signal",),
    "arm": ("kill-at-exec",),
}


def probe_ladder(names: Iterable[str] | None = None) -> dict[str, Probe]:
    """Probe every rung (or ``names``); a probe that raises counts as unavailable."""
    out: dict[str, Probe] = {}
    for name in names or PATH_CLASSES:
        try:
            out[name] = PATH_CLASSES[name].probe()
        except Exception as exc:  # a probe must never take the caller down
            out[name] = Probe.missing(f"probe raised {type(exc).__name__}: {exc}")
    return out


def choose(probes: dict[str, Probe]) -> dict[str, str | None]:
    """The strongest available rung per action (None: the action cannot block here)."""
    return {action: next((n for n in rungs if n in probes and probes[n].available), None)
            for action, rungs in LADDER.items()}


def describe_ladder(probes: dict[str, Probe]) -> str:
    chosen = choose(probes)
    rungs = "; ".join(f"{n}: {'available' if p.available else 'unavailable'}" + (f" ({p.reason})" if p.reason else "")
                      for n, p in probes.items())
    picks = ", ".join(f"{a} -> {p or 'none'}" for a, p in chosen.items())
    return f"{picks} | {rungs}"


class Enforcer:
    """Holds the installed mechanisms; every decision goes to ``audit`` and the counters.

    :param rungs: restrict the ladder to these rungs (default: all).
    """

    def __init__(self, audit: AuditLog | None = None, *, budget_ms: float = 20.0, fail_open: bool = True,
                 fanotify_marks: Iterable[tuple[str, str]] | None = None, rungs: Iterable[str] | None = None) -> None:
        self.audit = audit
        self._fanotify_opts = {"budget_ms": budget_ms, "fail_open": fail_open, "marks": fanotify_marks}
        self._rungs = list(rungs) if rungs else list(PATH_CLASSES)
        unknown = [r for r in self._rungs if r not in PATH_CLASSES]
        if unknown:
            raise ValueError(f"unknown enforcement path(s) {unknown}; known: {', '.join(PATH_CLASSES)}")
        self.probes: dict[str, Probe] = {}
        self.paths: dict[str, EnforcementPath] = {}
        self.chosen: dict[str, str | None] = {}
        self.reasons: dict[str, str] = {}
        self.enabled = True
        self.decisions: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        """(rule, action, path, outcome) -> decisions."""
        self._lock = threading.Lock()
        self._owner: dict[tuple[Any, Any], str] = {}
        """(action, target) -> rule that installed the block, to attribute kernel decisions."""
        self._armed_owner: dict[int, str] = {}
        """tgid -> rule that armed it (sequence-armed blocking)."""
        self.started = False

    # ------------------------------------------------------------------ start / stop

    def _make(self, name: str) -> EnforcementPath:
        cls = PATH_CLASSES[name]
        if cls is FanotifyDenyPath:
            return FanotifyDenyPath(self._kernel_decision, **self._fanotify_opts)
        return cls(self._kernel_decision)

    def start(self) -> dict[str, str | None]:
        """Probe, install the strongest available rung per action, log the choice."""
        self.probes = probe_ladder(self._rungs)
        for name, probe in self.probes.items():
            self.reasons[name] = ("available" if probe.available else "unavailable") + (
                f": {probe.reason}" if probe.reason else "")
        for action, rungs in LADDER.items():
            self.chosen[action] = None
            for name in rungs:
                if name not in self.probes or not self.probes[name].available:
                    continue
                if name not in self.paths:
                    path = self._make(name)
                    try:
                        path.install()
                    except (Unavailable, OSError) as exc:
                        self.probes[name] = Probe.missing(f"install failed: {exc}")
                        self.reasons[name] = f"unavailable: install failed: {exc}"
                        log.warning("enforce: %s cannot be installed (%s); trying the next rung", name, exc)
                        continue
                    path.set_enabled(self.enabled)
                    self.paths[name] = path
                self.chosen[action] = name
                break
            if self.chosen[action] is None:
                log.warning("enforce: no mechanism for %s on this host (%s)", action,
                            "; ".join(f"{n}: {self.reasons.get(n, 'not selected (rungs setting)')}" for n in rungs))
        for action, name in self.chosen.items():
            log.info("enforce: %s via %s", action, name or "nothing (detect only)")
        self.started = True
        if self.audit is not None:
            self.audit.write({"event": "start", "chosen": self.chosen, "rungs": self.reasons,
                              "enabled": self.enabled})
        return dict(self.chosen)

    def close(self) -> None:
        for path in self.paths.values():
            try:
                path.close()
            except Exception as exc:
                log.error("enforce: closing %s failed: %s: %s", path.NAME, type(exc).__name__, exc)
        self.paths.clear()
        self.started = False

    # ------------------------------------------------------------------ decisions

    def record(self, rule_id: str, action: str, path: str | None, outcome: str, **fields: Any) -> None:
        with self._lock:
            self.decisions[(rule_id, action, path or "none", outcome)] += 1
        if self.audit is not None:
            self.audit.write({"rule": rule_id, "action": action, "path": path or "none", "outcome": outcome,
                              **fields})

    def _kernel_decision(self, record: dict[str, Any]) -> None:
        """A decision a mechanism took on its own (kill at exec, denied connect, fanotify answer)."""
        rule = self._owner.get((record.get("action"), record.get("target")), "")
        if not rule and record.get("reason") in ("armed-tgid", "armed-pid"):
            rule = self._armed_owner.get(record.get("pid"), "")
        record = dict(record)
        path = record.pop("path", None)
        self.record(rule, record.pop("action", ""), path, record.pop("outcome", ""), **record)

    def _path_for(self, action: str) -> EnforcementPath:
        name = self.chosen.get(action)
        if name is None or name not in self.paths:
            raise Unavailable(f"no mechanism for {action} on this host")
        return self.paths[name]

    def block(self, action: str, rule_id: str, **target: Any) -> str:
        """Install a block; returns the rung used.  ``target``: ``path`` (deny-exec,
        deny-open), ``cgroup``/``ip``/``port`` (deny-connect), ``pid`` (kill)."""
        path = self._path_for(action)
        if action == "deny-exec":
            path.deny_exec(target["path"])  # type: ignore[attr-defined]
            key = target["path"]
        elif action == "deny-open":
            path.deny_open(target["path"])  # type: ignore[attr-defined]
            key = target["path"]
        elif action == "deny-connect":
            path.deny_connect(target["cgroup"], target["ip"], int(target.get("port") or 0))  # type: ignore[attr-defined]
            key = f"{target['ip']}:{int(target.get('port') or 0)}"
        elif action == "kill":
            return path.NAME
        else:
            raise ValueError(f"not a blockable action: {action!r}")
        self._owner = {**self._owner, (action, key): rule_id}
        return path.NAME

    def unblock_connect(self, cgroup: str, ip: str, port: int, rule_id: str = "") -> None:
        """Withdraw a connect deny (its rule left the rule set)."""
        path = self._path_for("deny-connect")
        path.allow_connect(cgroup, ip, int(port))  # type: ignore[attr-defined]
        self.record(rule_id, "deny-connect", path.NAME, "unblocked", target=f"{ip}:{port} from {cgroup}")

    def kill(self, pid: int, rule_id: str, start_ticks: int | None = None) -> tuple[str, str]:
        path = self._path_for("kill")
        return path.NAME, path.kill(pid, start_ticks)  # type: ignore[attr-defined]

    def arm_pid(self, tgid: int, rule_id: str = "", **fields: Any) -> str:
        """Kill ``tgid`` at its next exec (sequence-armed blocking)."""
        path = self._path_for("arm")
        path.arm_pid(tgid)  # type: ignore[attr-defined]
        self._armed_owner[tgid] = rule_id
        self.record(rule_id, "arm", path.NAME, "armed", pid=tgid, **fields)
        return path.NAME

    def disarm_pid(self, tgid: int, rule_id: str = "", **fields: Any) -> None:
        path = self._path_for("arm")
        path.disarm_pid(tgid)  # type: ignore[attr-defined]
        self.record(rule_id, "arm", path.NAME, "disarmed", pid=tgid, **fields)

    def arm(self, action: str, tgid: int, rule_id: str = "") -> str:
        """Deny ``action`` (deny-exec: kill at the next exec; deny-open: EPERM on
        opens under the fanotify marks) to process ``tgid`` until disarmed."""
        if action == "deny-exec":
            return self.arm_pid(tgid, rule_id, target=action)
        path = self._path_for("deny-open")
        if not hasattr(path, "arm_pid"):
            raise Unavailable(f"{path.NAME} cannot arm a process for {action}")
        path.arm_pid(tgid)  # type: ignore[attr-defined]
        self._armed_owner[tgid] = rule_id
        self.record(rule_id, "arm", path.NAME, "armed", pid=tgid, target=action)
        return path.NAME

    def disarm(self, action: str, tgid: int, rule_id: str = "", **fields: Any) -> None:
        if action == "deny-exec":
            self.disarm_pid(tgid, rule_id, target=action, **fields)
            return
        path = self._path_for("deny-open")
        path.disarm_pid(tgid)  # type: ignore[attr-defined]
        self.record(rule_id, "arm", path.NAME, "disarmed", pid=tgid, target=action, **fields)

    # ------------------------------------------------------------------ rollback

    def set_enabled(self, enabled: bool) -> None:
        """Instant switch: off makes every mechanism allow (kernel flags cleared,
        fanotify answers allow) without forgetting the denies; on restores them."""
        self.enabled = enabled
        for path in self.paths.values():
            path.set_enabled(enabled)
        if self.audit is not None:
            self.audit.write({"event": "enforcement", "enabled": enabled})
        log.warning("enforce: enforcement %s", "ON" if enabled else "OFF (detect only)")

    def clear(self) -> None:
        """Forget every deny and arm (maps emptied, cgroups detached)."""
        for path in self.paths.values():
            path.clear()
        self._owner = {}

    def poll(self) -> None:
        for path in self.paths.values():
            poll: Callable[[], None] | None = getattr(path, "poll", None)
            if poll is not None:
                poll()

    # ------------------------------------------------------------------ metrics

    def kernel_metrics(self) -> dict[tuple[str, str], float]:
        return {(name, counter): value for name, path in self.paths.items()
                for counter, value in path.metrics().items()}
