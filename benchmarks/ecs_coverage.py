"""How much of what Elastic's published Linux EQL rules read does Kestrel's eBPF source emit?

    .venv/bin/python benchmarks/ecs_coverage.py CHECKOUT [--capture FILE] [--top N] [--json FILE]

CHECKOUT is elastic/detection-rules: a work tree (with ``rules/``) or a bare
git directory (the search tool's ``fetch`` gives
``/work/.mirror/elastic+detection-rules/repo``), whose ``rules/`` this script
extracts into a temporary directory with ``git --git-dir=CHECKOUT archive
HEAD rules | tar -x`` and removes afterwards.  Nothing of the checkout is
kept or written anywhere else.

Rules counted: every ``rules/**/*.toml`` outside ``rules/_deprecated`` whose
``[metadata] maturity`` is ``production`` and ``[rule] language`` is ``eql``,
and that is Linux: under ``rules/linux``, or its query compares
``host.os.type`` with ``"linux"``.  The Defend subset is those whose ``index``
names an Elastic Defend data stream (``logs-endpoint.events.*``).

Fields: each query is parsed with Kestrel's own EQL parser
(``kestrel_core.eql.parser``) and every field node of the tree (conditions,
function arguments, ``by`` keys, ``?optional`` fields) is collected; a query
the parser rejects falls back to a token regex over the query with its
strings and comments blanked (counted and listed).  Fields of other sensors
are left out (``THIRD_PARTY``: auditd, Auditbeat's modules, Endgame,
CrowdStrike, SentinelOne, Elastic's cloud_defend, Kubernetes audit, the
system integration, Windows event logs, cloud providers) -- they can never
come from an endpoint source.

Emitted: the fields the installed ``sources-ebpf`` declares per event kind
(``EbpfSource.emitted_kinds()``, what ``kestrel fields`` prints), or with
``--capture`` the fields a real capture saw (``benchmarks/ebpf_capture.py``).
Prints a table: rules, distinct fields and rule-weighted fraction emitted,
rules whose every field is emitted (and of those, the rules whose positive
``event.action`` tests, if any, name a value the source sets), the top
missing fields by number of rules, and the ``event.action`` values rules
test that the source never sets.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterable

import attrs

THIRD_PARTY = (
    "auditd.", "auditbeat.", "process.title",  # Auditd / Auditbeat (auditd_manager, auditbeat-*)
    "endgame.",  # Endgame (endgame-*)
    "crowdstrike.",  # CrowdStrike FDR
    "sentinel_one.", "sentinel_one_cloud_funnel.",  # SentinelOne Cloud Funnel
    "cloud_defend.", "orchestrator.",  # Elastic Defend for Containers (logs-cloud_defend.*)
    "kubernetes.",  # Kubernetes audit logs
    "system.", "journald.",  # the system integration (auth.log) and journald
    "winlog.", "powershell.",  # Windows event logs
    "aws.", "gcp.", "azure.", "okta.", "o365.", "m365_defender.", "google_workspace.", "github.",
    "fim.", "file.Ext.header",  # fim integration; header_bytes needs content capture (Defend, not events)
)
"""Field prefixes of sensors other than Elastic Defend's endpoint events."""

_STRING = re.compile(r'"""(?:.|\n)*?"""|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|\?"(?:\\.|[^"\\\n])*"')
_COMMENT = re.compile(r"//[^\n]*|/\*(?:.|\n)*?\*/")
_TOKEN = re.compile(r"(?<![\w.@])\??([A-Za-z_@][\w@]*(?:\.[\w@]+)+)")
_NOT_FIELDS = re.compile(r"^\d|^(maxspan|runs)\b")


@attrs.define
class RuleInfo:
    path: str
    name: str
    defend: bool
    fields: set[str]
    parsed: bool
    actions: set[str] = attrs.field(factory=set)


