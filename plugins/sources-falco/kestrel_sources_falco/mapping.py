"""One Falco JSON alert (``json_output: true``) -> one flat ECS record.

Falco's JSON format (falcosecurity/falco ``userspace/engine/formats.cpp``):
top-level ``time`` (ISO 8601, nanoseconds, UTC), ``rule``, ``priority``,
``source``, ``hostname``, and, each behind its own ``json_include_*``
option, ``output``, ``tags`` and ``output_fields``: the value of every
field the rule's output names (``proc.name``, ``fd.name``, ...), typed as
JSON (numbers for pids, ports, uids and ``evt.time`` in nanoseconds; null
for a value Falco could not extract).  ``evt.arg.*`` values are libs' resolved
parameter strings (falcosecurity/libs ``sinsp_filtercheck_event.cpp``
TYPE_ARGSTR): open flags and modes as names (``O_WRONLY|O_CREAT|O_F_CREATED``,
``S_IXUSR|S_ISUID``), paths relative to a directory fd made absolute.

The record uses the field names and ``event.action`` values Kestrel's live
sources emit (``exec``, ``open``, ``open_write``, ``creation``,
``deletion``, ``connection_attempted``, ...; docs/ecs-fidelity.md), so the
Linux pack's rules read Falco events like eBPF ones.  Falco's own values
(rule, priority, tags, source, output, the syscall name) go under
``falco.*`` (declared in :data:`EXTRA_FIELDS`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any

from kestrel_core.timestamps import parse_timestamp
from kestrel_core.schema import FieldType

MODULE = "falco"


class FalcoFormatError(ValueError):
    """A record that is not a Falco JSON alert; the message names the field."""


EXTRA_FIELDS: tuple[tuple[str, FieldType], ...] = (
    ("falco.rule", FieldType.KEYWORD),
    ("falco.rules", FieldType.KEYWORD_LIST),
    ("falco.priority", FieldType.KEYWORD),
    ("falco.tags", FieldType.KEYWORD_LIST),
    ("falco.source", FieldType.KEYWORD),
    ("falco.output", FieldType.KEYWORD),
    ("falco.evt.type", FieldType.KEYWORD),
    ("falco.evt.res", FieldType.KEYWORD),
    ("falco.user.loginuid", FieldType.LONG),
    ("event.severity", FieldType.LONG),
    ("container.image.name", FieldType.KEYWORD),
    ("container.image.tag", FieldType.KEYWORD_LIST),
    ("orchestrator.namespace", FieldType.KEYWORD),
    ("orchestrator.resource.name", FieldType.KEYWORD),
    ("orchestrator.resource.type", FieldType.KEYWORD),
    ("process.interactive", FieldType.BOOLEAN),
    ("process.tty.char_device.major", FieldType.LONG),
    ("process.tty.char_device.minor", FieldType.LONG),
    ("network.type", FieldType.KEYWORD),
    ("user.target.id", FieldType.KEYWORD),
    ("group.target.id", FieldType.KEYWORD),
    ("target.process.pid", FieldType.LONG),
    ("file.Ext.original.name", FieldType.KEYWORD),
    ("file.Ext.original.extension", FieldType.KEYWORD),
)

PRIORITY_SEVERITY = {"emergency": 0, "alert": 1, "critical": 2, "error": 3, "warning": 4, "notice": 5,
                     "informational": 6, "info": 6, "debug": 7}
"""Falco priorities are syslog's levels; ECS ``event.severity`` takes the number."""

# evt.type -> (category, types, action) for the kinds Kestrel's live sources share.
_KINDS: dict[str, tuple[str, tuple[str, ...], str]] = {}
for _names, _kind in (
    (("execve", "execveat"), ("process", ("start",), "exec")),
    (("clone", "clone3", "fork", "vfork"), ("process", ("start",), "fork")),
    (("procexit",), ("process", ("end",), "end")),
    (("unlink", "unlinkat", "rmdir"), ("file", ("deletion",), "deletion")),
    (("rename", "renameat", "renameat2"), ("file", ("change",), "rename")),
    (("chmod", "fchmod", "fchmodat"), ("file", ("change",), "chmod")),
    (("chown", "lchown", "fchown", "fchownat"), ("file", ("change",), "chown")),
    (("connect",), ("network", ("connection", "start"), "connection_attempted")),
    (("accept", "accept4"), ("network", ("connection", "start"), "connection_accepted")),
    (("bind", "listen"), ("network", ("start",), "bind")),
    (("ptrace",), ("process", ("access",), "ptrace")),
    (("memfd_create",), ("process", ("info",), "memfd_create")),
    (("setuid", "setreuid", "setresuid"), ("process", ("change",), "uid_change")),
    (("setgid", "setregid", "setresgid"), ("process", ("change",), "gid_change")),
    (("init_module", "finit_module"), ("driver", ("start",), "load_module")),
):
    for _name in _names:
        _KINDS[_name] = _kind
