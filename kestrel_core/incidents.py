"""Incidents: alerts correlated into storylines (docs/incidents.md).

The :class:`Correlator` runs on the engine thread, in event time only (no
wall clock), so a replay gives the same incidents as the live run and two
replays the same bytes.  It sees every processed batch (:meth:`observe`, to
learn the exec chain: which process started which, and when) and every
alert (:meth:`add`), and returns *incident records*: JSON-ready dicts that
sinks receive through ``Sink.write_incident``.

Links, all inside one scope (host, container): never across two.

* **Storyline**: each process belongs to the storyline of its *root*: walk
  up its parents (``process.parent.entity_id``; the session leader when the
  parent is unknown) while the parent's start was seen and came at most one
  window before the child's.  A daemon whose start predates what was seen,
  or that has been running for longer than the window (sshd, cron, a web
  server), ends the walk: its jobs are separate storylines.
* **Artifact**: the events of one multi-event alert in different storylines
  join them when they share a file (one's ``file.path`` is another's
  ``file.path``, ``file.Ext.original.path`` or ``process.executable``): a
  file written by one tree and run by another.  An event no link ties to the
  alert's last event (a sequence joined only by user) stays in the alert but
  is marked ``linked: false`` and does not join its storyline.
* **Indicator**: alerts sharing a network indicator (a non-loopback
  ``destination.ip``, an address or URL host in a command line) join.

An alert joins the open incident one of its links reaches (several: they
merge into the oldest), else opens one.  An incident closes once the events'
clock passes its last alert by the window, and at the end of the input.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import ipaddress
import logging
import re
import time
from typing import Any, Iterable, Sequence

import attrs

from .validators import positive

log = logging.getLogger("kestrel")

DEFAULT_WINDOW_S = 600.0

TACTICS = ("reconnaissance", "resource_development", "initial_access", "execution", "persistence",
           "privilege_escalation", "defense_evasion", "credential_access", "discovery", "lateral_movement",
           "collection", "command_and_control", "exfiltration", "impact")
"""ATT&CK Enterprise tactics, as rule tags name them (``TA0002`` ids map to these too)."""
_TACTIC_IDS = {"TA0043": "reconnaissance", "TA0042": "resource_development", "TA0001": "initial_access",
               "TA0002": "execution", "TA0003": "persistence", "TA0004": "privilege_escalation",
               "TA0005": "defense_evasion", "TA0006": "credential_access", "TA0007": "discovery",
               "TA0008": "lateral_movement", "TA0009": "collection", "TA0011": "command_and_control",
               "TA0010": "exfiltration", "TA0040": "impact"}
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
SEVERITY_RISK = {"low": 21, "medium": 47, "high": 73, "critical": 99}
"""Risk of an alert whose rule gives no ``risk_score`` (the usual severity bands)."""
_EXECS = frozenset(("exec", "fork", "start"))
_SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
_ADDRESS = re.compile(r"(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])|[a-z][a-z0-9+.-]*://([^/\s:'\"|;&]+)", re.I)

FIELDS = ("process.entity_id", "process.pid", "process.parent.entity_id", "process.parent.pid",
          "process.session_leader.entity_id", "process.parent.name", "process.parent.executable", "process.name",
          "process.executable", "process.command_line",
          "process.start", "host.id", "host.name", "container.id", "event.action", "event.type", "event.id",
          "file.path", "file.Ext.original.path", "destination.ip", "destination.port")


@attrs.define(kw_only=True)
class IncidentsSettings:
    """The ``[incidents]`` profile section."""

    enable: bool = False
    """Correlate alerts into incidents and hand incident records to the sinks."""
    window_s: float = attrs.field(default=DEFAULT_WINDOW_S, validator=positive)
    """Event-time window: an incident closes after this long without a new alert, and a
    parent started longer than this before its child ends the child's storyline."""


