"""The bundled Linux rule pack (rules/linux): loads cleanly, meets the pack's
coverage requirements, speaks only the ECS fields Kestrel's live sources
produce, and every rule's golden tests pass (one test case per rule id, so a
failure names the rule)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.packs import load_packs, run_rule_test
from kestrel_core.rules import ATTACK_ID
from kestrel_core.schema import Schema

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules" / "linux"
PACKSET = load_packs([PACK])
RULES = {r.id: r for r in PACKSET.rules}

# The fields Kestrel's live sources (sources-ebpf, sources-portable,
# sources-fanotify) produce: the contract rules are written against.
LIVE_FIELDS = {
    "@timestamp", "event.kind", "event.category", "event.type", "event.action", "event.module", "host.name",
    "process.pid", "process.entity_id", "process.name", "process.executable", "process.args",
    "process.args_count", "process.command_line", "process.working_directory", "process.exit_code",
    "process.parent.pid", "process.parent.entity_id", "process.parent.name", "process.parent.executable",
    "process.parent.args", "process.parent.command_line", "process.parent.user.id", "user.id", "user.effective.id",
    "user.target.id",
    "group.id", "target.process.pid", "target.process.name",
    "file.path", "file.name", "file.directory", "file.extension", "file.mode", "file.owner", "file.Ext.original.path",
    "source.ip", "source.port", "destination.ip", "destination.port", "network.transport", "network.type",
    "network.direction",
}
TACTICS = {"execution", "persistence", "privilege_escalation", "defense_evasion", "credential_access", "discovery",
           "command_and_control", "impact", "collection", "exfiltration", "initial_access", "lateral_movement"}
# Rule ids other components rely on (the eBPF end-to-end attack chain, the demo).
REQUIRED_IDS = {
    "kestrel.linux.exec_from_tmp", "kestrel.linux.chmod_exec_in_tmp", "kestrel.linux.tmp_binary_network_connect",
    "kestrel.linux.shadow_file_open", "kestrel.linux.dropper_chain",
}
_STRING = re.compile(r'"""(?:.|\n)*?"""|"(?:\\.|[^"\\])*"')
_FIELD = re.compile(r"\??(@timestamp|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)")


def fields_of(query: str) -> set[str]:
    """Dotted field paths referenced by ``query`` (string literals removed)."""
    return {m.group(1) for m in _FIELD.finditer(_STRING.sub('""', query))}


def test_pack_loads_without_errors_and_compiles_strictly():
    assert PACKSET.errors == [], [str(e) for e in PACKSET.errors]
    (info,) = PACKSET.packs
    assert (info.name, info.priority) == ("kestrel-linux", 10)
    engine = DetectionEngine(Schema.ecs(), PACKSET.rules, strict="warn")
    assert engine.rule_errors == [], [str(e) for e in engine.rule_errors]


def test_pack_size_and_sequences():
    assert len(PACKSET.rules) >= 40
    sequences = [r.id for r in PACKSET.rules if r.query.lstrip().startswith("sequence")]
    assert len(sequences) >= 10, sequences
    assert any("until" in RULES[i].query for i in sequences)
    assert any("maxspan" in RULES[i].query for i in sequences)
    assert REQUIRED_IDS <= RULES.keys()


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_metadata(rule_id):
    r = RULES[rule_id]
    assert re.fullmatch(r"kestrel\.linux\.[a-z0-9_]+", r.id)
    assert Path(r.file).stem == r.id.rsplit(".", 1)[1], "file name must be the rule's short name"
    assert r.name and r.description.strip() and r.false_positives
    assert r.severity in ("low", "medium", "high", "critical") and 0 <= r.risk_score <= 100
    assert r.mode in ("observe", "shadow", "enforce") and "alert" in r.actions
    assert any(ATTACK_ID.match(t) for t in r.tags), "needs an ATT&CK technique id"
    assert TACTICS & set(r.tags), "needs an ATT&CK tactic"
    assert "linux" in r.tags  # from the pack's [defaults]
    assert any(t.expect_alerts > 0 for t in r.tests), "needs a positive golden test"
    assert any(t.expect_alerts == 0 for t in r.tests), "needs a negative (near-miss) golden test"


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_uses_only_live_source_fields(rule_id):
    query = RULES[rule_id].query
    assert fields_of(query) <= LIVE_FIELDS, fields_of(query) - LIVE_FIELDS
    # forks are process/start too: exec rules must say exec
    assert "event.type" not in query
    for step in re.split(r"\[|\bsequence\b", query):
        if re.match(r"\s*process where", step):
            assert "event.action" in step, f"process step without an event.action test: {step.strip()[:80]}"


@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_golden_events(rule_id):
    rule = RULES[rule_id]
    for t in rule.tests:
        outcome = run_rule_test(rule, t, strict="error")
        assert outcome.passed, f"{rule_id} [{t.name}] ({t.file}:{t.line}): {outcome.detail}"


def test_field_extraction_ignores_strings():
    assert fields_of('process where process.name == "a.b" and ?user.target.id == "0"') == {
        "process.name", "user.target.id"}


def test_docs_table_lists_every_rule():
    """docs/rules-linux.md has one row per rule with its kind and severity."""
    text = (ROOT / "docs" / "rules-linux.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(kestrel\.linux\.[a-z0-9_]+)` \|.*$", text, re.M)}
    assert rows.keys() == RULES.keys()
    for rid, row in rows.items():
        r = RULES[rid]
        kind = "sequence" if r.query.lstrip().startswith("sequence") else "event"
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert (cells[3], cells[4], cells[5]) == (kind, r.severity, str(r.risk_score)), rid


def test_every_step_constrains_event_action_for_push_down():
    """Each step (and until) names the actions it needs, so the sources can
    drop every other kind of event (forks, accept/bind, mmap, ...) before
    user space."""
    interest = DetectionEngine(Schema.ecs(), PACKSET.rules).interest()
    assert not interest.wants_all
    loose = [f for f in interest.filters if not any(path == "event.action" for path, _ in f.constraints)]
    assert loose == []
    actions = {v for f in interest.filters for path, values in f.constraints if path == "event.action" for v in values}
    assert "fork" not in actions and actions <= {
        "exec", "end", "memfd_create", "uid_change", "ptrace", "open", "open_write", "creation",
        "rename", "deletion", "chmod", "connection_attempted", "load_module"}
