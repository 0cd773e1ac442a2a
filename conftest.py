"""Repository-wide pytest options.

``--must-run FILE``: the tests FILE lists must run and pass here; one that
skipped, or that no longer exists, fails the session by name.  CI passes
``.ci/must-run.txt`` because on this project's machine kind every kernel
feature those tests need is present, so a skip there is a bug (a probe that
gave up, a filesystem nobody mounted) and not a property of the host.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

_KEY = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--must-run", metavar="FILE", default=None,
                     help="fail the run naming every test listed in FILE (node-id patterns, one per line) "
                          "that was skipped or not collected")


def _patterns(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def pytest_configure(config: pytest.Config) -> None:
    option = config.getoption("--must-run")
    if option:
        path = Path(option)
        if not path.is_file():
            raise pytest.UsageError(f"--must-run: no such file {option}")
        config.stash[_KEY] = {"patterns": _patterns(path), "file": option, "outcome": {}}


def _matches(nodeid: str, pattern: str) -> bool:
    # A bare file path stands for every test in it.
    return fnmatch.fnmatchcase(nodeid, pattern) or fnmatch.fnmatchcase(nodeid, pattern + "::*")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    state = item.config.stash.get(_KEY, None)
    if state is None:
        return
    report = outcome.get_result()
    seen = state["outcome"]
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        seen[item.nodeid] = f"skipped: {reason.removeprefix('Skipped: ')}"
    elif report.when == "call" or report.failed:
        seen.setdefault(item.nodeid, "ran")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_KEY, None)
    if state is None:
        return
    seen: dict[str, str] = state["outcome"]
    problems = []
    for pattern in state["patterns"]:
        hits = [nodeid for nodeid in seen if _matches(nodeid, pattern)]
        if not hits:
            problems.append(f"{pattern}: no such test was collected")
        problems += [f"{nodeid}: {seen[nodeid]}" for nodeid in hits if seen[nodeid] != "ran"]
    state["problems"] = problems
    if problems:
        terminalreporter.section(f"must-run tests that did not run ({state['file']})", red=True)
        for line in problems:
            terminalreporter.write_line(line)
    else:
        ran = sum(1 for nodeid in seen if any(_matches(nodeid, p) for p in state["patterns"]))
        terminalreporter.write_line(f"must-run: all {ran} listed kernel tests ran ({state['file']})")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_KEY, None)
    if state is None:
        return
    # terminal_summary runs after sessionfinish; compute here too so the exit status can change.
    seen: dict[str, str] = state["outcome"]
    for pattern in state["patterns"]:
        hits = [nodeid for nodeid in seen if _matches(nodeid, pattern)]
        if not hits or any(seen[nodeid] != "ran" for nodeid in hits):
            if session.exitstatus == 0:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
            return
