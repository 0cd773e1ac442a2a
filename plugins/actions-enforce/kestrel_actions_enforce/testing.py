"""Helpers for tests of enforcement on the real kernel (this plugin's own and
the end-to-end ones in Kestrel's tests/enforce): capability skips, acts done
from other processes, a fresh cgroup and a listening server."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from kestrel_core.interfaces import Probe
from kestrel_core.testing import wait_for

from .connect import cgroup2_root
from .enforcer import probe_ladder


@functools.cache
def rung_probe(name: str) -> Probe:
    """The capability probe of one rung, run once per test session."""
    return probe_ladder([name])[name]


def need(*rungs: str) -> pytest.MarkDecorator:
    """Skip unless every rung's probe passed; the reason is the probe's."""
    missing = [f"{r}: {rung_probe(r).reason}" for r in rungs if not rung_probe(r).available]
    return pytest.mark.skipif(bool(missing), reason="; ".join(missing) or "available")


def run_exec(path: Path) -> int | str:
    """Return code of exec'ing ``path`` (-9: killed), or "EPERM"."""
    try:
        return subprocess.run([str(path)], timeout=30).returncode
    except PermissionError:
        return "EPERM"


WRITE = "import sys; open(sys.argv[1], 'a').write('x'); print('ok')"


def open_for_write(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WRITE, str(path)], capture_output=True, text=True, timeout=30)


CONNECT = "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); print('ok')"


def connect_from(cgroup: str, host: str, port: int) -> subprocess.CompletedProcess[str]:
    """Connect from a child placed in ``cgroup`` before it runs Python."""
    def enter() -> None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
            fh.write("0")

    return subprocess.run([sys.executable, "-c", CONNECT, host, str(port)], preexec_fn=enter, capture_output=True,
                          text=True, timeout=30)


@contextlib.contextmanager
def temp_cgroup(prefix: str) -> Iterator[str]:
    """A fresh cgroup2 directory, removed once its processes are gone (skips without cgroup2)."""
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mount")
    path = os.path.join(root, f"{prefix}-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path)
    yield path
    wait_for(lambda: not Path(path, "cgroup.procs").read_text().strip(), 10, "the cgroup to empty")
    os.rmdir(path)


@contextlib.contextmanager
def listening_server() -> Iterator[tuple[str, int]]:
    """A TCP server on 127.0.0.1 that accepts into its backlog: ``(host, port)``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    try:
        yield srv.getsockname()
    finally:
        srv.close()
