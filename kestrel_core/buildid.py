"""One id for the exact engine code that runs: replay output headers, the
compile caches (a cached artifact from other code is never trusted) and the
Prometheus build-info metric name it."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from . import __version__


@lru_cache(maxsize=1)
def engine_build_id() -> str:
    """sha256 over the kestrel_core sources (relative path and bytes, sorted)
    and the version: any change to the engine gives another id."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"kestrel {__version__}\0".encode())
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".lark")
                   and "__pycache__" not in p.parts)
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()
