"""Acceptance: a third-party plugin, built and installed here, works through a
profile with no change to the core.

The plugin (tests/thirdparty/acme, distribution ``kestrel-acme``, entry point
``acme``) supplies a source (``falco-json``) and a sink (``acme-textlog``)
and implements both lifecycle hooks.  It is copied to a temporary directory,
built by pip from its pyproject.toml and installed into a throwaway venv
(tests/thirdparty/helpers.py), never into the environment running the tests
and never under plugins/.  A second distribution, ``kestrel-broken``
(entry point ``broken``), raises ImportError when imported.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent))  # for tests/thirdparty (import-mode=importlib)
from thirdparty.helpers import HERE, build_wheels, copy_tree, make_venv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

PROFILE = """\
[kestrel]
plugins = {plugins}

[rules]
paths = ["rules/acme.toml"]

[[sources]]
type = "falco-json"
path = "falco.jsonl"

[[sinks]]
type = "acme-textlog"
path = "alerts.txt"
prefix = "ACME"
"""

EXPECTED_ALERTS = """\
# open
# start mode=detect
ACME acme.netcat high nc c0ffee000001
ACME acme.shadow critical cat c0ffee000002
# close
# stop reason=eof read=5 processed=4 dropped=1
"""


def write_workspace(dest: Path, plugins: list[str], name: str = "acme.toml") -> Path:
    """Rules, input and a profile naming ``plugins`` in ``dest``; returns the profile."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(HERE / "data", dest, dirs_exist_ok=True)
    profile = dest / name
    profile.write_text(PROFILE.format(plugins="[" + ", ".join(f'"{p}"' for p in plugins) + "]"), encoding="utf-8")
    return profile


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """kestrel-acme and kestrel-broken, built by pip from copies of their source trees."""
    base = tmp_path_factory.mktemp("thirdparty-src")
    built = build_wheels([copy_tree("acme", base), copy_tree("broken", base)], base / "wheels")
    assert set(built) == {"kestrel-acme", "kestrel-broken"}, built
    return built


@pytest.fixture(scope="module")
def env(tmp_path_factory, wheels):
    """A venv with kestrel-acme and kestrel-broken installed."""
    venv = make_venv(tmp_path_factory.mktemp("thirdparty") / "venv")
    venv.install(wheels["kestrel-acme"], wheels["kestrel-broken"])
    return venv


def test_fixture_plugins_are_not_installed_in_the_test_environment():
    for dist in ("kestrel-acme", "kestrel-broken"):
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(dist)
    assert not (ROOT / "plugins" / "acme").exists()


def test_plugin_is_installed_in_the_throwaway_venv_only(env):
    proc = env.run(["-c", "import importlib.metadata as m, kestrel_acme; "
                          "print(m.distribution('kestrel-acme').version); print(kestrel_acme.__file__)"])
    assert proc.returncode == 0, proc.stderr
    version, location = proc.stdout.split()
    assert version == "1.2.3"
    assert Path(location).is_relative_to(env.site_packages)


