"""ECS records (flat, dotted keys) from what the portable source observed.

Field names follow the live-source contract shared with sources-ebpf and
sources-fanotify; the few fields outside the core ECS table are declared in
``EXTRA_FIELDS`` and registered with the run's schema by the source.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from kestrel_core.host import host_fields
from kestrel_core.schema import VALUE_RENAMES, FieldType
from kestrel_sources_fanotify.procinfo import process_identity_fields

from .procfs import ProcInfo

MODULE = "portable"
HOST_NAME = socket.gethostname()

EXTRA_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("user.target.id", FieldType.KEYWORD),
    ("group.target.id", FieldType.KEYWORD),
    ("target.process.pid", FieldType.LONG),
    ("target.process.name", FieldType.KEYWORD),
    ("network.type", FieldType.KEYWORD),
    ("process.Ext.incomplete", FieldType.BOOLEAN),
    ("file.Ext.inferred_action", FieldType.BOOLEAN),
)


_ACTIONS = VALUE_RENAMES["event.action"]


def base(ts_wall_ns: int, category: str, etype: str, action: str) -> dict[str, Any]:
    """The fields every record has.  ``action`` may be this source's kind name
    (``connect``): the record carries the schema's current value for it
    (``connection_attempted``, Elastic Defend's), like the eBPF source."""
    action = _ACTIONS.get(action, action)
    return {
        "@timestamp": ts_wall_ns,
        "event.kind": "event",
        "event.category": [category],
        "event.type": [etype],
        "event.action": action,
        "event.module": MODULE,
        **host_fields(),
        "host.name": HOST_NAME,
    }


def add_process(record: dict[str, Any], info: ProcInfo | None, parent: ProcInfo | None) -> dict[str, Any]:
    """process.* (the acting process), process.parent.*, user.* and group.*."""
    if info is None:
        return record
    _add_identity(record, "process.", info)
    if info.cwd:
        record["process.working_directory"] = info.cwd
    # user.id is the effective id, as Elastic Defend has it; the real one is user.Ext.real.id.
    if info.euid >= 0:
        record["user.id"] = record["user.effective.id"] = str(info.euid)
    elif info.uid >= 0:
        record["user.id"] = str(info.uid)
    if info.uid >= 0:
        record["user.Ext.real.id"] = str(info.uid)
    if info.gid >= 0:
        record["group.id"] = record["group.Ext.real.id"] = str(info.gid)  # the connector reports the real gid only
    if info.incomplete:
        record["process.Ext.incomplete"] = True
    if info.ppid:
        record["process.parent.pid"] = info.ppid
    if parent is not None and parent.pid == info.ppid:
        _add_identity(record, "process.parent.", parent)
    return record


def _add_identity(record: dict[str, Any], prefix: str, info: ProcInfo) -> None:
    fields = process_identity_fields(info.pid, info.entity_id, info.name, info.executable, info.args)
    record.update((prefix + key, value) for key, value in fields.items())


def add_file(record: dict[str, Any], path: str) -> dict[str, Any]:
    directory, name = os.path.split(path)
    record["file.path"] = path
    record["file.name"] = name
    record["file.directory"] = directory or "/"
    ext = os.path.splitext(name)[1]
    if ext and ext != name:
        record["file.extension"] = ext[1:]
    return record


def exit_code(code: int) -> int:
    """Kernel wait status -> shell-style exit code (128 + signal when killed)."""
    signo = code & 0x7F
    return 128 + signo if signo else (code >> 8) & 0xFF
