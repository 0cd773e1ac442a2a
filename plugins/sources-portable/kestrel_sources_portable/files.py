"""File events from fanotify: opens and writes (fd mode, through the
fanotify plugin's ``FanotifyNotifier``) and creations, deletions, renames
and attribute changes (FID mode, :mod:`.fidwatch`).

fanotify notifications do not carry the open flags or what an attribute
change was, so two mappings are inferred (and documented in the README):

* ``open_write`` is reported at the first FAN_MODIFY of a (pid, file) pair,
  or at FAN_CLOSE_WRITE if the file was opened for writing and never written;
* FAN_ATTRIB is classified by stat-ing the file when the event is read and
  comparing with the last state seen: owner/group changed -> ``chown``;
  mode unchanged and atime == mtime == ctime (utimes to "now", i.e.
  ``touch``) -> dropped; otherwise -> ``chmod`` with the current mode,
  flagged ``file.Ext.inferred_action`` unless the mode visibly changed
  (``chmod +x`` of a file that was already executable looks like that).
  The stat can be later than the change (a file chmod'ed right after its
  write may already show the new mode at the write), so the flag is set
  generously.
"""

from __future__ import annotations

import os
import select
import stat as stat_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kestrel_sources_fanotify import fanotify as fan

from .ecs import add_file, add_process, base
from .fidwatch import FAN_RENAME, DirEntryEvent, DirEntryWatch
from .table import ProcessTable

FD_MASK = fan.FAN_OPEN | fan.FAN_OPEN_EXEC | fan.FAN_MODIFY | fan.FAN_CLOSE_WRITE
_CACHE_MAX = 8192


def is_elf_interpreter(path: str) -> bool:
    """The kernel opens a binary's PT_INTERP (ld.so) with the exec flag too."""
    return os.path.basename(path).startswith(("ld-linux", "ld-musl", "ld64.so", "ld.so"))


def filesystem_roots(paths: list[str]) -> list[str]:
    """One path per distinct filesystem among ``paths`` (a filesystem mark
    covers the whole filesystem, so two paths on / need one mark)."""
    roots: dict[int, str] = {}
    for path in paths:
        try:
            dev = os.stat(path).st_dev
        except OSError:
            continue
        roots.setdefault(dev, path)
    return list(roots.values())


_DRAINED_FD_EVENTS = 2000  # a 64 KiB read holds ~2700 fd-mode events: fewer means the queue was emptied


def file_loop(notifier: fan.FanotifyNotifier | None, dirwatch: DirEntryWatch | None, put: Callable[[int, str, Any], None],
              stop: threading.Event, exec_paths: dict[int, str], on_overflow: Callable[[int], None],
              ignore_open: tuple[str, ...] = ()) -> None:
    """Reads both groups and hands events on, stamped with a LOWER bound of
    when they happened: fanotify gives no time, and a read-time stamp would
    put a file's creation after the exec of that file whenever reading lags.
    The bound is the start of the last read that emptied the queue (what
    happened before it was read then).  The read time stays on the event.

    Plain opens (no write) of paths starting with one of ``ignore_open`` are
    dropped here, before they cost anything further: every program start
    opens ld.so.cache, libc and locale files, many times more events than
    anything a rule looks at."""
    own = os.getpid()
    fds = [w.fileno() for w in (notifier, dirwatch) if w is not None]
    seen_overflows = 0
    lower_fd = lower_fid = time.monotonic_ns()
    while not stop.is_set():
        ready, _, _ = select.select(fds, [], [], 0.2)
        if notifier is not None and notifier.fileno() in ready:
            started = time.monotonic_ns()
            events = notifier.read(0)
            for ev in events:
                if ev.pid == own or not ev.path:
                    continue
                if ev.mask & fan.FAN_OPEN_EXEC and not is_elf_interpreter(ev.path):
                    if len(exec_paths) > _CACHE_MAX:
                        exec_paths.clear()
                    exec_paths[ev.pid] = ev.path
                if ev.mask & (fan.FAN_MODIFY | fan.FAN_CLOSE_WRITE):
                    # the state after the write, for telling a later chmod from a touch
                    put(lower_fd, "fd", (ev, stat_state(ev.path)))
                elif ev.mask & fan.FAN_OPEN and not ev.path.startswith(ignore_open):
                    put(lower_fd, "fd", (ev, None))
            if len(events) < _DRAINED_FD_EVENTS:
                lower_fd = started
        if dirwatch is not None and dirwatch.fileno() in ready:
            started = time.monotonic_ns()
            events, drained = dirwatch.read_batch()
            for dev in events:
                if dev.pid != own and dev.path:
                    # stat now, not when handled: the file may change or go meanwhile
                    state = stat_state(dev.path) if dev.mask & (fan.FAN_CREATE | fan.FAN_ATTRIB | FAN_RENAME) else None
                    put(lower_fid, "dirent", (dev, state))
            if drained:
                lower_fid = started
        overflows = (notifier.overflows if notifier else 0) + (dirwatch.overflows if dirwatch else 0)
        if overflows != seen_overflows:
            on_overflow(overflows - seen_overflows)
            seen_overflows = overflows


