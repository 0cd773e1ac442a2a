"""Cgroup connect-deny rung: cgroup/connect4 + cgroup/connect6 programs
(bpf/connect_deny.c) attached to cgroup2 directories; a denied destination
makes ``connect()`` fail with EPERM for every process in that cgroup or below.

Programs are attached through BPF links (``BPF_LINK_CREATE``):
a link detaches when its fd closes, so a crashed Kestrel leaves no deny
behind.  A plain ``bpf_prog_attach`` attachment would outlive the process.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import ipaddress
import os
import socket
import struct
import time

from kestrel_core import host
from kestrel_core.interfaces import Probe

from kestrel_sources_ebpf import bpfsys

from .base import Report
from .bccload import Unavailable
from .kprogram import Loaded
from .progpath import ProgramPath

ATTACH_TYPES = {"connect4": 10, "connect6": 11}  # BPF_CGROUP_INET4_CONNECT, BPF_CGROUP_INET6_CONNECT
COUNTERS = ("connects_denied", "reports_lost")


class DestKey(ctypes.Structure):
    """``struct dest_key`` of bpf/connect_deny.c."""
    _fields_ = [("cgid", ctypes.c_uint64), ("family", ctypes.c_uint32), ("port", ctypes.c_uint32),
                ("addr", ctypes.c_uint32 * 4)]


class DenyEvent(ctypes.Structure):
    """``struct deny_event`` of bpf/connect_deny.c."""
    _fields_ = [("ts_ns", ctypes.c_uint64), ("cgid", ctypes.c_uint64), ("tgid", ctypes.c_uint32),
                ("family", ctypes.c_uint32), ("port", ctypes.c_uint32), ("addr", ctypes.c_uint32 * 4)]


def cgroup2_root() -> str | None:
    """Mount point of the cgroup2 hierarchy (``/sys/fs/cgroup`` or ``.../unified``),
    mounting one as root when none is (see :func:`kestrel_core.host.ensure_cgroup2`)."""
    root = host.ensure_cgroup2()
    return None if root is None else str(root)


def cgroup_dir_of(pid: int) -> str | None:
    """The cgroup2 directory of a process (``0::/path`` in /proc/<pid>/cgroup)."""
    root = cgroup2_root()
    if root is None:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return os.path.join(root, line[3:].strip().lstrip("/"))
    except OSError:
        pass
    return None


def link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    try:
        return bpfsys.link_create(prog_fd, target_fd, attach_type, "a cgroup connect program")
    except bpfsys.BpfError as exc:
        err = exc.errno
        raise Unavailable(f"bpf_link_create(attach_type={attach_type}) failed: errno {err} "
                          f"({errno.errorcode.get(err, err)}: {os.strerror(err)})") from None


def _load(prog: Loaded) -> dict[str, int]:
    """Program name -> fd of the two connect programs."""
    funcs = {}
    for name in ATTACH_TYPES:
        try:
            funcs[name] = prog.prog_fd(name)
        except Exception as exc:
            err = ctypes.get_errno()
            raise Unavailable(f"{name} did not load: errno {err} ({os.strerror(err)}); {exc}") from None
    return funcs


@functools.cache
def _probe() -> Probe:
    root = cgroup2_root()
    if root is None:
        return Probe.missing("no cgroup2 mount (mount -t cgroup2 none /sys/fs/cgroup/unified)")
    try:
        prog = CgroupConnectPath.load()
    except Exception as exc:  # noqa: BLE001 - any failure is the reason this rung is unavailable
        return Probe.missing(f"cgroup/connect programs did not compile: {exc}")
    try:
        funcs = _load(prog)
        probe_dir = os.path.join(root, f"kestrel-probe-{os.getpid()}")
        os.makedirs(probe_dir, exist_ok=True)
        dfd = os.open(probe_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name, fd in funcs.items():
                os.close(link_create(fd, dfd, ATTACH_TYPES[name]))
        finally:
            os.close(dfd)
            os.rmdir(probe_dir)
    except (Unavailable, OSError) as exc:
        return Probe.missing(f"cgroup connect programs did not attach: {exc}")
    finally:
        prog.close()
    return Probe.ok(f"cgroup/connect4+connect6 attach to cgroup2 directories under {root} ({prog.backend})")


def _addr_words(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[int, tuple[int, int, int, int]]:
    """(family, the address as four u32 in the kernel's layout: network byte order, IPv4 in word 0)."""
    if ip.version == 4:
        return socket.AF_INET, (struct.unpack("=I", ip.packed)[0], 0, 0, 0)
    return socket.AF_INET6, struct.unpack("=4I", ip.packed)


class CgroupConnectPath(ProgramPath):
    NAME = "cgroup-connect"
    ACTIONS = frozenset({"deny-connect"})
    PROGRAM = "connect_deny"
    RING = "denials"
    COUNTERS = COUNTERS
    MAPS = {"denied_dests": (DestKey, ctypes.c_uint8)}
    PROGRAM_TYPES = {name: (bpfsys.BPF_PROG_TYPE_CGROUP_SOCK_ADDR, attach) for name, attach in ATTACH_TYPES.items()}

    def __init__(self, report: Report | None = None) -> None:
        super().__init__(report)
        self._funcs: dict[str, int] = {}
        self._links: dict[str, list[int]] = {}  # cgroup dir -> link fds
        self.denied: set[tuple[str, str, int]] = set()

    @classmethod
    def probe(cls) -> Probe:
        return _probe()

    def _loaded(self, prog: Loaded) -> None:
        self._funcs = _load(prog)

    def _on_record(self, raw: bytes) -> None:
        ev = DenyEvent.from_buffer_copy(raw)
        words = [ev.addr[i] for i in range(4)]
        if ev.family == socket.AF_INET:
            ip = str(ipaddress.IPv4Address(struct.pack("=I", words[0])))
        else:
            ip = str(ipaddress.IPv6Address(struct.pack("=4I", *words)))
        lag_us = max(0.0, (time.monotonic_ns() - ev.ts_ns) / 1000)
        self.report({"path": self.NAME, "outcome": "denied", "action": "deny-connect",
                     "target": f"{ip}:{ev.port}", "pid": ev.tgid, "cgroup_id": ev.cgid, "latency_us": 0.0,
                     "report_lag_us": round(lag_us, 1)})

    def _attach(self, cgroup: str) -> None:
        if cgroup in self._links:
            return
        dfd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        links: list[int] = []
        try:
            for name, fd in self._funcs.items():
                links.append(link_create(fd, dfd, ATTACH_TYPES[name]))
        except BaseException:
            for fd in links:
                os.close(fd)
            raise
        finally:
            os.close(dfd)
        self._links[cgroup] = links

    def _keys(self, cgroup: str, ip: str, port: int) -> list[DestKey]:
        addr = ipaddress.ip_address(ip)
        if not 0 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        cgid = os.stat(cgroup).st_ino  # a cgroup2 directory's inode number is its cgroup id
        addrs = [addr]
        if addr.version == 4:  # an IPv6 socket reaches IPv4 peers through the v4-mapped address
            addrs.append(ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + addr.packed))
        keys = []
        for a in addrs:
            family, words = _addr_words(a)
            key = DestKey()
            key.cgid, key.family, key.port = cgid, family, port
            for i, w in enumerate(words):
                key.addr[i] = w
            keys.append(key)
        return keys

    def deny_connect(self, cgroup: str, ip: str, port: int = 0) -> None:
        """Deny connects from ``cgroup`` (a cgroup2 directory) and below to
        ``ip`` (``port`` 0: any port)."""
        if not os.path.isdir(cgroup):
            raise ValueError(f"not a cgroup2 directory: {cgroup}")
        keys = self._keys(cgroup, ip, port)
        with self._lock:
            self._attach(cgroup)
            for key in keys:
                self._prog.maps["denied_dests"][key] = ctypes.c_uint8(1)
            self.denied.add((cgroup, ip, port))

    def allow_connect(self, cgroup: str, ip: str, port: int = 0) -> None:
        with self._lock:
            for key in self._keys(cgroup, ip, port):
                try:
                    del self._prog.maps["denied_dests"][key]
                except KeyError:
                    pass
            self.denied.discard((cgroup, ip, port))

    def clear(self) -> None:
        """Forget every deny and detach from every cgroup."""
        if self._prog is None:
            return
        with self._lock:
            self._prog.maps["denied_dests"].clear()
            self.denied.clear()
            for links in self._links.values():
                for fd in links:
                    os.close(fd)
            self._links.clear()

    def close(self) -> None:
        self.clear()  # closes the cgroup links before the program goes
        super().close()
