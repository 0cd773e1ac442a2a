"""A bounded table of live processes, seeded from /proc and kept by exec,
fork and exit events, that gives every event its process and parent fields.

``process.entity_id`` is the pid plus the thread-group leader's start time in
clock ticks, in hex.  The kernel reports ``task->start_boottime`` in ns and
/proc's ``stat`` field 22 is the same value in clock ticks, so a process seen
first in /proc and later in an event gets the same id.
"""

from __future__ import annotations

import collections
import os
import socket
from typing import Any

from kestrel_core.event import process_entity_id
from kestrel_core.host import host_fields

CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK_NS = 10**9 // CLK_TCK
MAX_CHAIN = 8


class _Identity(dict):
    def __missing__(self, path: str) -> str:
        return path


entity_id = process_entity_id  # the id every live source shares


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def split_args(buf: bytes) -> list[str]:
    """NUL-separated argv (as in /proc/<pid>/cmdline) -> list of strings."""
    if not buf:
        return []
    if buf.endswith(b"\0"):
        buf = buf[:-1]
    return buf.decode("utf-8", "replace").split("\0")


class Proc:
    __slots__ = (
        "args",
        "base",
        "base_key",
        "chain",
        "command_line",
        "cwd",
        "entity_id",
        "executable",
        "gen",
        "name",
        "parent_entity_id",
        "pid",
        "ppid",
        "templates",
        "ticks",
    )

    def __init__(self, pid: int, ticks: int, ppid: int, parent_entity_id: str, name: str, executable: str,
                 args: list[str], cwd: str, chain: tuple[str, ...] = ()) -> None:
        self.pid, self.ticks, self.ppid, self.parent_entity_id = pid, ticks, ppid, parent_entity_id
        self.entity_id = entity_id(pid, ticks)
        self.name, self.executable, self.args, self.cwd, self.chain = name, executable, args, cwd, chain
        self.command_line = " ".join(args)
        self.base: dict[str, Any] | None = None
        """Cached process/parent fields, valid while ``base_key`` (parent, its exec count) holds."""
        self.base_key: tuple[int, int, int] | None = None
        self.gen = 0
        """Execs seen for this entry (children's cached parent fields check it)."""
        self.templates: dict[tuple, tuple[dict[str, Any], dict[Any, Any]]] = {}
        """The decoder's per-record templates, each with the ``base`` it was built from."""