def tactic_of(tag: str) -> str | None:
    t = tag.strip()
    if t.upper() in _TACTIC_IDS:
        return _TACTIC_IDS[t.upper()]
    t = t.lower().replace("-", "_").replace(" ", "_")
    return t if t in TACTICS else None


def combined_risk(scores: Iterable[float]) -> float:
    """100 * (1 - prod(1 - r/100)): independent evidence; one rule counts once (its highest score)."""
    keep = 1.0
    for r in scores:
        keep *= 1.0 - min(100.0, max(0.0, float(r))) / 100.0
    return round(100.0 * (1.0 - keep), 2)


def _iso(ts_wall_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_wall_ns / 1e9, tz=dt.timezone.utc).isoformat(timespec="microseconds")


@attrs.define(slots=True)
class _Proc:
    parent: str | None = None
    session: str | None = None
    pid: int | None = None
    name: str | None = None
    executable: str | None = None
    command_line: str | None = None
    start_ns: int | None = None
    """Wall time of its start: ``process.start`` or the time of its exec event."""
    execs: list[str] | None = None
    """Names it had before it exec'd what it runs now (``bash`` -> the copy it became)."""


@attrs.define
class _Incident:
    id: str
    scope: tuple[str, str]
    host: dict[str, Any]
    container: str | None
    first_mono: int
    last_mono: int
    first_wall: int
    last_wall: int
    roots: list[str] = attrs.Factory(list)
    indicators: list[str] = attrs.Factory(list)
    timeline: list[dict[str, Any]] = attrs.Factory(list)
    entities: dict[str, list[str]] = attrs.Factory(dict)
    """entity id -> rule ids of the alerts on it (insertion order: first seen)."""
    risk_by_rule: dict[str, float] = attrs.Factory(dict)
    severity: str = "low"
    tactics: list[str] = attrs.Factory(list)
    techniques: list[str] = attrs.Factory(list)
    records: int = 0
    alert_count: int = 0
    rule_first: dict[str, int] = attrs.Factory(dict)
    """rule id -> event time of its first alert here."""
    timeline_dropped: int = 0
    """Alerts past the correlator's ``max_timeline`` (counted in ``alerts``, not listed)."""


