"""Reading one process's identity from /proc.

Everything here tolerates the process vanishing mid-read: short-lived
processes are often gone by the time user space hears of them, so a
snapshot says which parts it could not read instead of failing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs

from kestrel_core.event import process_entity_id

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def entity_id(pid: int, start_ticks: int) -> str:
    """``process.entity_id``: pid and start time in clock ticks since boot
    (field 22 of /proc/<pid>/stat), by the scheme every live source shares,
    so rules and recordings do not depend on which source saw a process."""
    return process_entity_id(pid, start_ticks)


@attrs.define(slots=True)
class ProcInfo:
    """What Kestrel knows about one live (or just-exited) process."""

    pid: int
    ppid: int = 0
    start_ticks: int = -1
    comm: str = ""
    executable: str = ""
    args: list[str] = attrs.Factory(list)
    cwd: str = ""
    uid: int = -1
    euid: int = -1
    gid: int = -1
    incomplete: bool = False
    """True when some of /proc/<pid> could not be read (the process was gone)."""

    @property
    def name(self) -> str:
        # Basename of the image when known: comm is truncated to 15 bytes and
        # can be renamed by the process itself (prctl PR_SET_NAME).
        return os.path.basename(self.executable) if self.executable else self.comm

    @property
    def entity_id(self) -> str:
        return entity_id(self.pid, self.start_ticks) if self.start_ticks >= 0 else ""

    @property
    def command_line(self) -> str:
        return " ".join(self.args)

    def copy_for_child(self, pid: int) -> ProcInfo:
        """A forked child shares its parent's image, args, cwd and ids."""
        return attrs.evolve(self, pid=pid, ppid=self.pid, start_ticks=-1, args=list(self.args))


def parse_stat(text: str) -> tuple[str, int, int]:
    """``/proc/<pid>/stat`` -> (comm, ppid, start time in ticks).  comm may hold
    spaces and parentheses, so split at the LAST ')'."""
    open_at = text.index("(")
    close_at = text.rindex(")")
    comm = text[open_at + 1:close_at]
    rest = text[close_at + 2:].split()
    # rest[0] is field 3 (state): field n is rest[n - 3].
    return comm, int(rest[1]), int(rest[19])


def parse_status_ids(text: str) -> tuple[int, int, int]:
    """``/proc/<pid>/status`` -> (real uid, effective uid, real gid)."""
    uid = euid = gid = -1
    at = text.find("\nUid:")
    if at >= 0:
        parts = text[at + 5:text.index("\n", at + 1)].split()
        uid, euid = int(parts[0]), int(parts[1])
    at = text.find("\nGid:")
    if at >= 0:
        gid = int(text[at + 5:text.index("\n", at + 1)].split()[0])
    return uid, euid, gid


def _read_text(path: str) -> str | None:
    # os.open/os.read: a third of the cost of open() with its buffering
    # layers, which matters when racing a process that is about to exit.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "surrogateescape")
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def read_stat(pid: int) -> tuple[str, int, int] | None:
    text = _read_text(f"/proc/{pid}/stat")
    if text is None:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def snapshot(pid: int) -> ProcInfo:
    """Read everything /proc offers about ``pid`` now; missing parts leave
    ``incomplete`` set.  stat is read twice: if the start time changed in
    between, the pid was reused and the snapshot is discarded."""
    info = ProcInfo(pid)
    # cmdline and exe first: they vanish first when the process exits.
    cmdline = _read_text(f"/proc/{pid}/cmdline")
    exe = _readlink(f"/proc/{pid}/exe")
    stat = read_stat(pid)
    if stat is None:
        info.incomplete = True
        return info
    info.comm, info.ppid, info.start_ticks = stat
    if cmdline:
        info.args = cmdline.rstrip("\0").split("\0")
    if exe is not None:
        info.executable = exe.removesuffix(" (deleted)")
    cwd = _readlink(f"/proc/{pid}/cwd")
    if cwd is not None:
        info.cwd = cwd
    status = _read_text(f"/proc/{pid}/status")
    if status:
        info.uid, info.euid, info.gid = parse_status_ids(status)
    # A zombie keeps stat and status but loses exe, cwd and cmdline.
    info.incomplete = exe is None or cwd is None or not cmdline or status is None
    again = read_stat(pid)
    if again is None or again[2] != info.start_ticks:
        return ProcInfo(pid, incomplete=True)
    return info


def list_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)
