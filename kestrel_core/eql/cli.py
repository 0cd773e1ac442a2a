"""``kestrel eval``: run one EQL query over a JSONL file of events.

Prints one JSON object per match, one per line::

    {"events": [<original event objects, in step order>]}

Missing-event steps ``![...]`` appear as ``null`` at their place in
``events``; ``with runs=N`` steps contribute N events.  Sequences are printed
in the order of their last event, whatever their join key (Elasticsearch's
SequenceMatcher keeps completed sequences in a TreeSet ordered by
``Sequence.compareTo``, the ordinal of the last match); single-event matches
in event order.

Exit status (docs/cli.md): 0 (matches or not), 1 when the query stopped
while running (the engine disabled its rule: the error goes to stderr), 2
for a bad query (the located error goes to stderr) or an input file that
does not exist, 3 when input lines were not events (each skipped, counted
and the first ones located on stderr; the other lines are evaluated), 4 for
an input the host does not let us read.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

import attrs
import click
import orjson

from ..cliutil import EXIT_BAD_DATA, EXIT_FAILED, EXIT_USAGE, exit_for_os_error, fail, strictness_option
from ..event import Event
from ..jsonlines import MAX_LINE_BYTES, LineError, parse_object, read_lines, too_long
from ..normalize import TIMESTAMP_FORMATS, event_timestamp, flatten, parse_timestamp
from ..rules import Rule
from ..matchers import matcher_option
from ..runtimes import runtime_option
from ..schema import FieldType, Schema, coerce
from .errors import EqlError

NO_CATEGORY = "\x00none"
"""Category given to events without one: only ``any`` queries match them."""


class InputError(Exception):
    pass


MAX_REPORTED = 10
"""Bad input lines named one by one on stderr; the rest are only counted."""


@attrs.define
class BadLines:
    """Input lines skipped because they are not events: counted, the first few kept located."""

    count: int = 0
    first: list[str] = attrs.Factory(list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.first) < MAX_REPORTED:
            self.first.append(message)


def read_events(
    stream: BinaryIO,
    schema: Schema,
    *,
    name: str,
    category_field: str = "event.category",
    timestamp_field: str = "@timestamp",
    timestamp_format: str = "auto",
    tiebreaker_field: str | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    bad: BadLines | None = None,
) -> list[Event]:
    """Parse, normalize and order JSONL events (timestamp, tiebreaker, input order).

    A line that is not an event raises :class:`InputError` (located), or,
    with ``bad``, is counted there and skipped."""
    rows: list[tuple[int, Any, int, Event]] = []
    fmt = "auto" if timestamp_format in ("auto", None) else timestamp_format
    n = 0
    for lineno, line in read_lines(stream, max_line_bytes):
        try:
            if line.__class__ is int:
                raise InputError(too_long(line, max_line_bytes).located(name, lineno))
            if not line.strip():
                continue
            row = _event_of(line, schema, name, lineno, category_field, timestamp_field, fmt, tiebreaker_field)
        except InputError as exc:
            if bad is None:
                raise
            bad.add(str(exc))
            continue
        rows.append((row[0], row[1], n, row[2]))
        n += 1

    def key(row: tuple[int, Any, int, Event]) -> tuple:
        ts, tb, idx, _ = row
        if tb is None:
            return (ts, 1, 0, "", idx)
        if isinstance(tb, bool) or not isinstance(tb, (int, float)):
            return (ts, 0, 1, str(tb), idx)
        return (ts, 0, 0, tb, idx)

    rows.sort(key=key)
    events = []
    for i, row in enumerate(rows, 1):
        ev = row[3]
        ev.event_id = i
        events.append(ev)
    return events


def _event_of(line: bytes, schema: Schema, name: str, lineno: int, category_field: str, timestamp_field: str,
              fmt: str, tiebreaker_field: str | None) -> tuple[int, Any, Event]:
    try:
        record = parse_object(line)
    except LineError as exc:
        raise InputError(exc.located(name, lineno)) from None
    try:
        flat = flatten(record)
    except ValueError as exc:  # DepthError: too deep for a document (parse_object checks lines first)
        raise InputError(f"{name}:{lineno}: {exc}") from None
    fields: dict[int, Any] = {}
    for path, value in flat.items():
        fid = schema.resolve(path)
        fdef = schema.field(fid)
        if fdef.type is FieldType.DATE and value is not None:
            try:
                value = parse_timestamp(value, fmt if path == timestamp_field else "auto")
            except ValueError as exc:
                raise InputError(f"{name}:{lineno}: field '{path}': {exc}") from None
        elif fdef.type is not FieldType.ANY and value is not None:
            try:
                value = coerce(value, fdef.type)
            except ValueError as exc:
                raise InputError(f"{name}:{lineno}: field '{path}': {exc}") from None
        fields[fid] = value
    ts = flat.get(timestamp_field)
    if ts is None:
        raise InputError(f"{name}:{lineno}: missing timestamp field '{timestamp_field}'")
    try:
        ts_ns = event_timestamp(ts, fmt)
    except ValueError as exc:
        raise InputError(f"{name}:{lineno}: {exc}") from None
    cat = flat.get(category_field)
    if isinstance(cat, list):
        cat = cat[0] if cat else None
    if cat is None or cat == "":
        cat = NO_CATEGORY
    elif not isinstance(cat, str):
        cat = str(cat)
    tb = flat.get(tiebreaker_field) if tiebreaker_field else None
    return ts_ns, tb, Event(category=cat, fields=fields, ts_mono_ns=ts_ns, ts_wall_ns=ts_ns, source_id="eval",
                            raw=record)


def evaluate(query: str, events: list[Event], schema: Schema, *, strict: str = "warn", category_field: str = "event.category",
             runtime: str | None = None, matcher: Any = None):
    """Run ``query`` over ordered ``events``; returns (matches, engine).

    Each match is the list of event records (``None`` for missing steps).
    ``matcher``: a matcher name or instance (``--matcher``); when given, the
    engine uses it even for a single query."""
    from .engine import DetectionEngine

    rule = Rule(id="eval", name="eval", query=query, file="<query>")
    from ..runtimes import resolve

    runtimes = resolve(runtime or "host", [rule]).engine_kwargs()  # ValueError: runtime unavailable
    if isinstance(matcher, str):
        from ..matchers import make_matcher

        matcher = make_matcher(matcher)  # MatcherUnavailable (a ValueError): not installed
    engine = DetectionEngine(schema, [rule], strict=strict, category_field=category_field, **runtimes,
                             matcher=matcher, direct=False if matcher is not None else None)
    if engine.rule_errors:
        raise engine.rule_errors[0]
    alerts = []
    batch = 4096
    for i in range(0, len(events), batch):
        alerts.extend(engine.process_batch(events[i : i + batch]))
    alerts.extend(engine.flush())
    cr = engine.rules[0]
    steps = cr.query.steps
    out = []
    for a in alerts:
        it = iter(a.events)
        evs = [None if s.missing else next(it) for s in steps]
        last = a.events[-1]  # ES: completed sequences in a TreeSet by Sequence.compareTo = the last match's ordinal
        out.append(((last.ts_mono_ns, last.event_id), [None if e is None else e.raw for e in evs]))
    if cr.query.kind == "sequence":
        out.sort(key=lambda t: t[0])
    return [m for _, m in out], engine


@click.command("eval")
@click.argument("query")
@click.option("--input", "-i", "input_path", required=True, metavar="EVENTS.jsonl", help="JSONL events ('-' for stdin).")
@click.option("--event-category-field", default="event.category", show_default=True, help="Field holding the event category.")
@click.option("--timestamp-field", default="@timestamp", show_default=True, help="Field holding the event time.")
@click.option(
    "--timestamp-format",
    type=click.Choice(["auto"] + [f for f in TIMESTAMP_FORMATS if f != "auto"]),
    default="auto",
    show_default=True,
    help="How to read the timestamp (auto: ISO 8601 strings, epoch numbers by magnitude).",
)
@click.option("--tiebreaker-field", default=None, help="Field ordering events with equal timestamps.")
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=MAX_LINE_BYTES, show_default=True,
              help="Longest input line; a longer one is skipped and counted like any bad line.")
@strictness_option("Semantic checks against the ECS schema: fail, warn on stderr, or skip (as [rules] strictness).")
@runtime_option()
@matcher_option()
def eval_command(
    query: str,
    input_path: str,
    event_category_field: str,
    timestamp_field: str,
    timestamp_format: str,
    tiebreaker_field: str | None,
    max_line_bytes: int,
    strictness: str,
    runtime: str | None,
    matcher: str | None,
) -> None:
    """Run an EQL QUERY over a JSONL file and print each match as JSON."""
    from ..plugins import rules_schema
    from .ir import compile_query

    strict = strictness
    schema = rules_schema()
    # Check the query before reading the input: a bad query is exit 2, at once.
    try:
        q = compile_query(query, schema, strict=strict, source_name="<query>")
    except EqlError as err:
        click.echo(str(err), err=True)
        sys.exit(EXIT_USAGE)
    for w in q.warnings:
        click.echo(str(w), err=True)
    chosen = None
    if matcher is not None:
        from ..matchers import MatcherUnavailable, make_matcher

        try:
            chosen = make_matcher(matcher)
        except MatcherUnavailable as exc:
            fail(str(exc), EXIT_USAGE)
    bad = BadLines()
    opts = dict(category_field=event_category_field, timestamp_field=timestamp_field,
                timestamp_format=timestamp_format, tiebreaker_field=tiebreaker_field, max_line_bytes=max_line_bytes,
                bad=bad)
    try:
        if input_path == "-":
            events = read_events(sys.stdin.buffer, schema, name="<stdin>", **opts)
        else:
            with open(input_path, "rb") as stream:
                events = read_events(stream, schema, name=input_path, **opts)
    except OSError as exc:
        fail(f"cannot read {input_path}: {exc.strerror or exc}", exit_for_os_error(exc))
    try:
        matches, engine = evaluate(query, events, schema, strict="off" if strict == "warn" else strict,
                                   category_field=event_category_field, runtime=runtime, matcher=chosen)
    except EqlError as err:
        click.echo(str(err), err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # RuleError from the engine
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    out = sys.stdout.buffer
    for m in matches:
        out.write(orjson.dumps({"events": m}))
        out.write(b"\n")
    out.flush()
    code = 0
    if bad.count:
        # Like run and record: the good lines were evaluated; say what was skipped.
        for message in bad.first:
            click.echo(f"kestrel: error: {message}", err=True)
        more = f" (the first {len(bad.first)} above)" if bad.count > len(bad.first) else ""
        click.echo(f"kestrel: error: {bad.count} input line(s) skipped, not events{more}; {len(events)} event(s) "
                   "evaluated", err=True)
        code = EXIT_BAD_DATA
    if engine.runtime_errors:
        # The engine disabled the query's rule mid-run: "0 matches" would be a lie.
        for message in engine.runtime_errors:
            click.echo(f"kestrel: error: {message}", err=True)
        click.echo(f"kestrel: error: the query stopped while running: the {len(matches)} match(es) above may be "
                   "incomplete", err=True)
        code = EXIT_FAILED
    if code:
        sys.exit(code)


def main() -> None:  # python -m kestrel_core.eql.cli
    eval_command(prog_name="kestrel eval")


if __name__ == "__main__":
    main()
