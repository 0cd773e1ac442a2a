"""`[engine] matcher = "acdfa"` in a profile: a run over the demo capture gives
the default matcher's alerts, and `[engine.matcher_settings]` is validated."""

from __future__ import annotations

from kestrel_core.testing import kestrel_root, run_kestrel

PROFILE = """
[kestrel]
plugins = [{plugins}]
mode = "replay"

[engine]
matcher = "{matcher}"
{settings}

[rules]
paths = ["{root}/rules/linux"]

[[sources]]
type = "klog"
path = "{root}/demo/capture.klog"

[[sinks]]
type = "jsonl"
path = "{out}"
"""


def _run(tmp_path, matcher, settings="", plugins='"matcher-acdfa"'):
    out = tmp_path / f"{matcher}.jsonl"
    prof = tmp_path / f"{matcher}.toml"
    prof.write_text(PROFILE.format(plugins=plugins, matcher=matcher, settings=settings, root=kestrel_root(), out=out))
    proc = run_kestrel("run", "-p", str(prof))
    return proc, out


def test_a_profile_run_with_acdfa_gives_the_default_alerts(tmp_path):
    p1, default = _run(tmp_path, "literal-index", plugins="")
    p2, ours = _run(tmp_path, "acdfa", "cost_profile = true\n[engine.matcher_settings]\nlru_capacity = 8")
    assert p1.returncode == 0, p1.stderr
    assert p2.returncode == 0, p2.stderr
    assert default.read_text().count("\n") >= 50
    assert ours.read_text() == default.read_text()


def test_matcher_settings_are_checked_against_the_matcher(tmp_path):
    proc, _ = _run(tmp_path, "acdfa", "[engine.matcher_settings]\nlru_capacty = 8")
    assert proc.returncode == 2
    assert "unknown key 'lru_capacty'" in proc.stderr and "lru_capacity" in proc.stderr
