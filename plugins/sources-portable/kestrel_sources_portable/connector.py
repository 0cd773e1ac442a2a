"""The netlink process connector: every fork, exec, exit, uid/gid change and
ptrace attach on the host, with pids, and no eBPF.

A raw ``AF_NETLINK``/``NETLINK_CONNECTOR`` socket subscribed to the
``CN_IDX_PROC`` multicast group (root only).  Only ``socket`` and ``struct``
are needed; the message layouts are ``linux/netlink.h``, ``linux/connector.h``
and ``linux/cn_proc.h``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from collections.abc import Iterator

import attrs

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

PROC_EVENT_NONE = 0x0
PROC_EVENT_FORK = 0x1
PROC_EVENT_EXEC = 0x2
PROC_EVENT_UID = 0x4
PROC_EVENT_GID = 0x40
PROC_EVENT_PTRACE = 0x100
PROC_EVENT_COMM = 0x200
PROC_EVENT_EXIT = 0x80000000

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_PROC_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns (CLOCK_MONOTONIC)
_HEADER = _NLMSGHDR.size + _CN_MSG.size
_SIX_U32 = struct.Struct("=6I")
_COMM = struct.Struct("=II16s")


@attrs.frozen
class KernelProcEvent:
    """One decoded proc connector message (fields unused by a kind stay 0)."""

    what: int
    ts_mono_ns: int
    pid: int  # the subject: the child for fork, the exiting/exec'ing/changed process otherwise
    tid: int = 0
    parent_pid: int = 0  # fork: the parent; exit: the parent; ptrace: the tracer
    a: int = 0  # exit: exit_code; uid/gid: real id; comm: unused
    b: int = 0  # exit: exit_signal; uid/gid: effective id
    comm: str = ""


def decode(data: bytes) -> Iterator[KernelProcEvent]:
    """Every proc event in one datagram (normally exactly one)."""
    offset = 0
    while offset + _HEADER + _PROC_EVENT.size <= len(data):
        nl_len = _NLMSGHDR.unpack_from(data, offset)[0]
        if nl_len < _HEADER + _PROC_EVENT.size:
            break
        idx, val, _seq, _ack, _len, _flags = _CN_MSG.unpack_from(data, offset + _NLMSGHDR.size)
        if idx == CN_IDX_PROC and val == CN_VAL_PROC:
            body = offset + _HEADER
            what, _cpu, ts = _PROC_EVENT.unpack_from(data, body)
            event = _decode_body(what, ts, data, body + _PROC_EVENT.size)
            if event is not None:
                yield event
        offset += (nl_len + 3) & ~3


def _decode_body(what: int, ts: int, data: bytes, at: int) -> KernelProcEvent | None:
    if what == PROC_EVENT_COMM:
        pid, tgid, raw = _COMM.unpack_from(data, at)
        return KernelProcEvent(what, ts, tgid, pid, comm=raw.split(b"\0", 1)[0].decode("utf-8", "replace"))
    if len(data) < at + _SIX_U32.size:
        # The union is 24 bytes on every kernel we know; shorter is not a proc event we read.
        return None
    f = _SIX_U32.unpack_from(data, at)
    if what == PROC_EVENT_FORK:  # parent_pid, parent_tgid, child_pid, child_tgid
        return KernelProcEvent(what, ts, pid=f[3], tid=f[2], parent_pid=f[1])
    if what == PROC_EVENT_EXEC:  # process_pid, process_tgid
        return KernelProcEvent(what, ts, pid=f[1], tid=f[0])
    if what == PROC_EVENT_EXIT:  # pid, tgid, exit_code, exit_signal, parent_pid, parent_tgid
        return KernelProcEvent(what, ts, pid=f[1], tid=f[0], parent_pid=f[5], a=f[2], b=f[3])
    if what in (PROC_EVENT_UID, PROC_EVENT_GID):  # pid, tgid, real id, effective id
        return KernelProcEvent(what, ts, pid=f[1], tid=f[0], a=f[2], b=f[3])
    if what == PROC_EVENT_PTRACE:  # pid, tgid, tracer_pid, tracer_tgid (0 on detach)
        return KernelProcEvent(what, ts, pid=f[1], tid=f[0], parent_pid=f[3])
    return None


class ProcConnector:
    """A subscribed connector socket.  ``read`` returns decoded events;
    ``overflows`` counts ENOBUFS, i.e. times the kernel dropped messages
    because we fell behind (how many were lost is not knowable)."""

    RCVBUF = 8 << 20

    def __init__(self) -> None:
        self.overflows = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            try:  # root may exceed net.core.rmem_max; bursts of execs need the room
                self.sock.setsockopt(socket.SOL_SOCKET, 33, self.RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            self.sock.bind((0, CN_IDX_PROC))
            self._control(PROC_CN_MCAST_LISTEN)
        except BaseException:
            self.sock.close()
            raise

    def _control(self, op: int) -> None:
        payload = struct.pack("=I", op)
        cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, 0, 0) + cn)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, timeout_s: float) -> list[KernelProcEvent]:
        """Events available within ``timeout_s`` (drains what is queued)."""
        ready, _, _ = select.select([self.sock], [], [], timeout_s)
        if not ready:
            return []
        out: list[KernelProcEvent] = []
        while True:
            try:
                data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overflows += 1
                    continue
                raise
            out.extend(decode(data))

    def close(self) -> None:
        try:
            self._control(PROC_CN_MCAST_IGNORE)
        except OSError:
            pass
        self.sock.close()


def probe() -> tuple[bool, str]:
    """Can this process subscribe to the proc connector here?"""
    if os.geteuid() != 0:
        return False, "the netlink process connector needs root (CAP_NET_ADMIN)"
    try:
        conn = ProcConnector()
    except OSError as exc:
        return False, f"netlink process connector unavailable: {exc.strerror or exc}"
    conn.close()
    return True, "netlink process connector (NETLINK_CONNECTOR/CN_IDX_PROC)"
