"""FanotifySource: fanotify notifications -> ECS file (and exec) records.

What fanotify in fd mode can and cannot say: it reports opens, execs,
modifications and close-after-write with the file and the pid, but not the
open flags (read vs write), creations, unlinks or renames (those need
FAN_REPORT_FID, no file descriptor, and no pid-side path).  Process fields
come from /proc when the event is read; a process already gone keeps only
its pid.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any, Callable

import attrs

from kestrel_core.host import host_fields
from kestrel_core.interfaces import Emit, Interest, Probe, Source, SourceCapabilities
from kestrel_core.normalize import nest

from . import fanotify as fan
from .procinfo import ProcInfo, process_identity_fields, read_proc

log = logging.getLogger("kestrel.fanotify")

EVENT_BITS: dict[str, int] = {
    "open": fan.FAN_OPEN,
    "exec": fan.FAN_OPEN_EXEC,
    "modify": fan.FAN_MODIFY,
    "close_write": fan.FAN_CLOSE_WRITE,
    "access": fan.FAN_ACCESS,
}
# (event.category, event.type, event.action) per kind, in the order one merged
# fanotify event is split into records (an open precedes its close).
_ECS_KIND: dict[str, tuple[str, list[str], str]] = {
    "exec": ("process", ["start"], "exec"),
    "open": ("file", ["access"], "open"),
    "access": ("file", ["access"], "read"),
    "modify": ("file", ["change"], "modify"),
    "close_write": ("file", ["change"], "close_write"),
}


def is_elf_interpreter(path: str) -> bool:
    """The kernel opens a binary's PT_INTERP (ld.so) with the exec flag too:
    that open is not a process start."""
    name = os.path.basename(path)
    return name.startswith(("ld-linux", "ld-musl", "ld64.so", "ld.so"))


def _validate_events(_inst: Any, _attr: Any, value: list[str]) -> None:
    bad = [e for e in value if e not in EVENT_BITS]
    if bad:
        raise ValueError(f"unknown fanotify event(s) {', '.join(map(repr, bad))} (expected some of "
                         f"{', '.join(EVENT_BITS)})")
    if not value:
        raise ValueError("events must name at least one of " + ", ".join(EVENT_BITS))


def _validate_mark(_inst: Any, _attr: Any, value: str) -> None:
    if value not in fan.MARK_TYPES:
        raise ValueError(f"unknown mark type {value!r} (expected one of {', '.join(fan.MARK_TYPES)})")


def file_fields(path: str) -> dict[str, str]:
    directory, name = os.path.split(path)
    out = {"path": path, "name": name, "directory": directory}
    ext = os.path.splitext(name)[1]
    if ext:
        out["extension"] = ext[1:]
    return out


def process_name(proc: ProcInfo) -> str:
    """comm, unless the kernel truncated it (15 characters): then the executable's name."""
    base = os.path.basename(proc.executable)
    if len(proc.name) == 15 and base.startswith(proc.name):
        return base
    return proc.name


def process_fields(proc: ProcInfo, parent: ProcInfo | None) -> dict[str, Any]:
    """ECS ``process.*`` (with ``parent``) from /proc facts; empty facts are left out."""
    out = _identity(proc)
    if proc.cwd:
        out["working_directory"] = proc.cwd
    if parent is not None:
        out["parent"] = _identity(parent)
    return out


def _identity(proc: ProcInfo) -> dict[str, Any]:
    return process_identity_fields(proc.pid, proc.entity_id, process_name(proc), proc.executable, proc.args)


