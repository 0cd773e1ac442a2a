"""Fixtures for tests on the real kernel (helpers: enforce_kit.py)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

import importlib.util
import sys

import pytest


def _load_kit() -> None:
    """Register enforce_kit.py as module ``enforce_kit``.  The suite runs with
    --import-mode=importlib (no test folder on sys.path), and putting this
    folder on sys.path would shadow other plugins' ``conftest`` imports."""
    spec = importlib.util.spec_from_file_location("enforce_kit", Path(__file__).with_name("enforce_kit.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["enforce_kit"] = module
    spec.loader.exec_module(module)


_load_kit()
from enforce_kit import wait_for  # noqa: E402

from kestrel_actions_enforce.audit import AuditLog
from kestrel_actions_enforce.connect import cgroup2_root
from kestrel_actions_enforce.enforcer import Enforcer


@pytest.fixture
def audit_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def make_enforcer(audit_path: Path) -> Iterator[Callable[..., Enforcer]]:
    made: list[Enforcer] = []
    audits: list[AuditLog] = []

    def make(**kwargs: object) -> Enforcer:
        audit = AuditLog(str(audit_path))
        audits.append(audit)
        enforcer = Enforcer(audit, **kwargs)  # type: ignore[arg-type]
        enforcer.start()
        made.append(enforcer)
        return enforcer

    yield make
    for e in made:
        e.close()
    for a in audits:
        a.close()


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    """A private copy of /bin/true (denying the shared one would break the machine)."""
    dst = tmp_path / "denied-true"
    shutil.copy("/bin/true", dst)
    return dst


@pytest.fixture
def cgroup() -> Iterator[str]:
    """A fresh cgroup2 directory; children are placed in it by ``run_in_cgroup``."""
    root = cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 mount")
    path = os.path.join(root, f"kestrel-test-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path)
    yield path
    wait_for(lambda: not Path(path, "cgroup.procs").read_text().strip(), what="cgroup to empty")
    os.rmdir(path)


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    yield srv.getsockname()
    srv.close()


