"""Generalisation: what the baseline learns is a *shape*, not the literal
value, so a process that passes a new pid, a temp file name or a request id
every time is still recognised.

* argument shapes: numbers -> ``<n>``, hex runs of 8+ and UUIDs -> ``<hex>``,
  IPv4/IPv6 addresses -> ``<ip>``, anything under a world-writable temp
  directory -> ``/tmp/*``; long arguments are cut;
* path prefixes: the file's directory, generalised the same way, cut to
  ``path_depth`` components (``/var/log/nginx``);
* peers: the destination address (or its ``/prefix`` network) and port.
"""

from __future__ import annotations

import functools
import ipaddress
import re

TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/user")
"""World-writable (or per-session) directories whose entries are throwaway names."""
MAX_ARGS = 16
"""Arguments after argv[0] that make a shape; more are shown as ``+N``."""
MAX_ARG_CHARS = 48
MAX_SHAPE_CHARS = 240

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX = re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*[0-9])[0-9a-fA-F]{8,}(?![0-9A-Za-z])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
_NUM = re.compile(r"\d+")


def _tokens(text: str) -> str:
    text = _UUID.sub("<hex>", text)
    text = _IPV4.sub("<ip>", text)
    if text.count(":") >= 2:
        text = _IPV6.sub("<ip>", text)
    text = _HEX.sub("<hex>", text)
    return _NUM.sub("<n>", text)


def _temp_root(path: str) -> str | None:
    for root in TEMP_DIRS:
        if path == root or path.startswith(root + "/"):
            return root
    return None


@functools.lru_cache(maxsize=65536)
def arg_shape(arg: str) -> str:
    """One argument's shape: ``--port=8080`` -> ``--port=<n>``,
    ``/tmp/pip-abc/x.py`` -> ``/tmp/*``."""
    root = _temp_root(arg) if arg.startswith("/") else None
    if root is not None:
        return root if arg == root else root + "/*"
    shape = _tokens(arg)
    return shape if len(shape) <= MAX_ARG_CHARS else shape[:MAX_ARG_CHARS] + "…"


def args_shape(args: list[str] | tuple[str, ...] | None) -> str:
    """The shape of a command line's arguments after argv[0] (``""``: none)."""
    if not args:
        return ""
    rest = [arg_shape(a) for a in args[1:1 + MAX_ARGS] if isinstance(a, str)]
    extra = len(args) - 1 - MAX_ARGS
    shape = " ".join(rest) + (f" +{extra}" if extra > 0 else "")
    return shape if len(shape) <= MAX_SHAPE_CHARS else shape[:MAX_SHAPE_CHARS] + "…"


@functools.lru_cache(maxsize=65536)
def path_prefix(path: str, depth: int) -> str:
    """The learned prefix of a file path: its directory, generalised, cut to
    ``depth`` components (``/var/log/nginx/access.log`` -> ``/var/log/nginx``;
    ``/tmp/tmp.Qx81Tb/kworkerd`` -> ``/tmp/*``; ``/proc/4242/status`` ->
    ``/proc/<n>``).  A relative path is kept relative (``./``)."""
    absolute = path.startswith("/")
    root = _temp_root(path) if absolute else None
    if root is not None:
        parent = path.rsplit("/", 1)[0] or "/"
        return root if parent == root or path == root else root + "/*"
    parts = [p for p in path.split("/") if p]
    parts = parts[:-1]  # the directory, not the file
    shaped = [_tokens(p) for p in parts[:depth]]
    if not shaped:
        return "/" if absolute else "."
    return ("/" if absolute else "./") + "/".join(shaped)


@functools.lru_cache(maxsize=65536)
def peer_key(ip: str, port: int | None, ipv4_prefix: int, ipv6_prefix: int, with_port: bool) -> str:
    """``203.0.113.45:443``, or with a prefix ``203.0.113.0/24:443``; IPv6 as ``[2001:db8::1]:443``."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        host = ip
    else:
        bits = ipv4_prefix if addr.version == 4 else ipv6_prefix
        if bits < addr.max_prefixlen:
            net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
            host = str(net)
        else:
            host = str(addr)
        if addr.version == 6:
            host = f"[{host}]"
    if with_port and port is not None:
        return f"{host}:{port}"
    return host


def common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
