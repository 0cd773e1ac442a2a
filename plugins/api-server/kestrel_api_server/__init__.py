"""Kestrel plugin ``api-server``: the ``api`` sink (durable alert store,
REST + SSE alert API, web console)."""

from .security import ConfigError
from .sink import ApiSink, parse_address
from .store import AlertFilter, AlertStore, NewAlert, SqliteAlertStore, StoreError

__all__ = ["AlertFilter", "AlertStore", "ApiSink", "ConfigError", "NewAlert", "SqliteAlertStore", "StoreError",
           "parse_address"]
