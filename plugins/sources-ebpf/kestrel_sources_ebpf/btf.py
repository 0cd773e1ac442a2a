"""A small reader for the kernel's BTF (``/sys/kernel/btf/vmlinux``).

bcc compiles against Debian's 6.1 headers, whose struct layouts are wrong for
the running kernel (PLATFORM.md), so every struct member the BPF programs read
is addressed by a byte offset taken from the live kernel's BTF and passed in
with ``-D``.  Only what that needs is implemented: type records, struct/union
members (including anonymous nested ones) and names.  No library does this
from Python without pulling in libbpf; the format is a few fixed records.
"""

from __future__ import annotations

import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = range(1, 12)
_FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT, _DECL_TAG, _TYPE_TAG, _ENUM64 = range(12, 20)
# Bytes that follow the 12-byte common record, per kind: (fixed, per member).
_TRAILER = {_INT: (4, 0), _ARRAY: (12, 0), _STRUCT: (0, 12), _UNION: (0, 12), _ENUM: (0, 8),
            _FUNC_PROTO: (0, 8), _VAR: (4, 0), _DATASEC: (0, 12), _DECL_TAG: (4, 0), _ENUM64: (0, 12)}
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


class BTFError(RuntimeError):
    pass


class BTF:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("BTF blob too short")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", data)
        if magic != 0xEB9F:
            raise BTFError(f"bad BTF magic {magic:#x}")
        self._data = data
        self._strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        # id -> (kind, name_off, info, size_or_type, offset of the trailer)
        self._types: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)]
        self._structs: dict[str, int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.Struct("<III").unpack_from
        types, structs = self._types, self._structs
        while pos < end:
            name_off, info, size = unpack(data, pos)
            kind = (info >> 24) & 0x1F
            types.append((kind, name_off, info, size, pos + 12))
            fixed, per = _TRAILER.get(kind, (0, 0))
            vlen = info & 0xFFFF
            if kind in (_STRUCT, _UNION) and name_off and vlen:
                structs.setdefault(self._name(name_off), len(types) - 1)
            pos += 12 + fixed + per * vlen

    @classmethod
    def load(cls, path: Path = VMLINUX) -> BTF:
        return cls(path.read_bytes())

    def _name(self, off: int) -> str:
        return self._strings[off: self._strings.index(b"\0", off)].decode()

    def _resolve(self, tid: int) -> int:
        while self._types[tid][0] in _MODIFIERS:
            tid = self._types[tid][3]
        return tid

    def _members(self, tid: int):
        _kind, _n, info, _s, trailer = self._types[tid]
        kflag = info >> 31
        for i in range(info & 0xFFFF):
            name_off, mtype, off = struct.unpack_from("<III", self._data, trailer + 12 * i)
            yield name_off, mtype, (off & 0xFFFFFF) if kflag else off

    def _find(self, tid: int, member: str, base_bits: int) -> int | None:
        for name_off, mtype, off_bits in self._members(tid):
            if name_off == 0:  # anonymous struct/union: its members belong to the parent
                inner = self._resolve(mtype)
                if self._types[inner][0] in (_STRUCT, _UNION):
                    found = self._find(inner, member, base_bits + off_bits)
                    if found is not None:
                        return found
            elif self._name(name_off) == member:
                return base_bits + off_bits
        return None

    def offset(self, struct_name: str, member: str) -> int:
        """Byte offset of ``struct_name.member`` (members of anonymous inner structs and unions included)."""
        tid = self._structs.get(struct_name)
        if tid is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        bits = self._find(tid, member, 0)
        if bits is None or bits % 8:
            raise BTFError(f"{struct_name}.{member} not found (or a bitfield)")
        return bits // 8

    def func_id(self, name: str) -> int:
        """The type id of kernel function ``name`` (what an LSM or tracing
        program gives as its attach_btf_id)."""
        for tid, (kind, name_off, _info, _size, _trailer) in enumerate(self._types):
            if kind == _FUNC and name_off and self._name(name_off) == name:
                return tid
        raise BTFError(f"function {name} not in BTF")

    def size(self, struct_name: str) -> int:
        tid = self._structs.get(struct_name)
        if tid is None:
            raise BTFError(f"struct {struct_name} not in BTF")
        return self._types[tid][3]


# Members the BPF programs read, as (macro name, struct, member path).
OFFSETS: tuple[tuple[str, str, str], ...] = (
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_TASK_GROUP_LEADER", "task_struct", "group_leader"),
    ("OFF_TASK_COMM", "task_struct", "comm"),
    ("OFF_TASK_TGID", "task_struct", "tgid"),
    ("OFF_TASK_PID", "task_struct", "pid"),
    ("OFF_TASK_START_BOOTTIME", "task_struct", "start_boottime"),
    ("OFF_TASK_EXIT_CODE", "task_struct", "exit_code"),
    ("OFF_TASK_CRED", "task_struct", "cred"),
    ("OFF_TASK_MM", "task_struct", "mm"),
    ("OFF_TASK_FILES", "task_struct", "files"),
    ("OFF_CRED_UID", "cred", "uid"),
    ("OFF_CRED_EUID", "cred", "euid"),
    ("OFF_CRED_GID", "cred", "gid"),
    ("OFF_MM_ARG_START", "mm_struct", "arg_start"),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end"),
    ("OFF_MM_ENV_START", "mm_struct", "env_start"),
    ("OFF_MM_ENV_END", "mm_struct", "env_end"),
    ("OFF_FILES_FDT", "files_struct", "fdt"),
    ("OFF_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_FDT_FD", "fdtable", "fd"),
    ("OFF_FILE_F_MODE", "file", "f_mode"),
    ("OFF_FILE_PRIVATE_DATA", "file", "private_data"),
    ("OFF_SOCKET_TYPE", "socket", "type"),
    ("OFF_SOCKET_SK", "socket", "sk"),
    ("OFF_SK_FAMILY", "sock_common", "skc_family"),
    ("OFF_SK_NUM", "sock_common", "skc_num"),
    ("OFF_SK_DPORT", "sock_common", "skc_dport"),
    ("OFF_SK_RCV_SADDR", "sock_common", "skc_rcv_saddr"),
    ("OFF_SK_DADDR", "sock_common", "skc_daddr"),
    ("OFF_SK_V6_RCV_SADDR", "sock_common", "skc_v6_rcv_saddr"),
    ("OFF_SK_V6_DADDR", "sock_common", "skc_v6_daddr"),
    ("OFF_SOCK_COMMON", "sock", "__sk_common"),
    ("OFF_CRED_SUID", "cred", "suid"),
    ("OFF_CRED_EGID", "cred", "egid"),
    ("OFF_CRED_SGID", "cred", "sgid"),
    ("OFF_CRED_FSUID", "cred", "fsuid"),
    ("OFF_CRED_CAP_EFFECTIVE", "cred", "cap_effective"),
    ("OFF_CRED_CAP_PERMITTED", "cred", "cap_permitted"),
    ("OFF_TASK_SIGNAL", "task_struct", "signal"),
    ("OFF_SIGNAL_PIDS", "signal_struct", "pids"),
    ("OFF_SIGNAL_TTY", "signal_struct", "tty"),
    ("OFF_PID_NUMBERS", "pid", "numbers"),
    ("OFF_TTY_INDEX", "tty_struct", "index"),
    ("OFF_TTY_DRIVER", "tty_struct", "driver"),
    ("OFF_TTY_DRIVER_MAJOR", "tty_driver", "major"),
    ("OFF_TTY_DRIVER_MINOR_START", "tty_driver", "minor_start"),
    ("OFF_TASK_CGROUPS", "task_struct", "cgroups"),
    ("OFF_CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp"),
    ("OFF_CGROUP_KN", "cgroup", "kn"),
    ("OFF_KERNFS_NODE_NAME", "kernfs_node", "name"),
    # renamed __parent in 6.15; either spelling, the first the kernel has
    ("OFF_KERNFS_NODE_PARENT", "kernfs_node", "__parent|parent"),
)


def offset_defines(btf: BTF | None = None) -> list[str]:
    """``-DNAME=value`` compiler flags for every member in :data:`OFFSETS`."""
    btf = btf or BTF.load()
    return [f"-D{macro}={_first_offset(btf, s, m)}" for macro, s, m in OFFSETS]


def _first_offset(btf: BTF, struct_name: str, members: str) -> int:
    """The offset of the first of ``a|b|...`` that ``struct_name`` has."""
    names = members.split("|")
    for name in names[:-1]:
        try:
            return btf.offset(struct_name, name)
        except BTFError:
            continue
    return btf.offset(struct_name, names[-1])
