"""Profile validation: every error is located (file:line:column) and nothing starts."""

from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from kestrel_core.cli import default_profile_path, load_profile, main
from kestrel_core.profile import KeyLocator, ProfileError


def write(tmp_path, text, name="p.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def error_of(path) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value


def test_uninstalled_plugin_names_line_and_what_is_installed(tmp_path):
    p = write(tmp_path, """
        [kestrel]
        mode = "detect"
        plugins = [
            "sources-frobnicate",
        ]
    """)
    err = error_of(p)
    assert (err.line, err.column) == (4, 5)
    assert err.message == "plugin 'sources-frobnicate' is not installed"
    assert err.hint.startswith("installed plugins: ") and "core" in err.hint
    assert "pip install" not in str(err)  # never a package name built from what was typed (tests/core/test_hints.py)
    assert str(err).startswith(f"{p}:4:5: error:")


def test_misspelt_key_gets_did_you_mean(tmp_path):
    p = write(tmp_path, """
        [kestrel]
        mode = "detect"

        [bus]
        capacty = 10
    """)
    err = error_of(p)
    assert (err.line, err.column) == (5, 1)
    assert "unknown key 'capacty' in [bus]" in err.message
    assert err.hint == "did you mean 'capacity'?"


def test_wrong_type_points_at_the_value(tmp_path):
    p = write(tmp_path, """
        [bus]
        batch_size = "many"
    """)
    err = error_of(p)
    assert (err.line, err.column) == (2, 14)
    assert "'batch_size' must be an integer, not str 'many'" in err.message


def test_bad_enum_value(tmp_path):
    p = write(tmp_path, """
        [kestrel]
        mode = "observe"
    """)
    err = error_of(p)
    assert err.line == 2 and "mode must be one of 'detect', 'enforce', 'replay'" in err.message


def test_unknown_key_in_second_component_table(tmp_path):
    p = write(tmp_path, """
        [[sinks]]
        type = "console"

        [[sinks]]
        type = "jsonl"
        pth = "alerts.jsonl"
    """)
    err = error_of(p)
    assert err.line == 6
    assert "[[sinks]] #2 (sink 'jsonl')" in err.message and err.hint == "did you mean 'path'?"


def test_unknown_component_type_lists_what_exists(tmp_path):
    p = write(tmp_path, """
        [[sinks]]
        type = "consol"
    """)
    err = error_of(p)
    assert err.line == 2
    assert "no sink named 'consol'" in err.message and "did you mean 'console'?" in err.message


def test_unknown_table(tmp_path):
    err = error_of(write(tmp_path, """
        [buss]
        capacity = 1
    """))
    assert err.line == 1 and err.hint == "did you mean [bus]?"


def test_toml_syntax_error_is_located(tmp_path):
    err = error_of(write(tmp_path, """
        [kestrel]
        mode = "detect
    """))
    assert err.line == 2 and "invalid TOML" in err.message


def test_normalizer_settings_are_validated(tmp_path):
    err = error_of(write(tmp_path, """
        [[sources]]
        type = "jsonl"
        normalizer = { category_feld = "x" }
    """))
    assert err.line == 3 and "did you mean 'category_field'?" in str(err)


def test_missing_file_is_an_error_not_a_traceback(tmp_path):
    err = error_of(tmp_path / "nope.toml")
    assert "cannot read profile" in err.message


def test_cli_profile_check_exit_codes(tmp_path):
    good = write(tmp_path, """
        [kestrel]
        mode = "replay"
        [[sinks]]
        type = "console"
    """, "good.toml")
    bad = write(tmp_path, """
        [kestrel]
        plugins = ["sink-nowhere"]
    """, "bad.toml")
    runner = CliRunner()
    ok = runner.invoke(main, ["profile", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "ok (mode replay" in ok.output
    res = runner.invoke(main, ["profile", "check", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:2:12: error: plugin 'sink-nowhere' is not installed\n  hint: installed plugins: " in res.output


def test_cli_run_with_bad_profile_starts_nothing(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"event": {"category": "process"}, "process": {"name": "x"}}\n')
    alerts = tmp_path / "alerts.jsonl"
    bad = write(tmp_path, f"""
        [bus]
        backpressure = "spill"
        [[sources]]
        type = "jsonl"
        path = "{events}"
        [[sinks]]
        type = "jsonl"
        path = "{alerts}"
    """)
    res = CliRunner().invoke(main, ["run", "--profile", str(bad)])
    assert res.exit_code == 2
    assert ":2:" in res.output and "backpressure must be one of" in res.output
    assert not alerts.exists(), "a sink was opened although the profile was rejected"


def test_bundled_default_profile_is_valid():
    profile, host = load_profile(default_profile_path())
    assert [s.type for s in profile.sources] == ["ebpf"]
    assert profile.rules.paths


def test_locator_handles_multiline_values():
    loc = KeyLocator('a = """\nx = 1\n"""\n[t]\nb = [\n  1,\n]\nc = 2\n')
    assert loc.key(("a",)) == (1, 1)
    assert ("x",) not in loc.positions
    assert loc.key(("t", "c")) == (8, 1)
