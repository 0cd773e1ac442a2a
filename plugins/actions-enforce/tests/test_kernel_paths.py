"""Each mechanism against the real kernel, and the instant rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kestrel_actions_enforce.audit import read_audit
from kestrel_actions_enforce.control import StateWatcher, set_enforcement

from kestrel_actions_enforce.testing import connect_from, need, open_for_write, rung_probe, run_exec
from kestrel_core.testing import wait_for


def test_bpf_lsm_probe_reports_the_reason() -> None:
    probe = rung_probe("bpf-lsm")
    if probe.available:
        pytest.skip("BPF-LSM loads on this kernel: nothing to report")
    assert probe.reason, "an unavailable rung must say why"
    assert "errno" in probe.reason or "LSM" in probe.reason


@need("fanotify")
def test_fanotify_denies_exec_with_eperm(make_enforcer, binary: Path, audit_path: Path) -> None:
    enforcer = make_enforcer(rungs=["fanotify"])
    assert enforcer.chosen["deny-exec"] == "fanotify"
    assert run_exec(binary) == 0
    enforcer.block("deny-exec", "r.exec", path=str(binary))
    assert run_exec(binary) == "EPERM"
    assert run_exec(Path("/bin/true")) == 0  # only the protected file
    wait_for(lambda: any(r.get("outcome") == "denied" and r.get("target") == str(binary)
                         for r in read_audit(str(audit_path))), what="audited exec denial")


@need("kill-at-exec")
def test_kill_at_exec_kills_a_denied_binary(make_enforcer, binary: Path, audit_path: Path) -> None:
    enforcer = make_enforcer(rungs=["kill-at-exec"])
    assert enforcer.chosen["deny-exec"] == "kill-at-exec"
    enforcer.block("deny-exec", "r.kill", path=str(binary))
    assert run_exec(binary) == -9
    assert run_exec(Path("/bin/true")) == 0
    wait_for(lambda: any(r.get("outcome") == "killed" and r.get("rule") == "r.kill"
                         for r in read_audit(str(audit_path))), what="audited kill")
    assert enforcer.kernel_metrics()[("kill-at-exec", "kills_denied_path")] >= 1


@need("fanotify")
def test_fanotify_denies_open_for_write(make_enforcer, tmp_path: Path) -> None:
    protected = tmp_path / "protected.conf"
    protected.write_text("keep\n")
    enforcer = make_enforcer(rungs=["fanotify"])
    enforcer.block("deny-open", "r.open", path=str(protected))
    r = open_for_write(protected)
    assert r.returncode != 0 and "PermissionError" in r.stderr and "Errno 1]" in r.stderr, r.stderr
    assert protected.read_text() == "keep\n"
    other = tmp_path / "other.conf"
    assert open_for_write(other).returncode == 0


@need("cgroup-connect")
def test_connect_from_confined_cgroup_fails(make_enforcer, cgroup: str, server: tuple[str, int]) -> None:
    host, port = server
    enforcer = make_enforcer(rungs=["cgroup-connect"])
    enforcer.block("deny-connect", "r.net", cgroup=cgroup, ip=host, port=port)
    r = connect_from(cgroup, host, port)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    outside = subprocess.run([sys.executable, "-c", "import socket,sys; socket.create_connection((sys.argv[1], "
                              "int(sys.argv[2])), timeout=5)", host, str(port)], capture_output=True, timeout=30)
    assert outside.returncode == 0  # only the confined cgroup
    other_port = connect_from(cgroup, host, port + 1 if port < 65535 else port - 1)
    assert "Operation not permitted" not in other_port.stderr  # refused maybe, but not denied


@need("cgroup-connect")
def test_connect_deny_any_port_and_subcgroup(make_enforcer, cgroup: str, server: tuple[str, int]) -> None:
    host, port = server
    enforcer = make_enforcer(rungs=["cgroup-connect"])
    enforcer.block("deny-connect", "r.net", cgroup=cgroup, ip=host, port=0)
    child = os.path.join(cgroup, "child")
    os.mkdir(child)
    try:
        r = connect_from(child, host, port)
        assert "Operation not permitted" in r.stderr, r.stderr
    finally:
        wait_for(lambda: not Path(child, "cgroup.procs").read_text().strip(), what="child cgroup to empty")
        os.rmdir(child)


@need("fanotify", "kill-at-exec", "cgroup-connect")
def test_enforcement_off_lets_all_three_through_at_once(make_enforcer, binary: Path, tmp_path: Path, cgroup: str,
                                                       server: tuple[str, int], audit_path: Path) -> None:
    host, port = server
    protected = tmp_path / "protected"
    protected.write_text("")
    enforcer = make_enforcer()
    runtime = tmp_path / "run"
    watcher = StateWatcher(str(runtime), enforcer.set_enabled)
    watcher.start()
    try:
        enforcer.block("deny-exec", "r1", path=str(binary))
        enforcer.block("deny-open", "r2", path=str(protected))
        enforcer.block("deny-connect", "r3", cgroup=cgroup, ip=host, port=port)
        armed = enforcer.paths["kill-at-exec"]
        armed.deny_exec(str(binary))  # both exec mechanisms hold the deny
        assert run_exec(binary) == "EPERM"
        assert open_for_write(protected).returncode != 0
        assert connect_from(cgroup, host, port).returncode != 0

        assert set_enforcement(False, runtime) == [os.getpid()]  # returns once applied
        assert run_exec(binary) == 0
        assert open_for_write(protected).returncode == 0
        assert connect_from(cgroup, host, port).returncode == 0

        set_enforcement(True, runtime)
        assert run_exec(binary) == "EPERM"
        assert connect_from(cgroup, host, port).returncode != 0
    finally:
        watcher.stop()
    records = read_audit(str(audit_path))
    switches = [r["enabled"] for r in records if r.get("event") == "enforcement"]
    assert switches == [False, True]
    outcomes = {(r.get("action"), r.get("outcome")) for r in records}
    assert ("deny-exec", "denied") in outcomes and ("deny-open", "denied") in outcomes
    assert ("deny-exec", "allowed-enforcement-off") in outcomes
    wait_for(lambda: sum(1 for r in read_audit(str(audit_path))
                         if r.get("action") == "deny-connect" and r.get("outcome") == "denied") == 2,
             what="both connect denials audited")


@need("kill-at-exec")
def test_armed_tgid_dies_at_next_exec_and_not_after_disarm(make_enforcer, tmp_path: Path, audit_path: Path) -> None:
    enforcer = make_enforcer(rungs=["kill-at-exec"])
    # The child says it runs (its own exec is over), waits for a line, then
    # execs /bin/true: arming happens in between.
    code = "import os,sys; print('ready', flush=True); sys.stdin.readline(); os.execv('/bin/true', ['true'])"

    def run(arm: bool, disarm: bool) -> int:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        if arm:
            enforcer.arm_pid(child.pid, "r.seq")
        if disarm:
            enforcer.disarm_pid(child.pid, "r.seq")
        child.stdin.write(b"go\n")
        child.stdin.close()
        return child.wait(timeout=30)

    assert run(arm=True, disarm=False) == -9
    assert run(arm=True, disarm=True) == 0
    assert run(arm=False, disarm=False) == 0
    wait_for(lambda: any(r.get("outcome") == "killed" and r.get("reason") == "armed-tgid" and r.get("action") == "kill"
                         for r in read_audit(str(audit_path))), what="audited armed kill")
    outcomes = [r.get("outcome") for r in read_audit(str(audit_path)) if r.get("action") == "arm"]
    assert outcomes == ["armed", "armed", "disarmed"]


@need("fanotify")
def test_fanotify_budget_overrun_fails_open_and_is_audited(make_enforcer, tmp_path: Path, audit_path: Path) -> None:
    import threading

    protected = tmp_path / "slow"
    protected.write_text("")
    enforcer = make_enforcer(rungs=["fanotify"], budget_ms=50, fail_open=True)
    path = enforcer.paths["fanotify"]
    release = threading.Event()
    real = path.decide

    def slow(event):  # a policy stuck past the budget
        release.wait(5)
        return real(event)

    enforcer.block("deny-open", "r.slow", path=str(protected))
    path._responder.set_policy(slow)
    try:
        assert open_for_write(protected).returncode == 0  # fail-open: allowed, and the opener did not hang
    finally:
        release.set()
    enforcer.poll()
    rec = [r for r in read_audit(str(audit_path)) if r.get("outcome") == "timeout-fail-open"]
    assert rec and rec[0]["count"] >= 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_kernel_rungs_probe_available_on_a_fresh_boot() -> None:
    """With tracefs and cgroup2 unmounted (a private mount namespace, as on a
    fresh machine), kill-at-exec and cgroup connect deny mount what they need
    and probe available."""
    code = ("import subprocess\nfrom kestrel_core import host\n"
            "for p, t in list(host.mounts()):\n"
            "    if t in ('tracefs', 'cgroup2'):\n"
            "        subprocess.run(['umount', '-l', p], check=True)\n"
            "assert host.cgroup2_root() is None\n"
            "from kestrel_actions_enforce.enforcer import probe_ladder\n"
            "probes = probe_ladder(['kill-at-exec', 'cgroup-connect'])\n"
            "for name, probe in probes.items(): print(name, probe.available, probe.reason)\n")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "kill-at-exec True" in done.stdout and "cgroup-connect True" in done.stdout, done.stdout + done.stderr


_OBJECTS_RUN = """
import json, sys
from pathlib import Path
from kestrel_actions_enforce import kprogram
from kestrel_actions_enforce.enforcer import Enforcer
from kestrel_actions_enforce.testing import run_exec
kprogram.LOADER = "objects"
binary = Path(sys.argv[1])
enforcer = Enforcer(rungs=["kill-at-exec", "cgroup-connect"])
enforcer.start()
enforcer.block("deny-exec", "r.kill", path=str(binary))
killed = run_exec(binary)
enforcer.clear()  # deletes every key of the hash maps (no bcc table to do it)
after_clear = run_exec(binary)
maps = Path("/proc/self/maps").read_text()
print(json.dumps({"killed": killed, "after_clear": after_clear,
                  "backends": {n: p.backend for n, p in enforcer.paths.items()},
                  "cache_hit": {n: p._prog.cache_hit for n, p in enforcer.paths.items()},
                  "compiler_mapped": sorted({line.split()[-1] for line in maps.splitlines()
                                             if any(s in line for s in ("libbcc", "LLVM", "clang"))}),
                  "bcc_imported": "bcc" in sys.modules}))
