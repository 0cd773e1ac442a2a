"""Rule exceptions: per-rule [[exception]] entries and shared lists (in
pack.toml or a lists file), compiled into the rule's predicate; located
errors; expiry; hashes; every matcher sees them."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from kestrel_core.cli import main
from kestrel_core.eql import ir
from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.exceptionlists import compile_rule_query
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.packs import load_packs, run_rule_test
from kestrel_core.plugins import rules_schema
from kestrel_core.runtime import RunContext

MANIFEST = '''\
[pack]
name = "exc"
version = "1"
priority = 10
list_files = ["shared/lists.toml"]

[lists.package_managers]
description = "Package managers that mark the files they install executable."

[[lists.package_managers.entry]]
reason = "pip marks console scripts executable"
field = "process.name"
op = "in"
values = ["pip", "pip3"]

[[lists.package_managers.entry]]
reason = "a retired package manager"
expires = 2026-06-30
field = "process.name"
op = "=="
value = "oldpkg"
'''

LISTS_FILE = '''\
[lists.build_hosts]
description = "CI runners"

[[lists.build_hosts.entry]]
reason = "the CI network stages build tools"
field = "source.ip"
op = "cidr"
values = ["10.20.0.0/16", "fd00:20::/32"]
'''

RULE = '''\
id = "exc.chmod"
name = "chmod +x in /tmp"
description = "A file under /tmp was made executable."
exception_lists = ["package_managers", "build_hosts"]
query = """
file where event.action == "chmod" and file.path : "/tmp/*"
"""

[[exception]]
reason = "the vendor agent unpacks its updates under /tmp/vendor-agent"
all = [
  { field = "process.executable", op = ":", value = "/OPT/VENDOR/*" },
  { field = "file.path", op = "wildcard", values = ["/tmp/vendor-agent/*"] },
]

[[exception]]
reason = "the backup job's scratch files"
expires = "2027-12-31"
field = "file.path"
op = "wildcard"
value = "/tmp/backup-*"
'''


def ev(ts: int, proc: str, exe: str, path: str, ip: str | None = None) -> dict:
    doc = {"@timestamp": f"2026-01-05T08:00:{ts:02d}Z",
           "event": {"category": ["file"], "type": ["change"], "action": "chmod"},
           "process": {"pid": 100 + ts, "entity_id": f"e{ts}", "name": proc, "executable": exe},
           "file": {"path": path, "mode": "755"}}
    if ip:
        doc["source"] = {"ip": ip}
    return doc


EVENTS = [
    ev(0, "chmod", "/usr/bin/chmod", "/tmp/x"),                                  # alerts
    ev(1, "pip", "/usr/bin/python3", "/tmp/venv/bin/tool"),                      # list (in)
    ev(2, "PIP", "/usr/bin/python3", "/tmp/venv/bin/tool"),                      # `in` is case-sensitive: alerts
    ev(3, "agent", "/opt/vendor/bin/agent", "/tmp/vendor-agent/u"),              # own entry, all of two
    ev(4, "agent", "/opt/vendor/bin/agent", "/tmp/other"),                       # only one of the two: alerts
    ev(5, "sh", "/usr/bin/sh", "/tmp/backup-1"),                                 # wildcard
    ev(6, "sh", "/usr/bin/sh", "/tmp/BACKUP-1"),                                 # wildcard is case-sensitive
    ev(7, "curl", "/usr/bin/curl", "/tmp/t", "10.20.3.4"),                       # cidr (lists file)
    ev(8, "curl", "/usr/bin/curl", "/tmp/t", "10.21.3.4"),                       # outside the cidr: alerts
    ev(9, "oldpkg", "/usr/bin/oldpkg", "/tmp/o"),                                # expired entry: alerts
]
ALERTING = [0, 2, 4, 6, 8, 9]
TODAY = datetime.date(2026, 12, 2)


def write_pack(root: Path, rule: str = RULE, manifest: str = MANIFEST, lists: str = LISTS_FILE) -> Path:
    (root / "execution").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "pack.toml").write_text(manifest)
    (root / "shared" / "lists.toml").write_text(lists)
    (root / "execution" / "chmod.toml").write_text(rule)
    return root


def alerting(rules, matcher=None) -> list[int]:
    schema = rules_schema()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(missing_timestamp="error"), RunContext(schema=schema))
    events = [norm.normalize(d, "test") for d in EVENTS]
    kwargs = {}
    if matcher is not None:
        from kestrel_core.matchers import make_matcher

        kwargs = {"matcher": make_matcher(matcher), "direct": False}
    engine = DetectionEngine(schema, rules, **kwargs)
    assert not engine.rule_errors and not engine.warnings
    pos = {id(e): i for i, e in enumerate(events)}
    return sorted(pos[id(a.events[0])] for a in engine.process_batch(events) + engine.flush())


@pytest.mark.parametrize("matcher", [None, "literal-index", "category", "acdfa"])
def test_own_entries_and_shared_lists_except_exactly_their_events(tmp_path, matcher):
    ps = load_packs([write_pack(tmp_path / "p")], today=TODAY)
    assert ps.ok, ps.errors
    (rule,) = ps.rules
    assert [e.reason for e in rule.exceptions] == [
        "the vendor agent unpacks its updates under /tmp/vendor-agent", "the backup job's scratch files",
        "pip marks console scripts executable", "the CI network stages build tools"]
    assert alerting(ps.rules, matcher) == ALERTING
    # the expired entry was left out, with a located warning naming the day used
    (w,) = ps.warnings
    assert (w.file, w.line) == (str(tmp_path / "p" / "pack.toml"), 16)
    assert "expired on 2026-06-30" in w.message and "today is 2026-12-02, UTC" in w.message
    # before its expiry day (inclusive) the entry applies
    on_the_day = load_packs([tmp_path / "p"], today=datetime.date(2026, 6, 30))
    assert not on_the_day.warnings and alerting(on_the_day.rules) == ALERTING[:-1]


def test_exceptions_are_compiled_into_the_predicate_like_the_same_query_written_out(tmp_path):
    """The IR of the rule with its exceptions is the IR of the query with
    `and not (...)` written by hand: push-down, the prefilter and the DFA see one predicate."""
    ps = load_packs([write_pack(tmp_path / "p")], today=TODAY)
    schema = rules_schema()
    got = compile_rule_query(ps.rules[0], schema)
    by_hand = ir.compile_query('''file where (event.action == "chmod" and file.path : "/tmp/*") and not (
        (process.executable : "/OPT/VENDOR/*" and file.path like "/tmp/vendor-agent/*")
        or file.path like "/tmp/backup-*"
        or process.name in ("pip", "pip3")
        or cidrMatch(source.ip, "10.20.0.0/16", "fd00:20::/32"))''', schema)

    def shape(q):
        d = q.to_dict()
        d.pop("source", None)
        return json.dumps(d, sort_keys=True, default=str)

    assert shape(got) == shape(by_hand)
    assert got.nodes[got.steps[0].pred].op == "and"


def test_sequence_steps_get_the_exceptions(tmp_path):
    rule = '''\
id = "exc.seq"
name = "write then exec"
description = "x"
exception_lists = ["package_managers"]
query = """
sequence by process.entity_id
  [file where event.action == "chmod"]
  [process where event.action == "exec"]
