"""Helpers for the enforcement tests (a module of its own: every plugin's
tests have a conftest.py, so "from conftest import" would be ambiguous)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kestrel_actions_enforce.enforcer import probe_ladder
from kestrel_core.testing import wait_for  # noqa: F401 - the tests import it from here

PROBES = probe_ladder()


def need(*rungs: str) -> pytest.MarkDecorator:
    """Skip unless every rung's probe passed; the reason is the probe's."""
    missing = [f"{r}: {PROBES[r].reason}" for r in rungs if not PROBES[r].available]
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "available")


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
