"""Persistent compile cache: the key analysis of each predicate, on disk.

One JSON file per engine build (``acdfa-<build>.json`` in ``cache_dir``),
entries keyed by the sha256 of the predicate's compiled IR (which holds the
rule text's structure and the field ids), so a pack restarts without
analysing its patterns again.  A file that is unreadable, not JSON, of
another format version or with malformed entries is ignored with a warning
and rewritten: it is never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

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
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("acdfa compile cache %s is unreadable (%s): ignored", self.path, exc)
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
        if not self.dirty:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".acdfa-", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump({"format": FORMAT, "build": self.build, "entries": self.entries}, fh)
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError as exc:
            log.warning("acdfa compile cache %s could not be written (%s)", self.path, exc)
