"""Compiled modules cached by rule-set hash: in memory (per process), and on
disk as wasmtime's serialized native code.

The key is the SHA-256 of the module's WAT text, the engine configuration it
was compiled for and the wasmtime version, so a changed rule set, setting or
wasmtime never reuses a stale module.  A disk entry is
``KWC1 | sha256(payload) | payload``; one whose digest does not match, or
that wasmtime refuses, is *damaged*: it is ignored with a warning, the module
compiled again and the entry rewritten (atomically: temp file + rename).

``Module.deserialize`` trusts its bytes as machine code, so an entry is only
read from a directory owned by this user and not writable by group or
others, and never in strict mode (the caller passes ``disk=False``).
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("kestrel.runtime.wasm")

MAGIC = b"KWC1"
MEMORY_ENTRIES = 32
"""Modules kept in memory (least recently used dropped first): a hot reload compiles a new rule set."""
_LOCK = threading.Lock()
_MEMORY: "OrderedDict[str, Any]" = OrderedDict()
stats = {"memory_hits": 0, "disk_hits": 0, "compiles": 0, "damaged": 0}
"""Counters for tests and the README's measurements."""


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kestrel" / "wasm"


def key_of(wat: str, engine_key: str, version: str) -> str:
    h = hashlib.sha256()
    for part in (version, engine_key, wat):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _dir_is_private(d: Path) -> bool:
    try:
        st = d.stat()
    except OSError:
        return False
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def get_module(key: str, engine: Any, compile_fn: Callable[[], Any], *, disk_dir: Path | None) -> Any:
    """The module for ``key``: from memory, else from ``disk_dir`` (when
    given and private), else ``compile_fn()`` (then stored in both)."""
    import wasmtime

    with _LOCK:
        mod = _MEMORY.get(key)
        if mod is not None:
            _MEMORY.move_to_end(key)
            stats["memory_hits"] += 1
            return mod
    path = disk_dir / f"{key}.cwasm" if disk_dir is not None else None
    mod = None
    if path is not None and path.exists() and _dir_is_private(disk_dir):
        try:
            data = path.read_bytes()
            if data[:4] != MAGIC or hashlib.sha256(data[36:]).digest() != data[4:36]:
                raise ValueError("checksum mismatch")
            mod = wasmtime.Module.deserialize(engine, data[36:])
            stats["disk_hits"] += 1
        except Exception as exc:  # damaged or from another build: ignore it, compile again
            stats["damaged"] += 1
            log.warning("wasm module cache entry %s is damaged (%s): ignored, compiling the rule set again", path, exc)
            mod = None
    if mod is None:
        mod = compile_fn()
        stats["compiles"] += 1
        if path is not None:
            _store(path, mod)
    with _LOCK:
        _MEMORY[key] = mod
        while len(_MEMORY) > MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
    return mod


def _store(path: Path, mod: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not _dir_is_private(path.parent):
            log.warning("wasm module cache %s is not private to this user: not writing to it", path.parent)
            return
        payload = bytes(mod.serialize())
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only or full disk: the memory cache still works
        log.warning("cannot write the wasm module cache %s: %s", path, exc)


def clear_memory() -> None:
    with _LOCK:
        _MEMORY.clear()


atexit.register(clear_memory)  # drop modules while wasmtime's bindings still exist (not in interpreter teardown)
