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

import itertools
import sys
from typing import Any, BinaryIO

import attrs
import click
import orjson

from ..cliutil import EXIT_BAD_DATA, EXIT_FAILED, EXIT_USAGE, FileProgress, exit_for_os_error, fail, strictness_option
from ..event import Event
from ..ordering import DEFAULT_BUDGET
from ..jsonlines import MAX_LINE_BYTES, LineError, parse_object, read_lines, too_long
from ..normalize import flatten
from ..timestamps import TIMESTAMP_FORMATS, event_timestamp, parse_timestamp
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


def _stream_eval(query: str, stream: BinaryIO, name: str, schema: Schema, bad: BadLines, *, strict: str,
                 category_field: str, timestamp_field: str, timestamp_format: str, tiebreaker_field: str | None,
                 max_line_bytes: int, budget: int, prefilter: bool, runtime: str | None, matcher: Any) -> tuple[Any, dict]:
    """Evaluate ``query`` over a JSONL stream in bounded memory, writing each
    match to stdout in order (:mod:`.evalstream`); returns (the engine, stats)."""
    import os
    import stat

    from ..leanjson import EventBuilder, LineFilter
    from ..runtimes import resolve
    from .engine import DetectionEngine
    from .evalstream import EvalInput, stream_matches

    rule = Rule(id="eval", name="eval", query=query, file="<query>")
    runtimes = resolve(runtime or "host", [rule]).engine_kwargs()  # ValueError: runtime unavailable

    def new_engine() -> Any:
        return DetectionEngine(schema, [rule], strict=strict, category_field=category_field, **runtimes,
                               matcher=matcher, direct=False if matcher is not None else None)

    engines = [new_engine()]
    if engines[0].rule_errors:
        raise engines[0].rule_errors[0]
    cr = engines[0].rules[0]
    steps = cr.query.steps
    accept = LineFilter.for_predicates([(u.query, u.root) for u in engines[0].units]) if prefilter else None
    build_event = EventBuilder(schema, cr.query.fields, parse=parse_object, category_field=category_field,
                               timestamp_field=timestamp_field, timestamp_format=timestamp_format,
                               tiebreaker_field=tiebreaker_field, no_category=NO_CATEGORY)

    def build(lineno: int, line: bytes) -> Any:
        return build_event(line)

    def on_bad(lineno: int, line: Any, exc: Exception) -> None:
        if line.__class__ is int:
            bad.add(too_long(line, max_line_bytes).located(name, lineno))
        elif isinstance(exc, LineError):
            bad.add(exc.located(name, lineno))
        else:
            bad.add(f"{name}:{lineno}: {exc}")

    def reset_bad() -> None:
        bad.count, bad.first[:] = 0, []

    try:
        st = os.fstat(stream.fileno())
        restartable, size = stat.S_ISREG(st.st_mode), st.st_size
    except (OSError, ValueError, AttributeError):
        restartable, size = False, None
    found = [0]

    def open_lines() -> Any:
        if restartable:
            stream.seek(0)
        lines = read_lines(stream, max_line_bytes)
        return lines if bar is None else _with_progress(lines, bar, found)

    def run(events: Any) -> Any:
        engine = engines[0] if engines[0] is not None else new_engine()
        engines[0] = None  # a restart (the sort path) starts from a fresh engine
        engines.append(engine)
        it = iter(events)
        while True:
            batch = list(itertools.islice(it, 1024))
            if not batch:
                break
            for a in engine.process_batch(batch):
                found[0] += 1
                yield _match_line(a, steps)
        for a in engine.flush():
            found[0] += 1
            yield _match_line(a, steps)

    inp = EvalInput(open_lines, build, on_bad, accept=accept, restartable=restartable, reset_bad=reset_bad,
                    budget=budget)
    out = sys.stdout.buffer
    n = 0
    with FileProgress(size, f"reading {name}") as bar:
        for line in stream_matches(inp, run):
            out.write(line)
            out.write(b"\n")
            n += 1
    out.flush()
    stats = dict(inp.stats, matches=n)
    return engines[-1], stats


