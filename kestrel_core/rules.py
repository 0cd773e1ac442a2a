"""Rule packs: TOML files of ``[[rule]]`` tables.

A pack is a ``.toml`` file or a directory of them (read in sorted order, not
recursive)::

    [[rule]]
    id = "linux-shell-from-web"
    name = "Shell spawned by a web server"
    severity = "high"            # low | medium | high | critical
    tags = ["execution"]
    query = '''
    process where process.parent.name in ("nginx", "apache2")
      and process.name in ("sh", "bash")
    '''

Every problem is a :class:`RuleError` located at ``file:line:column``: TOML
syntax, unknown or missing keys, wrong value types, duplicate ids, and EQL
errors, which point *into the file* (the query's position in the TOML text
is found by scanning, as ``tomllib`` reports none).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import attrs

SEVERITIES = ("low", "medium", "high", "critical")
RULE_KEYS = ("id", "name", "query", "severity", "description", "tags", "runtime", "enabled")
REQUIRED_KEYS = ("id", "name", "query")


@attrs.define(kw_only=True)
class Rule:
    id: str
    name: str
    query: str
    severity: str = "medium"
    description: str = ""
    tags: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    runtime: str | None = None
    """Predicate runtime this rule asks for (None: the engine's default)."""
    enabled: bool = True
    file: str | None = None
    line: int | None = None
    """Line of the rule's ``[[rule]]`` header in ``file``."""
    query_line: int = 0
    """Lines to add to a query position to get the file position."""
    query_col: int = 0
    """Columns to add to positions on the query's first line."""

    @property
    def source_name(self) -> str:
        return self.file or f"<rule {self.id}>"


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
        if self.source_line is not None and self.column is not None:
            line = self.source_line.rstrip("\r\n")
            return f"{head}\n  {line}\n  {' ' * (self.column - 1)}^"
        return head

    @classmethod
    def from_eql(cls, err: Any, rule_id: str | None = None) -> "RuleError":
        return cls(
            err.message,
            err.source_name,
            err.line,
            err.column,
            rule_id,
            err.source_line,
            detail=str(err),
        )


# --------------------------------------------------------------------------- locating


_HEADER = re.compile(r"^[ \t]*\[\[[ \t]*rule[ \t]*\]\][ \t]*(#.*)?$")
_KEY = re.compile(r"^[ \t]*(?P<key>[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')[ \t]*=[ \t]*")


def _rule_blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) 0-based line ranges of each ``[[rule]]`` table."""
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    blocks = []
    for n, s in enumerate(starts):
        end = len(lines)
        if n + 1 < len(starts):
            end = starts[n + 1]
        else:
            for j in range(s + 1, len(lines)):
                if lines[j].lstrip().startswith("[") and not _HEADER.match(lines[j]):
                    end = j
                    break
        blocks.append((s, end))
    return blocks


def _key_positions(lines: list[str], block: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
    """key -> (0-based line, 0-based column of the key, 0-based column of the value)."""
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
    """Offsets that map a position inside the query string to the file.

    Returns ``(line_offset, col_offset)``: file line = query line + line_offset;
    on the query's first line, file column = query column + col_offset."""
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


# --------------------------------------------------------------------------- loading


