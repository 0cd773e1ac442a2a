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


@pytest.fixture
def small_queue() -> Iterator[Callable[[int], None]]:
    """Lower fs.fanotify.max_queued_events for groups created in the test (restored after)."""
    knob = Path("/proc/sys/fs/fanotify/max_queued_events")
    if not os.access(knob, os.W_OK):
        pytest.skip(f"{knob} is not writable here: cannot shrink the queue to provoke an overflow")
    old = knob.read_text()

    def set_size(n: int) -> None:
        knob.write_text(str(n))

    try:
        yield set_size
    finally:
        knob.write_text(old)


@pytest.fixture
def true_copy(tmpfs: Path) -> Path:
    """A copy of /bin/true on the tmpfs (so exec events name a file under the mark)."""
    dst = tmpfs / "mytrue"
    dst.write_bytes(Path("/bin/true").read_bytes())
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