def _with_progress(lines: Any, bar: FileProgress, found: list[int]) -> Any:
    """``lines`` passed through, the bar told the bytes read every 4,096 lines."""
    done = 0
    for i, (lineno, line) in enumerate(lines, 1):
        done += (line if line.__class__ is int else len(line)) + 1
        if not i & 4095:
            bar.update(done, found[0])
        yield lineno, line
    bar.update(done, found[0], description="ordering and evaluating")


def _match_line(alert: Any, steps: Any) -> tuple[tuple, bytes]:
    """(order key, output line) of one match: its events' original objects in
    step order (None for a missing-event step); ordered by the last event, as
    ES orders completed sequences (Sequence.compareTo, the last match's ordinal)."""
    it = iter(alert.events)
    evs = [None if s.missing else next(it) for s in steps]
    last = alert.events[-1]
    return (last.ts_mono_ns, last.event_id), orjson.dumps({"events": [None if e is None else orjson.loads(e.raw)
                                                                      for e in evs]})


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
@click.option("--memory-budget", type=click.IntRange(min=1), default=DEFAULT_BUDGET >> 20, show_default=True,
              metavar="MB", help="Events held for ordering before sorted runs spill to a temporary file.")
@click.option("--no-prefilter", is_flag=True,
              help="Parse every line (by default a line holding none of the query's literals is skipped unparsed).")
@click.option("--stats", "show_stats", is_flag=True,
              help="Say on stderr how the input was read: events, lines the prefilter skipped, ordering path.")
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
    memory_budget: int,
    no_prefilter: bool,
    show_stats: bool,
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
    try:
        stream = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")
    except OSError as exc:
        fail(f"cannot read {input_path}: {exc.strerror or exc}", exit_for_os_error(exc))
    try:
        with stream:
            engine, stats = _stream_eval(
                query, stream, "<stdin>" if input_path == "-" else input_path, schema, bad,
                strict="off" if strict == "warn" else strict, category_field=event_category_field,
                timestamp_field=timestamp_field, timestamp_format=timestamp_format, tiebreaker_field=tiebreaker_field,
                max_line_bytes=max_line_bytes, budget=memory_budget << 20, prefilter=not no_prefilter,
                runtime=runtime, matcher=chosen)
    except OSError as exc:
        fail(f"cannot read {input_path}: {exc.strerror or exc}", exit_for_os_error(exc))
    except EqlError as err:
        click.echo(str(err), err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # RuleError from the engine
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    matches = stats["matches"]
    if show_stats:
        path = ("in input order (reorder window)" if stats["path"] == "window"
                else f"sorted (external sort, {stats['runs_spilled']} run(s) spilled)")
        click.echo(f"kestrel: eval: {stats['events']} event(s) evaluated, {stats['skipped_by_prefilter']} line(s) "
                   f"skipped unparsed by the literal prefilter, {matches} match(es); ordering: {path}", err=True)
    code = 0
    if bad.count:
        # Like run and record: the good lines were evaluated; say what was skipped.
        for message in bad.first:
            click.echo(f"kestrel: error: {message}", err=True)
        more = f" (the first {len(bad.first)} above)" if bad.count > len(bad.first) else ""
        click.echo(f"kestrel: error: {bad.count} input line(s) skipped, not events{more}; {stats['events']} event(s) "
                   "evaluated", err=True)
        code = EXIT_BAD_DATA
    if engine.runtime_errors:
        # The engine disabled the query's rule mid-run: "0 matches" would be a lie.
        for message in engine.runtime_errors:
            click.echo(f"kestrel: error: {message}", err=True)
        click.echo(f"kestrel: error: the query stopped while running: the {matches} match(es) above may be "
                   "incomplete", err=True)
        code = EXIT_FAILED
    if code:
        sys.exit(code)


def main() -> None:  # python -m kestrel_core.eql.cli
    eval_command(prog_name="kestrel eval")


if __name__ == "__main__":
    main()
