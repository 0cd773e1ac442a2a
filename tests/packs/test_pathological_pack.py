"""Issue 14: a rule pack holding a pathological pattern loads with a located
warning (or is rejected with a located error when strict), and a live
``kestrel run`` with it keeps alerting on the other rules within a second and
stops within about a second of SIGINT/SIGTERM.  Also: ``kestrel profile check``
checks the packs a profile names, ``kestrel run`` refuses a profile whose packs
have broken rules, TOML errors at the end of a file are located."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from kestrel_core.cli import main
from kestrel_core.testing import wait_for

from .packfixtures import make_pack

REDOS = '''\
id = "t.redos"
name = "nested quantifier"
description = "a regex that backtracks exponentially in a backtracking engine"
query = 'process where process.command_line regex "(a+)+$"'
'''
STARS = '''\
id = "t.stars"
name = "star runs"
description = "runs of stars: polynomial backtracking once translated to .*.*.*"
query = 'process where process.command_line : "*a*****b*"'
'''
MARKER = '''\
id = "t.marker"
name = "marker"
description = "the rule that must keep alerting"
query = 'process where process.name == "marker"'
'''


def proc_event(i: int, name: str, command_line: str) -> str:
    return json.dumps({"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process", "action": "exec"},
                       "process": {"name": name, "pid": 1000 + i, "command_line": command_line}}) + "\n"


def pack_and_profile(tmp_path: Path, strictness: str = "warn", broken: bool = False) -> Path:
    rules = {"redos.toml": REDOS, "stars.toml": STARS, "marker.toml": MARKER}
    if broken:
        rules["broken.toml"] = MARKER.replace("t.marker", "t.broken").replace('== "marker"', "==")
    make_pack(tmp_path / "pack", name="patho", rules=rules)
    profile = tmp_path / "p.toml"
    profile.write_text(f'[rules]\npaths = ["pack"]\nstrictness = "{strictness}"\n'
                       '[bus]\nflush_interval_ms = 20\n'
                       '[[sources]]\ntype = "jsonl"\npath = "-"\n'
                       '[[sinks]]\ntype = "jsonl"\npath = "alerts.jsonl"\n')
    return profile


def alerts_of(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["rule"]["id"] for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_live_run_with_a_pathological_pack_keeps_alerting_and_stops_on_a_signal(tmp_path, signum):
    profile = pack_and_profile(tmp_path)
    alerts = tmp_path / "alerts.jsonl"
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "kestrel"), "run", "--profile", str(profile)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        wait_for(lambda: "loaded 3 rules" in err_path.read_text(), timeout=60, what="the run to start")
        for round_ in range(3):
            # what stalled detection before: 40 x "a" then "b" (regex), 200 x "a" (stars)
            batch = [proc_event(10 * round_ + k, "sh", "a" * 40 + "b" if k % 2 else "a" * 200) for k in range(6)]
            proc.stdin.write("".join(batch) + proc_event(10 * round_ + 9, "marker", "xaxbx"))
            proc.stdin.flush()
            t0 = time.monotonic()
            wait_for(lambda: alerts_of(alerts).count("t.marker") == round_ + 1, timeout=30,
                     what=f"the marker alert of round {round_}")
            took = time.monotonic() - t0
            assert took < 1.0, f"round {round_}: the marker alert came {took:.2f} s after its event"
        # the pathological rules run too, and answer right: 200 x "a" matches (a+)+$, "a..ab" and "xaxbx" *a*b*
        got = alerts_of(alerts)
        assert (got.count("t.redos"), got.count("t.stars")) == (9, 12)
        t0 = time.monotonic()
        proc.send_signal(signum)
        proc.wait(timeout=30)
        stopped = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err_path.read_text()
    assert proc.returncode == 0, stderr
    assert stopped < 1.5, f"stopped {stopped:.2f} s after {signum.name}"
    redos = tmp_path / "pack" / "redos.toml"
    assert f"{redos}:4:" in stderr and "warning: regular expression with a nested unbounded quantifier" in stderr
    assert "Traceback" not in stderr


def test_a_strict_profile_rejects_the_pathological_rule_with_a_located_error(tmp_path):
    profile = pack_and_profile(tmp_path, strictness="error")
    res = CliRunner().invoke(main, ["profile", "check", str(profile)])
    assert res.exit_code == 2, res.output
    assert f"{tmp_path / 'pack' / 'redos.toml'}:4:" in res.output and "nested unbounded quantifier" in res.output


def test_profile_check_checks_the_packs_the_profile_names(tmp_path):
    # before: "ok", exit 0, for a profile whose pack had broken rules
    profile = pack_and_profile(tmp_path, broken=True)
    res = CliRunner().invoke(main, ["profile", "check", str(profile)])
    assert res.exit_code == 2, res.output
    assert f"{tmp_path / 'pack' / 'broken.toml'}:4:" in res.output
    assert "1 error(s) in the rules it names" in res.output
    ok = pack_and_profile(tmp_path / "ok")
    res = CliRunner().invoke(main, ["profile", "check", str(ok)])
    assert res.exit_code == 0 and ": ok (" in res.output, res.output
    assert f"{tmp_path / 'ok' / 'pack' / 'redos.toml'}:4:" in res.output and "warning:" in res.output


def test_run_refuses_a_profile_whose_packs_have_broken_rules(tmp_path):
    profile = pack_and_profile(tmp_path, broken=True)
    proc = subprocess.run([str(Path(sys.executable).parent / "kestrel"), "run", "--profile", str(profile)],
                          input="", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path / 'pack' / 'broken.toml'}:4:" in proc.stderr and "not starting" in proc.stderr


def test_run_with_on_error_skip_runs_the_others_and_says_so(tmp_path):
    profile = pack_and_profile(tmp_path, broken=True)
    profile.write_text(profile.read_text().replace('strictness = "warn"', 'strictness = "warn"\non_error = "skip"'))
    proc = subprocess.run([str(Path(sys.executable).parent / "kestrel"), "run", "--profile", str(profile)],
                          input=proc_event(1, "marker", "x"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "1 rule error(s): those rules are NOT running" in proc.stderr
    assert alerts_of(tmp_path / "alerts.jsonl") == ["t.marker"]


@pytest.mark.parametrize("text,line,col", [
    ('id = "x"\nname = "y"\nquery = """process where\n  true\n', 4, 7),
    ('id = "x"\ntags = ["a",\n  "b",\n\n', 3, 7),
])
def test_toml_error_at_the_end_of_a_rule_file_is_located(tmp_path, text, line, col):
    f = tmp_path / "r.toml"
    f.write_text(text)
    res = CliRunner().invoke(main, ["rules", "check", str(f)])
    assert res.exit_code == 2
    assert f"{f}:{line}:{col}: error: TOML syntax error:" in res.output and "at the end of the file" in res.output


