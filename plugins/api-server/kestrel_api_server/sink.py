"""The ``api`` sink: stores every alert durably and serves the alert API,
the SSE stream and the console from a Uvicorn server on a thread of its own.

An alert is acknowledged by the sink once it is committed to the store: it
then survives a SIGKILL of the run (and, with ``synchronous = "full"``, a
power loss), and only then is it streamed and listed.  By default the sink
group-commits: ``write_alert`` adds to an open transaction and ``flush``
(which the run calls at most every ``[bus] flush_interval_ms`` while alerts
come, and when the input goes quiet) commits it with one fsync; ``commit =
"alert"`` commits each alert before ``write_alert`` returns.  The server socket is bound in ``open()`` on the
calling thread, so a port in use or a refused setting stops the run before
it starts, with the sink named.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

import attrs

from kestrel_core.interfaces import Probe, Sink
from kestrel_core.validators import non_negative, positive

from .hub import Hub
from .security import ConfigError, RateLimiter, is_loopback, load_or_create_token
from .store import NewAlert, SqliteAlertStore, StoreError
from .wire import envelope, sse

if TYPE_CHECKING:  # pragma: no cover
    from kestrel_core.alert import Alert
    from kestrel_core.event import Event
    from kestrel_core.runtime import RunContext

DEFAULT_ADDRESS = "127.0.0.1:8765"
STORES = ("sqlite",)
MAX_PENDING = 512
"""Alerts written without a flush before the sink commits on its own."""


def parse_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming the problem."""
    if not isinstance(value, str) or not value or value != value.strip():
        raise ValueError(f"invalid address {value!r}: expected host:port")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"invalid address {value!r}: expected [ipv6]:port")
        port = rest[1:]
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"invalid address {value!r}: expected host:port")
        if ":" in host:
            raise ValueError(f"invalid address {value!r}: an IPv6 host must be written in brackets")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid address {value!r}: port must be a number from 0 to 65535")
    return host, int(port)


def _check_address(instance: Any, attribute: Any, value: str) -> None:
    parse_address(value)


