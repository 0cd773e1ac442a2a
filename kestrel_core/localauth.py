"""Authentication for the HTTP listeners plugins open on a host (the API
server's sink, the Falco source's http_output receiver): whether a listen
address is loopback-only, a shared-secret token kept in a file only its owner
can read, and a constant-time check of the token a request presents."""

from __future__ import annotations

import base64
import hmac
import ipaddress
import os
import secrets
import socket


class TokenFileError(ValueError):
    """A token file that cannot be used (readable by others, or too short a token)."""


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
    exclusively, synced) if the file does not exist.  Returns ``(token,
    created)``.  Refuses a token file other users can read."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = os.stat(path).st_mode & 0o777
        if mode & 0o077:
            raise TokenFileError(f"token file {path} is readable by others (mode {mode:o}); chmod 600 it") from None
        with open(path, encoding="ascii") as fh:
            token = fh.read().strip()
        if len(token) < 16:
            raise TokenFileError(f"token file {path} holds no token of at least 16 characters") from None
        return token, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return token, True


def token_matches(header: str | None, token: str, *, basic: bool = False) -> bool:
    """Whether an ``Authorization`` header carries ``token``: ``Bearer TOKEN``,
    or with ``basic`` also HTTP Basic with TOKEN as the password (what libcurl
    sends for ``http://user:TOKEN@host:port/``; Falco's http_output can set no
    other header).  Compared in constant time."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    elif basic and scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), token.encode())
