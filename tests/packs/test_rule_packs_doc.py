"""docs/rule-packs.md is checked against the code: its example pack is written
to disk and ``kestrel rules check|test`` print what the page shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "tests"))  # for tests/thirdparty (import-mode=importlib)
from thirdparty.helpers import write_doc_files  # noqa: E402

from kestrel_core.testing import run_kestrel

DOC = ROOT / "docs" / "rule-packs.md"


@pytest.fixture
def doc_pack(tmp_path):
    written, expected = write_doc_files(DOC, "file", tmp_path)
    assert written == {"pack.toml", "execution/exec_from_tmp.toml"}
    return tmp_path, expected


def test_check_output(doc_pack):
    root, expected = doc_pack
    res = run_kestrel("rules", "check", ".", cwd=root)
    assert res.returncode == 0, res.stderr
    (want,) = expected["check"]
    assert res.stdout.strip().startswith(want)  # the page leaves the hash out


def test_broken_check_output(doc_pack):
    root, expected = doc_pack
    rule = root / "execution" / "exec_from_tmp.toml"
    rule.write_text(rule.read_text().replace('severity = "high"', 'severty = "high"'))
    res = run_kestrel("rules", "check", ".", cwd=root)
    assert res.returncode == 2
    assert res.stderr.splitlines() == expected["check-broken"]


def test_test_output(doc_pack):
    root, expected = doc_pack
    res = run_kestrel("rules", "test", ".", cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [ln.rstrip() for ln in res.stdout.splitlines()] == expected["test"]


def test_python_example_names_exist():
    from kestrel_core import packs

    assert callable(packs.load_packs)
    for attr in ("rules", "errors", "overrides", "packs", "hash"):
        assert attr in {f.name for f in packs.attrs.fields(packs.PackSet)}