class _EventRate:
    """Events per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._marks: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def add(self, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._marks.append((now, n))
            while self._marks and self._marks[0][0] < now - self.window_s:
                self._marks.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._marks and self._marks[0][0] < now - self.window_s:
                self._marks.popleft()
            total = sum(n for _, n in self._marks)
        span = min(self.window_s, max(now - self._started, 1e-3))
        return total / span


class ApiSink(Sink):
    """Durable alert store + REST/SSE API + console."""

    PLUGIN_NAME = "api"
    DESCRIPTION = "alert API (REST + SSE) and web console over a durable SQLite alert store"

    @attrs.define(kw_only=True)
    class Settings:
        address: str = attrs.field(default=DEFAULT_ADDRESS, validator=_check_address)
        """``host:port`` to listen on (``[::1]:8765`` for IPv6; port 0 picks a free port).
        Anything but loopback needs a token (``token`` or ``token_file``)."""
        store: str = attrs.field(default="sqlite", validator=attrs.validators.in_(STORES))
        """Alert store backend."""
        path: str = "kestrel-alerts.sqlite"
        """SQLite file of the store, relative to the profile."""
        synchronous: str = attrs.field(default="full", validator=attrs.validators.in_(("full", "normal")))
        """``full``: every stored alert is fsynced (survives power loss); ``normal``: survives a crash of the process."""
        commit: str = attrs.field(default="flush", validator=attrs.validators.in_(("flush", "alert")))
        """``flush``: group commit, alerts are committed (fsynced, then streamed) when the run flushes
        its sinks, at most ``[bus] flush_interval_ms`` after they were raised; ``alert``: one commit per
        alert before ``write_alert`` returns (about 1 ms each with ``synchronous = "full"``)."""
        retention_days: float = attrs.field(default=30.0, validator=non_negative)
        """Alerts older than this are deleted (0: keep forever)."""
        retention_max_alerts: int = attrs.field(default=1_000_000, validator=non_negative)
        """At most this many alerts are kept, the oldest deleted first (0: no limit)."""
        token: str = ""
        """Bearer token clients must send (``Authorization: Bearer ...``)."""
        token_file: str = ""
        """File holding the token (relative to the profile); generated, mode 0600, if missing.
        Default: the store's path + ``.token``, used only on loopback."""
        auth: str = attrs.field(default="auto", validator=attrs.validators.in_(("auto", "always")))
        """``auto``: reads need the token only off loopback; ``always``: everywhere.  ``/api/enforce`` always does."""
        heartbeat_s: float = attrs.field(default=30.0, validator=positive)
        """Seconds between SSE heartbeats."""
        max_body_bytes: int = attrs.field(default=65536, validator=positive)
        """Largest request body accepted (413 above)."""
        rate_limit: float = attrs.field(default=50.0, validator=non_negative)
        """Requests per second per client address (429 above; 0: no limit)."""
        rate_burst: int = attrs.field(default=200, validator=positive)
        """Requests a client may make at once before the rate applies."""
        cors_origins: list[str] = attrs.Factory(list)
        """Origins allowed to call the API from a browser page of theirs (default: none)."""
        enforce_runtime_dir: str = ""
        """Directory of the enforce state file (default: the enforce action's, else
        ``$KESTREL_RUNTIME_DIR``, else ``/run/kestrel``)."""

    def __init__(self, settings: Any, context: "RunContext") -> None:
        super().__init__(settings, context)
        self.store: SqliteAlertStore | None = None
        self.hub = Hub()
        self.rate = _EventRate()
        self.bound_address: str | None = None
        self.token: str | None = None
        self.token_path: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._uncommitted: list[dict[str, Any]] = []
        self._prune_every = 1000
        self._since_prune = 0
        self._host_fid = self._container_fids = None

    @classmethod
    def probe(cls) -> Probe:
        missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            return Probe.missing(f"{' and '.join(missing)} not installed (pip install {' '.join(missing)})")
        return Probe.ok()

    @property
    def url(self) -> str | None:
        return None if self.bound_address is None else f"http://{self.bound_address}"

    def _resolve(self, path: str) -> str:
        profile = getattr(self.context, "profile", None)
        return str(profile.resolve_path(path)) if profile is not None else os.path.abspath(path)

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        if self._server is not None:
            return
        s = self.settings
        host, port = parse_address(s.address)
        loopback = is_loopback(host)
        store_path = self._resolve(s.path)
        # -- token (before anything is created, so a refusal leaves nothing behind)
        if s.token:
            if len(s.token) < 16:
                raise ConfigError("sink api: token must be at least 16 characters")
            self.token = s.token
        elif not s.token_file and not loopback:
            raise ConfigError(
                f"sink api: address {s.address} is not loopback, so the API needs a bearer token: set "
                f"token = \"...\" or token_file = \"...\" (a token is generated there, mode 0600, on first start) "
                f"in the [[sinks]] table of type \"api\"")
        try:
            self.store = SqliteAlertStore(store_path, synchronous=s.synchronous,
                                          max_age_s=s.retention_days * 86400 if s.retention_days else None,
                                          max_alerts=s.retention_max_alerts or None)
        except StoreError as exc:
            raise ConfigError(f"sink api: {exc}") from None
        try:
            if self.token is None:
                self.token_path = self._resolve(s.token_file) if s.token_file else store_path + ".token"
                self.token, created = load_or_create_token(self.token_path)
                if created:
                    self.context.log.info("api sink: generated an API token in %s (mode 0600)", self.token_path)
            pruned = self.store.prune()
            if pruned:
                self.context.log.info("api sink: retention deleted %d alerts", pruned)
            self._bind(host, port)
            self._start()
        except BaseException:
            self.close()
            raise
        self.context.log.info("api sink: console and API at %s (store %s, %d alerts)", self.url, store_path,
                              self.store.count())

    def _bind(self, host: str, port: int) -> None:
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE)[0]
            # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on such sockets; without it a
            # keep-alive response waits ~40 ms for the client's delayed ACK (Nagle)
            sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(128)
        except OSError as exc:
            error = OSError(exc.errno, f"api sink: cannot listen on {self.settings.address}: {exc.strerror or exc}")
            raise error from exc
        sock.set_inheritable(False)
        self._sock = sock
        h, p = sock.getsockname()[:2]
        self.bound_address = f"[{h}]:{p}" if family == socket.AF_INET6 else f"{h}:{p}"

    def _enforce_switch(self) -> tuple[Any, str]:
        try:
            from kestrel_actions_enforce.control import DEFAULT_RUNTIME_DIR, set_enforcement
        except ImportError:
            return None, "the actions-enforce plugin (kestrel-edr-actions-enforce) is not installed"
        runtime_dir = self.settings.enforce_runtime_dir
        if runtime_dir:
            runtime_dir = self._resolve(runtime_dir)
        else:
            for action in (getattr(self.context, "components", None) or {}).get("action", []):
                rd = getattr(getattr(action, "settings", None), "runtime_dir", None)
                if rd:
                    resolve = getattr(action, "_resolve", None)
                    runtime_dir = resolve(rd) if callable(resolve) else rd
                    break
            runtime_dir = runtime_dir or os.environ.get("KESTREL_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR
        return (lambda enabled: set_enforcement(enabled, runtime_dir)), ""

    def _start(self) -> None:
        import uvicorn

        from .app import ApiState, build_asgi

        s = self.settings
        host, _ = parse_address(s.address)
        enforce, why = self._enforce_switch()
        sources = [{"name": getattr(src, "name", src.PLUGIN_NAME), "type": src.PLUGIN_NAME}
                   for src in (getattr(self.context, "components", None) or {}).get("source", [])]
        state = ApiState(store=self.store, hub=self.hub, token=self.token,
                         auth_reads=s.auth == "always" or not is_loopback(host), context=self.context,
                         heartbeat_s=s.heartbeat_s, max_body_bytes=s.max_body_bytes,
                         rate=RateLimiter(s.rate_limit, s.rate_burst), cors_origins=tuple(s.cors_origins),
                         enforce=enforce, enforce_unavailable=why, events_rate=self.rate.rate, sources=sources)
        self.state = state
        hub = self.hub

        asgi = build_asgi(state)
        config = uvicorn.Config(asgi, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, limit_concurrency=1000, h11_max_incomplete_event_size=65536,
                                timeout_keep_alive=5)
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # the run owns SIGINT/SIGTERM (older uvicorn)
        self._server = server
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            import asyncio

            async def main() -> None:
                hub.bind(asyncio.get_running_loop())
                started.set()
                await server.serve(sockets=[self._sock])

            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - reported by open() or logged
                failure.append(exc)
                started.set()
                self.context.log.error("api sink: server stopped: %s: %s", type(exc).__name__, exc)

        self._thread = threading.Thread(target=serve, name=f"kestrel-api {self.bound_address}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not (server.started or failure):
            if time.monotonic() > deadline:
                raise RuntimeError("sink api: the HTTP server did not start within 15 s")
            time.sleep(0.005)
        if failure:
            raise RuntimeError(f"sink api: the HTTP server failed to start: {failure[0]}")

    # ------------------------------------------------------------------ data

    def _field(self, alert: "Alert", paths: Sequence[str]) -> str | None:
        schema = self.context.schema
        for event in reversed(alert.events):
            for path in paths:
                value = event.get(schema.resolve(path))
                if value not in (None, ""):
                    return str(value)
        return None

    def write_alert(self, alert: "Alert") -> None:
        if self.store is None:
            raise RuntimeError("sink api: write_alert before open")
        doc = alert.to_dict(self.context.schema)
        doc["description"] = alert.description
        doc["rule"]["pack"] = alert.pack
        doc["evidence"] = [{"category": e.category, "ts_ns": e.ts_wall_ns, "event_id": e.event_id,
                            "source": e.source_id} for e in alert.events]
        per_alert = self.settings.commit == "alert"
        summary = self.store.add(NewAlert(ts_ns=alert.ts_wall_ns or time.time_ns(), rule_id=alert.rule_id,
                                rule_name=alert.rule_name, severity=alert.severity,
                                host=self._field(alert, ("host.name", "host.hostname")),
                                container=self._field(alert, ("container.id", "container.name")), doc=doc),
                       commit=per_alert)
        self._uncommitted.append(summary)
        if per_alert or len(self._uncommitted) >= MAX_PENDING:
            self._publish()
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self._since_prune = 0
            self.store.prune()

    def write_events(self, events: Sequence["Event"]) -> None:
        self.rate.add(len(events))
        if self.hub.wants_events():
            schema = self.context.schema
            self.hub.publish_events([e.to_ecs(schema) for e in events])

    def _publish(self) -> None:
        """Commit, then hand the committed alerts to the streams (formatted once) and wake them."""
        self.store.commit()
        done, self._uncommitted = self._uncommitted, []
        if done:
            self.hub.recent.extend([(a["seq"], sse(envelope("alert", a, a["container"]), a["seq"])) for a in done])
            self.hub.notify()

    def flush(self) -> None:
        """Commit the alerts written since the last flush (one fsync), then wake the streams."""
        if self.store is not None and (self._uncommitted or self.store.pending):
            self._publish()

    def close(self) -> None:
        """Stop the server (streams end), then close the store.  Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if self.store is not None:
            self._publish()
        self.hub.close()
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.store is not None:
            self.store.close()
            self.store = None
