"""A bounded table of live processes, seeded from /proc and kept by exec,
fork and exit events, that gives every event its process and parent fields.

``process.entity_id`` is the pid plus the thread-group leader's start time in
clock ticks, in hex.  The kernel reports ``task->start_boottime`` in ns and
/proc's ``stat`` field 22 is the same value in clock ticks, so a process seen
first in /proc and later in an event gets the same id.
"""

from __future__ import annotations

import collections
import grp
import os
import pwd
import re
import socket
from typing import Any, NamedTuple

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


# Capability bit -> name (include/uapi/linux/capability.h; the numbering is kernel ABI).
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_cap_names: dict[int, list[str]] = {}


def capability_names(mask: int) -> list[str]:
    """A capability bitmask -> its names, lowest bit first (cached: few distinct sets exist)."""
    names = _cap_names.get(mask)
    if names is None:
        names = [CAPABILITIES[i] if i < len(CAPABILITIES) else f"CAP_{i}" for i in range(64) if mask >> i & 1]
        if len(_cap_names) < 4096:
            _cap_names[mask] = names
    return names


_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
# systemd-driver scope prefixes -> runtime (cgroup leaf "<prefix>-<64 hex>.scope")
_SCOPES = (("docker-", "docker"), ("cri-containerd-", "containerd"), ("crio-", "cri-o"), ("libpod-", "podman"))
# cgroupfs-driver parent directories -> runtime (leaf is the bare id)
_PARENTS = {"docker": "docker", "libpod_parent": "podman", "crio": "cri-o", "containerd": "containerd"}


def container_of(leaf: str, parent: str) -> tuple[str, str]:
    """``(container.id, container.runtime)`` from the last two components of a
    cgroup2 path, or empty strings for a process in no container."""
    for prefix, runtime in _SCOPES:
        if leaf.startswith(prefix) and leaf.endswith(".scope"):
            cid = leaf[len(prefix):-len(".scope")]
            if _CONTAINER_ID.fullmatch(cid):
                return cid, runtime
    if _CONTAINER_ID.fullmatch(leaf):
        return leaf, _PARENTS.get(parent, "")
    return "", ""


class Ident(NamedTuple):
    """A process's identity as the kernel saw it at exec (or /proc at seeding),
    kept up to date by setuid-family events."""

    ruid: int
    euid: int
    suid: int
    rgid: int
    egid: int
    sgid: int
    sid: int
    pgid: int
    tty_major: int
    tty_minor: int
    cap_eff: int
    cap_prm: int
    container_id: str
    container_runtime: str


_NO_ID = 0xFFFFFFFF


def _set_ids(r: int, e: int, s: int, kind: int, a0: int, a1: int, a2: int,
             privileged: bool) -> tuple[int, int, int]:
    """Real, effective and saved ids after a successful set*id call (credentials(7))."""
    if kind in (16, 17):  # setuid/setgid: all three if privileged, else the effective one
        return (a0, a0, a0) if privileged else (r, a0, s)
    if kind in (18, 19):  # setreuid/setregid: -1 keeps; a changed real id (or effective != old real) sets saved
        nr = r if a0 == _NO_ID else a0
        ne = e if a1 == _NO_ID else a1
        ns = ne if a0 != _NO_ID or (a1 != _NO_ID and a1 != r) else s
        return nr, ne, ns
    return (r if a0 == _NO_ID else a0, e if a1 == _NO_ID else a1, s if a2 == _NO_ID else a2)  # setres*id


class _Names(dict):
    """id -> name from the passwd or group database ("" if none), looked up once per id."""

    def __init__(self, lookup: Any) -> None:
        super().__init__()
        self.lookup = lookup

    def __missing__(self, n: int) -> str:
        try:
            name = self.lookup(n)
        except (KeyError, OverflowError):
            name = ""
        if len(self) < 65536:
            self[n] = name
        return name


user_name = _Names(lambda uid: pwd.getpwuid(uid).pw_name).__getitem__
group_name = _Names(lambda gid: grp.getgrgid(gid).gr_name).__getitem__


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
        "comm",
        "command_line",
        "cwd",
        "entity_id",
        "env_vars",
        "executable",
        "gen",
        "ident",
        "name",
        "parent_entity_id",
        "pid",
        "ppid",
        "sha256",
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
        self.ident: Ident | None = None
        """Credentials, session, tty, capabilities, container (None: not known)."""
        self.comm = ""
        self.sha256: str | None = None
        """sha256 of the image (set at exec; None: not hashed or not seen exec)."""
        self.env_vars: list[str] = []
        """The allow-listed KEY=VALUE variables of its environment at exec."""
        """The kernel's short name of the process (task->comm, at most 15 bytes)."""


