"""The ``baseline`` detector: learn each host's (and container's) behaviour
during a warm-up, then alert on what it never did."""

from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import attrs

from kestrel_core.alert import Alert
from kestrel_core.interfaces import Detector
from kestrel_core.validators import non_negative, one_of, positive

from . import model
from .model import Scope, SnapshotError, new_process
from .shapes import args_shape, common_prefix_len, path_prefix, peer_key

log = logging.getLogger("kestrel")

EXEC_ACTIONS = frozenset({"exec", "executed", "start", "process_started", "execve"})
METRIC = "kestrel_baseline_total"
SHOWN = 5
"""Learned items named in an alert's reason (most frequent first)."""
RULES = {
    "new_child": "Known process started a program it never started while the baseline was learned",
    "new_peer": "Known process connected to a peer it never used while the baseline was learned",
    "new_path": "Known process touched files under a directory it never used while the baseline was learned",
    "new_args": "Known parent started a known child with a new argument shape",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, None: 10**9}


def parse_duration(text: str) -> int:
    """``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"500ms"`` (a bare number is seconds) -> ns; ``""`` -> 0."""
    if text.strip() == "":
        return 0
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"warmup must be a duration such as \"30m\", \"2h\" or \"1d\" (or \"\"), not {text!r}")
    return int(float(m.group(1)) * _UNIT_NS[m.group(2)])


def _prefix_bits(limit: int) -> Any:
    def check(_inst: Any, attribute: Any, value: int) -> None:
        if not 0 <= value <= limit:
            raise ValueError(f"{attribute.name} must be between 0 and {limit}, not {value!r}")
    return check


