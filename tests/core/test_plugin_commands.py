"""Plugins add ``kestrel`` subcommands through the ``kestrel.commands`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import click
from click.testing import CliRunner

from kestrel_core import cli


def test_installed_plugin_command_is_listed_and_runs(tmp_path):
    # actions-enforce declares `enforce` in kestrel.commands (plugins/actions-enforce/pyproject.toml)
    res = CliRunner().invoke(cli.main, ["--help"])
    assert res.exit_code == 0 and "enforce" in res.output
    res = CliRunner().invoke(cli.main, ["enforce", "status", "--runtime-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("enforcement ")


def test_broken_plugin_command_names_itself_and_spares_the_others(monkeypatch):
    broken = EntryPoint(name="broken", value="no_such_module_kestrel:cmd", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli._WithPluginCommands, "_entry_points", lambda self: {"broken": broken})
    res = CliRunner().invoke(cli.main, ["broken"])
    assert res.exit_code == 4  # installed software that does not import: the environment's
    assert "command 'broken' from no_such_module_kestrel:cmd failed to load: ModuleNotFoundError" in res.output
    assert CliRunner().invoke(cli.main, ["version"]).exit_code == 0


def test_entry_point_that_is_not_a_command_is_refused(monkeypatch):
    odd = EntryPoint(name="odd", value="os:getcwd", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli._WithPluginCommands, "_entry_points", lambda self: {"odd": odd})
    res = CliRunner().invoke(cli.main, ["odd"])
    assert res.exit_code == 4 and "is not a click command" in res.output
    assert isinstance(cli.main, click.Group)
