"""``kestrel rules check|test``: validate rule packs and run their golden tests."""

from __future__ import annotations

import sys

import click

from .cliutil import EXIT_FAILED, EXIT_USAGE, RULES_STRICTNESS, FileProgress, report_problems
from .packs import PackSet, load_packs, run_rule_test
from .matchers import matcher_option
from .runtimes import runtime_option


def _compile(ps: PackSet, strict: str, runtime: str | None = None, host: object = None,
             settings: object = None) -> tuple[list, list]:
    """Semantic errors and warnings of the merged rules against the ECS schema
    and the fields the installed plugins declare, each rule compiled by its
    predicate runtime (a rule naming one that is not available is an error)."""
    from .eql.engine import DetectionEngine
    from .plugins import rules_schema
    from .runtimes import resolve

    try:
        runtimes = resolve(runtime or "host", ps.rules, host=host, settings=settings).engine_kwargs()
    except ValueError as exc:
        from .rules import RuleError

        return [RuleError(str(exc))], []
    engine = DetectionEngine(rules_schema(), ps.rules, strict=strict, **runtimes)
    return engine.rule_errors, engine.warnings


def _load(packs: tuple[str, ...], strict: str, runtime: str | None = None, host: object = None,
          settings: object = None) -> tuple[PackSet, list, list]:
    ps = load_packs(list(packs))
    errors, warnings = _compile(ps, strict, runtime, host, settings)
    return ps, ps.errors + errors, ps.warnings + warnings


def check_profile_rules(profile: object, host: object = None) -> tuple[PackSet, list, list]:
    """What ``kestrel rules check`` says of the packs a profile names, judged with
    the profile's strictness and runtimes: (pack set, errors, warnings)."""
    paths = tuple(str(profile.resolve_path(p)) for p in profile.rules.paths)
    return _load(paths, profile.rules.strictness, profile.engine.runtime, host, profile.engine.runtime_settings)


@click.group("rules")
def rules_group() -> None:
    """Validate rule packs and run their golden tests."""


@rules_group.command("check")
@click.argument("packs", nargs=-1, required=True, type=click.Path())
@RULES_STRICTNESS
@click.option("--profile", "-p", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Check fields against this profile's sources (default: every installed source that "
                   "declares its fields).")
def check(packs: tuple[str, ...], strictness: str, profile_path: str | None) -> None:
    """Load and compile PACKS (merged by priority); print every error, each
    located at file:line:column.  Exit status 2 if there is any.  A rule that
    reads a field no source here emits is a warning (see kestrel fields)."""
    emits, note = _field_sources(profile_path)
    ps, errors, warnings = _load(packs, strictness)
    field_warnings = [] if emits is None else _field_warnings(ps, errors, emits)
    report_problems(errors, warnings + field_warnings)
    for ov in ps.overrides:
        click.echo(f"override: {ov}")
    names = ", ".join(f"{p.name} {p.version}".strip() + f" (priority {p.priority})" for p in ps.packs)
    files = len({e.file for e in errors})
    if errors:
        click.echo(f"{len(errors)} error(s) in {files} file(s); {len(ps.rules)} rule(s) loaded from {names or 'nothing'}",
                   err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"ok: {len(ps.rules)} rule(s) from {names}; {len(warnings)} warning(s); "
               f"{len(ps.overrides)} override(s); hash {ps.hash}")
    click.echo(f"fields: {len(field_warnings)} rule(s) read fields no source here emits; {note}")


def _field_sources(profile_path: str | None) -> tuple[object, str]:
    """(what the rules' fields are compared with, or None: no check; a note saying against what)."""
    from .fields import emitted, installed_sources, profile_sources

    if profile_path is not None:
        from .startup import load_profile
        from .profile import ProfileError

        try:
            prof, host = load_profile(profile_path)
        except ProfileError as exc:
            click.echo(str(exc), err=True)
            sys.exit(EXIT_USAGE)
        emits = emitted(profile_sources(prof, host))
        if emits.any_sources or emits.undeclared or not emits.sources:
            why = ", ".join(emits.any_sources + emits.undeclared) or "no source"
            return None, f"not checked: the profile's {why} may carry any field"
        return emits, f"checked against {profile_path}'s sources: {', '.join(emits.sources)}"
    emits = emitted(installed_sources())
    if not emits.sources:
        return None, "not checked: no installed source declares its fields"
    note = f"checked against the installed sources that declare theirs: {', '.join(emits.sources)}"
    if emits.undeclared:
        note += f" (undeclared, not counted: {', '.join(emits.undeclared)})"
    return emits, note


def _field_warnings(ps: PackSet, errors: list, emits: object) -> list:
    from .fields import unemitted_warnings

    broken = {e.rule_id for e in errors}
    return unemitted_warnings([r for r in ps.rules if r.id not in broken], emits)


@rules_group.command("test")
@click.argument("packs", nargs=-1, required=True, type=click.Path())
@RULES_STRICTNESS
@runtime_option()
@matcher_option()
def test(packs: tuple[str, ...], strictness: str, runtime: str | None, matcher: str | None) -> None:
    """Run each rule's [[test]] blocks (the rule alone over the test's events)
    and print a pass/fail table.  Exit status 1 if a test fails, 2 if the packs
    have errors (the tests of the good rules still run)."""
    ps, errors, warnings = _load(packs, strictness, runtime)
    report_problems(errors, warnings)
    bad_ids = {e.rule_id for e in errors}
    from .runtimes import resolve

    try:
        runtimes = resolve(runtime or "host", ps.rules)
    except ValueError:  # reported by _load
        sys.exit(EXIT_USAGE)
    if matcher is not None:
        from .matchers import MatcherUnavailable, find_matcher

        try:
            find_matcher(matcher)
        except MatcherUnavailable as exc:
            click.echo(f"kestrel: error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    rows = []
    untested = []
    total = sum(len(rule.tests) for rule in ps.rules if rule.id not in bad_ids)
    with FileProgress(total, "running golden tests", counter="failed", unit="tests") as bar:
        for rule in ps.rules:
            if rule.id in bad_ids:
                continue
            if not rule.tests:
                untested.append(rule.id)
            for t in rule.tests:
                rows.append(run_rule_test(rule, t, strict=strictness, runtimes=runtimes, matcher=matcher))
                if bar is not None:
                    bar.update(len(rows), sum(not r.passed for r in rows))
    width = max((len(r.rule_id) for r in rows), default=4)
    twidth = min(max((len(r.test) for r in rows), default=4), 60)
    click.echo(f"{'RESULT':<6}  {'RULE':<{width}}  {'TEST':<{twidth}}  DETAIL")
    for r in rows:
        state = click.style("pass  ", fg="green") if r.passed else click.style("FAIL  ", fg="red")
        name = r.test if len(r.test) <= twidth else r.test[: twidth - 1] + "…"
        detail = r.detail if r.passed else f"{r.file}:{r.line}: {r.detail}"
        click.echo(f"{state}  {r.rule_id:<{width}}  {name:<{twidth}}  {detail}")
    failed = sum(not r.passed for r in rows)
    click.echo(f"{len(rows) - failed} passed, {failed} failed; {len(untested)} rule(s) without tests"
               + (f" ({', '.join(untested)})" if untested else "") + (f"; {len(errors)} error(s)" if errors else ""))
    if errors:
        sys.exit(EXIT_USAGE)
    if failed:
        sys.exit(EXIT_FAILED)


