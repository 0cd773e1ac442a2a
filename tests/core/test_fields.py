"""``Source.emitted_kinds``, ``kestrel fields`` and the field check of ``kestrel rules check``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kestrel_core.builtins.jsonl import JsonlSource
from kestrel_core.builtins.klog import KlogSource
from kestrel_core.fields import Emitted, SourceFields, emitted, rule_field_uses, unemitted_warnings
from kestrel_core.interfaces import EMITS_ANY, EmittedKind, Source
from kestrel_core.rules import Rule
from kestrel_core.testing import run_kestrel

ROOT = Path(__file__).resolve().parents[2]
ebpf = pytest.importorskip("kestrel_sources_ebpf.source", reason="sources-ebpf is not installed")

MANIFEST = '[pack]\nname = "p"\nversion = "1.0"\npriority = 0\n\n[defaults]\nseverity = "low"\nrisk_score = 10\n'


def _pack(tmp: Path, **queries: str) -> Path:
    root = tmp / "pack"
    root.mkdir()
    (root / "pack.toml").write_text(MANIFEST)
    for rid, query in queries.items():
        (root / f"{rid}.toml").write_text(f'id = "{rid}"\nname = "{rid}"\ndescription = "d"\nquery = \'\'\'\n{query}\n\'\'\'\n')
    return root


# --------------------------------------------------------------------------- declarations


def test_builtin_sources_say_any_and_the_default_is_undeclared():
    assert JsonlSource.emitted_kinds() == EMITS_ANY and KlogSource.emitted_kinds() == EMITS_ANY
    assert Source.emitted_kinds() is None


def test_ebpf_declares_every_kind_with_its_action_and_fields():
    from kestrel_sources_ebpf.kinds import KINDS

    kinds = {k.name: k for k in ebpf.EbpfSource.emitted_kinds()}
    assert set(kinds) == {k.name for k in KINDS.values()}
    for k in KINDS.values():
        assert kinds[k.name].action == k.action and kinds[k.name].category == k.category
        assert {"@timestamp", "event.action", "process.entity_id", "process.parent.name", "user.id"} <= kinds[k.name].fields
    assert "file.Ext.original.path" in kinds["rename"].fields and "file.Ext.original.path" not in kinds["create"].fields
    assert "destination.ip" in kinds["connect"].fields and "destination.ip" not in kinds["bind"].fields
    assert "user.target.id" in kinds["setuid"].fields and "process.exit_code" in kinds["exit"].fields
    assert "event.outcome" not in kinds["exec"].fields and "event.outcome" in kinds["open_read"].fields


# --------------------------------------------------------------------------- kestrel fields


def test_kestrel_fields_lists_types_and_kinds_per_source():
    res = run_kestrel("fields")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert re.search(r"^jsonl  \(plugin core\): any", out, re.M) and re.search(r"^klog  \(plugin core\): any", out, re.M)
    block = out[out.index("ebpf  (plugin sources-ebpf)"):]
    block = block[:block.index("\n\n")]
    assert re.search(r"^  file\.Ext\.original\.path +keyword +rename$", block, re.M)
    assert re.search(r"^  destination\.ip +ip +connect, accept$", block, re.M)
    assert re.search(r"^  process\.args +keyword\[\] +all \d+$", block, re.M)


def test_kestrel_fields_json_and_an_unknown_source():
    res = run_kestrel("fields", "--json", "-s", "ebpf", "-s", "jsonl")
    assert res.returncode == 0, res.stderr
    objs = {o["source"]: o for o in map(json.loads, res.stdout.splitlines())}
    assert objs["jsonl"]["fields"] == "any"
    assert objs["ebpf"]["fields"]["process.exit_code"] == {"type": "long", "kinds": ["exit"]}
    bad = run_kestrel("fields", "-s", "no-such-source")
    assert bad.returncode == 2 and "no installed source named 'no-such-source'" in bad.stderr


# --------------------------------------------------------------------------- the field check


def test_required_fields_are_those_every_true_case_needs():
    uses, required = rule_field_uses(
        'process where host.os.type == "linux" and (process.name == "a" or process.name : "b*") and\n'
        '  not process.real_user.id in ("0") and (user.name == "x" or process.pid > 3) and ?x.y != null')
    assert [p for p, _ in uses] == ["host.os.type", "process.name", "process.real_user.id", "user.name",
                                    "process.pid", "x.y"]
    assert dict(uses)["process.real_user.id"] == (2, 7)
    assert required == {"host.os.type", "process.name"}
    _, seq_required = rule_field_uses('sequence by host.id with maxspan=1m [process where process.name == "a"] '
                                      '![file where file.size > 1] [network where true]')
    assert seq_required == {"process.name"}


def test_warnings_name_every_missing_field_at_the_first_located_one(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('id = "r"\nquery = """\nprocess where process.name == "x" and\n  process.real_user.id == "0"\n"""\n')
    rule = Rule(id="r", name="r", query='process where process.name == "x" and\n  process.real_user.id == "0"',
                file=str(f), query_line=2)
    emits = Emitted(frozenset({"process.name"}), ("ebpf (sources-ebpf)",))
    (w,) = unemitted_warnings([rule], emits)
    assert (w.line, w.column) == (4, 3)
    assert "reads process.real_user.id, which no source here emits (ebpf (sources-ebpf))" in str(w)
    assert "this rule can never fire on this host" in str(w)
    assert unemitted_warnings([rule], Emitted(frozenset({"process.name", "process.real_user.id"}), ("e",))) == []


def test_emitted_counts_declaring_sources_only():
    kind = EmittedKind("k", "process", frozenset({"a.b"}))
    e = emitted([SourceFields("p", "s", (kind,)), SourceFields("core", "jsonl", EMITS_ANY),
                 SourceFields("q", "t", None), SourceFields("r", "u", None, error="broken")])
    assert e.fields == {"a.b"} and e.sources == ("s (p)",) and e.any_sources == ("jsonl (core)",)
    assert e.undeclared == ("t (q)",)


def test_rules_check_warns_located_and_still_exits_0(tmp_path):
    pack = _pack(tmp_path,
                 never='process where dns.question.name == "linux" and url.full == "0"',
                 negated='process where process.name == "x" and not url.domain in ("0")',
                 fine='process where event.action == "exec" and process.parent.name == "sshd"')
    res = run_kestrel("rules", "check", str(pack))
    assert res.returncode == 0, res.stderr
    heads = re.findall(r"^(\S+?):(\d+):(\d+): warning: (.*)$", res.stderr, re.M)
    by_file = {Path(f).stem: (int(line), int(col), msg) for f, line, col, msg in heads}
    assert set(by_file) == {"never", "negated"}
    line, col, msg = by_file["never"]
    assert (line, col) == (5, 15) and "reads dns.question.name, url.full" in msg
    assert "can never fire on this host" in msg and "[rule never]" in msg
    assert "can never fire" not in by_file["negated"][2] and "never see a value" in by_file["negated"][2]
    assert "fields: 2 rule(s) read fields no source here emits; checked against the installed sources that " \
           "declare theirs: ebpf (sources-ebpf)" in res.stdout


def test_rules_check_with_a_profile_uses_its_sources(tmp_path):
    pack = _pack(tmp_path, never='process where url.full == "0"')
    jsonl = tmp_path / "jsonl.toml"
    jsonl.write_text('[[sources]]\ntype = "jsonl"\npath = "-"\n')
    res = run_kestrel("rules", "check", "-p", str(jsonl), str(pack))
    assert res.returncode == 0 and "no source here emits" not in res.stderr
    assert "not checked: the profile's jsonl (core) may carry any field" in res.stdout
    live = tmp_path / "ebpf.toml"
    live.write_text('[kestrel]\nplugins = ["sources-ebpf"]\n[[sources]]\ntype = "ebpf"\n')
    res = run_kestrel("rules", "check", "--profile", str(live), str(pack))
    assert res.returncode == 0 and "can never fire on this host" in res.stderr
    assert f"checked against {live}'s sources: ebpf (sources-ebpf)" in res.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[bus]\ncapacity = 0\n")
    assert run_kestrel("rules", "check", "-p", str(bad), str(pack)).returncode == 2


def test_the_linux_pack_reads_only_fields_the_ebpf_source_emits():
    res = run_kestrel("rules", "check", str(ROOT / "rules" / "linux"))
    assert res.returncode == 0, res.stderr
    assert "fields: 0 rule(s) read fields no source here emits" in res.stdout


# --------------------------------------------------------------------------- the declaration matches a real capture

CONDITIONAL = {"process.args_truncated", "container.id", "container.runtime", "process.tty.char_device.major",
               "process.tty.char_device.minor", "process.env_vars", "process.hash.sha256"}
"""Declared fields a capture of the scripted workload need not show: only when argv is cut, the process
runs in a container, has a controlling tty or an allow-listed environment variable, or was exec'd
after the source started (hashes are taken at exec; the kernel tests check all of these)."""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for the eBPF source")
def test_declared_kinds_match_a_live_capture(tmp_path):
    from kestrel_sources_ebpf.source import probe_host

    probe = probe_host()
    if not probe.available:
        pytest.skip(f"eBPF source unavailable here: {probe.reason}")
    out = tmp_path / "capture.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ebpf_capture.py"), "-o", str(out)], check=True,
                   timeout=300)
    captured = json.loads(out.read_text())["actions"]
    declared = {k.action: k for k in ebpf.EbpfSource.emitted_kinds()}
    # every kind the kernel has here (module loading needs a kernel with modules)
    assert set(declared) - set(captured) <= {"load_module"}
    for action, entry in captured.items():
        fields = set(entry["fields"])
        kind = declared[action]
        assert fields <= kind.fields, f"{action}: emitted but not declared: {sorted(fields - kind.fields)}"
        assert kind.fields - fields <= CONDITIONAL | {"file.path"} if action == "mmap_exec" else \
            kind.fields - fields <= CONDITIONAL, f"{action}: declared but not seen: {sorted(kind.fields - fields)}"
        assert entry["category"] == [kind.category]