OPEN_TYPES = frozenset(("open", "openat", "openat2", "open_by_handle_at", "creat"))
_OPEN_KINDS = {
    "open": ("file", ("access",), "open"),
    "open_write": ("file", ("change",), "open_write"),
    "creation": ("file", ("creation",), "creation"),
}
OPEN_ACTIONS = tuple(_OPEN_KINDS)

RULE_OPEN_ACTIONS: dict[str, str] = {
    **dict.fromkeys((
        "Directory traversal monitored file read", "Read sensitive file trusted after startup",
        "Read sensitive file untrusted", "Read Shell Configuration File", "Read ssh information",
        "Read environment variable from /proc files", "Exfiltrating Artifacts via Kubernetes Control Plane",
        "Backdoored library loaded into SSHD (CVE-2024-3094)"), "open"),
    **dict.fromkeys((
        "Clear Log Activities", "Detect release_agent File Container Escapes", "Update Package Repository",
        "Write below binary dir", "Write below monitored dir", "Write below etc", "Write below root",
        "Write below rpm database", "Create Hidden Files or Directories", "Modify Container Entrypoint",
        "Modify Shell Configuration File", "Schedule Cron Jobs", "Adding ssh keys to authorized_keys"),
        "open_write"),
}
"""Rules of falcosecurity/rules (falco_rules.yaml, -incubating, -sandbox at
c72713e) whose condition fixes the direction of an open (the ``open_read`` or
``open_write`` macro) while their output does not name ``evt.arg.flags``:
the open is read or written by the rule's definition."""

_WRITE_FLAGS = frozenset(("O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"))
_FLAG = re.compile(r"[A-Z][A-Z0-9_]*")
_MODE_BITS = {"S_ISUID": 0o4000, "S_ISGID": 0o2000, "S_ISVTX": 0o1000,
              "S_IRUSR": 0o400, "S_IWUSR": 0o200, "S_IXUSR": 0o100,
              "S_IRGRP": 0o040, "S_IWGRP": 0o020, "S_IXGRP": 0o010,
              "S_IROTH": 0o004, "S_IWOTH": 0o002, "S_IXOTH": 0o001}
_MISSING = ("<NA>", "N/A", "")


def _get(fields: dict[str, Any], key: str) -> Any:
    value = fields.get(key)
    if value is None or (value.__class__ is str and value in _MISSING):
        return None
    return value


