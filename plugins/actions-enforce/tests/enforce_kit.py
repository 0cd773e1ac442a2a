"""Helpers for the enforcement tests (a module of its own: every plugin's
tests have a conftest.py, so "from conftest import" would be ambiguous)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from kestrel_actions_enforce.enforcer import probe_ladder

PROBES = probe_ladder()


def need(*rungs: str) -> pytest.MarkDecorator:
    """Skip unless every rung's probe passed; the reason is the probe's."""
    missing = [f"{r}: {PROBES[r].reason}" for r in rungs if not PROBES[r].available]
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "available")


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


CONNECT = "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); print('ok')"


def connect_from(cgroup: str, host: str, port: int) -> subprocess.CompletedProcess[str]:
    """Connect from a child placed in ``cgroup`` before it runs Python."""
    def enter() -> None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
            fh.write("0")

    return subprocess.run([sys.executable, "-c", CONNECT, host, str(port)], preexec_fn=enter, capture_output=True,
                          text=True, timeout=30)


WRITE = "import sys; open(sys.argv[1], 'a').write('x'); print('ok')"


def open_for_write(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WRITE, str(path)], capture_output=True, text=True, timeout=30)


def run_exec(path: Path) -> int | str:
    """Return code of exec'ing ``path`` (-9: killed), or "EPERM"."""
    try:
        return subprocess.run([str(path)], timeout=30).returncode
    except PermissionError:
        return "EPERM"
