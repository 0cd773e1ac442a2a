"""The shipped systemd unit (packaging/systemd/kestrel.service): systemd's own
checker accepts it, its capabilities are real ones, and docs/deployment.md
explains each of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "packaging" / "systemd" / "kestrel.service"
DOC = REPO / "docs" / "deployment.md"
INSTALL_ROOT = "/opt/kestrel"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is not installed: apt-get install systemd")
    return found


def _verify(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # The unit runs the checkout installed at /opt/kestrel; verify checks that
    # every Exec path is executable, so it is pointed at this checkout.
    unit = tmp_path / "kestrel.service"
    unit.write_text(text.replace(INSTALL_ROOT, str(REPO)))
    return subprocess.run([_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    done = _verify(UNIT.read_text(), tmp_path)
    # verify exits 0 on unknown or misspelt keys and only warns: any output is a failure.
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_verify_catches_a_misspelt_directive(tmp_path):
    """The check above can fail: a typo in a hardening key is reported."""
    done = _verify(UNIT.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"), tmp_path)
    assert "ProtectSytem" in done.stdout + done.stderr


def _unit_values(key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(key + "=")]


def test_the_capabilities_are_real_and_each_is_documented():
    caps = " ".join(_unit_values("CapabilityBoundingSet")).split()
    assert caps, "the unit must bound its capabilities"
    capsh = shutil.which("capsh")
    if capsh is None:
        pytest.fail("capsh is not installed: apt-get install libcap2-bin")
    for cap in caps:
        assert subprocess.run([capsh, f"--supports={cap.lower()}"], capture_output=True).returncode == 0, cap
    doc = DOC.read_text()
    for cap in caps:
        assert re.search(rf"`{cap}`", doc), f"{cap} is in the unit but docs/deployment.md does not say why"
    documented = set(re.findall(r"`(CAP_[A-Z_]+)`", doc.split("## Capabilities", 1)[1].split("\n## ", 1)[0]))
    assert documented == set(caps), documented ^ set(caps)


def test_the_unit_limits_memory_and_cpu_and_hardens():
    for key in ("MemoryMax", "CPUQuota", "NoNewPrivileges", "ProtectSystem"):
        assert _unit_values(key), key
    assert _unit_values("NoNewPrivileges") == ["yes"] and _unit_values("ProtectSystem") == ["strict"]


def test_the_prewarm_command_the_unit_runs_exists():
    pre = _unit_values("ExecStartPre")
    assert pre and "kestrel_sources_ebpf.objects --prewarm" in pre[0]
    python = REPO / ".venv" / "bin" / "python"
    done = subprocess.run([str(python), "-m", "kestrel_sources_ebpf.objects", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--prewarm" in done.stdout, done.stderr


def _bounding_set() -> str:
    caps = " ".join(_unit_values("CapabilityBoundingSet")).split()
    return ",".join(["-all"] + ["+" + c.lower().removeprefix("cap_") for c in caps])


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv (util-linux) to run the agent with the unit's capabilities")
def test_the_agent_detects_with_only_the_units_capabilities_and_no_new_privileges(tmp_path):
    """`kestrel run` of the bundled default profile under the unit's bounding
    set and NoNewPrivileges (setpriv, as systemd would set them up): the eBPF
    programs compile in the helper and load, and an alert is raised."""
    import signal
    import time

    env = dict(os.environ, KESTREL_EBPF_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    log = tmp_path / "agent.log"
    with open(log, "w") as out:
        agent = subprocess.Popen(["setpriv", "--no-new-privs", "--bounding-set", _bounding_set(), "--inh-caps", "-all",
                                  "--", str(REPO / ".venv" / "bin" / "kestrel"), "run"],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while "ebpf: watching" not in log.read_text() and agent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "ebpf: watching" in log.read_text() and "compiled in a helper process" in log.read_text(), \
            log.read_text()[-3000:]
        status = Path(f"/proc/{agent.pid}/status").read_text()
        assert "NoNewPrivs:\t1" in status
        deadline = time.monotonic() + 20
        while "shadow_file_open" not in log.read_text() and time.monotonic() < deadline:
            subprocess.run(["cat", "/etc/shadow"], stdout=subprocess.DEVNULL, check=True)
            time.sleep(0.5)
        assert "shadow_file_open" in log.read_text(), log.read_text()[-3000:]
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(60)
    assert "stopped (signal)" in log.read_text()
