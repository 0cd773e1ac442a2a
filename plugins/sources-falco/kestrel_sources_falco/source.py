"""The ``falco`` source: Falco's JSON alerts from a file, stdin or Falco's
``http_output``, mapped to ECS records (:mod:`.mapping`) for the ``ecs-json``
normalizer.

The HTTP listener is the standard library's ``http.server`` (a thread per
connection): Falco sends one alert per POST through libcurl, so nothing
asynchronous is needed and no dependency is added.
"""

from __future__ import annotations

import os
import re
import socket
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

import attrs
import orjson

from kestrel_core.interfaces import EMITS_ANY, Emit, Source
from kestrel_core.localauth import is_loopback, load_or_create_token, token_matches
from kestrel_core.validators import non_negative, positive

from .mapping import OPEN_ACTIONS, FalcoFormatError, drop_report, event_key, merge, to_ecs

FOLLOW_POLL_S = 0.2
"""How often a followed file is checked for new lines at its end."""
_TEXT_OUTPUT = re.compile(rb"^(\d{2}:\d{2}:\d{2}\.\d{9}|\d{4}-\d{2}-\d{2}T[\d:.]+[+-]\d{4}): [A-Z][a-z]+ ")
"""Falco's text alert line: ``<evt.time or evt.time.iso8601>: <Priority> <message>``."""
IDLE_TIMEOUT_S = 60.0
"""An HTTP connection idle (or stalled inside a request) this long is closed."""


def parse_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming the problem."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port = rest[1:] if sep and rest.startswith(":") else ""
    else:
        host, _, port = value.rpartition(":")
        if ":" in host:
            raise ValueError(f"listen {value!r}: an IPv6 host must be written in brackets")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen {value!r}: expected host:port (port 0 to 65535)")
    return host, int(port)


