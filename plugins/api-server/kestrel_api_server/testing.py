"""Test helpers (for this plugin's tests and for anyone testing against the
API): HTTP and SSE clients on the standard library, and ``kestrel run`` as a
subprocess fed JSON lines on its stdin.  Every wait has a deadline."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from kestrel_core.testing import wait_for

RULES = """\
[[rule]]
id = "t-nc"
name = "Netcat started"
query = 'process where process.name in ("nc", "ncat")'
severity = "high"
description = "A netcat binary was executed; often used for reverse shells."

[[rule]]
id = "t-curl"
name = "Curl started"
query = 'process where process.name == "curl"'
severity = "low"
description = "curl ran."

[[rule]]
id = "t-dropper"
name = "Download then chmod"
query = 'sequence by host.name with maxspan=1m [process where process.name == "wget"] [process where process.name == "chmod"]'
severity = "medium"
description = "A download followed by making something executable on the same host."

[[rule]]
id = "t-shadow"
name = "Shadow file read"
query = 'file where file.path == "/etc/shadow"'
severity = "critical"
description = "Something opened /etc/shadow."
"""


def free_port() -> int:
    """A free port below the ephemeral range, so that a server restarted on
    it cannot find it taken by some client's outgoing connection (binding a
    listener fails then, even with SO_REUSEADDR)."""
    import random

    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def request(base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
            raw: bytes | None = None, timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; (status, lower-cased headers, decoded JSON or bytes)."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    hdrs = dict(headers or {})
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        rh = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    if rh.get("content-type", "").startswith("application/json"):
        return resp.status, rh, json.loads(payload)
    return resp.status, rh, payload


class SSEClient:
    """Reads ``/api/stream`` on a thread; parsed messages land in a queue."""

    def __init__(self, base: str, path: str = "/api/stream", last_event_id: int | None = None,
                 token: str | None = None, timeout: float = 120) -> None:
        u = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.conn.request("GET", path, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.messages: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()

    def _read(self) -> None:
        ident, data = None, []
        try:
            while True:
                line = self.resp.fp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line == "":
                    if data:
                        self.messages.put((ident, json.loads("\n".join(data))))
                    ident, data = None, []
                elif line.startswith("id:"):
                    ident = int(line[3:].strip())
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
        except (OSError, ValueError):
            pass
        finally:
            self.ended.set()

    def next(self, kind: str | None = None, timeout: float = 10) -> tuple[int | None, dict]:
        """The next message (of type ``kind``), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind or 'message'} on the stream within {timeout} s")
            try:
                ident, msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if kind is None or msg["type"] == kind:
                return ident, msg

    def alerts(self, n: int, timeout: float = 10) -> list[tuple[int, dict]]:
        return [self.next("alert", timeout) for _ in range(n)]

    def close(self) -> None:
        try:
            self.resp.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader at once
        except (AttributeError, OSError):
            pass
        self.conn.close()
        self._thread.join(timeout=5) if self._thread.is_alive() else None


def now_iso(offset_s: float = 0.0) -> str:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset_s)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def proc_event(name: str, host: str = "web1", container: str | None = None, pid: int = 100, **extra: Any) -> dict:
    event = {"@timestamp": now_iso(), "event": {"category": "process", "type": ["start"], "action": "exec"},
             "host": {"name": host}, "process": {"name": name, "pid": pid, "args": [name, "-x"],
                                                 "command_line": f"{name} -x"}, **extra}
    if container:
        event["container"] = {"id": container}
    return event


class KestrelRun:
    """``kestrel run`` with a jsonl source on stdin and an ``api`` sink."""

    def __init__(self, workdir: Path, port: int, extra_sink: str = "", heartbeat_s: float = 30,
                 extra_profile: str = "") -> None:
        self.workdir = workdir
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        (workdir / "rules.toml").write_text(RULES)
        (workdir / "profile.toml").write_text(f"""\
[kestrel]
plugins = ["api-server"]

[rules]
paths = ["rules.toml"]

[bus]
flush_interval_ms = 20

{extra_profile}

[[sources]]
type = "jsonl"
path = "-"

[[sinks]]
type = "api"
address = "127.0.0.1:{port}"
path = "alerts.sqlite"
heartbeat_s = {heartbeat_s}
{extra_sink}
""")
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self) -> "KestrelRun":
        self.runs += 1
        self.log = open(self.workdir / f"run{self.runs}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "kestrel_core", "run", "--profile", "profile.toml"],
                                     cwd=self.workdir, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"kestrel run exited {self.proc.returncode}:\n{self.output()}")
            try:
                return request(self.base, "GET", "/api/health", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(up, 60, "kestrel run's API to answer")
        return self

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / f"run{self.runs}.log").read_text()

    def feed(self, *events: dict) -> None:
        for e in events:
            self.proc.stdin.write(json.dumps(e).encode() + b"\n")
        self.proc.stdin.flush()

    def wait_alerts(self, n: int, timeout: float = 30) -> list[dict]:
        def enough():
            status, _, body = request(self.base, "GET", "/api/alerts?limit=1000")
            return body["alerts"] if status == 200 and len(body["alerts"]) >= n else None

        return wait_for(enough, timeout, f"{n} alerts in the store")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        if sig == signal.SIGTERM:
            self.proc.stdin.close()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"kestrel run did not stop within {timeout} s:\n{self.output()}") from None
        finally:
            self.log.close()
        return code


