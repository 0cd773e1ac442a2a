"""Persistent compile cache: the key analysis of each predicate, on disk.

One JSON file per engine build (``acdfa-<build>.json`` in ``cache_dir``),
entries keyed by the sha256 of the predicate's compiled IR (which holds the
rule text's structure and the field ids), so a pack restarts without
analysing its patterns again.  A file that is unreadable, not JSON, of
another format version or with malformed entries is ignored with a warning
and rewritten: it is never trusted.  A directory or file others could have
written is not used at all (:mod:`kestrel_core.cachefile`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kestrel_core import cachefile
from kestrel_core.cachefile import untrusted
from kestrel_core.eql import literals as L

log = logging.getLogger("kestrel")

FORMAT = 1


def _build_id() -> str:
    from kestrel_core.buildid import engine_build_id

    from . import __version__

    return f"{engine_build_id()[:16]}-{__version__}"


class CompileCache:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).expanduser()
        self.build = _build_id()
        self.path = self.dir / f"acdfa-{self.build}.json"
        self.entries: dict[str, Any] = {}
        self.hits = self.misses = 0
        self.dirty = False
        self.disabled = untrusted(self.dir) or untrusted(self.path)
        """Why the cache is not used at all ('' when it is): its entries pick the
        literals that gate rules, so a file others can write is never read."""
        if self.disabled:
            log.warning("acdfa compile cache %s is not used: %s", self.dir, self.disabled)
            return
        self._load()

    def _load(self) -> None:
        raw = cachefile.read(self.path, "acdfa compile cache")
        if raw is None:
            return
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("build") != self.build:
                raise ValueError("another format or build")
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise ValueError("entries is not a table")
            for h, opts in entries.items():
                if not isinstance(opts, list):
                    raise ValueError(f"entry {h[:12]} is not a list")
                [L.key_from_json(k) for k in opts]  # validate every entry before trusting any
            self.entries = entries
        except Exception as exc:  # damaged: never trusted
            log.warning("acdfa compile cache %s is damaged (%s): ignored, it will be rebuilt", self.path, exc)
            self.entries = {}
            self.dirty = True

    def get(self, h: str) -> list[L.Key] | None:
        opts = self.entries.get(h)
        if opts is None:
            self.misses += 1
            return None
        self.hits += 1
        return [k for k in (L.key_from_json(x) for x in opts) if k is not None]

    def put(self, h: str, opts: list[L.Key]) -> None:
        self.entries[h] = [L.key_to_json(k) for k in opts]
        self.dirty = True

    def save(self) -> None:
        if not self.dirty or self.disabled:
            return
        data = json.dumps({"format": FORMAT, "build": self.build, "entries": self.entries}).encode()
        if cachefile.write(self.path, data, "acdfa compile cache"):
            self.dirty = False
