"""TCP connections seen by polling ``/proc/net/tcp`` and ``/proc/net/tcp6``.

Without eBPF there is no per-connect notification.  Polling sees a socket
only if it is still open at the next poll, so short connections are missed;
the socket's inode is mapped to its owning process by scanning
``/proc/<pid>/fd`` (only when new sockets appeared, and the whole scan is
the expensive part: see the README for the measured cost).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

import attrs

TCP_ESTABLISHED = "01"
TCP_SYN_SENT = "02"
TCP_LISTEN = "0A"


@attrs.frozen
class TcpSocket:
    inode: int
    state: str
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    family: str  # "ipv4" | "ipv6"


def _decode_address(text: str, family: str) -> tuple[str, int]:
    """``0100007F:0050`` -> ("127.0.0.1", 80): words are in host byte order."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = struct.unpack(f"<{len(raw) // 4}I", raw)
    packed = b"".join(struct.pack(">I", w) for w in words)
    if family == "ipv4":
        ip = socket.inet_ntop(socket.AF_INET, packed)
    else:
        ip = ipaddress.ip_address(packed).compressed
        mapped = ipaddress.IPv6Address(packed).ipv4_mapped
        if mapped is not None:
            ip = str(mapped)
    return ip, int(port, 16)


def parse_proc_net_tcp(text: str, family: str) -> Iterator[TcpSocket]:
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        local_ip, local_port = _decode_address(parts[1], family)
        remote_ip, remote_port = _decode_address(parts[2], family)
        yield TcpSocket(int(parts[9]), parts[3], local_ip, local_port, remote_ip, remote_port, family)


def read_tcp_sockets() -> list[TcpSocket]:
    out: list[TcpSocket] = []
    for path, family in (("/proc/net/tcp", "ipv4"), ("/proc/net/tcp6", "ipv6")):
        try:
            with open(path, encoding="ascii") as fh:
                out.extend(parse_proc_net_tcp(fh.read(), family))
        except OSError:
            continue
    return out


def socket_owners(inodes: set[int]) -> dict[int, int]:
    """socket inode -> pid of a process holding it (first found)."""
    found: dict[int, int] = {}
    wanted = {f"socket:[{i}]": i for i in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    target = os.readlink(fd.path)
                except OSError:
                    continue
                inode = wanted.get(target)
                if inode is not None and inode not in found:
                    found[inode] = int(entry.name)
        if len(found) == len(wanted):
            break
    return found


@attrs.frozen
class Connection:
    action: str  # connect | accept | bind
    sock: TcpSocket
    pid: int


class TcpPoller:
    """Diffs successive socket tables; the first poll is the baseline."""

    def __init__(self) -> None:
        self._seen: set[int] | None = None

    def poll(self) -> list[Connection]:
        sockets = [s for s in read_tcp_sockets() if s.inode]
        listening = {s.local_port for s in sockets if s.state == TCP_LISTEN}
        current = {s.inode for s in sockets}
        seen, self._seen = self._seen, current
        if seen is None:
            return []
        new = [s for s in sockets if s.inode not in seen and s.state in (TCP_LISTEN, TCP_ESTABLISHED, TCP_SYN_SENT)]
        if not new:
            return []
        owners = socket_owners({s.inode for s in new})
        out = []
        for s in new:
            if s.state == TCP_LISTEN:
                action = "bind"
            elif s.local_port in listening:
                action = "accept"
            else:
                action = "connect"
            out.append(Connection(action, s, owners.get(s.inode, 0)))
        return out
