"""The bundled demo capture, replayed through the bundled Linux rule pack,
produces exactly the alerts documented in demo/README.md, and the capture is
what demo/build_capture.py (seeded) builds."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.packs import load_packs
from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "rules" / "linux"
CAPTURE = ROOT / "demo" / "capture.jsonl"
KLOG = ROOT / "demo" / "capture.klog"  # kestrel record --input demo/capture.jsonl -o demo/capture.klog

# Keep in sync with demo/README.md ("Expected alerts").
EXPECTED = {
    "kestrel.linux.account_db_unusual_writer": 1,
    "kestrel.linux.base64_decoded_payload_exec": 1,
    "kestrel.linux.cgroup_release_agent_write": 1,
    "kestrel.linux.chmod_exec_in_tmp": 3,
    "kestrel.linux.container_escape_nsenter": 1,
    "kestrel.linux.core_pattern_write": 1,
    "kestrel.linux.cron_file_write": 1,
    "kestrel.linux.crypto_miner": 2,
    "kestrel.linux.docker_privileged_host_mount": 1,
    "kestrel.linux.download_piped_to_shell": 2,
    "kestrel.linux.dropper_chain": 3,
    "kestrel.linux.exec_from_tmp": 4,
    "kestrel.linux.firewall_flushed": 1,
    "kestrel.linux.history_file_deleted": 1,
    "kestrel.linux.kernel_module_load_tool": 1,
    "kestrel.linux.kernel_module_unusual_loader": 1,
    "kestrel.linux.ld_so_preload_write": 1,
    "kestrel.linux.log_file_deleted": 1,
    "kestrel.linux.memfd_create_then_exec": 1,
    "kestrel.linux.memfd_exec": 1,
    "kestrel.linux.miner_cli_options": 1,
    "kestrel.linux.netcat_exec_shell": 1,
    "kestrel.linux.package_manager_hook_write": 1,
    "kestrel.linux.password_cracking_tool": 1,
    "kestrel.linux.pkexec_empty_argv": 1,
    "kestrel.linux.private_key_search": 1,
    "kestrel.linux.proc_mem_access": 1,
    "kestrel.linux.ptrace_credential_process": 1,
    "kestrel.linux.python_pty_spawn": 1,
    "kestrel.linux.rc_script_write": 1,
    "kestrel.linux.reverse_shell_dev_tcp": 2,
    "kestrel.linux.scripting_reverse_shell": 1,
    "kestrel.linux.security_tooling_disabled": 1,
    "kestrel.linux.seq_download_tool_then_tmp_exec": 2,
    "kestrel.linux.seq_interpreter_connect_then_shell": 1,
    "kestrel.linux.seq_kernel_module_staged_then_loaded": 1,
    "kestrel.linux.seq_new_user_then_sudoers": 1,
    "kestrel.linux.seq_setuid_copy_in_tmp": 1,
    "kestrel.linux.seq_shadow_read_then_connect": 1,
    "kestrel.linux.seq_shell_outbound_public": 1,
    "kestrel.linux.seq_tmp_binary_self_delete": 1,
    "kestrel.linux.seq_web_shell_then_discovery": 1,
    "kestrel.linux.setuid_bit_set": 1,
    "kestrel.linux.shadow_file_open": 2,
    "kestrel.linux.shadow_file_read_with_tool": 1,
    "kestrel.linux.shell_connects_to_rare_port": 2,
    "kestrel.linux.shell_history_tampering": 1,
    "kestrel.linux.shell_profile_write": 1,
    "kestrel.linux.socat_reverse_shell": 1,
    "kestrel.linux.ssh_authorized_keys_write": 1,
    "kestrel.linux.ssh_private_key_read": 1,
    "kestrel.linux.sudo_exploit_attempt": 1,
    "kestrel.linux.sudoers_modified": 1,
    "kestrel.linux.system_log_tampering": 1,
    "kestrel.linux.systemd_unit_write": 1,
    "kestrel.linux.tmp_binary_network_connect": 3,
    "kestrel.linux.udev_rule_write": 1,
    "kestrel.linux.unexpected_setuid_root": 1,
    "kestrel.linux.user_account_created": 1,
    "kestrel.linux.web_server_spawns_shell": 2,
    "kestrel.linux.webshell_recon": 1,
}


@lru_cache(maxsize=1)
def _builder():
    spec = importlib.util.spec_from_file_location("build_capture", ROOT / "demo" / "build_capture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@lru_cache(maxsize=1)
def _built():
    return _builder().build()


def _replay(batch: int):
    packset = load_packs([PACK])
    assert packset.ok, [str(e) for e in packset.errors]
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    with open(CAPTURE) as f:
        events = [norm.normalize(json.loads(line), "demo") for line in f if line.strip()]
    events.sort(key=lambda e: (e.ts_mono_ns, e.event_id))
    engine = DetectionEngine(schema, packset.rules)
    assert not engine.rule_errors, engine.rule_errors
    alerts = []
    for i in range(0, len(events), batch):
        alerts += engine.process_batch(events[i:i + batch])
    alerts += engine.flush()
    return alerts


def test_demo_capture_is_small_and_well_formed():
    assert CAPTURE.stat().st_size < 2_500_000
    n = 0
    with open(CAPTURE) as f:
        for line in f:
            ev = json.loads(line)
            assert ev["event"]["category"] and ev["event"]["action"] and "@timestamp" in ev
            n += 1
    assert 2000 <= n <= 5000


@pytest.mark.parametrize("batch", [1, 256, 100_000])
def test_demo_replay_gives_exactly_the_documented_alerts(batch):
    got = Counter(a.rule_id for a in _replay(batch))
    assert dict(got) == EXPECTED


def test_demo_exercises_most_of_the_pack():
    ids = {r.id for r in load_packs([PACK]).rules}
    assert set(EXPECTED) <= ids
    assert len(EXPECTED) >= 0.9 * len(ids)


def test_every_alert_is_completed_by_an_attack_story():
    """No benign event (background noise or a near-miss) completes an alert."""
    _, stories = _built()
    attack_ids = {i for s in stories.values() for i in s["event_ids"]}
    for a in _replay(512):
        assert a.events[-1].raw["event"]["id"] in attack_ids, (a.rule_id, a.events[-1].raw)


def test_demo_alert_evidence():
    by_rule: dict[str, list] = {}
    for a in _replay(512):
        by_rule.setdefault(a.rule_id, []).append(a)
    _, stories = _built()
    chain = set(stories["copied_shell_chain"]["event_ids"])
    # the eBPF end-to-end chain: chmod of the copy in /tmp, then its exec (same path)
    (drop,) = [a for a in by_rule["kestrel.linux.dropper_chain"] if a.events[-1].raw["event"]["id"] in chain]
    chmod, run = (e.raw for e in drop.events)
    assert chmod["event"]["action"] == "chmod" and chmod["file"]["mode"] == "755"
    assert run["event"]["action"] == "exec" and run["process"]["executable"] == chmod["file"]["path"]
    assert run["process"]["parent"]["name"] == "bash"
    read, sent = (e.raw for e in by_rule["kestrel.linux.seq_shadow_read_then_connect"][0].events)
    assert read["file"]["path"] == "/etc/shadow" and sent["destination"]["ip"] == "203.0.113.45"
    assert read["process"]["entity_id"] == sent["process"]["entity_id"]
    ns = by_rule["kestrel.linux.container_escape_nsenter"][0]
    assert ns.severity == "critical" and "T1611" in ns.tags
    # the benign sshd logins read /etc/shadow too: only the two attack readers alert
    readers = sorted(a.events[0].raw["process"]["name"] for a in by_rule["kestrel.linux.shadow_file_open"])
    assert readers == ["cat", "kworkerd"]


def test_demo_capture_is_reproducible_from_its_builder():
    """demo/build_capture.py (seeded) rebuilds the committed capture exactly."""
    events, stories = _built()
    assert len(stories) == len(_builder().STORIES)
    rebuilt = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    assert rebuilt == CAPTURE.read_text()


def test_demo_klog_is_up_to_date_with_the_capture():
    """The bundled .klog holds exactly capture.jsonl (its export gives the
    file back byte for byte); re-record it after rebuilding the capture."""
    from kestrel_core.klog import KlogReader, export_lines

    with KlogReader(KLOG, documents=True) as reader:
        exported = b"".join(export_lines(reader))
        assert reader.warnings == []
    assert exported == CAPTURE.read_bytes()


def test_demo_klog_replays_identically_across_hash_seeds():
    """`kestrel replay` of the bundled log in two processes with different
    PYTHONHASHSEEDs: byte-identical output with the documented alerts."""
    outputs = []
    for seed in ("1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, "-m", "kestrel_core", "replay", str(KLOG), "--rules", str(PACK)],
                              capture_output=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    lines = [json.loads(line) for line in outputs[0].splitlines()]
    footer = lines[-1]
    assert footer["counts"]["events"] == 2656 and footer["alerts_by_rule"] == EXPECTED
    got = Counter(line["rule"]["id"] for line in lines[1:-1])
    assert dict(got) == EXPECTED
