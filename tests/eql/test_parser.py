"""Parser: every construct parses to the expected tree; every malformed query
gives one located error with a caret line (never a traceback)."""

from __future__ import annotations

import pytest

from kestrel_core.eql import EqlError, parse
from kestrel_core.eql import ast as A
from kestrel_core.eql.errors import SHOW_WIDTH, EqlSyntaxError


def cond(q: str) -> A.Node:
    return parse(q).body.expr


# --------------------------------------------------------------------------- constructs


def test_event_query_and_any():
    q = parse('process where process.name == "bash"')
    assert isinstance(q.body, A.EventQuery)
    assert q.body.category == "process"
    assert parse("any where true").body.category is None
    assert parse('"my-cat" where true').body.category == "my-cat"
    assert parse('"""my.cat""" where true').body.category == "my.cat"


def test_comparison_operators():
    for op in ("==", "!=", "<", "<=", ">", ">="):
        c = cond(f"x where a {op} 1")
        assert isinstance(c, A.Compare) and c.op == op


def test_logic_precedence():
    c = cond("x where not a == 1 and b == 2 or c == 3")
    assert isinstance(c, A.Or)
    left = c.items[0]
    assert isinstance(left, A.And)
    assert isinstance(left.items[0], A.Not)


def test_and_or_flatten():
    c = cond("x where a == 1 and b == 2 and c == 3")
    assert isinstance(c, A.And) and len(c.items) == 3


def test_lookups():
    c = cond('x where a in ("a", "b")')
    assert isinstance(c, A.In) and not c.ci and not c.negate and len(c.values) == 2
    c = cond('x where a in~ ("a")')
    assert c.ci
    c = cond('x where a not in ("a", 1)')
    assert c.negate and not c.ci
    c = cond('x where a not in~ ("a")')
    assert c.negate and c.ci


@pytest.mark.parametrize(
    "text,kind,ci",
    [
        ('a : "x*"', "seq", True),
        ('a : ("x*", "y")', "seq", True),
        ('a like "x*"', "like", False),
        ('a like~ ("x*", "y")', "like", True),
        ('a regex "x.*"', "regex", False),
        ('a regex~ ("x.*", "y")', "regex", True),
    ],
)
def test_patterns(text, kind, ci):
    c = cond(f"x where {text}")
    assert isinstance(c, A.Pattern) and c.kind == kind and c.ci == ci


def test_strings_escapes_and_raw():
    c = cond(r'x where a == "q\"\\\n\t\r\u{41}\u{0001F600}"')
    assert c.right.value == 'q"\\\n\t\rA\U0001F600'
    c = cond('x where a == """raw \\d " \\"""')
    assert c.right.value == 'raw \\d " \\'


def test_numbers_booleans_null():
    assert cond("x where a == 12").right.value == 12
    assert cond("x where a == 1.5").right.value == 1.5
    assert cond("x where a == .5").right.value == 0.5
    assert cond("x where a == 1e3").right.value == 1000.0
    assert cond("x where a == -3").right.value == -3
    assert cond("x where a == true").right.value is True
    assert cond("x where a == false").right.value is False
    assert cond("x where a == null").right.value is None


def test_fields_optional_and_backquoted():
    c = cond("x where ?a.b == 1")
    assert c.left.path == "a.b" and c.left.optional
    c = cond("x where `my-field`.`a b` == 1")
    assert c.left.path == "my-field.a b"
    c = cond("x where `we``ird` == 1")
    assert c.left.path == "we`ird"
    assert cond("x where @timestamp > 0").left.path == "@timestamp"


def test_functions_case_insensitive_names_and_tilde():
    c = cond('x where cidrmatch(ip, "10.0.0.0/8")')
    assert isinstance(c, A.Call) and c.name == "cidrMatch"
    c = cond('x where startsWith~(a, "x")')
    assert c.name == "startsWith" and c.ci
    for name in ("add", "between", "concat", "divide", "endsWith", "indexOf", "length", "modulo", "multiply",
                 "number", "startsWith", "string", "stringContains", "substring", "subtract"):
        assert parse(f"x where {name}({', '.join(['a'] * {'between': 3, 'concat': 1, 'length': 1, 'number': 1, 'string': 1}.get(name, 2))}) == 1")


def test_arithmetic_precedence():
    c = cond("x where a + 2 * 3 == 7")
    assert isinstance(c.left, A.Arith) and c.left.op == "+"
    assert isinstance(c.left.right, A.Arith) and c.left.right.op == "*"
    c = cond("x where (a + 2) * 3 % 4 - -a / 2 == 7")
    assert c.left.op == "-"


def test_comments():
    q = parse("x where // line\n a == 1 /* block /* nested */ still */ and b == 2")
    assert isinstance(q.body.expr, A.And)


def test_sequence_full():
    q = parse(
        "sequence by host.id, ?user.id with maxspan=5m\n"
        "  [process where true] by process.pid\n"
        "  ![file where true] by process.pid\n"
        "  [network where true] by process.pid with runs=3\n"
        "until [process where true] by process.pid\n"
        "| head 5 | tail 2"
    )
    s = q.body
    assert isinstance(s, A.Sequence)
    assert [f.path for f in s.by] == ["host.id", "user.id"] and s.by[1].optional
    assert s.maxspan_ns == 5 * 60 * 10**9
    assert [st.missing for st in s.steps] == [False, True, False]
    assert s.steps[2].runs == 3
    assert s.until is not None and s.until.keys[0].path == "process.pid"
    assert [(p.name, p.count) for p in q.pipes] == [("head", 5), ("tail", 2)]


