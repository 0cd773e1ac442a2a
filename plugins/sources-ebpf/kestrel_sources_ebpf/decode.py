"""Kernel records (probes.bpf.c structs) -> flat ECS records.

The layouts below mirror ``struct hdr``, ``struct exec_ev`` and ``struct ev``;
``struct.Struct`` unpacks a record in one C call, cheaper than ctypes field
access.  Paths are resolved against the process's cwd (or the dirfd) here,
because only user space can read /proc.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import struct
import time
from typing import Any

from kestrel_core.event import Event
from kestrel_core.schema import SCHEMA_VERSION, TIMESTAMP_ID
from kestrel_core.schema import Schema

from .kinds import K_CHDIR, KINDS
from .normalizer import declare_fields, entity_key
from .exeinfo import DEFAULT_ENV_VARS, ExeHasher, env_vars
from .proctable import Ident, ProcTable, _readlink, container_of, group_name, split_args, user_name

HDR = struct.Struct("<QQQIIIIIIIi16s")
EXEC = struct.Struct("<QQQIIIIIIIi16sII256s1024sIIIIIIIIQQ128s128sII4096s")
"""``struct exec_ev``: the header, argv, ``struct ident`` (the process's identity) and the environment."""
EXEC_IDENT_AT = 72 + 8 + 256 + 1024
IDENT = struct.Struct("<IIIIIIIIQQ128s128s")
EV = struct.Struct("<QQQIIIIIIIi16sQQQQ16s16sHHHHii256s256s")
TS = struct.Struct("<Q")
DFD = struct.Struct("<i")
EV_FIXED = struct.Struct("<QQQIIIIIIIi16xQQQQ16s16sHHHHii")
"""``struct ev`` up to its path buffers (comm skipped: the process table names processes)."""
PATH_OFFSET = EV_FIXED.size
PATH2_OFFSET = PATH_OFFSET + 256
KIND_OFFSET = 24
DFD_OFFSET = 144
IDENT_END = 56
"""``struct hdr`` from the process start time to the return value: a path
record's identity apart from its time (and its path)."""
AT_FDCWD = -100
SOCK_STREAM, SOCK_DGRAM = 1, 2
PROT_EXEC = 4
MAP_ANONYMOUS = 0x20

PATH_ONLY_KINDS = frozenset({4, 5, 6, 7})
"""open for read, open for write, create, unlink: a record is its process, ids, outcome and one path."""

_CLASS = {code: ([k.category], list(k.types), k.action) for code, k in KINDS.items()}


def _cstr(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "replace")


def _cstr_at(raw: bytes, start: int, size: int = 256) -> str:
    """The NUL-terminated string in ``raw[start:start + size]`` (no copy of the whole buffer)."""
    end = raw.find(b"\0", start, start + size)
    return raw[start:end if end >= 0 else start + size].decode("utf-8", "replace")


def _ip(raw: bytes, family: int) -> str:
    return str(ipaddress.ip_address(raw[:4] if family == 2 else raw))


_ip_cache: dict[tuple[bytes, int], str] = {}


def ip_text(raw: bytes, family: int) -> str:
    key = (raw, family)
    text = _ip_cache.get(key)
    if text is None:
        if len(_ip_cache) > 65536:
            _ip_cache.clear()
        text = _ip_cache[key] = _ip(raw, family)
    return text


FILE_CACHE_MAX = 1024
"""Decoded paths (a fields dict of ~1 KiB each) the caches hold in all, across processes: past it, every cache
is dropped and rebuilt as records come (measured: ~9 MB of caches after 40 s of a shared CI host's activity
without this bound, most of it for processes long gone, kept alive by ``hot``)."""
HOT_MAX = 2048


@functools.lru_cache(maxsize=4096)
def _realpath(path: str) -> str:
    # Cached: short-lived processes exec the same few binaries over and over.
    return os.path.realpath(path)


@functools.lru_cache(maxsize=4096)
def _is_script(path: str) -> bool:
    """Whether ``path`` starts with ``#!`` (its process's /proc exe is the interpreter)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return True  # unreadable: trust /proc rather than guess


def exit_code(status: int) -> int:
    """Kernel exit status -> shell convention: the exit value, or 128 + signal."""
    return 128 + (status & 0x7F) if status & 0x7F else (status >> 8) & 0xFF


class _IdText(dict):
    """uid/gid -> its decimal text, built once per id."""

    def __missing__(self, n: int) -> str:
        text = str(n)
        if len(self) < 65536:
            self[n] = text
        return text


class _FieldIds(dict):
    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.schema = schema

    def __missing__(self, path: str) -> int:
        fid = self[path] = self.schema.resolve(path)
        return fid


class Decoder:
    """Turns raw kernel records into ECS records, keeping the process table."""

    def __init__(self, table: ProcTable, schema: Schema, clock_offset_ns: int | None = None,
                 env_allow: tuple[str, ...] = DEFAULT_ENV_VARS, hash_max_bytes: int = 64 << 20) -> None:
        self.table = table
        self.schema = schema
        self.env_allow = frozenset(env_allow)
        self.hasher = ExeHasher(max_bytes=hash_max_bytes) if hash_max_bytes > 0 else None
        declare_fields(schema)
        self.f: dict[str, int] = _FieldIds(schema)
        """ECS path -> field id; records are built keyed by id (no normalizer pass)."""
        table.keys = self.f
        f = self.f
        # per kind, the fields that never change: merged into each record in one update
        self.static: dict[int, dict[int, Any]] = {
            code: {f["event.category"]: cat, f["event.type"]: types, f["event.action"]: action}
            for code, (cat, types, action) in _CLASS.items()}
        self.static[K_CHDIR] = {}
        self.f_ts, self.f_uid, self.f_euid, self.f_gid = f["@timestamp"], f["user.id"], f["user.effective.id"], f["group.id"]
        if self.f_ts != TIMESTAMP_ID:  # shared fields (Event.content) rely on it
            raise ValueError(f"schema without @timestamp as field {TIMESTAMP_ID}")
        self.f_cat, self.f_eid, self.f_outcome = f["event.category"], f["process.entity_id"], f["event.outcome"]
        self.f_path, self.f_name, self.f_dir, self.f_ext = f["file.path"], f["file.name"], f["file.directory"], f["file.extension"]
        self.ids = _IdText()
        self.source_id = ""
        """``source_id`` of the events built (the source sets its name)."""
        self.cached_files = 0
        """Path decodings added to the per-template caches since the last :meth:`drop_caches` (an upper bound
        of how many are held)."""
        self.cache_drops = 0
        self.hot: dict[bytes, tuple] = {}
        """The identity bytes of a path record (``struct hdr`` from the start
        time to the return value) -> (process entry, its base fields, parent
        entry, parent's exec count, the template entry's path cache, category,
        entity key, pid, ppid, the template): what ``decode_batch`` checks
        and reuses without unpacking the record or calling into the table."""
        # kernel CLOCK_MONOTONIC -> ns since the epoch, fixed at start so event time never jumps back.
        self.offset = clock_offset_ns if clock_offset_ns is not None else time.time_ns() - time.monotonic_ns()

    @staticmethod
    def kind_of(raw: bytes) -> int:
        return raw[KIND_OFFSET]  # a little-endian u32 below 256

    def decode(self, raw: bytes, off: int = 0) -> Event | None:
        """One kernel record (``raw[off:]``) -> an Event (None for records that only update the table)."""
        fields = self.fields(raw, off)
        if fields is None:
            return None
        ts = fields[self.f_ts]
        return Event(fields[self.f_cat][0], fields, ts, ts, entity_key=entity_key(fields[self.f_eid]))

    def decode_batch(self, block: bytes, recs: list[tuple[int, int]], wanted: frozenset[int],
                     out: list[Event]) -> tuple[int, list[tuple[int, int, Exception]]]:
        """The records ``(offset, size)`` of ``block`` -> Events appended to ``out``,
        in order.  Returns (records of kinds not in ``wanted``, dropped;
        [(kind, size, error)] of malformed records, skipped)."""
        fields, f_ts, f_cat, f_eid, append = self._fields, self.f_ts, self.f_cat, self.f_eid, out.append
        dropped, bad = 0, []
        hot, procs, offset, find, ev_size = self.hot, self.table.procs, self.offset, block.find, EV.size
        touch, ts_at, dfd_at, sid, fill = procs.move_to_end, TS.unpack_from, DFD.unpack_from, self.source_id, \
            self._fill
        # The path record before, when it was decoded inline: its identity
        # bytes and size, cache entry, absolute path and what that decoded to.
        # A record right after it with the same identity needs no table checks
        # (nothing between them touched the table); with the same path too, it
        # decodes to the same fields but for the time.
        last, last_size, last_path = None, 0, None
        files: dict = {}
        tpl: dict = {}
        proc, cat, ekey, filled = None, "", 0, None
        for off, size in recs:
            ident = block[off + 8:off + IDENT_END]
            if ident != last or size != last_size:
                last = None
                kind = block[off + KIND_OFFSET]
                if kind not in wanted:
                    dropped += 1
                    continue
                # The common case inline (no call per record): a path record of a
                # process, thread, kind, ids and return value seen before, whose
                # table entries are unchanged -- the checks ``_template_entry`` makes.
                h = hot.get(ident) if size >= ev_size else None
                if h is not None:
                    proc, base, parent, gen, files, cat, ekey, pid, ppid, tpl = h
                    if procs.get(pid) is proc and proc.base is base and procs.get(ppid) is parent and \
                            parent.gen == gen:
                        touch(pid)
                        last, last_size, last_path = ident, size, None
                if last is None:
                    try:
                        if size < (EXEC.size if kind == 1 else EV.size):
                            raise ValueError(f"record of {size} bytes is too short for its kind")
                        rec = fields(block, off, kind)
                    except Exception as exc:  # noqa: BLE001 - a bad record is reported, the batch goes on
                        bad.append((kind, size, exc))
                        continue
                    if rec is not None:
                        ts = rec[f_ts]
                        append(Event(rec[f_cat][0], rec, ts, ts, 0, entity_key(rec[f_eid]), sid))
                    continue
            p0 = off + PATH_OFFSET
            end = find(b"\0", p0, p0 + 256)
            path = block[p0:end if end >= 0 else p0 + 256]
            if path != last_path:
                if path[:1] == b"/":
                    key, dfd, last_path = path, AT_FDCWD, path
                else:  # relative to the cwd or a dirfd: looked up per record
                    dfd = dfd_at(block, off + DFD_OFFSET)[0]
                    key, last_path = (path, dfd), None
                filled = files.get(key) or fill(proc, tpl, files, key, path, dfd)
            # The event shares the cached fields (Event.content); its own time is
            # ts_wall_ns, and it gets a dict of its own only if it leaves the
            # engine in an alert or goes to a sink that writes events.
            ts = ts_at(block, off)[0] + offset
            append(Event(cat, filled, ts, ts, 0, ekey, sid, None, SCHEMA_VERSION, filled))
        return dropped, bad

    def record(self, raw: bytes) -> dict[str, Any] | None:
        """One kernel record -> a flat ECS dict (for tests and tools)."""
        fields = self.fields(raw)
        if fields is None:
            return None
        path = self.schema.path
        return {path(fid): v for fid, v in fields.items()}

    def fields(self, raw: bytes, off: int = 0) -> dict[int, Any] | None:
        """The record at ``raw[off:]`` -> fields keyed by id (None: a table-only record)."""
        kind = raw[off + KIND_OFFSET]
        need = EXEC.size if kind == 1 else EV.size
        if len(raw) - off < need:
            raise ValueError(f"{len(raw) - off}-byte record of kind {kind}, {need} expected")
        return self._fields(raw, off, kind)

    def _template(self, proc: Any, ppid: int, pstart: int, kind: int, uid: int, euid: int, gid: int,
                  ok: bool) -> dict[int, Any]:
        """A fresh record holding what every record of this process, kind, ids
        and outcome shares: process and parent fields, classification, user
        ids, ``event.outcome``.  Built once per combination and copied (one C
        call) while the process table entry it came from is unchanged."""
        return self._template_entry(proc, ppid, pstart, kind, uid, euid, gid, ok)[1].copy()

    def _template_entry(self, proc: Any, ppid: int, pstart: int, kind: int, uid: int, euid: int, gid: int,
                        ok: bool) -> tuple[dict[int, Any], dict[int, Any], dict[Any, dict[int, Any]]]:
        """``(base, template, files)`` of this process, kind, ids and outcome
        (not to be modified): ``files`` maps a path as the kernel reported it
        to the template plus that path's file fields, for the kinds whose
        record is nothing more (``PATH_ONLY_KINDS``).  A new entry whenever
        the process table entry changed (exec, chdir, a new parent), so a
        relative path is never resolved against a stale working directory."""
        base = self.table.base_ref(proc, ppid, pstart)
        key = (kind, uid, euid, gid, ok)
        cached = proc.templates.get(key)
        if cached is not None and cached[0] is base:
            return cached
        static = self.static.get(kind)
        if static is None:
            raise ValueError(f"kernel record of unknown kind {kind}")
        tpl = base.copy()
        tpl.update(static)
        tpl[self.f_ts] = 0  # set per record; placed here so every record keeps the same field order
        # The record's header has the real and effective uid and the real gid at
        # the call; the effective gid comes from the table (exec, setgid events).
        self._user(tpl, uid, euid, gid, proc.ident.egid if proc.ident is not None else gid)
        if kind > 3 and kind != K_CHDIR:  # syscalls have an outcome; exec/fork/exit do not
            tpl[self.f_outcome] = "success" if ok else "failure"
        if len(proc.templates) >= 64:
            proc.templates.clear()
        entry = proc.templates[key] = (base, tpl, {})
        return entry

    def _fill(self, proc: Any, tpl: dict[int, Any], files: dict[Any, dict[int, Any]], key: Any, path: bytes,
              dfd: int) -> dict[int, Any]:
        """A path record's fields but its time: ``tpl`` plus the file fields
        of ``path``, kept in ``files`` under ``key`` (not to be modified)."""
        filled = tpl.copy()
        self._file(filled, proc, path.decode("utf-8", "replace"), dfd)
        # a relative path is kept only against the table's cwd (not /proc's, read per record)
        if key is path or (dfd == AT_FDCWD and proc.cwd):
            if len(files) >= 256:
                files.clear()
            files[key] = filled
            self.cached_files += 1
            if self.cached_files > FILE_CACHE_MAX:
                self.drop_caches()
        return filled

    def drop_caches(self) -> None:
        """Forget every decoded path and template (they are rebuilt on the next
        record): bounds the caches' memory on a host where many processes each
        open many paths.  ``hot`` goes too: its entries hold those caches."""
        self.hot.clear()
        for proc in self.table.procs.values():
            proc.templates.clear()
        self.cached_files = 0
        self.cache_drops += 1

    def _fields(self, raw: bytes, off: int, kind: int) -> dict[int, Any] | None:
        if kind == 1:
            return self._exec(raw, off)
        (ts, start, pstart, kind, pid, _tid, ppid, uid, euid, gid, ret,
         a0, a1, a2, a3, daddr, saddr, family, dport, sport, socktype, dfd, dfd2) = EV_FIXED.unpack_from(raw, off)
        table = self.table
        if kind == 2:  # fork: the header describes the child
            parent = table.get(ppid, pstart)
            proc = table.on_fork(pid, start, parent)
        else:
            proc = table.get(pid, start)
        if kind in PATH_ONLY_KINDS:
            # The flood's case: one process opening the same paths over and
            # over.  The decoded path and its file fields are kept per
            # template, keyed by the bytes the kernel reported (and the dirfd
            # when the path is relative to one, which /proc resolves per record).
            base, tpl, files = self._template_entry(proc, ppid, pstart, kind, uid, euid, gid, ret >= 0)
            parent = table.procs.get(ppid)
            if parent is not None and proc.base is base:  # for decode_batch's inline path
                hot = self.hot
                if len(hot) >= HOT_MAX:
                    hot.clear()
                hot[raw[off + 8:off + IDENT_END]] = (
                    proc, base, parent, parent.gen, files, tpl[self.f_cat][0], entity_key(tpl[self.f_eid]), pid, ppid,
                    tpl)
            start_ = off + PATH_OFFSET
            end = raw.find(b"\0", start_, start_ + 256)
            path = raw[start_:end if end >= 0 else start_ + 256]
            key = path if path[:1] == b"/" else (path, dfd)
            rec = (files.get(key) or self._fill(proc, tpl, files, key, path, dfd)).copy()
            rec[self.f_ts] = ts + self.offset
            return rec
        changed = 16 <= kind <= 21 and ret == 0 and proc.ident is not None
        if changed:
            # This event's process.* ids and every later event's are the credentials after the call.
            table.on_setid(proc, kind, a0, a1, a2)
        rec = self._template(proc, ppid, pstart, kind, uid, euid, gid, ret >= 0)
        rec[self.f_ts] = ts + self.offset
        if changed:  # Defend's uid_change / gid_change: user.* and group.* are the ids after the call
            i = proc.ident
            self._user(rec, i.ruid, i.euid, i.rgid, i.egid)
        f = self.f
        if kind == 3:
            rec[f["process.exit_code"]] = exit_code(a0)
            table.on_exit(pid)
            return rec
        if kind == 2:
            return rec
        if kind == K_CHDIR:
            if ret == 0:
                path = _cstr_at(raw, off + PATH_OFFSET)
                if path:  # chdir(path)
                    self._file(rec, proc, path, AT_FDCWD)
                new = rec.get(self.f_path) or _readlink(f"/proc/{pid}/fd/{dfd}")  # or fchdir(fd)
                if new:
                    proc.cwd, proc.base = new, None
            return None
        if kind <= 10:  # file kinds (and open's read/write/create split)
            self._file(rec, proc, _cstr_at(raw, off + PATH_OFFSET), dfd)
            if kind == 8:
                rec[f["file.Ext.original.path"]] = rec[self.f_path]
                rec[f["file.Ext.original.name"]] = rec[self.f_name]
                if self.f_ext in rec:
                    rec[f["file.Ext.original.extension"]] = rec.pop(self.f_ext)  # the new name sets its own
                self._file(rec, proc, _cstr_at(raw, off + PATH2_OFFSET), dfd2)
            elif kind == 9:
                rec[f["file.mode"]] = f"{a0 & 0o7777:o}"
            elif kind == 10:
                rec[f["file.owner"]] = str(a0 if a0 < 0xFFFFFFFF else -1)
                rec[f["file.group"]] = str(a1 if a1 < 0xFFFFFFFF else -1)
        elif kind <= 13:
            self._network(rec, kind, family, daddr, dport, saddr, sport, socktype)
        elif kind == 14:
            target = table.peek(a1)
            rec[f["target.process.pid"]] = a1
            rec[f["target.process.name"]] = target.name if target else ""
            rec[f["process.ptrace.request"]] = a0
        elif kind == 15:
            rec[f["file.name"]] = _cstr_at(raw, off + PATH_OFFSET)
        elif kind <= 21:
            # the effective id is what changes privileges: setuid(0), setreuid(-1, 0), setresuid(-1, 0, -1)
            new = a0 if kind <= 17 else a1
            target = f["user.target.id"] if kind in (16, 18, 20) else f["group.target.id"]
            rec[target] = str(new if new < 0xFFFFFFFF else -1)
        elif kind == 23:
            p = _readlink(f"/proc/{pid}/fd/{a0}")
            if p:
                rec[self.f_path] = p
        elif kind == 24:
            rec[f["process.mmap.prot"]] = a2 & 0xFFFFFFFF
            if not (a2 >> 32) & MAP_ANONYMOUS and a0 < 0x7FFFFFFF:
                p = _readlink(f"/proc/{pid}/fd/{a0}") or _readlink(f"/proc/{pid}/map_files/{a3:x}-{a3 + a1:x}")
                if p:
                    rec[self.f_path] = p
        return rec

    def _exec(self, raw: bytes, off: int = 0) -> dict[int, Any]:
        f = self.f
        (ts, start, pstart, _kind, pid, _tid, ppid, uid, euid, gid, _ret, comm,
         args_len, _pad, filename, args_raw, suid, egid, sgid, _fsuid, sid, pgid, tty_major, tty_minor,
         cap_eff, cap_prm, cgroup, cgroup_parent, env_len, _pad2, env_raw) = EXEC.unpack_from(raw, off)
        # (egid is read with the rest of the identity: the header has the real gid only)
        table = self.table
        proc = table.get(pid, start)
        proc.ident = Ident(uid, euid, suid, gid, egid, sgid, sid, pgid, tty_major, tty_minor, cap_eff, cap_prm,
                           *container_of(_cstr(cgroup), _cstr(cgroup_parent)))
        proc.comm = _cstr(comm)
        cwd = proc.cwd or _readlink(f"/proc/{pid}/cwd")
        filename = _cstr(filename)
        exe = _readlink(f"/proc/{pid}/exe")
        resolved = _realpath(os.path.join(cwd, filename)) if cwd or filename.startswith("/") else filename
        if not exe or exe.endswith(" (deleted)"):
            exe = resolved  # the process is gone already: resolve the exec'd path as /proc/<pid>/exe would have
        elif exe != resolved and not _is_script(resolved):
            # /proc is read after the fact: a process that exec'd again since (setpriv, env, nohup ...)
            # shows its next image there.  A script is the one case where they rightly differ.
            exe = resolved
        args = split_args(args_raw[:args_len])
        table.on_exec(proc, exe, args, cwd, filename)
        proc.sha256 = self.hasher.digest(pid, exe) if self.hasher is not None else None
        proc.env_vars = env_vars(env_raw[:env_len], self.env_allow)
        rec = table.base_fields(proc, ppid, pstart)
        rec[f["event.category"]], rec[f["event.type"]], rec[f["event.action"]] = ["process"], ["start"], "exec"
        rec[f["@timestamp"]] = ts + self.offset
        self._user(rec, uid, euid, gid, egid)
        if args_len > len(args_raw) - 1:  # the kernel copies at most ARGS_LEN - 1 bytes
            rec[f["process.args_truncated"]] = True
        return rec

    def _user(self, rec: dict[int, Any], ruid: int, euid: int, rgid: int, egid: int) -> None:
        """user.* and group.* as Elastic Defend has them: ``user.id`` / ``group.id``
        the effective ids (what the process acts as), ``*.Ext.real.id`` the real ones."""
        f, ids = self.f, self.ids
        rec[self.f_uid] = rec[self.f_euid] = ids[euid]
        rec[f["user.name"]] = user_name(euid)
        rec[f["user.Ext.real.id"]] = ids[ruid]
        rec[self.f_gid] = ids[egid]
        rec[f["group.name"]] = group_name(egid)
        rec[f["group.Ext.real.id"]] = ids[rgid]

    def _file(self, rec: dict[int, Any], proc: Any, path: str, dfd: int) -> None:
        if path and not path.startswith("/"):
            # the table's cwd follows fork and chdir; /proc only for processes it does not know
            base = proc.cwd or _readlink(f"/proc/{proc.pid}/cwd") if dfd == AT_FDCWD else \
                _readlink(f"/proc/{proc.pid}/fd/{dfd}")
            path = os.path.join(base, path) if base else path
        if path.startswith("/") and ("/." in path or "//" in path or path.endswith("/")):
            path = os.path.normpath(path)
            if path.startswith("//"):
                path = path[1:]
        cut = path.rfind("/")
        directory, name = (path[:cut] or "/", path[cut + 1:]) if cut >= 0 else ("", path)
        rec[self.f_path], rec[self.f_name], rec[self.f_dir] = path, name, directory
        dot = name.rfind(".")
        if dot > 0:
            rec[self.f_ext] = name[dot + 1:]

    def _network(self, rec: dict[int, Any], kind: int, family: int, daddr: bytes, dport: int, saddr: bytes,
                 sport: int, socktype: int) -> None:
        f = self.f
        rec[f["network.type"]] = "ipv4" if family == 2 else "ipv6"
        if socktype == SOCK_STREAM:
            rec[f["network.transport"]] = "tcp"
        elif socktype == SOCK_DGRAM:
            rec[f["network.transport"]] = "udp"
        if kind == 13:  # bind: the local address only
            rec[f["source.ip"]], rec[f["source.port"]] = ip_text(saddr, family), sport
            return
        rec[f["network.direction"]] = "egress" if kind == 11 else "ingress"
        if kind == 11:
            rec[f["source.ip"]], rec[f["source.port"]] = ip_text(saddr, family), sport
            rec[f["destination.ip"]], rec[f["destination.port"]] = ip_text(daddr, family), dport
        else:  # accept: the peer is the source
            rec[f["source.ip"]], rec[f["source.port"]] = ip_text(daddr, family), dport
            rec[f["destination.ip"]], rec[f["destination.port"]] = ip_text(saddr, family), sport
