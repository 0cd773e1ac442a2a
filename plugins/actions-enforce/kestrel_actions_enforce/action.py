"""The ``enforce`` action: per alert, apply the rule's blockable actions
according to the rule's mode (observe / shadow / enforce)."""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import attrs

from kestrel_core.interfaces import Action, Probe

from .arming import ArmTracker
from .audit import AuditLog
from .base import BLOCKABLE_ACTIONS
from . import kprogram
from .bccload import Unavailable
from .connect import cgroup_dir_of
from .control import DEFAULT_RUNTIME_DIR, StateWatcher
from .confine import confine_plan
from .enforcer import Enforcer, choose, describe_ladder, probe_ladder
from .inline import InlinePolicy

log = logging.getLogger("kestrel.enforce")

TARGET_FIELDS = {
    "deny-exec": ("process.executable",),
    "deny-open": ("file.path",),
    "deny-connect": ("destination.ip", "destination.port", "process.pid"),
    "kill": ("process.pid",),
}


class TargetError(ValueError):
    """The alert's events lack a field the action needs."""


def _check_marks(_inst: Any, _attr: Any, value: list[str]) -> None:
    parse_marks(value)


def _check_rungs(_inst: Any, _attr: Any, value: list[str]) -> None:
    from .enforcer import PATH_CLASSES

    bad = [r for r in value if r not in PATH_CLASSES]
    if bad:
        raise ValueError(f"rungs: unknown mechanism(s) {', '.join(map(repr, bad))}; known: {', '.join(PATH_CLASSES)}")


@attrs.define(kw_only=True)
class EnforceSettings:
    audit_log: str = "/var/log/kestrel/enforce-audit.jsonl"
    """JSONL file of every decision (flushed and fsynced per line)."""
    runtime_dir: str = DEFAULT_RUNTIME_DIR
    """Where ``kestrel enforce on|off`` writes the state this action watches."""
    budget_ms: float = 20.0
    """fanotify responder budget per permission event."""
    fail_open: bool = True
    """fanotify answer past the budget (true: allow)."""
    fanotify_marks: list[str] = attrs.field(factory=list, validator=_check_marks)
    """Fixed fanotify marks as "path:type" (type: inode, mount, filesystem);
    empty: an inode mark on each protected file."""
    rungs: list[str] = attrs.field(factory=list, validator=_check_rungs)
    """Restrict the ladder to these mechanisms (empty: all)."""
    inline: bool = True
    """Let the fanotify responder ask the rules (needs ``fanotify_marks``): the
    first exec/open a deny-exec/deny-open rule matches gets EPERM."""
    arm_sequences: bool = True
    """Sequence-armed blocking: arm the last step's deny when the steps before it matched."""
    confine_cgroups: list[str] = attrs.field(factory=list)
    """cgroup2 directories where enforce-mode deny-connect rules' literal
    destinations are refused from the start (docs/enforcement.md)."""
    loader: str = attrs.field(default="auto", validator=attrs.validators.in_(("auto", "objects", "bcc")))
    """How the BPF rungs' programs are loaded (kprogram.py): ``auto``
    compiled objects (a helper process compiles them once per kernel), bcc
    in this process when that fails; ``objects`` or an error; ``bcc``."""


def parse_marks(marks: list[str]) -> list[tuple[str, str]]:
    out = []
    for m in marks:
        path, sep, kind = m.rpartition(":")
        if not sep or not path or kind not in ("inode", "mount", "filesystem"):
            raise ValueError(f"fanotify_marks: entry {m!r} must be 'path:inode|mount|filesystem'")
        out.append((path, kind))
    return out


