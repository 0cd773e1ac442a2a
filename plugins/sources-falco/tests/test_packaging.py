"""The distribution installs alone next to the core: wheels of kestrel-edr and
kestrel-edr-sources-falco, a fresh venv holding only the third-party
dependencies, ``pip install --no-index kestrel-edr-sources-falco`` (pulls
the core from the wheels and nothing else), then the installed copy (not
this checkout) runs the Falco story through the bundled Linux pack."""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name

from kestrel_sources_falco.testing import STORY_ALERTS

PLUGIN = Path(__file__).resolve().parents[1]
ROOT = PLUGIN.parents[1]
NAME = "kestrel-edr-sources-falco"


def offline_env() -> dict[str, str]:
    """No pip configuration, no index, nothing from this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    return env


def copy_tree(src: Path, dest: Path, core: bool) -> Path:
    """What pip needs to build, copied (the core's data/ symlinks followed), so nothing is written here."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "tests", ".venv")
    if not core:
        return Path(shutil.copytree(src, dest, ignore=skip))
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(src / name, dest / name)
    shutil.copytree(src / "kestrel_core", dest / "kestrel_core", ignore=skip)
    return dest


def third_party_site(dest: Path) -> Path:
    """Symlinks to every distribution of the test's venv except Kestrel's own."""
    dest.mkdir()
    paths = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    for dist in importlib.metadata.distributions(path=paths):
        if canonicalize_name(dist.metadata["Name"]).startswith("kestrel"):
            continue
        for top in {f.parts[0] for f in dist.files or ()}:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            if not (dest / top).exists():
                (dest / top).symlink_to(dist.locate_file(top))
    return dest


def test_installs_alone_next_to_the_core_and_runs_the_story(tmp_path):
    wheels = tmp_path / "wheels"
    sources = [copy_tree(ROOT, tmp_path / "src" / "core", True), copy_tree(PLUGIN, tmp_path / "src" / "falco", False)]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(wheels), *map(str, sources)], capture_output=True, text=True, timeout=300,
                          env=offline_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = wheels.glob("kestrel_edr_sources_falco-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "kestrel_sources_falco/falco/kestrel_rules.yaml" in names  # the catch-all Falco rules ship with it

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shared = third_party_site(tmp_path / "third-party")
    (Path(purelib) / "_third_party.pth").write_text(f"import site; site.addsitedir({str(shared)!r})\n")
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--find-links", str(wheels), NAME],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=offline_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys\n"
                                "print(' '.join(sorted(d.metadata['Name'] for d in m.distributions(path=[sys.argv[1]]))))",
                                purelib], check=True, capture_output=True, text=True, env=offline_env()).stdout.split()
    assert installed == ["kestrel-edr", NAME]

    kestrel = str(venv / "bin" / "kestrel")
    proc = subprocess.run([kestrel, "plugins", "list"], capture_output=True, text=True, cwd=tmp_path,
                          env=offline_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"sources-falco  ({NAME} 0.1.0)" in proc.stdout.splitlines(), proc.stdout

    # the installed plugin (its sample story), the rules bundled in the core's wheel
    story = subprocess.run([str(python), "-m", "kestrel_sources_falco.testing"], check=True, capture_output=True,
                           text=True, cwd=tmp_path, env=offline_env()).stdout
    (tmp_path / "falco.jsonl").write_text(story)
    rules = subprocess.run([str(python), "-c", "import kestrel_core, pathlib; "
                            "print(pathlib.Path(kestrel_core.__file__).parent / 'data' / 'rules' / 'linux')"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=offline_env()).stdout.strip()
    assert rules.startswith(purelib)
    (tmp_path / "p.toml").write_text(textwrap.dedent(f"""
        [kestrel]
        plugins = ["sources-falco"]
        [rules]
        paths = ["{rules}"]
        [[sources]]
        type = "falco"
        path = "falco.jsonl"
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
    """))
    proc = subprocess.run([kestrel, "run", "--profile", "p.toml"], capture_output=True, text=True, cwd=tmp_path,
                          env=offline_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = collections.Counter(json.loads(x)["rule"]["id"] for x in (tmp_path / "alerts.jsonl").read_text().splitlines())
    assert got == STORY_ALERTS