@pytest.mark.parametrize("unit,ns", [("ms", 10**6), ("s", 10**9), ("m", 60 * 10**9), ("h", 3600 * 10**9), ("d", 86400 * 10**9)])
def test_maxspan_units(unit, ns):
    assert parse(f"sequence with maxspan=2{unit} [a where true] [b where true]").body.maxspan_ns == 2 * ns


def test_sequence_maxspan_without_by():
    s = parse("sequence with maxspan=1s [a where true] [b where true]").body
    assert s.by == [] and s.maxspan_ns == 10**9


# --------------------------------------------------------------------------- errors

BAD = [
    # (query, line, column, words the message must contain)
    ("process where process.name == 'bash'", 1, 31, "single-quoted"),
    ('process where process.name = "bash"', 1, 28, "'=' is not an operator"),
    ('process where process.name == "bash', 1, 31, "unterminated string"),
    ("process where a == b == c", 1, 22, "chained"),
    ("process where (a == 1", 1, 22, "expected ')'"),
    ("process whre a == 1", 1, 9, "expected 'where'"),
    ("process where foo(1)", 1, 15, "unknown function 'foo'"),
    ("process where length()", 1, 15, "takes 1 argument"),
    ("process where add(1, 2, 3)", 1, 15, "takes 2 arguments"),
    ("process where a AND b", 1, 17, "lower case"),
    ("sequence [process where true]", 1, 10, "at least 2 steps"),
    ("sequence [process where true] ![file where true]", 1, 31, "needs 'with maxspan"),
    ("sequence with maxspan=5 [a where true] [b where true]", 1, 23, "time unit"),
    ("sequence with maxspan=5y [a where true] [b where true]", 1, 24, "unknown time unit"),
    (r'process where a == "\d"', 1, 21, "invalid escape"),
    ("process where true | count", 1, 22, "unsupported pipe"),
    ("process where true | head", 1, 22, "needs a count"),
    ("process where a in 1", 1, 20, "expected '('"),
    ("process where length~(a)", 1, 21, "no case-insensitive"),
    ("", 1, 1, "empty query"),
    ("process where", 1, 14, "unexpected end of query"),
    ("sequence by a [x where true] by b [y where true]", 1, 35, "same number of 'by' keys"),
    ("process where a == 1 ]", 1, 22, "got ']'"),
    ('process where a == ?"x"', 1, 21, "raw strings"),
    ("process where a == 1 && b", 1, 22, "use 'and'"),
    ("sequence [a where true] with runs=0 [b where true]", 1, 35, "between 1 and 100"),
    ("sequence [a where true] with runs=101 [b where true]", 1, 35, "between 1 and 100"),
    ("process where n == 1 or or n == 2", 1, 25, "unexpected keyword 'or'"),
    ("any where n ~ 1", 1, 13, "'~' must follow"),
    ("sequence with maxspan=5s by a [x where true] [x where true]", 1, 29, "before 'with maxspan"),
    ("x where a == 1 /* open", 1, 16, "unterminated comment"),
    ("process where a ==\n  and b == 1", 2, 3, "expected"),
    ("x where\n  a == 1 and\n  b == ]", 3, 8, "expected"),
    (r'x where a == "\u{110000}"', 1, 15, "out of range"),
    ("sequence [a where true] [b where true] until", 1, 45, "unexpected end"),
    ("sample by host [a where true] [b where true]", 1, 8, "'sample' queries are not supported"),
    ("x where " + "not " * 3000 + "a == 1", 1, 1, "nested too deeply"),
]


@pytest.mark.parametrize("query,line,col,words", BAD, ids=[b[0][:40] for b in BAD])
def test_malformed_queries_are_located(query, line, col, words):
    with pytest.raises(EqlError) as info:
        parse(query, "rules/x.toml")
    err = info.value
    assert isinstance(err, EqlSyntaxError)
    assert (err.line, err.column) == (line, col), str(err)
    assert words in err.message, err.message
    text = str(err)
    head, src, caret = text.split("\n")
    assert head.startswith(f"rules/x.toml:{line}:{col}: error: ")
    full = query.split("\n")[line - 1].rstrip()
    if len(full) <= SHOW_WIDTH:
        assert src == "  " + full
        assert caret.index("^") - 2 == col - 1
    else:  # a long line is shown as a window around the column, the caret under the same character
        assert len(src) <= SHOW_WIDTH + 4 and src.strip("  …") in full
        assert src[caret.index("^")] == full[col - 1]


def test_long_chains_parse_flat():
    q = parse("x where " + " or ".join(f"a == {i}" for i in range(5000)))
    assert isinstance(q.body.expr, A.Or) and len(q.body.expr.items) == 5000


def test_error_attributes():
    with pytest.raises(EqlError) as info:
        parse("x where a ==", "q.eql")
    e = info.value
    assert e.source_name == "q.eql" and e.line == 1 and e.column == 13


def test_many_random_inputs_never_traceback():
    import random

    r = random.Random(5)
    alphabet = list('abc xyz()[]"\'`=!<>~:,.|*?-+/%0123456789\n') + ["where", "and", "or", "not", "in", "sequence", "by", "with", "maxspan", "until", "like", "regex", "true", "null"]
    for _ in range(1500):
        text = " ".join(r.choice(alphabet) for _ in range(r.randint(0, 12)))
        try:
            parse("x where " + text)
        except EqlError as err:
            assert err.line >= 1 and err.column >= 1
