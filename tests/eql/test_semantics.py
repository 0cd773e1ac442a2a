"""Single-event semantics (Elasticsearch EQL): nulls, case, wildcards, regex,
functions, multi-valued fields.  Every query is run through both the fast and
the safe generated code of the host runtime, which must agree."""

from __future__ import annotations

import pytest

from kestrel_core.eql import EqlError
from kestrel_core.eql import functions as fn
from kestrel_core.eql.hostruntime import HostRuntime
from kestrel_core.eql.ir import compile_query


def run(schema, query, events, strict="off"):
    q = compile_query(query, schema, strict=strict)
    p = HostRuntime().compile(q.predicate(q.steps[0]), schema)
    fast = p.eval_batch(events)
    safe = p._safe["truth"](events)
    assert fast == safe, (query, fast, safe, p.source)
    assert [e for e, t in zip(events, fast) if t] == p.select(events)
    return fast


@pytest.fixture
def procs(ev):
    return [
        ev(process__name="bash", process__pid=10, process__args=["-c", "ls -la"], user__name="Root"),
        ev(process__name="BASH", process__pid=11, process__args=["-C"]),
        ev(process__name=None, process__pid=12),
        ev(process__pid=13),
        ev(process__name="", process__args=[]),
    ]


# --------------------------------------------------------------------------- case


def test_equals_is_case_sensitive(schema, procs):
    assert run(schema, 'process where process.name == "bash"', procs) == [True, False, False, False, False]


def test_colon_is_case_insensitive(schema, procs):
    assert run(schema, 'process where process.name : "bash"', procs) == [True, True, False, False, False]


def test_in_and_in_tilde(schema, procs):
    assert run(schema, 'process where process.name in ("BASH", "zsh")', procs) == [False, True, False, False, False]
    assert run(schema, 'process where process.name in~ ("BASH", "zsh")', procs) == [True, True, False, False, False]


def test_function_tilde(schema, procs):
    assert run(schema, 'process where startsWith(process.name, "BA")', procs) == [False, True, False, False, False]
    assert run(schema, 'process where startsWith~(process.name, "BA")', procs) == [True, True, False, False, False]
    assert run(schema, 'process where endsWith~(process.name, "SH")', procs) == [True, True, False, False, False]
    assert run(schema, 'process where stringContains~(process.name, "As")', procs) == [True, True, False, False, False]


# --------------------------------------------------------------------------- null


def test_null_tests(schema, procs):
    assert run(schema, "process where process.name == null", procs) == [False, False, True, True, False]
    assert run(schema, "process where process.name != null", procs) == [True, True, False, False, True]
    # an empty list is missing too
    assert run(schema, "process where process.args == null", procs) == [False, False, True, True, True]


def test_negation_matches_missing_fields(schema, procs):
    # ES: field != "x" is must_not(term), not (field == "x") too: true when the field is missing
    assert run(schema, 'process where process.name != "zsh"', procs) == [True] * 5
    assert run(schema, 'process where not process.name == "zsh"', procs) == [True] * 5
    # a computed comparison is a script: null -> false, also for !=
    assert run(schema, 'process where length(process.name) != 3', procs) == [True, True, False, False, True]
    assert run(schema, 'process where not length(process.name) == 4', procs) == [False, False, True, True, True]
    # false and null is false, so its negation is true even with a missing name
    assert run(schema, 'process where not (process.name == "zsh" and process.pid == 10)', procs) == [True] * 5


def test_two_valued_and_or_not(schema, procs):
    # a null leaf is false; and/or/not are Lucene bool must/should/must_not
    assert run(schema, "process where process.name == \"x\" or process.pid == 12", procs) == [False, False, True, False, False]
    assert run(schema, "process where not (process.name == \"bash\" and process.pid == 12)", procs) == [True] * 5
    assert run(schema, "process where not (process.name == \"bash\" or process.pid == 13)", procs) == [False, True, True, False, True]


def test_null_literal_comparisons(schema, procs):
    assert run(schema, "process where null == null", procs) == [True] * 5
    assert run(schema, "process where null != null", procs) == [False] * 5
    assert run(schema, "process where process.pid < null", procs) == [False] * 5
    assert run(schema, "process where not process.pid < null", procs) == [False] * 5


def test_optional_field_absent_everywhere(schema, procs):
    assert run(schema, "process where ?no.such.field != null", procs) == [False] * 5
    assert run(schema, "process where ?no.such.field == null", procs) == [True] * 5


# --------------------------------------------------------------------------- wildcards and regex


