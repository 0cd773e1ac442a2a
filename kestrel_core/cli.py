"""The ``kestrel`` command (click: subcommands, generated help, typed options)."""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import Any

import click

from . import __version__
from .cliutil import EXIT_USAGE, EnvironmentClickError, describe_os_error, exit_for_os_error, fail, report_problems, table_width
from .plugins import PluginError, installed_plugins
from .profile import ProfileError
from .startup import default_profile_path, load_profile

log = logging.getLogger("kestrel")


def kestrel_version() -> str:
    """The installed core distribution's version (``kestrel-edr``, or
    ``kestrel`` before the rename; only a distribution that ships this core
    counts: the index's unrelated ``kestrel`` must not answer), else the
    package's own."""
    from importlib.metadata import PackageNotFoundError, distribution

    from .plugins import BUILTIN_PLUGIN, CORE_DISTRIBUTIONS, ENTRY_POINT_GROUP

    for name in CORE_DISTRIBUTIONS:
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if any(ep.group == ENTRY_POINT_GROUP and ep.name == BUILTIN_PLUGIN for ep in dist.entry_points):
            return dist.version
    return __version__


def version_line() -> str:
    from .schema import SCHEMA_VERSION

    return f"kestrel {kestrel_version()} (schema {SCHEMA_VERSION}, python {sys.version.split()[0]})"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_line())
        ctx.exit(0)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="kestrel: %(levelname)s: %(message)s",
                        stream=sys.stderr, force=True)


COMMANDS_GROUP = "kestrel.commands"
"""Entry-point group through which plugins add subcommands (``kestrel enforce``)."""


class _WithPluginCommands(click.Group):
    """Built-in commands plus those plugins declare in the ``kestrel.commands``
    entry-point group.  A plugin's module is imported only when its command
    runs (or for ``--help``), so a broken plugin cannot break the others."""

    def _entry_points(self) -> dict[str, Any]:
        from importlib.metadata import entry_points

        return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP) if ep.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            loaded = ep.load()
        except Exception as exc:  # name the plugin and the cause, not a traceback
            dist = getattr(ep, "dist", None)
            raise EnvironmentClickError(f"command {name!r} from {dist.name if dist else ep.value} failed to load: "
                                        f"{type(exc).__name__}: {exc}") from None
        if not isinstance(loaded, click.Command):
            raise EnvironmentClickError(f"entry point {name!r} ({ep.value}) is not a click command")
        return loaded


