"""JSONL events read for a known rule set: only what the rules can use.

A whole-file command (``kestrel eval``) knows its rules before it reads a
line, so it need not turn every field of every event into a typed value
(the cost that dominated it, nearly all of it spent on fields no rule
reads).  Three steps, each sound on its own:

* :class:`LineFilter` skips a raw line before parsing it when the line holds
  none of the literals one of which every step predicate needs
  (:func:`kestrel_core.eql.literals.key_options`: ``==``/``in`` strings,
  wildcard, regex and ``startsWith``-style must-literals).  A JSON string
  without escapes appears in its line byte for byte between its quotes
  (an exact literal is looked for with both, a prefix with the opening
  one), so a line without a backslash that lacks every literal cannot hold
  a matching value; a line
  with a backslash is always parsed, as is a non-ASCII line when a literal
  is case-insensitive (``bytes.lower`` folds ASCII only), and any line not
  shaped like one object (``{`` ... ``}``: truncated, binary, an array), so
  damage is still reported.  Any predicate
  without such a key (a number compare, ``true``, a function) turns the
  filter off.
* :class:`FieldPlan` reads just the rules' fields (plus time, category and
  tie-breaker) out of the parsed object, nested or dotted, as
  :func:`kestrel_core.normalize.flatten` would name them.
* The raw line is kept as the event's ``raw`` (a few hundred bytes instead
  of a dict tree); output re-parses it for the events that matched.

What it changes for the user: a line the filter skips is not parsed, so an
object-shaped line the rules could never match is counted as skipped even
when a value in it is malformed or its timestamp missing (``--no-prefilter``
parses every line), and a malformed value in a field no rule reads is not
an error.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Sequence

from .eql import literals as L
from .event import Event

MISSING = object()

_INTEGER = re.compile(r"-?\d+")


def _float_text(lit: str) -> bool:
    """Text a JSON number other than an integer may be coerced to."""
    if _INTEGER.fullmatch(lit):
        return False
    try:
        float(lit)
    except ValueError:
        return False
    return True


def _quoted(kind: str, lit: str) -> bytes:
    """The bytes a line must hold: a string value without escapes is written
    between quotes, so an exact literal brings both, a prefix the opening one
    and a suffix the closing one; an integer's text may also be a bare number."""
    b = lit.encode()
    if _INTEGER.fullmatch(lit) or kind == "contains":
        return b
    if kind == "exact":
        return b'"' + b + b'"'
    return b'"' + b if kind == "prefix" else b + b'"'


class LineFilter:
    """``filter(line)``: may the raw JSONL ``line`` hold an event a rule matches?"""

    __slots__ = ("cs", "ci", "_cs_re", "_ci_re", "passed", "skipped")

    def __init__(self, cs: Iterable[bytes], ci: Iterable[bytes]) -> None:
        self.cs = tuple(sorted(set(cs), key=lambda b: (-len(b), b)))
        self.ci = tuple(sorted(set(ci), key=lambda b: (-len(b), b)))
        # one C-level search beats a Python loop once there are more than a few literals
        self._cs_re = re.compile(b"|".join(map(re.escape, self.cs))).search if len(self.cs) > 4 else None
        self._ci_re = re.compile(b"|".join(map(re.escape, self.ci))).search if len(self.ci) > 4 else None
        self.passed = 0
        self.skipped = 0

    @classmethod
    def for_predicates(cls, predicates: Iterable[tuple[Any, int]]) -> "LineFilter | None":
        """The filter of every ``(query, root)`` predicate the rules evaluate
        (each step, until and missing-event step), or None when one of them
        has no usable must-literal (then every line must be parsed)."""
        cs: set[bytes] = set()
        ci: set[bytes] = set()
        for query, root in predicates:
            options = L.key_options(query.nodes, root)
            if not options:
                return None
            key = max(options, key=L.key_score)
            for cond in key:
                for kind, lit in cond.alts:
                    if not lit or _float_text(lit):
                        # a keyword read from a JSON number is str(number): an integer's text is
                        # the JSON text, a float's may not be (1e2 -> "100.0"); booleans are "true"
                        return None
                    if cond.ci:
                        lit = lit.lower()
                        if not lit.isascii():
                            return None
                    (ci if cond.ci else cs).add(_quoted(kind, lit))
        if not cs and not ci:
            return None
        return cls(cs, ci)

    def __call__(self, line: bytes) -> bool:
        # a line not shaped like one object ({...}) is parsed, so damage is reported, not skipped
        if b"\\" in line or self._hit(line) or line[:1] != b"{" or line.rstrip()[-1:] != b"}":
            self.passed += 1
            return True
        self.skipped += 1
        return False

    def _hit(self, line: bytes) -> bool:
        if self._cs_re is not None:
            if self._cs_re(line):
                return True
        else:
            for lit in self.cs:
                if lit in line:
                    return True
        if not self.ci:
            return False
        if not line.isascii():
            return True
        low = line.lower()
        if self._ci_re is not None:
            return self._ci_re(low) is not None
        for lit in self.ci:
            if lit in low:
                return True
        return False


