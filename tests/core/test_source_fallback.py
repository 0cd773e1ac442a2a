"""Optional plugins and source fallback chains: a profile that runs on hosts
with different capabilities picks the first source that can run, and says why
it passed over the others."""

from __future__ import annotations

import json
import logging
import threading
import types

import pytest
from click.testing import CliRunner

from kestrel_core import hookimpl
from kestrel_core.cli import load_profile, main
from kestrel_core.interfaces import Probe, Source
from kestrel_core.pipeline import Run
from kestrel_core.plugins import PluginHost
from kestrel_core.profile import ProfileError, build_profile, read_profile


class BlindSource(Source):
    """A source whose capability probe always fails, like eBPF on a kernel without it."""

    PLUGIN_NAME = "blind"

    @classmethod
    def probe(cls) -> Probe:
        return Probe.missing("no such kernel feature here")

    def run(self, emit, stop: threading.Event) -> None:  # pragma: no cover - never chosen
        raise AssertionError("an unavailable source must not run")


def host_with_blind_source() -> PluginHost:
    host = PluginHost()
    host.load([])
    mod = types.ModuleType("blind")
    mod.kestrel_register_sources = hookimpl(lambda register: register(BlindSource))
    host.add_module("blind", mod)
    return host


def write(tmp_path, text: str):
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


def events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"@timestamp": 1_700_000_000_000, "event": {"category": "process"},
                                "process": {"name": "nc"}}) + "\n")
    return path


def test_missing_optional_plugin_falls_back_and_says_why(tmp_path, caplog):
    evs = events_file(tmp_path)
    path = write(tmp_path, f'''
[kestrel]
optional_plugins = ["no-such-plugin"]

[[sources]]
type = "ghost"
fallback = {{ type = "jsonl", path = "{evs}" }}
''')
    profile, host = load_profile(path)
    assert "no-such-plugin" in host.unavailable
    spec = profile.sources[0]
    assert spec.unavailable and "no-such-plugin" in spec.unavailable
    assert [s.type for s in spec.chain()] == ["ghost", "jsonl"]
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        job = Run.build(profile, host)
    assert [s.name for s, _ in job.sources] == ["jsonl"]
    assert "source 'ghost' unavailable" in caplog.text and "using fallback 'jsonl'" in caplog.text
    assert "optional plugin 'no-such-plugin' unavailable" in caplog.text
    job.open()
    job.execute()
    assert job.context.stats.balance()["processed"] == 1


def test_failed_probe_falls_back(tmp_path, caplog):
    evs = events_file(tmp_path)
    path = write(tmp_path, f'''
[[sources]]
type = "blind"
fallback = {{ type = "jsonl", path = "{evs}" }}
''')
    host = host_with_blind_source()
    data, validator = read_profile(path)
    profile = build_profile(data, validator, host.registry)
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        job = Run.build(profile, host)
    assert [s.name for s, _ in job.sources] == ["jsonl"]
    assert "source 'blind' unavailable: no such kernel feature here; using fallback 'jsonl'" in caplog.text


def test_chain_without_an_available_source_is_skipped_with_reasons(tmp_path, caplog):
    path = write(tmp_path, '''
[[sources]]
type = "blind"
''')
    host = host_with_blind_source()
    data, validator = read_profile(path)
    profile = build_profile(data, validator, host.registry)
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        job = Run.build(profile, host)
    assert job.sources == []
    assert "source 'blind' unavailable: no such kernel feature here; skipped" in caplog.text


def test_a_typo_is_still_an_error_when_no_optional_plugin_is_missing(tmp_path):
    path = write(tmp_path, '''
[[sources]]
type = "jsnol"
fallback = "jsonl"
''')
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert exc.value.line == 3 and "did you mean 'jsonl'" in str(exc.value)


def test_fallback_settings_are_validated(tmp_path):
    path = write(tmp_path, '''
[kestrel]
optional_plugins = ["no-such-plugin"]

[[sources]]
type = "ghost"
fallback = { type = "jsonl", pth = "x" }
''')
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    assert "unknown key 'pth'" in str(exc.value) and "did you mean 'path'" in str(exc.value)


def test_profile_check_reports_unavailable_optional_plugins(tmp_path):
    path = write(tmp_path, '''
[kestrel]
optional_plugins = ["no-such-plugin"]

[[sources]]
type = "ghost"
fallback = "jsonl"
''')
    res = CliRunner().invoke(main, ["profile", "check", str(path)])
    assert res.exit_code == 0, res.output
    assert "source jsonl" in res.output and "source ghost" not in res.output
    assert "optional plugin 'no-such-plugin' unavailable: plugin 'no-such-plugin' is not installed" in res.output


class BrokenSource(Source):
    """Probes fine, then fails to start (a BPF program the verifier rejects, say)."""

    PLUGIN_NAME = "broken-start"

    def __init__(self, settings, context):
        raise OSError(1, "Operation not permitted")

    def run(self, emit, stop: threading.Event) -> None:  # pragma: no cover - never built
        raise AssertionError


def test_source_that_fails_to_start_falls_back(tmp_path, caplog):
    evs = events_file(tmp_path)
    path = write(tmp_path, f'''
[[sources]]
type = "broken-start"
fallback = {{ type = "jsonl", path = "{evs}" }}
''')
    host = host_with_blind_source()
    mod = types.ModuleType("broken_start")
    mod.kestrel_register_sources = hookimpl(lambda register: register(BrokenSource))
    host.add_module("broken-start", mod)
    data, validator = read_profile(path)
    profile = build_profile(data, validator, host.registry)
    with caplog.at_level(logging.WARNING, logger="kestrel"):
        job = Run.build(profile, host)
    assert [s.name for s, _ in job.sources] == ["jsonl"]
    assert f"source 'broken-start' unavailable: failed to start: {path}:2:1: source 'broken-start': " \
           "Operation not permitted; using fallback 'jsonl'" in caplog.text
    assert job.passed_over == [("broken-start", f"failed to start: {path}:2:1: source 'broken-start': "
                                                "Operation not permitted")]  # named again in the start line


def test_bundled_default_profile_prefers_ebpf_then_portable_then_the_demo(tmp_path):
    from kestrel_core.startup import default_profile_path

    profile, _host = load_profile(default_profile_path())
    assert [s.type for s in profile.sources[0].chain()] == ["ebpf", "portable", "klog"]
    demo = profile.resolve_path(profile.sources[0].chain()[-1].settings.path)
    assert demo.is_file() and demo.read_bytes()[:8] == b"\x89KLOG\r\n\x1a"
