"""Process facts from /proc/<pid>, read when a fanotify event arrives.

The process may already be gone (or be a kernel thread): every field
degrades to empty/None instead of raising.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import attrs

from kestrel_core.event import process_entity_id


@attrs.frozen
class ProcInfo:
    pid: int
    ppid: int | None = None
    name: str = ""
    executable: str = ""
    args: tuple[str, ...] = ()
    cwd: str = ""
    uid: str | None = None
    euid: str | None = None
    gid: str | None = None
    start_ticks: int | None = None
    """Start time in clock ticks since boot (/proc/<pid>/stat field 22)."""

    @property
    def alive(self) -> bool:
        return self.start_ticks is not None

    @property
    def entity_id(self) -> str:
        """Stable for the life of the process, unique across pid reuse, the same as
        the other live sources give; just the pid when the process is already gone."""
        return process_entity_id(self.pid, self.start_ticks) if self.start_ticks is not None else str(self.pid)

    @property
    def command_line(self) -> str:
        return " ".join(self.args)


def process_identity_fields(pid: int, entity_id: str, name: str, executable: str,
                            args: Sequence[str]) -> dict[str, Any]:
    """ECS ``pid``, ``entity_id``, ``name``, ``executable``, ``args``,
    ``args_count`` and ``command_line`` of one process (unprefixed), as every
    live source writes them for ``process.*`` and ``process.parent.*``; empty
    values are left out, the pid never is."""
    out: dict[str, Any] = {"pid": pid}
    if entity_id:
        out["entity_id"] = entity_id
    if name:
        out["name"] = name
    if executable:
        out["executable"] = executable
    if args:
        out["args"] = list(args)
        out["args_count"] = len(args)
        out["command_line"] = " ".join(args)
    return out


def _read(path: str, limit: int | None = None) -> bytes | None:
    """The file's bytes (at most ``limit``, in one read), None when unreadable."""
    try:
        if limit is None:
            with open(path, "rb") as fh:
                return fh.read()
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, limit)
        finally:
            os.close(fd)
    except OSError:
        return None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def read_proc(pid: int, *, args: bool = True, cwd: bool = True, max_args_bytes: int | None = None) -> ProcInfo:
    """What /proc says about ``pid`` now; fields it cannot read stay empty.
    ``args``/``cwd`` False skip those reads; ``max_args_bytes`` caps the argv read."""
    base = f"/proc/{pid}"
    fields: dict = {}
    stat = _read(f"{base}/stat")
    if stat:
        # comm may hold spaces and parentheses: split after the last ')'.
        head, _, tail = stat.rpartition(b")")
        rest = tail.split()
        fields["name"] = head.partition(b"(")[2].decode(errors="replace")
        if len(rest) > 19:
            fields["ppid"] = int(rest[1])  # field 4
            fields["start_ticks"] = int(rest[19])  # field 22
    status = _read(f"{base}/status")
    if status:
        for line in status.split(b"\n"):
            if line.startswith(b"Uid:"):
                ids = line.split()
                fields["uid"], fields["euid"] = ids[1].decode(), ids[2].decode()
            elif line.startswith(b"Gid:"):
                fields["gid"] = line.split()[1].decode()
                break
    cmdline = _read(f"{base}/cmdline", max_args_bytes) if args else None
    if cmdline:
        fields["args"] = tuple(a.decode(errors="replace") for a in cmdline.rstrip(b"\0").split(b"\0"))
    fields["executable"] = _readlink(f"{base}/exe").removesuffix(" (deleted)")
    if cwd:
        fields["cwd"] = _readlink(f"{base}/cwd")
    return ProcInfo(pid=pid, **fields)