class FieldPlan:
    """Look up a fixed set of dotted paths in a parsed JSON object, the way
    :func:`~kestrel_core.normalize.flatten` names leaves: ``{"process":
    {"name": x}}`` and ``{"process.name": x}`` both give ``process.name``; a
    non-empty object is never a leaf.  :attr:`extract` is generated code
    that walks the nested form once for all paths (shared prefixes read
    once) and falls back to a search of every split of a path only where
    the nested walk finds nothing."""

    __slots__ = ("paths", "_plans", "extract", "extract_nested")

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = tuple(dict.fromkeys(paths))
        self._plans = {p: _splits(p) for p in self.paths}
        self.extract: Callable[[dict], tuple] = _generate(self.paths, self._plans)
        self.extract_nested: Callable[[dict], tuple] = _generate(self.paths, self._plans, dotted=False)
        """``extract`` for an object none of whose keys holds a dot (:func:`dotted_keys`
        is false for its line): the nested walk alone is exact, so a path an
        event lacks costs one failed ``get``, not a search of every split."""

    def get(self, record: dict, path: str) -> Any:
        segs, joined = self._plans[path]
        obj = record
        for s in segs:  # fast path: every segment a key of its own
            if obj.__class__ is not dict:
                break
            obj = obj.get(s, MISSING)
            if obj is MISSING:
                break
        else:
            if not (obj.__class__ is dict and obj):
                return obj
        return _lookup(record, joined, 0, len(segs))


_DOTTED_KEY = re.compile(rb'\.[^"]*"[ \t\r\n]*:')


def dotted_keys(line: bytes) -> bool:
    """May the JSON object on ``line`` have a key with a dot in it?  Without a
    backslash, ``"`` followed by ``:`` only ends a key (a string value holds
    no bare quote and is never followed by a colon), so a dot between a key's
    quotes is found by one search; a line with an escape is assumed dotted."""
    return b"\\" in line or _DOTTED_KEY.search(line) is not None


def _generate(paths: Sequence[str], plans: dict[str, Any], dotted: bool = True) -> Callable[[dict], tuple]:
    trie: dict[str, Any] = {}
    for i, p in enumerate(paths):
        node = trie
        for seg in plans[p][0]:
            node = node.setdefault(seg, {})
        node.setdefault(None, []).append(i)
    lines = ["def extract(r):"]
    names = [f"a{i}" for i in range(len(paths))]
    counter = [0]

    def below(node: dict[str, Any]) -> list[int]:
        return [i for k, child in node.items() if k is not None for i in [*child.get(None, ()), *below(child)]]

    # Nested blocks: a missing object (a process event has no "file") skips
    # its whole subtree at once; a path's value is taken as flatten names
    # leaves (a non-empty object is none).  With ``dotted``, when a path is
    # missing, the objects the walk reached are probed for a dotted key: any
    # spelling of a path with dotted keys has its first such key in one of
    # them (reached through single-segment keys, all prefixes of the path),
    # so only then are the splits searched.
    inner: list[str] = []

    def emit(node: dict[str, Any], var: str, indent: str) -> list[str]:  # ``var`` holds an object here
        made = []
        for seg, child in node.items():
            if seg is None:
                continue
            counter[0] += 1
            v = f"v{counter[0]}"
            lines.append(f"{indent}{v} = {var}.get({seg!r}, M)")
            ends = child.get(None, [])
            if any(k is not None for k in child):
                inner.append(v)
                made.append(v)
                lines.append(f"{indent}if {v}.__class__ is D:")
                lines.extend(f"{indent}    {names[i]} = M if {v} else {v}" for i in ends)
                deeper = emit(child, v, indent + "    ")
                made.extend(deeper)
                lines.append(f"{indent}else:")
                lines.extend(f"{indent}    {names[i]} = {v}" for i in ends)
                lines.extend(f"{indent}    {names[i]} = M" for i in below(child))
                lines.extend(f"{indent}    {w} = M" for w in deeper)
            else:
                lines.extend(f"{indent}{names[i]} = M if {v}.__class__ is D and {v} else {v}" for i in ends)
        return made

    emit(trie, "r", "    ")
    if dotted:
        lines.append(f"    if {' or '.join(f'{a} is M' for a in names)}:")
        probe = " or ".join(['"." in "".join(r)'] + [f'({v}.__class__ is D and "." in "".join({v}))' for v in inner])
        lines.append(f"        if {probe}:")
        for i, p in enumerate(paths):
            lines.append(f"            if {names[i]} is M: {names[i]} = L(r, J{i}, 0, {len(plans[p][0])})")
    lines.append(f"    return ({', '.join(names)}{',' if len(names) == 1 else ''})")
    env: dict[str, Any] = {"M": MISSING, "D": dict, "L": _lookup}
    env.update({f"J{i}": plans[p][1] for i, p in enumerate(paths)})
    exec(compile("\n".join(lines), "<field-plan>", "exec"), env)  # noqa: S102 - code built from field names only (repr-quoted)
    return env["extract"]  # type: ignore[no-any-return]


