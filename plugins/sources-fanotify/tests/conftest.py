"""Fixtures for the real-kernel tests: a private tmpfs to mark, waiting helpers.

Tests skip only when a capability probe says fanotify (or mounting) is not
available here, with the probe's reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from kestrel_core import testing
from kestrel_sources_fanotify import fanotify as fan


def _probe(permission: bool) -> tuple[bool, str]:
    return fan.probe("/", permission=permission)


@pytest.fixture(scope="session")
def fanotify_ok() -> None:
    ok, reason = _probe(False)
    if not ok:
        pytest.skip(f"fanotify unavailable: {reason}")


@pytest.fixture(scope="session")
def permission_ok() -> None:
    ok, reason = _probe(True)
    if not ok:
        pytest.skip(f"fanotify permission events unavailable: {reason}")


@pytest.fixture
def tmpfs(tmp_path: Path, fanotify_ok: None) -> Iterator[Path]:
    """A fresh tmpfs: a mount or filesystem mark on it sees only this test's files."""
    with testing.private_tmpfs(tmp_path / "mnt", "kestrel-fan-test") as mnt:
        yield mnt


def _run_py(code: str, timeout: float = 10, **kw) -> subprocess.CompletedProcess:
    """Run Python code in a child process (another pid than the test's)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, **kw)


QUEUE_KNOB = Path("/proc/sys/fs/fanotify/max_queued_events")
QUEUE_SAVED = Path("/run/kestrel-tests/fanotify-max_queued_events")
"""The knob's value while a test has it lowered: a test run killed in that
window (SIGKILL skips teardown) is repaired by the next one."""


def _restore_queue_knob() -> None:
    if QUEUE_SAVED.exists():
        QUEUE_KNOB.write_text(QUEUE_SAVED.read_text())
        QUEUE_SAVED.unlink()


@pytest.fixture(scope="session", autouse=True)
def queue_knob_repaired() -> None:
    if QUEUE_SAVED.exists() and os.access(QUEUE_KNOB, os.W_OK):
        _restore_queue_knob()


@pytest.fixture
def small_queue() -> Iterator[Callable[[int], Callable[[], None]]]:
    """``restore = small_queue(n)``: lower fs.fanotify.max_queued_events, a
    global knob read when a fanotify group is created; call ``restore()`` as
    soon as the test's group exists (teardown restores it too)."""
    if not os.access(QUEUE_KNOB, os.W_OK):
        pytest.skip(f"{QUEUE_KNOB} is not writable here: cannot shrink the queue to provoke an overflow")

    def set_size(n: int) -> Callable[[], None]:
        if not QUEUE_SAVED.exists():
            QUEUE_SAVED.parent.mkdir(parents=True, exist_ok=True)
            QUEUE_SAVED.write_text(QUEUE_KNOB.read_text())
        QUEUE_KNOB.write_text(str(n))
        return _restore_queue_knob

    try:
        yield set_size
    finally:
        _restore_queue_knob()


@pytest.fixture
def true_copy(tmpfs: Path) -> Path:
    """A copy of /bin/true on the tmpfs (so exec events name a file under the mark)."""
    dst = tmpfs / "mytrue"
    dst.write_bytes(Path("/bin/true").read_bytes())
    dst.chmod(0o755)
    return dst


@pytest.fixture
def sh_copy(tmpfs: Path) -> Path:
    """A copy of /bin/sh on the tmpfs: ``sh_copy -c "read line"`` stays alive
    until the test writes a line, so /proc still has it (and its parent) when
    the source reads its exec event."""
    dst = tmpfs / "mysh"
    dst.write_bytes(Path("/bin/sh").read_bytes())
    dst.chmod(0o755)
    return dst


@pytest.fixture
def wait_for() -> Callable[..., object]:
    """``wait_for(poll, timeout, what)``: poll until truthy, fail after the deadline."""
    return testing.wait_for


@pytest.fixture
def run_py() -> Callable[..., subprocess.CompletedProcess]:
    """``run_py(code)``: run Python code in a child process."""
    return _run_py
