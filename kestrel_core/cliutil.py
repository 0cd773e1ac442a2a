"""What every ``kestrel`` command shares: the exit codes, the error line, and
the options more than one command takes (``--input``, ``--strictness``).

The exit-code table is documented in docs/cli.md; tests/core/test_cli.py runs
each command's error paths and compares them with that page.
"""

from __future__ import annotations

import errno
import sys
from typing import Any, Callable, NoReturn

import click

EXIT_OK = 0
EXIT_FAILED = 1
"""Checks failed: ``rules test`` golden tests (also Python's code for an uncaught exception: a bug)."""
EXIT_USAGE = 2
"""Usage or input error: bad options, a named file that does not exist, a profile, rule or query with
errors.  Nothing was done.  (Click's own code for usage errors.)"""
EXIT_BAD_DATA = 3
"""Bad data in an input: event lines that are not events, a damaged or unreadable .klog.  Commands that
can go on processed every readable record first."""
EXIT_ENVIRONMENT = 4
"""This host does not allow it: permission denied, a kernel feature missing, a port in use, a full disk,
a running enforcer that does not answer, an installed plugin command that fails to import."""

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "checks failed",
    EXIT_USAGE: "usage or input error",
    EXIT_BAD_DATA: "bad data in an input",
    EXIT_ENVIRONMENT: "environment",
    75: "watchdog stop",  # kestrel_core.watchdog.EXIT_WATCHDOG
}
"""Code -> the name docs/cli.md gives it (the docs test compares the two)."""

_PATH_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}


def exit_for_os_error(exc: OSError) -> int:
    """A path that does not exist or is not a file is a usage error (what was
    typed is wrong); anything else (permission, disk full, read-only, address
    in use) is the environment's."""
    return EXIT_USAGE if exc.errno in _PATH_ERRNOS else EXIT_ENVIRONMENT


def describe_os_error(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc)


class StartError(ValueError):
    """A component could not be built or opened; the message names its profile
    entry.  ``exit_code``: the CLI's code for it (docs/cli.md)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def start_error(where: str, exc: Exception) -> StartError:
    """The StartError for a component at ``where`` (its profile entry) that raised ``exc``."""
    if isinstance(exc, OSError):
        return StartError(f"{where}: {describe_os_error(exc)}", exit_for_os_error(exc))
    return StartError(f"{where}: {exc}", EXIT_USAGE)  # a setting the component refused


def fail(message: str, code: int) -> NoReturn:
    """One error line on stderr, no traceback, and the table's exit code."""
    click.echo(f"kestrel: error: {message}", err=True)
    sys.exit(code)


class EnvironmentClickError(click.ClickException):
    """A ClickException that exits with the environment code."""

    exit_code = EXIT_ENVIRONMENT


# --------------------------------------------------------------------------- shared options

STRICTNESS = ("error", "warn", "off")


def strictness_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--strictness error|warn|off`` (the profile's ``[rules] strictness``);
    ``--strict`` is still accepted, hidden, with a deprecation note."""

    def alias(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            click.echo("kestrel: warning: --strict is deprecated; use --strictness", err=True)
            ctx.meta["kestrel.strict_alias"] = value

    def main(ctx: click.Context, _param: click.Parameter, value: str) -> str:
        given = ctx.meta.get("kestrel.strict_alias")
        if given is not None and ctx.get_parameter_source("strictness") is click.core.ParameterSource.DEFAULT:
            return given
        return value

    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--strictness", type=click.Choice(STRICTNESS), default="warn", show_default=True,
                         callback=main, help=help_text)(f)
        # is_eager: the alias is seen before --strictness's callback decides
        return click.option("--strict", type=click.Choice(STRICTNESS), default=None, hidden=True,
                            expose_value=False, is_eager=True, callback=alias)(f)

    return decorator


def input_paths(option: tuple[str, ...] | str | None, positional: tuple[str, ...] | str | None, *,
                what: str, many: bool) -> list[str]:
    """The inputs of a command that takes ``--input/-i`` and, for backwards
    compatibility, the same as positional arguments."""
    def as_list(v: tuple[str, ...] | str | None) -> list[str]:
        return [] if v is None else [v] if isinstance(v, str) else list(v)

    paths = as_list(option) + as_list(positional)
    if not paths:
        raise click.UsageError(f"give the {what} with --input/-i")
    if not many and len(paths) > 1:
        raise click.UsageError(f"give one {what} (--input/-i or an argument, not both)")
    return paths


class FileProgress:
    """A progress bar on stderr for a command reading a file, only when stderr
    is a terminal (scripts and pipes see nothing): bytes read of the total,
    rate and time left, and a counter of the command's own (matches, alerts).

    ``with FileProgress(total, "reading x") as p: p.update(done, matches=n)``;
    ``p`` is None when no bar is shown, so callers test it once.  ``unit``:
    what ``total`` counts, ``"bytes"`` or a noun for items (``"tests"``)."""

    def __init__(self, total: int | None, description: str, counter: str = "matches", unit: str = "bytes") -> None:
        self.total, self.description, self.counter, self.unit = total, description, counter, unit
        self.bar: Any = None

    def __enter__(self) -> "FileProgress | None":
        if not sys.stderr.isatty():
            return None
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        amount = (DownloadColumn(), TransferSpeedColumn()) if self.unit == "bytes" else \
            (MofNCompleteColumn(), TextColumn(self.unit))
        self.bar = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), *amount,
                            TimeRemainingColumn(), TextColumn("{task.fields[count]}"),
                            transient=True, console=_stderr_console())
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=self.total or None, count="")
        return self

    def update(self, done: int, count: int | None = None, description: str | None = None) -> None:
        extra = {} if count is None else {"count": f"{count:,} {self.counter}"}
        if description is not None:
            extra["description"] = description
        self.bar.update(self.task, completed=done, **extra)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def report_problems(errors: list, warnings: list) -> None:
    """Located rule problems on stderr, warnings first (``rules check``, ``profile check``)."""
    for w in warnings:
        click.echo(str(w).replace(": error:", ": warning:", 1), err=True)
    for e in errors:
        click.echo(str(e), err=True)


RULES_STRICTNESS = strictness_option("Semantic checks against the ECS schema: error rejects the rule, warn "
                                     "reports it (as [rules] strictness).")
"""The ``--strictness`` option of the ``rules`` subcommands."""


def table_width() -> int:
    """Width for text tables: the terminal's, kept between 60 and 120 columns."""
    import shutil

    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))