class BaselineDetector(Detector):
    PLUGIN_NAME = "baseline"
    CATEGORIES = frozenset({"process", "network", "file"})
    DESCRIPTION = "learned per-host behaviour tree (children, argument shapes, peers, path prefixes); alerts on deviations"

    @attrs.define(kw_only=True)
    class Settings:
        snapshot: str = "baseline.json"
        """JSON snapshot of what was learned (relative to the profile); ``""``: keep nothing across runs."""
        warmup: str = "1h"
        """Learning time per scope, in event time from its first event (``"30m"``, ``"2h"``); ``""``: by count only."""
        warmup_events: int = attrs.field(default=0, validator=non_negative)
        """Learning length per scope in events; 0: by time only.  With both, the first reached ends it."""
        container_scopes: bool = True
        """Learn each container (``container.id``) apart from its host."""
        path_depth: int = attrs.field(default=3, validator=positive)
        """Directory components of a learned path prefix."""
        ipv4_prefix: int = attrs.field(default=32, validator=_prefix_bits(32))
        """Peers are learned per this network size (32: each address)."""
        ipv6_prefix: int = attrs.field(default=128, validator=_prefix_bits(128))
        peer_port: bool = True
        """A peer is address and destination port (false: the address only)."""
        flag_new_args: bool = False
        """Also alert when a known child is started with a new argument shape."""
        adopt_deviations: bool = True
        """Add a deviation to the baseline once alerted, so it alerts once, not on every repeat."""
        max_nodes_per_scope: int = attrs.field(default=20_000, validator=positive)
        """Cap on learned items per scope; items past it are not learned and are counted (``nodes_capped``)."""
        max_scopes: int = attrs.field(default=10_000, validator=positive)
        """Cap on hosts/containers; events of further ones are not learned or checked, and are counted."""
        save_every_events: int = attrs.field(default=100_000, validator=non_negative)
        """Write the snapshot after this many events (0: only when a warm-up ends and at the end of the run)."""
        severity: str = attrs.field(default="medium", validator=one_of("low", "medium", "high", "critical"))
        risk_score: int = attrs.field(default=47, validator=_prefix_bits(100))

        def __attrs_post_init__(self) -> None:
            if parse_duration(self.warmup) == 0 and self.warmup_events == 0:
                raise ValueError("warmup and warmup_events are both off: set a warm-up time or an event count")

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        s = settings
        self.warmup_ns = parse_duration(s.warmup)
        self.shape = {"path_depth": s.path_depth, "ipv4_prefix": s.ipv4_prefix, "ipv6_prefix": s.ipv6_prefix,
                      "peer_port": s.peer_port}
        profile = getattr(context, "profile", None)
        self.path: Path | None = None
        if s.snapshot:
            self.path = profile.resolve_path(s.snapshot) if profile is not None else Path(s.snapshot)
        self.scopes: dict[tuple[str, str | None], Scope] = {}
        self.counters: dict[str, int] = {k: 0 for k in (
            "alerts_new_child", "alerts_new_peer", "alerts_new_path", "alerts_new_args", "nodes_capped",
            "scopes_capped", "unknown_process", "snapshots_written", "snapshot_write_errors", "snapshot_damaged",
            "snapshot_reloaded")}
        schema = context.schema

        def fid(path: str) -> int | None:
            f = schema.get(path)
            return f.id if f is not None else None

        self.f = {p: fid(p) for p in (
            "host.name", "host.id", "container.id", "event.action", "event.type", "process.name",
            "process.executable", "process.args", "process.parent.name", "process.parent.executable",
            "destination.ip", "destination.port", "file.path")}
        self._since_save = 0
        self._dirty = False
        self._save_now = False

    # ------------------------------------------------------------------ state

    def open(self) -> None:
        self.context.stats.extra["baseline"] = self.counters
        if self.path is None or not self.path.exists():
            return
        try:
            scopes, shape, counters = model.read_snapshot(self.path)
        except SnapshotError as exc:
            self.counters["snapshot_damaged"] += 1
            aside = self.path.with_name(self.path.name + ".damaged")
            try:
                os.replace(self.path, aside)
                kept = f"moved to {aside}"
            except OSError as move:
                kept = f"could not be moved aside ({move.strerror})"
            log.error("baseline snapshot is damaged, ignored (%s); %s; learning again", exc, kept)
            return
        if shape != self.shape:
            log.warning("baseline snapshot %s was learned with %s, the profile says %s: ignored, learning again "
                        "(the file is replaced at the next save)", self.path, shape, self.shape)
            return
        self.scopes = {sc.key: sc for sc in scopes}
        for key, value in counters.items():
            if key in self.counters and key != "snapshot_reloaded":
                self.counters[key] = value
        self.counters["snapshot_reloaded"] += 1
        learned = sum(1 for sc in scopes if not sc.learning)
        log.info("baseline: reloaded %s: %d scope(s), %d past warm-up", self.path, len(scopes), learned)

    def save(self) -> None:
        """Write the snapshot now (atomically); a failure is logged and counted, never fatal."""
        if self.path is None:
            return
        try:
            model.write_atomic(self.path, model.snapshot_bytes(self.scopes, self.shape, self.counters))
        except OSError as exc:
            self.counters["snapshot_write_errors"] += 1
            log.error("baseline: could not write snapshot %s: %s", self.path, exc.strerror or exc)
            return
        self.counters["snapshots_written"] += 1
        self._dirty = self._save_now = False
        self._since_save = 0

    def flush(self) -> list[Alert]:
        if self._dirty or (self.path is not None and not self.path.exists() and self.scopes):
            self.save()
        return []

    def close(self) -> None:
        if self._dirty:
            self.save()

    # ------------------------------------------------------------------ per batch

    def process(self, events: Sequence[Any]) -> list[Alert]:
        f = self.f
        s = self.settings
        alerts: list[Alert] = []
        host_f, hid_f, cont_f = f["host.name"], f["host.id"], f["container.id"]
        for ev in events:
            get = ev.fields.get
            host = get(host_f) if host_f is not None else None
            if host is None and hid_f is not None:
                host = get(hid_f)
            host = str(host) if host is not None else "-"
            cont = get(cont_f) if s.container_scopes and cont_f is not None else None
            key = (host, cont)
            scope = self.scopes.get(key)
            if scope is None:
                if len(self.scopes) >= s.max_scopes:
                    self.counters["scopes_capped"] += 1
                    continue
                scope = self.scopes[key] = Scope(host=host, container=cont)
            self._event(scope, ev, alerts)
        self._since_save += len(events)
        self._publish()
        if self._save_now or (s.save_every_events and self._dirty and self._since_save >= s.save_every_events):
            self.save()
        return alerts

    def _publish(self) -> None:
        """The counters as ``kestrel_baseline_total{counter}`` for metric sinks (stats.extra["metrics"])."""
        stats = self.context.stats
        with stats.lock:
            stats.extra.setdefault("metrics", {})[METRIC] = {
                "type": "counter", "help": "Baseline detector counters: alerts by kind, caps reached, snapshot "
                "reads and writes, events of processes the baseline never saw.",
                "labels": ("counter",), "values": dict(self.counters)}

    def _actor(self, ev: Any, name_f: str, exe_f: str) -> str | None:
        get = ev.fields.get
        name = get(self.f[name_f]) if self.f[name_f] is not None else None
        if not name and self.f[exe_f] is not None:
            exe = get(self.f[exe_f])
            if exe:
                name = str(exe).rsplit("/", 1)[-1]
        return name or None

    def _event(self, scope: Scope, ev: Any, alerts: list[Alert]) -> None:
        ts = ev.ts_wall_ns
        if scope.first_ts_ns is None:
            scope.first_ts_ns = ts
        if scope.learning and ((self.settings.warmup_events and scope.learned_events >= self.settings.warmup_events)
                               or (self.warmup_ns and ts - scope.first_ts_ns >= self.warmup_ns)):
            scope.learning = False
            scope.learned_until_ns = ts
            self._save_now = True
            log.info("baseline: %s learned from %d events; deviations now alert", scope.label(),
                     scope.learned_events)
        scope.events += 1
        if ts > scope.last_ts_ns:
            scope.last_ts_ns = ts
        self._dirty = True
        actor = self._actor(ev, "process.name", "process.executable")
        if actor is None:
            return
        get = ev.fields.get
        f = self.f
        learning = scope.learning
        if learning:
            scope.learned_events += 1
        procs = scope.processes
        node = procs.get(actor)
        if node is None:
            if not learning:  # a process the baseline never saw: its first exec is already checked below
                self.counters["unknown_process"] += 1
            elif self._room(scope):
                node = procs[actor] = new_process()
                scope.nodes += 1
        if node is not None:
            node["count"] += 1
        category = ev.category
        if category == "process":
            action = get(f["event.action"]) if f["event.action"] is not None else None
            types = get(f["event.type"]) if f["event.type"] is not None else None
            # a fork is not a new program: the child runs the parent's until it execs
            if action in EXEC_ACTIONS or (action is None and types is not None and "start" in types):
                parent = self._actor(ev, "process.parent.name", "process.parent.executable")
                if parent is not None:
                    args = get(f["process.args"]) if f["process.args"] is not None else None
                    self._exec(scope, ev, parent, actor, args_shape(args), alerts)
            return
        if node is None:
            return
        ip = get(f["destination.ip"]) if f["destination.ip"] is not None else None
        if ip is not None:
            s = self.settings
            port = get(f["destination.port"]) if f["destination.port"] is not None else None
            key = peer_key(str(ip), port, s.ipv4_prefix, s.ipv6_prefix, s.peer_port)
            self._item(scope, ev, actor, node, "peers", key, alerts)
            return
        path = get(f["file.path"]) if f["file.path"] is not None else None
        if path:
            self._item(scope, ev, actor, node, "paths", path_prefix(str(path), self.settings.path_depth), alerts)

    def _room(self, scope: Scope, n: int = 1) -> bool:
        if scope.nodes + n > self.settings.max_nodes_per_scope:
            scope.capped += 1
            self.counters["nodes_capped"] += 1
            return False
        return True

    def _exec(self, scope: Scope, ev: Any, parent: str, child: str, shape: str, alerts: list[Alert]) -> None:
        procs = scope.processes
        pnode = procs.get(parent)
        if scope.learning:
            if pnode is None:
                if not self._room(scope):
                    return
                pnode = procs[parent] = new_process()
                scope.nodes += 1
            entry = pnode["children"].get(child)
            if entry is None:
                if not self._room(scope, 2):
                    return
                entry = pnode["children"][child] = {"count": 0, "args": {shape: 0}}
                scope.nodes += 2
            entry["count"] += 1
            if shape in entry["args"]:
                entry["args"][shape] += 1
            elif self._room(scope):
                entry["args"][shape] = 1
                scope.nodes += 1
            return
        if pnode is None:
            return  # the parent is itself new: its own start was the deviation
        children = pnode["children"]
        entry = children.get(child)
        adopt = self.settings.adopt_deviations
        if entry is None:
            learned = {name: c["count"] for name, c in children.items()}
            near = difflib.get_close_matches(child, list(learned), n=1, cutoff=0.5)
            alerts.append(self._alert("new_child", scope, ev, f"{parent} spawned {child}", parent, child,
                                      "children", learned, near[0] if near else None))
            if adopt and self._room(scope, 2):
                children[child] = {"count": 1, "args": {shape: 1}}
                scope.nodes += 2
            return
        entry["count"] += 1
        shapes = entry["args"]
        if shape in shapes:
            shapes[shape] += 1
            return
        if self.settings.flag_new_args:
            near = max(shapes, key=lambda k: (common_prefix_len(k, shape), shapes[k]), default=None)
            alerts.append(self._alert("new_args", scope, ev, f"{parent} started {child} with arguments {shape!r}",
                                      parent, child, f"argument shapes of {child}", shapes, near))
        if adopt and self._room(scope):
            shapes[shape] = 1
            scope.nodes += 1

    def _item(self, scope: Scope, ev: Any, actor: str, node: dict[str, Any], kind: str, key: str,
              alerts: list[Alert]) -> None:
        learned = node[kind]
        if key in learned:
            learned[key] += 1
            return
        if not scope.learning:
            near = max(learned, key=lambda k: (common_prefix_len(k, key), learned[k]), default=None)
            what = f"{actor} connected to {key}" if kind == "peers" else f"{actor} used a file under {key}"
            alerts.append(self._alert("new_peer" if kind == "peers" else "new_path", scope, ev, what, actor, key,
                                      "peers" if kind == "peers" else "path prefixes", learned, near))
            if not self.settings.adopt_deviations:
                return
        if self._room(scope):
            learned[key] = 1
            scope.nodes += 1

    def _alert(self, kind: str, scope: Scope, ev: Any, what: str, owner: str, new: str, noun: str,
               learned: dict[str, int], nearest: str | None) -> Alert:
        top = sorted(learned.items(), key=lambda kv: (-kv[1], kv[0]))[:SHOWN]
        shown = ", ".join(f"{k}({n})" for k, n in top) or "none"
        more = f" and {len(learned) - SHOWN} more" if len(learned) > SHOWN else ""
        reason = f"{what}; learned {noun} of {owner}: {shown}{more}"
        if nearest is not None and nearest not in dict(top):
            reason += f"; nearest: {nearest}({learned[nearest]})"
        self.counters[f"alerts_{kind}"] += 1
        ev.settle()
        fields = {"host.name": scope.host}
        if scope.container is not None:
            fields["container.id"] = scope.container
        fields.update({"baseline.kind": kind, "baseline.process": owner, "baseline.new": new,
                       "baseline.reason": reason, "baseline.nearest": nearest,
                       "baseline.learned": [f"{k}({n})" for k, n in top],
                       "baseline.learned_until_ns": scope.learned_until_ns})
        return Alert(rule_id=f"baseline.{kind}", rule_name=RULES[kind], severity=self.settings.severity,
                     description=reason, tags=("baseline", "anomaly"), risk_score=self.settings.risk_score,
                     pack="detector-baseline", events=[ev], fields=fields, ts_mono_ns=ev.ts_mono_ns,
                     ts_wall_ns=ev.ts_wall_ns)