@click.group(cls=_WithPluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print Kestrel's version and exit.")
def main() -> None:
    """Kestrel: match Linux kernel activity against EQL rules, and alert or block.

    \b
    Start here:
      kestrel plugins list              what is installed and usable on this host
      kestrel profile check FILE        validate a profile without starting anything
      kestrel run --profile FILE        detect (or replay) with a profile
      kestrel eval QUERY -i F           run one EQL query over a JSONL file
      kestrel record -i F -o LOG        record events (JSONL or a profile's sources) in a .klog
      kestrel replay -i LOG -r PACK     replay a .klog deterministically
      kestrel rules check|test PACK     validate rule packs, run their golden tests
      kestrel fields                    what each installed source emits

    Exit codes (every command): 0 ok, 1 checks failed (rules test), 2 usage
    or input error, 3 bad data in an input, 4 the host does not allow it.
    See docs/cli.md.
    """


@main.command()
@click.option("--profile", "-p", "profile_path", type=click.Path(dir_okay=False), default=None,
              help="TOML profile to run (default: the bundled profile: live on this host with the first source that can run, ebpf, else portable, else klog, a replay of the bundled demo capture; the bundled rules/linux pack; alerts on the console).")
def run(profile_path: str | None) -> None:
    """Run detection with a profile until the inputs end or SIGINT/SIGTERM."""
    from .pipeline import Run, leave_past_blocked_sources

    from .cliutil import StartError

    path = profile_path or str(default_profile_path())
    try:
        profile, host = load_profile(path)
    except ProfileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    _setup_logging(profile.kestrel.log_level)
    try:
        job = Run.build(profile, host)
        job.open()
    except StartError as exc:
        fail(str(exc), exc.exit_code)
    except OSError as exc:
        fail(describe_os_error(exc), exit_for_os_error(exc))
    except (PluginError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    job.install_signal_handlers()
    log.info("%s", job.start_message())
    with _progress(job) as job.progress:
        reason = job.execute()
    for line in job.stop_summary(reason):
        log.info("%s", line)
    from .watchdog import EXIT_WATCHDOG

    code = EXIT_WATCHDOG if reason == "watchdog" else 0  # a service manager restarts it
    leave_past_blocked_sources(code)
    if code:
        sys.exit(code)


class _progress:
    """A progress bar on a TTY for sources that know their size (files)."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.bar: Any = None

    def __enter__(self):
        if not sys.stderr.isatty() or not any(s.progress() is not None for s, _ in self.job.sources):
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        self.bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                            TimeRemainingColumn(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task("reading", total=None)
        return self.update

    def update(self, sources: list[Any]) -> None:
        done = total = 0
        for src in sources:
            p = src.progress()
            if p:
                done, total = done + p[0], total + p[1]
        self.bar.update(self.task, completed=done, total=total or None)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()


@main.group()
def plugins() -> None:
    """Inspect installed plugins."""


@plugins.command("list")
def plugins_list() -> None:
    """Installed plugins, their components, and each component's capability probe."""
    width = table_width()
    for rep in installed_plugins():
        click.echo(f"{click.style(rep.name, bold=True)}  ({rep.distribution} {rep.version})")
        if rep.error:
            click.echo(f"    {click.style('broken', fg='red')}: {rep.error}")
            continue
        if not rep.components:
            click.echo("    (no components)")
        for role, name, probe in rep.components:
            word = "available" if probe.available else "unavailable"
            state = click.style(word, fg="green" if probe.available else "red")
            row = f"    {role:<10} {name:<16} "
            if not probe.reason or len(row) + len(word) + 2 + len(probe.reason) <= width:
                click.echo(f"{row}{state}{': ' + probe.reason if probe.reason else ''}")
                continue
            # A long probe report: one part per line under the component, wrapped.
            click.echo(f"{row}{state}:")
            for part in split_reason(probe.reason):
                for line in textwrap.wrap(part, width - 8, initial_indent="      - ", subsequent_indent="        ",
                                          break_on_hyphens=False, break_long_words=False):
                    click.echo(line)


def split_reason(reason: str) -> list[str]:
    """A probe report's parts: split at top-level ``" | "`` and ``"; "`` (not
    inside parentheses, where a part explains itself)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(reason):
        c = reason[i]
        depth += (c == "(") - (c == ")")
        for sep in (" | ", "; "):
            if depth == 0 and reason.startswith(sep, i):
                parts.append(reason[start:i])
                i += len(sep)
                start = i
                break
        else:
            i += 1
    parts.append(reason[start:])
    return [p.strip() for p in parts if p.strip()]


@main.group()
def profile() -> None:
    """Work with TOML profiles."""


@profile.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def profile_check(file: str) -> None:
    """Validate FILE (syntax, keys, types, plugins) without starting anything."""
    try:
        prof, host = load_profile(file)
    except ProfileError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)
    from .packs_cli import check_profile_rules

    ps, errors, warnings = check_profile_rules(prof, host)  # the packs it names, as `kestrel rules check`
    report_problems(errors, warnings)
    if errors:
        click.echo(f"{file}: {len(errors)} error(s) in the rules it names ({len(ps.rules)} rule(s) read from "
                   f"{', '.join(prof.rules.paths)}); kestrel run "
                   + ("refuses to start" if prof.rules.on_error == "refuse" and not all(
                       getattr(e, "still_runs", False) for e in errors) else "would run the others"), err=True)
        sys.exit(EXIT_USAGE)
    comps = ", ".join(" or ".join(f"{s.role} {s.type}" for s in spec.chain() if not s.unavailable)
                      for spec in prof.sources + prof.sinks + prof.actions + prof.detectors)
    click.echo(f"{file}: ok (mode {prof.kestrel.mode}; plugins: {', '.join(host.loaded)}; {comps or 'no components'})")
    for name, why in host.unavailable.items():
        click.echo(f"  optional plugin {name!r} unavailable: {why}")


@main.command()
def version() -> None:
    """Print Kestrel's version and the event schema version (as kestrel --version)."""
    click.echo(version_line())


def _add_eval() -> None:
    from .eql.cli import eval_command

    main.add_command(eval_command, "eval")


def _add_rules() -> None:
    from .packs_cli import rules_group
    from .rules_cost_cli import cost_command, explain_command

    rules_group.add_command(explain_command, "explain")
    rules_group.add_command(cost_command, "cost")
    main.add_command(rules_group, "rules")


_add_eval()


def _add_klog() -> None:
    from .klog.cli import export_command, record_command, replay_command

    for cmd in (record_command, export_command, replay_command):
        main.add_command(cmd)


_add_klog()
_add_rules()


def _add_fields() -> None:
    from .fields_cli import fields_command

    main.add_command(fields_command)


_add_fields()


def _add_top() -> None:
    from .top_cli import top_command

    main.add_command(top_command)


_add_top()
