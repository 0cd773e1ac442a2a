"""The low-level layer on the real kernel: marks, event records, overflow, probe."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from kestrel_sources_fanotify import fanotify as fan


@pytest.fixture
def collect(wait_for):
    def collect(notifier: fan.FanotifyNotifier, until, timeout_s: float = 5.0) -> list[fan.FileEvent]:
        """Read events until ``until(events)`` holds."""
        seen: list[fan.FileEvent] = []

        def poll():
            seen.extend(notifier.read(0.1))
            return until(seen)

        wait_for(poll, timeout_s, "fanotify events")
        return seen

    return collect


def test_constants_and_kinds():
    assert (fan.FAN_OPEN, fan.FAN_OPEN_EXEC, fan.FAN_CLOSE_WRITE, fan.FAN_MODIFY) == (0x20, 0x1000, 0x8, 0x2)
    assert (fan.FAN_OPEN_PERM, fan.FAN_OPEN_EXEC_PERM, fan.FAN_Q_OVERFLOW) == (0x10000, 0x40000, 0x4000)
    assert fan.event_kind(fan.FAN_OPEN) == "open"
    assert fan.event_kind(fan.FAN_OPEN | fan.FAN_OPEN_EXEC) == "exec"
    assert fan.event_kind(fan.FAN_OPEN | fan.FAN_CLOSE_WRITE) == "close_write"
    assert fan.event_kind(fan.FAN_MODIFY) == "modify"
    assert fan.event_kind(fan.FAN_OPEN_PERM) == "open"
    assert fan.event_kind(fan.FAN_OPEN_EXEC_PERM) == "exec"
    assert set(fan.__all__) >= {"FanotifyNotifier", "FileEvent", "probe", "FAN_OPEN", "FAN_OPEN_EXEC"}


def test_probe_names_working_mark_types(fanotify_ok):
    ok, reason = fan.probe("/")
    assert ok and "mount" in reason and "filesystem" in reason and "inode" in reason
    ok, reason = fan.probe("/", permission=True)
    assert ok and "permission" in reason


def test_probe_without_privilege_says_why(run_py):
    code = ("import os; from kestrel_sources_fanotify import fanotify as f; os.setuid(65534); "
            "ok, why = f.probe(); print(ok, why)")
    res = run_py(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("False") and "CAP_SYS_ADMIN" in res.stdout


def test_open_exec_close_write_with_paths_and_pids(tmpfs: Path, true_copy: Path, run_py, collect):
    data = tmpfs / "notes.txt"
    mask = fan.FAN_OPEN | fan.FAN_OPEN_EXEC | fan.FAN_CLOSE_WRITE
    with fan.FanotifyNotifier(mask, [(str(tmpfs), "mount")]) as notifier:
        writer = run_py(f"import os; open({str(data)!r}, 'w').write('x'); print(os.getpid())")
        reader = run_py(f"import os; open({str(data)!r}).read(); print(os.getpid())")
        child = subprocess.Popen([str(true_copy)])
        assert child.wait(5) == 0
        wpid, rpid = int(writer.stdout), int(reader.stdout)

        def done(evs):
            return ({e.pid for e in evs if e.mask & fan.FAN_CLOSE_WRITE} >= {wpid}
                    and any(e.pid == rpid and e.mask & fan.FAN_OPEN for e in evs)
                    and any(e.pid == child.pid and e.mask & fan.FAN_OPEN_EXEC for e in evs))

        events = collect(notifier, done)
    by_pid = {}
    for e in events:
        by_pid.setdefault(e.pid, []).append(e)
    assert all(e.path == str(data) for e in by_pid[wpid])
    assert any(e.kind == "close_write" for e in by_pid[wpid])
    assert [e.path for e in by_pid[rpid]] == [str(data)] and not by_pid[rpid][0].mask & fan.FAN_CLOSE_WRITE
    execs = [e for e in by_pid[child.pid] if e.mask & fan.FAN_OPEN_EXEC]
    assert execs and execs[0].path == str(true_copy) and execs[0].kind == "exec"
    assert all(e.fd == fan.FAN_NOFD for e in events), "notification fds are closed after naming the file"
    assert all(e.ts_wall_ns > 0 and e.ts_mono_ns > 0 for e in events)


def test_inode_mark_on_directory_reports_children(tmp_path: Path, fanotify_ok, run_py, collect):
    watched = tmp_path / "watched"
    other = tmp_path / "other"
    watched.mkdir()
    other.mkdir()
    with fan.FanotifyNotifier(fan.FAN_CLOSE_WRITE, [(str(watched), "inode")]) as notifier:
        res = run_py(f"open({str(other / 'b')!r}, 'w').write('1'); open({str(watched / 'a')!r}, 'w').write('1')")
        assert res.returncode == 0, res.stderr
        events = collect(notifier, lambda evs: any(e.path.endswith("/a") for e in evs))
    assert [e.path for e in events] == [str(watched / "a")]


def test_bad_marks_are_clear_errors(tmp_path: Path, fanotify_ok):
    with pytest.raises(ValueError, match="unknown mark type 'dir'"):
        fan.FanotifyNotifier(fan.FAN_OPEN, [(str(tmp_path), "dir")])
    with pytest.raises(ValueError, match="at least one mark"):
        fan.FanotifyNotifier(fan.FAN_OPEN, [])
    with pytest.raises(ValueError, match="FAN_CLASS_CONTENT"):
        fan.FanotifyNotifier(fan.FAN_OPEN_PERM, [(str(tmp_path), "inode")])
    with pytest.raises(fan.FanotifyError) as info:
        fan.FanotifyNotifier(fan.FAN_OPEN, [(str(tmp_path / "missing"), "inode")])
    assert info.value.errno == errno.ENOENT and "missing" in str(info.value)


def test_closed_notifier(tmp_path: Path, fanotify_ok):
    notifier = fan.FanotifyNotifier(fan.FAN_OPEN, [(str(tmp_path), "inode")])
    fd = notifier.fileno()
    notifier.close()
    notifier.close()
    assert notifier.closed
    with pytest.raises(ValueError, match="closed"):
        notifier.read(0)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_queue_overflow_is_counted(tmpfs: Path, small_queue, run_py):
    restore = small_queue(16)
    with fan.FanotifyNotifier(fan.FAN_OPEN, [(str(tmpfs), "mount")]) as notifier:
        restore()  # the group keeps the size it was created with
        assert Path("/proc/sys/fs/fanotify/max_queued_events").read_text().strip() != "16"
        # 200 distinct files: events on different files are never merged.
        res = run_py(f"import os\nfor i in range(200):\n    open(os.path.join({str(tmpfs)!r}, str(i)), 'w').close()")
        assert res.returncode == 0, res.stderr
        events = notifier.read(1)
        overflow = notifier.take_overflow()
    assert overflow is not None and overflow.count >= 1
    assert overflow.first_ts_ns <= overflow.last_ts_ns
    assert notifier.overflows == overflow.count
    assert len(events) <= 16