def test_plugins_list_shows_the_plugin_and_reports_the_broken_one(env, tmp_path):
    proc = env.kestrel("plugins", "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("core  (kestrel-edr ")
    assert ("acme  (kestrel-acme 1.2.3)\n"
            "    source     falco-json       available\n"
            "    source     acme-kernel      unavailable: needs the acme kernel module (/sys/kernel/acme)\n"
            "    sink       acme-textlog     available\n") in out
    assert ("broken  (kestrel-broken 0.0.1)\n"
            "    broken: ImportError: kestrel_broken needs libacme.so.3, which is not installed\n") in out


def test_profile_selects_the_third_party_source_and_sink(env, tmp_path):
    """The acceptance scenario.  kestrel-broken is installed too: not named, it does no harm."""
    profile = write_workspace(tmp_path, ["acme"])

    check = env.kestrel("profile", "check", profile.name, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "acme.toml: ok (mode detect; plugins: core, acme; source falco-json, sink acme-textlog)"

    proc = env.kestrel("run", "--profile", profile.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "alerts.txt").read_text(encoding="utf-8") == EXPECTED_ALERTS
    # the malformed line is reported with its position; the run balance is logged
    assert re.search(r"^kestrel: ERROR: falco\.jsonl:3: not a Falco JSON alert", proc.stderr, re.M), proc.stderr
    assert "stopped (eof): read 5, processed 4, dropped 1, alerts 2" in proc.stderr
    assert "broken" not in proc.stdout + proc.stderr


def test_unavailable_source_is_skipped_with_a_warning(env, tmp_path):
    """A component whose probe fails degrades the run with a logged reason; it does not crash it."""
    profile = write_workspace(tmp_path, ["acme"])
    profile.write_text(profile.read_text(encoding="utf-8") + '\n[[sources]]\ntype = "acme-kernel"\n', encoding="utf-8")
    proc = env.kestrel("run", "--profile", profile.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ("kestrel: WARNING: source 'acme-kernel' unavailable: "
            "needs the acme kernel module (/sys/kernel/acme); skipped") in proc.stderr.splitlines()
    assert (tmp_path / "alerts.txt").read_text(encoding="utf-8") == EXPECTED_ALERTS


def test_selected_broken_plugin_is_a_located_error_naming_it(env, tmp_path):
    profile = write_workspace(tmp_path, ["acme", "broken"])
    for args in (["profile", "check", profile.name], ["run", "--profile", profile.name]):
        proc = env.kestrel(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr == ("acme.toml:2:20: error: plugin 'broken' failed to load: "
                               "ImportError: kestrel_broken needs libacme.so.3, which is not installed\n")
        assert not (tmp_path / "alerts.txt").exists(), "nothing may start when a selected plugin is broken"


def test_profile_naming_a_plugin_before_it_is_installed(tmp_path, wheels):
    """Same profile, fresh venv: an error with file:line and what is installed; after
    `pip install`, the same profile checks clean."""
    venv = make_venv(tmp_path / "venv")
    work = tmp_path / "work"
    profile = write_workspace(work, ["acme"])

    for args in (["profile", "check", profile.name], ["run", "--profile", profile.name]):
        proc = venv.kestrel(*args, cwd=work)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        # no package name guessed from the plugin's (tests/core/test_hints.py): what is installed instead
        first, hint = proc.stderr.splitlines()
        assert first == "acme.toml:2:12: error: plugin 'acme' is not installed"
        assert hint.startswith("  hint: installed plugins: ") and "core" in hint and "pip install" not in hint

    venv.install(wheels["kestrel-acme"])
    proc = venv.kestrel("profile", "check", profile.name, cwd=work)
    assert proc.returncode == 0, proc.stderr


def test_sigterm_drains_a_third_party_source_that_follows_its_input(env, tmp_path):
    """A source that waits for more input (``follow = true``) stops on SIGTERM;
    what it read is processed, sinks are closed, and the stop hook sees reason
    ``signal`` with a balanced count."""
    profile = write_workspace(tmp_path, ["acme"])
    text = profile.read_text(encoding="utf-8")
    profile.write_text(text.replace('path = "falco.jsonl"\n', 'path = "falco.jsonl"\nfollow = true\n'),
                       encoding="utf-8")
    alerts = tmp_path / "alerts.txt"

    def wait_for_alerts(n: int, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 60
        while not (alerts.exists() and alerts.read_text(encoding="utf-8").count("\nACME ") >= n):
            assert proc.poll() is None, f"run ended before it was stopped: {proc.communicate()}"
            assert time.monotonic() < deadline, f"no {n} alerts within 60 s"
            time.sleep(0.05)

    proc = subprocess.Popen(env.kestrel_argv("run", "--profile", profile.name), cwd=tmp_path, env=env.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_alerts(2, proc)
        line = (HERE / "data" / "falco.jsonl").read_text(encoding="utf-8").splitlines()[1]
        with open(tmp_path / "falco.jsonl", "a", encoding="utf-8") as fh:  # appended while running
            fh.write(line.replace('"proc.pid": 102', '"proc.pid": 105').replace("c0ffee000001", "c0ffee000003") + "\n")
        wait_for_alerts(3, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert alerts.read_text(encoding="utf-8") == EXPECTED_ALERTS.replace(
        "# close\n", "ACME acme.netcat high nc c0ffee000003\n# close\n").replace(
        "reason=eof read=5 processed=4", "reason=signal read=6 processed=5")
    assert "stopped (signal): read 6, processed 5, dropped 1, alerts 3" in err
