"""Fixtures for tests on the real kernel (helpers: kestrel_actions_enforce.testing)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest

from kestrel_actions_enforce.audit import AuditLog
from kestrel_actions_enforce.enforcer import Enforcer
from kestrel_actions_enforce.testing import listening_server, temp_cgroup


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
    """A fresh cgroup2 directory; ``connect_from`` places children in it."""
    with temp_cgroup("kestrel-test") as path:
        yield path


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    with listening_server() as address:
        yield address


