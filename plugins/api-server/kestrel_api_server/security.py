"""Bearer tokens, the loopback rule and a per-client rate limit."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import threading
import time


class ConfigError(ValueError):
    """A setting combination the API server refuses to start with."""


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addrs)


def load_or_create_token(path: str) -> tuple[str, bool]:
    """The token in ``path``; a new one written there (mode 0600, created
    exclusively) if the file does not exist.  Returns ``(token, created)``.
    Refuses a token file other users can read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"token file {path} is readable by others (mode {mode:o}); chmod 600 it") from None
        with open(path, encoding="ascii") as fh:
            token = fh.read().strip()
        if len(token) < 16:
            raise ConfigError(f"token file {path} holds no token of at least 16 characters") from None
        return token, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return token, True


def token_matches(header: str | None, token: str) -> bool:
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


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
