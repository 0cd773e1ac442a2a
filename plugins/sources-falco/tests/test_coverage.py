"""Which Linux-pack rules fire over which Falco rules' output: each case of
``kestrel_sources_falco.testing.default_rule_samples`` (alerts with the
output fields the named Falco rule prints, falcosecurity/rules at c72713e)
raises exactly its listed pack rules, and the README's table says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.eql import ast as A
from kestrel_core.eql.ast import EventQuery
from kestrel_core.eql.parser import parse
from kestrel_core.fields import _walk
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.packs import load_packs
from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema
from kestrel_sources_falco import plugin
from kestrel_sources_falco.mapping import to_ecs
from kestrel_sources_falco.testing import default_rule_samples

PLUGIN = Path(__file__).resolve().parents[1]
RULES = PLUGIN.parents[1] / "rules" / "linux"
CASES = default_rule_samples()


@pytest.fixture(scope="module")
def raised() -> dict[str, set[str]]:
    """Rule ids raised per case: one engine (compiling the pack once), each
    case on a host of its own, so no sequence joins events of two cases."""
    schema = Schema.ecs()
    plugin.kestrel_declare_fields(schema)
    engine = DetectionEngine(schema, load_packs([RULES]).rules)
    assert not engine.rule_errors
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=schema))
    host = schema.resolve("host.name")
    alerts = []
    for i, (_rule, _where, docs, _expected) in enumerate(CASES):
        alerts += engine.process_batch([norm.normalize(to_ecs({**doc, "hostname": f"case-{i}"}), "falco")
                                        for doc in docs])
    got: dict[str, set[str]] = {f"case-{i}": set() for i in range(len(CASES))}
    for a in alerts + engine.flush():
        got[a.events[0].fields[host]].add(a.rule_id)
    return got


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c[0] for c in CASES])
def test_falco_rule_output_raises_the_listed_pack_rules(raised, i):
    assert raised[f"case-{i}"] == CASES[i][3]


def test_readme_table_is_the_tested_list():
    text = (PLUGIN / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- falco-coverage -->")
    rows = re.findall(r"^\| (.+?) \| `(falco[\w-]*\.yaml)` \| (.*?) \|$", text[start:], re.M)
    got = {r: (w, frozenset(re.findall(r"`([\w.]+)`", pack_rules))) for r, w, pack_rules in rows}
    want = {}
    for rule, where, _docs, expected in CASES:
        prev = want.get(rule, (where, frozenset()))
        want[rule] = (where, prev[1] | {e.removeprefix("kestrel.linux.") for e in expected})
    assert got == want


# --------------------------------------------------------------------------- the catch-all rules

CATCH_ALL = PLUGIN / "kestrel_sources_falco" / "falco" / "kestrel_rules.yaml"
SAMPLE = {
    "proc.name": "sh", "proc.exe": "/tmp/x", "proc.exepath": "/tmp/x", "proc.args": "-c id", "proc.cmdline": "sh -c id",
    "proc.pid": 10, "proc.ppid": 9, "proc.pname": "bash", "proc.pexepath": "/usr/bin/bash", "proc.pcmdline": "bash -i",
    "proc.cwd": "/tmp/", "proc.tty": 34816, "user.name": "root", "user.uid": 0, "user.loginuid": 1000, "group.gid": 0,
    "container.id": "3ad7b26ded6d", "container.name": "c", "container.image.repository": "r",
    "container.image.tag": "t", "k8s.ns.name": "ns", "k8s.pod.name": "pod", "evt.res": "SUCCESS",
    "evt.arg.name": "/tmp/x.ko", "evt.arg.path": "/tmp/x.ko", "evt.arg.filename": "/tmp/x.ko",
    "evt.arg.pathname": "/tmp/x.ko", "evt.arg.oldpath": "/tmp/a", "evt.arg.newpath": "/tmp/x.ko",
    "evt.arg.mode": "S_IXUSR|S_IRUSR|S_ISUID", "evt.arg.uid": 0, "evt.arg.euid": 0, "evt.arg.gid": 0,
    "evt.arg.egid": 0, "evt.arg.pid": 1, "evt.arg.request": "PTRACE_ATTACH", "fd.cip": "10.0.0.1", "fd.cport": 1,
    "fd.sip": "203.0.113.1", "fd.sport": 4444, "fd.l4proto": "tcp",
}
"""A value for every field the catch-all rules' outputs name (a new field there must get one here)."""
PARAMS = {
    **dict.fromkeys(("open", "openat", "openat2"), {"name", "flags"}), "creat": {"name"},
    "unlink": {"path"}, "rmdir": {"path"}, "unlinkat": {"name"},
    **dict.fromkeys(("rename", "renameat", "renameat2"), {"oldpath", "newpath"}),
    "chmod": {"filename", "mode"}, "fchmodat": {"filename", "mode"}, "fchmod": {"mode"},
    "chown": {"path", "uid"}, "lchown": {"path", "uid"}, "fchown": {"uid"}, "fchownat": {"pathname", "uid"},
    "ptrace": {"request", "pid"}, "memfd_create": {"name"}, "setuid": {"uid"}, "setreuid": {"euid"},
    "setresuid": {"euid"}, "setgid": {"gid"}, "setregid": {"egid"}, "setresgid": {"egid"},
}
"""The parameters (evt.arg.*) each syscall's exit event has, of those the outputs name
(falcosecurity/libs driver/event_table.c at 48dfd53); any other evt.arg.* is null."""
FD_FILE = {"open", "openat", "openat2", "creat", "fchmod", "fchown", "finit_module"}
"""Syscalls whose fd (fd.name) is the file; for path-based ones Falco has no fd."""


