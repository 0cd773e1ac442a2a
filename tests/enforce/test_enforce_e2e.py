"""End to end (issue 6): rules drive enforcement through `kestrel run`.

Each test writes a rule pack and a profile, starts `kestrel run` as a
subprocess on the real kernel (root), acts from other processes and waits on
conditions (audit-log lines, alert lines) with deadlines.  fanotify marks go
on a private tmpfs, so nothing else on the machine waits for the responder.
Skipped only when a capability probe says a mechanism is absent.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from kestrel_actions_enforce.testing import (connect_from, listening_server, need, open_for_write, run_exec,
                                              temp_cgroup)
from kestrel_core.testing import private_tmpfs, wait_for

KESTREL = Path(sys.executable).with_name("kestrel")


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    """A private tmpfs (the fanotify marks' target), with copies of /bin/true."""
    with private_tmpfs(tmp_path / "mnt", "kestrel-enforce-e2e") as path:
        for sub in ("bin", "armed", "free"):
            (path / sub).mkdir()
            shutil.copy("/bin/true", path / sub / "t")
        yield path


@pytest.fixture
def cgroup() -> Iterator[str]:
    with temp_cgroup("kestrel-e2e") as path:
        yield path


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    with listening_server() as address:
        yield address


class KestrelRun:
    """`kestrel run` on a temp pack and profile; audit log and alerts readable."""

    def __init__(self, tmp: Path, rules: str, action: str, *, mode: str = "enforce", sources: str = "",
                 watch: bool = False) -> None:
        self.tmp = tmp
        self.runtime_dir = tmp / "run"
        self.audit_path = tmp / "audit.jsonl"
        self.alerts_path = tmp / "alerts.jsonl"
        (tmp / "pack").mkdir()
        (tmp / "pack" / "pack.toml").write_text('[pack]\nname = "e2e"\nversion = "1"\npriority = 10\n')
        (tmp / "pack" / "rules.toml").write_text(rules)
        plugins = '"actions-enforce", "sources-fanotify"'
        if not sources:  # a live source that sees nothing keeps the run going (no events: no detections)
            quiet = tmp / "quiet"
            quiet.mkdir()
            sources = f'[[sources]]\ntype = "fanotify"\npaths = ["{quiet}"]\nmark = "inode"\npoll_ms = 50\n'
        (tmp / "profile.toml").write_text(f'''
[kestrel]
mode = "{mode}"
plugins = [{plugins}]

[rules]
paths = ["pack"]
watch = {str(watch).lower()}

[bus]
flush_interval_ms = 20

{sources}

[[actions]]
type = "enforce"
audit_log = "{self.audit_path}"
runtime_dir = "{self.runtime_dir}"
{action}

[[sinks]]
type = "jsonl"
path = "{self.alerts_path}"
''')
        self.lines: list[str] = []
        self.proc = subprocess.Popen([str(KESTREL), "run", "--profile", str(tmp / "profile.toml")],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp)
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(x) for x in self.audit_path.read_text().splitlines() if x.strip()]

    def alerts(self) -> list[dict[str, Any]]:
        if not self.alerts_path.exists():
            return []
        return [json.loads(x) for x in self.alerts_path.read_text().splitlines() if x.strip()]

    def wait_log(self, text: str, timeout_s: float = 30) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"kestrel exited ({self.proc.returncode}):\n{self.log}")
            return text in self.log
        wait_for(seen, timeout_s, f"{text!r} in kestrel's log")

    def wait_audit(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 15) -> dict[str, Any]:
        return wait_for(lambda: next((r for r in self.audit() if pred(r)), None), timeout_s, f"audit: {what}")

    def enforce(self, state: str) -> None:
        res = subprocess.run([str(KESTREL), "enforce", state, "--runtime-dir", str(self.runtime_dir)],
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(timeout=30) == 0, self.log
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        self._reader.join(5)


@pytest.fixture
def kestrel_run(tmp_path: Path) -> Iterator[Callable[..., KestrelRun]]:
    runs: list[KestrelRun] = []

    def start(*args: Any, **kwargs: Any) -> KestrelRun:
        run = KestrelRun(tmp_path, *args, **kwargs)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()


# ---------------------------------------------------------------------- rules


def rules_text(mnt: Path, port: int, mode: str) -> str:
    return f'''
[[rule]]
id = "e2e-deny-exec"
name = "Binary run from the watched bin directory"
mode = "{mode}"
actions = ["alert", "deny-exec"]
query = 'process where event.action == "exec" and process.executable : "{mnt}/bin/*"'

[[rule]]
id = "e2e-deny-open"
name = "Protected file opened"
mode = "{mode}"
actions = ["alert", "deny-open"]
query = 'file where file.path == "{mnt}/protected.txt"'

[[rule]]
id = "e2e-deny-connect"
name = "Connect to the test server"
mode = "{mode}"
actions = ["alert", "deny-connect"]
query = 'network where destination.ip == "127.0.0.1" and destination.port == {port}'
'''


def action_text(mnt: Path, cgroup: str = "", **extra: str) -> str:
    lines = [f'fanotify_marks = ["{mnt}:mount"]', "budget_ms = 200.0"]
    if cgroup:
        lines.append(f'confine_cgroups = ["{cgroup}"]')
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------- tests


@need("fanotify", "cgroup-connect")
def test_enforce_denies_first_exec_open_and_connect_then_rollback_allows_all(
        mnt: Path, cgroup: str, server: tuple[str, int], kestrel_run: Callable[..., KestrelRun]) -> None:
    host, port = server
    (mnt / "protected.txt").write_text("secret")
    run = kestrel_run(rules_text(mnt, port, "enforce"), action_text(mnt, cgroup))
    run.wait_log("rule(s) decide inline")
    run.wait_audit(lambda r: r.get("via") == "confine" and r.get("outcome") == "blocking", "connect confined")

    # the FIRST exec and open are refused: the responder asked the rules
    assert run_exec(mnt / "bin" / "t") == "EPERM"
    res = open_for_write(mnt / "protected.txt")
    assert res.returncode != 0 and "PermissionError" in res.stderr, res.stderr
    res = connect_from(cgroup, host, port)
    assert res.returncode != 0 and "PermissionError" in res.stderr, res.stderr
    assert run_exec(mnt / "free" / "t") == 0  # no rule: allowed

    run.enforce("off")  # returns once every enforcer acknowledged
    assert run_exec(mnt / "bin" / "t") == 0
    assert open_for_write(mnt / "protected.txt").returncode == 0
    assert (mnt / "protected.txt").read_text() == "secretx"  # the denied write never happened
    assert connect_from(cgroup, host, port).returncode == 0
    run.enforce("on")
    assert run_exec(mnt / "bin" / "t") == "EPERM"

    run.wait_audit(lambda r: r.get("outcome") == "denied" and r.get("action") == "deny-connect", "connect denial")
    run.stop()
    audit = run.audit()

    def outcomes(rule: str, action: str) -> list[str]:
        return [r["outcome"] for r in audit if r.get("rule") == rule and r.get("action") == action
                and r.get("via") != "confine"]

    assert outcomes("e2e-deny-exec", "deny-exec") == ["denied", "allowed-enforcement-off", "denied"], audit
    # the write while off, then this test's own read of the file
    assert outcomes("e2e-deny-open", "deny-open") == ["denied", "allowed-enforcement-off", "allowed-enforcement-off"]
    assert "denied" in outcomes("e2e-deny-connect", "deny-connect"), audit
    assert [r["enabled"] for r in audit if r.get("event") == "enforcement"] == [False, True]
    inline = [r for r in audit if r.get("via") == "inline"]
    assert all(r["latency_us"] is not None and r["pid"] > 0 for r in inline), inline
    # each inline decision also reached the sinks as an alert, with its outcome
    lines = [line for a in run.alerts() for line in a["actions"] if "inline" in line]
    assert sum("enforce: denied deny-exec" in x for x in lines) == 2, lines
    assert any("enforce: denied deny-open" in x for x in lines), lines


@need("fanotify")
def test_shadow_mode_blocks_nothing_and_counts_would_deny(mnt: Path, server: tuple[str, int],
                                                           kestrel_run: Callable[..., KestrelRun]) -> None:
    (mnt / "protected.txt").write_text("secret")
    run = kestrel_run(rules_text(mnt, server[1], "shadow"), action_text(mnt))
    run.wait_log("rule(s) decide inline")
    assert run_exec(mnt / "bin" / "t") == 0
    assert run_exec(mnt / "bin" / "t") == 0
    assert open_for_write(mnt / "protected.txt").returncode == 0
    run.stop()
    audit = run.audit()
    would = [(r["rule"], r["why"]) for r in audit if r.get("outcome") == "would-deny"]
    assert would.count(("e2e-deny-exec", "shadow mode")) == 2, audit
    assert would.count(("e2e-deny-open", "shadow mode")) >= 1, audit
    assert not [r for r in audit if r.get("outcome") == "denied"], audit


SEQ_RULE = '''
[[rule]]
id = "e2e-seq-armed"
name = "Trigger opened, then a binary of the armed directory run by the same process"
mode = "enforce"
actions = ["alert", "deny-exec"]
query = \'\'\'
sequence by process.pid with maxspan=2s
  [file where event.action == "open" and file.path == "{mnt}/trigger"]
  [process where event.action == "exec" and process.executable : "{mnt}/armed/*"]
\'\'\'
'''

# opens the trigger, waits for a line on stdin, then execs argv[2] (same pid)
STEP_ONE = ("import os, sys; open(sys.argv[1]).close(); print('opened', flush=True); sys.stdin.readline(); "
            "os.execv(sys.argv[2], [sys.argv[2]])")


@need("kill-at-exec", "fanotify")
def test_sequence_armed_blocking_denies_last_step_until_window_expires(
        mnt: Path, kestrel_run: Callable[..., KestrelRun]) -> None:
    (mnt / "trigger").write_text("")
    sources = f'''
[[sources]]
type = "fanotify"
paths = ["{mnt}"]
mark = "mount"
events = ["open", "exec"]
poll_ms = 20
'''
    run = kestrel_run(SEQ_RULE.format(mnt=mnt), "", sources=sources)
    run.wait_log("sequence rule(s) arm their last step")
    run.wait_log("fanotify: watching")
    binary = mnt / "armed" / "t"

    def step_one() -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", STEP_ONE, str(mnt / "trigger"), str(binary)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "opened"
        run.wait_audit(lambda r: r.get("outcome") == "armed" and r.get("pid") == child.pid, "the process armed")
        return child

    # the last step is denied: the armed process dies at its exec
    child = step_one()
    child.communicate("go\n", timeout=30)
    assert child.returncode == -signal.SIGKILL
    run.wait_audit(lambda r: r.get("outcome") == "killed" and r.get("pid") == child.pid
                   and r.get("rule") == "e2e-seq-armed", "the kill at exec")

    # after the window (2 s) the arm is withdrawn, on the clock, and the same step is allowed
    child = step_one()
    run.wait_audit(lambda r: r.get("outcome") == "disarmed" and r.get("pid") == child.pid, "the window to expire", 20)
    child.communicate("go\n", timeout=30)
    assert child.returncode == 0
    disarm = next(r for r in run.audit() if r.get("outcome") == "disarmed" and r.get("pid") == child.pid)
    assert disarm["reason"] == "maxspan"
    assert binary.exists() and run_exec(binary) == 0  # no lasting path-wide block either
    run.stop()
    alerts = [a for a in run.alerts() if a["rule"]["id"] == "e2e-seq-armed"]
    # the killed exec completed the sequence; the allowed one came after the window: no match
    assert len(alerts) == 1, alerts
    assert "sequence-armed" in alerts[0]["actions"][0]


@need("fanotify")
@pytest.mark.parametrize("fail_open", [True, False])
def test_responder_past_budget_follows_fail_setting_and_counts(
        mnt: Path, fail_open: bool, kestrel_run: Callable[..., KestrelRun]) -> None:
    # a budget no inline decision (a /proc read, an engine run) can meet
    action = f'fanotify_marks = ["{mnt}:mount"]\nbudget_ms = 0.001\nfail_open = {str(fail_open).lower()}'
    run = kestrel_run(rules_text(mnt, 9, "enforce"), action)
    run.wait_log("rule(s) decide inline")
    denied_binary, free_binary = mnt / "bin" / "t", mnt / "free" / "t"
    if fail_open:  # the rule would deny it; past the budget it is allowed
        assert run_exec(denied_binary) == 0
    else:  # no rule denies it; past the budget it is refused
        assert run_exec(free_binary) == "EPERM"
    outcome = "timeout-fail-open" if fail_open else "timeout-fail-closed"
    rec = run.wait_audit(lambda r: r.get("outcome") == outcome, f"{outcome} counted")
    assert rec["count"] >= 1 and rec["budget_ms"] == 0.001
    run.stop()


@need("fanotify")
def test_hot_reload_rebuilds_the_inline_rules(mnt: Path, kestrel_run: Callable[..., KestrelRun]) -> None:
    rules = rules_text(mnt, 9, "enforce")
    run = kestrel_run(rules, action_text(mnt), watch=True)
    run.wait_log("2 rule(s) decide inline")
    assert run_exec(mnt / "bin" / "t") == "EPERM"
    # take the exec rule out of enforcement: the responder's engine follows the reload
    (run.tmp / "pack" / "rules.toml").write_text(rules.replace('mode = "enforce"', 'mode = "observe"', 1))
    run.wait_log("1 rule(s) decide inline (e2e-deny-open)")
    assert run_exec(mnt / "bin" / "t") == 0
    run.stop()


SEQ_OPEN_RULE = '''
[[rule]]
id = "e2e-seq-open"
name = "Trigger opened, then the secret opened by the same process"
mode = "enforce"
actions = ["alert", "deny-open"]
query = \'\'\'
sequence by process.pid with maxspan=30s
  [file where event.action == "open" and file.path == "{mnt}/trigger"]
  [file where event.action == "open" and file.path == "{mnt}/secret"]
\'\'\'
'''

# opens the trigger, waits for a line on stdin, then tries to open argv[2]
OPEN_AFTER = ("import sys; open(sys.argv[1]).close(); print('opened', flush=True); sys.stdin.readline(); "
              "open(sys.argv[2]).close(); print('read', flush=True)")


@need("fanotify")
def test_sequence_armed_blocking_denies_the_last_open_for_that_process_only(
        mnt: Path, kestrel_run: Callable[..., KestrelRun]) -> None:
    (mnt / "trigger").write_text("")
    (mnt / "secret").write_text("s")
    sources = f'''
[[sources]]
type = "fanotify"
paths = ["{mnt}"]
mark = "mount"
events = ["open"]
poll_ms = 20
'''
    run = kestrel_run(SEQ_OPEN_RULE.format(mnt=mnt), action_text(mnt), sources=sources)
    run.wait_log("sequence rule(s) arm their last step")
    run.wait_log("fanotify: watching")
    child = subprocess.Popen([sys.executable, "-c", OPEN_AFTER, str(mnt / "trigger"), str(mnt / "secret")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "opened"
    run.wait_audit(lambda r: r.get("outcome") == "armed" and r.get("pid") == child.pid, "the process armed")
    assert (mnt / "secret").read_text() == "s"  # another process: not armed
    out, err = child.communicate("go\n", timeout=30)
    assert child.returncode == 1 and "PermissionError" in err, err
    rec = run.wait_audit(lambda r: r.get("outcome") == "denied" and r.get("pid") == child.pid, "the denied open")
    assert rec["rule"] == "e2e-seq-open" and rec["reason"] == "armed-pid" and rec["target"] == f"{mnt}/secret"
    run.stop()
