"""``kestrel rules explain PACK...`` and ``kestrel rules cost PACK... [--input EVENTS]``
(registered on the ``rules`` group of :mod:`kestrel_core.packs_cli`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .cliutil import EXIT_BAD_DATA, EXIT_USAGE, RULES_STRICTNESS, exit_for_os_error, fail, report_problems
from .matchers import matcher_option


def _engine_factory(matcher: str | None, strict: str, schema: Any) -> Any:
    from .eql.engine import DetectionEngine
    from .matchers import MatcherUnavailable, make_matcher

    try:
        make_matcher(matcher)
    except MatcherUnavailable as exc:
        fail(str(exc), EXIT_USAGE)

    def make(rules: list) -> Any:
        return DetectionEngine(schema, rules, strict="off" if strict == "warn" else strict, matcher=make_matcher(matcher),
                               direct=False)

    return make


def _packs(packs: tuple[str, ...], strict: str) -> Any:
    from .packs import load_packs

    ps = load_packs(list(packs))
    report_problems(ps.errors, [])
    return ps


@click.command("explain")
@click.argument("packs", nargs=-1, required=True, type=click.Path())
@RULES_STRICTNESS
@matcher_option("Matcher whose strategy to explain (default: literal-index; e.g. acdfa).")
def explain_command(packs: tuple[str, ...], strictness: str, matcher: str | None) -> None:
    """Print each rule's matching strategy and why: ac (literal-only, candidates
    are literal hits), ac+pred (literal hits, then the full predicate), scan
    (no literal prefilter), lazy-dfa (a sequence run on a lazy DFA once hot) or nfa
    (a sequence the DFA cannot express), with each step's reason."""
    from .eql.classify import explain
    from .plugins import rules_schema

    ps = _packs(packs, strictness)
    engine = _engine_factory(matcher, strictness, rules_schema())(ps.rules)
    report_problems(engine.rule_errors, [])
    rows = explain(engine)
    width = max((len(r.rule_id) for r in rows), default=4)
    click.echo(f"{'RULE':<{width}}  {'KIND':<8}  {'STRATEGY':<8}  WHY")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.strategy] = counts.get(r.strategy, 0) + 1
        click.echo(f"{r.rule_id:<{width}}  {r.kind:<8}  {r.strategy:<8}  {r.reason}")
        for i, (s, why) in enumerate(r.steps):
            label = "until" if i == len(r.steps) - 1 and r.kind == "sequence" and _has_until(engine, r.rule_id) \
                else f"step {i + 1}"
            click.echo(f"{'':<{width}}  {'':<8}  {'':<8}    {label}: {s}: {why}")
    click.echo(f"{len(rows)} rule(s): " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if engine.rule_errors or ps.errors:
        sys.exit(EXIT_USAGE)


def _has_until(engine: Any, rule_id: str) -> bool:
    cr = next(c for c in engine.rules if c.id == rule_id)
    return cr.query.until is not None


def _read_input(path: str, schema: Any) -> list:
    from .eql.cli import InputError, read_events

    if path.endswith(".klog"):
        from .replay import read_logs

        try:
            return list(read_logs([path], schema).events)
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}", exit_for_os_error(exc))
        except Exception as exc:  # a damaged log
            fail(f"{path}: {exc}", EXIT_BAD_DATA)
    try:
        with open(path, "rb") as fh:
            return read_events(fh, schema, name=path)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", exit_for_os_error(exc))
    except InputError as exc:
        fail(str(exc), EXIT_BAD_DATA)
    return []


@click.command("cost")
@click.argument("packs", nargs=-1, required=True, type=click.Path())
@click.option("--input", "-i", "input_path", default=None, metavar="EVENTS",
              help="Events to run the rules over: ECS JSON lines or a .klog (default: only compile times).")
@click.option("--top", type=int, default=0, help="Show only the N costliest rules (0: all).")
@RULES_STRICTNESS
@matcher_option("Candidate pre-selection to profile with (default: literal-index; e.g. acdfa).")
def cost_command(packs: tuple[str, ...], input_path: str | None, top: int, strictness: str,
                 matcher: str | None) -> None:
    """Per-rule cost table, costliest first: compile time (the rule alone),
    the candidate events its predicates evaluated, their evaluation time, the
    candidate rate (evaluated / events of the step's category), the hit rate
    (true / evaluated) and alerts."""
    from .eql.classify import profile_costs
    from .plugins import rules_schema

    schema = rules_schema()
    ps = _packs(packs, strictness)
    events = _read_input(input_path, schema) if input_path else []
    if input_path and not Path(input_path).exists():
        fail(f"{input_path} does not exist", EXIT_USAGE)
    make = _engine_factory(matcher, strictness, schema)
    costs, engine = profile_costs(make, ps.rules, events)
    report_problems(engine.rule_errors, [])
    shown = costs[:top] if top > 0 else costs
    width = max((len(c.rule_id) for c in shown), default=4)
    click.echo(f"{'RULE':<{width}}  {'COMPILE ms':>10}  {'EVALUATED':>10}  {'EVAL ms':>9}  {'CAND %':>7}  "
               f"{'HIT %':>6}  {'ALERTS':>6}")
    for c in shown:
        click.echo(f"{c.rule_id:<{width}}  {c.compile_ms:>10.2f}  {c.evaluated:>10,}  {c.eval_ms:>9.2f}  "
                   f"{100 * c.candidate_rate:>6.1f}%  {100 * c.hit_rate:>5.1f}%  {c.alerts:>6,}")
    total_eval = sum(c.eval_ms for c in costs)
    click.echo(f"{len(costs)} rule(s), {len(events):,} event(s); evaluation {total_eval:.1f} ms in all, "
               f"compile {sum(c.compile_ms for c in costs):.0f} ms (each rule alone); matcher "
               f"{getattr(engine.matcher, 'PLUGIN_NAME', '?')}")
    if engine.rule_errors or ps.errors:
        sys.exit(EXIT_USAGE)