class FalcoSource(Source):
    """Falco alerts (``json_output: true``): one JSON object per line from a
    file or stdin, or one per HTTP POST from Falco's ``http_output``.  A line
    or post that is not a Falco alert is logged with its line (or post)
    number and the reason, counted as dropped (``malformed``) and skipped; a
    malformed post gets 400."""

    PLUGIN_NAME = "falco"
    DESCRIPTION = "Falco JSON alerts from a file, stdin or Falco's http_output"
    NORMALIZER = "ecs-json"

    @classmethod
    def emitted_kinds(cls) -> str:
        return EMITS_ANY  # what Falco's rules' outputs name decides the fields

    @attrs.define(kw_only=True)
    class Settings:
        path: str = ""
        """File of Falco json_output lines (relative to the profile), or ``-`` for stdin."""
        follow: bool = False
        """With a file: keep reading lines appended to it (Falco's file_output) until stopped."""
        listen: str = ""
        """``host:port`` for Falco's http_output POSTs (``127.0.0.1:2801``; port 0 picks one).
        Anything but loopback needs a token (``token`` or ``token_file``)."""
        token: str = ""
        """Token a POST must carry: ``Authorization: Bearer TOKEN`` or the password of
        the URL's user info (``http://falco:TOKEN@host:2801/``, sent as Basic)."""
        token_file: str = ""
        """File holding the token (relative to the profile); generated, mode 0600, if missing."""
        max_body_bytes: int = attrs.field(default=1 << 20, validator=positive)
        """Largest POST body accepted (413 above)."""
        max_connections: int = attrs.field(default=64, validator=positive)
        """Connections served at once (each has a thread); one more gets 503."""
        merge_window_ms: int = attrs.field(default=50, validator=non_negative)
        """Alerts of several Falco rules for one system call (``rule_matching: all``;
        same host, nanosecond, syscall and process) become one event when they
        arrive one after the other; a live input's last alert waits this long for
        its siblings.  0: every alert is an event of its own."""
        rule_actions: dict[str, str] = attrs.Factory(dict)
        """Falco rule name -> ``open``, ``open_write`` or ``creation``: the action of
        that rule's open events when its output names neither ``evt.arg.flags`` nor
        ``evt.is_open_write`` (Falco's own rules are built in)."""

        def __attrs_post_init__(self) -> None:
            if bool(self.path) == bool(self.listen):
                raise ValueError("give exactly one of path (a file, '-' for stdin) and listen (host:port)")
            if self.follow and self.path in ("", "-"):
                raise ValueError("follow needs a file path, not stdin")
            if self.listen:
                parse_address(self.listen)
            if (self.token or self.token_file) and not self.listen:
                raise ValueError("token and token_file are for listen")
            if self.token and len(self.token) < 16:
                raise ValueError("token must be at least 16 characters")
            for rule, action in self.rule_actions.items():
                if action not in OPEN_ACTIONS:
                    raise ValueError(f"rule_actions[{rule!r}] must be one of {', '.join(OPEN_ACTIONS)}, "
                                     f"not {action!r}")

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        self._lineno = 0
        self._done = 0
        self._total = 0
        self._where = threading.local()
        self.posts = 0
        self._posts_lock = threading.Lock()
        self.malformed = 0
        self.bound_address: str | None = None
        self.token: str | None = None
        self._rule_actions = dict(settings.rule_actions)
        self._path = None
        self.display_path = "<stdin>" if settings.path == "-" else settings.path
        if settings.path and settings.path != "-":
            self._path = self._resolve(settings.path)
            self._total = os.stat(self._path).st_size  # fail before the run starts
        if settings.listen:
            self._setup_token()

    def _resolve(self, path: str) -> str:
        profile = getattr(self.context, "profile", None)
        return str(profile.resolve_path(path)) if profile is not None else path

    def _setup_token(self) -> None:
        s = self.settings
        host, _ = parse_address(s.listen)
        if s.token:
            self.token = s.token
        elif s.token_file:
            path = self._resolve(s.token_file)
            self.token, created = load_or_create_token(path)
            if created:
                self.context.log.info("falco source: generated a token in %s (mode 0600)", path)
        elif not is_loopback(host):
            raise ValueError(f"source falco: listen {s.listen} is not loopback, so posts need a token: set "
                             f"token = \"...\" or token_file = \"...\" and put it in Falco's http_output url "
                             f"(http://falco:TOKEN@host:port/)")

    # ------------------------------------------------------------------ records

    def _reject(self, where: str, reason: str) -> None:
        self.malformed += 1
        self.context.log.error("%s: %s", where, reason)
        self.context.reject(self.name, "malformed")

    def _map(self, raw: bytes, where: str, emit: "_Coalescer") -> dict[str, Any] | None | bool:
        """The ECS record of one line; None for a malformed one (logged,
        counted); True for Falco's report of its own kernel drops, which
        becomes a loss record (``emit.loss``), not an event."""
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if _TEXT_OUTPUT.match(raw):
                self._reject(where, "not JSON but Falco's text output: set json_output: true in falco.yaml "
                                    "(or -o json_output=true)")
            else:
                self._reject(where, f"invalid JSON: {exc}")
            return None
        try:
            drops = drop_report(doc)
            if drops is None:
                return to_ecs(doc, self._rule_actions)
        except FalcoFormatError as exc:
            self._reject(where, str(exc))
            return None
        n, ts = drops
        if n:  # the events Falco's driver dropped in the second before ts
            emit.loss(n, ts - 10**9, ts)
        return True

    def describe_record(self, record: Any) -> str:
        return getattr(self._where, "value", self.display_path)

    def progress(self) -> tuple[int, int] | None:
        return (self._done, self._total) if self._total and not self.settings.follow else None

    def run(self, emit: Emit, stop: threading.Event) -> None:
        live = bool(self.settings.listen) or self.settings.follow or self._path is None
        out = _Coalescer(self, emit, self.settings.merge_window_ms / 1000, live)
        try:
            if self.settings.listen:
                self._serve(out, stop)
            else:
                self._read(out, stop)
        finally:
            out.close()

    # ------------------------------------------------------------------ file / stdin

    def _read(self, emit: "_Coalescer", stop: threading.Event) -> None:
        fh: BinaryIO = sys.stdin.buffer if self._path is None else open(self._path, "rb")
        try:
            pending = b""
            while not stop.is_set():
                raw = fh.readline()
                if not raw.endswith(b"\n") and self.settings.follow:
                    # a line Falco is still writing, or the end for now: wait for the rest
                    pending += raw
                    fh, replaced = self._wait_for_more(fh, stop)
                    if replaced and pending:  # the old file ended inside a line
                        self._reject(f"{self.display_path}:{self._lineno + 1}", "line cut off where the file was "
                                     "replaced or truncated")
                    if replaced:
                        pending, self._lineno = b"", 0
                    if fh is None:
                        return
                    continue
                if not raw and not pending:
                    return
                raw, pending = pending + raw, b""
                self._lineno += 1
                self._done += len(raw)
                if not raw.strip():
                    continue
                self._where.value = f"{self.display_path}:{self._lineno}"
                record = self._map(raw, self._where.value, emit)
                if record.__class__ is dict:
                    emit(record, self._where.value)
        finally:
            if fh is not None and fh is not sys.stdin.buffer:
                fh.close()

    def _wait_for_more(self, fh: BinaryIO, stop: threading.Event) -> tuple[BinaryIO | None, bool]:
        """Wait until the followed file grows or is replaced (log rotation: the
        new file is read from its start): (the file to read, whether it is a new
        one); (None, False) once stopped."""
        while not stop.wait(FOLLOW_POLL_S):
            try:
                st = os.stat(self._path)
            except FileNotFoundError:
                continue  # rotated away, the new one not created yet
            own = os.fstat(fh.fileno())
            if st.st_ino != own.st_ino and own.st_size > fh.tell():
                return fh, False  # renamed away with lines not read yet: those first
            if st.st_ino != own.st_ino or st.st_size < fh.tell():
                fh.close()
                self.context.log.info("falco source: %s was replaced or truncated; reading it from the start",
                                      self.display_path)
                return open(self._path, "rb"), True
            if st.st_size > fh.tell():
                return fh, False
        fh.close()
        return None, False

    # ------------------------------------------------------------------ http_output

    def _serve(self, emit: "_Coalescer", stop: threading.Event) -> None:
        host, port = parse_address(self.settings.listen)
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # libcurl keeps the connection when Falco's keep_alive is on
            server_version = "kestrel-falco"
            timeout = IDLE_TIMEOUT_S  # an idle or stalled connection gives its thread back

            def log_message(self, fmt: str, *args: Any) -> None:  # requests are counted, not logged
                pass

            def _reply(self, status: HTTPStatus, message: str) -> None:
                body = orjson.dumps({"status": status.value, "message": message})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply(HTTPStatus.METHOD_NOT_ALLOWED, "POST Falco's json_output alerts here")

            def do_POST(self) -> None:
                if source.token is not None and not token_matches(self.headers.get("Authorization"), source.token, basic=True):
                    self.close_connection = True
                    return self._reply(HTTPStatus.UNAUTHORIZED, "missing or wrong token")
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self.close_connection = True
                    return self._reply(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
                if int(length) > source.settings.max_body_bytes:
                    self.close_connection = True
                    return self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                       f"body over {source.settings.max_body_bytes} bytes")
                body = self.rfile.read(int(length))
                source._post(self, body, emit)

        try:
            server = _Server((host, port), Handler, ipv6=":" in host, max_connections=self.settings.max_connections)
        except OSError as exc:
            raise OSError(exc.errno, f"falco source: cannot listen on {self.settings.listen}: "
                                     f"{exc.strerror or exc}") from exc
        h, p = server.socket.getsockname()[:2]
        self.bound_address = f"[{h}]:{p}" if ":" in h else f"{h}:{p}"
        self.context.log.info("falco source: listening for Falco's http_output on http://%s/%s", self.bound_address,
                              " (token required)" if self.token else "")
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                  name="falco-http", daemon=True)
        thread.start()
        try:
            stop.wait()
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
            if server.refused:
                self.context.log.warning("falco source: refused %d connections over max_connections (%d)",
                                         server.refused, self.settings.max_connections)

    def _post(self, handler: Any, body: bytes, emit: "_Coalescer") -> None:
        """One POST: Falco's single alert, or several JSON lines.  Every good
        line is emitted; any malformed one makes the reply 400 naming it."""
        with self._posts_lock:
            self.posts += 1
            number = self.posts
        lines = [(i, raw) for i, raw in enumerate(body.splitlines(), 1) if raw.strip()]
        if not lines:
            where = f"http post {number}"
            self._reject(where, "empty body")
            return handler._reply(HTTPStatus.BAD_REQUEST, f"{where}: empty body, expected a Falco JSON alert")
        errors = []
        for i, raw in lines:
            where = f"http post {number}" + (f" line {i}" if len(lines) > 1 else "")
            self._where.value = where
            record = self._map(raw, where, emit)
            if record is None:
                errors.append(where)
            elif record.__class__ is dict:
                emit(record, where)
        if errors:
            handler._reply(HTTPStatus.BAD_REQUEST, f"not a Falco JSON alert: {', '.join(errors)} (the run's log says why)")
        else:
            handler._reply(HTTPStatus.OK, "ok")


