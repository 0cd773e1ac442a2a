"""The few bpf(2) and perf_event_open(2) calls the agent needs, through ctypes.

With these the long-running agent creates maps, loads already-compiled
programs, attaches them to tracepoints and reads and writes maps without
bcc: importing bcc maps libbcc, which links LLVM and clang (~85 MB resident
for the life of the process).  Layouts are the kernel's UAPI
(``include/uapi/linux/bpf.h``, ``perf_event.h``); only the leading fields
each command reads are declared, the kernel zero-extends a shorter attr.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from pathlib import Path

_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}
"""(bpf, perf_event_open) syscall numbers per machine."""

BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
BPF_PROG_LOAD, BPF_OBJ_GET_INFO_BY_FD, BPF_RAW_TRACEPOINT_OPEN, BPF_LINK_CREATE = 5, 15, 17, 28
BPF_PROG_TYPE_TRACEPOINT, BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_PROG_TYPE_CGROUP_SOCK_ADDR = 5, 17, 18
PERCPU_MAP_TYPES = frozenset({5, 6, 10})  # percpu hash, percpu array, lru percpu hash
BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE = 1, 2
LD_IMM64 = 0x18
PERF_TYPE_TRACEPOINT, PERF_SAMPLE_RAW, PERF_FLAG_FD_CLOEXEC = 2, 1 << 10, 1 << 3
PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408
PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5: every field set here is in the first 56 bytes


class BpfError(OSError):
    """A bpf(2) command failed; the message names the command and the object."""


class _MapCreate(ctypes.Structure):
    _fields_ = [("map_type", ctypes.c_uint32), ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("inner_map_fd", ctypes.c_uint32),
                ("numa_node", ctypes.c_uint32), ("map_name", ctypes.c_char * 16)]


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32)]


class _MapElem(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("key", ctypes.c_uint64),
                ("value", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _LinkCreate(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("flags", ctypes.c_uint32)]


class _InfoByFd(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]


class MapInfo(ctypes.Structure):
    """The head of ``struct bpf_map_info``."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class _RawTp(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


_libc = None


def _sys() -> tuple[ctypes.CDLL, int, int]:
    global _libc
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise BpfError(errno.ENOSYS, f"bpf(2) numbers unknown for {platform.machine()}")
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc, numbers[0], numbers[1]


def bpf(cmd: int, attr: ctypes.Structure, what: str) -> int:
    libc, nr, _ = _sys()
    ret = libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return int(ret)


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many values a per-CPU map holds per key (ranges like ``0-1,4``)."""
    text = Path(path).read_text().strip()
    count = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        count = max(count, int(hi or lo) + 1)
    return count


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str) -> int:
    attr = _MapCreate(map_type, key_size, value_size, max_entries, flags, 0, 0, name.encode()[:15])
    return bpf(BPF_MAP_CREATE, attr, f"creating map {name!r} (type {map_type})")


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoByFd(fd, ctypes.sizeof(info), ctypes.addressof(info)), f"info of map fd {fd}")
    return info


def map_lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    """Fill ``value`` with the entry at ``key``; False if there is none."""
    try:
        bpf(BPF_MAP_LOOKUP_ELEM, _MapElem(fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0), "map lookup")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData) -> None:
    bpf(BPF_MAP_UPDATE_ELEM, _MapElem(fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0), "map update")


def map_delete(fd: int, key: ctypes._CData) -> bool:
    """Remove the entry at ``key``; False if there was none."""
    try:
        bpf(BPF_MAP_DELETE_ELEM, _MapElem(fd, 0, ctypes.addressof(key), 0, 0), "map delete")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def map_keys(fd: int, key_type: type) -> list[ctypes._CData]:
    """Every key of a hash map (BPF_MAP_GET_NEXT_KEY from no key on)."""
    keys: list[ctypes._CData] = []
    nxt = key_type()
    attr = _MapElem(fd, 0, 0, ctypes.addressof(nxt), 0)  # key 0 (NULL): the first key
    while True:
        try:
            bpf(BPF_MAP_GET_NEXT_KEY, attr, "map key walk")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return keys
            raise
        keys.append(key_type.from_buffer_copy(nxt))
        attr.key = ctypes.addressof(keys[-1])


def link_create(prog_fd: int, target_fd: int, attach_type: int, what: str) -> int:
    """A BPF link attaching ``prog_fd`` to ``target_fd`` (e.g. a cgroup
    directory); the attachment lives as long as the returned fd."""
    return bpf(BPF_LINK_CREATE, _LinkCreate(prog_fd, target_fd, attach_type, 0),
               f"attaching {what} (attach type {attach_type})")


def prog_load(prog_type: int, insns: bytes, license: str, kern_version: int, name: str,
              expected_attach_type: int = 0) -> int:
    """Load one program; a verifier rejection is retried with the log on, and
    the log's tail goes into the error."""
    buf = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoad(prog_type, len(insns) // 8, ctypes.addressof(buf), ctypes.addressof(lic), 0, 0, 0,
                     kern_version, 0, name.encode()[:15], 0, expected_attach_type)
    try:
        return bpf(BPF_PROG_LOAD, attr, f"loading program {name}")
    except BpfError as exc:
        if exc.errno not in (errno.EACCES, errno.EINVAL):
            raise
        log = ctypes.create_string_buffer(1 << 20)
        attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
        try:
            return bpf(BPF_PROG_LOAD, attr, f"loading program {name}")
        except BpfError as again:
            tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
            raise BpfError(again.errno, f"{again.strerror}; verifier: {' | '.join(tail)}") from None


