"""Rule packs: discovery, ``pack.toml`` manifests, defaults, priority merge, hashes.

A pack is a directory with a ``pack.toml`` (name, version, priority,
optional ``[defaults]``) and rule files found recursively, sorted by path.  A
directory without ``pack.toml`` is a plain directory of rule files (its own
``*.toml`` files only, priority 0, named after the directory); a single
``.toml`` file is a pack of its own (priority 0, named after the file).

Several packs merge by priority: when two packs define the same rule id, the
higher priority wins and the override is reported (``PackSet.overrides``, and
logged).  The same id twice in one pack, or in two packs of equal priority,
is an error.  See docs/rule-packs.md for the format.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import attrs

from .rules import (_STRLIST, DEFAULTS_SPEC, Rule, RuleError, _blocks, _headers, _Locator, check_table, load_rule_file,
                    read_toml)

log = logging.getLogger("kestrel")

MANIFEST = "pack.toml"
PACK_SPEC: dict[str, tuple[Any, Any]] = {
    "name": (str, lambda v: None if v.strip() else "'name' must not be empty"),
    "version": (str, None),
    "priority": (int, None),
    "description": (str, None),
    "list_files": (_STRLIST, None),
}


@attrs.define(frozen=True)
class PackInfo:
    name: str
    version: str
    priority: int
    path: str
    hash: str
    """sha256 over the pack's files (relative path and bytes, sorted by path)."""
    description: str = ""


@attrs.define(frozen=True)
class Override:
    """A rule id defined by two packs: ``winner`` (higher priority) replaced ``loser``."""

    rule_id: str
    winner: str
    loser: str
    winner_priority: int
    loser_priority: int
    winner_file: str | None = None
    loser_file: str | None = None

    def __str__(self) -> str:
        return (f"rule {self.rule_id}: pack '{self.winner}' (priority {self.winner_priority}) overrides pack "
                f"'{self.loser}' (priority {self.loser_priority})")


@attrs.define(eq=False)
class PackSet:
    rules: list[Rule]
    """Merged rules: packs in the order given, rules in file order within a pack."""
    errors: list[RuleError]
    overrides: list[Override]
    packs: list[PackInfo]
    hash: str
    """sha256 over the merged rules' canonical form (stable across processes)."""
    files: list[str] = attrs.Factory(list)
    """Every file read (manifests and rule files)."""
    warnings: list[RuleError] = attrs.Factory(list)
    """Problems that do not stop a rule (an expired exception entry, ignored)."""
    lists: dict[str, list[Any]] = attrs.Factory(dict)
    """Shared exception lists: name -> entries (of every pack defining it, in pack order)."""

    @property
    def ok(self) -> bool:
        return not self.errors