def _splits(path: str) -> tuple[tuple[str, ...], dict[tuple[int, int], str]]:
    segs = tuple(path.split("."))
    joined = {(i, j): ".".join(segs[i:j]) for i in range(len(segs)) for j in range(i + 1, len(segs) + 1)}
    return segs, joined


def _lookup(obj: dict, joined: dict[tuple[int, int], str], i: int, n: int) -> Any:
    for j in range(i + 1, n + 1):
        v = obj.get(joined[(i, j)], MISSING)
        if v is MISSING:
            continue
        if j == n:
            if v.__class__ is dict and v:
                continue  # flatten descends into it: no leaf of this name here
            return v
        if v.__class__ is dict:
            r = _lookup(v, joined, j, n)
            if r is not MISSING:
                return r
    return MISSING


class LeanError(ValueError):
    """A line that is not an event for these rules; the message names the field."""


_ISO_UTC = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z\Z")


class Timestamps:
    """Time parsing for a stream of events whose times share their seconds:
    the common ISO form (``...T08:00:00.002806Z``) has its whole seconds
    parsed once per distinct second and the fraction added; anything else
    goes to :mod:`kestrel_core.timestamps`."""

    def __init__(self) -> None:
        from .timestamps import TS_MAX_NS, TS_MIN_NS, event_timestamp, parse_timestamp

        self._parse_timestamp, self._event_timestamp = parse_timestamp, event_timestamp
        self._ts_range = (TS_MIN_NS, TS_MAX_NS)
        self._seconds: dict[str, int] = {}

    def date(self, value: Any, fmt: str = "auto") -> int:
        """A date field's value (``parse_timestamp``)."""
        if fmt in ("auto", "iso8601") and value.__class__ is str:
            m = _ISO_UTC.match(value)
            if m is not None:
                head, frac = m.groups()
                base = self._seconds.get(head)
                if base is None:
                    if len(self._seconds) > 4096:
                        self._seconds.clear()
                    base = self._seconds[head] = self._parse_timestamp(head + "Z", fmt)
                return base + (int(frac.ljust(9, "0")) if frac else 0)
        return self._parse_timestamp(value, fmt)

    def event(self, value: Any, fmt: str = "auto") -> int:
        """The event's own time (``event_timestamp``: it must also fit int64 nanoseconds)."""
        ns = self.date(value, fmt)
        lo, hi = self._ts_range
        return ns if lo <= ns <= hi else self._event_timestamp(value, fmt)