def raw_tracepoint_open(name: str, prog_fd: int) -> int:
    """Attach to a raw tracepoint; the attachment lives as long as the returned fd."""
    cname = ctypes.create_string_buffer(name.encode())
    return bpf(BPF_RAW_TRACEPOINT_OPEN, _RawTp(ctypes.addressof(cname), prog_fd, 0), f"attaching raw tracepoint {name}")


def attach_tracepoint(tp_id: int, prog_fd: int, what: str) -> int:
    """A perf event on tracepoint ``tp_id`` running ``prog_fd``, as bcc's
    ``bpf_attach_tracepoint`` opens it (pid -1, cpu 0: a tracepoint's program
    runs on every CPU); the attachment lives as long as the returned fd."""
    libc, _, nr = _sys()
    attr = (ctypes.c_uint8 * PERF_ATTR_SIZE)()
    head = (ctypes.c_uint32 * 2).from_buffer(attr)
    head[0], head[1] = PERF_TYPE_TRACEPOINT, PERF_ATTR_SIZE
    words = (ctypes.c_uint64 * 4).from_buffer(attr, 8)
    words[0], words[1], words[2] = tp_id, 1, PERF_SAMPLE_RAW  # config, sample_period, sample_type
    ctypes.c_uint32.from_buffer(attr, 48).value = 1  # wakeup_events
    fd = libc.syscall(ctypes.c_long(nr), attr, ctypes.c_int(-1), ctypes.c_int(0), ctypes.c_int(-1),
                      ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"perf_event_open for tracepoint {what}: {os.strerror(err)}")
    try:
        for request, arg in ((PERF_EVENT_IOC_SET_BPF, prog_fd), (PERF_EVENT_IOC_ENABLE, 0)):
            if libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_int(arg)) != 0:
                err = ctypes.get_errno()
                raise BpfError(err, f"attaching tracepoint {what}: {os.strerror(err)}")
    except BaseException:
        os.close(fd)
        raise
    return int(fd)


def map_fd_relocations(insns: bytes) -> list[tuple[int, int]]:
    """(instruction index, map fd) of every ``ld_imm64`` that loads a map by fd
    (bcc compiles a map reference to one, with the fd of the map it created)."""
    found = []
    for i in range(0, len(insns) - 8, 8):
        if insns[i] == LD_IMM64 and (insns[i + 1] >> 4) in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
            found.append((i // 8, int.from_bytes(insns[i + 4:i + 8], "little", signed=True)))
    return found
