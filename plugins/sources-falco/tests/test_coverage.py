"""Which Linux-pack rules fire over which Falco rules' output: each case of
``kestrel_sources_falco.testing.default_rule_samples`` (alerts with the
output fields the named Falco rule prints, falcosecurity/rules at c72713e)
raises exactly its listed pack rules, and the README's table says the same."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kestrel_core.eql.engine import DetectionEngine
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