enforcer.close()
"""


def test_bpf_rungs_load_compiled_objects_and_no_compiler_enters_the_agent(binary: Path, tmp_path: Path) -> None:
    """kill-at-exec and cgroup-connect from compiled objects: the first start
    compiles them in the helper process into an empty cache, the second loads
    the cached files; the kill works both times and the enforcing process
    never maps libbcc, LLVM or clang."""
    env = dict(os.environ, KESTREL_EBPF_CACHE=str(tmp_path / "cache"))
    cache = tmp_path / "cache"
    runs, written = [], []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", _OBJECTS_RUN, str(binary)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        written.append({p.name: p.stat().st_mtime_ns for p in cache.iterdir()})
    for run in runs:
        assert run["killed"] == -9 and run["after_clear"] == 0, run
        assert run["backends"] == {"kill-at-exec": "objects", "cgroup-connect": "objects"}, run
        assert run["compiler_mapped"] == [] and not run["bcc_imported"], run
        # the probe compiled them (first run) or found them: install always loads the cached file
        assert set(run["cache_hit"].values()) == {True}, run
    assert sorted(name.split("-")[1] for name in written[0]) == ["connect_deny", "exec_kill"]
    assert written[1] == written[0], "the second start recompiled"


def test_bcc_loader_is_still_a_working_fallback(make_enforcer, binary: Path, cgroup: str,
                                                 server: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    from kestrel_actions_enforce import kprogram

    monkeypatch.setattr(kprogram, "LOADER", "bcc")
    enforcer = make_enforcer(rungs=["kill-at-exec", "cgroup-connect"])
    assert {n: p.backend for n, p in enforcer.paths.items()} == {"kill-at-exec": "bcc", "cgroup-connect": "bcc"}
    enforcer.block("deny-exec", "r.kill", path=str(binary))
    assert run_exec(binary) == -9
    host, port = server
    assert connect_from(cgroup, host, port).returncode == 0
    enforcer.block("deny-connect", "r.net", cgroup=cgroup, ip=host, port=port)
    r = connect_from(cgroup, host, port)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    wait_for(lambda: enforcer.kernel_metrics()[("cgroup-connect", "connects_denied")] >= 1, what="counted denial")
