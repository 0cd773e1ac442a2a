"""fanotify in FID mode: creations, deletions, renames and attribute changes.

fd-mode notifications (``kestrel_sources_fanotify.fanotify``) cannot report
directory-entry events; those need a group initialised with
``FAN_REPORT_DFID_NAME`` (kernel >= 5.9), whose events name the parent
directory by file handle plus the entry name.  The handle is turned back into
a path with ``open_by_handle_at`` (CAP_DAC_READ_SEARCH) against a descriptor
on the same filesystem, then ``readlink`` of ``/proc/self/fd/N``.

The init/mark calls and constants come from the fanotify plugin; only the
FID record parsing and handle resolution live here (that module has none).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time
from collections.abc import Iterable

import attrs
from kestrel_sources_fanotify import fanotify as fan

FAN_REPORT_FID = 0x00000200
FAN_REPORT_DIR_FID = 0x00000400
FAN_REPORT_NAME = 0x00000800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME
FAN_RENAME = 0x10000000  # kernel >= 5.17: old and new name in one event

FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = 12

_METADATA = struct.Struct("=IBBHQii")
_INFO_HEADER = struct.Struct("=BBH")  # info_type, pad, len
_FSID = struct.Struct("=8s")
_HANDLE_HEADER = struct.Struct("=Ii")  # handle_bytes, handle_type
_READ_SIZE = 64 * 1024

_libc: ctypes.CDLL | None = None


def _open_by_handle_at() -> ctypes._CFuncPtr:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)
        lib.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.open_by_handle_at.restype = ctypes.c_int
        _libc = lib
    return _libc.open_by_handle_at


@attrs.define(slots=True)
class DirEntryEvent:
    """One FID-mode event: ``path`` is the entry (``old_path`` for renames)."""

    mask: int
    pid: int
    path: str
    ts_wall_ns: int
    ts_mono_ns: int
    old_path: str = ""


class HandleResolver:
    """fsid + file handle -> directory path, via a descriptor per filesystem."""

    def __init__(self, mount_paths: Iterable[str]) -> None:
        self._mount_fds: list[int] = []
        self._by_fsid: dict[bytes, int] = {}
        for path in mount_paths:
            self._mount_fds.append(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    def resolve(self, fsid: bytes, handle: bytes) -> str:
        """Directory path for ``handle`` ("" if it is gone or on no known filesystem)."""
        call = _open_by_handle_at()
        known = self._by_fsid.get(fsid)
        candidates = [known] if known is not None else self._mount_fds
        for mount_fd in candidates:
            fd = call(mount_fd, handle, os.O_PATH | os.O_CLOEXEC)
            if fd < 0:
                if ctypes.get_errno() in (errno.ESTALE, errno.ENOENT) and known is not None:
                    return ""  # the directory itself was removed
                continue
            try:
                self._by_fsid.setdefault(fsid, mount_fd)
                return os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                return ""
            finally:
                os.close(fd)
        return ""

    def close(self) -> None:
        for fd in self._mount_fds:
            os.close(fd)
        self._mount_fds.clear()


def parse_info_records(buf: bytes, start: int, end: int) -> list[tuple[int, bytes, bytes, str]]:
    """Info records of one event -> ``(info_type, fsid, handle, name)`` each;
    ``handle`` is the full ``struct file_handle`` as open_by_handle_at wants it."""
    out = []
    offset = start
    while offset + _INFO_HEADER.size <= end:
        info_type, _pad, length = _INFO_HEADER.unpack_from(buf, offset)
        if length < _INFO_HEADER.size:
            break
        body = offset + _INFO_HEADER.size
        if info_type in (FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_DFID, FAN_EVENT_INFO_TYPE_DFID_NAME,
                         FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME):
            fsid = buf[body:body + _FSID.size]
            hbody = body + _FSID.size
            handle_bytes, _htype = _HANDLE_HEADER.unpack_from(buf, hbody)
            hend = hbody + _HANDLE_HEADER.size + handle_bytes
            handle = buf[hbody:hend]
            name = ""
            if info_type not in (FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_DFID):
                raw = buf[hend:offset + length]
                name = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            out.append((info_type, fsid, handle, name))
        offset += length
    return out


class DirEntryWatch:
    """A FAN_REPORT_DFID_NAME group with filesystem marks."""

    def __init__(self, mask: int, mount_paths: list[str]) -> None:
        self.mask = mask
        self.overflows = 0
        self._fd = fan.fanotify_init(fan.FAN_CLASS_NOTIF | fan.FAN_CLOEXEC | fan.FAN_NONBLOCK | FAN_REPORT_DFID_NAME)
        try:
            for path in mount_paths:
                fan.fanotify_mark(self._fd, fan.FAN_MARK_ADD | fan.FAN_MARK_FILESYSTEM, mask, path)
            self.resolver = HandleResolver(mount_paths)
        except BaseException:
            os.close(self._fd)
            raise

    def fileno(self) -> int:
        return self._fd

    def read(self, timeout_s: float) -> list[DirEntryEvent]:
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        return self.read_batch()[0] if ready else []

    def read_batch(self) -> tuple[list[DirEntryEvent], bool]:
        """What is queued now, and whether that emptied the queue."""
        try:
            buf = os.read(self._fd, _READ_SIZE)
        except BlockingIOError:
            return [], True
        wall, mono = time.time_ns(), time.monotonic_ns()
        out: list[DirEntryEvent] = []
        offset = 0
        while offset + _METADATA.size <= len(buf):
            event_len, _vers, _res, meta_len, mask, _fd, pid = _METADATA.unpack_from(buf, offset)
            if event_len < _METADATA.size:
                break
            end = offset + event_len
            if mask & fan.FAN_Q_OVERFLOW:
                self.overflows += 1
            else:
                paths: dict[int, str] = {}
                for info_type, fsid, handle, name in parse_info_records(buf, offset + meta_len, end):
                    directory = self.resolver.resolve(fsid, handle)
                    if directory:
                        paths[info_type] = os.path.join(directory, name) if name else directory
                new = paths.get(FAN_EVENT_INFO_TYPE_NEW_DFID_NAME) or paths.get(FAN_EVENT_INFO_TYPE_DFID_NAME, "")
                old = paths.get(FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, "")
                out.append(DirEntryEvent(mask, pid, new, wall, mono, old))
            offset = end
        # The kernel fills a read with whole events only: a read well short
        # of the buffer took everything there was.
        return out, len(buf) < _READ_SIZE // 2

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self.resolver.close()


def probe(path: str = "/") -> tuple[int, str]:
    """Which directory-entry events work on ``path``'s filesystem here?
    Returns (the usable mask, a reason naming what works or why not)."""
    wanted = fan.FAN_ATTRIB | fan.FAN_CREATE | fan.FAN_DELETE | FAN_RENAME
    try:
        fd = fan.fanotify_init(fan.FAN_CLASS_NOTIF | fan.FAN_CLOEXEC | fan.FAN_NONBLOCK | FAN_REPORT_DFID_NAME)
    except OSError as exc:
        return 0, f"fanotify FAN_REPORT_DFID_NAME unavailable (kernel < 5.9?): {exc.strerror or exc}"
    try:
        for mask in (wanted, wanted & ~FAN_RENAME | fan.FAN_MOVED_FROM | fan.FAN_MOVED_TO):
            try:
                fan.fanotify_mark(fd, fan.FAN_MARK_ADD | fan.FAN_MARK_FILESYSTEM, mask, path)
                fan.fanotify_mark(fd, fan.FAN_MARK_REMOVE | fan.FAN_MARK_FILESYSTEM, mask, path)
            except OSError as exc:
                last = exc
                continue
            names = "attrib, create, delete, " + ("rename" if mask & FAN_RENAME else "moved_from/moved_to")
            return mask, f"fanotify FID mode (FAN_REPORT_DFID_NAME, filesystem mark on {path}): {names}"
        return 0, f"fanotify FID filesystem mark on {path} refused: {last.strerror or last}"
    finally:
        os.close(fd)