State = tuple[int, int, int, int, int, int]
"""(permission bits, uid, gid, atime_ns, mtime_ns, ctime_ns)."""


def stat_state(path: str) -> State | None:
    """The attributes of ``path`` now, None if it is gone."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return stat_mod.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


class FileTracker:
    """Consumer side: fanotify observations -> file records."""

    def __init__(self, table: ProcessTable, wall_offset_ns: int) -> None:
        self.table = table
        self.wall_offset_ns = wall_offset_ns
        self._writing: OrderedDict[tuple[int, str], bool] = OrderedDict()
        """(pid, path) already reported as open_write, until its close_write."""
        self._attrs: OrderedDict[str, State] = OrderedDict()
        """path -> attributes last seen (mode and owner are what matter)."""

    def _record(self, ts_mono: int, etype: str, action: str, pid: int, path: str) -> dict[str, Any]:
        record = base(ts_mono + self.wall_offset_ns, "file", etype, action)
        info = self.table.lookup(pid) if pid > 0 else None
        if info is not None:
            add_process(record, info, self.table.get(info.ppid))
        elif pid > 0:
            record["process.pid"] = pid
        return add_file(record, path)

    def handle(self, ts_mono: int, kind: str, payload: Any) -> list[dict[str, Any]]:
        ev, state = payload
        return self._fd_event(ts_mono, ev, state) if kind == "fd" else self._dirent(ts_mono, ev, state)

    def _fd_event(self, ts: int, ev: fan.FileEvent, state: State | None) -> list[dict[str, Any]]:
        out = []
        key = (ev.pid, ev.path)
        if ev.mask & fan.FAN_OPEN and not ev.mask & fan.FAN_OPEN_EXEC:
            out.append(self._record(ts, "access", "open", ev.pid, ev.path))
        wrote = ev.mask & fan.FAN_MODIFY
        closed = ev.mask & fan.FAN_CLOSE_WRITE
        if (wrote or closed) and key not in self._writing:
            out.append(self._record(ts, "change", "open_write", ev.pid, ev.path))
            self._writing[key] = True
            if len(self._writing) > _CACHE_MAX:
                self._writing.popitem(last=False)
        if closed:
            self._writing.pop(key, None)
        if state is not None:
            self._remember(ev.path, state)
        return out

    def _remember(self, path: str, state: State | None) -> None:
        if state is not None:
            self._attrs[path] = state
            self._attrs.move_to_end(path)
            if len(self._attrs) > _CACHE_MAX:
                self._attrs.popitem(last=False)

    def _dirent(self, ts: int, ev: DirEntryEvent, state: State | None) -> list[dict[str, Any]]:
        # fanotify merges queued events on the same entry: one event may be
        # create + attrib + delete; report each, in the order they happen.
        out = []
        prior = self._attrs.get(ev.path)
        if ev.mask & fan.FAN_CREATE:
            prior = None
            self._remember(ev.path, state)
            out.append(self._record(ts, "creation", "create", ev.pid, ev.path))
        if ev.mask & FAN_RENAME and ev.old_path:
            moved = self._attrs.pop(ev.old_path, None)
            # a file renamed before its creation was read has no state yet: the
            # new name's, taken when the rename was read, is the one to compare with
            self._remember(ev.path, moved if moved is not None else state)
            record = self._record(ts, "change", "rename", ev.pid, ev.path)
            record["file.Ext.original.path"] = ev.old_path
            out.append(record)
        if ev.mask & fan.FAN_ATTRIB and state is not None:
            out.extend(self._attrib(ts, ev, prior, state))
        if ev.mask & fan.FAN_DELETE:
            self._attrs.pop(ev.path, None)
            out.append(self._record(ts, "deletion", "unlink", ev.pid, ev.path))
        return out

    def _attrib(self, ts: int, ev: DirEntryEvent, prior: State | None, now: State) -> list[dict[str, Any]]:
        """A file gone before it could be stat'ed yields nothing: what changed is unknowable."""
        self._remember(ev.path, now)
        mode, uid, gid, atime, mtime, ctime = now
        if prior is not None and (prior[1], prior[2]) != (uid, gid):
            record = self._record(ts, "change", "chown", ev.pid, ev.path)
            record["file.owner"] = str(uid)
            return [record]
        same_mode = prior is None or prior[0] == mode
        if same_mode and atime == mtime == ctime:
            return []  # utimes(NOW), i.e. touch: all three times set from one clock reading
        record = self._record(ts, "change", "chmod", ev.pid, ev.path)
        record["file.mode"] = f"{mode:o}"
        if same_mode:
            # No mode change seen: a chmod to the same mode, or another
            # attribute change (touch -d, xattr, link count).
            record["file.Ext.inferred_action"] = True
        return [record]