class _Coalescer:
    """Between the parser and the pipeline's emit: merges consecutive alerts of
    one system call (:func:`.mapping.merge`), counting each alert folded into
    another as dropped (``merged``) so the balance holds.  On a live input a
    thread hands over the pending event once it waited ``window_s``."""

    def __init__(self, source: FalcoSource, emit: Emit, window_s: float, live: bool) -> None:
        self.source, self._emit, self.window_s = source, emit, window_s
        self._lock = threading.Lock()
        self._pending: tuple[tuple, dict[str, Any], str, float] | None = None
        self._closed = threading.Event()
        self._thread = None
        if window_s > 0 and live:
            self._thread = threading.Thread(target=self._flusher, name="falco-merge", daemon=True)
            self._thread.start()

    def __call__(self, record: dict[str, Any], where: str) -> None:
        key = event_key(record) if self.window_s > 0 else None
        with self._lock:
            if key is not None and self._pending is not None and self._pending[0] == key:
                merge(self._pending[1], record)
                self.source.context.reject(self.source.name, "merged")
                return
            self._hand_over()
            if key is None:
                self._send(record, where)
            else:
                self._pending = (key, record, where, time.monotonic())

    def loss(self, lost: int, first_ns: int, last_ns: int) -> None:
        with self._lock:
            self._hand_over()  # the loss goes between the events before and after it
            loss = getattr(self._emit, "loss", None)
            if loss is not None:
                loss(lost, first_ns, last_ns, "falco_syscall_drops", first_wall_ns=first_ns, last_wall_ns=last_ns)

    def _send(self, record: dict[str, Any], where: str) -> None:
        self.source._where.value = where  # what describe_record names if the normalizer refuses it
        self._emit(record)

    def _hand_over(self) -> None:
        if self._pending is not None:
            _, record, where, _ = self._pending
            self._pending = None
            self._send(record, where)

    def _flusher(self) -> None:
        while not self._closed.wait(self.window_s / 2):
            with self._lock:
                if self._pending is not None and time.monotonic() - self._pending[3] >= self.window_s:
                    self._hand_over()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._hand_over()


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: one more is
    answered 503 and closed, so connections (authenticated or not) cannot use
    up the process's threads."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, ipv6: bool, max_connections: int) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self._slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN (DNS, can hang): not needed here
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
