"""Hints for plugin and table names: the nearest real name, and never a
package name built from what the user typed (``pip install kestrel-<typo>``
would invite installing whatever squats that name on the package index)."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from kestrel_core import plugins
from kestrel_core.startup import load_profile
from kestrel_core.plugins import KNOWN_PLUGINS, PluginHost, component_hint, distribution_of, missing_plugin
from kestrel_core.profile import ProfileError

ROOT = Path(__file__).resolve().parents[2]
OWN_DISTRIBUTIONS = {"kestrel-edr"} | {f"kestrel-edr-{p}" for p in KNOWN_PLUGINS}


def profile_error(tmp_path, text: str) -> ProfileError:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(text).lstrip())
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value


def installs_named(text: str) -> set[str]:
    """Every package a `pip install ...` in ``text`` would fetch from an index
    (``./plugins/x`` paths are local and not counted)."""
    return {m for m in re.findall(r"pip install ([^\s(),;]+)", text) if not m.startswith(("./", "/"))}


def test_misspelt_plugin_suggests_the_installed_name_not_a_package(tmp_path):
    err = profile_error(tmp_path, """
        [kestrel]
        plugins = ["sink-promethues"]
    """)
    assert (err.line, err.column) == (2, 12)
    assert err.message == "plugin 'sink-promethues' is not installed"
    assert err.hint.startswith("did you mean 'sink-prometheus'?")
    assert "pip install" not in str(err)  # it is installed: nothing to install


@pytest.mark.parametrize("written", ["kestrel-sink-prometheus", "kestrel-edr-sink-prometheus",
                                     "kestrel_sink_prometheus"])
def test_distribution_name_is_mapped_to_the_plugin_name(tmp_path, written):
    err = profile_error(tmp_path, f"""
        [kestrel]
        optional_plugins = []
        plugins = ["{written}"]
    """)
    assert err.line == 3
    assert f"{written!r} is a distribution name; the plugin is called 'sink-prometheus'" in err.hint
    assert "kestrel-kestrel" not in str(err) and "pip install" not in str(err)


def test_known_plugin_that_is_not_installed_names_its_own_distribution():
    message, hint = missing_plugin("sources-ebpf", installed={"core"})
    assert message == "plugin 'sources-ebpf' is not installed"
    assert installs_named(hint) == {"kestrel-edr-sources-ebpf"}
    # a typo of an uninstalled known plugin: the real name, and its real distribution
    _, hint = missing_plugin("sources-ebfp", installed={"core"})
    assert hint.startswith("did you mean 'sources-ebpf'?") and installs_named(hint) == {"kestrel-edr-sources-ebpf"}
    # the distribution name of an uninstalled one
    _, hint = missing_plugin("kestrel-sources-ebpf", installed={"core"})
    assert "write 'sources-ebpf'" in hint and installs_named(hint) == {"kestrel-edr-sources-ebpf"}


@pytest.mark.parametrize("name", ["sink-promethues", "sources-frobnicate", "acme", "kestrel-acme", "kestrel",
                                  "kestrel-edr", "kestrel-kestrel-sink-prometheus", "sourcesebpf", "SINK-PROMETHEUS"])
@pytest.mark.parametrize("installed", [{"core"}, {"core", "sink-prometheus", "sources-ebpf"}])
def test_no_hint_ever_names_a_package_that_is_not_the_projects(name, installed):
    message, hint = missing_plugin(name, installed=installed)
    assert installs_named(message + " " + hint) <= OWN_DISTRIBUTIONS, hint
    assert "kestrel-kestrel" not in hint


def test_case_and_underscores_are_corrected_not_called_a_distribution():
    _, hint = missing_plugin("Sink_Prometheus", installed={"core", "sink-prometheus"})
    assert hint == "plugin names are lower case with hyphens: write 'sink-prometheus'"


def test_third_party_plugin_that_is_not_installed_lists_what_is():
    message, hint = missing_plugin("acme", installed={"core"})
    assert message == "plugin 'acme' is not installed"
    assert hint.startswith("installed plugins: core; Kestrel's plugins not installed: sources-ebpf")
    assert "pip install" not in hint


def test_uninstalled_optional_plugin_is_not_said_to_need_listing(tmp_path, monkeypatch):
    """The plugin is in optional_plugins, not installed: the hint says so,
    not "list it in [kestrel] plugins" (it is listed)."""
    monkeypatch.setitem(KNOWN_PLUGINS, "sink-nowhere", (("sink", "nowhere"),))
    err = profile_error(tmp_path, """
        [kestrel]
        optional_plugins = ["sink-nowhere"]
        [[sinks]]
        type = "nowhere"
    """)
    assert err.line == 4 and "no sink named 'nowhere'" in err.message
    assert "comes with plugin 'sink-nowhere', which is in optional_plugins but did not load: plugin " \
           "'sink-nowhere' is not installed" in err.hint
    assert "[kestrel] plugins" not in err.hint
    assert installs_named(err.hint) == {"kestrel-edr-sink-nowhere"}  # the monkeypatched "own" plugin


def test_uninstalled_third_party_optional_plugin_is_named_as_such(tmp_path):
    err = profile_error(tmp_path, """
        [kestrel]
        optional_plugins = ["acme"]
        [[sinks]]
        type = "acme-text"
    """)
    assert err.hint.startswith("optional plugins that did not load: 'acme': plugin 'acme' is not installed")
    assert "[kestrel] plugins" not in err.hint and not installs_named(err.hint)


def test_component_of_an_unlisted_plugin_names_the_plugin(tmp_path):
    err = profile_error(tmp_path, """
        [[sinks]]
        type = "promethues"
    """)
    assert err.hint == "did you mean 'prometheus'? it comes with plugin 'sink-prometheus': list it in [kestrel] plugins"
    # with nothing close, the generic reason
    assert component_hint("sink", "acme-text", {"core"}, {}) == \
        "a sink from another plugin needs that plugin in [kestrel] plugins"


def test_array_of_tables_typo_is_shown_with_double_brackets(tmp_path):
    err = profile_error(tmp_path, """
        [[sink]]
        type = "console"
    """)
    assert err.hint == "did you mean [[sinks]]?"
    err = profile_error(tmp_path, """
        [sorces]
        x = 1
    """)
    assert err.hint == "did you mean [[sources]]?"
    err = profile_error(tmp_path, """
        [engin]
        matcher = "category"
    """)
    assert err.hint == "did you mean [engine]?"


def test_known_plugins_match_the_plugins_directory_and_their_registrations():
    """KNOWN_PLUGINS is what hints rely on: the same names as plugins/<dir>
    (entry point and distribution), and the components each registers."""
    dirs = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
    assert sorted(KNOWN_PLUGINS) == dirs
    for d in dirs:
        meta = tomllib.loads((ROOT / "plugins" / d / "pyproject.toml").read_text())["project"]
        assert list(meta["entry-points"]["kestrel.plugins"]) == [d]
        assert meta["name"] == distribution_of(d)
        host = PluginHost()
        host.load([d])
        registered = {(role, comp.name) for role, comp in host.registry.components(d)}
        assert registered == set(KNOWN_PLUGINS[d]), d
    assert distribution_of("acme") is None and plugins.install_hint("acme") == ""