def ident_from_proc(pid: int, pgid: int, sid: int, tty_nr: int) -> Ident | None:
    """The identity of a running process from /proc/<pid>/status and cgroup
    (the seeding counterpart of the kernel's ``struct ident``)."""
    ids: dict[str, list[str]] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("Uid", "Gid", "CapEff", "CapPrm"):
                    ids[key] = value.split()
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            path = next((line[3:].strip() for line in fh if line.startswith("0::")), "")
    except OSError:
        return None
    if len(ids.get("Uid", ())) < 3 or len(ids.get("Gid", ())) < 3:
        return None
    uids, gids = [int(x) for x in ids["Uid"][:3]], [int(x) for x in ids["Gid"][:3]]
    rest, _, leaf = path.rpartition("/")
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    return Ident(uids[0], uids[1], uids[2], gids[0], gids[1], gids[2], sid, pgid, major, minor,
                 int(ids.get("CapEff", ["0"])[0], 16), int(ids.get("CapPrm", ["0"])[0], 16),
                 *container_of(leaf, rest.rpartition("/")[2]))


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
        proc = Proc(pid, ticks, ppid, parent.entity_id if parent else "", os.path.basename(exe) or comm, exe,
                    args or [comm], _readlink(f"/proc/{pid}/cwd"))
        proc.comm = comm
        proc.ident = ident_from_proc(pid, int(rest[2]), int(rest[3]), int(rest[4]))
        return proc

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
        # fork copies credentials, session, tty, cgroup, image and environment
        child.ident, child.comm, child.sha256, child.env_vars = parent.ident, parent.comm, parent.sha256, parent.env_vars
        self._put(child)
        return child

    def on_setid(self, proc: Proc, kind: int, a0: int, a1: int, a2: int) -> None:
        """A successful setuid-family call (kinds 16-21) of ``proc``."""
        ident = proc.ident
        if ident is None:
            return
        # The kernel tests CAP_SETUID / CAP_SETGID; effective root holds both unless dropped.
        privileged = ident.euid == 0
        if kind in (16, 18, 20):
            r, e, s = _set_ids(ident.ruid, ident.euid, ident.suid, kind, a0, a1, a2, privileged)
            proc.ident = ident._replace(ruid=r, euid=e, suid=s)
        else:
            r, e, s = _set_ids(ident.rgid, ident.egid, ident.sgid, kind, a0, a1, a2, privileged)
            proc.ident = ident._replace(rgid=r, egid=e, sgid=s)
        proc.base = None
        proc.gen += 1

    def on_exec(self, proc: Proc, executable: str, args: list[str], cwd: str, filename: str = "") -> None:
        """``filename``: the path as passed to execve.  ``process.name`` is its
        last component -- what the kernel names the process (comm, untruncated),
        and what published rules match (``strings``, not the resolved
        ``x86_64-linux-gnu-strings``) -- else the executable's."""
        if proc.executable:
            proc.chain = (proc.chain + (proc.executable,))[-MAX_CHAIN:]
        proc.executable = executable
        proc.name = os.path.basename(filename) or os.path.basename(executable)
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
            if proc.ident is not None:
                self._identity(base, proc, parent)
            if proc.sha256:
                base[k["process.hash.sha256"]] = proc.sha256
            if proc.env_vars:
                base[k["process.env_vars"]] = proc.env_vars
            proc.base, proc.base_key = base, key
        return base

    def _leader(self, base: dict[Any, Any], prefix: str, pid: int) -> Proc | None:
        """``<prefix>.pid`` and, when the table knows that process, its identity fields."""
        k = self.keys
        base[k[prefix + ".pid"]] = pid
        leader = self.procs.get(pid) if pid else None
        if leader is not None:
            base[k[prefix + ".entity_id"]] = leader.entity_id
            base[k[prefix + ".name"]] = leader.name
            base[k[prefix + ".executable"]] = leader.executable
            base[k[prefix + ".args"]] = leader.args
            base[k[prefix + ".args_count"]] = len(leader.args)
        return leader

    def _identity(self, base: dict[Any, Any], proc: Proc, parent: Proc | None) -> None:
        """The ECS process identity set (ids and names of the effective, real
        and saved user and group), capabilities, tty, leaders and container."""
        k, i = self.keys, proc.ident
        for prefix, uid, gid in (("process.", i.euid, i.egid), ("process.real_", i.ruid, i.rgid),
                                 ("process.saved_", i.suid, i.sgid)):
            base[k[prefix + "user.id"]], base[k[prefix + "user.name"]] = str(uid), user_name(uid)
            base[k[prefix + "group.id"]], base[k[prefix + "group.name"]] = str(gid), group_name(gid)
        base[k["process.thread.capabilities.effective"]] = capability_names(i.cap_eff)
        base[k["process.thread.capabilities.permitted"]] = capability_names(i.cap_prm)
        base[k["process.interactive"]] = bool(i.tty_major)
        if i.tty_major:
            base[k["process.tty.char_device.major"]] = i.tty_major
            base[k["process.tty.char_device.minor"]] = i.tty_minor
        self._leader(base, "process.group_leader", i.pgid)
        session = self._leader(base, "process.session_leader", i.sid)
        # The entry leader approximated by the session leader (see docs/ecs-fidelity.md),
        # its entry type by how that session began.
        self._leader(base, "process.entry_leader", i.sid)
        base[k["process.entry_leader.entry_meta.type"]] = self._entry_type(session, i)
        if i.container_id:
            base[k["container.id"]] = i.container_id
            if i.container_runtime:
                base[k["container.runtime"]] = i.container_runtime
        if parent is not None and parent.ident is not None:
            p = parent.ident
            base[k["process.parent.user.id"]], base[k["process.parent.user.name"]] = str(p.euid), user_name(p.euid)
            base[k["process.parent.group.id"]] = str(p.egid)
            base[k["process.parent.real_user.id"]] = str(p.ruid)
            base[k["process.parent.real_group.id"]] = str(p.rgid)
            base[k["process.parent.interactive"]] = bool(p.tty_major)

    def _entry_type(self, session: Proc | None, ident: Ident) -> str:
        if ident.container_id:
            return "container"
        if ident.sid in (0, 1) or session is None:
            return "init" if ident.sid in (0, 1) else "unknown"
        opener = self.procs.get(session.ppid)
        opener_name = opener.name if opener else ""
        if opener_name == "sshd" or session.name == "sshd":
            return "sshd"
        if opener_name in ("login", "agetty", "getty") or session.name == "login":
            return "terminal" if ident.tty_major == 136 else "console"  # 136: pseudo-terminals (pts)
        if ident.tty_major:
            return "terminal"
        return "unknown"
