"""Bearer tokens and the loopback rule (shared with other listeners: kestrel_core.localauth) and a
per-client rate limit."""

from __future__ import annotations

import threading
import time

from kestrel_core import localauth
from kestrel_core.localauth import is_loopback, token_matches

__all__ = ["ConfigError", "RateLimiter", "is_loopback", "load_or_create_token", "token_matches"]


class ConfigError(ValueError):
    """A setting combination the API server refuses to start with."""


def load_or_create_token(path: str) -> tuple[str, bool]:
    """:func:`kestrel_core.localauth.load_or_create_token`, its refusals as ConfigError."""
    try:
        return localauth.load_or_create_token(path)
    except localauth.TokenFileError as exc:
        raise ConfigError(str(exc)) from None


class RateLimiter:
    """Token bucket per client address: ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10000) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, client: str, now: float | None = None) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            if len(self._buckets) >= self.max_clients and client not in self._buckets:
                # forget the fullest buckets: they belong to clients at rest
                for key in [k for k, (t, _) in self._buckets.items() if t >= self.burst - 1][: self.max_clients // 2]:
                    del self._buckets[key]
            self._buckets[client] = (tokens, now)
            return ok
