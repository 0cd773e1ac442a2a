"""docs/rule-packs.md, "Exceptions" and "Suppression": the example pack is
written to disk and ``kestrel rules check|test`` print what the page shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "tests"))  # for tests/thirdparty (import-mode=importlib)
from thirdparty.helpers import write_doc_files  # noqa: E402

from kestrel_core.packs import load_packs  # noqa: E402
from kestrel_core.testing import run_kestrel  # noqa: E402

DOC = ROOT / "docs" / "rule-packs.md"


@pytest.fixture
def doc_pack(tmp_path):
    written, expected = write_doc_files(DOC, "exc-file", tmp_path)
    assert written == {"pack.toml", "lists/build.toml", "execution/chmod_tmp.toml"}
    return tmp_path, expected


def test_example_pack_checks_and_its_golden_tests_pass(doc_pack):
    root, expected = doc_pack
    res = run_kestrel("rules", "check", ".", cwd=root)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok: 1 rule(s) from site-local 1.0.0 (priority 20); 0 warning(s)")
    res = run_kestrel("rules", "test", ".", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [ln.rstrip() for ln in res.stdout.splitlines()] == expected["exc-test"]
    (rule,) = load_packs([root]).rules
    assert [e.list_name for e in rule.exceptions] == [None, "package_managers", "build_hosts"]
    assert rule.suppress.by == ("process.entity_id",) and rule.suppress.window_ns == 300 * 10**9


def test_broken_example_is_located_as_shown(doc_pack):
    root, expected = doc_pack
    rule = root / "execution" / "chmod_tmp.toml"
    text = rule.read_text()
    text = text.replace('field = "file.path"\nop = "wildcard"', 'field = "file.pth"\nop = "wildcard"')
    text = text.replace('["package_managers", "build_hosts"]', '["package_manager", "build_hosts"]')
    rule.write_text(text)
    res = run_kestrel("rules", "check", ".", cwd=root)
    assert res.returncode == 2
    assert res.stderr.splitlines() == expected["exc-check-broken"]


def test_bundled_pack_ships_the_package_managers_list_empty():
    ps = load_packs([ROOT / "rules" / "linux"])
    assert ps.ok and ps.lists == {"package_managers": []}
    chmod = next(r for r in ps.rules if r.id == "kestrel.linux.chmod_exec_in_tmp")
    assert chmod.exception_lists == ("package_managers",) and chmod.exceptions == ()
    assert chmod.suppress.by == ("process.entity_id",)
