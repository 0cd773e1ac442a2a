"""The rollback switch (state file + watcher + acknowledgement) and the audit log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kestrel_actions_enforce import enforce_command, set_enforcement
from kestrel_actions_enforce.audit import AuditLog, read_audit
from kestrel_actions_enforce.control import StateWatcher, read_state


def test_set_enforcement_waits_for_the_running_watcher(tmp_path: Path) -> None:
    seen: list[bool] = []
    watcher = StateWatcher(str(tmp_path), seen.append)
    watcher.start()
    try:
        assert watcher.enabled is True
        assert set_enforcement(False, tmp_path) == [os.getpid()]
        assert seen == [False]  # applied before set_enforcement returned
        assert set_enforcement(False, tmp_path) == [os.getpid()]
        assert seen == [False]  # no change, no second apply
        set_enforcement(True, tmp_path)
        assert seen == [False, True]
    finally:
        watcher.stop()
    assert not list(tmp_path.glob("enforce.applied.*"))


def test_state_survives_restart_and_stale_acks_are_ignored(tmp_path: Path) -> None:
    set_enforcement(False, tmp_path)
    assert read_state(str(tmp_path)) is False
    assert StateWatcher(str(tmp_path), lambda _e: None).enabled is False  # a restart starts with enforcement off
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"enforce.applied.{int(dead.stdout)}").write_text("off\n")  # left by a crashed enforcer
    assert set_enforcement(True, tmp_path, timeout_s=0.5) == []


def test_cli_command(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(enforce_command, ["off", "--runtime-dir", str(tmp_path)])
    assert r.exit_code == 0 and "enforcement off (no running enforcer)" in r.output
    r = runner.invoke(enforce_command, ["status", "--runtime-dir", str(tmp_path)])
    assert "enforcement off" in r.output
    r = runner.invoke(enforce_command, ["maybe", "--runtime-dir", str(tmp_path)])
    assert r.exit_code == 2


def test_unresponsive_enforcer_is_an_error(tmp_path: Path) -> None:
    (tmp_path / f"enforce.applied.{os.getpid()}").write_text("on\n")  # a live enforcer that stopped answering
    with pytest.raises(TimeoutError, match=f"pid {os.getpid()} did not apply enforcement off"):
        set_enforcement(False, tmp_path, timeout_s=0.2)


def test_audit_lines_are_on_disk_before_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "a" / "audit.jsonl"
    log = AuditLog(str(path))
    log.write({"rule": "r", "outcome": "denied"})
    # another reader sees the line while the log is still open (flushed per decision)
    assert json.loads(path.read_text().splitlines()[0])["outcome"] == "denied"
    # a process that dies right after a write loses nothing
    code = ("import os,sys; from kestrel_actions_enforce.audit import AuditLog; a=AuditLog(sys.argv[1]); "
            "a.write({'rule': 'x', 'outcome': 'killed'}); os._exit(9)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    log.close()
    records = read_audit(str(path))
    assert [r["outcome"] for r in records] == ["denied", "killed"]
    assert all(r["time"].endswith("Z") and r["ts_ns"] > 0 for r in records)
