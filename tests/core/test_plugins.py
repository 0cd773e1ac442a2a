import tomllib
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from kestrel_core import hookimpl
from kestrel_core.cli import main
from kestrel_core.interfaces import Sink
from kestrel_core.plugins import PluginError, PluginHost
from kestrel_core.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parents[2]


def plugin_module(name, **hooks):
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


class NullSink(Sink):
    PLUGIN_NAME = "null"

    def write_alert(self, alert):
        pass


def test_every_plugin_under_plugins_is_listed_with_components_and_probes():
    res = CliRunner().invoke(main, ["plugins", "list"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("core")
    assert "source     jsonl" in res.output and "sink       console" in res.output
    dirs = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())
    assert dirs, "no plugins found under plugins/"
    for d in dirs:
        meta = tomllib.loads((d / "pyproject.toml").read_text())["project"]
        for ep_name in meta["entry-points"]["kestrel.plugins"]:
            block = res.output.split(ep_name, 1)
            assert len(block) == 2, f"{ep_name} ({d.name}) missing from plugins list"
            first = block[1].split("\n")[1]
            assert "available" in first, f"{ep_name}: no component with a probe result: {first!r}"


def test_builtins_register_through_the_same_hooks():
    host = PluginHost()
    host.load([])
    assert host.loaded == ["core"]
    names = {(role, comp.name) for role, comp in host.registry.components("core")}
    assert {("source", "jsonl"), ("normalizer", "ecs-json"), ("runtime", "host"), ("sink", "console"),
            ("sink", "jsonl")} <= names


def test_duplicate_component_names_are_an_error():
    class OtherConsole(NullSink):
        PLUGIN_NAME = "console"

    host = PluginHost()
    host.load([])
    with pytest.raises(PluginError, match="sink 'console' is registered twice: by plugin 'core'"):
        host.add_module("dup", plugin_module("dup", kestrel_register_sinks=lambda register: register(OtherConsole)))


def test_registering_the_wrong_kind_is_an_error():
    host = PluginHost()
    with pytest.raises(PluginError, match="not a Source subclass"):
        host.add_module("bad", plugin_module("bad", kestrel_register_sources=lambda register: register(NullSink)))


def test_hookimpl_without_a_spec_is_rejected():
    host = PluginHost()
    with pytest.raises(PluginError, match="plugin 'typo'.*kestrel_register_sink"):
        host.add_module("typo", plugin_module("typo", kestrel_register_sink=lambda register: None))


def test_impl_may_take_fewer_arguments():
    seen = []
    host = PluginHost()
    host.add_module("obs", plugin_module("obs", kestrel_run_stop=lambda reason: seen.append(reason)))
    host.hook.kestrel_run_stop(context=None, reason="eof")
    assert seen == ["eof"]


def test_missing_plugin_error_names_the_plugin_and_no_guessed_distribution():
    with pytest.raises(PluginError, match=r"^plugin 'sources-dtrace' is not installed$") as info:
        PluginHost().load(["sources-dtrace"])
    assert info.value.plugin == "sources-dtrace" and "kestrel-sources-dtrace" not in info.value.hint


def test_version_command():
    res = CliRunner().invoke(main, ["version"])
    assert res.exit_code == 0 and res.output.startswith(f"kestrel 0.1.0 (schema {SCHEMA_VERSION}")


def _field_plugin(name: str, path: str, ftype: str) -> types.ModuleType:
    from kestrel_core.schema import FieldType

    return plugin_module(name, kestrel_declare_fields=lambda schema: schema.declare(path, FieldType(ftype)))


def test_plugins_declare_their_fields_before_rules_compile(caplog):
    """kestrel_declare_fields: a rule naming a plugin's field compiles under
    strict checking once the plugin declared it, with its type; a plugin
    whose declaration clashes is named (an error for a run, skipped and
    logged for the commands that load every installed plugin)."""
    from kestrel_core.eql.engine import DetectionEngine
    from kestrel_core.plugins import declare_plugin_fields
    from kestrel_core.rules import Rule
    from kestrel_core.schema import FieldType, Schema

    rule = Rule(id="r", name="r", query="process where acme.score > 5")
    assert DetectionEngine(Schema.ecs(), [rule], strict="error").rule_errors  # unknown without the plugin
    host = PluginHost()
    host.load([])
    host.add_module("acme", _field_plugin("acme", "acme.score", "long"))
    schema = declare_plugin_fields(Schema.ecs(), host)
    assert schema.get("acme.score").type is FieldType.LONG
    assert not DetectionEngine(schema, [rule], strict="error").rule_errors
    host.add_module("clash", _field_plugin("clash", "acme.score", "keyword"))
    with pytest.raises(PluginError, match="plugin 'clash' could not declare its fields"):
        declare_plugin_fields(Schema.ecs(), host)
    schema = declare_plugin_fields(Schema.ecs(), host, strict=False)
    assert schema.get("acme.score").type is FieldType.LONG
    assert "plugin 'clash' could not declare its fields" in caplog.text
