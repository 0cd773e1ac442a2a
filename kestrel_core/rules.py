"""Rule files: validation, located errors, golden tests.

Two formats, both valid everywhere:

* one rule per file, top-level keys, optional ``[[test]]`` tables (the
  format of packs with a ``pack.toml``; see docs/rule-packs.md)::

      id = "kestrel.linux.exec_from_tmp"
      name = "Program executed from /tmp"
      description = "..."
      severity = "high"
      query = '''process where process.executable : "/tmp/*"'''

* files of ``[[rule]]`` tables (several rules per file, no tests)::

      [[rule]]
      id = "linux-shell-from-web"
      name = "Shell spawned by a web server"
      query = 'process where process.parent.name == "nginx"'

Pack discovery, defaults and priority merging live in
:mod:`kestrel_core.packs`.  Every problem is a :class:`RuleError` located at
``file:line:column``: TOML syntax, unknown keys (with a did-you-mean hint),
missing keys, types, enums, ranges, ATT&CK id shape, duplicate ids, JSON
errors in test events and EQL errors, which point *into the file* (positions
are found by scanning the text, as ``tomllib`` reports none).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

import attrs

SEVERITIES = ("low", "medium", "high", "critical")
MODES = ("observe", "shadow", "enforce")
"""observe: alert only; shadow: blocking actions are simulated and reported as
"would block"; enforce: blocking actions are applied (in an enforce run)."""
ACTIONS = ("alert", "deny-exec", "deny-open", "deny-connect", "kill")
SEVERITY_RISK = {"low": 21, "medium": 47, "high": 73, "critical": 99}
"""Risk score of a rule that sets none (nor its pack's defaults)."""

RULE_KEYS = ("id", "name", "description", "severity", "risk_score", "tags", "mode", "actions", "false_positives",
             "query", "runtime", "enabled", "exception_lists", "suppress")
REQUIRED_KEYS = ("id", "name", "query")
TEST_KEYS = ("name", "expect_alerts", "expect_events", "events")
DEFAULT_KEYS = ("severity", "risk_score", "mode", "tags", "actions")
"""Keys a pack's ``[defaults]`` may set."""

ATTACK_LIKE = re.compile(r"^[Tt]\d")
ATTACK_ID = re.compile(r"^T\d{4}(\.\d{3})?$")


@attrs.define(kw_only=True)
class RuleTest:
    """A golden test: events (ECS JSON documents) and the alerts they must raise."""

    name: str
    expect_alerts: int
    events: list[dict[str, Any]]
    expect_events: list[list[int]] | None = None
    """Per alert, the 0-based indexes of its matched events (step order)."""
    file: str | None = None
    line: int | None = None


@attrs.define(kw_only=True)
class Rule:
    id: str
    name: str
    query: str
    severity: str = "medium"
    description: str = ""
    tags: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    risk_score: int | None = None
    mode: str = "observe"
    actions: tuple[str, ...] = attrs.field(default=("alert",), converter=tuple)
    false_positives: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    tests: tuple[RuleTest, ...] = attrs.field(default=(), converter=tuple)
    pack: str | None = None
    """Name of the pack the rule came from."""
    runtime: str | None = None
    """Predicate runtime this rule asks for (None: the engine's default)."""
    enabled: bool = True
    file: str | None = None
    line: int | None = None
    """Line of the rule's ``[[rule]]`` header (1 for a one-rule file)."""
    query_line: int = 0
    """Lines to add to a query position to get the file position."""
    query_col: int = 0
    """Columns to add to positions on the query's first line."""
    runtime_pos: tuple[int, int] | None = None
    """(line, column) of the ``runtime`` key, for errors about it."""
    runtime_src: str | None = None
    """The source line of the ``runtime`` key."""
    exceptions: tuple[Any, ...] = attrs.field(default=(), converter=tuple)
    """:class:`kestrel_core.exceptionlists.ExceptionEntry` compiled into the
    predicate: the rule's own ``[[exception]]`` entries, then those of its
    lists (filled in by :func:`kestrel_core.packs.load_packs`; expired ones left out)."""
    exception_lists: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Names of the shared exception lists the rule takes entries from."""
    exception_lists_pos: tuple[int, int, str | None] | None = None
    """(line, column, source line) of ``exception_lists``, for errors about a list name."""
    suppress: Any = None
    """:class:`kestrel_core.suppression.SuppressSpec`; None: the profile's
    default; False: never suppressed (``suppress = false``)."""

    @property
    def source_name(self) -> str:
        return self.file or f"<rule {self.id}>"

    def canonical(self) -> dict[str, Any]:
        """What the rule means (not where it lives): the input of pack hashes."""
        return {"id": self.id, "name": self.name, "description": self.description, "severity": self.severity,
                "risk_score": self.risk_score, "tags": list(self.tags), "mode": self.mode,
                "actions": list(self.actions), "false_positives": list(self.false_positives), "query": self.query,
                "runtime": self.runtime, "enabled": self.enabled,
                # only when set, so the hashes of rules without them stay what they were
                **({"exceptions": [e.canonical() for e in self.exceptions]} if self.exceptions else {}),
                **({"suppress": self.suppress.canonical() if self.suppress else False}
                   if self.suppress is not None else {})}


@attrs.define
class RuleError(Exception):
    """A located problem in a rule pack."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    rule_id: str | None = None
    source_line: str | None = None
    detail: str | None = None
    """Full multi-line text (EQL errors keep their caret display here)."""
    hint: str | None = None
    """What to do about it (printed after the location)."""
    still_runs: bool = False
    """The rule loads anyway, degraded (an enforce rule over its inline budget
    runs in shadow mode): an error for ``rules check``, no reason for
    ``kestrel run`` to refuse to start."""

    def __str__(self) -> str:
        text = self.detail or self._format()
        if self.rule_id:  # a pack holds many rules: say which one, not just where
            first, nl, rest = text.partition("\n")
            text = f"{first} [rule {self.rule_id}]{nl}{rest}"
        return text

    def _format(self) -> str:
        loc = self.file or "<rules>"
        if self.line is not None:
            loc += f":{self.line}"
            if self.column is not None:
                loc += f":{self.column}"
        head = f"{loc}: error: {self.message}"
        tail = f"\n  hint: {self.hint}" if self.hint else ""
        if self.source_line is not None and self.column is not None:
            line = self.source_line.rstrip("\r\n")
            return f"{head}\n  {line}\n  {' ' * (self.column - 1)}^{tail}"
        return head + tail

    @classmethod
    def from_eql(cls, err: Any, rule_id: str | None = None) -> "RuleError":
        return cls(err.message, err.source_name, err.line, err.column, rule_id, err.source_line, detail=str(err))


# --------------------------------------------------------------------------- locating

_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*[A-Za-z_\"'][^\]]*\]\]?[ \t]*(#.*)?$")
_KEY = re.compile(r"^[ \t]*(?P<key>[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')[ \t]*=[ \t]*")


def _headers(lines: list[str]) -> list[tuple[int, str]]:
    """(0-based line, table name) of every table header outside multi-line strings."""
    out = []
    in_multiline: str | None = None
    for i, line in enumerate(lines):
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            continue
        if _HEADER.match(line) and not _KEY.match(line):
            out.append((i, line.strip().strip("[]").strip()))
            continue
        m = _KEY.match(line)
        if m:
            rest = line[m.end():]
            for q in ('"""', "'''"):
                if rest.startswith(q) and rest.count(q) == 1:
                    in_multiline = q
                    break
    return out


def _blocks(lines: list[str], name: str) -> list[tuple[int, int]]:
    """(header, end) 0-based line ranges of each ``[[name]]`` table."""
    heads = _headers(lines)
    out = []
    for n, (i, table) in enumerate(heads):
        if table == name:
            end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
            out.append((i, end))
    return out


def _key_positions(lines: list[str], block: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
    """key -> (0-based line, 0-based column of the key, 0-based column of the value)
    for the keys of the table whose header is ``block[0]`` (-1: top level)."""
    out: dict[str, tuple[int, int, int]] = {}
    s, e = block
    i = s + 1
    in_multiline: str | None = None
    while i < e:
        line = lines[i]
        if in_multiline:
            if in_multiline in line:
                in_multiline = None
            i += 1
            continue
        m = _KEY.match(line)
        if m:
            key = m.group("key").strip("\"'")
            out.setdefault(key, (i, m.start("key"), m.end()))
            rest = line[m.end():]
            for q in ('"""', "'''"):
                if rest.startswith(q) and rest.count(q) == 1:
                    in_multiline = q
                    break
        i += 1
    return out


def _query_offset(lines: list[str], line_idx: int, value_col: int) -> tuple[int, int]:
    """Offsets that map a position inside a string value to the file.

    Returns ``(line_offset, col_offset)``: file line = value line + line_offset;
    on the value's first line, file column = value column + col_offset."""
    text = lines[line_idx]
    rest = text[value_col:]
    for q in ('"""', "'''"):
        if rest.startswith(q):
            after = value_col + 3
            if after >= len(text.rstrip("\r\n")):
                # TOML trims the newline right after the opening delimiter
                return line_idx + 1, 0
            return line_idx, after
    if rest[:1] in ('"', "'"):
        return line_idx, value_col + 1
    return line_idx, value_col


class _Locator:
    """Positions of one table's keys, as 1-based (line, column, source line)."""

    def __init__(self, lines: list[str], block: tuple[int, int], fallback_line: int) -> None:
        self.lines = lines
        self.keys = _key_positions(lines, block)
        self.fallback = fallback_line

    def at(self, key: str | None) -> tuple[int, int, str | None]:
        if key is not None and key in self.keys:
            li, kc, _ = self.keys[key]
            return li + 1, kc + 1, self.lines[li]
        src = self.lines[self.fallback - 1] if 1 <= self.fallback <= len(self.lines) else None
        return self.fallback, 1, src

    def value_offset(self, key: str) -> tuple[int, int]:
        if key not in self.keys:
            return 0, 0
        li, _, vc = self.keys[key]
        return _query_offset(self.lines, li, vc)


def _hint(key: str, valid: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"did you mean '{close[0]}'?" if close else f"keys: {', '.join(valid)}"


# --------------------------------------------------------------------------- validation


def check_table(table: dict[str, Any], spec: dict[str, tuple[type, Callable[[Any], str | None] | None]],
                where: str, loc: _Locator, file: str, rid: str | None, errors: list[RuleError],
                skip: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> bool:
    """Unknown keys and types/values of a table against ``spec`` (key -> (type,
    extra check returning a message or None)), then the ``required`` keys it
    lacks (at the table's header).  Appends every problem; True if none."""
    ok = True

    def err(key: str | None, msg: str) -> None:
        nonlocal ok
        ok = False
        ln, col, src = loc.at(key)
        errors.append(RuleError(msg, file, ln, col, rid, src))

    for key, value in table.items():
        if key in skip:
            continue
        if key not in spec:
            err(key, f"unknown key '{key}' in {where} ({_hint(key, tuple(spec))})")
            continue
        typ, extra = spec[key]
        if not _is(value, typ):
            err(key, f"'{key}' must be {_TYPE_NAMES[typ]}, not {type(value).__name__}")
            continue
        if extra is not None:
            msg = extra(value)
            if msg:
                err(key, msg)
    for key in required:
        if key not in table:
            err(None, f"{where} is missing required key '{key}'")
    return ok


_STRLIST = ("strlist",)
_TYPE_NAMES: dict[Any, str] = {str: "a string", int: "an integer", bool: "a boolean", _STRLIST: "a list of strings",
                               list: "an array", dict: "a table"}


def _is(value: Any, typ: Any) -> bool:
    if typ is _STRLIST:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _enum(name: str, choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"{name} must be one of {', '.join(choices)}, not '{v}'"


def _risk(v: int) -> str | None:
    return None if 0 <= v <= 100 else f"risk_score must be between 0 and 100, not {v}"


def _tags(v: list[str]) -> str | None:
    bad = [t for t in v if ATTACK_LIKE.match(t) and not ATTACK_ID.match(t)]
    if bad:
        return f"tag '{bad[0]}' looks like an ATT&CK technique id but is not of the form Tnnnn or Tnnnn.nnn"
    return None


def _actions(v: list[str]) -> str | None:
    bad = [a for a in v if a not in ACTIONS]
    return f"unknown action '{bad[0]}' (actions: {', '.join(ACTIONS)})" if bad else None


def _nonempty(name: str) -> Callable[[Any], str | None]:
    return lambda v: None if v.strip() else f"'{name}' must not be empty"


RULE_SPEC: dict[str, tuple[Any, Any]] = {
    "id": (str, _nonempty("id")),
    "name": (str, None),
    "description": (str, None),
    "severity": (str, _enum("severity", SEVERITIES)),
    "risk_score": (int, _risk),
    "tags": (_STRLIST, _tags),
    "mode": (str, _enum("mode", MODES)),
    "actions": (_STRLIST, _actions),
    "false_positives": (_STRLIST, None),
    "query": (str, None),
    "runtime": (str, None),
    "enabled": (bool, None),
    "exception_lists": (_STRLIST, None),
    "suppress": (object, None),  # checked by kestrel_core.suppression.parse_suppress
}
DEFAULTS_SPEC = {k: RULE_SPEC[k] for k in DEFAULT_KEYS}
TEST_SPEC: dict[str, tuple[Any, Any]] = {
    "name": (str, None),
    "expect_alerts": (int, lambda v: None if v >= 0 else f"expect_alerts must be >= 0, not {v}"),
    "expect_events": (list, None),
    "events": (str, None),
}


def apply_defaults(table: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A rule table with its pack's defaults filled in (tags are prepended)."""
    out = dict(table)
    for key, value in defaults.items():
        if key == "tags":
            out["tags"] = list(value) + [t for t in table.get("tags", []) if t not in value]
        elif key not in out:
            out[key] = value
    return out


def _build_rule(table: dict[str, Any], loc: _Locator, file: str, header_line: int, *, required: tuple[str, ...],
                errors: list[RuleError], defaults: dict[str, Any], pack: str | None,
                check_queries: bool) -> Rule | None:
    rid = table.get("id") if isinstance(table.get("id"), str) else None
    if not check_table(table, RULE_SPEC, "rule", loc, file, rid, errors, skip=("test", "exception"),
                       required=required):
        return None
    t = apply_defaults(table, defaults)
    suppress = None
    if "suppress" in t:
        from .suppression import parse_suppress

        suppress, msg = parse_suppress(t["suppress"])
        if msg:
            ln, col, src = loc.at("suppress")
            errors.append(RuleError(f"suppress: {msg}", file, ln, col, rid, src))
            return None
        if check_queries and suppress:
            from .plugins import rules_schema
            from .suppression import unknown_by_fields

            bad = unknown_by_fields(suppress, rules_schema())
            if bad:
                ln, col, src = loc.at("suppress")
                for name, msg in bad:
                    at = src.find(f'"{name}"') if src else -1  # the field itself, on an inline table's line
                    errors.append(RuleError(f"suppress: {msg}", file, ln, at + 1 if at >= 0 else col, rid, src))
                return None
    lists_pos = loc.at("exception_lists") if "exception_lists" in loc.keys else None
    qline, qcol = loc.value_offset("query")
    rt_pos = rt_src = None
    if "runtime" in loc.keys:  # errors about the runtime point at its name
        li, _, vc = loc.keys["runtime"]
        rt_pos, rt_src = (li + 1, vc + 1), loc.lines[li]
    rule = Rule(id=t["id"], name=t["name"], query=t["query"], severity=t.get("severity", "medium"),
                description=t.get("description", ""), tags=t.get("tags", ()),
                risk_score=t.get("risk_score", SEVERITY_RISK[t.get("severity", "medium")]),
                mode=t.get("mode", "observe"), actions=t.get("actions", ("alert",)),
                false_positives=t.get("false_positives", ()), pack=pack, runtime=t.get("runtime"),
                enabled=t.get("enabled", True), file=file, line=header_line, query_line=qline, query_col=qcol,
                runtime_pos=rt_pos, runtime_src=rt_src, exception_lists=t.get("exception_lists", ()),
                exception_lists_pos=lists_pos, suppress=suppress)
    if check_queries:
        err = check_rule_syntax(rule, loc.lines)
        if err is not None:
            errors.append(err)
            return None
    return rule


def _build_test(table: Any, n: int, lines: list[str], block: tuple[int, int] | None, file: str, rid: str | None,
                errors: list[RuleError]) -> RuleTest | None:
    header = block[0] + 1 if block else 1
    loc = _Locator(lines, block or (-1, 0), header)
    where = f"[[test]] #{n + 1}"
    if not isinstance(table, dict):
        errors.append(RuleError(f"{where} must be a table: write [[test]]", file, header, 1, rid))
        return None
    ok = check_table(table, TEST_SPEC, where, loc, file, rid, errors, required=("name", "expect_alerts", "events"))
    if not ok:
        return None
    events: list[dict[str, Any]] = []
    loff, coff = loc.value_offset("events")
    from .jsonlines import LineError, parse_value

    for k, text in enumerate(table["events"].split("\n")):
        if not text.strip():
            continue
        fline = k + 1 + loff
        src = lines[fline - 1] if 1 <= fline <= len(lines) else None
        try:  # as event inputs read JSON (orjson): no NaN/Infinity, bounded depth
            doc = parse_value(text.encode())
        except LineError as exc:
            col = exc.column + (coff if k == 0 else 0)
            errors.append(RuleError(f"{where}: invalid JSON in events: {exc.message}", file, fline, col, rid, src))
            ok = False
            continue
        if not isinstance(doc, dict):
            col = len(text) - len(text.lstrip()) + 1 + (coff if k == 0 else 0)
            errors.append(RuleError(f"{where}: each events line must be a JSON object, not {type(doc).__name__}",
                                    file, fline, col, rid, src))
            ok = False
            continue
        events.append(doc)
    expect_events = table.get("expect_events")
    if expect_events is not None and ok:  # (indexes are meaningless when an event line did not parse)
        ln, col, src = loc.at("expect_events")
        if not all(isinstance(a, list) and all(_is(i, int) for i in a) for a in expect_events):
            errors.append(RuleError(f"{where}: 'expect_events' must be a list of lists of event indexes",
                                    file, ln, col, rid, src))
            ok = False
        else:
            bad = [i for a in expect_events for i in a if not 0 <= i < len(events)]
            if bad:
                errors.append(RuleError(f"{where}: event index {bad[0]} out of range (the test has {len(events)} "
                                        f"events: 0..{len(events) - 1})", file, ln, col, rid, src))
                ok = False
            elif len(expect_events) != table["expect_alerts"]:
                errors.append(RuleError(f"{where}: 'expect_events' lists {len(expect_events)} alerts but "
                                        f"expect_alerts = {table['expect_alerts']}", file, ln, col, rid, src))
                ok = False
    if not ok:
        return None
    return RuleTest(name=table["name"], expect_alerts=table["expect_alerts"], events=events,
                    expect_events=expect_events, file=file, line=header)


# --------------------------------------------------------------------------- loading


def toml_position(lines: list[str], exc: tomllib.TOMLDecodeError) -> tuple[int, int, str]:
    """(line, column, message without the position) of a tomllib error.  tomllib
    says "(at end of document)" without a position when the text ends inside a
    value (an unterminated string or array): that is the end of the last line
    that has text."""
    msg = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        return int(m.group(1)), int(m.group(2)), msg[: m.start()].strip()
    m = re.search(r"\s*\(at end of document\)", msg)
    if m:
        last = max((i for i, text in enumerate(lines) if text.strip()), default=0)
        return last + 1, len(lines[last]) + 1 if lines else 1, msg[: m.start()].strip() + " at the end of the file"
    return 1, 1, msg


def toml_error(name: str, lines: list[str], exc: tomllib.TOMLDecodeError) -> RuleError:
    line, col, msg = toml_position(lines, exc)
    src = lines[line - 1] if line and line <= len(lines) else None
    # tomllib reads "2026-13-40" as the number 2026 and then stumbles: say it is a date that does not exist
    m = re.search(r"=\s*(\d{4}-\d{2}-\d{2})\b", src or "")
    if m:
        import datetime

        try:
            datetime.date.fromisoformat(m.group(1))
        except ValueError:
            msg += f"; {m.group(1)} is not a valid date (write one such as 2027-01-31)"
            col = m.start(1) + 1
    return RuleError(f"TOML syntax error: {msg}", name, line, col, None, src)


def utf8_position(data: bytes, exc: UnicodeDecodeError) -> tuple[int, int, str]:
    """(line, column, message) of the first byte of ``data`` that is not UTF-8;
    the column counts the characters before it on its line."""
    start = exc.start
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    col = len(data[line_start:start].decode("utf-8", "replace")) + 1
    return line, col, f"not UTF-8: byte 0x{data[start]:02x} ({exc.reason})"


def read_toml(path: Path) -> tuple[dict[str, Any] | None, list[str], RuleError | None]:
    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [], RuleError(f"cannot read file: {exc}", name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col, msg = utf8_position(data, exc)
        lines = data.decode("utf-8", "replace").split("\n")
        return None, lines, RuleError(msg, name, line, col, None, lines[line - 1] if line <= len(lines) else None)
    lines = text.split("\n")
    try:
        return tomllib.loads(text), lines, None
    except tomllib.TOMLDecodeError as exc:
        return None, lines, toml_error(name, lines, exc)


def load_rule_file(path: Path, *, check_queries: bool = True, defaults: dict[str, Any] | None = None,
                   pack: str | None = None, in_pack: bool = False) -> tuple[list[Rule], list[RuleError]]:
    """The rules of one file (either format) and every problem found in it.

    ``in_pack``: the file belongs to a pack with a ``pack.toml``, where a
    one-rule file must have a description."""
    name = str(path)
    doc, lines, err = read_toml(path)
    if err is not None:
        return [], [err]
    assert doc is not None
    defaults = defaults or {}
    errors: list[RuleError] = []
    if "rule" in doc:  # the multi-rule format
        for k in doc:
            if k != "rule":
                ln = next((i for i, ln_ in enumerate(lines) if re.match(rf"^\s*\[?\[?\s*{re.escape(k)}\b", ln_)), None)
                errors.append(RuleError(f"unknown top-level key '{k}' (a file of [[rule]] tables holds nothing else)",
                                        name, None if ln is None else ln + 1, 1))
        tables = doc["rule"]
        if not isinstance(tables, list):
            return [], errors + [RuleError("'rule' must be an array of tables: write [[rule]]", name, 1, 1)]
        blocks = _blocks(lines, "rule")
        rules = []
        for n, table in enumerate(tables):
            block = blocks[n] if n < len(blocks) else None
            header = block[0] + 1 if block else 1
            loc = _Locator(lines, block or (-1, 0), header)
            if "test" in table or "exception" in table:
                ln, col, src = loc.at("test" if "test" in table else "exception")
                errors.append(RuleError("tests and exceptions need the one-rule-per-file format ([[test]] and "
                                        "[[exception]] tables at top level)",
                                        name, ln, col, table.get("id") if isinstance(table.get("id"), str) else None,
                                        src))
                continue
            rule = _build_rule(table, loc, name, header, required=REQUIRED_KEYS, errors=errors, defaults=defaults,
                               pack=pack, check_queries=check_queries)
            if rule is not None:
                rules.append(rule)
        return rules, errors
    # one rule per file: keys before the first table header
    heads = _headers(lines)
    loc = _Locator(lines, (-1, heads[0][0] if heads else len(lines)), 1)
    required = REQUIRED_KEYS + (("description",) if in_pack else ())
    rid = doc.get("id") if isinstance(doc.get("id"), str) else None
    tests_raw = doc.get("test", [])
    tests: list[RuleTest] = []
    tests_ok = True
    if not isinstance(tests_raw, list):
        ln, col, src = loc.at("test")
        errors.append(RuleError("'test' must be an array of tables: write [[test]]", name, ln, col, rid, src))
        tests_ok = False
    else:
        blocks = _blocks(lines, "test")
        for n, t in enumerate(tests_raw):
            test = _build_test(t, n, lines, blocks[n] if n < len(blocks) else None, name, rid, errors)
            tests_ok &= test is not None
            if test is not None:
                tests.append(test)
    rule = _build_rule(doc, loc, name, 1, required=required, errors=errors, defaults=defaults, pack=pack,
                       check_queries=check_queries)
    own: list[Any] = []
    if "exception" in doc:
        from .exceptionlists import parse_entries

        before = len(errors)
        own = parse_entries(doc["exception"], lines, _blocks(lines, "exception"), name, "exception",
                            lambda msg, ln, col, src: errors.append(RuleError(msg, name, ln, col, rid, src)))
        tests_ok &= len(errors) == before
    if rule is None or not tests_ok:
        return [], errors
    rule.tests = tuple(tests)
    rule.exceptions = tuple(own)
    return [rule], errors


def locate_eql_error(rule: Rule, err: Any, file_lines: list[str] | None = None) -> Any:
    """Move an EQL error's position from query coordinates into the rule file."""
    if file_lines is None and rule.file:
        try:
            file_lines = Path(rule.file).read_text(encoding="utf-8").split("\n")
        except OSError:
            file_lines = None
    return err.relocate(rule.source_name, rule.query_line, rule.query_col, file_lines)


def check_rule_syntax(rule: Rule, file_lines: list[str] | None = None) -> RuleError | None:
    from .eql import compilecache
    from .eql.errors import EqlError

    cache = compilecache.active()
    if cache is not None and cache.known(rule.query):  # compiled cleanly by this engine build before
        return None
    try:
        compilecache.parse_checked(rule.query, rule.source_name)
    except EqlError as err:
        return RuleError.from_eql(locate_eql_error(rule, err, file_lines), rule.id)
    return None
