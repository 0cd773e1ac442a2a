"""The ``prometheus`` sink: a small threaded HTTP server exposing the run's
counters on ``/metrics``.

The sink keeps no counts of its own.  A collector reads ``context.stats``
whenever Prometheus scrapes, so the numbers are exactly the engine's.
``prometheus_client`` is imported only when the sink opens, so ``probe()``
can report it missing instead of the plugin failing to import.
"""

from __future__ import annotations

import importlib.util
import socket
import socketserver
import threading
from typing import TYPE_CHECKING, Any, Sequence
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import attrs

from kestrel_core.interfaces import Probe, Sink

from .address import format_address, parse_address

if TYPE_CHECKING:  # pragma: no cover
    from kestrel_core.alert import Alert
    from kestrel_core.event import Event
    from kestrel_core.runtime import RunContext


class MetricsBindError(OSError):
    """The metrics endpoint could not listen on its address."""


def _validate_address(instance: Any, attribute: Any, value: str) -> None:
    try:
        parse_address(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _validate_path(instance: Any, attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "?# \t\r\n"):
        raise ValueError(f"invalid path {value!r}: must start with '/' and hold no '?', '#' or whitespace")


class _QuietHandler(WSGIRequestHandler):
    timeout = 30  # seconds; an idle or stalled client does not hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # a scrape every few seconds is not worth a log line


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can stall start-up for seconds; the name is only cosmetic.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


def _server_class(family: int) -> type[_Server]:
    return type("_Server6" if family == socket.AF_INET6 else "_Server4", (_Server,), {"address_family": family})


class PrometheusSink(Sink):
    """Serves ``context.stats`` as Prometheus metrics over HTTP."""

    PLUGIN_NAME = "prometheus"
    DESCRIPTION = "Prometheus /metrics endpoint for events, drops, alerts, evictions and engine gauges"

    @attrs.define(kw_only=True)
    class Settings:
        address: str = attrs.field(default="127.0.0.1:9464", validator=_validate_address)
        """``host:port`` to listen on; IPv6 hosts in brackets (``[::1]:9464``); port 0 picks a free port."""
        path: str = attrs.field(default="/metrics", validator=_validate_path)
        """URL path of the metrics page."""

    def __init__(self, settings: Any, context: "RunContext") -> None:
        super().__init__(settings, context)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.registry: Any = None
        self.bound_address: str | None = None
        """``host:port`` actually listened on (the real port when 0 was asked), once open."""

    @classmethod
    def probe(cls) -> Probe:
        if importlib.util.find_spec("prometheus_client") is None:
            return Probe.missing("prometheus_client is not installed (pip install prometheus-client)")
        return Probe.ok()

    @property
    def url(self) -> str | None:
        """Full URL of the metrics page, once open."""
        return None if self.bound_address is None else f"http://{self.bound_address}{self.settings.path}"

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        if self._server is not None:
            return
        from prometheus_client import CollectorRegistry, make_wsgi_app

        from .collector import StatsCollector

        # A registry of our own: the process-global one would mix runs (and
        # tests) and carry the client library's process/platform metrics.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(lambda: self.context.stats, self.context.log))
        metrics_app = make_wsgi_app(self.registry)
        path = self.settings.path

        def app(environ: dict, start_response: Any) -> list[bytes]:
            if environ.get("PATH_INFO") in (path, path + "/"):
                return metrics_app(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"Not found. Kestrel metrics are at {path}\n".encode()]

        address = self.settings.address
        host, port = parse_address(address)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, *_, sockaddr = infos[0]
            server = _server_class(family)(sockaddr[:2] if family == socket.AF_INET else sockaddr, _QuietHandler)
        except OSError as exc:
            error = MetricsBindError(f"sink prometheus: cannot listen on {address}: {exc.strerror or exc}")
            error.errno = exc.errno
            raise error from exc
        server.set_app(app)
        self._server = server
        self.bound_address = format_address(*server.server_address[:2])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=f"kestrel-prometheus {self.bound_address}", daemon=True
        )
        self._thread.start()
        self.context.log.info("prometheus sink: metrics at %s", self.url)

    def write_alert(self, alert: "Alert") -> None:
        """Nothing to do: the engine counts alerts in ``context.stats.alerts``."""

    def write_events(self, events: Sequence["Event"]) -> None:
        """Nothing to do: the engine counts events in ``context.stats``."""

    def close(self) -> None:
        """Stop serving and release the port.  Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()  # waits for serve_forever to return
        server.server_close()
        if thread is not None:
            thread.join()
