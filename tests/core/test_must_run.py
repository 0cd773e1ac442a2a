"""The repository's --must-run option (conftest.py), which CI uses so that a
skipped kernel test fails the run instead of passing quietly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(tmp_path: Path, listed: str) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_k.py").write_text(
        "import pytest\n"
        "def test_runs():\n    pass\n"
        "@pytest.mark.skipif(True, reason='kernel lacks it')\ndef test_skips():\n    pass\n"
        "def test_skips_inside():\n    pytest.skip('probe said no')\n")
    (tmp_path / "must.txt").write_text(listed)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", "/dev/null", str(tmp_path), "--must-run", str(tmp_path / "must.txt")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)


def test_listed_tests_that_ran_pass(tmp_path):
    done = run(tmp_path, "# comment\ntest_k.py::test_runs\n")
    assert done.returncode == 0, done.stdout
    assert "must-run: all 1 listed kernel tests ran" in done.stdout


def test_a_listed_skip_fails_the_run_by_name(tmp_path):
    done = run(tmp_path, "test_k.py\n")
    assert done.returncode == 1, done.stdout
    assert "test_k.py::test_skips: skipped: kernel lacks it" in done.stdout
    assert "test_k.py::test_skips_inside: skipped: probe said no" in done.stdout
    assert "test_k.py::test_runs:" not in done.stdout


def test_a_listed_test_that_is_gone_fails_the_run(tmp_path):
    done = run(tmp_path, "test_k.py::test_renamed\n")
    assert done.returncode == 1
    assert "test_k.py::test_renamed: no such test was collected" in done.stdout
