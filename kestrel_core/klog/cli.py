"""``kestrel record``, ``kestrel export`` and ``kestrel replay``."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import BinaryIO, Iterator

import click

from ..cliutil import (EXIT_BAD_DATA, EXIT_FAILED, EXIT_USAGE, FileProgress, describe_os_error, exit_for_os_error,
                       fail, input_paths, strictness_option)
from ..jsonlines import MAX_LINE_BYTES
from ..normalize import EcsJsonNormalizer
from ..timestamps import TIMESTAMP_FORMATS
from ..matchers import matcher_option
from ..runtimes import runtime_option

log = logging.getLogger("kestrel")


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="kestrel: %(levelname)s: %(message)s", stream=sys.stderr,
                        force=True)


@contextmanager
def _exit_on_log_errors() -> Iterator[None]:
    """A log that cannot be read (exit 3) or a file that cannot be opened or
    written (2 or 4, see :func:`exit_for_os_error`): one line, no traceback."""
    from .format import KlogError

    try:
        yield
    except KlogError as exc:
        fail(str(exc), EXIT_BAD_DATA)
    except OSError as exc:
        fail(describe_os_error(exc), exit_for_os_error(exc))


@contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    if path in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
    else:
        with open(path, "wb") as fh:
            yield fh


@click.command("record")
@click.option("--profile", "-p", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="Record this profile's sources (its rules, actions and sinks are not used).")
@click.option("--input", "-i", "input_path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Convert this JSONL file ('-' for stdin) instead.")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False), required=True, help="Log to write.")
@click.option("--compression", type=click.Choice(["zstd", "zlib", "lz4", "none"]), default="zstd", show_default=True)
@click.option("--fsync", type=click.Choice(["never", "close", "frame"]), default="close", show_default=True,
              help="When the log is forced to disk (every frame reaches the OS as it is written).")
@click.option("--event-category-field", default="event.category", show_default=True,
              help="With --input: field holding the event category.")
@click.option("--timestamp-field", default="@timestamp", show_default=True, help="With --input: event time field.")
@click.option("--timestamp-format", type=click.Choice(TIMESTAMP_FORMATS), default="auto", show_default=True,
              help="With --input: how to read the timestamp.")
@click.option("--default-category", default="", help="With --input: category of events without one (default: such "
              "lines are rejected, as `kestrel run` does).")
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=MAX_LINE_BYTES, show_default=True,
              help="With --input: longest line; a longer one is rejected and counted.")
def record_command(profile_path: str | None, input_path: str | None, output: str, compression: str, fsync: str,
                   event_category_field: str, timestamp_field: str, timestamp_format: str,
                   default_category: str, max_line_bytes: int) -> None:
    """Record events into a .klog: a profile's sources until they end or
    SIGINT/SIGTERM, or a JSONL file (`kestrel export` gives it back line for line)."""
    from .record import convert_jsonl, record_profile

    if (profile_path is None) == (input_path is None):
        raise click.UsageError("give exactly one of --profile and --input")
    _logging()
    if input_path is not None:
        settings = EcsJsonNormalizer.Settings(category_field=event_category_field, timestamp_field=timestamp_field,
                                              timestamp_format=timestamp_format, default_category=default_category)
        name = "<stdin>" if input_path == "-" else input_path
        try:
            fh = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")
        except OSError as exc:
            fail(f"{input_path}: {exc.strerror}", exit_for_os_error(exc))
        try:
            with FileProgress(_file_size(fh), f"recording {name}", counter="events") as bar:
                result = convert_jsonl(fh, output, name=name, normalizer_settings=settings, compression=compression,
                                       fsync=fsync, max_line_bytes=max_line_bytes,
                                       progress=None if bar is None else bar.update)
        except OSError as exc:
            fail(describe_os_error(exc), exit_for_os_error(exc))
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()
        log.info("recorded %d events from %s to %s%s", result.events, name, output,
                 f" ({result.rejected} lines rejected)" if result.rejected else "")
        if result.rejected:
            sys.exit(EXIT_BAD_DATA)
        return
    from ..startup import load_profile
    from ..pipeline import leave_past_blocked_sources
    from ..plugins import PluginError
    from ..profile import ProfileError

    from ..cliutil import StartError

    try:
        profile, host = load_profile(profile_path)
    except ProfileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    logging.getLogger().setLevel(getattr(logging, profile.kestrel.log_level.upper()))
    try:
        reason, stats = record_profile(profile, host, output, compression=compression, fsync=fsync)
    except StartError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        fail(describe_os_error(exc), exit_for_os_error(exc))
    except (PluginError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    b = stats.balance()
    log.info("recorded %d events to %s (%s; read %d, dropped %d, lost %d)", b["processed"], output, reason, b["read"],
             b["dropped"], sum(stats.events_lost.values()))
    leave_past_blocked_sources()


def _file_size(fh: BinaryIO) -> int | None:
    """Bytes in a regular file (a bar's total); None for a pipe."""
    import os
    import stat

    try:
        st = os.fstat(fh.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _logs_size(paths: list[str]) -> int | None:
    import os

    try:
        return sum(os.path.getsize(p) for p in paths)
    except OSError:
        return None  # the reader reports it


_LOG_PATH = click.Path(dir_okay=False)
"""A log to read; a missing one is reported by the reader (one line, exit 2)."""


@click.command("export")
@click.option("--input", "-i", "input_option", metavar="LOG", type=_LOG_PATH, default=None, help="Log to read.")
@click.argument("log_arg", metavar="[LOG]", required=False, type=_LOG_PATH)
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="JSONL file to write ('-': stdout).")
def export_command(input_option: str | None, log_arg: str | None, output: str) -> None:
    """Write the events of a .klog (--input, or LOG as an argument) as JSON
    lines, in log order: each event as the document it was recorded from.
    Damage is reported on stderr (exit 3) and everything readable is still
    written."""
    from .record import export_log

    (log_path,) = input_paths(input_option, log_arg, what="log", many=False)
    _logging()
    with _exit_on_log_errors(), _output(output) as out, \
            FileProgress(_logs_size([log_path]), f"exporting {log_path}", counter="events") as bar:
        reader = export_log(log_path, out, progress=None if bar is None else bar.update)
    damaged = [w for w in reader.warnings if w.kind != "no_end"]
    log.info("exported %d events from %s%s", reader.events_read, log_path,
             f" ({len(damaged)} problems, see above)" if damaged else "")
    if damaged:
        sys.exit(EXIT_BAD_DATA)


@click.command("replay")
@click.option("--input", "-i", "input_option", metavar="LOG", multiple=True, type=_LOG_PATH,
              help="Log to replay (repeatable: the logs' events are merged).")
@click.argument("log_args", metavar="[LOG]...", nargs=-1, type=_LOG_PATH)
@click.option("--rules", "-r", "rules", multiple=True, required=True, type=click.Path(exists=True),
              help="Rule pack, rule file or directory (repeatable; packs merge by priority).")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, help="Alerts JSONL ('-': stdout).")