class EnforceAction(Action):
    PLUGIN_NAME = "enforce"
    DESCRIPTION = "Block what enforce-mode rules ask for (deny exec/open/connect, kill) through the strongest mechanism"
    Settings: ClassVar[type] = EnforceSettings

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.marks = parse_marks(settings.fanotify_marks)
        self.enforcer: Enforcer | None = None
        self.watcher: StateWatcher | None = None
        self.audit: AuditLog | None = None
        self.inline: InlinePolicy | None = None
        self.arming: ArmTracker | None = None
        self.confined: dict[tuple[str, str, int], str] = {}

    @classmethod
    def probe(cls) -> Probe:
        probes = probe_ladder()
        chosen = choose(probes)
        usable = any(chosen[a] for a in BLOCKABLE_ACTIONS)
        text = describe_ladder(probes)
        return Probe.ok(text) if usable else Probe.missing(text)

    # ------------------------------------------------------------------ lifecycle

    def _resolve(self, path: str) -> str:
        profile = getattr(self.context, "profile", None)
        return str(profile.resolve_path(path)) if profile is not None else path

    def start(self) -> None:
        """Probe the ladder, install mechanisms, watch the rollback switch, publish metrics."""
        if self.enforcer is not None:
            return
        s = self.settings
        kprogram.LOADER = s.loader  # before the ladder is probed: the probes load the programs too
        self.audit = AuditLog(self._resolve(s.audit_log))
        enforcer = Enforcer(self.audit, budget_ms=s.budget_ms, fail_open=s.fail_open,
                            fanotify_marks=self.marks or None, rungs=s.rungs or None)
        self.watcher = StateWatcher(self._resolve(s.runtime_dir), enforcer.set_enabled, tick=enforcer.poll)
        enforcer.enabled = self.watcher.enabled  # a switch left "off" stays off across restarts
        enforcer.start()
        self.enforcer = enforcer
        self._wire_rules()
        self.watcher.start()
        self._publish_metrics()

    # ------------------------------------------------------------------ rules -> mechanisms

    def _rules(self) -> list[Any]:
        packset = getattr(self.context, "packset", None)
        return list(packset.rules) if packset is not None else []

    def _wire_rules(self) -> None:
        """Inline decisions, sequence arming and cgroup confinement from the rule set;
        followed again after every hot reload (``context.reload_listeners``)."""
        enforcer = self.enforcer
        assert enforcer is not None
        s, ctx = self.settings, self.context
        enforcing = getattr(ctx, "mode", "detect") == "enforce"
        rules = self._rules()
        fan = enforcer.paths.get("fanotify")
        if s.inline:
            inbox = getattr(ctx, "alert_inbox", None)
            self.inline = InlinePolicy(ctx.schema, enforcer, enforcing=enforcing, budget_ms=s.budget_ms,
                                       submit=inbox.append if inbox is not None else None)
            n = self.inline.load(rules)
            if n and fan is None:
                log.warning("enforce: %d rule(s) want inline decisions but the fanotify rung is unavailable (%s); "
                            "they block per alert only", n, enforcer.reasons.get("fanotify", "not selected"))
            elif n and not self.marks:
                log.warning("enforce: %d rule(s) want inline decisions but fanotify_marks is empty; set e.g. "
                            "fanotify_marks = [\"/:filesystem\"] (they block per alert only)", n)
            elif fan is not None and self.marks:
                fan.inline = self.inline.decide
        if s.arm_sequences and getattr(ctx, "engine", None) is not None:
            self.arming = ArmTracker(enforcer, ctx.schema, enforcing=enforcing)
            if self.arming.load(rules):
                ctx.engine.set_sequence_listener(self.arming)
                ctx.expiry_tick = True  # a window ends on the clock even when no event comes
        self._confine(rules)
        listeners = getattr(ctx, "reload_listeners", None)
        if listeners is not None and self._on_reload not in listeners:
            listeners.append(self._on_reload)

    def _confine(self, rules: list[Any]) -> None:
        enforcer = self.enforcer
        assert enforcer is not None
        plan = confine_plan(rules, self.context.schema, [self._resolve(c) for c in self.settings.confine_cgroups])
        for (cgroup, ip, port), rule in plan.items():
            if (cgroup, ip, port) in self.confined:
                continue
            try:
                path = enforcer.block("deny-connect", rule, cgroup=cgroup, ip=ip, port=port)
            except (Unavailable, OSError, ValueError) as exc:
                enforcer.record(rule, "deny-connect", enforcer.chosen.get("deny-connect"), "error",
                                reason=str(exc), target=f"{ip}:{port} from {cgroup}")
                continue
            enforcer.record(rule, "deny-connect", path, "blocking", via="confine", target=f"{ip}:{port} from {cgroup}")
        for key in [k for k in self.confined if k not in plan]:
            cgroup, ip, port = key
            enforcer.unblock_connect(cgroup, ip, port, self.confined[key])
        self.confined = plan

    def _on_reload(self, packset: Any, engine: Any) -> None:
        """Engine thread, after a hot reload: follow the new rule set."""
        rules = list(packset.rules)
        if self.inline is not None:
            self.inline.load(rules)
        if self.arming is not None:
            if self.arming.load(rules):
                engine.set_sequence_listener(self.arming)
                self.context.expiry_tick = True
        if self.enforcer is not None:
            self._confine(rules)

    def stop(self) -> None:
        if self.arming is not None:
            self.arming.release_all()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.enforcer is not None:
            self.enforcer.close()
            self.enforcer = None
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    def _publish_metrics(self) -> None:
        enforcer = self.enforcer
        assert enforcer is not None
        stats = self.context.stats

        def decisions() -> dict:
            with enforcer._lock:
                return dict(enforcer.decisions)

        def mechanisms() -> dict:
            return enforcer.kernel_metrics()

        with stats.lock:
            metrics = stats.extra.setdefault("metrics", {})
            metrics["kestrel_enforce_decisions"] = {
                "type": "counter", "help": "Enforcement decisions by rule, action, mechanism and outcome.",
                "labels": ("rule", "action", "path", "outcome"), "values": decisions}
            metrics["kestrel_enforce_enabled"] = {
                "help": "1 while enforcement is on, 0 after `kestrel enforce off`.",
                "values": lambda: {(): 1.0 if enforcer.enabled else 0.0}}
            metrics["kestrel_enforce_path_chosen"] = {
                "help": "1 for the mechanism chosen per blockable action.", "labels": ("action", "path"),
                "values": {(a, p or "none"): 1.0 for a, p in enforcer.chosen.items()}}
            metrics["kestrel_enforce_mechanism"] = {
                "help": "Kernel-side and responder numbers per mechanism (kills, denials, lost reports, latency).",
                "labels": ("path", "name"), "values": mechanisms}

    # ------------------------------------------------------------------ per alert

    def _field(self, alert: Any, path: str) -> Any:
        fid = self.context.schema.resolve(path)
        for event in reversed(alert.events):
            value = event.get(fid)
            if value is not None:
                return value[0] if isinstance(value, list) and value else value
        return None

    def _target(self, alert: Any, action: str) -> dict[str, Any]:
        values = {f: self._field(alert, f) for f in TARGET_FIELDS[action]}
        if action in ("deny-exec", "deny-open"):
            (field,) = TARGET_FIELDS[action]
            if not values[field]:
                raise TargetError(f"no {field} in the alert's events")
            return {"path": str(values[field])}
        if action == "kill":
            if values["process.pid"] is None:
                raise TargetError("no process.pid in the alert's events")
            return {"pid": int(values["process.pid"])}
        if values["destination.ip"] is None:
            raise TargetError("no destination.ip in the alert's events")
        pid = values["process.pid"]
        cgroup = cgroup_dir_of(int(pid)) if pid is not None else None
        if cgroup is None:
            raise TargetError(f"cannot find the cgroup2 directory of process {pid}")
        return {"cgroup": cgroup, "ip": str(values["destination.ip"]), "port": int(values["destination.port"] or 0)}

    @staticmethod
    def _describe(action: str, target: dict[str, Any]) -> str:
        if action == "deny-connect":
            return f"{target['ip']}:{target['port']} from {target['cgroup']}"
        return str(target.get("path", target.get("pid")))

    def execute(self, alert: Any, simulate: bool) -> str:
        if self.inline is not None and alert in self.inline.raised:
            return self.inline.raised_line(alert)
        wanted = [a for a in getattr(alert, "rule_actions", ()) if a in BLOCKABLE_ACTIONS]
        mode = getattr(alert, "rule_mode", "observe")
        if self.arming is not None and alert.rule_id in self.arming.rules:
            # the armed process was blocked at this last step: no lasting path-wide block
            armed = self.arming.rules[alert.rule_id][1]
            wanted = [a for a in wanted if a != armed]
            if not wanted:
                return f"enforce: {armed} by sequence-armed blocking ({mode} mode)"
        if not wanted:
            return "enforce: nothing to block (the rule asks for no blockable action)"
        if mode == "observe":
            return f"enforce: observe mode, {', '.join(wanted)} not applied"
        if self.enforcer is None:
            self.start()
        return "; ".join(self._one(alert, action, mode, simulate) for action in wanted)

    def _one(self, alert: Any, action: str, mode: str, simulate: bool) -> str:
        enforcer = self.enforcer
        assert enforcer is not None
        rule = alert.rule_id
        path = enforcer.chosen.get(action)
        try:
            target = self._target(alert, action)
        except (TargetError, ValueError) as exc:
            enforcer.record(rule, action, path, "no-target", reason=str(exc))
            return f"enforce: cannot {action}: {exc}"
        what = f"{action} {self._describe(action, target)}"
        summary = {"event": self._summary(alert), "target": self._describe(action, target)}
        if path is None:
            enforcer.record(rule, action, None, "unavailable", **summary)
            return f"enforce: cannot {what}: no mechanism on this host"
        if mode == "shadow" or simulate or not enforcer.enabled:
            why = ("shadow mode" if mode == "shadow" else "simulated run" if simulate else "enforcement off")
            enforcer.record(rule, action, path, "would-deny", mode=mode, why=why, **summary)
            return f"enforce: would {what} via {path} ({why})"
        t0 = time.perf_counter_ns()
        try:
            if action == "kill":
                path, outcome = enforcer.kill(target["pid"], rule)
            else:
                path = enforcer.block(action, rule, **target)
                outcome = "blocking"
        except (Unavailable, OSError, ValueError) as exc:
            enforcer.record(rule, action, path, "error", reason=str(exc), **summary)
            return f"enforce: {what} via {path} failed: {exc}"
        latency_us = round((time.perf_counter_ns() - t0) / 1000, 1)
        enforcer.record(rule, action, path, outcome, mode=mode, latency_us=latency_us, **summary)
        return f"enforce: {what} via {path} ({outcome})"

    def _summary(self, alert: Any) -> str:
        fields = ("event.category", "event.action", "process.pid", "process.executable", "file.path",
                  "destination.ip", "destination.port")
        parts = [f"{f}={v}" for f in fields if (v := self._field(alert, f)) is not None]
        return " ".join(parts) or alert.rule_name
