"""The CLI reference (docs/cli.md) against the commands: one exit-code table
that every command's error paths follow, one spelling per option, --version,
and the output the page shows."""

from __future__ import annotations

import json
import os
import re
import socket
import textwrap
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from kestrel_core import cli
from kestrel_core.cliutil import EXIT_CODES
from kestrel_core.testing import run_kestrel

ROOT = Path(__file__).resolve().parents[2]
CLI_MD = ROOT / "docs" / "cli.md"
DEMO_KLOG = ROOT / "demo" / "capture.klog"
PACK = ROOT / "rules" / "linux"

RULE = '''\
id = "t.nc"
name = "netcat"
description = "a rule"
query = 'process where process.name == "nc"'

[[test]]
name = "positive"
expect_alerts = {expect}
events = \'\'\'
{{"@timestamp": "2026-01-05T08:00:01Z", "event": {{"category": ["process"]}}, "process": {{"name": "nc"}}}}
\'\'\'
'''


def table_rows(heading: str) -> list[list[str]]:
    """The cells of the first table after ``heading`` in docs/cli.md."""
    text = CLI_MD.read_text(encoding="utf-8")
    after = text.split(heading, 1)[1]
    rows = []
    for line in after.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


# --------------------------------------------------------------------------- scenarios, one per documented row


def _events(tmp: Path, lines: list[str]) -> Path:
    path = tmp / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


EVENT = json.dumps({"@timestamp": "2026-01-05T08:00:01Z", "event": {"category": "process"}, "process": {"name": "nc"}})


def _pack(tmp: Path, expect: int = 1, broken: bool = False) -> Path:
    pack = tmp / "pack"
    pack.mkdir(exist_ok=True)
    text = RULE.format(expect=expect)
    (pack / "r.toml").write_text(text.replace("==", "= =") if broken else text)
    return pack


def _unemitted_field_pack(tmp: Path) -> Path:
    pack = _pack(tmp)
    (pack / "r.toml").write_text((pack / "r.toml").read_text().replace(
        "process.name == \"nc\"'", "process.name == \"nc\" and url.full == \"x\"'", 1))
    return pack


def _field_warning(res):
    assert "no source here emits" in res.output or "not checked" in res.output, res.output
    return res