def test_toml_error_at_the_end_of_a_profile_is_located(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[rules]\npaths = ["a",\n')
    res = CliRunner().invoke(main, ["profile", "check", str(f)])
    assert res.exit_code == 2
    assert f"{f}:2:14:" in res.output and "at the end of the file" in res.output, res.output


def test_an_enforce_rule_over_its_inline_budget_runs_in_shadow_and_does_not_stop_the_run(tmp_path):
    # rules check (and so profile check) reports it; the rule still loads, so kestrel run starts
    costly = REDOS.replace('id = "t.redos"', 'id = "t.costly"\nmode = "enforce"')
    make_pack(tmp_path / "pack", name="patho", rules={"costly.toml": costly, "marker.toml": MARKER})
    profile = tmp_path / "p.toml"
    profile.write_text('[rules]\npaths = ["pack"]\n[[sources]]\ntype = "jsonl"\npath = "-"\n'
                       '[[sinks]]\ntype = "jsonl"\npath = "alerts.jsonl"\n')
    res = CliRunner().invoke(main, ["profile", "check", str(profile)])
    assert res.exit_code == 2 and "inline budget" in res.output and "would run the others" in res.output, res.output
    proc = subprocess.run([str(Path(sys.executable).parent / "kestrel"), "run", "--profile", str(profile)],
                          input=proc_event(1, "marker", "a" * 40 + "b"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "inline budget" in proc.stderr and "NOT running" not in proc.stderr
    assert alerts_of(tmp_path / "alerts.jsonl") == ["t.marker"]


def test_a_rule_file_that_is_not_utf8_is_located(tmp_path):
    # found by tests/fuzz (pack target): "cannot read file: 'utf-8' codec can't decode ..." with no line
    f = tmp_path / "r.toml"
    f.write_bytes(b'id = "x"\nname = "\xed\xa0\x80y"\n')
    res = CliRunner().invoke(main, ["rules", "check", str(f)])
    assert res.exit_code == 2
    assert f"{f}:2:9: error: not UTF-8: byte 0xed" in res.output, res.output


def test_a_profile_that_is_not_utf8_is_located(tmp_path):
    f = tmp_path / "p.toml"
    f.write_bytes(b"[bus]\ncapacity = 5 # \xff\n")
    res = CliRunner().invoke(main, ["profile", "check", str(f)])
    assert res.exit_code == 2
    assert f"{f}:2:16: error: invalid TOML: not UTF-8: byte 0xff" in res.output, res.output
