"""Reference semantics of EQL operators and functions on Python values.

These helpers define what every runtime must compute (docs/eql-semantics.md).
The host runtime calls them from its *safe* generated code and uses them for
constant folding; its fast path inlines equivalent code for common shapes.

Conventions:

* ``None`` is EQL ``null`` (a missing field, an explicit null, an empty list).
* Boolean results are three-valued: ``True``, ``False`` or ``None``.
* A list value (multi-valued field) makes a comparison true when *any*
  element satisfies it (Elasticsearch's term/range/wildcard semantics);
  a field's ``!=`` and ``not in`` are lowered to ``not`` of ``==``/``in``
  (true when *no* element is equal, or there is no value).  Functions map
  over the elements of a list argument.
* Boolean logic (docs/eql-semantics.md, "Values and null"): a condition is
  two-valued; a null leaf is false and :func:`logic_not` is true unless its
  operand is true (Elasticsearch's ``must_not``).
* No helper raises on odd input: a type that does not fit gives ``null``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from functools import lru_cache
from typing import Any, Callable

_NUM = (int, float)


def is_num(v: Any) -> bool:
    return isinstance(v, _NUM) and not isinstance(v, bool)


INT_RANGE = 2**64
"""Integer results at or beyond this magnitude are null (Elasticsearch: a long
overflow is an error); it also keeps every integer printable and convertible
to a float."""


def _bounded(v: Any) -> Any:
    """An arithmetic result, or null when it overflowed (int past
    :data:`INT_RANGE`, float infinite or NaN)."""
    if v.__class__ is int:
        return v if -INT_RANGE < v < INT_RANGE else None
    return v if math.isfinite(v) else None


def _index(v: Any) -> int | None:
    """A numeric function argument used as a position: finite and integral
    (a float is truncated, as before), else None."""
    if v.__class__ is int:
        return v
    if is_num(v) and math.isfinite(v):
        return int(v)
    return None


def norm(v: Any) -> Any:
    """Empty lists are null; one-element lists stay lists (any-semantics agree)."""
    if v.__class__ is list and not v:
        return None
    return v


# ----------------------------------------------------------------- comparison


def _eq1(a: Any, b: Any) -> bool | None:
    ca, cb = a.__class__, b.__class__
    if ca is cb:
        return a == b
    if is_num(a) and is_num(b):
        return a == b
    return False  # different types are never equal


def eq(a: Any, b: Any) -> bool | None:
    a = norm(a)
    b = norm(b)
    if a is None or b is None:
        return None
    if a.__class__ is list:
        return any(eq(x, b) is True for x in a)
    if b.__class__ is list:
        return any(eq(a, y) is True for y in b)
    return _eq1(a, b)


def ne(a: Any, b: Any) -> bool | None:
    """``!=`` as a leaf: over a computed value (a field's ``!=`` is lowered to
    ``not eq``, Elasticsearch's ``must_not term``).  A list is true when any
    element differs (ES tests a script on each value: ``multiValueDocValues``)."""
    a = norm(a)
    b = norm(b)
    if a is None or b is None:
        return None
    if a.__class__ is list:
        rs = [ne(x, b) for x in a]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    if b.__class__ is list:
        rs = [ne(a, y) for y in b]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    return not _eq1(a, b)


def _ord1(op: str, a: Any, b: Any) -> bool | None:
    if is_num(a) and is_num(b) or (a.__class__ is str and b.__class__ is str) or (a.__class__ is bool and b.__class__ is bool):
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b
    return None


def order(op: str, a: Any, b: Any) -> bool | None:
    a = norm(a)
    b = norm(b)
    if a is None or b is None:
        return None
    if a.__class__ is list:
        rs = [order(op, x, b) for x in a]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    if b.__class__ is list:
        rs = [order(op, a, y) for y in b]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    return _ord1(op, a, b)


def lt(a, b):
    return order("<", a, b)


def le(a, b):
    return order("<=", a, b)


def gt(a, b):
    return order(">", a, b)


def ge(a, b):
    return order(">=", a, b)


def fold(v: Any) -> Any:
    return v.lower() if v.__class__ is str else v


def in_(v: Any, values: frozenset, has_null: bool, ci: bool) -> bool | None:
    """``v in (values...)``; ``values`` already case-folded when ``ci``."""
    v = norm(v)
    if v is None:
        return None
    if v.__class__ is list:
        rs = [in_(x, values, has_null, ci) for x in v]
        return True if True in rs else (None if None in rs else False)
    key = fold(v) if ci else v
    try:
        if key in values and _type_ok(key, values):
            return True
    except TypeError:
        return None
    return None if has_null else False


def _type_ok(key: Any, values: frozenset) -> bool:
    # True in {1} is True in Python; EQL keeps booleans and numbers apart.
    if key.__class__ is bool:
        return any(x.__class__ is bool and x == key for x in values)
    if is_num(key):
        return any(is_num(x) and x == key for x in values)
    return True


def logic_not(v: Any) -> bool:
    """``not``: true unless ``v`` is true (a null operand gives true)."""
    return v is not True


def is_null(v: Any) -> bool:
    return norm(v) is None


# ----------------------------------------------------------------- patterns


def wildcard_regex(pattern: str) -> str:
    """EQL wildcard -> regex source (full match): ``*`` any run, ``?`` one char.
    Every other character, backslash included, is literal.

    The source never backtracks catastrophically: runs of ``*`` collapse to
    one, and each ``*`` before a literal part is an atomic lazy group
    ``(?>.*?part)`` that commits to the part's first occurrence (exact for
    wildcards: see :func:`wildcard_matcher`).  Kestrel itself matches with
    :func:`wildcard_matcher`; this source is for matchers that want a regex."""

    def part(text: str) -> str:
        return "".join("." if ch == "?" else re.escape(ch) for ch in text)

    parts = re.sub(r"\*+", "*", pattern).split("*")
    if len(parts) == 1:
        return part(parts[0])
    middle = "".join(f"(?>.*?{part(p)})" for p in parts[1:-1] if p)
    return part(parts[0]) + middle + ".*" + part(parts[-1])


def wildcard_matcher(pattern: str, yes: Any = True, no: Any = False) -> Callable[[str], Any]:
    """A full-match test of one wildcard (``yes`` or ``no``), in
    O(len(value) * len(pattern)) time.

    The pattern splits at its ``*`` runs into fixed-length parts (``?`` is
    one character); the first must start the value, the last end it, and
    each middle part is taken at its first occurrence after the previous
    one.  That is exact: if the wildcard matches with a part at some
    position, it also matches with the part at its first occurrence there,
    since the ``*`` after it absorbs the gap.  A backtracking translation
    (``.*a.*b.*``) costs a factor of the value's length per star instead
    (issue 14: ``*a*****b*`` over 200 characters ran for seconds).  Parts
    without ``?`` use ``str.find``; others a quantifier-free regex."""
    parts = re.sub(r"\*+", "*", pattern).split("*")

    def part(text: str) -> Any:
        if "?" not in text:
            return text
        return re.compile("".join("." if ch == "?" else re.escape(ch) for ch in text), re.DOTALL)

    if len(parts) == 1:
        only = part(parts[0])
        if only.__class__ is str:
            return lambda v: yes if v == only else no
        return lambda v: yes if only.fullmatch(v) is not None else no
    head, tail = part(parts[0]), part(parts[-1])
    middle = [part(p) for p in parts[1:-1] if p]
    nh, nt = len(parts[0]), len(parts[-1])
    need = sum(len(p) for p in parts)
    if "?" not in pattern:  # the common case, kept to C string methods
        middle_s = tuple((m, len(m)) for m in middle)

        def plain(v: str, head: str = head, tail: str = tail, middle: tuple = middle_s) -> Any:
            if len(v) < need or not v.startswith(head) or not v.endswith(tail):
                return no
            pos, end = nh, len(v) - nt
            for m, k in middle:
                i = v.find(m, pos, end)
                if i < 0:
                    return no
                pos = i + k
            return yes

        return plain

    def match(v: str) -> Any:
        n = len(v)
        if n < need:
            return no
        if head.__class__ is str:
            if not v.startswith(head):
                return no
        elif head.match(v) is None:
            return no
        end = n - nt  # the tail's start; middle parts must fit before it
        if tail.__class__ is str:
            if not v.endswith(tail):
                return no
        elif tail.fullmatch(v, end) is None:
            return no
        pos = nh
        for m in middle:
            if m.__class__ is str:
                i = v.find(m, pos, end)
                if i < 0:
                    return no
                pos = i + len(m)
            else:
                found = m.search(v, pos, end)
                if found is None:
                    return no
                pos = found.end()
        return yes

    return match


def _wildcards(patterns: tuple, ci: bool) -> Callable[[str], Any]:
    """One True/None test for a leaf's wildcards.  Those with at most one
    ``*`` become one regex alternation, as fast as before and still bounded
    (``a.*b`` backtracks at most once over the value, per alternative);
    those with more run :func:`wildcard_matcher`, after a prefilter: one
    search for the longest literal part of each (a value holding none of
    them cannot match)."""
    few = [p for p in patterns if re.sub(r"\*+", "*", p).count("*") <= 1]
    many = [p for p in patterns if p not in few]
    rx = None
    if few:
        source = "|".join(f"(?:{wildcard_regex(p)})" for p in few)
        rx = re.compile(source, re.DOTALL).fullmatch
    tests = tuple(wildcard_matcher(p) for p in many)
    keys = []
    for p in many:
        plain = [part for part in re.sub(r"\*+", "*", p).split("*") if part and "?" not in part]
        if not plain:
            keys = None  # a pattern without a literal part: no prefilter
            break
        keys.append(max(plain, key=len))
    pre = re.compile("|".join(re.escape(k) for k in sorted(set(keys)))).search if keys else None
    if not patterns:
        return lambda v: None
    if not many and not ci:
        return rx
    if len(tests) == 1 and rx is None and not ci:
        return wildcard_matcher(many[0], True, None)

    def any_of(v: str) -> Any:
        if ci:
            v = v.lower()
        if rx is not None and rx(v) is not None:
            return True
        if tests and (pre is None or pre(v) is not None):
            for t in tests:
                if t(v):
                    return True
        return None

    return any_of


def lucene_regex(pattern: str) -> str:
    """RE2 source for a ``regex`` operand.  Elasticsearch uses Lucene's
    regular-expression syntax, which is always anchored and matched by an
    automaton (linear time); Kestrel matches with RE2, also linear, whose
    syntax reads the common subset (``. * + ? {m,n} | () [] [^]``, escapes)
    the same.  Python's ``\\Z`` is RE2's ``\\z``; what RE2 cannot express
    (backreferences, lookaround) is a compile error, located by the caller."""
    for m in _REPEAT.finditer(pattern):
        # RE2 reads a count it cannot hold as literal text; say so instead
        if any(x and (len(x) > 4 or int(x) > MAX_REPEAT) for x in m.groups()):
            raise PatternError(f"repetition count {_short(m.group(0))} is over {MAX_REPEAT} (RE2's limit)")
    return re.sub(r"(?<!\\)((?:\\\\)*)\\Z", r"\1\\z", pattern)


MAX_REPEAT = 1000
_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "…}"


class PatternError(ValueError):
    """A pattern the matching engine rejects (the message says why)."""


_RE2_OPTIONS: dict[bool, Any] = {}


def _re2_options(ci: bool) -> Any:
    opts = _RE2_OPTIONS.get(ci)
    if opts is None:
        import re2  # google-re2: linear-time matching (docs/eql-semantics.md, "Patterns")

        opts = re2.Options()
        opts.dot_nl = True  # '.' matches newlines, as before (DOTALL)
        opts.never_capture = True  # a match is a yes/no: no submatch bookkeeping
        opts.case_sensitive = not ci
        opts.log_errors = False
        _RE2_OPTIONS[ci] = opts
    return opts


def _re2_fullmatch(source: str, ci: bool) -> Callable[[str], Any]:
    import re2

    try:
        rx = re2._re2.RE2(source.encode("utf-8", "surrogatepass"), _re2_options(ci))
    except AttributeError:  # a binding without the pybind11 core: its public API (slower, same answers)
        try:
            public = re2.compile(source, _re2_options(ci)).fullmatch
        except Exception as exc:  # noqa: BLE001 - re2.error and the binding's own types
            raise PatternError(str(exc)) from None

        def public_fullmatch(v: str) -> Any:
            try:
                return True if public(v) is not None else None
            except UnicodeEncodeError:  # a lone surrogate: that API takes strict UTF-8 only
                return None

        return public_fullmatch
    except Exception as exc:  # noqa: BLE001 - the binding raises its own error types
        raise PatternError(str(exc)) from None
    if not rx.ok():
        err = rx.error()
        raise PatternError(err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err))
    # RE2.Match on the UTF-8 bytes (the binding's public fullmatch wraps this
    # call in a generator and offset maps: 2-5 us a call instead of 1 us).
    match, anchor, null = rx.Match, re2._Anchor.ANCHOR_BOTH, re2._NULL_SPAN

    def fullmatch(v: str) -> Any:
        b = v.encode("utf-8", "surrogatepass")
        return True if match(anchor, b, 0, len(b))[0] != null else None

    return fullmatch


def pattern_error(kind: str, pattern: str, ci: bool = False) -> str | None:
    """Why ``pattern`` cannot be matched (None: it can)."""
    try:
        _compile(kind, (pattern,), ci)
    except PatternError as exc:
        return str(exc)
    return None


def _compile(kind: str, patterns: tuple, ci: bool) -> Callable[[str], Any]:
    if kind == "wildcard":
        # case-insensitive: str.lower() on both sides (docs/eql-semantics.md, "Case")
        return _wildcards(tuple(p.lower() for p in patterns) if ci else patterns, ci)
    if not patterns:
        return lambda v: None
    parts = [lucene_regex(p) for p in patterns]
    return _re2_fullmatch("|".join(f"(?:{x})" for x in parts) if len(parts) > 1 else parts[0], ci)


@lru_cache(maxsize=4096)
def compile_patterns(kind: str, patterns: tuple, ci: bool) -> Callable[[str], Any] | None:
    """One compiled full-match test for a list of wildcard or regex patterns:
    a callable returning None (no match) or a true value, in time linear in
    the value (wildcards: Python ``re`` over :func:`wildcard_regex`; regex:
    RE2).  None when a pattern does not compile (:func:`pattern_error` says why)."""
    try:
        return _compile(kind, patterns, ci)
    except PatternError:
        return None


def pattern_match(kind: str, v: Any, patterns: tuple, ci: bool) -> bool | None:
    v = norm(v)
    if v is None:
        return None
    if v.__class__ is list:
        rs = [pattern_match(kind, x, patterns, ci) for x in v]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    if v.__class__ is not str:
        return None
    m = compile_patterns(kind, patterns, ci)
    if m is None:
        return None
    return m(v) is not None


# ----------------------------------------------------------------- arithmetic


def _arith(op: str, a: Any, b: Any) -> Any:
    if not (is_num(a) and is_num(b)):
        return None
    try:
        r = _arith1(op, a, b)
    except (ArithmeticError, ValueError):  # int too large for a float, fmod(inf, x)
        return None
    return None if r is None else _bounded(r)


def _arith1(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            return None
        if isinstance(a, int) and isinstance(b, int):
            q = abs(a) // abs(b)  # Java integer division truncates toward zero
            return q if (a >= 0) == (b >= 0) else -q
        return a / b
    if op == "%":
        if b == 0:
            return None
        if isinstance(a, int) and isinstance(b, int):
            r = abs(a) % abs(b)  # Java remainder takes the sign of the dividend
            return r if a >= 0 else -r
        return math.fmod(a, b)
    return None


def lift2(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def lifted(a: Any, b: Any) -> Any:
        a = norm(a)
        b = norm(b)
        if a is None or b is None:
            return None
        if a.__class__ is list:
            return [lifted(x, b) for x in a]
        if b.__class__ is list:
            return [lifted(a, y) for y in b]
        return fn(a, b)

    return lifted


add = lift2(lambda a, b: _arith("+", a, b))
subtract = lift2(lambda a, b: _arith("-", a, b))
multiply = lift2(lambda a, b: _arith("*", a, b))
divide = lift2(lambda a, b: _arith("/", a, b))
modulo = lift2(lambda a, b: _arith("%", a, b))


def neg(a: Any) -> Any:
    a = norm(a)
    if a is None:
        return None
    if a.__class__ is list:
        return [neg(x) for x in a]
    return -a if is_num(a) else None


# ----------------------------------------------------------------- functions


def _str_args(*vals: Any) -> bool:
    return all(v.__class__ is str for v in vals)


def _map(fn: Callable[..., Any], args: tuple) -> Any:
    """Null-propagating, list-mapping application of ``fn`` to ``args``."""
    args = tuple(norm(a) for a in args)
    if any(a is None for a in args):
        return None
    for i, a in enumerate(args):
        if a.__class__ is list:
            return [_map(fn, args[:i] + (x,) + args[i + 1 :]) for x in a]
    return fn(*args)


def _any_true(r: Any) -> Any:
    """A boolean function applied to a list gives a list: any element true wins."""
    if r.__class__ is list:
        rs = [_any_true(x) for x in r]
        return True if True in rs else (None if all(x is None for x in rs) else False)
    return r


def _affix_test(method: str):
    def test(ci: bool, s: Any, p: Any) -> Any:
        def f(s, p):
            if not _str_args(s, p):
                return None
            return getattr(s.lower(), method)(p.lower()) if ci else getattr(s, method)(p)

        return _any_true(_map(f, (s, p)))

    return test


f_startswith = _affix_test("startswith")
f_endswith = _affix_test("endswith")


def f_stringcontains(ci: bool, s: Any, p: Any) -> Any:
    def f(s, p):
        if not _str_args(s, p):
            return None
        if p == "":
            return False  # Elasticsearch: the empty substring is not "contained"
        return p.lower() in s.lower() if ci else p in s

    return _any_true(_map(f, (s, p)))


def f_between(ci: bool, s: Any, left: Any, right: Any, greedy: Any = False) -> Any:
    def f(s, left, right, greedy=False):
        if not _str_args(s, left, right):
            return None
        if greedy.__class__ is not bool:
            return None
        if s == "":
            return ""
        hay = s.lower() if ci else s
        lft = left.lower() if ci else left
        rgt = right.lower() if ci else right
        i = hay.find(lft)
        if i < 0:
            return ""
        start = i + len(lft)
        j = hay.rfind(rgt, start) if greedy else hay.find(rgt, start)
        if j < 0:
            return ""
        return s[start:j]

    return _map(f, (s, left, right, greedy))


def f_indexof(ci: bool, s: Any, sub: Any, start: Any = 0) -> Any:
    def f(s, sub, start=0):
        if not _str_args(s, sub) or _index(start) is None or _index(start) != start:
            return None
        start = _index(start)
        if start < 0:
            start = 0
        if start > len(s):
            return None
        hay = s.lower() if ci else s
        needle = sub.lower() if ci else sub
        i = hay.find(needle, start)
        return None if i < 0 else i

    return _map(f, (s, sub, start))


def f_length(s: Any) -> Any:
    return _map(lambda s: len(s) if s.__class__ is str else None, (s,))


def f_concat(*args: Any) -> Any:
    def f(*vals):
        parts = [_to_string(v) for v in vals]
        return None if None in parts else "".join(parts)

    return _map(f, args)


def _to_string(v: Any) -> str | None:
    if v is True:
        return "true"
    if v is False:
        return "false"
    try:
        return str(v)
    except ValueError:  # an int of 4,300+ digits (from an event) has no string here
        return None


def f_string(v: Any) -> Any:
    return _map(_to_string, (v,))


def f_number(s: Any, base: Any = None) -> Any:
    def f(s, base=None):
        if s.__class__ is not str:
            return s if is_num(s) else None
        t = s.strip()
        if not t:
            return None
        b = base
        low = t.lower()
        sign = ""
        if low[:1] in "+-":
            sign, low = low[0], low[1:]
        if low.startswith("0x") and (b is None or b == 16):
            try:
                return _bounded(int(sign + low[2:], 16))
            except ValueError:
                return None
        if b is None:
            b = 10
        b = _index(b) if is_num(b) else None
        if b is None or not 2 <= b <= 36:
            return None
        try:
            return _bounded(int(sign + low, b))
        except ValueError:
            pass
        if b == 10:
            try:
                return _bounded(float(t))
            except ValueError:
                return None
        return None

    s = norm(s)
    if s is None:
        return None
    if s.__class__ is list:
        return [f_number(x, base) for x in s]
    return f(s, base)


def f_substring(s: Any, start: Any, end: Any = None) -> Any:
    def f(s, start, end=None):
        if s.__class__ is not str or not is_num(start) or (end is not None and not is_num(end)):
            return None
        n = len(s)
        a = _index(start)
        b = n if end is None else _index(end)
        if a is None or b is None:
            return None
        if a < 0:
            a = max(0, n + a)
        if end is not None:
            if b < 0:
                b = max(0, n + b)
        if a >= n or a > b:
            return ""
        return s[a:b]

    s = norm(s)
    if s is None or norm(start) is None:
        return None
    if s.__class__ is list:
        return [f_substring(x, start, end) for x in s]
    return f(s, start, norm(end))


@lru_cache(maxsize=1024)
def _network(cidr: str):
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _address(ip: str):
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def f_cidrmatch(ip: Any, *cidrs: Any) -> Any:
    cidrs = tuple(norm(c) for c in cidrs)
    ip = norm(ip)
    if ip is None or any(c is None for c in cidrs):
        return None
    if ip.__class__ is list:
        rs = [f_cidrmatch(x, *cidrs) for x in ip]
        return True if True in rs else (None if all(r is None for r in rs) else False)
    if ip.__class__ is not str:
        return None
    addr = _address(ip)
    if addr is None:
        return None
    for c in cidrs:
        items = c if c.__class__ is list else [c]
        for item in items:
            if item.__class__ is not str:
                return None
            net = _network(item)
            if net is None:
                return None
            if addr.version == net.version and addr in net:
                return True
    return False


def cidr_matcher(cidrs: tuple[str, ...]) -> Callable[[Any], Any]:
    """A fast one-argument matcher for constant CIDR blocks (host runtime)."""
    nets4 = []
    nets6 = []
    for c in cidrs:
        net = _network(c)
        if net is None:
            raise ValueError(f"invalid CIDR block {c!r}")
        (nets4 if net.version == 4 else nets6).append((int(net.network_address), int(net.netmask)))

    def match(ip: Any) -> Any:
        ip = norm(ip)
        if ip is None:
            return None
        if ip.__class__ is list:
            rs = [match(x) for x in ip]
            return True if True in rs else (None if all(r is None for r in rs) else False)
        if ip.__class__ is not str:
            return None
        addr = _address(ip)
        if addr is None:
            return None
        n = int(addr)
        for base, mask in nets4 if addr.version == 4 else nets6:
            if n & mask == base:
                return True
        return False

    return match


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "add": add,
    "subtract": subtract,
    "multiply": multiply,
    "divide": divide,
    "modulo": modulo,
    "length": f_length,
    "concat": f_concat,
    "string": f_string,
    "number": f_number,
    "substring": f_substring,
    "cidrMatch": f_cidrmatch,
}
"""Functions without a case-insensitive variant: name -> implementation."""

CI_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "startsWith": f_startswith,
    "endsWith": f_endswith,
    "stringContains": f_stringcontains,
    "between": f_between,
    "indexOf": f_indexof,
}
"""Functions with a ``~`` variant: name -> implementation taking ``ci`` first."""

BOOLEAN_FUNCTIONS = frozenset({"startsWith", "endsWith", "stringContains", "cidrMatch"})


def call(name: str, ci: bool, args: tuple) -> Any:
    if name in CI_FUNCTIONS:
        return CI_FUNCTIONS[name](ci, *args)
    return FUNCTIONS[name](*args)