def catch_all_rules() -> list[tuple[str, list[str], list[str]]]:
    """(rule, the evt.type values of its condition, the fields its output names), read from the file."""
    text = CATCH_ALL.read_text(encoding="utf-8")
    out = []
    for block in re.split(r"^- rule: ", text, flags=re.M)[1:]:
        name = block.splitlines()[0].strip()
        cond = re.search(r"^  condition: (?:>-)?(.*?)(?=^  \w+:)", block, re.S | re.M).group(1)
        output = re.search(r"^  output: (?:>-)?(.*?)(?=^  \w+:)", block, re.S | re.M).group(1)
        types = re.search(r"evt\.type (?:in \(([^)]*)\)|= (\w+))", cond)
        out.append((name, [t.strip() for t in (types.group(1) or types.group(2)).split(",")],
                    re.findall(r"%([\w.\[\]]+)", output)))
    return out


def catch_all_emits() -> dict[str, tuple[set[str], set[str]]]:
    """Category -> (ECS fields, event.action values) the catch-all rules' alerts map to."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    rules = catch_all_rules()
    assert len(rules) == 6
    for rule, types, names in rules:
        for evt_type in types:
            for variant in ("O_RDONLY", "O_WRONLY|O_TRUNC", "O_CREAT|O_WRONLY|O_F_CREATED"):
                values = {}
                for name in names:
                    if name == "evt.type":
                        values[name] = evt_type
                    elif name == "evt.arg.flags":
                        values[name] = variant if "flags" in PARAMS.get(evt_type, ()) else None
                    elif name.startswith("evt.arg."):
                        values[name] = SAMPLE[name] if name[8:] in PARAMS.get(evt_type, ()) else None
                    elif name in ("fd.name", "fd.type"):
                        if evt_type in ("connect", "accept", "accept4"):
                            values[name] = {"fd.name": "10.0.0.1:1->203.0.113.1:4444", "fd.type": "ipv4"}[name]
                        else:
                            values[name] = ({"fd.name": "/tmp/x.ko", "fd.type": "file"}[name]
                                            if evt_type in FD_FILE else None)
                    else:
                        values[name] = SAMPLE[name]
                rec = to_ecs({"rule": rule, "time": "2026-07-25T17:20:00.000000000Z", "hostname": "h",
                              "priority": "Informational", "source": "syscall", "output_fields": values})
                fields, actions = out.setdefault(rec["event.category"][0], (set(), set()))
                fields |= set(rec)
                actions.add(rec["event.action"])
    return out


def step_needs(query: EventQuery, keys: list) -> tuple[set[str], set[str]]:
    """Fields one step (or event query) reads, join keys included, and the event.action values it names."""
    fields = {n.path for n in _walk([query.expr, keys]) if isinstance(n, A.Field)}
    actions = set()
    for n in _walk(query.expr):
        if isinstance(n, A.Compare) and isinstance(n.left, A.Field) and n.left.path == "event.action":
            actions.add(n.right.value)
        elif isinstance(n, A.In) and isinstance(n.operand, A.Field) and n.operand.path == "event.action":
            actions |= {v.value for v in n.values}
    return fields - {"@timestamp"}, actions


def test_catch_all_rules_feed_every_pack_rule_but_the_two_the_readme_names():
    """Every step of every Linux-pack rule finds, among the catch-all rules'
    alerts of its category, each field it reads (join keys included) and each
    event.action value it names; except the two rules whose fields Falco has
    no source for."""
    emits = catch_all_emits()
    assert {"exec", "end", "ptrace", "memfd_create", "uid_change", "gid_change"} <= emits["process"][1]
    assert {"open", "open_write", "creation", "deletion", "rename", "chmod", "chown"} <= emits["file"][1]
    assert {"connection_attempted", "connection_accepted"} <= emits["network"][1]
    lacking = {}
    for rule in load_packs([RULES]).rules:
        body = parse(rule.query).body
        steps = [(body, [])] if isinstance(body, A.EventQuery) else [
            (s.query, body.by + s.keys) for s in body.steps + ([body.until] if body.until else [])]
        missing = set()
        for query, keys in steps:
            fields, actions = step_needs(query, keys)
            have_fields, have_actions = emits.get(query.category, (set(), set()))
            missing |= (fields - have_fields) | {f"event.action {a}" for a in actions - have_actions}
        if missing:
            lacking[rule.id.removeprefix("kestrel.linux.")] = missing
    assert lacking == {"ptrace_credential_process": {"target.process.name"},
                       "unexpected_setuid_root": {"process.parent.user.id"}}