"""
'''
    root = tmp_path / "p"
    write_pack(root, rule=rule)
    ps = load_packs([root], today=TODAY)
    assert ps.ok, ps.errors
    q = compile_rule_query(ps.rules[0], rules_schema())
    assert all(q.nodes[s.pred].op == "and" for s in q.steps)


def test_hash_follows_the_exceptions_and_rules_without_keep_theirs(tmp_path):
    a = load_packs([write_pack(tmp_path / "a")], today=TODAY)
    b_root = write_pack(tmp_path / "b", lists=LISTS_FILE.replace("10.20.0.0/16", "10.30.0.0/16"))
    b = load_packs([b_root], today=TODAY)
    assert a.hash != b.hash
    plain = tmp_path / "plain.toml"
    plain.write_text('id = "x"\nname = "x"\nquery = \'process where process.name == "x"\'\n')
    from kestrel_core.packs import rules_hash

    ps = load_packs([plain])
    assert "exceptions" not in ps.rules[0].canonical() and "suppress" not in ps.rules[0].canonical()
    assert ps.hash == rules_hash(ps.rules)


def test_golden_tests_cover_exceptions(tmp_path):
    rule = RULE + '''
[[test]]
name = "pip is a package manager"
expect_alerts = 0
events = \'\'\'
{"@timestamp": "2026-01-05T08:00:00Z", "event": {"category": ["file"], "type": ["change"], "action": "chmod"}, "process": {"pid": 1, "name": "pip", "executable": "/usr/bin/python3"}, "file": {"path": "/tmp/venv/bin/t"}}
\'\'\'

[[test]]
name = "chmod is not"
expect_alerts = 1
events = \'\'\'
{"@timestamp": "2026-01-05T08:00:00Z", "event": {"category": ["file"], "type": ["change"], "action": "chmod"}, "process": {"pid": 1, "name": "chmod", "executable": "/usr/bin/chmod"}, "file": {"path": "/tmp/venv/bin/t"}}
\'\'\'
'''
    root = write_pack(tmp_path / "p", rule=rule)
    ps = load_packs([root], today=TODAY)
    outcomes = [run_rule_test(ps.rules[0], t) for t in ps.rules[0].tests]
    assert [o.passed for o in outcomes] == [True, True], outcomes
    res = CliRunner().invoke(main, ["rules", "test", str(root)])
    assert res.exit_code == 0, res.output
    assert "2 passed, 0 failed" in res.output


BROKEN = [
    # (what to replace in RULE / MANIFEST / LISTS_FILE, file, line, column, message part)
    ("rule", 'value = "/OPT/VENDOR/*"', 'value = "/OPT/VENDOR/*", op2 = 1', "execution/chmod.toml", 12, 13,
     "unknown key 'op2' in a condition"),
    ("rule", '{ field = "process.executable"', '{ field = "process.exectuable"', "execution/chmod.toml", 12, 13,
     "unknown field 'process.exectuable' in an exception; did you mean process.executable?"),
    ("rule", '"package_managers", "build_hosts"', '"package_manager", "build_hosts"', "execution/chmod.toml", 4, 20,
     "unknown exception list 'package_manager' (did you mean 'package_managers'?"),
    ("rule", 'op = "wildcard"\nvalue', 'op = "glob"\nvalue', "execution/chmod.toml", 20, 6,
     "unknown operator 'glob' for file.path"),
    ("rule", 'expires = "2027-12-31"', 'expires = "31/12/2027"', "execution/chmod.toml", 18, 11,
     "'expires' must be a date such as 2027-01-31"),
    ("rule", 'reason = "the backup job\'s scratch files"\n', '', "execution/chmod.toml", 16, 1,
     "needs a 'reason'"),
    ("lists", '"10.20.0.0/16"', '"10.20.0.0/33"', "shared/lists.toml", 8, 11, "bad cidr '10.20.0.0/33'"),
    ("manifest", 'op = "in"', 'op = "IN"', "pack.toml", 13, 6, "unknown operator 'IN' for process.name (did you mean 'in'?"),
    ("manifest", 'field = "process.name"\nop = "in"', 'field = "process.nmae"\nop = "in"', "pack.toml", 12, 9,
     "unknown field 'process.nmae' in an exception; did you mean process.name?"),
]


@pytest.mark.parametrize("where,old,new,file,line,col,message", BROKEN, ids=[b[-1][:30] for b in BROKEN])
def test_rules_check_locates_bad_entries(tmp_path, where, old, new, file, line, col, message):
    texts = {"rule": RULE, "manifest": MANIFEST, "lists": LISTS_FILE}
    assert old in texts[where]
    texts[where] = texts[where].replace(old, new, 1)
    root = write_pack(tmp_path / "p", rule=texts["rule"], manifest=texts["manifest"], lists=texts["lists"])
    ps = load_packs([root], today=TODAY)
    got = [(Path(e.file).relative_to(root).as_posix(), e.line, e.column) for e in ps.errors]
    assert (file, line, col) in got, [str(e) for e in ps.errors]
    assert any(message in e.message for e in ps.errors), [str(e) for e in ps.errors]
    res = CliRunner().invoke(main, ["rules", "check", str(root)])
    assert res.exit_code == 2
    assert f"{root / file}:{line}:{col}: error:" in res.output


def test_exceptions_need_the_one_rule_format(tmp_path):
    f = tmp_path / "multi.toml"
    f.write_text('[[rule]]\nid = "m"\nname = "m"\nquery = \'process where true\'\n'
                 '[[rule.exception]]\nreason = "r"\nfield = "process.name"\nop = "=="\nvalue = "x"\n')
    ps = load_packs([f])
    assert not ps.rules and "one-rule-per-file format" in ps.errors[0].message


def test_enforcement_paths_see_the_exceptions(tmp_path):
    """The in-kernel connect confinement and the enforce-mode cost check
    compile the rule with its exceptions: a deny-connect rule with an
    exception is not confined in the kernel (an excepted connect must not be
    refused there); it blocks per alert, where the exception holds."""
    confine = pytest.importorskip("kestrel_actions_enforce.confine")
    f = tmp_path / "deny.toml"
    f.write_text('''\
id = "d.c2"
name = "connect to the C2"
mode = "enforce"
actions = ["alert", "deny-connect"]
query = 'network where destination.ip == "203.0.113.9" and destination.port == 443'

[[exception]]
reason = "the proxy's health check"
field = "process.name"
op = "=="
value = "healthcheck"
''')
    (rule,) = load_packs([f]).rules
    targets, why = confine.connect_targets(rule, rules_schema())
    assert targets == [] and "more than literal" in why
    import attrs

    bare = attrs.evolve(rule, exceptions=())
    assert confine.connect_targets(bare, rules_schema()) == ([("203.0.113.9", 443)], None)