@pytest.mark.parametrize(
    "pattern,value,want",
    [
        ("doc*", "document", True),
        ("doc*", "DOS", False),
        ("*doc", "asciidoc", True),
        ("d*c", "disc", True),
        ("doc?", "docs", True),
        ("doc?", "doc", False),
        ("?doc", "adoc", True),
        ("?doc", "asciidoc", False),
        ("d?c", "disc", False),
        ("*", "", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbY", False),
        ("C:\\Windows\\*", "C:\\Windows\\System32", True),  # backslash is literal
        ("a.b", "aXb", False),  # regex characters are literal
        ("[ab]", "a", False),
        ("*\n*", "x\ny", True),
    ],
)
def test_wildcard_semantics(schema, ev, pattern, value, want):
    events = [ev(process__name=value)]
    lit = pattern.replace("\\", "\\\\").replace("\n", "\\n")
    assert run(schema, f'process where process.name like "{lit}"', events) == [want]
    upper = lit if "\\" in lit else lit.upper()
    assert run(schema, f'process where process.name : "{upper}"', [ev(process__name=value.lower())]) == [want]


def test_like_is_case_sensitive_like_tilde_not(schema, ev):
    events = [ev(process__name="DOCS")]
    assert run(schema, 'process where process.name like "doc*"', events) == [False]
    assert run(schema, 'process where process.name like~ "doc*"', events) == [True]
    assert run(schema, 'process where process.name like ("x", "DOC?")', events) == [True]


def test_regex_full_match_and_case(schema, ev):
    events = [ev(process__name="value1"), ev(process__name="VALUE1"), ev(process__name="xvalue1")]
    assert run(schema, 'process where process.name regex "value[0-9]"', events) == [True, False, False]
    assert run(schema, 'process where process.name regex~ "value[0-9]"', events) == [True, True, False]
    assert run(schema, 'process where process.name regex ("x.*", "V.*")', events) == [False, True, True]
    assert run(schema, 'process where process.name regex """val\\w+"""', events) == [True, False, False]


def test_invalid_regex_is_an_error(schema):
    with pytest.raises(EqlError, match="invalid regular expression"):
        compile_query('process where process.name regex "("', schema)


# --------------------------------------------------------------------------- multi-valued fields


def test_list_fields_any_semantics(schema, procs):
    assert run(schema, 'process where process.args == "-c"', procs) == [True, False, False, False, False]
    assert run(schema, 'process where process.args : "-c"', procs) == [True, True, False, False, False]
    assert run(schema, 'process where process.args : "ls *"', procs) == [True, False, False, False, False]
    assert run(schema, 'process where process.args in ("-C", "x")', procs) == [False, True, False, False, False]
    # != and not in: true only when no element is equal (must_not term/terms), so also for no list
    assert run(schema, 'process where process.args != "-c"', procs) == [False, True, True, True, True]
    assert run(schema, 'process where process.args not in ("-c")', procs) == [False, True, True, True, True]
    assert run(schema, 'process where startsWith(process.args, "ls")', procs) == [True, False, False, False, False]
    assert run(schema, 'process where length(process.args) == 2', procs) == [True, True, False, False, False]


def test_undeclared_list_field(schema, ev):
    events = [ev(tags=["a", "B"]), ev(tags="a"), ev(tags=[1, 2])]
    assert run(schema, 'process where ?tags : "b"', events) == [True, False, False]
    assert run(schema, "process where ?tags == 2", events) == [False, False, True]
    assert run(schema, "process where ?tags > 1", events) == [False, False, True]


# --------------------------------------------------------------------------- numbers and types


def test_numeric_comparisons(schema, procs):
    assert run(schema, "process where process.pid >= 11 and process.pid < 13", procs) == [False, True, True, False, False]
    assert run(schema, "process where 11 < process.pid", procs) == [False, False, True, True, False]
    assert run(schema, "process where process.pid in (10, 13)", procs) == [True, False, False, True, False]
    assert run(schema, "process where process.pid == 10.0", procs) == [True, False, False, False, False]


def test_type_mismatch_at_runtime_is_no_match(schema, ev):
    events = [ev(foo="5"), ev(foo=5), ev(foo=True), ev(foo=1)]
    assert run(schema, "process where ?foo == 5", events) == [False, True, False, False]
    assert run(schema, "process where ?foo == true", events) == [False, False, True, False]
    assert run(schema, "process where ?foo == 1", events) == [False, False, False, True]
    assert run(schema, "process where ?foo > 2", events) == [False, True, False, False]
    assert run(schema, 'process where ?foo : "5"', events) == [True, False, False, False]


def test_string_ordering_is_case_sensitive(schema, ev):
    events = [ev(process__name="b"), ev(process__name="B")]
    assert run(schema, 'process where process.name > "a"', events) == [True, False]


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    "expr,want",
    [
        ("add(4, 0.5)", 4.5),
        ("subtract(10, 2)", 8),
        ("multiply(-2, -2)", 4),
        ("divide(4, 3)", 1),
        ("divide(-4, 3)", -1),
        ("divide(4, 3.0)", 4 / 3),
        ("modulo(10, 6)", 4),
        ("modulo(-10, 6)", -4),
        ("modulo(10, -6)", 4),
        ("4 / 3", 1),
        ("7 % 4", 3),
        ('between("C:\\\\Windows\\\\System32\\\\cmd.exe", "System32\\\\", ".exe")', "cmd"),
        ('between("a/b/c/d", "/", "/", true)', "b/c"),
        ('between("a/b/c/d", "/", "/")', "b"),
        ('between~("AxB", "x", "b")', ""),
        ('between~("AxyB", "X", "b")', "y"),
        ('concat("regsvr32.exe", " ", 42, " ", true)', "regsvr32.exe 42 true"),
        ("concat(null, \"x\")", None),
        ('indexOf("subdomain.example.com", "d")', 3),
        ('indexOf("subdomain.example.com", "D")', None),
        ('indexOf~("subdomain.example.com", "D")', 3),
        ('indexOf("subdomain.example.com", ".", 10)', 17),
        ('indexOf("subdomain.example.com", "", -6)', 0),
        ('indexOf("subdomain.example.com", ".", 30)', None),
        ('length("explorer.exe")', 12),
        ('number("0xdeadbeef")', 3735928559),
        ('number("  1337  ")', 1337),
        ('number("42.5")', 42.5),
        ('number("ff", 16)', 255),
        ('number("-1337")', -1337),
        ('string(42)', "42"),
        ('string(true)', "true"),
        ('substring("start regsvr32.exe", 6)', "regsvr32.exe"),
        ('substring("start regsvr32.exe", -4, -1)', ".ex"),
        ('substring("start regsvr32.exe", 0, 5)', "start"),
        ('substring("abc", 5)', ""),
    ],
)
def test_function_values(expr, want, schema):
    q = compile_query(f"any where {expr} == null", schema)
    # constant folding evaluates the function at compile time
    folded = [n for n in q.nodes if n.op == "const" and n.value is not None]
    if want is None:
        assert q.nodes[q.steps[0].pred].value is True
    else:
        assert any(n.value == want and type(n.value) is type(want) for n in folded), (expr, [n.value for n in folded])