def _iter_files(paths: list[str | Path]) -> tuple[list[Path], list[RuleError]]:
    files: list[Path] = []
    errors: list[RuleError] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files.extend(sorted(q for q in path.iterdir() if q.suffix == ".toml" and q.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            errors.append(RuleError(f"no such rule file or directory: {path}", str(path)))
    return files, errors


def load_rule_pack(paths: list[str | Path], *, check_queries: bool = True, schema: Any = None) -> tuple[list[Rule], list[RuleError]]:
    """Load every rule of the given files/directories.

    Returns the good rules and every problem found; one bad rule never hides
    the others.  With ``check_queries`` each query is parsed (syntax only:
    semantic checks need the run's schema and happen in the engine)."""
    files, errors = _iter_files(paths)
    rules: list[Rule] = []
    seen: dict[str, tuple[str, int | None]] = {}
    for path in files:
        rs, errs = _load_file(path, check_queries=check_queries)
        errors.extend(errs)
        for r in rs:
            if r.id in seen:
                f0, l0 = seen[r.id]
                errors.append(
                    RuleError(
                        f"duplicate rule id '{r.id}' (first defined at {f0}:{l0})",
                        r.file,
                        r.line,
                        1,
                        r.id,
                    )
                )
                continue
            seen[r.id] = (r.file or "", r.line)
            rules.append(r)
    return rules, errors


def _load_file(path: Path, *, check_queries: bool) -> tuple[list[Rule], list[RuleError]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [RuleError(f"cannot read rule file: {exc}", name)]
    lines = text.split("\n")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        line = col = None
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            msg = msg[: m.start()].strip()
        src = lines[line - 1] if line and line <= len(lines) else None
        return [], [RuleError(f"TOML syntax error: {msg}", name, line, col, None, src)]
    errors: list[RuleError] = []
    extra = [k for k in doc if k != "rule"]
    for k in extra:
        ln = next((i for i, l in enumerate(lines) if re.match(rf"^\s*\[?\[?\s*{re.escape(k)}\b", l)), None)
        errors.append(
            RuleError(f"unknown top-level key '{k}' (a rule pack holds [[rule]] tables)", name, None if ln is None else ln + 1, 1)
        )
    tables = doc.get("rule", [])
    if not isinstance(tables, list):
        return [], errors + [RuleError("'rule' must be an array of tables: write [[rule]]", name, 1, 1)]
    blocks = _rule_blocks(lines)
    rules: list[Rule] = []
    for n, table in enumerate(tables):
        block = blocks[n] if n < len(blocks) else None
        keypos = _key_positions(lines, block) if block else {}
        header_line = block[0] + 1 if block else None

        def at(key: str | None) -> tuple[int | None, int | None, str | None]:
            if key is not None and key in keypos:
                li, kc, _ = keypos[key]
                return li + 1, kc + 1, lines[li]
            return header_line, 1, lines[header_line - 1] if header_line else None

        rid = table.get("id") if isinstance(table.get("id"), str) else None
        bad = False
        for key in table:
            if key not in RULE_KEYS:
                ln, col, src = at(key)
                errors.append(RuleError(f"unknown key '{key}' in rule (keys: {', '.join(RULE_KEYS)})", name, ln, col, rid, src))
                bad = True
        for key in REQUIRED_KEYS:
            if key not in table:
                ln, col, src = at(None)
                errors.append(RuleError(f"rule is missing required key '{key}'", name, ln, col, rid, src))
                bad = True
        types = {
            "id": str,
            "name": str,
            "query": str,
            "severity": str,
            "description": str,
            "runtime": str,
            "enabled": bool,
        }
        for key, typ in types.items():
            if key in table and not isinstance(table[key], typ):
                ln, col, src = at(key)
                errors.append(RuleError(f"'{key}' must be a {typ.__name__}", name, ln, col, rid, src))
                bad = True
        if "tags" in table and not (isinstance(table["tags"], list) and all(isinstance(t, str) for t in table["tags"])):
            ln, col, src = at("tags")
            errors.append(RuleError("'tags' must be a list of strings", name, ln, col, rid, src))
            bad = True
        if isinstance(table.get("severity"), str) and table["severity"] not in SEVERITIES:
            ln, col, src = at("severity")
            errors.append(
                RuleError(f"severity must be one of {', '.join(SEVERITIES)}, not '{table['severity']}'", name, ln, col, rid, src)
            )
            bad = True
        if isinstance(table.get("id"), str) and not table["id"].strip():
            ln, col, src = at("id")
            errors.append(RuleError("'id' must not be empty", name, ln, col, rid, src))
            bad = True
        if bad:
            continue
        qline, qcol = 0, 0
        if "query" in keypos:
            li, _, vc = keypos["query"]
            qline, qcol = _query_offset(lines, li, vc)
        rule = Rule(
            id=table["id"],
            name=table["name"],
            query=table["query"],
            severity=table.get("severity", "medium"),
            description=table.get("description", ""),
            tags=tuple(table.get("tags", ())),
            runtime=table.get("runtime"),
            enabled=table.get("enabled", True),
            file=name,
            line=header_line,
            query_line=qline,
            query_col=qcol,
        )
        if check_queries:
            err = check_rule_syntax(rule, lines)
            if err is not None:
                errors.append(err)
                continue
        rules.append(rule)
    return rules, errors


def locate_eql_error(rule: Rule, err: Any, file_lines: list[str] | None = None) -> Any:
    """Move an EQL error's position from query coordinates into the rule file."""
    if file_lines is None and rule.file:
        try:
            file_lines = Path(rule.file).read_text(encoding="utf-8").split("\n")
        except OSError:
            file_lines = None
    return err.relocate(rule.source_name, rule.query_line, rule.query_col, file_lines)


def check_rule_syntax(rule: Rule, file_lines: list[str] | None = None) -> RuleError | None:
    from .eql.errors import EqlError
    from .eql.parser import parse

    try:
        parse(rule.query, rule.source_name)
    except EqlError as err:
        return RuleError.from_eql(locate_eql_error(rule, err, file_lines), rule.id)
    return None
