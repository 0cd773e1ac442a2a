"""ECS records (flat, dotted keys) from what the portable source observed.

Field names follow the live-source contract shared with sources-ebpf and
sources-fanotify; the few fields outside the core ECS table are declared in
``EXTRA_FIELDS`` and registered with the run's schema by the source.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from kestrel_core.schema import FieldType

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


def base(ts_wall_ns: int, category: str, etype: str, action: str) -> dict[str, Any]:
    return {
        "@timestamp": ts_wall_ns,
        "event.kind": "event",
        "event.category": [category],
        "event.type": [etype],
        "event.action": action,
        "event.module": MODULE,
        "host.name": HOST_NAME,
    }


def add_process(record: dict[str, Any], info: ProcInfo | None, parent: ProcInfo | None) -> dict[str, Any]:
    """process.* (the acting process), process.parent.*, user.* and group.*."""
    if info is None:
        return record
    record["process.pid"] = info.pid
    if info.entity_id:
        record["process.entity_id"] = info.entity_id
    if info.name:
        record["process.name"] = info.name
    if info.executable:
        record["process.executable"] = info.executable
    if info.args:
        record["process.args"] = list(info.args)
        record["process.args_count"] = len(info.args)
        record["process.command_line"] = info.command_line
    if info.cwd:
        record["process.working_directory"] = info.cwd
    if info.uid >= 0:
        record["user.id"] = str(info.uid)
    if info.euid >= 0:
        record["user.effective.id"] = str(info.euid)
    if info.gid >= 0:
        record["group.id"] = str(info.gid)
    if info.incomplete:
        record["process.Ext.incomplete"] = True
    if info.ppid:
        record["process.parent.pid"] = info.ppid
    if parent is not None and parent.pid == info.ppid:
        if parent.entity_id:
            record["process.parent.entity_id"] = parent.entity_id
        if parent.name:
            record["process.parent.name"] = parent.name
        if parent.executable:
            record["process.parent.executable"] = parent.executable
        if parent.args:
            record["process.parent.args"] = list(parent.args)
            record["process.parent.args_count"] = len(parent.args)
            record["process.parent.command_line"] = parent.command_line
    return record


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
