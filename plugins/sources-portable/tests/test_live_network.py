"""Optional /proc/net/tcp polling: bind, connect and accept with pids."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from kestrel_sources_portable.testing import needs_root


@needs_root
def test_tcp_bind_connect_accept(live):
    src = live(files=False, network=True, network_interval_ms=50)
    assert {"connect", "accept", "bind"} <= set(src.source.coverage.seen)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = f"import socket, sys; s = socket.create_connection(('127.0.0.1', {port})); sys.stdin.read()"
    client = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        conn, _ = server.accept()
        bind = src.wait_for(lambda r: r["event.action"] == "bind" and r.get("source.port") == port, what="bind")
        connect = src.wait_for(lambda r: r["event.action"] == "connection_attempted" and r.get("destination.port") == port,
                               what="connect")
        accept = src.wait_for(lambda r: r["event.action"] == "connection_accepted" and r.get("destination.port") == port,
                              what="accept")
        conn.close()
    finally:
        client.stdin.close()
        client.wait(timeout=10)
        server.close()
    assert bind["process.pid"] == os.getpid() and bind["event.type"] == ["start"]
    assert connect["event.category"] == ["network"] and connect["event.type"] == ["connection"]
    assert connect["process.pid"] == client.pid and connect["process.executable"] == os.path.realpath(sys.executable)
    assert connect["destination.ip"] == "127.0.0.1" and connect["network.direction"] == "egress"
    assert connect["network.transport"] == "tcp" and connect["network.type"] == "ipv4"
    assert accept["process.pid"] == os.getpid() and accept["network.direction"] == "ingress"
    assert accept["source.port"] == connect["source.port"]


@needs_root
def test_network_off_by_default_is_reported(live):
    src = live(files=False)
    assert "connect" in src.source.coverage.missing
    assert "no connect/accept/bind" in src.source.coverage.summary()
