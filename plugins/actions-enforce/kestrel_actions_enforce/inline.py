"""Inline decisions: the fanotify permission responder asks the rules.

A permission event (FAN_OPEN_EXEC_PERM, FAN_OPEN_PERM) waits in the kernel
for an answer, so the FIRST exec or open of a file a rule forbids can be
refused (EPERM) before it happens, not only later ones.  Each event becomes
the ECS record the fanotify source would emit (process fields from /proc,
``process.executable`` = the binary being executed, ``file.path`` = the
file opened) and runs through a small :class:`DetectionEngine` holding only
the single-event rules in enforce or shadow mode that ask for ``deny-exec``
or ``deny-open``.  The engine is compiled at start and rebuilt after a hot
reload (the swap is one attribute assignment: the responder thread never
sees a half-built engine).

Outcomes (audited with ``via: "inline"``, counted, and the alert handed to
the run's sinks with the outcome in its action line):

* enforce rule, enforce run, enforcement on: ``denied`` (EPERM);
* enforce rule, enforcement off: ``allowed-enforcement-off``;
* enforce rule in a run that is not ``mode = "enforce"``, or shadow rule:
  ``would-deny`` (allowed; "would have blocked").
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Callable, Iterable

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.normalize import EcsJsonNormalizer

log = logging.getLogger("kestrel.enforce")

INLINE_ACTIONS = {"exec": "deny-exec", "open": "deny-open"}
INLINE_MODES = ("enforce", "shadow")


def wants_inline(rule: Any) -> bool:
    return rule.enabled and rule.mode in INLINE_MODES and bool(set(rule.actions) & set(INLINE_ACTIONS.values()))


def build_inline_engine(schema: Any, rules: Iterable[Any]) -> DetectionEngine | None:
    """An engine over the single-event rules that decide inline (None: there are none)."""
    candidates = [r for r in rules if wants_inline(r)]
    if not candidates:
        return None
    engine = DetectionEngine(schema, candidates, strict="off", gc_pause=False)
    singles = [cr.rule for cr in engine.single_rules]
    if len(singles) != len(engine.rules):  # sequences are armed, not decided inline
        engine = DetectionEngine(schema, singles, strict="off", gc_pause=False)
    return engine if engine.rules else None


MAX_ARGS_BYTES = 4096
"""/proc/<pid>/cmdline read on the decision path is capped: a process with a
huge argv must not push every decision past the budget (fail answer)."""

ARG_FIELDS = ("process.args", "process.args_count", "process.command_line")


def read_proc_bounded(pid: int, *, args: bool, cwd: bool) -> Any:
    """:func:`kestrel_sources_fanotify.procinfo.read_proc`, reading only what the
    inline rules use: argv (at most :data:`MAX_ARGS_BYTES`) and the working
    directory on demand."""
    from kestrel_sources_fanotify.procinfo import read_proc

    return read_proc(pid, args=args, cwd=cwd, max_args_bytes=MAX_ARGS_BYTES)


def perm_record(event: Any, host_name: str, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """The ECS record the fanotify source would emit for this permission event
    (``fields``: the paths the rules reference; None: all of them)."""
    from kestrel_sources_fanotify.source import FanotifySource, file_fields, is_elf_interpreter, process_fields

    def wants(*paths: str) -> bool:
        return fields is None or any(p in fields for p in paths)

    parent_fields = fields is None or any(f.startswith("process.parent.") for f in fields)
    info = read_proc_bounded(event.pid, args=wants(*ARG_FIELDS), cwd=wants("process.working_directory"))
    parent = (read_proc_bounded(info.ppid, args=parent_fields, cwd=False)
              if info.ppid and parent_fields else None)
    is_exec = event.kind == "exec" and not is_elf_interpreter(event.path)
    if is_exec:
        info = FanotifySource._exec_image(info, event.path)
    record: dict[str, Any] = {
        "@timestamp": event.ts_wall_ns,
        "event": {"kind": "event", "category": ["process" if is_exec else "file"],
                  "type": ["start" if is_exec else "access"], "action": "exec" if is_exec else "open",
                  "module": "fanotify"},
        "host": {"name": host_name},
        "process": process_fields(info, parent),
    }
    if info.uid is not None:
        record["user"] = {"id": info.uid}
    if not is_exec and event.path:
        record["file"] = file_fields(event.path)
    return record


class InlinePolicy:
    """The responder's rule-driven policy (``decide(event) -> allow``).

    :param enforcer: records decisions (audit log, counters); its ``enabled``
        is the rollback switch.
    :param enforcing: whether the run is an enforce run (else: would-deny).
    :param submit: hands an alert raised here to the engine thread (sinks).
    """

    def __init__(self, schema: Any, enforcer: Any, *, enforcing: bool, submit: Callable[[Any], None] | None = None,
                 host_name: str = "", budget_ms: float = 20.0) -> None:
        import socket

        self.schema = schema
        self.enforcer = enforcer
        self.enforcing = enforcing
        self.submit = submit
        self.host_name = host_name or socket.gethostname()
        self.engine: DetectionEngine | None = None
        self.rule_ids: frozenset[str] = frozenset()
        self.fields: frozenset[str] | None = None
        """Fields the inline rules reference (only those are read from /proc)."""
        self._normalizer = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), _Ctx(schema))
        self._lock = threading.Lock()  # the engine is single-threaded; a replaced reader may still be in it
        self._lock_timeout_s = budget_ms / 1000
        self.raised: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
        """Alerts raised here -> their action line: the enforce action does not act on them again."""
        self.evaluations = 0

    def load(self, rules: Iterable[Any]) -> int:
        """Compile the inline rules (at start and after each hot reload); returns how many."""
        engine = build_inline_engine(self.schema, rules)
        self.fields = frozenset(engine.interest().fields) if engine else None
        self.engine = engine
        self.rule_ids = frozenset(cr.id for cr in engine.rules) if engine else frozenset()
        for err in engine.rule_errors if engine else ():
            log.error("enforce: inline rule not compiled: %s", err)
        log.info("enforce: %d rule(s) decide inline (%s)", len(self.rule_ids), ", ".join(sorted(self.rule_ids)) or "-")
        return len(self.rule_ids)

    def raised_line(self, alert: Any) -> str:
        return self.raised.pop(alert, "enforce: decided inline")

    def decide(self, event: Any) -> bool:
        engine, fields = self.engine, self.fields
        if engine is None:
            return True
        record = perm_record(event, self.host_name, fields)
        ev = self._normalizer.normalize(record, "fanotify-permission")
        if not self._lock.acquire(timeout=self._lock_timeout_s):
            raise TimeoutError("inline engine busy (a previous decision is stuck)")
        try:
            self.evaluations += 1
            alerts = engine.process_batch([ev])
        finally:
            self._lock.release()
        allow = True
        action = INLINE_ACTIONS.get("exec" if record["event"]["action"] == "exec" else "open")
        for alert in alerts:
            if action not in alert.rule_actions:
                continue  # e.g. an exec matched a rule that only denies opens
            if alert.rule_mode == "enforce" and self.enforcing and self.enforcer.enabled:
                outcome, why = "denied", None
                allow = False
            elif alert.rule_mode == "enforce" and self.enforcing:
                outcome, why = "allowed-enforcement-off", "enforcement off"
            else:
                outcome = "would-deny"
                why = "shadow mode" if alert.rule_mode == "shadow" else "simulated run"
            latency_us = round((time.monotonic_ns() - event.ts_mono_ns) / 1000, 1)
            fields = {"via": "inline", "target": event.path, "pid": event.pid, "latency_us": latency_us,
                      "mode": alert.rule_mode, "event": f"{record['event']['action']} {event.path} pid {event.pid}"}
            if why:
                fields["why"] = why
            self.enforcer.record(alert.rule_id, action, "fanotify", outcome, **fields)
            self.raised[alert] = (f"enforce: {outcome} {action} {event.path} (pid {event.pid}) inline via fanotify "
                                  f"in {latency_us} µs" + (f" ({why})" if why else ""))
            if self.submit is not None:
                self.submit(alert)
        return allow


class _Ctx:
    """The little of a RunContext the normalizer reads."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