class ProcTable:
    """pid -> :class:`Proc`, least recently used evicted beyond ``capacity``."""

    def __init__(self, capacity: int = 32768, host_name: str | None = None,
                 keys: dict[str, Any] | None = None) -> None:
        self.capacity = capacity
        self.keys: dict[str, Any] = keys if keys is not None else _Identity()
        """ECS path -> the key ``base_fields`` uses (schema field ids for the source)."""
        self.procs: collections.OrderedDict[int, Proc] = collections.OrderedDict()
        self.evicted = 0
        self.seeded = 0
        self.host = host_name or socket.gethostname()
        self._host_items: dict[Any, str] | None = None
        self._host_keys: Any = None

    # ------------------------------------------------------------ /proc
    def seed(self) -> None:
        """Every process alive now (threads excluded)."""
        for name in os.listdir("/proc"):
            if name.isdigit():
                proc = self.from_proc(int(name))
                if proc is not None:
                    self._put(proc)
                    self.seeded += 1

    def from_proc(self, pid: int) -> Proc | None:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            return None
        # comm may contain spaces and parentheses: split after the last ')'.
        lpar, rpar = stat.index(b"("), stat.rindex(b")")
        comm = stat[lpar + 1: rpar].decode("utf-8", "replace")
        rest = stat[rpar + 2:].split()
        ppid, ticks = int(rest[1]), int(rest[19])
        exe = _readlink(f"/proc/{pid}/exe")
        exe = exe.removesuffix(" (deleted)")
        args = split_args(cmdline)
        parent = self.procs.get(ppid)
        return Proc(pid, ticks, ppid, parent.entity_id if parent else "", os.path.basename(exe) or comm, exe,
                    args or [comm], _readlink(f"/proc/{pid}/cwd"))

    # ------------------------------------------------------------ lookups
    def _put(self, proc: Proc) -> None:
        procs = self.procs
        procs[proc.pid] = proc
        procs.move_to_end(proc.pid)
        if len(procs) > self.capacity:
            procs.popitem(last=False)
            self.evicted += 1

    def get(self, pid: int, start_ns: int) -> Proc:
        """The entry for ``pid`` started at ``start_ns`` (kernel ns), from the
        table or /proc; a placeholder if the process is already gone."""
        ticks = start_ns // TICK_NS
        proc = self.procs.get(pid)
        if proc is not None and proc.ticks == ticks:
            self.procs.move_to_end(pid)
            return proc
        proc = self.from_proc(pid)
        if proc is None or proc.ticks != ticks:
            proc = Proc(pid, ticks, 0, "", "", "", [], "")
        self._put(proc)
        return proc

    def peek(self, pid: int) -> Proc | None:
        return self.procs.get(pid)

    # ------------------------------------------------------------ lifecycle
    def on_fork(self, pid: int, start_ns: int, parent: Proc) -> Proc:
        """The child runs the parent's image in the parent's directory."""
        child = Proc(pid, start_ns // TICK_NS, parent.pid, parent.entity_id, parent.name, parent.executable,
                     parent.args, parent.cwd, parent.chain)
        self._put(child)
        return child

    def on_exec(self, proc: Proc, executable: str, args: list[str], cwd: str) -> None:
        if proc.executable:
            proc.chain = (proc.chain + (proc.executable,))[-MAX_CHAIN:]
        proc.executable = executable
        proc.name = os.path.basename(executable)
        proc.args = args
        proc.command_line = " ".join(args)
        if cwd:
            proc.cwd = cwd
        proc.base = None
        proc.gen += 1

    def on_exit(self, pid: int) -> None:
        self.procs.pop(pid, None)

    # ------------------------------------------------------------ fields
    def host_items(self) -> dict[Any, str]:
        """host.* of every event (kestrel_core.host.host_fields), keyed by ``self.keys``."""
        if self._host_items is None or self._host_keys is not self.keys:
            self._host_items = {self.keys[path]: value for path, value in host_fields().items()}
            self._host_keys = self.keys
        return self._host_items

    def base_fields(self, proc: Proc, ppid: int, pstart_ns: int) -> dict[str, Any]:
        """process.* and process.parent.* of an event (a fresh dict the caller may extend),
        keyed by ``self.keys``."""
        return self.base_ref(proc, ppid, pstart_ns).copy()

    def base_ref(self, proc: Proc, ppid: int, pstart_ns: int) -> dict[str, Any]:
        """The cached dict behind ``base_fields`` (not to be modified): a new
        object whenever the process or its parent changed."""
        parent = self.procs.get(ppid)
        if parent is None or parent.ticks != pstart_ns // TICK_NS:
            parent = self.get(ppid, pstart_ns) if ppid else None
        key = (ppid, id(parent), parent.gen if parent else 0)
        base = proc.base
        if base is None or proc.base_key != key:
            proc.ppid = ppid
            proc.parent_entity_id = parent.entity_id if parent else ""
            k = self.keys
            base = {
                k["event.kind"]: "event",
                k["event.module"]: "ebpf",
                **self.host_items(),
                k["host.name"]: self.host,
                k["process.pid"]: proc.pid,
                k["process.entity_id"]: proc.entity_id,
                k["process.name"]: proc.name,
                k["process.executable"]: proc.executable,
                k["process.args"]: proc.args,
                k["process.args_count"]: len(proc.args),
                k["process.command_line"]: proc.command_line,
                k["process.working_directory"]: proc.cwd,
                k["process.parent.pid"]: ppid,
                k["process.parent.entity_id"]: proc.parent_entity_id,
                k["process.parent.name"]: parent.name if parent else "",
                k["process.parent.executable"]: parent.executable if parent else "",
                k["process.parent.args"]: parent.args if parent else [],
                k["process.parent.args_count"]: len(parent.args) if parent else 0,
                k["process.parent.command_line"]: parent.command_line if parent else "",
                k["process.Ext.exec_chain"]: list(proc.chain),
            }
            proc.base, proc.base_key = base, key
        return base
