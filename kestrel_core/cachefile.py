"""Cache files Kestrel keeps between starts (compiled IR and code, matcher
automata): an input like any other, so each is trusted only the way CPython
trusts ``__pycache__``: the directory and the file belong to the user running
Kestrel, are not symbolic links and are not writable by group or others.
Otherwise the cache is neither read nor written (with a warning), since what
it holds decides which rules match.  Writes are atomic (a temporary file in
the same directory, mode 0600, renamed over the old one)."""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("kestrel")


def untrusted(path: Path) -> str | None:
    """Why ``path`` (a directory or file) must not be trusted, or None (also when it does not exist yet)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to this user"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "it is writable by group or others"
    return None


def read(path: Path, what: str) -> bytes | None:
    """The bytes of cache file ``path``, or None when it does not exist or
    cannot be read (logged, naming ``what``).  Trust is checked by the caller,
    once, when it opens the cache (:func:`untrusted`)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s %s is unreadable (%s): ignored", what, path, exc)
        return None


def write(path: Path, data: bytes, what: str) -> bool:
    """Replace ``path`` with ``data`` atomically, creating its directory (mode
    0700); refused, with a warning, when the directory is not trusted."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = untrusted(directory)
        if why:
            log.warning("%s %s is not written: %s", what, directory, why)
            return False
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.stem}-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return True
    except OSError as exc:
        log.warning("%s %s could not be written (%s)", what, path, exc)
        return False