def rules_hash(rules: list[Rule]) -> str:
    """sha256 of the canonical JSON of ``rules``, in order (no sets, sorted keys:
    independent of PYTHONHASHSEED)."""
    h = hashlib.sha256()
    for r in rules:
        h.update(json.dumps(r.canonical(), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def _files_hash(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix() if root.is_dir() else p.name):
        rel = f.relative_to(root).as_posix() if root.is_dir() else f.name
        h.update(rel.encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError:
            pass
        h.update(b"\0")
    return h.hexdigest()


def _hidden(rel: Path) -> bool:
    """Editor temp files and VCS directories (``.x.toml.swp``, ``.git/``) are not rules."""
    return any(part.startswith(".") for part in rel.parts)


def pack_rule_files(root: Path) -> list[Path]:
    """The rule files of a pack directory (recursive when it has a manifest)."""
    if (root / MANIFEST).is_file():
        found = [p for p in root.rglob("*.toml") if p.is_file() and p.relative_to(root).as_posix() != MANIFEST
                 and not _hidden(p.relative_to(root))]
        return sorted(found, key=lambda p: p.relative_to(root).as_posix())
    return sorted(p for p in root.iterdir() if p.suffix == ".toml" and p.is_file() and not p.name.startswith("."))


def parse_lists(doc: dict[str, Any], lines: list[str], name: str, errors: list[RuleError]) -> dict[str, list[Any]]:
    """The ``[lists.NAME]`` tables of a manifest or lists file: name -> exception entries."""
    from .exceptionlists import LIST_KEYS, _hint, parse_entries

    raw = doc.get("lists", {})
    where = {table: i for i, table in _headers(lines)}
    if not isinstance(raw, dict):
        errors.append(RuleError("'lists' must be tables: write [lists.NAME]", name, 1, 1))
        return {}
    out: dict[str, list[Any]] = {}
    for list_name, table in raw.items():
        line = where.get(f"lists.{list_name}", where.get(f"lists.{list_name}.entry", 0)) + 1
        src = lines[line - 1] if line <= len(lines) else None
        if not isinstance(table, dict):
            errors.append(RuleError(f"list '{list_name}' must be a table: write [lists.{list_name}]", name, line, 1,
                                    None, src))
            continue
        for key in table:
            if key not in LIST_KEYS:
                errors.append(RuleError(f"unknown key '{key}' in [lists.{list_name}] ({_hint(key, LIST_KEYS)})",
                                        name, line, 1, None, src))
        head = f"lists.{list_name}.entry"
        out[list_name] = parse_entries(
            table.get("entry", []), lines, _blocks(lines, head), name, head,
            lambda msg, ln, col, src: errors.append(RuleError(msg, name, ln, col, None, src)), list_name=list_name)
    return out


def _read_lists_file(path: Path, errors: list[RuleError]) -> dict[str, list[Any]]:
    doc, lines, err = read_toml(path)
    if err is not None:
        errors.append(err)
        return {}
    assert doc is not None
    for key in doc:
        if key != "lists":
            errors.append(RuleError(f"unknown table '{key}' in a lists file (it holds [lists.NAME] tables only)",
                                    str(path), 1, 1))
    return parse_lists(doc, lines, str(path), errors)


def _read_manifest(path: Path, errors: list[RuleError],
                   lists: dict[str, list[Any]] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pack table, defaults) of a ``pack.toml``; its exception lists go into
    ``lists``; problems go to ``errors``."""
    name = str(path)
    doc, lines, err = read_toml(path)
    if err is not None:
        errors.append(err)
        return {}, {}
    assert doc is not None
    if lists is not None and "lists" in doc:
        lists.update(parse_lists(doc, lines, name, errors))
    heads = _headers(lines)
    where = {table: i for i, table in heads}
    for key in doc:
        if key not in ("pack", "defaults", "lists"):
            line = where.get(key, 0) + 1
            errors.append(RuleError(f"unknown table '{key}' in {MANIFEST} (tables: [pack], [defaults], "
                                    "[lists.NAME])", name, line, 1, None, lines[line - 1] if line <= len(lines) else None))
    pack = doc.get("pack")
    pack_line = where.get("pack", -1) + 1 or 1
    if not isinstance(pack, dict):
        errors.append(RuleError(f"{MANIFEST} needs a [pack] table with name, version and priority", name, 1, 1))
        pack = {}
    else:
        start = where.get("pack", -1)
        end = min([i for i, _ in heads if i > start], default=len(lines))
        loc = _Locator(lines, (start, end), pack_line)
        if not check_table(pack, PACK_SPEC, "[pack]", loc, name, None, errors,
                           required=("name", "version", "priority")):
            pack = {k: v for k, v in pack.items() if k in PACK_SPEC and isinstance(v, PACK_SPEC[k][0])}
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        errors.append(RuleError("'defaults' must be a table: write [defaults]", name, where.get("defaults", 0) + 1, 1))
        defaults = {}
    elif defaults:
        start = where.get("defaults", -1)
        end = min([i for i, _ in heads if i > start], default=len(lines))
        loc = _Locator(lines, (start, end), start + 1)
        before = len(errors)
        check_table(defaults, DEFAULTS_SPEC, "[defaults]", loc, name, None, errors)
        if len(errors) > before:
            defaults = {}
    return pack, defaults


def _load_one(path: Path, check_queries: bool,
              lists: dict[str, list[Any]]) -> tuple[PackInfo, list[Rule], list[RuleError], list[Path]]:
    errors: list[RuleError] = []
    if path.is_dir():
        manifest = path / MANIFEST
        in_pack = manifest.is_file()
        meta, defaults = _read_manifest(manifest, errors, lists) if in_pack else ({}, {})
        list_files = [path / f for f in meta.get("list_files", [])]
        for lf in list_files:
            if not lf.is_file():
                errors.append(RuleError(f"list file '{lf.relative_to(path)}' named in [pack] list_files does not "
                                        "exist", str(manifest), 1, 1))
                continue
            for lname, entries in _read_lists_file(lf, errors).items():
                lists.setdefault(lname, []).extend(entries)
        skip = {lf.resolve() for lf in list_files}
        files = [f for f in pack_rule_files(path) if f.resolve() not in skip]
        read = files + ([manifest] if in_pack else []) + [lf for lf in list_files if lf.is_file()]
        name = meta.get("name", path.name)
        info = PackInfo(name=name, version=meta.get("version", ""), priority=meta.get("priority", 0),
                        path=str(path), hash=_files_hash(path, read), description=meta.get("description", ""))
    elif path.is_file():
        files = read = [path]
        in_pack, defaults = False, {}
        info = PackInfo(name=path.stem, version="", priority=0, path=str(path), hash=_files_hash(path, read))
    else:
        return (PackInfo(name=path.name, version="", priority=0, path=str(path), hash=""), [],
                [RuleError(f"no such rule file or directory: {path}", str(path))], [])
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for f in files:
        rs, errs = load_rule_file(f, check_queries=check_queries, defaults=defaults, pack=info.name, in_pack=in_pack)
        errors.extend(errs)
        for r in rs:
            first = seen.get(r.id)
            if first is not None:
                errors.append(RuleError(f"duplicate rule id '{r.id}' (first defined at {first.file}:{first.line})",
                                        r.file, r.line, 1, r.id))
                continue
            seen[r.id] = r
            rules.append(r)
    return info, rules, errors, read


def load_packs(paths: list[str | Path], *, check_queries: bool = True,
               today: datetime.date | None = None) -> PackSet:
    """Load and merge the packs, files or plain directories in ``paths``.

    Returns every good rule and every problem (one bad rule never hides the
    others); a caller that must not run a partial set checks ``.ok``.
    ``today``: the day exception expiry is judged on (default: today, UTC)."""
    errors: list[RuleError] = []
    lists: dict[str, list[Any]] = {}
    packs: list[PackInfo] = []
    files: list[str] = []
    # rule id -> (pack position, rule position, pack, rule)
    winners: dict[str, tuple[int, int, PackInfo, Rule]] = {}
    overrides: list[Override] = []
    for pi, p in enumerate(paths):
        pack_lists: dict[str, list[Any]] = {}
        info, rules, errs, read = _load_one(Path(p), check_queries, pack_lists)
        for lname, entries in pack_lists.items():  # a list named by several packs: all their entries
            lists.setdefault(lname, []).extend(entries)
        errors.extend(errs)
        files.extend(str(f) for f in read)
        if info.hash:
            packs.append(info)
        for ri, rule in enumerate(rules):
            prev = winners.get(rule.id)
            if prev is None:
                winners[rule.id] = (pi, ri, info, rule)
                continue
            _, _, pinfo, prule = prev
            if pinfo.priority == info.priority:
                errors.append(RuleError(
                    f"duplicate rule id '{rule.id}' (first defined at {prule.file}:{prule.line} in pack "
                    f"'{pinfo.name}' of the same priority {info.priority}; raise one pack's priority to override)",
                    rule.file, rule.line, 1, rule.id))
                continue
            win, lose = (info, pinfo) if info.priority > pinfo.priority else (pinfo, info)
            wrule, lrule = (rule, prule) if win is info else (prule, rule)
            ov = Override(rule.id, win.name, lose.name, win.priority, lose.priority, wrule.file, lrule.file)
            overrides.append(ov)
            log.info("%s", ov)
            if win is info:
                winners[rule.id] = (pi, ri, info, rule)
    merged = [r for _, _, _, r in sorted(winners.values(), key=lambda t: (t[0], t[1]))]
    warnings: list[RuleError] = []
    merged = _resolve_exceptions(merged, lists, errors, warnings, today or _today(), check_queries)
    digest = rules_hash(merged)
    if check_queries:
        merged = _inline_budget(merged, errors)
    return PackSet(rules=merged, errors=errors, overrides=overrides, packs=packs, hash=digest, files=files,
                   warnings=warnings, lists=lists)


def _today() -> datetime.date:
    from .exceptionlists import utc_today

    return utc_today()


def _resolve_exceptions(rules: list[Rule], lists: dict[str, list[Any]], errors: list[RuleError],
                        warnings: list[RuleError], today: datetime.date, check_fields: bool) -> list[Rule]:
    """Each rule with its own entries and those of the lists it names; an
    unknown list name or field is an error (the rule is left out), an expired
    entry a warning (the entry is left out)."""
    if not lists and not any(r.exceptions or r.exception_lists for r in rules):
        return rules
    from .exceptionlists import check_fields as check_entry_fields

    schema = None
    warned: set[int] = set()

    def live(entries: list[Any], rid: str | None) -> list[Any]:
        out = []
        for e in entries:
            if e.expired(today):
                if id(e) not in warned:
                    warned.add(id(e))
                    where = f"list '{e.list_name}'" if e.list_name else "rule's"
                    w = RuleError(f"exception ({where}) expired on {e.expires.isoformat()}, ignored (today is "
                                  f"{today.isoformat()}, UTC): {e.reason}", e.file, e.line, e.column, rid)
                    warnings.append(w)
                continue
            out.append(e)
        return out

    for lname, entries in lists.items():
        lists[lname] = live(entries, None)
        if check_fields and lists[lname]:
            from .plugins import rules_schema

            schema = schema or rules_schema()
            check_entry_fields(lists[lname], schema, lambda e, msg, ln, col, src: errors.append(
                RuleError(msg, e.file, ln, col, None, src)))
    out = []
    for rule in rules:
        if not rule.exceptions and not rule.exception_lists:
            out.append(rule)
            continue
        ok = True
        entries = live(list(rule.exceptions), rule.id)
        if check_fields and entries:
            from .plugins import rules_schema

            schema = schema or rules_schema()
            before = len(errors)
            check_entry_fields(entries, schema, lambda e, msg, ln, col, src, rid=rule.id: errors.append(
                RuleError(msg, e.file, ln, col, rid, src)))
            ok = len(errors) == before
        for lname in rule.exception_lists:
            if lname not in lists:
                close = difflib.get_close_matches(lname, list(lists), n=1)
                hint = (f"did you mean '{close[0]}'?" if close else
                        f"defined lists: {', '.join(sorted(lists))}" if lists else "no loaded pack defines a list")
                ln, col, src = rule.exception_lists_pos or (rule.line, 1, None)
                at = src.find(f'"{lname}"') if src else -1  # the name itself, when on the key's line
                col = at + 1 if at >= 0 else col
                errors.append(RuleError(f"unknown exception list '{lname}' ({hint}; define it as [lists.{lname}] "
                                        "in a pack.toml)", rule.file, ln, col, rule.id, src))
                ok = False
                continue
            entries.extend(lists[lname])
        if ok:
            out.append(attrs.evolve(rule, exceptions=entries))
    return out


def _inline_budget(rules: list[Rule], errors: list[RuleError]) -> list[Rule]:
    """Enforce-mode rules must have a bounded cost (:mod:`kestrel_core.eql.cost`):
    one that does not is reported (located) and runs in shadow mode."""
    from .eql.cost import check_rule
    from .plugins import rules_schema
    from .rules import locate_eql_error

    schema = None
    out = []
    for rule in rules:
        if rule.mode == "enforce":
            schema = schema or rules_schema()
            problems = check_rule(rule, schema)
            if problems:
                errors.extend(attrs.evolve(RuleError.from_eql(locate_eql_error(rule, p), rule.id), still_runs=True)
                              for p in problems)
                rule = attrs.evolve(rule, mode="shadow")
        out.append(rule)
    return out


# --------------------------------------------------------------------------- golden tests


@attrs.define
class TestOutcome:
    rule_id: str
    test: str
    passed: bool
    detail: str = ""
    file: str | None = None
    line: int | None = None


def run_rule_test(rule: Rule, test: Any, *, strict: str = "warn", runtimes: Any = None,
                  matcher: str | None = None) -> TestOutcome:
    """Run ``rule`` alone over the test's events (ECS-normalized, in order) and
    compare the alert count and, when given, each alert's matched event indexes.
    ``matcher``: a matcher name; the rule's predicates then go through it."""
    from .eql.engine import DetectionEngine
    from .interfaces import NormalizeError
    from .normalize import EcsJsonNormalizer
    from .plugins import rules_schema
    from .runtime import RunContext

    def outcome(passed: bool, detail: str) -> TestOutcome:
        return TestOutcome(rule.id, test.name, passed, detail, test.file, test.line)

    schema = rules_schema()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(missing_timestamp="error"), RunContext(schema=schema))
    events = []
    for i, doc in enumerate(test.events):
        try:
            events.append(norm.normalize(doc, "test"))
        except NormalizeError as exc:
            return outcome(False, f"event {i}: {exc}")
    position = {id(e): i for i, e in enumerate(events)}
    kwargs = runtimes.engine_kwargs() if runtimes is not None else {}  # kestrel_core.runtimes.Runtimes
    if matcher is not None:
        from .matchers import make_matcher

        kwargs.update(matcher=make_matcher(matcher), direct=False)
    engine = DetectionEngine(schema, [attrs.evolve(rule, enabled=True)], strict=strict, **kwargs)
    if engine.rule_errors:
        return outcome(False, str(engine.rule_errors[0]).split("\n")[0])
    ordered = sorted(events, key=lambda e: (e.ts_mono_ns, e.event_id))
    alerts = engine.process_batch(ordered) + engine.flush()
    if engine.runtime_errors:
        return outcome(False, engine.runtime_errors[0])
    got = [[position[id(e)] for e in a.events] for a in alerts]
    if len(alerts) != test.expect_alerts:
        return outcome(False, f"expected {test.expect_alerts} alert(s), got {len(alerts)} (matched events {got})")
    if test.expect_events is not None and got != test.expect_events:
        return outcome(False, f"expected matched events {test.expect_events}, got {got}")
    return outcome(True, f"{len(alerts)} alert(s)" + (f", events {got}" if got else ""))


def load_rule_pack(paths: list[str | Path], *, check_queries: bool = True,
                   schema: Any = None) -> tuple[list[Rule], list[RuleError]]:
    """The merged rules of the given packs, files or directories, and every
    problem found (one bad rule never hides the others).  See
    :func:`load_packs` for the full result (overrides, hash)."""
    ps = load_packs(paths, check_queries=check_queries)
    return ps.rules, ps.errors
