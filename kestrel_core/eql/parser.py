"""EQL text -> syntax tree (:mod:`kestrel_core.eql.ast`).

A lark LALR(1) parser over ``grammar.lark``, built once on first use.  Every
syntax problem becomes one :class:`~kestrel_core.eql.errors.EqlSyntaxError`
with line, column and a caret line; lark exceptions never escape.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import ast as A
from .errors import EqlError, EqlSyntaxError

# name (lower case) -> (canonical name, min args, max args or None, accepts ~)
FUNCTIONS: dict[str, tuple[str, int, int | None, bool]] = {
    f.lower(): (f, lo, hi, ci)
    for f, lo, hi, ci in (
        ("add", 2, 2, False),
        ("between", 3, 4, True),
        ("cidrMatch", 2, None, False),
        ("concat", 1, None, False),
        ("divide", 2, 2, False),
        ("endsWith", 2, 2, True),
        ("indexOf", 2, 3, True),
        ("length", 1, 1, False),
        ("modulo", 2, 2, False),
        ("multiply", 2, 2, False),
        ("number", 1, 2, False),
        ("startsWith", 2, 2, True),
        ("string", 1, 1, False),
        ("stringContains", 2, 2, True),
        ("substring", 2, 3, False),
        ("subtract", 2, 2, False),
    )
}

TIME_UNITS_NS = {
    "nanos": 1,
    "micros": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}

KEYWORDS = frozenset(
    "and or not in like regex where sequence by with maxspan runs until any true false null".split()
)

_PARSER: Lark | None = None


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        text = resources.files(__package__).joinpath("grammar.lark").read_text(encoding="utf-8")
        _PARSER = Lark(
            text,
            parser="lalr",
            lexer="contextual",
            start="start",
            maybe_placeholders=True,
            lexer_callbacks={"NAME": _keyword_as_name},
        )
    return _PARSER


def _keyword_as_name(tok: Token) -> Token:
    # Called only for NAME tokens the contextual lexer did not turn into a
    # keyword, i.e. a keyword where the grammar does not allow one.
    if str(tok) in KEYWORDS:
        raise EqlSyntaxError(
            f"unexpected keyword '{tok}' (a field with this name is written `{tok}`)",
            tok.line,
            tok.column,
            length=len(tok),
        )
    return tok


# ----------------------------------------------------------------- strings

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
_UNICODE_ESC = re.compile(r"u\{([0-9A-Fa-f]{2,8})\}")


def unescape(token: Token) -> str:
    """Value of a STRING or RAW_STRING token."""
    text = str(token)
    if text.startswith('"""'):
        return text[3:-3]
    body = text[1:-1]
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < n else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if nxt == "u":
            m = _UNICODE_ESC.match(body, i + 1)
            if m:
                code = int(m.group(1), 16)
                if code > 0x10FFFF:
                    raise _located(token, i, f"unicode escape \\u{{{m.group(1)}}} is out of range")
                out.append(chr(code))
                i = m.end()
                continue
            raise _located(token, i, "invalid unicode escape: write \\u{XXXX} with 2 to 8 hex digits")
        raise _located(
            token,
            i,
            f"invalid escape sequence '\\{nxt}' (valid: \\n \\r \\t \\\\ \\\" \\u{{XXXX}}); "
            'write "\\\\" for a backslash, or use a raw string """..."""',
        )
    return "".join(out)


def _located(token: Token, offset_in_body: int, message: str) -> EqlSyntaxError:
    # offset_in_body counts from after the opening quote
    line = token.line
    col = token.column + 1 + offset_in_body
    return EqlSyntaxError(message, line, col)


# ----------------------------------------------------------------- tree -> AST


def _pos(tok: Any) -> A.Pos:
    if isinstance(tok, Token):
        return (tok.line, tok.column)
    if isinstance(tok, A.Node):
        return tok.pos
    return (1, 1)


MAX_INT_LITERAL = 2**64 - 1
"""Largest integer literal kept as an integer (ES: unsigned long); larger ones are doubles."""
MAX_PIPE_COUNT = 2**31 - 1
"""``| head N`` / ``| tail N``: N is a Java int in Elasticsearch."""
MAX_SPAN_NS = 2**63 - 1
"""``with maxspan``: a signed 64-bit count of nanoseconds."""


def _shown(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}…{text[-6:]} ({len(text)} characters)"


