"""fanotify(7) through ctypes on libc: marks, notification reads, probing.

Hand-written rather than pyfanotify because pyfanotify cannot answer
permission events (the responder needs the same group fd to write
``struct fanotify_response``), and one small ctypes layer serves both uses.

Events are read in fd mode (no FAN_REPORT_FID): each event carries an open
file descriptor, whose path comes from ``readlink(/proc/self/fd/N)``.  The
kernel gives no timestamp, so an event is stamped when it is read.

Other plugins (the portable fallback source, the enforcement action) import
this module: keep ``FanotifyNotifier``, ``FileEvent``, ``probe`` and the
``FAN_*`` constants stable.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import time
from typing import Iterable

import attrs

# -------------------------------------------------------------- constants (linux/fanotify.h)

FAN_ACCESS = 0x00000001
FAN_MODIFY = 0x00000002
FAN_ATTRIB = 0x00000004
FAN_CLOSE_WRITE = 0x00000008
FAN_CLOSE_NOWRITE = 0x00000010
FAN_OPEN = 0x00000020
FAN_MOVED_FROM = 0x00000040
FAN_MOVED_TO = 0x00000080
FAN_CREATE = 0x00000100
FAN_DELETE = 0x00000200
FAN_DELETE_SELF = 0x00000400
FAN_MOVE_SELF = 0x00000800
FAN_OPEN_EXEC = 0x00001000
FAN_Q_OVERFLOW = 0x00004000
FAN_FS_ERROR = 0x00008000
FAN_OPEN_PERM = 0x00010000
FAN_ACCESS_PERM = 0x00020000
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000
FAN_CLOSE = FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE
FAN_PERM_EVENTS = FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM

# fanotify_init flags
FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000
FAN_CLASS_CONTENT = 0x00000004
FAN_CLASS_PRE_CONTENT = 0x00000008
FAN_UNLIMITED_QUEUE = 0x00000010
FAN_UNLIMITED_MARKS = 0x00000020

# fanotify_mark flags
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_DONT_FOLLOW = 0x00000004
FAN_MARK_ONLYDIR = 0x00000008
FAN_MARK_INODE = 0x00000000
FAN_MARK_MOUNT = 0x00000010
FAN_MARK_FILESYSTEM = 0x00000100

# responses
FAN_ALLOW = 0x01
FAN_DENY = 0x02

FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100

MARK_TYPES: dict[str, int] = {"inode": FAN_MARK_INODE, "mount": FAN_MARK_MOUNT, "filesystem": FAN_MARK_FILESYSTEM}

# struct fanotify_event_metadata: event_len u32, vers u8, reserved u8,
# metadata_len u16, mask u64 (aligned), fd s32, pid s32.
_METADATA = struct.Struct("=IBBHQii")
_RESPONSE = struct.Struct("=iI")  # struct fanotify_response: fd s32, response u32
_READ_SIZE = 64 * 1024

# Event kinds, most specific first (one event may carry several bits).
_KINDS: tuple[tuple[int, str], ...] = (
    (FAN_OPEN_EXEC_PERM, "exec"),
    (FAN_OPEN_EXEC, "exec"),
    (FAN_OPEN_PERM, "open"),
    (FAN_CLOSE_WRITE, "close_write"),
    (FAN_MODIFY, "modify"),
    (FAN_OPEN, "open"),
    (FAN_ACCESS_PERM, "access"),
    (FAN_ACCESS, "access"),
    (FAN_CLOSE_NOWRITE, "close"),
)

__all__ = [name for name in dir() if name.startswith(("FAN_", "FANOTIFY_"))] + [
    "FanotifyError", "FanotifyNotifier", "FileEvent", "Overflow", "MARK_TYPES", "event_kind", "probe",
    "fanotify_init", "fanotify_mark", "read_events", "write_response",
]


class FanotifyError(OSError):
    """A fanotify call failed; ``errno`` and the call are in the message."""


# -------------------------------------------------------------- libc

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    """libc with the two fanotify entry points typed (loaded on first use, not at import)."""
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(None, use_errno=True)  # the C library this process already runs on
        lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
        lib.fanotify_mark.restype = ctypes.c_int
        _libc = lib
    return _libc


def _raise(call: str) -> None:
    err = ctypes.get_errno()
    raise FanotifyError(err, f"{call}: {os.strerror(err)}")


def fanotify_init(flags: int, event_f_flags: int = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC) -> int:
    fd = _lib().fanotify_init(flags, event_f_flags)
    if fd < 0:
        _raise(f"fanotify_init(flags={flags:#x})")
    return fd


def fanotify_mark(fd: int, flags: int, mask: int, path: str, dirfd: int = AT_FDCWD) -> None:
    if _lib().fanotify_mark(fd, flags, mask, dirfd, os.fsencode(path)) < 0:
        _raise(f"fanotify_mark({path!r}, flags={flags:#x}, mask={mask:#x})")


def write_response(fd: int, event_fd: int, allow: bool) -> None:
    os.write(fd, _RESPONSE.pack(event_fd, FAN_ALLOW if allow else FAN_DENY))


def event_kind(mask: int) -> str:
    for bit, kind in _KINDS:
        if mask & bit:
            return kind
    return "other"


# -------------------------------------------------------------- events


@attrs.define(slots=True)
class FileEvent:
    """One fanotify event.  ``path`` is "" when the file could not be named;
    ``fd`` is only kept (>= 0) for permission events, until answered."""

    mask: int
    pid: int
    path: str
    ts_wall_ns: int
    ts_mono_ns: int
    kind: str
    fd: int = FAN_NOFD


@attrs.define(slots=True)
class Overflow:
    """Queue overflows seen since the last ``take_overflow``.  The kernel does
    not say how many events it dropped: ``count`` is the number of
    FAN_Q_OVERFLOW events, a lower bound on the loss."""

    count: int
    first_ts_ns: int
    last_ts_ns: int


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def read_events(fd: int, keep_fds: bool = False) -> tuple[list[FileEvent], int]:
    """Read what is queued on a (non-blocking) fanotify fd.

    :return: (events, number of FAN_Q_OVERFLOW events); event fds are closed
        unless ``keep_fds`` (a permission responder must answer, then close).
    """
    try:
        buf = os.read(fd, _READ_SIZE)
    except BlockingIOError:
        return [], 0
    wall, mono = time.time_ns(), time.monotonic_ns()
    events: list[FileEvent] = []
    overflows = 0
    offset, end = 0, len(buf)
    while offset + _METADATA.size <= end:
        event_len, vers, _reserved, _meta_len, mask, efd, pid = _METADATA.unpack_from(buf, offset)
        if vers != FANOTIFY_METADATA_VERSION or event_len < _METADATA.size:
            raise FanotifyError(errno.EPROTO, f"fanotify metadata version {vers} (expected "
                                f"{FANOTIFY_METADATA_VERSION}) or bad length {event_len}")
        offset += event_len
        if mask & FAN_Q_OVERFLOW:
            overflows += 1
            continue
        path = _fd_path(efd) if efd >= 0 else ""
        if efd >= 0 and not keep_fds:
            os.close(efd)
            efd = FAN_NOFD
        events.append(FileEvent(mask, pid, path, wall, mono, event_kind(mask), efd))
    return events, overflows


# -------------------------------------------------------------- notifier


class FanotifyNotifier:
    """A notification group (FAN_CLASS_NOTIF) with marks.

    ``marks``: ``(path, "mount" | "filesystem" | "inode")``; an inode mark on a
    directory also reports its direct children (FAN_EVENT_ON_CHILD is added).
    """

    def __init__(self, mask: int, marks: Iterable[tuple[str, str]], *, init_flags: int = FAN_CLASS_NOTIF,
                 unlimited_queue: bool = False) -> None:
        if mask & FAN_PERM_EVENTS and not init_flags & (FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT):
            raise ValueError("permission events need FAN_CLASS_CONTENT (use responder.PermissionResponder)")
        marks = list(marks)
        if not marks:
            raise ValueError("FanotifyNotifier needs at least one mark")
        for path, kind in marks:
            if kind not in MARK_TYPES:
                raise ValueError(f"mark {path!r}: unknown mark type {kind!r} (expected one of {', '.join(MARK_TYPES)})")
        self.mask = mask
        self.marks = marks
        flags = init_flags | FAN_CLOEXEC | FAN_NONBLOCK | (FAN_UNLIMITED_QUEUE if unlimited_queue else 0)
        self._fd = fanotify_init(flags)
        self.overflows = 0
        """FAN_Q_OVERFLOW events seen over the notifier's life."""
        self._pending: Overflow | None = None
        try:
            for path, kind in marks:
                extra = FAN_EVENT_ON_CHILD if kind == "inode" and os.path.isdir(path) else 0
                fanotify_mark(self._fd, FAN_MARK_ADD | MARK_TYPES[kind], mask | extra, path)
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("fanotify notifier is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def read(self, timeout_s: float | None = None) -> list[FileEvent]:
        """Events queued now, waiting up to ``timeout_s`` (None: forever) for the first."""
        fd = self.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(None if timeout_s is None else max(0, int(timeout_s * 1000))):
            return []
        events, overflows = read_events(fd)
        if overflows:
            self._note_overflow(overflows)
        return events

    def _note_overflow(self, n: int) -> None:
        now = time.time_ns()
        self.overflows += n
        if self._pending is None:
            self._pending = Overflow(n, now, now)
        else:
            self._pending.count += n
            self._pending.last_ts_ns = now

    def take_overflow(self) -> Overflow | None:
        """Overflows since the last call (None if none): callers report them as a loss."""
        pending, self._pending = self._pending, None
        return pending

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "FanotifyNotifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)


# -------------------------------------------------------------- probing


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status", "rb") as fh:  # bytes: no codec import (may fail after setuid)
            for line in fh:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 21))  # CAP_SYS_ADMIN = 21
    except OSError:
        pass
    return os.geteuid() == 0


