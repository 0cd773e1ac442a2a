"""``host:port`` parsing for the listen address."""

from __future__ import annotations

import ipaddress


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 hosts in brackets: ``[::1]:9464``).

    Port 0 asks the OS for a free port.  Raises ValueError naming the
    address and what is wrong with it.
    """
    if not isinstance(address, str):
        raise ValueError(f"address must be a string 'host:port', got {type(address).__name__}")

    def bad(why: str) -> ValueError:
        return ValueError(f"invalid address {address!r}: {why} (expected 'host:port', e.g. '127.0.0.1:9464' or '[::1]:9464')")

    if address != address.strip() or not address:
        raise bad("empty or surrounded by whitespace")
    if address.startswith("["):
        close = address.find("]")
        if close < 0:
            raise bad("'[' without a closing ']'")
        host, rest = address[1:close], address[close + 1 :]
        if not rest.startswith(":"):
            raise bad("missing ':port' after the bracketed IPv6 host")
        port_text = rest[1:]
        try:
            if ipaddress.ip_address(host.split("%", 1)[0]).version != 6:
                raise bad("brackets are only for IPv6 hosts")
        except ValueError as exc:
            if "brackets are only" in str(exc):
                raise
            raise bad(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise bad("missing ':port'")
        if ":" in host:
            raise bad("an IPv6 host must be written in brackets")
    if not host:
        raise bad("missing host (use 0.0.0.0 or [::] to listen on every interface)")
    if not port_text.isascii() or not port_text.isdigit():
        raise bad(f"port {port_text!r} is not a number")
    port = int(port_text)
    if port > 65535:
        raise bad(f"port {port} is out of range 0-65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """Inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