def extract_rules(checkout: Path, into: Path) -> Path:
    """The directory holding ``rules/``: the checkout itself, or ``rules/`` of a bare git dir's HEAD extracted into ``into``."""
    if (checkout / "rules").is_dir():
        return checkout
    archive = subprocess.run(["git", f"--git-dir={checkout}", "archive", "--format=tar", "HEAD", "rules"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def walk(node: Any) -> Iterable[Any]:
    """Every syntax tree node below ``node`` (attrs classes of kestrel_core.eql.ast), ``node`` included."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, list):
            stack.extend(n)
        elif attrs.has(type(n)):
            yield n
            stack.extend(getattr(n, a.name) for a in attrs.fields(type(n)) if a.name != "pos")


def query_fields(query: str) -> tuple[set[str], set[str], bool]:
    """(fields, literal values compared with event.action, parsed by Kestrel's parser)."""
    from kestrel_core.eql import ast as A
    from kestrel_core.eql.errors import EqlError
    from kestrel_core.eql.parser import parse

    try:
        tree = parse(query)
    except EqlError:
        return regex_fields(query), set(re.findall(r'event\.action\s*(?:==|:|in)\s*\(?\s*"([^"]+)"', query)), False
    fields, actions = set(), set()
    for n in walk(tree):
        if isinstance(n, A.Field):
            fields.add(n.path)
        operand = getattr(n, "operand", None) if isinstance(n, (A.In, A.Pattern)) else \
            n.left if isinstance(n, A.Compare) else None
        if isinstance(operand, A.Field) and operand.path == "event.action" and not getattr(n, "negate", False):
            values = n.values if isinstance(n, A.In) else n.patterns if isinstance(n, A.Pattern) else [n.right]
            actions.update(v.value for v in values if isinstance(v, A.Literal) and isinstance(v.value, str))
    return fields, actions, True


def regex_fields(query: str) -> set[str]:
    text = _COMMENT.sub(" ", _STRING.sub('""', query))
    return {m for m in _TOKEN.findall(text) if not _NOT_FIELDS.match(m)}


def is_linux(rel: str, fields: set[str], query: str) -> bool:
    if rel.startswith("rules/linux/"):
        return True
    return "host.os.type" in fields and re.search(r'host\.os\.type\s*(?:==|:|in)[^\n]*"linux"', query) is not None


def third_party(field: str) -> bool:
    return field.startswith(THIRD_PARTY)


def load_rules(root: Path) -> tuple[list[RuleInfo], collections.Counter]:
    skipped: collections.Counter = collections.Counter()
    rules = []
    for path in sorted((root / "rules").rglob("*.toml")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("rules/_deprecated/"):
            continue
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            skipped["unreadable toml"] += 1
            continue
        rule, meta = doc.get("rule", {}), doc.get("metadata", {})
        if rule.get("language") != "eql" or not rule.get("query"):
            continue
        query = rule["query"]
        fields, actions, parsed = query_fields(query)
        if not is_linux(rel, fields, query):
            continue
        if meta.get("maturity") != "production":
            skipped[f"maturity {meta.get('maturity')}"] += 1
            continue
        defend = any(str(i).startswith("logs-endpoint.events") for i in rule.get("index", []))
        rules.append(RuleInfo(rel, rule.get("name", ""), defend, fields, parsed, actions))
    return rules, skipped


def emitted_from_plugin() -> tuple[set[str], set[str], str]:
    from kestrel_sources_ebpf.source import EbpfSource

    kinds = EbpfSource.emitted_kinds()
    fields = set().union(*(k.fields for k in kinds))
    return fields, {k.action for k in kinds if k.action}, "sources-ebpf's declared fields (EbpfSource.emitted_kinds)"


def emitted_from_capture(path: Path) -> tuple[set[str], set[str], str]:
    data = json.loads(path.read_text())
    actions = data["actions"]
    return set().union(*(a["fields"] for a in actions.values())), set(actions), f"capture {path.name}"


def report(rules: list[RuleInfo], emitted: set[str], emitted_actions: set[str], top: int) -> dict[str, Any]:
    uses: collections.Counter = collections.Counter()
    excluded: collections.Counter = collections.Counter()
    for r in rules:
        for f in r.fields:
            (excluded if third_party(f) else uses)[f] += 1
    ecs = set(uses)
    covered = {f for f in ecs if f in emitted}
    refs = sum(uses.values())
    refs_covered = sum(n for f, n in uses.items() if f in emitted)
    complete = [r for r in rules if all(f in emitted for f in r.fields if not third_party(f))]
    # ... and whose event.action tests (if any) name a value the source sets: fields and values both there
    firing = [r for r in complete if not r.actions or r.actions & emitted_actions]
    missing = collections.Counter({f: n for f, n in uses.items() if f not in emitted})
    actions: collections.Counter = collections.Counter()
    for r in rules:
        for a in r.actions:
            actions[a] += 1
    return {
        "rules": len(rules), "parsed": sum(r.parsed for r in rules),
        "fallback": sorted(r.path for r in rules if not r.parsed),
        "fields": len(ecs), "fields_emitted": len(covered), "refs": refs, "refs_emitted": refs_covered,
        "complete": len(complete), "complete_rules": sorted(r.path for r in complete),
        "complete_actions": len(firing),
        "excluded_fields": dict(excluded.most_common()),
        "missing": missing.most_common(top),
        "actions_missing": [(a, n) for a, n in actions.most_common() if a not in emitted_actions][:top],
        "actions_emitted": [(a, n) for a, n in actions.most_common() if a in emitted_actions],
    }


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.1f} %)" if b else "0/0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="elastic/detection-rules: a work tree or a bare git directory")
    parser.add_argument("--capture", type=Path, help="count the fields of this ebpf_capture.py JSON as emitted")
    parser.add_argument("--top", type=int, default=25, help="missing fields and actions to list")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here (no rule text)")
    args = parser.parse_args(argv)

    emitted, emitted_actions, what = emitted_from_capture(args.capture) if args.capture else emitted_from_plugin()
    with tempfile.TemporaryDirectory(prefix="ecs-coverage-") as tmp:
        root = extract_rules(args.checkout.resolve(), Path(tmp))
        rules, skipped = load_rules(root)
    defend = [r for r in rules if r.defend]
    out = {"emitted_from": what, "emitted_fields": len(emitted), "skipped": dict(skipped),
           "all": report(rules, emitted, emitted_actions, args.top),
           "defend": report(defend, emitted, emitted_actions, args.top)}

    print(f"emitted: {what}: {len(emitted)} fields")
    print(f"rules: published (production) Linux EQL rules; not counted: {dict(skipped) or 'none'}")
    a, d = out["all"], out["defend"]
    rows = [
        ("", "all Linux EQL", "Defend index only"),
        ("rules", str(a["rules"]), str(d["rules"])),
        ("parsed by kestrel_core.eql.parser", _pct(a["parsed"], a["rules"]), _pct(d["parsed"], d["rules"])),
        ("distinct ECS fields referenced", str(a["fields"]), str(d["fields"])),
        ("  of them emitted", _pct(a["fields_emitted"], a["fields"]), _pct(d["fields_emitted"], d["fields"])),
        ("field references (rule x field)", str(a["refs"]), str(d["refs"])),
        ("  of them emitted", _pct(a["refs_emitted"], a["refs"]), _pct(d["refs_emitted"], d["refs"])),
        ("rules whose every field is emitted", _pct(a["complete"], a["rules"]), _pct(d["complete"], d["rules"])),
        ("  and whose event.action values it sets", _pct(a["complete_actions"], a["rules"]),
         _pct(d["complete_actions"], d["rules"])),
    ]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:>{w1}}  {r[2]:>20}")
    print(f"\nthird-party sensor fields left out ({len(a['excluded_fields'])}; prefixes {', '.join(THIRD_PARTY)}):")
    print("  " + ", ".join(f"{f} ({n})" for f, n in list(a["excluded_fields"].items())[:15]) + " ...")
    print(f"\ntop missing fields (all Linux EQL rules; rules that read each):")
    for f, n in a["missing"]:
        print(f"  {n:>4}  {f}")
    print("\nevent.action values rules test (positively) that the source never sets (rules):")
    print("  " + ", ".join(f"{x} ({n})" for x, n in a["actions_missing"]))
    print("event.action values it does set: " + ", ".join(f"{x} ({n})" for x, n in a["actions_emitted"]))
    if a["fallback"]:
        print(f"\nqueries Kestrel's parser rejected (fields by token regex): {len(a['fallback'])}")
        for p in a["fallback"]:
            print(f"  {p}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