def _profile(tmp: Path, text: str) -> Path:
    path = tmp / "p.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _damaged_log(tmp: Path) -> Path:
    data = bytearray(DEMO_KLOG.read_bytes())
    data[len(data) // 2] ^= 0x55  # inside some frame: a CRC mismatch, the rest still reads
    path = tmp / "damaged.klog"
    path.write_bytes(bytes(data))
    return path


def run_ok(tmp):
    _events(tmp, [EVENT])
    return run_kestrel("run", "-p", str(_profile(tmp, '[[sources]]\ntype = "jsonl"\npath = "events.jsonl"\n')))


def run_port_in_use(tmp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        prof = _profile(tmp, f'[kestrel]\nplugins = ["sink-prometheus"]\n[[sinks]]\ntype = "prometheus"\n'
                             f'address = "127.0.0.1:{port}"\n')
        return run_kestrel("run", "-p", str(prof), stdin=open(os.devnull))


def enforce_no_ack(tmp):
    (tmp / f"enforce.applied.{os.getpid()}").write_text("on\n")  # a live "enforcer" (this process) that never answers
    return invoke("enforce", "off", "--runtime-dir", str(tmp), "--timeout", "0.2")


def broken_plugin_command(tmp, monkeypatch):
    from importlib.metadata import EntryPoint

    ep = EntryPoint(name="broken", value="no_such_module_kestrel:cmd", group=cli.COMMANDS_GROUP)
    monkeypatch.setattr(cli._WithPluginCommands, "_entry_points", lambda self: {"broken": ep})
    return invoke("broken")


SCENARIOS: dict[tuple[str, str], Callable] = {
    ("`kestrel run`", "the inputs ended"): run_ok,
    ("`kestrel run`", "the profile has an error"):
        lambda tmp: invoke("run", "-p", str(_profile(tmp, "[bus]\ncapacity = 0\n"))),
    ("`kestrel run`", "a file the profile names does not exist"):
        lambda tmp: run_kestrel("run", "-p", str(_profile(tmp, '[[sources]]\ntype = "jsonl"\npath = "no.jsonl"\n'))),
    ("`kestrel run`", "a sink cannot listen on its port (in use)"): run_port_in_use,
    ("`kestrel run`", 'a rule of a pack it names has an error (`[rules] on_error = "refuse"`, the default)'):
        lambda tmp: run_kestrel("run", "-p", str(_profile(tmp, f'[rules]\npaths = ["{_pack(tmp, broken=True)}"]\n'))),
    ("`kestrel profile check`", "the profile is valid"):
        lambda tmp: invoke("profile", "check", str(_profile(tmp, "[bus]\ncapacity = 10\n"))),
    ("`kestrel profile check`", "the profile has an error"):
        lambda tmp: invoke("profile", "check", str(_profile(tmp, '[kestrel]\nplugins = ["sink-promethues"]\n'))),
    ("`kestrel profile check`", "a rule of a pack it names has an error"):
        lambda tmp: invoke("profile", "check", str(_profile(tmp, f'[rules]\npaths = ["{_pack(tmp, broken=True)}"]\n'))),
    ("`kestrel plugins list`", "always (a broken plugin is listed as broken)"): lambda tmp: invoke("plugins", "list"),
    ("`kestrel eval`", "the query ran, with or without matches"):
        lambda tmp: invoke("eval", 'process where process.name == "x"', "-i", str(_events(tmp, [EVENT]))),
    ("`kestrel eval`", "the query has an error"):
        lambda tmp: invoke("eval", "process where ((", "-i", str(_events(tmp, [EVENT]))),
    ("`kestrel eval`", "the input file does not exist"):
        lambda tmp: invoke("eval", "process where true", "-i", str(tmp / "missing.jsonl")),
    ("`kestrel eval`", "an input line is not an event"):
        lambda tmp: invoke("eval", "process where true", "-i", str(_events(tmp, [EVENT, "{not json"]))),
    ("`kestrel record`", "the input was recorded"):
        lambda tmp: invoke("record", "-i", str(_events(tmp, [EVENT])), "-o", str(tmp / "a.klog")),
    ("`kestrel record`", "neither --input nor --profile"): lambda tmp: invoke("record", "-o", str(tmp / "a.klog")),
    ("`kestrel record`", "the input file does not exist"):
        lambda tmp: invoke("record", "-i", str(tmp / "missing.jsonl"), "-o", str(tmp / "a.klog")),
    ("`kestrel record`", "input lines were rejected (the others are recorded)"):
        lambda tmp: invoke("record", "-i", str(_events(tmp, [EVENT, "[1]"])), "-o", str(tmp / "a.klog")),
    ("`kestrel record`", "the disk is full"):
        lambda tmp: invoke("record", "-i", str(_events(tmp, [EVENT])), "-o", "/dev/full"),
    ("`kestrel export`", "the log was exported"): lambda tmp: invoke("export", "-i", str(DEMO_KLOG), "-o",
                                                                     str(tmp / "e.jsonl")),
    ("`kestrel export`", "the log does not exist"): lambda tmp: invoke("export", "-i", str(tmp / "missing.klog")),
    ("`kestrel export`", "the file is not a .klog"):
        lambda tmp: invoke("export", "-i", str(_events(tmp, [EVENT]))),
    ("`kestrel replay`", "the logs were replayed"):
        lambda tmp: invoke("replay", "-i", str(DEMO_KLOG), "-r", str(_pack(tmp)), "-o", str(tmp / "a.jsonl")),
    ("`kestrel replay`", "no log given"): lambda tmp: invoke("replay", "-r", str(_pack(tmp))),
    ("`kestrel replay`", "a rule has an error (nothing is replayed)"):
        lambda tmp: invoke("replay", "-i", str(DEMO_KLOG), "-r", str(_pack(tmp, broken=True))),
    ("`kestrel replay`", "a log is damaged (every readable event is replayed)"):
        lambda tmp: invoke("replay", "-i", str(_damaged_log(tmp)), "-r", str(_pack(tmp)), "-o", str(tmp / "a.jsonl")),
    ("`kestrel rules check`", "no rule has an error"): lambda tmp: invoke("rules", "check", str(_pack(tmp))),
    ("`kestrel rules check`", "a rule has an error"):
        lambda tmp: invoke("rules", "check", str(_pack(tmp, broken=True))),
    ("`kestrel rules check`", "a rule reads a field no source here emits (a warning)"):
        lambda tmp: _field_warning(invoke("rules", "check", str(_unemitted_field_pack(tmp)))),
    ("`kestrel rules check`", "the `--profile` has an error"):
        lambda tmp: invoke("rules", "check", "-p", str(_profile(tmp, "[bus]\ncapacity = 0\n")), str(_pack(tmp))),
    ("`kestrel fields`", "always (a broken plugin is listed as broken)"): lambda tmp: invoke("fields"),
    ("`kestrel fields`", "`--source` names no installed source"): lambda tmp: invoke("fields", "-s", "no-such"),
    ("`kestrel rules test`", "every golden test passes"): lambda tmp: invoke("rules", "test", str(_pack(tmp))),
    ("`kestrel rules test`", "a golden test fails"): lambda tmp: invoke("rules", "test", str(_pack(tmp, expect=2))),
    ("`kestrel rules test`", "a rule has an error (the good rules' tests still run)"):
        lambda tmp: invoke("rules", "test", str(_pack(tmp, broken=True))),
    ("`kestrel replay`", "`--matcher` names no installed matcher"):
        lambda tmp: invoke("replay", "-i", str(DEMO_KLOG), "-r", str(_pack(tmp)), "--matcher", "no-such"),
    ("`kestrel rules test`", "`--matcher` names no installed matcher"):
        lambda tmp: invoke("rules", "test", str(_pack(tmp)), "--matcher", "no-such"),
    ("`kestrel rules explain`", "the rules were explained"): lambda tmp: invoke("rules", "explain", str(_pack(tmp))),
    ("`kestrel rules explain`", "a rule has an error (the others are explained)"):
        lambda tmp: invoke("rules", "explain", str(_pack(tmp, broken=True))),
    ("`kestrel rules cost`", "the cost table was printed"):
        lambda tmp: invoke("rules", "cost", str(_pack(tmp)), "-i", str(_events(tmp, [EVENT]))),
    ("`kestrel rules cost`", "the `--input` file does not exist"):
        lambda tmp: invoke("rules", "cost", str(_pack(tmp)), "-i", str(tmp / "missing.jsonl")),
    ("`kestrel rules cost`", "an `--input` line is not an event"):
        lambda tmp: invoke("rules", "cost", str(_pack(tmp)), "-i", str(_events(tmp, [EVENT, "[1]"]))),
    ("`kestrel enforce`", "status"): lambda tmp: invoke("enforce", "status", "--runtime-dir", str(tmp)),
    ("`kestrel enforce`", "a running enforcer does not acknowledge in time"): enforce_no_ack,
    ("any command", "an unknown option"): lambda tmp: invoke("eval", "--no-such-option"),
    ("a plugin's command", "it fails to import"): broken_plugin_command,
}


def test_exit_code_table_is_the_one_the_code_uses():
    assert {int(code): name for code, name, _ in table_rows("## Exit codes")} == EXIT_CODES


def test_every_documented_case_has_a_scenario_and_back():
    documented = {(cmd, situation) for cmd, situation, _ in table_rows("Each command's cases")}
    assert documented == set(SCENARIOS)


@pytest.mark.parametrize("row", table_rows("Each command's cases"), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_command_exits_as_documented(row, tmp_path, monkeypatch):
    cmd, situation, code = row
    scenario = SCENARIOS[(cmd, situation)]
    res = scenario(tmp_path, monkeypatch) if scenario is broken_plugin_command else scenario(tmp_path)
    got = res.exit_code if hasattr(res, "exit_code") else res.returncode
    out = getattr(res, "output", "") or (getattr(res, "stdout", "") + getattr(res, "stderr", ""))
    assert got == int(code), f"{cmd}, {situation}: exit {got}, documented {code}\n{out}"
    assert "Traceback" not in out


# --------------------------------------------------------------------------- option spellings, --version


def test_version_option_and_command_agree():
    a, b = invoke("--version"), invoke("version")
    assert a.exit_code == b.exit_code == 0 and a.output == b.output
    assert re.match(r"kestrel \d+\.\d+\S* \(schema \d", a.output)


def test_version_comes_from_the_core_distribution(monkeypatch):
    """kestrel-edr (new name) first, then kestrel; a distribution of that name
    that does not ship this core (the index's unrelated `kestrel`) is ignored."""
    import importlib.metadata as md

    class Dist:
        def __init__(self, version, ships_core):
            self.version = version
            self.entry_points = [md.EntryPoint("core", "kestrel_core.builtins", "kestrel.plugins")] if ships_core else []

    dists = {"kestrel-edr": Dist("9.1", True), "kestrel": Dist("0.0.1-other", False)}

    def distribution(name):
        if name not in dists:
            raise md.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(md, "distribution", distribution)
    assert cli.kestrel_version() == "9.1"
    del dists["kestrel-edr"]
    assert cli.kestrel_version() == cli.__version__  # only the unrelated one: not its version


@pytest.mark.parametrize("command", ["eval", "record", "export", "replay"])
def test_every_command_with_an_input_file_takes_input_and_i(command):
    from kestrel_core.cli import main

    cmd = main.get_command(None, command)
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {"--input", "-i"} <= opts


@pytest.mark.parametrize("command", [["eval"], ["replay"], ["rules", "check"], ["rules", "test"]])
def test_one_strictness_spelling_and_the_old_one_hidden(command):
    res = invoke(*command, "--help")
    assert "--strictness [error|warn|off]" in res.output and "--strict " not in res.output


def test_deprecated_strict_still_works_and_says_so(tmp_path):
    events = _events(tmp_path, [json.dumps({"@timestamp": 1, "event": {"category": "process"},
                                            "process": {"pid": 5}})])
    # a type mismatch: an error under `error`, whichever spelling chose it
    for flag in ("--strictness", "--strict"):
        res = invoke("eval", 'process where process.pid == "a"', "-i", str(events), flag, "error")
        assert res.exit_code == 2, (flag, res.output)
    assert "--strict is deprecated; use --strictness" in res.stderr
    assert invoke("eval", 'process where process.pid == "a"', "-i", str(events)).exit_code == 0


def test_positional_log_is_still_accepted(tmp_path):
    out = tmp_path / "e.jsonl"
    assert invoke("export", str(DEMO_KLOG), "-o", str(out)).exit_code == 0
    by_option = tmp_path / "f.jsonl"
    assert invoke("export", "-i", str(DEMO_KLOG), "-o", str(by_option)).exit_code == 0
    assert out.read_bytes() == by_option.read_bytes()
    res = invoke("export", "-i", str(DEMO_KLOG), str(DEMO_KLOG))
    assert res.exit_code == 2 and "not both" in res.output


# --------------------------------------------------------------------------- output


def test_plugins_list_has_no_line_wider_than_the_table(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    res = invoke("plugins", "list")
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    too_wide = [ln for ln in lines if len(ln) > 100 and " " in ln.strip()]  # one unbreakable word may not fit
    assert not too_wide, too_wide
    assert "    action     enforce          " in res.stdout  # the row, then its probe report beneath


def test_split_reason_keeps_parentheses_whole():
    assert cli.split_reason("a -> b, c | x: ok (p; q); y: no (r | s)") == ["a -> b, c", "x: ok (p; q)", "y: no (r | s)"]


def test_replay_prints_alerts_per_rule_as_a_table(tmp_path):
    res = invoke("replay", "-i", str(DEMO_KLOG), "-r", str(PACK), "-o", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 0, res.output
    rows = [ln for ln in res.stderr.splitlines() if not ln.startswith("kestrel:")]
    assert rows[0].split() == ["rule", "critical", "high", "medium", "low", "total"]
    assert rows[-1].split() == ["total", "14", "41", "20", "2", "77"]
    footer = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[-1])
    table = {r.split()[0]: int(r.split()[-1]) for r in rows[1:-1]}
    assert table == footer["alerts_by_rule"]  # the same counts as the footer, readable


def in_order(want: list[str], got: list[str]) -> bool:
    it = iter(got)
    return all(any(line == g for g in it) for line in want)


def test_demo_output_is_what_the_reference_shows():
    """`make demo`: the page's block appears in the real output, in order."""
    block = CLI_MD.read_text(encoding="utf-8").split("```text expect=demo\n", 1)[1].split("```", 1)[0]
    res = run_kestrel("run", "--profile", "profiles/demo.toml", cwd=ROOT)
    assert res.returncode == 0, res.stderr
    got = res.stdout.splitlines() + res.stderr.splitlines()
    assert in_order(block.splitlines(), got), res.stdout[-3000:] + res.stderr


def test_enforce_status_on_a_fresh_machine_reports_no_state_file(tmp_path):
    res = invoke("enforce", "status", "--runtime-dir", str(tmp_path / "run"))
    assert res.exit_code == 0
    assert res.output.startswith("enforcement on: no state file yet (")
    assert "profile default" in res.output and "no running enforcer" in res.output
    assert not (tmp_path / "run").exists()  # asking must not create anything
    assert invoke("enforce", "off", "--runtime-dir", str(tmp_path / "run")).exit_code == 0
    res = invoke("enforce", "status", "--runtime-dir", str(tmp_path / "run"))
    assert res.output.startswith(f"enforcement off (state file {tmp_path / 'run' / 'enforce.state'})")