def probe(path: str = "/", permission: bool = False) -> tuple[bool, str]:
    """Can this process use fanotify here?  Tries a real group and each mark
    type on ``path`` (then removes them); with ``permission`` also a
    FAN_CLASS_CONTENT group with FAN_OPEN_PERM and FAN_OPEN_EXEC_PERM.

    :return: (available, reason) -- the reason lists which mark types work.
    """
    if not _has_cap_sys_admin():
        return False, "fanotify needs CAP_SYS_ADMIN (run as root)"
    try:
        _lib()
    except (OSError, AttributeError) as exc:
        return False, f"libc has no fanotify_init/fanotify_mark: {exc}"
    init_flags = (FAN_CLASS_CONTENT if permission else FAN_CLASS_NOTIF) | FAN_CLOEXEC | FAN_NONBLOCK
    mask = (FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM) if permission else (FAN_OPEN | FAN_OPEN_EXEC | FAN_CLOSE_WRITE)
    try:
        fd = fanotify_init(init_flags)
    except FanotifyError as exc:
        what = "permission events (FAN_CLASS_CONTENT)" if permission else "fanotify"
        if exc.errno == errno.ENOSYS:
            return False, f"kernel has no fanotify (CONFIG_FANOTIFY off): {exc.strerror}"
        if exc.errno == errno.EINVAL and permission:
            return False, f"kernel has no {what} (CONFIG_FANOTIFY_ACCESS_PERMISSIONS off?): {exc.strerror}"
        return False, f"{what} unavailable: {exc.strerror}"
    working, failing = [], []
    try:
        for kind, flag in MARK_TYPES.items():
            try:
                fanotify_mark(fd, FAN_MARK_ADD | flag, mask, path)
                fanotify_mark(fd, FAN_MARK_REMOVE | flag, mask, path)
                working.append(kind)
            except FanotifyError as exc:
                failing.append(f"{kind}: {os.strerror(exc.errno)}")
    finally:
        os.close(fd)
    what = "permission events" if permission else "notifications"
    if not working:
        return False, f"fanotify {what}: no mark type works on {path} ({'; '.join(failing)})"
    reason = f"fanotify {what}; marks on {path}: {', '.join(working)}"
    if failing:
        reason += f" (not: {'; '.join(failing)})"
    return True, reason
