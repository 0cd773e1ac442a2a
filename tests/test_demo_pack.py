"""The bundled Linux rule pack loads cleanly and the bundled demo capture
produces exactly the alerts documented in demo/README.md."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.rules import load_rule_pack
from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "rules" / "linux"
CAPTURE = ROOT / "demo" / "capture.jsonl"

# Keep in sync with demo/README.md ("Expected alerts").
EXPECTED = {
    "kestrel.linux.reverse_shell_dev_tcp": 2,
    "kestrel.linux.web_server_spawns_shell": 2,
    "kestrel.linux.shell_connects_to_rare_port": 1,
    "kestrel.linux.seq_shell_outbound_public": 1,
    "kestrel.linux.webshell_recon": 1,
    "kestrel.linux.seq_web_shell_then_discovery": 1,
    "kestrel.linux.download_piped_to_shell": 1,
    "kestrel.linux.exec_from_temp_dir": 1,
    "kestrel.linux.seq_download_chmod_exec": 1,
    "kestrel.linux.user_account_created": 1,
    "kestrel.linux.sudoers_modified": 1,
    "kestrel.linux.seq_new_user_then_sudoers": 1,
    "kestrel.linux.ssh_authorized_keys_write": 1,
    "kestrel.linux.kernel_module_load": 1,
    "kestrel.linux.seq_kernel_module_staged_then_loaded": 1,
    "kestrel.linux.setuid_bit_set": 1,
    "kestrel.linux.seq_setuid_copy_of_shell": 1,
    "kestrel.linux.ld_so_preload_write": 1,
    "kestrel.linux.container_escape_nsenter": 1,
    "kestrel.linux.shadow_file_read": 1,
    "kestrel.linux.password_cracking_tool": 1,
    "kestrel.linux.system_log_tampering": 1,
}


def _load_pack():
    rules, errors = load_rule_pack([PACK])
    return rules, errors


def _replay(batch: int):
    rules, errors = _load_pack()
    assert not errors
    schema = Schema.ecs()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    with open(CAPTURE) as f:
        events = [norm.normalize(json.loads(line), "demo") for line in f if line.strip()]
    events.sort(key=lambda e: (e.ts_mono_ns, e.event_id))
    engine = DetectionEngine(schema, rules)
    assert not engine.rule_errors, engine.rule_errors
    alerts = []
    for i in range(0, len(events), batch):
        alerts += engine.process_batch(events[i:i + batch])
    alerts += engine.flush()
    return alerts, engine


def test_rule_pack_loads_without_errors():
    rules, errors = _load_pack()
    assert errors == []
    assert 25 <= len(rules) <= 40
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    for r in rules:
        assert r.id.startswith("kestrel.linux."), r.id
        assert r.severity in ("low", "medium", "high", "critical"), r.id
        assert r.description and r.name, r.id
        assert any(t.startswith("T1") for t in r.tags), f"{r.id}: no MITRE technique tag"
    assert sum(1 for r in rules if r.query.lstrip().startswith("sequence")) >= 4


def test_rule_pack_compiles_in_the_engine():
    rules, _ = _load_pack()
    engine = DetectionEngine(Schema.ecs(), rules, strict="error")
    assert engine.rule_errors == []
    assert len(engine.rules) == len(rules)


def test_demo_capture_is_small_and_well_formed():
    assert CAPTURE.stat().st_size < 2_000_000
    n = 0
    with open(CAPTURE) as f:
        for line in f:
            ev = json.loads(line)
            assert ev["event"]["category"] and "@timestamp" in ev
            n += 1
    assert 2000 <= n <= 5000


@pytest.mark.parametrize("batch", [1, 256, 100_000])
def test_demo_replay_gives_exactly_the_documented_alerts(batch):
    alerts, _ = _replay(batch)
    got = Counter(a.rule_id for a in alerts)
    assert dict(got) == EXPECTED


def test_demo_alert_evidence():
    alerts, _ = _replay(512)
    by_rule = {}
    for a in alerts:
        by_rule.setdefault(a.rule_id, []).append(a)
    seq = by_rule["kestrel.linux.seq_download_chmod_exec"][0]
    assert [e.raw["event"]["category"][0] for e in seq.events] == ["file", "process", "process"]
    dropped = seq.events[0].raw["file"]["path"]
    assert seq.events[2].raw["process"]["executable"] == dropped
    assert dropped in seq.events[1].raw["process"]["args"]
    ns = by_rule["kestrel.linux.container_escape_nsenter"][0]
    assert ns.severity == "critical"
    assert "T1611" in ns.tags


def test_demo_capture_is_reproducible_from_its_builder():
    """demo/build_capture.py (seeded) rebuilds the committed capture exactly."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_capture", ROOT / "demo" / "build_capture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    events, injected = mod.build()
    assert len(injected) == len(mod.STORIES)
    rebuilt = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events)
    assert rebuilt == CAPTURE.read_text()