@strictness_option("Rule semantic checks (as [rules] strictness).")
@runtime_option("Predicate runtime for rules that name none (host, lua, wasm, ...), in its deterministic mode; "
                "default: host.")
@matcher_option()
@click.option("--memory-budget", "memory_budget", type=click.FloatRange(min=0, min_open=True), default=64,
              show_default=True, metavar="MB",
              help="Memory for ordering the events when a log is out of time order: past it, sorted runs spill "
                   "to the temporary directory.")
@click.option("--profile", "-p", "profile_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Also run this profile's [[detectors]] after the rules (their files are relative to it), and its "
                   "[incidents] settings.")
@click.option("--incidents", "incidents", is_flag=True, default=False,
              help="Correlate the alerts into incidents (docs/incidents.md) and write their records between the "
                   "alerts (also when the profile's [incidents] enable says so).")
def replay_command(input_option: tuple[str, ...], log_args: tuple[str, ...], rules: tuple[str, ...], output: str,
                   strictness: str, runtime: str | None, matcher: str | None, memory_budget: float,
                   profile_path: str | None, incidents: bool) -> None:
    """Replay recorded logs (--input, or LOG arguments) against rule packs,
    deterministically: events in (ts_mono_ns, event_id) order on the logs'
    own clock, blocking actions reported as "would block", alerts as JSON
    lines between a header and a footer (rule pack hash, engine build id,
    schema version, log sha256, counts), and a table of alerts per rule on
    stderr.  Damage in a log is reported and the rest replays (exit 3)."""
    from ..replay import RulesError, alerts_table, replay

    logs = input_paths(input_option, log_args, what="log", many=True)
    _logging()
    profile = host = None
    if profile_path is not None:
        from ..startup import load_profile
        from ..profile import ProfileError

        try:
            profile, host = load_profile(profile_path)
        except ProfileError as exc:
            fail(str(exc), EXIT_USAGE)
    from ..cliutil import StartError

    try:
        what = logs[0] if len(logs) == 1 else f"{len(logs)} logs"
        with _exit_on_log_errors(), _output(output) as out, \
                FileProgress(_logs_size(list(logs)), f"replaying {what}", counter="alerts") as bar:
            result = replay(logs, rules, out, strict=strictness, runtime=runtime, matcher=matcher,
                            profile=profile, host=host, memory_budget_mb=memory_budget, incidents=incidents,
                            progress=None if bar is None else bar.update)
    except StartError as exc:
        fail(str(exc), exc.exit_code)
    except RulesError as exc:
        for err in exc.errors:
            click.echo(str(err), err=True)
        fail(f"{len(exc.errors)} rule error(s); nothing replayed", EXIT_USAGE)
    st = result.stats
    log.info("replay order: %s path (%d pass(es), %d run(s) spilled%s)", st["path"], st["passes"],
             st["runs_spilled"], ", event ids renumbered" if st["renumbered"] else "")
    c = result.footer["counts"]
    log.info("replayed %d events: %d alerts (%d incomplete due to loss, %d would block)", c["events"], c["alerts"],
             c["incomplete_due_to_loss"], c["would_block"])
    if c.get("suppressed"):  # as kestrel run's stop summary says them
        log.info("alerts suppressed as repeats within their window: %d (%d summary record(s))", c["suppressed"],
                 c.get("suppression_summaries", 0))
    if "incidents" in result.footer:
        from collections import Counter

        from ..incidents import incidents_summary

        log.info("%s", incidents_summary(Counter(result.footer["incidents"])))
    table = alerts_table(result.alerts)
    if table:
        click.echo(table, err=True)
    disabled = result.footer["rules_disabled"]
    for message in disabled:
        log.error("%s", message)
    if disabled:  # a rule stopped mid-replay: its later alerts are missing, the output is not the whole answer
        log.error("%d rule(s) stopped while replaying: the alerts above may be incomplete", len(disabled))
        sys.exit(EXIT_FAILED)
    if [w for w in result.warnings if w.kind != "no_end"]:
        sys.exit(EXIT_BAD_DATA)