def _int(fields: dict[str, Any], key: str) -> int | None:
    value = _get(fields, key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise FalcoFormatError(f"output_fields[{key!r}]: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise FalcoFormatError(f"output_fields[{key!r}]: expected an integer, got {value!r}")


def _str(fields: dict[str, Any], key: str) -> str | None:
    value = _get(fields, key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise FalcoFormatError(f"output_fields[{key!r}]: expected a string, got {type(value).__name__}")
    return str(value)


def _ip(fields: dict[str, Any], key: str) -> str | None:
    value = _str(fields, key)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        raise FalcoFormatError(f"output_fields[{key!r}]: {value!r} is not an IP address") from None


def _path(value: str | None) -> str | None:
    """Falco prints a path relative to a directory fd as ``rel(/abs/rel)``: the absolute one."""
    if value and value.endswith(")") and "(/" in value:
        return value[value.index("(/") + 1:-1]
    return value


def _first(fields: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = _path(_str(fields, key))
        if value:
            return value
    return None


def _split_tuple(name: str) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """``fd.name`` of a socket, ``cip:cport->sip:sport`` -> ((cip, cport), (sip, sport))."""
    client, sep, server = name.partition("->")
    if not sep:
        return None
    out = []
    for end in (client, server):
        host, colon, port = end.rpartition(":")
        if not colon or not port.isdigit():
            return None
        try:
            out.append((str(ipaddress.ip_address(host.strip("[]"))), int(port)))
        except ValueError:
            return None
    return out[0], out[1]


def _file(record: dict[str, Any], path: str, prefix: str = "file.") -> None:
    directory, name = os.path.split(path)
    record[prefix + "path"] = path
    record[prefix + "name"] = name
    if prefix == "file.":
        record["file.directory"] = directory or "/"
    ext = os.path.splitext(name)[1]
    if ext and ext != name:
        record[prefix + "extension"] = ext[1:]


def _mode(value: Any) -> str | None:
    """``evt.arg.mode`` (flag names, an octal number in parentheses, or a number) -> octal digits as
    Kestrel's sources write ``file.mode`` (``4755``)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value & 0o7777:o}"
    text = str(value)
    m = re.search(r"\(0?([0-7]{1,5})\)\s*$", text) or re.fullmatch(r"\s*0?([0-7]{1,5})\s*", text)
    if m:
        return f"{int(m.group(1), 8) & 0o7777:o}"
    bits = [_MODE_BITS[f] for f in _FLAG.findall(text) if f in _MODE_BITS]
    return f"{sum(bits):o}" if bits else None


def _args(exe: str | None, args: str | None) -> list[str]:
    # Falco joins the arguments with spaces (proc.args), so an argument holding a space is split.
    return ([exe] if exe is not None else []) + (args.split() if args else [])


def entity_id(hostname: str, pid: int) -> str:
    """Falco's output has no process start time, so the id is the host's name and
    the pid (a reused pid joins the earlier process's sequences)."""
    return f"falco-{hostname}-{pid:x}"


DROP_RULE = "Falco internal: syscall event drop"
"""What Falco reports (``syscall_event_drops.actions: [alert]``) when its kernel
buffer dropped events (falco ``userspace/falco/event_drops.cpp``): source
``internal``, ``n_drops`` over the last second, as a string."""


def drop_report(doc: Any) -> tuple[int, int] | None:
    """``(events dropped, time ns)`` of Falco's drop alert, None for any other record."""
    if not isinstance(doc, dict) or doc.get("rule") != DROP_RULE or doc.get("source") != "internal":
        return None
    fields = doc.get("output_fields")
    if not isinstance(fields, dict):
        raise FalcoFormatError(f"{DROP_RULE!r} without output_fields")
    n = _int(fields, "n_drops")
    if n is None or n < 0:
        raise FalcoFormatError(f"{DROP_RULE!r}: output_fields['n_drops'] missing or negative")
    try:
        ts = parse_timestamp(doc.get("time"))
    except ValueError as exc:
        raise FalcoFormatError(f"'time': {exc}") from None
    return n, ts


def to_ecs(doc: Any, rule_actions: dict[str, str] | None = None) -> dict[str, Any]:
    """Map one Falco alert; FalcoFormatError names what is wrong with it."""
    if not isinstance(doc, dict):
        raise FalcoFormatError(f"expected a JSON object (a Falco alert), got {type(doc).__name__}")
    rule = doc.get("rule")
    if not isinstance(rule, str) or not rule:
        raise FalcoFormatError("missing 'rule' (not a Falco json_output alert)")
    fields = doc.get("output_fields", {})
    if not isinstance(fields, dict):
        raise FalcoFormatError(f"'output_fields' must be an object, got {type(fields).__name__}")
    when = doc.get("time")
    if when is None:
        when = _get(fields, "evt.time")
        if not isinstance(when, int) or isinstance(when, bool):  # the clock time string has no date
            when = _get(fields, "evt.rawtime") or _get(fields, "evt.time.iso8601")
    if when is None:
        raise FalcoFormatError("missing 'time'")
    try:
        ts = parse_timestamp(when)
    except ValueError as exc:
        raise FalcoFormatError(f"'time': {exc}") from None

    source = doc.get("source") or "syscall"
    hostname = doc.get("hostname")
    priority = doc.get("priority")
    record: dict[str, Any] = {
        "@timestamp": ts,
        "event.kind": "alert",  # ECS: Falco reports what one of its rules matched
        "event.module": MODULE,
        "falco.rule": rule,
        "falco.rules": [rule],
        "falco.source": str(source),
    }
    if isinstance(priority, str):
        record["falco.priority"] = priority
        severity = PRIORITY_SEVERITY.get(priority.lower())
        if severity is not None:
            record["event.severity"] = severity
    tags = doc.get("tags")
    if isinstance(tags, list):
        record["falco.tags"] = [str(t) for t in tags]
    if isinstance(doc.get("output"), str):
        record["falco.output"] = doc["output"]
    if isinstance(hostname, str) and hostname:
        record["host.name"] = record["host.hostname"] = hostname
    host = hostname if isinstance(hostname, str) and hostname else "unknown"

    if source != "syscall":
        # Plugin sources (k8s_audit, cloudtrail, ...) carry no process or fd: the event keeps Falco's values.
        record["event.category"] = [str(source)]
        record["event.type"] = ["info"]
        return record
    record["host.os.type"] = "linux"  # Falco's syscall source runs on Linux only

    evt_type = _str(fields, "evt.type")
    if evt_type:
        record["falco.evt.type"] = evt_type
    kind = _KINDS.get(evt_type or "")
    if evt_type in OPEN_TYPES:
        open_action = _open_action(fields, evt_type, rule, rule_actions)
        # direction unknown: the syscall's name, so that neither read nor write rules match it
        kind = _OPEN_KINDS[open_action] if open_action else ("file", ("access",), evt_type)
    elif evt_type in ("mmap", "mmap2", "mprotect"):
        prot = _str(fields, "evt.arg.prot") or ""
        if "PROT_EXEC" in prot:
            kind = ("process", ("change",), "mprotect_exec" if evt_type == "mprotect" else "mmap_exec")
    fd_type = _str(fields, "fd.type")
    if kind is None:
        category = ("file" if fd_type in ("file", "directory") else
                    "network" if fd_type in ("ipv4", "ipv6") else "process")
        kind = (category, ("info",), evt_type)  # no evt.type in the output: no action
    category, types, action = kind
    record["event.category"] = [category]
    record["event.type"] = list(types)
    if action:
        record["event.action"] = action

    res = _get(fields, "evt.res")
    if res is not None:
        record["falco.evt.res"] = str(res)
        ok = res == "SUCCESS" or (isinstance(res, int) and res >= 0) or str(res).isdigit()
        # a non-blocking connect under way: Falco's rules count it as an attempt, its outcome is not known yet
        record["event.outcome"] = "success" if ok else "unknown" if res == "EINPROGRESS" else "failure"

    _process(record, fields, host)
    _identity(record, fields)
    _container(record, fields)
    if category == "file" or action == "load_module":
        _file_fields(record, fields, evt_type or "")
    if fd_type in ("ipv4", "ipv6") or category == "network":
        _network(record, fields, fd_type, action)
    _kind_specific(record, fields, action)
    return record


def _open_action(fields: dict[str, Any], evt_type: str, rule: str, rule_actions: dict[str, str] | None) -> str | None:
    flags = _str(fields, "evt.arg.flags")
    if flags is not None:
        names = set(_FLAG.findall(flags))
        if "O_F_CREATED" in names:  # the kernel created the file (libs sets it from the open's result)
            return "creation"
        return "open_write" if names & _WRITE_FLAGS else "open"
    if _get(fields, "evt.is_open_write") is True:
        return "open_write"
    if _get(fields, "evt.is_open_read") is True:
        return "open"
    if evt_type == "creat":
        return "open_write"
    if rule_actions and rule in rule_actions:
        return rule_actions[rule]
    return RULE_OPEN_ACTIONS.get(rule)


def _process(record: dict[str, Any], fields: dict[str, Any], host: str) -> None:
    pid = _int(fields, "proc.pid")
    if pid is not None:
        record["process.pid"] = pid
        record["process.entity_id"] = entity_id(host, pid)
    name = _str(fields, "proc.name")
    exepath = _str(fields, "proc.exepath")
    if name:
        record["process.name"] = name
    if exepath:
        record["process.executable"] = exepath
    cmdline = _str(fields, "proc.cmdline")
    if cmdline:
        record["process.command_line"] = cmdline
    argv0 = fields.get("proc.exe")  # argv[0]; "" when the argument vector is empty
    args = _str(fields, "proc.args")
    if args is None and cmdline is not None and "proc.args" not in fields:
        args = cmdline.partition(" ")[2]  # proc.cmdline is proc.name, a space, proc.args
    if args is not None or isinstance(argv0, str):
        first = argv0 if isinstance(argv0, str) and argv0 not in ("<NA>", "N/A") else (exepath or name)
        argv = _args(first or None, args)
        record["process.args"] = argv
        record["process.args_count"] = len(argv)
    cwd = _str(fields, "proc.cwd")
    if cwd:
        record["process.working_directory"] = cwd.rstrip("/") or "/"
    tty = _int(fields, "proc.tty")
    if tty is not None:
        record["process.interactive"] = tty != 0
        if tty:
            record["process.tty.char_device.major"] = (tty >> 8) & 0xFFF
            record["process.tty.char_device.minor"] = (tty & 0xFF) | ((tty >> 12) & 0xFFF00)

    ppid = _int(fields, "proc.ppid")
    if ppid is not None:
        record["process.parent.pid"] = ppid
        record["process.parent.entity_id"] = entity_id(host, ppid)
    pname = _str(fields, "proc.pname")
    pexe = _str(fields, "proc.pexepath")
    if pname:
        record["process.parent.name"] = pname
    if pexe:
        record["process.parent.executable"] = pexe
    pcmdline = _str(fields, "proc.pcmdline")
    if pcmdline:
        record["process.parent.command_line"] = pcmdline
        pargs = _args(pexe or pcmdline.partition(" ")[0], pcmdline.partition(" ")[2])
        record["process.parent.args"] = pargs
        record["process.parent.args_count"] = len(pargs)


def _identity(record: dict[str, Any], fields: dict[str, Any]) -> None:
    # libs keeps a thread's effective ids in user.uid / group.gid: Kestrel's user.id and group.id
    uid = _int(fields, "user.uid")
    if uid is not None:
        record["user.id"] = str(uid)
    name = _str(fields, "user.name")
    if name:
        record["user.name"] = name
    loginuid = _int(fields, "user.loginuid")
    if loginuid is not None:
        record["falco.user.loginuid"] = -1 if loginuid == 0xFFFFFFFF else loginuid
    gid = _int(fields, "group.gid")
    if gid is not None:
        record["group.id"] = str(gid)
    gname = _str(fields, "group.name")
    if gname:
        record["group.name"] = gname


def _container(record: dict[str, Any], fields: dict[str, Any]) -> None:
    cid = _str(fields, "container.id")
    if cid and cid != "host":  # Falco's container.id of a host process is "host"
        record["container.id"] = cid
        cname = _str(fields, "container.name")
        if cname and cname != "host":
            record["container.name"] = cname
        image = _str(fields, "container.image.repository")
        if image:
            record["container.image.name"] = image
        tag = _str(fields, "container.image.tag")
        if tag:
            record["container.image.tag"] = [tag]
    ns = _str(fields, "k8s.ns.name")
    if ns:
        record["orchestrator.namespace"] = ns
    pod = _str(fields, "k8s.pod.name")
    if pod:
        record["orchestrator.resource.name"] = pod
        record["orchestrator.resource.type"] = "pod"


_NAME_KEYS = ("fs.path.name", "evt.arg.name", "evt.arg.path", "evt.arg.pathname", "evt.arg.filename")


def _file_fields(record: dict[str, Any], fields: dict[str, Any], evt_type: str) -> None:
    if evt_type.startswith("rename"):
        target = _first(fields, ("fs.path.target", "evt.arg.newpath"))
        original = _first(fields, ("fs.path.source", "evt.arg.oldpath"))
        if target:
            _file(record, target)
        if original:
            _file(record, original, "file.Ext.original.")
        return
    fd_name = ("fd.name",) if _str(fields, "fd.type") in (None, "file", "directory") else ()
    # the fd is the file for opens and the f* calls; for the others it may be a directory fd
    fd_first = evt_type in OPEN_TYPES or evt_type in ("fchmod", "fchown", "finit_module")
    keys = fd_name + _NAME_KEYS if fd_first else _NAME_KEYS + fd_name
    path = _first(fields, keys)
    if path:
        _file(record, path)
    else:  # only the parts
        directory, filename = _str(fields, "fd.directory"), _str(fields, "fd.filename")
        if directory and filename:
            _file(record, os.path.join(directory, filename))


def _network(record: dict[str, Any], fields: dict[str, Any], fd_type: str | None, action: str) -> None:
    if fd_type in ("ipv4", "ipv6"):
        record["network.type"] = fd_type
    proto = _str(fields, "fd.l4proto")
    if proto and proto != "unknown":
        record["network.transport"] = proto
    # Falco's client/server ends: the client is the source on a connect and on an
    # accept (the peer there, as Kestrel's sources put it), the server the destination.
    name = _str(fields, "fd.name")
    ends = _split_tuple(name) if name else None
    if ends:
        (record["source.ip"], record["source.port"]), (record["destination.ip"], record["destination.port"]) = ends
    # local/remote ends (fd.lport, fd.rport: what most Falco network rules print):
    # the local end is the client on a connect and the server on an accept
    local, remote = ("source", "destination") if action != "connection_accepted" else ("destination", "source")
    for key, target in (("fd.lip", local), ("fd.rip", remote), ("fd.cip", "source"), ("fd.sip", "destination")):
        ip = _ip(fields, key)
        if ip:
            record[target + ".ip"] = ip
    for key, target in (("fd.lport", local), ("fd.rport", remote), ("fd.cport", "source"),
                        ("fd.sport", "destination")):
        port = _int(fields, key)
        if port is not None:
            record[target + ".port"] = port
    if action == "connection_attempted":
        record["network.direction"] = "egress"
    elif action == "connection_accepted":
        record["network.direction"] = "ingress"


def _kind_specific(record: dict[str, Any], fields: dict[str, Any], action: str) -> None:
    if action == "chmod":
        mode = _mode(_get(fields, "evt.arg.mode"))
        if mode is not None:
            record["file.mode"] = mode
    elif action == "chown":
        uid = _int(fields, "evt.arg.uid")
        if uid is not None:
            record["file.owner"] = str(uid if uid < 0xFFFFFFFF else -1)
    elif action == "uid_change":
        uid = _int(fields, "evt.arg.euid") if _get(fields, "evt.arg.euid") is not None else _int(fields, "evt.arg.uid")
        if uid is not None:
            record["user.target.id"] = str(uid)
    elif action == "gid_change":
        gid = _int(fields, "evt.arg.egid") if _get(fields, "evt.arg.egid") is not None else _int(fields, "evt.arg.gid")
        if gid is not None:
            record["group.target.id"] = str(gid)
    elif action == "ptrace":
        pid = _int(fields, "evt.arg.pid")
        if pid is not None:
            record["target.process.pid"] = pid
    elif action == "memfd_create":
        name = _str(fields, "evt.arg.name")
        if name:
            record["file.name"] = name


def event_key(record: dict[str, Any]) -> tuple | None:
    """What identifies one system call across the alerts of several Falco rules
    (``rule_matching: all``): host, time to the nanosecond, syscall, process
    name (the default rules' outputs name no pid).  None: not mergeable."""
    evt_type = record.get("falco.evt.type")
    if evt_type is None:
        return None
    return record.get("host.name"), record["@timestamp"], evt_type, record.get("process.name")


def merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Fold another rule's alert of the same system call into ``into``: the
    fields it lacks, every rule's name and tags, the most severe priority, and
    the open direction when only ``other`` knows it."""
    unknown = into.get("event.action") == into.get("falco.evt.type")
    if unknown and other.get("event.action") != other.get("falco.evt.type"):
        for key in ("event.category", "event.type", "event.action"):
            into[key] = other[key]
    for key, value in other.items():
        into.setdefault(key, value)
    into["falco.rules"] = into["falco.rules"] + [r for r in other["falco.rules"] if r not in into["falco.rules"]]
    if "falco.tags" in other:
        into["falco.tags"] = sorted(set(into.get("falco.tags", ())) | set(other["falco.tags"]))
    if other.get("event.severity", 99) < into.get("event.severity", 99):
        into["event.severity"], into["falco.priority"] = other["event.severity"], other["falco.priority"]
