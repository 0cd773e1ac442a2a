"""Pack-writing helpers shared by the tests in tests/packs."""

from __future__ import annotations

from pathlib import Path

MANIFEST = '''\
[pack]
name = "{name}"
version = "{version}"
priority = {priority}
description = "test pack"

[defaults]
severity = "low"
risk_score = 10
mode = "shadow"
tags = ["linux"]
'''

RULE = '''\
id = "{id}"
name = "{name}"
description = "a rule"
tags = ["execution", "T1059.004"]
query = 'process where process.name == "{proc}"'

[[test]]
name = "positive"
expect_alerts = 1
expect_events = [[1]]
events = \'\'\'
{{"@timestamp": "2026-01-05T08:00:00Z", "event": {{"category": ["process"]}}, "process": {{"name": "ls"}}}}
{{"@timestamp": "2026-01-05T08:00:01Z", "event": {{"category": ["process"]}}, "process": {{"name": "{proc}"}}}}
\'\'\'

[[test]]
name = "negative"
expect_alerts = 0
events = \'\'\'
{{"@timestamp": "2026-01-05T08:00:00Z", "event": {{"category": ["process"]}}, "process": {{"name": "ls"}}}}
\'\'\'
'''


def make_pack(root: Path, name: str = "p", version: str = "1.0", priority: int = 0,
              rules: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pack.toml").write_text(MANIFEST.format(name=name, version=version, priority=priority))
    for rel, text in (rules or {}).items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root


def rule(id: str, proc: str = "nc", name: str = "R") -> str:
    return RULE.format(id=id, proc=proc, name=name)