class FanotifySource(Source):
    PLUGIN_NAME = "fanotify"
    DESCRIPTION = "file open/exec/modify/close-write notifications from fanotify (needs root)"
    NORMALIZER = "ecs-json"

    @attrs.define(kw_only=True)
    class Settings:
        paths: list[str] = attrs.Factory(lambda: ["/"])
        """Paths to mark."""
        mark: str = attrs.field(default="filesystem", validator=_validate_mark)
        """Mark type for every path: "filesystem" (the whole filesystem holding the path), "mount" or "inode"
        (the file, or a directory and its direct children)."""
        events: list[str] = attrs.field(factory=lambda: ["open", "exec", "close_write"], validator=_validate_events)
        """Which notifications to report: open, exec, modify, close_write, access."""
        exclude_self: bool = True
        """Never report Kestrel's own process."""
        poll_ms: int = 200
        """How long one read waits before checking for a stop request."""
        host: str = ""
        """host.name (default: this machine's hostname)."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        self.kinds = set(settings.events)
        self.host_name = settings.host or socket.gethostname()
        host = {**host_fields(), "host.name": self.host_name}
        self.host_record = nest((path.split("."), value) for path, value in host.items())
        self.self_pid = os.getpid()
        self.reported_overflows = 0

    @classmethod
    def probe(cls) -> Probe:
        available, reason = fan.probe("/")
        return Probe(available, reason)

    def capabilities(self) -> SourceCapabilities:
        cats = {"process"} if "exec" in self.kinds else set()
        if self.kinds - {"exec"}:
            cats.add("file")
        return SourceCapabilities(categories=frozenset(cats))

    def set_interest(self, interest: Interest) -> None:
        # Push-down: marks are only asked for the kinds some rule can match.
        if interest.wants_all:
            return
        if "process" not in interest.categories:
            self.kinds.discard("exec")
        if "file" not in interest.categories:
            self.kinds &= {"exec"}

    def mask(self) -> int:
        mask = 0
        for kind in self.kinds:
            mask |= EVENT_BITS[kind]
        return mask

    def run(self, emit: Emit, stop: threading.Event) -> None:
        if not self.kinds:
            log.info("fanotify: no loaded rule wants file or exec events; not watching")
            return
        marks = [(p, self.settings.mark) for p in self.settings.paths]
        with fan.FanotifyNotifier(self.mask(), marks) as notifier:
            log.info("fanotify: watching %s (%s marks) for %s", ", ".join(self.settings.paths),
                     self.settings.mark, ", ".join(sorted(self.kinds)))
            timeout = self.settings.poll_ms / 1000
            while True:
                stopping = stop.is_set()  # after a stop, one last read hands over what is already queued
                events = notifier.read(0 if stopping else timeout)
                overflow = notifier.take_overflow()
                if overflow is not None:
                    self.report_overflow(emit, overflow)
                for record in self.records(events):
                    emit(record)
                if stopping:
                    break

    def report_overflow(self, emit: Emit, overflow: fan.Overflow) -> None:
        """A full kernel queue dropped events: never silent."""
        self.reported_overflows += overflow.count
        loss: Callable[..., Any] | None = getattr(emit, "loss", None)
        if loss is not None:
            # Records are stamped with wall time, which ecs-json also uses as their ts_mono_ns; the kernel
            # does not say how many events it dropped, so the count of overflows is a lower bound.
            loss(overflow.count, overflow.first_ts_ns, overflow.last_ts_ns, reason="fanotify_overflow",
                 first_wall_ns=overflow.first_ts_ns, last_wall_ns=overflow.last_ts_ns)
        else:
            log.warning("fanotify: event queue overflowed %d time(s); events were lost", overflow.count)

    def records(self, events: list[fan.FileEvent]) -> list[dict[str, Any]]:
        """ECS records for one read batch (/proc is read once per pid per batch)."""
        procs: dict[int, ProcInfo] = {}

        def proc(pid: int) -> ProcInfo:
            info = procs.get(pid)
            if info is None:
                info = procs[pid] = read_proc(pid)
            return info

        out = []
        for ev in events:
            if self.settings.exclude_self and ev.pid == self.self_pid:
                continue
            for kind, (category, types, action) in _ECS_KIND.items():
                if kind not in self.kinds or not ev.mask & EVENT_BITS[kind]:
                    continue
                if kind == "exec" and is_elf_interpreter(ev.path):
                    continue
                out.append(self.record(ev, kind, category, types, action, proc))
        return out

    def record(self, ev: fan.FileEvent, kind: str, category: str, types: list[str], action: str,
               proc: Callable[[int], ProcInfo]) -> dict[str, Any]:
        info = proc(ev.pid)
        parent = proc(info.ppid) if info.ppid else None
        if kind == "exec":
            info = self._exec_image(info, ev.path)
        record: dict[str, Any] = {
            "@timestamp": ev.ts_wall_ns,
            "event": {"kind": "event", "category": [category], "type": list(types), "action": action,
                      "module": "fanotify"},
            **self.host_record,
            "process": process_fields(info, parent),
        }
        # user.id is the effective id, as Elastic Defend has it; the real one is user.Ext.real.id.
        effective = info.euid if info.euid is not None else info.uid
        if effective is not None:
            record["user"] = {"id": effective, "effective": {"id": effective}}
            if info.uid is not None:
                record["user"]["Ext"] = {"real": {"id": info.uid}}
        if info.gid is not None:
            record["group"] = {"id": info.gid}
        if category == "file" and ev.path:
            record["file"] = file_fields(ev.path)
        return record

    @staticmethod
    def _exec_image(info: ProcInfo, path: str) -> ProcInfo:
        """The exec event is raised while execve opens the binary: if /proc
        still shows the old image, the new one is ``path`` and its argv is
        not known yet.  /proc may also show the new image with the old comm
        (execve switches the executable before it renames the task): then the
        name is the new binary's."""
        if not path:
            return info
        base = os.path.basename(path)
        if info.executable == path:
            if info.name and not base.startswith(info.name):  # comm still the old image's
                return attrs.evolve(info, name=base)
            return info
        return attrs.evolve(info, executable=path, name=base, args=(path,))

    def describe_record(self, record: Any) -> str:
        try:
            return f"fanotify event pid {record['process']['pid']} {record['event']['action']}"
        except (KeyError, TypeError):
            return "fanotify event"
