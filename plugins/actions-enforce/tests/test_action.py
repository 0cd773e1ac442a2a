"""The ``enforce`` action: modes per rule, targets from the alert, counters, audit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from kestrel_actions_enforce.testing import need, run_exec
from kestrel_core.testing import run_kestrel, wait_for

from kestrel_actions_enforce.action import EnforceAction, EnforceSettings, parse_marks
from kestrel_actions_enforce.audit import read_audit
from kestrel_core.alert import Alert
from kestrel_core.testing import make_context, make_event


@pytest.fixture
def ctx() -> Any:
    return make_context()


@pytest.fixture
def action(ctx: Any, tmp_path: Path) -> Iterator[EnforceAction]:
    settings = EnforceSettings(audit_log=str(tmp_path / "audit.jsonl"), runtime_dir=str(tmp_path / "run"))
    act = EnforceAction(settings, ctx)
    yield act
    act.stop()


def exec_alert(ctx: Any, path: str, mode: str, actions: tuple[str, ...] = ("alert", "deny-exec"),
               rule_id: str = "r.exec") -> Alert:
    ev = make_event(ctx, "process", 1, 1, process__executable=path, process__pid=4242)
    return Alert(rule_id=rule_id, rule_name="exec", events=[ev], rule_mode=mode, rule_actions=actions)


def decisions(act: EnforceAction) -> dict:
    return act.context.stats.extra["metrics"]["kestrel_enforce_decisions"]["values"]()


def test_observe_and_alert_only_rules_do_nothing(ctx: Any, action: EnforceAction, binary: Path) -> None:
    assert "observe mode" in action.execute(exec_alert(ctx, str(binary), "observe"), simulate=False)
    assert "nothing to block" in action.execute(exec_alert(ctx, str(binary), "enforce", ("alert",)), simulate=False)
    assert action.enforcer is None  # nothing was installed for them


@need("fanotify")
def test_shadow_blocks_nothing_and_counts(ctx: Any, action: EnforceAction, binary: Path, tmp_path: Path) -> None:
    for _ in range(3):
        line = action.execute(exec_alert(ctx, str(binary), "shadow"), simulate=False)
        assert line.startswith("enforce: would deny-exec") and "shadow mode" in line
    assert run_exec(binary) == 0
    assert decisions(action)[("r.exec", "deny-exec", "fanotify", "would-deny")] == 3
    records = [r for r in read_audit(str(tmp_path / "audit.jsonl")) if r.get("rule") == "r.exec"]
    assert [r["outcome"] for r in records] == ["would-deny"] * 3
    assert all("process.executable=" + str(binary) in r["event"] for r in records)


@need("fanotify")
def test_enforce_mode_in_a_simulated_run_only_says_so(ctx: Any, action: EnforceAction, binary: Path) -> None:
    line = action.execute(exec_alert(ctx, str(binary), "enforce"), simulate=True)
    assert "would deny-exec" in line and "simulated run" in line
    assert run_exec(binary) == 0


@need("fanotify")
def test_enforce_mode_blocks_through_the_chosen_path(ctx: Any, action: EnforceAction, binary: Path,
                                                     tmp_path: Path) -> None:
    line = action.execute(exec_alert(ctx, str(binary), "enforce"), simulate=False)
    assert line == f"enforce: deny-exec {binary} via fanotify (blocking)"
    assert run_exec(binary) == "EPERM"
    wait_for(lambda: decisions(action).get(("r.exec", "deny-exec", "fanotify", "denied")) == 1,
             what="kernel-side denial counted under the rule")
    records = read_audit(str(tmp_path / "audit.jsonl"))
    assert records[0]["event"] == "start" and records[0]["chosen"]["deny-exec"] == "fanotify"
    block = next(r for r in records if r.get("outcome") == "blocking")
    assert block["latency_us"] >= 0 and block["path"] == "fanotify" and block["rule"] == "r.exec"
    metrics = action.context.stats.extra["metrics"]
    assert metrics["kestrel_enforce_enabled"]["values"]() == {(): 1.0}
    assert metrics["kestrel_enforce_path_chosen"]["values"][("deny-exec", "fanotify")] == 1.0


@need("signal")
def test_kill_action_kills_the_alerts_process(ctx: Any, action: EnforceAction) -> None:
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ev = make_event(ctx, "process", 1, 1, process__pid=victim.pid)
    alert = Alert(rule_id="r.kill", rule_name="kill", events=[ev], rule_mode="enforce", rule_actions=("kill",))
    assert action.execute(alert, simulate=False) == f"enforce: kill {victim.pid} via signal (killed)"
    assert victim.wait(timeout=10) == -9


def test_missing_target_field_is_reported_not_raised(ctx: Any, action: EnforceAction) -> None:
    ev = make_event(ctx, "process", 1, 1, process__name="x")
    alert = Alert(rule_id="r.none", rule_name="none", events=[ev], rule_mode="enforce", rule_actions=("deny-open",))
    assert action.execute(alert, simulate=False) == "enforce: cannot deny-open: no file.path in the alert's events"


def test_marks_setting_is_checked() -> None:
    assert parse_marks(["/:filesystem", "/tmp/x:inode"]) == [("/", "filesystem"), ("/tmp/x", "inode")]
    with pytest.raises(ValueError, match="'/tmp' must be 'path:inode|mount|filesystem'"):
        parse_marks(["/tmp"])


def test_bad_settings_are_located_in_the_profile(tmp_path: Path) -> None:
    profile = tmp_path / "p.toml"
    profile.write_text('[kestrel]\nplugins = ["actions-enforce"]\n\n[[sources]]\ntype = "jsonl"\npath = "/dev/null"\n\n'
                       '[[actions]]\ntype = "enforce"\nfanotify_marks = ["/tmp:bogus"]\n')
    r = run_kestrel("profile", "check", str(profile))
    assert r.returncode != 0
    assert f"{profile}:10:18: error:" in r.stderr + r.stdout and "'/tmp:bogus'" in r.stderr + r.stdout


def test_probe_describes_every_rung() -> None:
    probe = EnforceAction.probe()
    for rung in ("bpf-lsm", "fanotify", "kill-at-exec", "cgroup-connect", "signal"):
        assert f"{rung}: " in probe.reason
    assert "deny-exec -> " in probe.reason