class Correlator:
    """Alerts -> incident records (see the module's docstring for the links)."""

    def __init__(self, schema: Any, window_s: float = DEFAULT_WINDOW_S, max_processes: int = 200_000,
                 max_timeline: int = 500) -> None:
        self.schema = schema
        self.window_ns = int(window_s * 1e9)
        self.max_processes = max_processes
        self._ids: dict[str, int | None] = {}
        self._schema_size = -1
        self.procs: collections.OrderedDict[tuple[tuple[str, str], str], _Proc] = collections.OrderedDict()
        self.open: dict[str, _Incident] = {}
        self._by_root: dict[tuple[tuple[str, str], str], str] = {}
        self._by_indicator: dict[tuple[tuple[str, str], str], str] = {}
        self.max_timeline = max_timeline
        self.counts: collections.Counter[str] = collections.Counter()
        """opened, updated, closed, merged incidents; processes_evicted from the bounded process table;
        timeline_dropped (alerts past ``max_timeline`` of an incident); errors."""
        self._logged_at = -10.0

    # ------------------------------------------------------------------ fields

    def _fid(self, path: str) -> int | None:
        if len(self.schema) != self._schema_size:  # fields a log or source declared since
            self._schema_size = len(self.schema)
            for p in FIELDS:
                fdef = self.schema.get(p)
                self._ids[p] = fdef.id if fdef is not None else None
        return self._ids.get(path)

    def _get(self, event: Any, path: str) -> Any:
        # ids refreshed by the entry points (_fid); a missing field's id is None, which no event has
        return event.fields.get(self._ids.get(path))

    def _scope(self, event: Any) -> tuple[str, str]:
        host = self._get(event, "host.id") or self._get(event, "host.name") or ""
        return (str(host), str(self._get(event, "container.id") or ""))

    def _entity(self, event: Any) -> str | None:
        ent = self._get(event, "process.entity_id")
        if ent:
            return str(ent)
        pid = self._get(event, "process.pid")
        return f"pid:{pid}" if pid is not None else None

    # ------------------------------------------------------------------ events

    # ------------------------------------------------------------------ entry points (engine thread)
    # A failure here must not stop detection: it is logged (at most one line
    # per 10 s), counted in ``counts["errors"]``, and the call returns nothing.

    def observe(self, events: Sequence[Any]) -> None:
        """Learn the exec chain from a processed batch (every event, not only alerts')."""
        self._guard(self._observe, events)

    def add(self, alert: Any) -> list[dict[str, Any]]:
        """One delivered alert: the incident records it causes (closes of
        incidents it outlived, then its incident's open or update)."""
        return self._guard(self._add, alert) or []

    def tick(self, now_mono_ns: int) -> list[dict[str, Any]]:
        """The events' clock reached ``now``: close incidents inactive for a window."""
        return self._guard(self._tick, now_mono_ns) or []

    def close_all(self) -> list[dict[str, Any]]:
        """The input ended: close every open incident (oldest first)."""
        return self._guard(self._close_all) or []

    def _guard(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - isolated, logged and counted
            self.counts["errors"] += 1
            now = time.monotonic()
            if now - self._logged_at >= 10.0:
                self._logged_at = now
                log.error("incidents: %s failed (%d errors so far): %s: %s", fn.__name__.lstrip("_"),
                          self.counts["errors"], type(exc).__name__, exc)
            return None

    def _observe(self, events: Sequence[Any]) -> None:
        self._fid("event.id")  # field ids, again if the schema grew
        ids, procs = self._ids, self.procs
        f_ent, f_pid, f_host, f_hname, f_cont, f_action = (ids["process.entity_id"], ids["process.pid"], ids["host.id"],
                                                           ids["host.name"], ids["container.id"], ids["event.action"])
        for ev in events:  # every event passes here: the common case (a known process) stays cheap
            fields = ev.fields
            ent = fields.get(f_ent)
            if ent:
                ent = str(ent)
            else:
                pid = fields.get(f_pid)
                if pid is None:
                    continue
                ent = f"pid:{pid}"
            key = ((str(fields.get(f_host) or fields.get(f_hname) or ""), str(fields.get(f_cont) or "")), ent)
            info = procs.get(key)
            if info is None:
                info = procs[key] = _Proc()
                if len(procs) > self.max_processes:
                    procs.popitem(last=False)
                    self.counts["processes_evicted"] += 1
            else:
                procs.move_to_end(key)
                if info.parent is not None and info.name is not None and (ev.category != "process" or (
                        info.start_ns is not None and fields.get(f_action) not in _EXECS)):
                    continue  # nothing new: only an exec renames a known process
            self._learn(ev, key, info)

    def _learn(self, ev: Any, key: tuple[tuple[str, str], str], info: _Proc) -> None:
        ent, fields, ids = key[1], ev.fields, self._ids
        get = fields.get
        parent = get(ids["process.parent.entity_id"])
        ppid = get(ids["process.parent.pid"])
        if not parent and ppid is not None:
            parent = f"pid:{ppid}"
        if parent and str(parent) != ent:
            info.parent = str(parent)
            pkey = (key[0], info.parent)
            if pkey not in self.procs:  # known by name only, until events of its own arrive
                self.procs[pkey] = _Proc(pid=ppid, name=get(ids["process.parent.name"]),
                                         executable=get(ids["process.parent.executable"]))
        session = get(ids["process.session_leader.entity_id"])
        if session and str(session) != ent:
            info.session = str(session)
        pid, name, exe = get(ids["process.pid"]), get(ids["process.name"]), get(ids["process.executable"])
        if ev.category == "process":
            action = get(ids["event.action"])
            if info.executable and exe and exe != info.executable and action in _EXECS:
                info.execs = (info.execs or []) + [info.name or info.executable]  # exec in place: same process
            cmd = get(ids["process.command_line"])
            if pid is not None:
                info.pid = pid
            if name is not None:
                info.name = name
            if exe is not None:
                info.executable = exe
            if cmd is not None:
                info.command_line = cmd
            if info.start_ns is None:
                start = get(ids["process.start"])
                if isinstance(start, int):
                    info.start_ns = start
                elif action in _EXECS or "start" in (get(ids["event.type"]) or ()):
                    info.start_ns = ev.ts_wall_ns
        elif info.name is None:
            info.name, info.pid = name, pid
            info.executable = info.executable or exe

    def root(self, scope: tuple[str, str], ent: str) -> str:
        """The storyline root of a process: up its parents while each started
        at most one window before its child and its start was seen."""
        cur, seen = ent, {ent}
        while True:
            info = self.procs.get((scope, cur))
            if info is None or info.start_ns is None:
                return cur
            up = info.parent if info.parent and (scope, info.parent) in self.procs else info.session or info.parent
            if up is None or up in seen:
                return cur
            pinfo = self.procs.get((scope, up))
            if pinfo is None or pinfo.start_ns is None or info.start_ns - pinfo.start_ns > self.window_ns:
                return cur
            seen.add(up)
            cur = up

    # ------------------------------------------------------------------ alerts

    def _add(self, alert: Any) -> list[dict[str, Any]]:
        if not alert.events:
            return []
        self._fid("event.id")  # field ids, again if the schema grew
        out = self._tick(alert.ts_mono_ns)
        anchor = alert.events[-1]
        scope = self._scope(anchor)
        for ev in alert.events:  # an alert from a detector may carry events no batch had yet
            if (scope, self._entity(ev) or "") not in self.procs:
                self._observe([ev])
        linked = self._linked(alert, scope)
        roots = list(dict.fromkeys(self.root(scope, self._entity(ev) or "") for ev, ok in linked if ok))
        indicators = list(dict.fromkeys(i for ev, ok in linked if ok for i in self._indicators(scope, ev)))
        hits = [self._by_root.get((scope, r)) for r in roots] + [self._by_indicator.get((scope, i)) for i in indicators]
        found = sorted({h for h in hits if h is not None and h in self.open},
                       key=lambda i: (self.open[i].first_mono, i))
        if found:
            inc = self.open[found[0]]
            for other in found[1:]:
                out.append(self._merge(inc, self.open.pop(other)))
            status = "updated"
        else:
            inc = self._new(alert, anchor, scope)
            status = "opened"
        self._attach(inc, alert, linked, scope, roots, indicators)
        self.counts[status] += 1
        out.append(self._record(inc, status))
        return out

    def _tick(self, now_mono_ns: int) -> list[dict[str, Any]]:
        out = []
        for inc_id in [i for i, inc in self.open.items() if now_mono_ns - inc.last_mono > self.window_ns]:
            out.append(self._close(self.open.pop(inc_id), "inactive"))
        return out

    def _close_all(self) -> list[dict[str, Any]]:
        out = [self._close(inc, "stop") for inc in sorted(self.open.values(), key=lambda i: (i.first_mono, i.id))]
        self.open.clear()
        return out

    def _linked(self, alert: Any, scope: tuple[str, str]) -> list[tuple[Any, bool]]:
        """Each event of the alert, and whether a link ties it to the last one."""
        roots = [self.root(scope, self._entity(ev) or "") if self._scope(ev) == scope else None for ev in alert.events]
        # linked: the last event's storyline, or one its open incident already holds
        home = self._by_root.get((scope, roots[-1])) if roots[-1] is not None else None
        ok = [r is not None and (r == roots[-1] or (home is not None and self._by_root.get((scope, r)) == home))
              for r in roots]
        grew = True
        while grew:  # artifacts: a path one linked event names is another's file or program
            grew = False
            paths = {p for ev, k in zip(alert.events, ok) if k for p in self._paths(ev)}
            for i, ev in enumerate(alert.events):
                if not ok[i] and roots[i] is not None and paths & set(self._paths(ev)):
                    ok = [k or r == roots[i] for k, r in zip(ok, roots)]
                    grew = True
        return list(zip(alert.events, ok))

    def _paths(self, ev: Any) -> list[str]:
        return [p for p in (self._get(ev, "file.path"), self._get(ev, "file.Ext.original.path"),
                            self._get(ev, "process.executable")) if p]

    def _indicators(self, scope: tuple[str, str], ev: Any) -> list[str]:
        found = []
        dst = self._get(ev, "destination.ip")
        if dst is not None:
            found.append(str(dst))
        cmd = self._get(ev, "process.command_line")
        if cmd is None:
            info = self.procs.get((scope, self._entity(ev) or ""))
            cmd = info.command_line if info is not None else None
        if cmd:
            for ip, host in _ADDRESS.findall(str(cmd)):
                found.append((ip or host).lower())
        return [f for f in found if _worth_linking(f)]

    def _new(self, alert: Any, anchor: Any, scope: tuple[str, str]) -> _Incident:
        basis = "|".join((scope[0], scope[1], alert.rule_id, str(alert.ts_mono_ns), self._entity(anchor) or "",
                          str(self._get(anchor, "event.id") or "")))  # not Event.event_id: numbered per run
        inc_id = "inc-" + hashlib.sha256(basis.encode()).hexdigest()[:16]
        host = {k: v for k, v in (("name", self._get(anchor, "host.name")), ("id", self._get(anchor, "host.id"))) if v}
        inc = _Incident(id=inc_id, scope=scope, host=host, container=scope[1] or None,
                        first_mono=alert.ts_mono_ns, last_mono=alert.ts_mono_ns,
                        first_wall=alert.ts_wall_ns, last_wall=alert.ts_wall_ns)
        self.open[inc_id] = inc
        return inc

    def _attach(self, inc: _Incident, alert: Any, linked: list[tuple[Any, bool]], scope: tuple[str, str],
                roots: list[str], indicators: list[str]) -> None:
        for r in roots:
            if r not in inc.roots:
                inc.roots.append(r)
            self._by_root[(scope, r)] = inc.id
        for i in indicators:
            if i not in inc.indicators:
                inc.indicators.append(i)
            self._by_indicator[(scope, i)] = inc.id
        inc.first_mono, inc.first_wall = min(inc.first_mono, alert.ts_mono_ns), min(inc.first_wall, alert.ts_wall_ns)
        inc.last_mono, inc.last_wall = max(inc.last_mono, alert.ts_mono_ns), max(inc.last_wall, alert.ts_wall_ns)
        risk = alert.risk_score if alert.risk_score is not None else SEVERITY_RISK.get(alert.severity, 47)
        inc.risk_by_rule[alert.rule_id] = max(inc.risk_by_rule.get(alert.rule_id, 0), float(risk))
        inc.rule_first.setdefault(alert.rule_id, alert.ts_mono_ns)
        if _SEVERITY_RANK.get(alert.severity, 1) > _SEVERITY_RANK.get(inc.severity, 0):
            inc.severity = alert.severity
        tactics = [t for t in map(tactic_of, alert.tags) if t]
        for t in tactics:
            if t not in inc.tactics:
                inc.tactics.append(t)
        for tag in alert.tags:
            if _TECHNIQUE.match(tag) and tag not in inc.techniques:
                inc.techniques.append(tag)
        anchor_ent = self._entity(alert.events[-1]) or ""
        for ev, ok in linked:
            ent = self._entity(ev)
            if ok and ent is not None:
                rules = inc.entities.setdefault(ent, [])
                if ent == anchor_ent and alert.rule_id not in rules:
                    rules.append(alert.rule_id)
        inc.alert_count += 1
        if len(inc.timeline) >= self.max_timeline:  # the record stays bounded; the count says what is left out
            inc.timeline_dropped += 1
            self.counts["timeline_dropped"] += 1
            return
        inc.timeline.append({
            "ts": _iso(alert.ts_wall_ns), "ts_mono_ns": alert.ts_mono_ns, "rule": alert.rule_id,
            "name": alert.rule_name, "severity": alert.severity, "risk_score": alert.risk_score, "tactics": tactics,
            "entity_id": anchor_ent, "events": [self._evidence(ev, ok) for ev, ok in linked]})

    def _evidence(self, ev: Any, linked: bool) -> dict[str, Any]:
        get = self._get
        out: dict[str, Any] = {"id": str(get(ev, "event.id") or ev.event_id), "ts": _iso(ev.ts_wall_ns),
                               "category": ev.category, "action": get(ev, "event.action"),
                               "entity_id": self._entity(ev), "pid": get(ev, "process.pid"),
                               "name": get(ev, "process.name")}
        for path in ("file.path", "destination.ip", "destination.port", "process.command_line"):
            value = get(ev, path)
            if value is not None:
                out[path] = value
        out["linked"] = linked
        return out

    def _merge(self, into: _Incident, other: _Incident) -> dict[str, Any]:
        for r in other.roots:
            self._by_root[(other.scope, r)] = into.id
            if r not in into.roots:
                into.roots.append(r)
        for i in other.indicators:
            self._by_indicator[(other.scope, i)] = into.id
            if i not in into.indicators:
                into.indicators.append(i)
        timeline = sorted(into.timeline + other.timeline, key=lambda t: t["ts_mono_ns"])
        into.timeline = timeline[:self.max_timeline]
        into.timeline_dropped += other.timeline_dropped + len(timeline) - len(into.timeline)
        into.alert_count += other.alert_count
        self._unindex(other)
        for ent, rules in other.entities.items():
            mine = into.entities.setdefault(ent, [])
            mine.extend(r for r in rules if r not in mine)
        for rule, risk in other.risk_by_rule.items():
            into.risk_by_rule[rule] = max(into.risk_by_rule.get(rule, 0), risk)
        for rule, ts in other.rule_first.items():
            into.rule_first[rule] = min(into.rule_first.get(rule, ts), ts)
        if _SEVERITY_RANK.get(other.severity, 1) > _SEVERITY_RANK.get(into.severity, 0):
            into.severity = other.severity
        into.tactics = list(dict.fromkeys(t for entry in timeline for t in entry["tactics"]))
        into.techniques = list(dict.fromkeys(into.techniques + other.techniques))
        into.first_mono = min(into.first_mono, other.first_mono)
        into.first_wall = min(into.first_wall, other.first_wall)
        into.last_mono, into.last_wall = max(into.last_mono, other.last_mono), max(into.last_wall, other.last_wall)
        self.counts["merged"] += 1
        rec = self._record(other, "closed")
        rec["incident"]["reason"], rec["incident"]["merged_into"] = "merged", into.id
        return rec

    def _unindex(self, inc: _Incident) -> None:
        """Forget the links of an incident that closed (or merged: its links were moved)."""
        for r in inc.roots:
            if self._by_root.get((inc.scope, r)) == inc.id:
                del self._by_root[(inc.scope, r)]
        for i in inc.indicators:
            if self._by_indicator.get((inc.scope, i)) == inc.id:
                del self._by_indicator[(inc.scope, i)]

    def _close(self, inc: _Incident, reason: str) -> dict[str, Any]:
        self._unindex(inc)
        self.counts["closed"] += 1
        rec = self._record(inc, "closed")
        rec["incident"]["reason"] = reason
        return rec

    # ------------------------------------------------------------------ records

    def _processes(self, inc: _Incident) -> list[dict[str, Any]]:
        """The incident's process tree, depth first from its roots (with the
        process that started each root, for context), children by start."""
        scope = inc.scope
        members: dict[str, bool] = {}  # entity -> member of a storyline (False: the root's starter, context)
        for ent in inc.entities:
            cur, seen = ent, set()
            while cur not in seen:
                seen.add(cur)
                members.setdefault(cur, True)
                if cur in inc.roots or self.root(scope, cur) == cur:
                    break
                info = self.procs.get((scope, cur))
                up = info.parent if info and info.parent and (scope, info.parent) in self.procs else (
                    info.session if info else None)
                if up is None:
                    break
                cur = up
        for r in inc.roots:
            info = self.procs.get((scope, r))
            if info is not None and info.parent and info.parent not in members:
                members[info.parent] = False
        parent_of = {}
        for ent in members:
            info = self.procs.get((scope, ent))
            up = info.parent if info else None
            parent_of[ent] = up if up in members and up != ent else None
        children: dict[str | None, list[str]] = collections.defaultdict(list)
        for ent, up in parent_of.items():
            children[up].append(ent)

        def start(ent: str) -> tuple[int, str]:
            info = self.procs.get((scope, ent))
            return (info.start_ns if info and info.start_ns is not None else -1, ent)

        out: list[dict[str, Any]] = []

        def walk(ent: str, depth: int) -> None:
            info = self.procs.get((scope, ent)) or _Proc()
            out.append({"entity_id": ent, "parent": parent_of[ent], "depth": depth, "pid": info.pid,
                        "name": info.name, "executable": info.executable, "command_line": info.command_line,
                        "start": _iso(info.start_ns) if info.start_ns is not None else None,
                        "execs": list(info.execs or ()),
                        "context": not members[ent], "alerts": list(inc.entities.get(ent, ()))})
            for child in sorted(children.get(ent, ()), key=start):
                walk(child, depth + 1)

        for top in sorted(children.get(None, ()), key=start):
            walk(top, 0)
        return out

    def _record(self, inc: _Incident, status: str) -> dict[str, Any]:
        inc.records += 1
        return {"incident": {
            "id": inc.id, "status": status, "record": inc.records,
            "host": dict(inc.host), "container": {"id": inc.container} if inc.container else None,
            "first_ts": _iso(inc.first_wall), "last_ts": _iso(inc.last_wall),
            "first_ts_mono_ns": inc.first_mono, "last_ts_mono_ns": inc.last_mono,
            "risk_score": combined_risk(inc.risk_by_rule.values()), "severity": inc.severity,
            "tactics": list(inc.tactics), "techniques": list(inc.techniques),
            "alerts": inc.alert_count, "timeline_dropped": inc.timeline_dropped,
            "rules": sorted(inc.rule_first, key=inc.rule_first.__getitem__),  # stable: ties keep first-seen order
            "roots": list(inc.roots), "indicators": list(inc.indicators),
            "processes": self._processes(inc),
            "timeline": [dict(t, events=[dict(e) for e in t["events"]]) for t in inc.timeline],
        }}


def _worth_linking(value: str) -> bool:
    """Loopback, unspecified, link-local and multicast addresses join nothing (every host has them)."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return "." in value and value not in ("localhost",)
    return not (ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast)


def correlator_for(profile: Any, schema: Any, force: bool = False) -> Correlator | None:
    """The run's correlator when its profile's ``[incidents]`` enables it (or ``force``)."""
    settings = getattr(profile, "incidents", None) if profile is not None else None
    if settings is None:
        settings = IncidentsSettings()
    if not (settings.enable or force):
        return None
    return Correlator(schema, settings.window_s)


def incidents_summary(counts: "collections.Counter[str]") -> str:
    """The stop summary's line: ``incidents: 15 closed (16 opened, 1 merged into another)``."""
    closed, merged = counts["closed"], counts["merged"]
    parts = [f"{counts['opened']:,} opened"]
    if merged:
        parts.append(f"{merged:,} merged into another")
    for key, words in (("timeline_dropped", "alerts beyond a record's timeline"),
                       ("processes_evicted", "processes evicted from the process table"),
                       ("errors", "correlation errors (logged)")):
        if counts[key]:
            parts.append(f"{counts[key]:,} {words}")
    return f"incidents: {closed:,} closed ({', '.join(parts)})"