def test_string_predicates(schema, ev):
    events = [ev(process__command_line="start regsvr32.exe")]
    assert run(schema, 'process where stringContains(process.command_line, "regsvr32")', events) == [True]
    assert run(schema, 'process where stringContains(process.command_line, "")', events) == [False]
    assert run(schema, 'process where endsWith(process.command_line, ".EXE")', events) == [False]


def test_cidrmatch(schema, ev):
    events = [
        ev("network", destination__ip="192.168.152.12"),
        ev("network", destination__ip="10.1.2.3"),
        ev("network", destination__ip="2001:db8::1"),
        ev("network"),
    ]
    assert run(schema, 'network where cidrMatch(destination.ip, "192.168.0.0/16")', events) == [True, False, False, False]
    assert run(schema, 'network where cidrMatch(destination.ip, "10.0.0.0/8", "2001:db8::/32")', events) == [False, True, True, False]
    assert run(schema, 'network where not cidrMatch(destination.ip, "10.0.0.0/8")', events) == [True, False, True, True]


def test_function_null_propagation():
    assert fn.f_startswith(False, None, "x") is None
    assert fn.f_startswith(False, "x", None) is None
    assert fn.add(None, 1) is None
    assert fn.f_cidrmatch("10.0.0.1", None) is None
    assert fn.f_length(None) is None
    assert fn.divide(1, 0) is None


# --------------------------------------------------------------------------- semantic checks


def test_semantic_checks_strictness(schema):
    with pytest.raises(EqlError, match="type mismatch"):
        compile_query('process where process.pid == "x"', schema, strict="error")
    with pytest.raises(EqlError, match="IP address"):
        compile_query('process where cidrMatch(process.name, "10.0.0.0/8")', schema, strict="error")
    with pytest.raises(EqlError, match="unknown field"):
        compile_query("process where no.such.field == 1", schema, strict="error")
    q = compile_query('process where process.pid == "x" and no.such == 1', schema, strict="warn")
    assert len(q.warnings) == 2 and all(w.severity == "warning" for w in q.warnings)
    assert "1:27" in str(q.warnings[0])
    assert compile_query('process where process.pid == "x"', schema, strict="off").warnings == ()
    # optional fields are never unknown
    assert compile_query("process where ?no.such.field == 1", schema, strict="error").warnings == ()


def test_language_errors_ignore_strictness(schema):
    with pytest.raises(EqlError, match="field to another field"):
        compile_query("process where process.pid == process.parent.pid", schema, strict="off")
    with pytest.raises(EqlError, match="constant"):
        compile_query("process where process.name in (process.parent.name)", schema, strict="off")
    with pytest.raises(EqlError, match="invalid CIDR"):
        compile_query('network where cidrMatch(destination.ip, "10.0.0.0/33")', schema, strict="off")


def test_functions_on_two_fields_are_allowed(schema, ev):
    events = [ev(process__args_count=4, process__parent__args_count=2)]
    assert run(schema, "process where add(process.args_count, process.parent.args_count) == 6", events) == [True]


def test_ir_dedups_shared_subexpressions(schema):
    q = compile_query('process where (process.name == "a" and process.pid > 1) or (process.name == "a" and user.id == "0")', schema)
    eqs = [n for n in q.nodes if n.op == "eq"]
    fields = [n for n in q.nodes if n.op == "field"]
    assert len(eqs) == 2  # process.name == "a" once; user.id == "0"
    assert len(fields) == len({n.field_id for n in fields})
