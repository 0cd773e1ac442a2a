"""PermissionResponder on the real kernel: deny -> EPERM, budgets, fail modes, release on close."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from kestrel_sources_fanotify.fanotify import FileEvent
from kestrel_sources_fanotify.responder import OUTCOMES, PermissionResponder

OPEN_CODE = "import sys\ntry:\n    open(sys.argv[1], 'rb').read()\nexcept PermissionError:\n    sys.exit(13)\n"


@pytest.fixture
def files(tmpfs: Path, permission_ok) -> dict[str, Path]:
    out = {}
    for name in ("secret.key", "public.txt"):
        out[name] = tmpfs / name
        out[name].write_text(name)
    return out


@pytest.fixture
def responders() -> Iterator:
    """Build responders; all closed at teardown (and released callbacks unblocked)."""
    made: list[PermissionResponder] = []
    releases: list[threading.Event] = []

    def make(*args, **kw) -> PermissionResponder:
        r = PermissionResponder(*args, **kw)
        made.append(r)
        return r

    make.releases = releases  # type: ignore[attr-defined]
    yield make
    for ev in releases:
        ev.set()
    for r in made:
        r.close()


def try_open(path: Path, timeout: float = 10) -> int:
    """Exit code of a child that opens ``path``: 0 opened, 13 EPERM.  Never hangs (timeout)."""
    import sys

    return subprocess.run([sys.executable, "-c", OPEN_CODE, str(path)], timeout=timeout).returncode


def deny_names(*names: str):
    def decide(event: FileEvent) -> bool:
        return os.path.basename(event.path) not in names

    return decide


def test_deny_open_is_eperm_and_others_allowed(tmpfs: Path, files, responders):
    r = responders([(str(tmpfs), "mount")], deny_names("secret.key"), events=["open"])
    assert try_open(files["secret.key"]) == 13
    assert try_open(files["public.txt"]) == 0
    stats = r.stats()
    assert stats["decisions"]["deny"] >= 1 and stats["decisions"]["allow"] >= 1
    assert stats["answers"]["deny"] == stats["decisions"]["deny"]
    assert set(stats["decisions"]) == set(OUTCOMES)


def test_filesystem_mark_denies_too(tmpfs: Path, files, responders):
    responders([(str(tmpfs), "filesystem")], deny_names("secret.key"), events=["open"])
    assert try_open(files["secret.key"]) == 13
    assert try_open(files["public.txt"]) == 0


def test_deny_exec_of_copied_binary(tmpfs: Path, true_copy: Path, permission_ok, responders):
    other = tmpfs / "othertrue"
    other.write_bytes(true_copy.read_bytes())
    other.chmod(0o755)
    kinds: list[str] = []

    def decide(event: FileEvent) -> bool:
        kinds.append(event.kind)
        return not (event.kind == "exec" and event.path == str(true_copy))

    r = responders([(str(tmpfs), "mount")], decide, events=["exec"])
    with pytest.raises(PermissionError):
        subprocess.run([str(true_copy)], timeout=10)
    assert subprocess.run([str(other)], timeout=10).returncode == 0
    assert try_open(true_copy) == 0, "only exec is watched: reading the binary is allowed"
    assert set(kinds) == {"exec"}
    assert r.stats()["decisions"]["deny"] == 1


@pytest.mark.parametrize("fail_open", [True, False])
def test_budget_overrun_follows_fail_mode_and_is_counted(tmpfs: Path, files, responders, fail_open: bool):
    release = threading.Event()
    responders.releases.append(release)
    entered = threading.Event()

    def slow(event: FileEvent) -> bool:
        entered.set()
        release.wait(30)
        return True

    r = responders([(str(tmpfs), "mount")], slow, events=["open"], budget_ms=100, fail_open=fail_open)
    assert try_open(files["public.txt"], timeout=10) == (0 if fail_open else 13)
    assert entered.is_set()
    stats = r.stats()
    assert stats["decisions"]["timeout"] == 1
    assert stats["answers"]["allow" if fail_open else "deny"] == 1
    assert stats["hung_callbacks"] == 1
    # The responder keeps answering after a hung callback: the next event goes to a fresh reader.
    r.set_policy(deny_names("secret.key"))
    assert try_open(files["secret.key"]) == 13
    assert try_open(files["public.txt"]) == 0
    release.set()


@pytest.mark.parametrize("fail_open", [True, False])
def test_raising_policy_follows_fail_mode(tmpfs: Path, files, responders, fail_open: bool):
    def broken(event: FileEvent) -> bool:
        raise RuntimeError("policy bug")

    r = responders([(str(tmpfs), "mount")], broken, events=["open"], fail_open=fail_open)
    assert try_open(files["public.txt"]) == (0 if fail_open else 13)
    assert r.stats()["decisions"]["error"] == 1


def test_own_pid_is_always_allowed(tmpfs: Path, files, responders):
    asked: list[int] = []

    def deny_all(event: FileEvent) -> bool:
        asked.append(event.pid)
        return False

    r = responders([(str(tmpfs), "mount")], deny_all, events=["open"])
    assert files["secret.key"].read_text() == "secret.key"
    assert os.getpid() not in asked
    assert r.stats()["decisions"]["self"] >= 1
    assert try_open(files["secret.key"]) == 13


def test_policy_that_opens_a_watched_file_does_not_deadlock(tmpfs: Path, files, responders):
    def reads_config(event: FileEvent) -> bool:
        # Opens a file on the watched mount from the responder's own thread:
        # the self event must still be answered (by a fresh reader after the budget).
        return files["public.txt"].read_text() == "public.txt" and not event.path.endswith("secret.key")

    responders([(str(tmpfs), "mount")], reads_config, events=["open"], budget_ms=200)
    assert try_open(files["secret.key"], timeout=10) in (0, 13)
    assert try_open(files["public.txt"], timeout=10) in (0, 13)


def test_close_releases_a_waiting_opener(tmpfs: Path, files, responders):
    import sys

    release = threading.Event()
    responders.releases.append(release)
    entered = threading.Event()

    def stuck(event: FileEvent) -> bool:
        entered.set()
        release.wait(60)
        return False

    r = responders([(str(tmpfs), "mount")], stuck, events=["open"], budget_ms=60_000, fail_open=False)
    child = subprocess.Popen([sys.executable, "-c", OPEN_CODE, str(files["secret.key"])])
    try:
        assert entered.wait(10), "the policy should be asked"
        assert child.poll() is None, "the opener waits for the answer"
        r.close()
        assert child.wait(timeout=10) == 0, "close() answers allow for everything pending"
    finally:
        if child.poll() is None:
            child.kill()
    assert r.stats()["answers"]["allow"] >= 1


def test_set_policy_hot_swap_and_latency_numbers(tmpfs: Path, files, responders):
    r = responders([(str(tmpfs), "mount")], events=["open"])
    assert try_open(files["secret.key"]) == 0
    r.set_policy(deny_names("secret.key"))
    assert try_open(files["secret.key"]) == 13
    r.set_policy(None)
    assert try_open(files["secret.key"]) == 0
    lat = r.latency_percentiles()
    assert lat["samples"] >= 3
    assert 0 < lat["p50_us"] <= lat["p99_us"] < 20 * 1000 * 10  # well under ten budgets


def test_bad_arguments(tmpfs: Path, permission_ok):
    with pytest.raises(ValueError, match="open, exec"):
        PermissionResponder([(str(tmpfs), "mount")], events=["write"])
    with pytest.raises(ValueError, match="budget_ms"):
        PermissionResponder([(str(tmpfs), "mount")], budget_ms=0)
    with pytest.raises(ValueError, match="unknown mark type"):
        PermissionResponder([(str(tmpfs), "tree")])