class EventBuilder:
    """``build(line) -> (timestamp ns, tie-breaker, Event)`` reading only
    ``paths`` (the rules' fields) plus time, category and tie-breaker; the
    event's ``raw`` is the line itself.  ``parse(line)`` turns a line into a
    dict or raises (the caller's located JSON errors)."""

    def __init__(self, schema: Any, paths: Sequence[str], *, parse: Callable[[bytes], dict],
                 category_field: str = "event.category", timestamp_field: str = "@timestamp",
                 timestamp_format: str = "auto", tiebreaker_field: str | None = None, source_id: str = "eval",
                 no_category: str = "") -> None:
        clock = Timestamps()
        self._timestamp, self._event_time = clock.date, clock.event
        self.parse = parse
        self.fmt = "auto" if timestamp_format in ("auto", None) else timestamp_format
        self.timestamp_field, self.category_field = timestamp_field, category_field
        self.tiebreaker_field = tiebreaker_field
        self.source_id, self.no_category = source_id, no_category
        typed = list(dict.fromkeys([p for p in paths if p != timestamp_field] + [category_field]))
        self.specs = [(p, schema.resolve(p), _convert(schema.field(schema.resolve(p)).type, self._timestamp))
                      for p in typed]
        self._typed = typed_fields(self.specs, [schema.field(fid).type for _p, fid, _c in self.specs])
        self.cat_index = typed.index(category_field)
        self.plan = FieldPlan(typed + [timestamp_field] + ([tiebreaker_field] if tiebreaker_field else []))
        self.ts_index = self.plan.paths.index(timestamp_field)
        self.tb_index = self.plan.paths.index(tiebreaker_field) if tiebreaker_field else -1
        self.ts_fid = schema.resolve(timestamp_field) if timestamp_field in paths else None

    def __call__(self, line: bytes) -> tuple[int, Any, Any]:
        record = self.parse(line)
        values = self.plan.extract(record)  # checks for dotted keys itself, cheaper than a search of the line
        fields = self._typed(values)
        ts = values[self.ts_index]
        if ts is MISSING or ts is None:
            raise LeanError(f"missing timestamp field '{self.timestamp_field}'")
        try:
            ts_ns = self._event_time(ts, self.fmt)
        except (ValueError, OverflowError) as exc:
            raise LeanError(f"field '{self.timestamp_field}': {exc}") from None
        if self.ts_fid is not None:
            fields[self.ts_fid] = ts_ns
        cat = values[self.cat_index]
        if cat.__class__ is list:
            cat = cat[0] if cat else None
        if cat is MISSING or cat is None or cat == "":
            cat = self.no_category
        elif cat.__class__ is not str:
            cat = str(cat)
        tb = values[self.tb_index] if self.tb_index >= 0 else None
        if tb is MISSING:
            tb = None
        ev = Event(category=cat, fields=fields, ts_mono_ns=ts_ns, ts_wall_ns=ts_ns, source_id=self.source_id, raw=line)
        return ts_ns, tb, ev


def typed_fields(specs: Sequence[tuple[str, int, Callable[[Any], Any]]], types: Sequence[Any]) -> Callable[[tuple], dict]:
    """``typed(values) -> {field id: value}`` as straight-line code: a string
    for a keyword field is kept without a call; anything else goes through
    its conversion, whose error becomes a LeanError naming the field."""
    from .schema import FieldType

    lines = ["def typed(values):", "    f = {}"]
    env: dict[str, Any] = {"M": MISSING, "LeanError": LeanError}
    for i, ((path, fid, conv), ftype) in enumerate(zip(specs, types)):
        env[f"c{i}"], env[f"p{i}"] = conv, path
        lines.append(f"    v = values[{i}]")
        lines.append("    if v is not M:")
        # values JSON already gives in the field's type are kept without a call
        if ftype is FieldType.KEYWORD:
            test = "v is not None and v.__class__ is not str"
        elif ftype is FieldType.LONG:
            test = "v is not None and v.__class__ is not int"
        elif ftype.is_list and ftype.element is FieldType.KEYWORD:  # most ECS lists hold one string
            test = "v is not None and not (v.__class__ is list and len(v) == 1 and v[0].__class__ is str)"
        else:
            test = "v is not None"
        lines.append(f"        if {test}:")
        lines.append("            try:")
        lines.append(f"                v = c{i}(v)")
        lines.append("            except (ValueError, OverflowError) as exc:")
        lines.append(f"                raise LeanError(f\"field '{{p{i}}}': {{exc}}\") from None")
        lines.append(f"        f[{fid!r}] = v")
    lines.append("    return f")
    exec(compile("\n".join(lines), "<typed-fields>", "exec"), env)  # noqa: S102 - field ids and indexes only
    return env["typed"]  # type: ignore[no-any-return]


def _convert(ftype: Any, timestamp: Callable[[Any], int]) -> Callable[[Any], Any]:
    """A field's conversion with a fast path for values JSON already gives in the right type."""
    from .schema import FieldType, coerce

    if ftype is FieldType.ANY:
        return lambda v: v
    if ftype is FieldType.DATE:
        return timestamp
    if ftype is FieldType.KEYWORD:
        return lambda v: v if v.__class__ is str else coerce(v, ftype)
    if ftype.is_list and ftype.element is FieldType.KEYWORD:
        def keywords(v: Any) -> Any:
            if v.__class__ is list and (len(v) == 1 and v[0].__class__ is str or all(x.__class__ is str for x in v)):
                return v
            return coerce(v, ftype)
        return keywords
    if ftype is FieldType.LONG:
        return lambda v: v if v.__class__ is int else coerce(v, ftype)
    return lambda v: coerce(v, ftype)
