"""What user space adds to an exec from the new image and its environment:
``process.hash.sha256`` and the allow-listed ``process.env_vars`` (from the
environment the kernel program copied into the exec record).

Hashes are cached by (device, inode, mtime, size): a host execs the same few
binaries over and over, so only the first exec of each file version reads
it.  The image is read through /proc/<pid>/exe, which is the file the
process runs even if its path was replaced or removed since; a process gone
before its exec was decoded falls back to the resolved path, checked against
the same key.
"""

from __future__ import annotations

import collections
import hashlib
import os

DEFAULT_ENV_VARS = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GLIBC_TUNABLES", "http_proxy", "https_proxy",
                    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy", "RUNNER_TRACKING_ID")
"""Variables published Linux rules test (dynamic-linker hijacking, glibc tunables exploits, SOCKS
tunnelling, CI runners): the default of the source's ``env_vars`` setting."""


class ExeHasher:
    """sha256 of executables, bounded LRU keyed by file identity."""

    def __init__(self, capacity: int = 4096, max_bytes: int = 64 << 20) -> None:
        self.capacity, self.max_bytes = capacity, max_bytes
        self.cache: collections.OrderedDict[tuple[int, int, int, int], str] = collections.OrderedDict()
        self.hashed = 0
        """Files read and hashed (cache misses)."""
        self.skipped = 0
        """Images not hashed: larger than ``max_bytes`` or unreadable."""

    def digest(self, pid: int, path: str) -> str | None:
        for candidate in (f"/proc/{pid}/exe", path):
            if not candidate:
                continue
            try:
                with open(candidate, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
                    hit = self.cache.get(key)
                    if hit is not None:
                        self.cache.move_to_end(key)
                        return hit
                    if st.st_size > self.max_bytes:
                        self.skipped += 1
                        return None
                    value = hashlib.file_digest(fh, "sha256").hexdigest()
            except OSError:
                continue
            self.hashed += 1
            self.cache[key] = value
            if len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
            return value
        self.skipped += 1
        return None


def env_vars(raw: bytes, allowed: frozenset[str]) -> list[str]:
    """``KEY=VALUE`` of the allow-listed variables in an environment block
    (NUL-separated, as the kernel copied it at exec: the first 4 KiB)."""
    if not allowed or not raw:
        return []
    out = []
    for entry in raw.split(b"\0"):
        key, sep, _ = entry.partition(b"=")
        if sep and key.decode("utf-8", "replace") in allowed:
            out.append(entry.decode("utf-8", "replace"))
    return out
