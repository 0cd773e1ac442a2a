"""Throwaway virtual environments for plugin tests.

A test that claims "a plugin installed with pip is discovered through its
entry point" must install a real distribution somewhere the core did not put
it.  ``make_venv`` creates an empty venv in a temporary directory whose
site-packages gets one ``.pth`` line adding the *running* interpreter's
site-packages (found with :mod:`sysconfig`, never hard-coded) as a site dir,
so Kestrel, its dependencies and pip import there without being copied.
Distributions installed with :meth:`Venv.install` land in the temporary venv
only; the main environment never sees them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, Sequence

import attrs

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 180


def host_site_dirs() -> list[str]:
    """site-packages directories of the interpreter running the tests."""
    paths = sysconfig.get_paths()
    out: list[str] = []
    for key in ("purelib", "platlib"):
        if paths[key] not in out:
            out.append(paths[key])
    return out


def _can_build_without_isolation() -> bool:
    """True when setuptools here can build a wheel by itself (setuptools >= 70.1
    ships bdist_wheel; older ones need the ``wheel`` package)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    if importlib.util.find_spec("wheel") is not None:
        return True
    from importlib.metadata import version

    major, minor = (int(x) for x in re.findall(r"\d+", version("setuptools"))[:2])
    return (major, minor) >= (70, 1)


@attrs.define
class Venv:
    root: Path
    python: Path
    site_packages: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["VIRTUAL_ENV"] = str(self.root)
        env["PYTHONNOUSERSITE"] = "1"
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.env(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)

    def install(self, *dists: Path) -> None:
        """``pip install`` source trees (built from their pyproject.toml) or wheels into this venv."""
        proc = self.run([*_pip("install"), *map(str, dists)], cwd=dists[0].parent)
        assert proc.returncode == 0, f"pip install {dists} failed:\n{proc.stdout}\n{proc.stderr}"

    def kestrel_argv(self, *args: str) -> list[str]:
        """Command line of ``kestrel ARGS`` run by this venv's interpreter."""
        return [str(self.python), "-c", "from kestrel_core.cli import main; main(prog_name='kestrel')", *args]

    def kestrel(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run the ``kestrel`` command to completion."""
        return subprocess.run(self.kestrel_argv(*args), cwd=cwd, env=self.env(), capture_output=True, text=True,
                              timeout=TIMEOUT_S)


def _pip(command: str) -> list[str]:
    args = ["-m", "pip", command, "--no-deps", "--no-input", "--disable-pip-version-check", "-q"]
    if _can_build_without_isolation():
        args.append("--no-build-isolation")  # offline and fast
    # else: pip builds in an isolated env, fetching setuptools from the configured index
    return args


def build_wheels(dists: Sequence[Path], out: Path) -> dict[str, Path]:
    """Build wheels of source trees with pip (one call); returns project name -> wheel."""
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, *_pip("wheel"), "-w", str(out), *map(str, dists)], capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"pip wheel {dists} failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = {}
    for whl in out.glob("*.whl"):
        wheels[whl.name.split("-")[0].replace("_", "-")] = whl
    return wheels


def make_venv(path: Path) -> Venv:
    """An empty venv at ``path`` that sees the running interpreter's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=TIMEOUT_S)
    python = path / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, timeout=TIMEOUT_S).stdout.strip()
    site_packages = Path(purelib)
    # site.addsitedir (not a bare path line) so the host's own .pth files run:
    # editable installs of kestrel and its plugins are .pth-based finders.
    lines = [f"import site; site.addsitedir({d!r})" for d in host_site_dirs()]
    (site_packages / "_kestrel_host_site.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # `pip` and `kestrel` on the venv's PATH (Venv.env) run with its interpreter,
    # as they would once it is activated: commands from the docs run as written.
    shims = {"pip": '-m pip "$@"',
             "kestrel": '-c "from kestrel_core.cli import main; main(prog_name=\'kestrel\')" "$@"'}
    for name, argv in shims.items():
        script = path / "bin" / name
        script.write_text(f'#!/bin/sh\nexec "{python}" {argv}\n', encoding="utf-8")
        script.chmod(0o755)
    return Venv(path, python, site_packages)


def copy_tree(name: str, dest: Path) -> Path:
    """Copy the fixture directory ``tests/thirdparty/<name>`` to ``dest/<name>``
    (builds write egg-info and build/ next to the sources: keep them out of the repo)."""
    target = dest / name
    shutil.copytree(HERE / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    return target


# --------------------------------------------------------------------------- markdown blocks


@attrs.frozen
class Block:
    lang: str
    attrs: dict[str, str]
    body: str
    line: int
    """1-based line of the opening fence, for failure messages."""


_FENCE = re.compile(r"^(?P<fence>```+)(?P<info>[^`]*)$")


def fenced_blocks(text: str) -> Iterator[Block]:
    """Fenced code blocks with their info string split into a language and
    ``key=value`` attributes (```python file=pkg/mod.py)."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i].rstrip("\n"))
        if not m:
            i += 1
            continue
        start, fence = i, m.group("fence")
        words = m.group("info").split()
        lang = words[0] if words and "=" not in words[0] else ""
        attributes = dict(w.split("=", 1) for w in words if "=" in w)
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip("\n") != fence:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"line {start + 1}: unclosed code block")
        i += 1
        yield Block(lang, attributes, "".join(body), start + 1)


def write_doc_files(doc: Path, attr: str, dest: Path) -> tuple[set[str], dict[str, list[str]]]:
    """Write the blocks of ``doc`` tagged ``attr=NAME`` to ``dest/NAME``; return
    the names written and the lines of each block tagged ``expect=KEY`` (the
    output the page promises), so a test can run the page's example."""
    blocks = list(fenced_blocks(doc.read_text(encoding="utf-8")))
    names = set()
    for b in blocks:
        if attr in b.attrs:
            f = dest / b.attrs[attr]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(b.body)
            names.add(b.attrs[attr])
    return names, {b.attrs["expect"]: b.body.splitlines() for b in blocks if "expect" in b.attrs}


def in_order(expected: Sequence[str], actual: Sequence[str]) -> bool:
    """Whether ``expected`` lines occur in ``actual`` in the same order (others may come between)."""
    it = iter(actual)
    return all(any(line == got for got in it) for line in expected)