def _finite(tok: Token) -> float:
    value = float(tok)
    if value in (float("inf"), float("-inf")):
        raise EqlSyntaxError(f"number {_shown(str(tok))} is too large (a double holds at most 1.8e308)",
                             tok.line, tok.column, length=len(tok))
    return value


def _count(tok: Token, what: str, lo: int, hi: int) -> int:
    """An integer token that must lie in [lo, hi], read without int() on huge digit strings."""
    digits = str(tok).lstrip("0") or "0"
    n = int(digits) if len(digits) <= len(str(hi)) else None
    if n is None or not lo <= n <= hi:
        raise EqlSyntaxError(f"{what} must be between {lo} and {hi}, got {_shown(str(tok))}",
                             tok.line, tok.column, length=len(tok))
    return n


@v_args(inline=True)
class _ToAst(Transformer):
    # --- literals
    def string(self, tok):
        return A.Literal(unescape(tok), pos=_pos(tok))

    def int_(self, tok):
        # Elasticsearch (ql ExpressionBuilder.visitIntegerLiteral): an integer past
        # the unsigned long range is read as a double; past a double's range it is
        # an error.  Checked on the digits, before int() (which refuses 4,300+).
        digits = str(tok).lstrip("0") or "0"
        if len(digits) <= 20 and int(digits) <= MAX_INT_LITERAL:
            return A.Literal(int(digits), pos=_pos(tok))
        return A.Literal(_finite(tok), pos=_pos(tok))

    def float_(self, tok):
        return A.Literal(_finite(tok), pos=_pos(tok))

    def true_(self):
        return A.Literal(True)

    def false_(self):
        return A.Literal(False)

    def null_(self):
        return A.Literal(None)

    # --- fields
    @staticmethod
    def _field_path(tok: Token) -> str:
        text = str(tok)
        if "`" not in text:
            return text
        parts = re.findall(r"`((?:[^`]|``)+)`|([A-Za-z0-9_@]+)", text)
        return ".".join((q.replace("``", "`") if q else p) for q, p in parts)

    @staticmethod
    def _not_keyword(tok: Token) -> None:
        if tok.type == "NAME" and str(tok) in KEYWORDS:
            raise EqlSyntaxError(
                f"unexpected keyword '{tok}' (a field with this name is written `{tok}`)",
                tok.line,
                tok.column,
                length=len(tok),
            )

    def field(self, tok):
        self._not_keyword(tok)
        return A.Field(self._field_path(tok), False, pos=_pos(tok))

    def opt_field(self, q, tok):
        self._not_keyword(tok)
        return A.Field(self._field_path(tok), True, pos=_pos(q))

    # --- functions
    def function_call(self, name, tilde, *args):
        args = [a for a in args if a is not None]
        spec = FUNCTIONS.get(str(name).lower())
        if spec is None:
            known = ", ".join(sorted(v[0] for v in FUNCTIONS.values()))
            raise EqlSyntaxError(f"unknown function '{name}' (known: {known})", name.line, name.column, length=len(name))
        canon, lo, hi, ci_ok = spec
        if tilde is not None and not ci_ok:
            raise EqlSyntaxError(
                f"function '{canon}' has no case-insensitive '~' variant", tilde.line, tilde.column
            )
        if len(args) < lo or (hi is not None and len(args) > hi):
            want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            raise EqlSyntaxError(
                f"function '{canon}' takes {want} argument{'s' if (hi or 2) > 1 else ''}, got {len(args)}",
                name.line,
                name.column,
                length=len(name),
            )
        return A.Call(canon, tilde is not None, list(args), pos=_pos(name))

    # --- arithmetic
    def arith(self, left, op, right):
        return A.Arith(str(op), left, right, pos=_pos(op))

    def neg(self, op, operand):
        if isinstance(operand, A.Literal) and isinstance(operand.value, (int, float)) and not isinstance(operand.value, bool):
            return A.Literal(-operand.value, pos=_pos(op))
        return A.Neg(operand, pos=_pos(op))

    # --- predicates
    def compare(self, left, op, right):
        if isinstance(left, A.Compare):
            raise EqlSyntaxError(
                "comparisons cannot be chained: write 'a < b and b < c'", op.line, op.column, length=len(op)
            )
        return A.Compare(str(op), left, right, pos=_pos(op))

    def in_list(self, *items):
        return list(items)

    def in_(self, operand, kw, tilde, values):
        return A.In(operand, values, tilde is not None, False, pos=_pos(kw))

    def not_in(self, operand, notkw, kw, tilde, values):
        return A.In(operand, values, tilde is not None, True, pos=_pos(notkw))

    def pattern_list(self, *items):
        return list(items)

    def seq_match(self, operand, colon, rhs):
        pats = rhs if isinstance(rhs, list) else [rhs]
        return A.Pattern("seq", operand, pats, True, pos=_pos(colon))

    def like(self, operand, kw, tilde, rhs):
        pats = rhs if isinstance(rhs, list) else [rhs]
        return A.Pattern("like", operand, pats, tilde is not None, pos=_pos(kw))

    def regex(self, operand, kw, tilde, rhs):
        pats = rhs if isinstance(rhs, list) else [rhs]
        return A.Pattern("regex", operand, pats, tilde is not None, pos=_pos(kw))

    def and_(self, *items):
        return A.And(list(items), pos=items[0].pos)

    def or_(self, *items):
        return A.Or(list(items), pos=items[0].pos)

    def not_(self, kw, operand):
        return A.Not(operand, pos=_pos(kw))

    # --- queries
    def cat_name(self, tok):
        self._not_keyword(tok)
        return (str(tok), _pos(tok))

    def cat_string(self, tok):
        return (unescape(tok), _pos(tok))

    def cat_any(self):
        return (None, None)

    def event_query(self, cat, expr):
        name, pos = cat
        return A.EventQuery(name, expr, pos=pos or expr.pos)

    def by_clause(self, *keys):
        return list(keys)

    def maxspan(self, num, unit):
        if unit is None:
            raise EqlSyntaxError(
                f"maxspan needs a time unit, e.g. maxspan={num}s (units: {', '.join(TIME_UNITS_NS)})",
                num.line,
                num.column,
                length=len(num),
            )
        scale = TIME_UNITS_NS.get(str(unit))
        if scale is None:
            raise EqlSyntaxError(
                f"unknown time unit '{unit}' (units: {', '.join(TIME_UNITS_NS)})", unit.line, unit.column, length=len(unit)
            )
        value = _count(num, "maxspan", 0, MAX_SPAN_NS // scale) * scale
        if value <= 0:
            raise EqlSyntaxError("maxspan must be positive", num.line, num.column, length=len(num))
        return ("maxspan", value)

    def runs(self, num):
        return ("runs", _count(num, "runs", 1, 100))

    def seq_params_by_first(self, by, span=None):
        return (by, span[1] if span else None)

    def seq_params_span_first(self, span, by=None):
        if by:
            line, col = by[0].pos
            raise EqlSyntaxError("write 'sequence by ...' before 'with maxspan=...', not after", line, col)
        return ([], span[1])

    def step(self, lsqb, query, keys, runs):
        return A.Step(query, keys or [], runs[1] if runs else 1, False, pos=_pos(lsqb))

    def missing_step(self, bang, lsqb, query, keys, runs):
        return A.Step(query, keys or [], runs[1] if runs else 1, True, pos=_pos(bang))

    def until_clause(self, lsqb, query, keys):
        return A.Step(query, keys or [], 1, False, pos=_pos(lsqb))

    def sequence(self, *items):
        # (the until clause, when present, is the last Step; _finish tells it apart)
        params = next((it for it in items if isinstance(it, tuple)), None)
        steps = [it for it in items if isinstance(it, A.Step)]
        return ("sequence", params, steps)

    def pipe(self, bar, name, count):
        lname = str(name).lower()
        if lname not in ("head", "tail"):
            raise EqlSyntaxError(
                f"unsupported pipe '{name}' (supported: head, tail)", name.line, name.column, length=len(name)
            )
        if count is None:
            raise EqlSyntaxError(f"'{lname}' needs a count, e.g. | {lname} 10", name.line, name.column, length=len(name))
        if (str(count).lstrip("0") or "0") == "0":
            raise EqlSyntaxError(f"'{lname}' count must be positive", count.line, count.column)
        return A.Pipe(lname, _count(count, f"'{lname}' count", 1, MAX_PIPE_COUNT), pos=_pos(bar))

    def start(self, query, *pipes):
        return (query, list(pipes))


# ----------------------------------------------------------------- errors

_TOKEN_NAMES = {
    "NAME": "a field name",
    "BQ_NAME": "a field name",
    "STRING": "a string",
    "RAW_STRING": "a string",
    "INT": "a number",
    "FLOAT": "a number",
    "COMP_OP": "a comparison operator",
    "$END": "end of query",
    "LSQB": "'['",
}


def _describe_expected(expected: set[str], parser: Lark) -> str:
    names: list[str] = []
    terms = {t.name: t for t in parser.terminals}
    for e in expected:
        if e in _TOKEN_NAMES:
            names.append(_TOKEN_NAMES[e])
            continue
        t = terms.get(e)
        if t is not None and t.pattern.type == "str":
            names.append(f"'{t.pattern.value}'")
        else:
            names.append(e.lower())
    uniq = sorted(set(names), key=lambda s: (s.startswith("'") is False, s))
    # Collapse the long operator lists an expression position produces.
    if len(uniq) > 8:
        if "a field name" in uniq:
            return "a condition or value (field, string, number, function call, 'not', '(')"
        keep = [n for n in uniq if n in ("')'", "']'", "','", "end of query", "'|'", "'and'", "'or'")]
        uniq = keep[:5] + ["an operator"]
    if len(uniq) == 1:
        return uniq[0]
    return ", ".join(uniq[:-1]) + " or " + uniq[-1]


def _token_text(tok: Token) -> str:
    if tok.type == "$END":
        return "end of query"
    text = str(tok)
    if len(text) > 30:
        text = text[:27] + "..."
    return f"'{text}'"


def _syntax_error(exc: UnexpectedInput, text: str, parser: Lark) -> EqlSyntaxError:
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        line, col = exc.line, exc.column
        if ch == "'":
            msg = "single-quoted strings are not supported in EQL; use double quotes \"...\" (or \"\"\"...\"\"\" for a raw string)"
        elif ch == '"':
            msg = "unterminated string: a string must close with \" on the same line (use \"\"\"...\"\"\" for multi-line text)"
        elif ch == "?" and text[exc.pos_in_stream + 1 : exc.pos_in_stream + 2] in ("\"", "'"):
            msg = 'raw strings are written """...""" in EQL, not ?"..."'
        elif ch == "=":
            msg = "'=' is not an operator: use '==' (case-sensitive) or ':' (case-insensitive)"
        elif ch == "&" or ch == "|":
            msg = f"unexpected character '{ch}': use 'and' / 'or'"
        else:
            msg = f"unexpected character {ch!r}"
        return EqlSyntaxError(msg, line, col)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        expected = set(exc.expected or ())
        if tok.type == "$END":
            line, col = _end_position(text)
            return EqlSyntaxError(f"unexpected end of query: expected {_describe_expected(expected, parser)}", line, col)
        msg = None
        tval = str(tok)
        before = text[: tok.start_pos] if tok.start_pos is not None else ""
        stripped = before.rstrip()
        if stripped.endswith("~") and expected <= {"LPAR", "__ANON_0"} | {e for e in expected if e.startswith("LPAR")}:
            tpos = len(stripped) - 1
            tline = text.count("\n", 0, tpos) + 1
            tcol = tpos - (text.rfind("\n", 0, tpos) + 1) + 1
            return EqlSyntaxError(
                "'~' must follow a function name (startsWith~(...)) or in, like, regex (in~, like~, regex~)", tline, tcol
            )
        if tok.type in ("STRING", "RAW_STRING") and before.endswith("?"):
            msg = 'raw strings are written """...""" in EQL, not ?"..."'
        elif text.split(None, 1)[:1] in (["sample"], ["join"]):
            msg = f"'{text.split(None, 1)[0]}' queries are not supported (Kestrel runs event queries and sequences)"
        elif tval == "=":
            msg = "'=' is not an operator: use '==' (case-sensitive) or ':' (case-insensitive)"
        elif tok.type == "NAME" and tval.lower() in KEYWORDS and tval != tval.lower():
            msg = f"keywords are lower case: write '{tval.lower()}', not '{tval}'"
        elif tok.type == "NAME" and tval.lower() in ("head", "tail", "filter", "count", "unique", "sort", "unique_count") and "PIPE" in expected:
            msg = f"pipes are written after '|': '| {tval}'"
        elif tok.type == "NAME" and tval in ("AND", "OR", "NOT", "&&", "||"):
            msg = f"keywords are lower case: write '{tval.lower()}'"
        elif tok.type == "COMP_OP" and "COMP_OP" not in expected and any(e in expected for e in ("AND", "OR")):
            msg = "comparisons cannot be chained: write 'a < b and b < c'"
        if msg is None:
            msg = f"expected {_describe_expected(expected, parser)}, got {_token_text(tok)}"
        return EqlSyntaxError(msg, tok.line, tok.column, length=len(tval))
    if isinstance(exc, UnexpectedEOF):
        line, col = _end_position(text)
        return EqlSyntaxError("unexpected end of query", line, col)
    line = getattr(exc, "line", 1) or 1
    col = getattr(exc, "column", 1) or 1
    return EqlSyntaxError(str(exc).splitlines()[0], line, col)


def _too_deep() -> EqlSyntaxError:
    return EqlSyntaxError("the query is nested too deeply (simplify its not/-/function nesting)", 1, 1)


def _end_position(text: str) -> tuple[int, int]:
    stripped = text.rstrip()
    if not stripped:
        return 1, 1
    lines = stripped.split("\n")
    return len(lines), len(lines[-1]) + 1


# ----------------------------------------------------------------- comments


def blank_comments(text: str) -> str:
    """Replace ``// ...`` and (nested) ``/* ... */`` comments by spaces, keeping
    newlines, so positions stay the same.  Strings and backquoted names are
    left alone."""
    if "/" not in text:
        return text
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('"""', i):
            j = text.find('"""', i + 3)
            i = n if j < 0 else j + 3
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            i = n if j < 0 else j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif text.startswith("/*", i):
            depth = 0
            j = i
            while j < n:
                if text.startswith("/*", j):
                    depth += 1
                    j += 2
                elif text.startswith("*/", j):
                    depth -= 1
                    j += 2
                    if depth == 0:
                        break
                else:
                    j += 1
            if depth:
                line = text.count("\n", 0, i) + 1
                col = i - (text.rfind("\n", 0, i) + 1) + 1
                raise EqlSyntaxError("unterminated comment: '/*' has no matching '*/'", line, col, length=2)
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        else:
            i += 1
    return "".join(out)


# ----------------------------------------------------------------- entry point


def parse(text: str, source_name: str | None = None) -> A.Query:
    """Parse one EQL query; raises :class:`EqlError` (located) on any problem."""
    lines = text.split("\n")
    try:
        if not text.strip():
            raise EqlSyntaxError("empty query: expected '<category> where <condition>' or 'sequence ...'", 1, 1)
        parser = _parser()
        try:
            tree = parser.parse(blank_comments(text))
        except UnexpectedInput as exc:
            raise _syntax_error(exc, text, parser) from None
        try:
            body, pipes = _ToAst().transform(tree)
        except VisitError as exc:
            if isinstance(exc.orig_exc, EqlError):
                raise exc.orig_exc from None
            if isinstance(exc.orig_exc, RecursionError):
                raise _too_deep() from None
            raise
        except RecursionError:
            raise _too_deep() from None
        body = _finish(body, tree)
        return A.Query(body, pipes, text, pos=body.pos)
    except EqlError as err:
        err.source_name = source_name
        if err.source_line is None and 1 <= err.line <= len(lines):
            err.source_line = lines[err.line - 1]
        raise


def _finish(body: Any, tree: lark.Tree) -> Any:
    if isinstance(body, A.EventQuery):
        return body
    _, params, steps = body
    # Re-read the tree to tell the until clause from steps.
    seq_tree = tree.children[0]
    until = None
    if any(isinstance(c, lark.Tree) and c.data == "until_clause" for c in seq_tree.children):
        until = steps.pop()
    by, span = params if params else ([], None)
    pos = steps[0].pos if steps else (1, 1)
    n_positive = sum(s.runs for s in steps if not s.missing)
    n_total = sum(s.runs for s in steps)
    first = steps[0]
    if n_total < 2:
        raise EqlSyntaxError(
            f"a sequence needs at least 2 steps, found {n_total}", first.pos[0], first.pos[1]
        )
    if n_positive == 0:
        raise EqlSyntaxError("a sequence needs at least one step that is not a missing event ![...]", first.pos[0], first.pos[1])
    if any(s.missing for s in steps) and span is None:
        m = next(s for s in steps if s.missing)
        raise EqlSyntaxError("a sequence with missing events ![...] needs 'with maxspan=...'", m.pos[0], m.pos[1])
    nkeys = None
    for s in steps + ([until] if until else []):
        if nkeys is None:
            nkeys = len(s.keys)
        elif len(s.keys) != nkeys:
            raise EqlSyntaxError(
                f"every step must have the same number of 'by' keys: expected {nkeys}, found {len(s.keys)}",
                s.pos[0],
                s.pos[1],
            )
    return A.Sequence(by, span, steps, until, pos=pos)
