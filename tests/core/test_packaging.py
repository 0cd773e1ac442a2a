"""Packaging: the core wheel carries what the bundled default profile needs,
and the distributions' names (kestrel-edr, kestrel-edr-<plugin dir>) are the
ones their dependencies, the README and pip resolve."""

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.append(str(Path(__file__).resolve().parents[1]))  # for tests/thirdparty (import-mode=importlib)
from thirdparty.helpers import host_site_dirs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORE = "kestrel-edr"
PLUGIN_DIRS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
NAMES = {ROOT: CORE} | {d: f"{CORE}-{d.name}" for d in PLUGIN_DIRS}
"""Source tree -> the distribution it must build."""
TAKEN = {"kestrel", "kestrel-core"}
"""Names on PyPI that belong to unrelated projects."""


def build_wheel(src: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, text=True)
    (wheel,) = out.glob("*.whl")
    return wheel


def test_core_wheel_bundles_default_profile_and_rule_pack(tmp_path):
    wheel = zipfile.ZipFile(build_wheel(ROOT, tmp_path))
    names = set(wheel.namelist())
    assert "kestrel_core/data/default.toml" in names
    assert "kestrel_core/data/demo.klog" in names  # the default profile's last fallback
    assert "kestrel_core/eql/grammar.lark" in names
    linux = ROOT / "rules" / "linux"
    pack = {p.relative_to(linux).as_posix() for p in linux.rglob("*.toml")}  # pack.toml + rule files in subdirectories
    assert len(pack) > 1 and {f"kestrel_core/data/rules/linux/{n}" for n in pack} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = wheel.read(entry_points).decode()
    assert "[kestrel.plugins]" in text and "core = kestrel_core.builtins" in text
    assert "kestrel = kestrel_core.cli:main" in text


# --------------------------------------------------------------------------- names


def project(tree: Path) -> dict:
    return tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_every_distribution_has_its_name_and_depends_on_ours():
    assert len(PLUGIN_DIRS) >= 5
    for tree, name in NAMES.items():
        meta = project(tree)
        assert meta["name"] == name, f"{tree}/pyproject.toml: name {meta['name']!r}, expected {name!r}"
        for dep in meta.get("dependencies", []):
            req = canonicalize_name(Requirement(dep).name)
            assert req not in TAKEN, f"{tree}/pyproject.toml depends on {req!r}, an unrelated project on PyPI"
            if req.startswith("kestrel"):
                assert req in NAMES.values(), f"{tree}/pyproject.toml depends on {req!r}, not one of {sorted(NAMES.values())}"
    for tree in PLUGIN_DIRS:  # every plugin needs the core, by its name
        assert CORE in {canonicalize_name(Requirement(d).name) for d in project(tree)["dependencies"]}, tree


def test_readme_lists_every_distribution():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\|\s*`([^`]+)`\s*\|\s*`(kestrel[\w-]*)`\s*\|", text, re.M))
    expected = {"." if tree == ROOT else tree.relative_to(ROOT).as_posix(): name for tree, name in NAMES.items()}
    assert rows == expected, f"README.md's distribution table: {rows}, expected {expected}"


# --------------------------------------------------------------------------- install from wheels


def copy_source(tree: Path, dest: Path) -> Path:
    """What pip needs to build ``tree``, copied (symlinks followed: the core's
    data/ links to rules/ and demo/), so builds write nothing into the checkout."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "tests", ".venv")
    if tree == ROOT:
        dest.mkdir(parents=True)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, dest / name)
        shutil.copytree(ROOT / "kestrel_core", dest / "kestrel_core", ignore=skip)
    else:
        shutil.copytree(tree, dest, ignore=skip)
    return dest


def third_party_site(dest: Path) -> Path:
    """Symlinks to every distribution installed in the test's venv except
    Kestrel's own: what a fresh venv needs besides the wheels under test
    (pluggy, stevedore, lark, attrs, ..., pip, setuptools), without a network
    or an index."""
    dest.mkdir()
    for dist in importlib.metadata.distributions(path=host_site_dirs()):
        if canonicalize_name(dist.metadata["Name"]).startswith("kestrel"):
            continue
        for top in {f.parts[0] for f in dist.files or ()}:
            if top in ("..", "__pycache__") or top.endswith(".pth"):  # scripts in bin/, editable finders
                continue
            if not (dest / top).exists():
                (dest / top).symlink_to(dist.locate_file(top))
    return dest


def offline_env(**extra: str) -> dict[str, str]:
    """No pip configuration (this machine's names other indexes and find-links), no index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1",
               **extra)
    return env


def test_plugins_install_by_name_from_wheels_in_a_fresh_venv(tmp_path):
    """Wheels of the core and every plugin, and a fresh venv that has only the
    third-party dependencies: ``pip install --no-index --find-links WHEELS
    <plugin distributions>`` must resolve the core and plugin-to-plugin
    dependencies from those wheels alone (a dependency still named
    ``kestrel`` would find nothing), and install nothing else."""
    wheels = tmp_path / "wheels"
    sources = [copy_source(tree, tmp_path / "src" / (tree.name if tree != ROOT else "core")) for tree in NAMES]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(wheels), *map(str, sources)], capture_output=True, text=True, timeout=300,
                          env=offline_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    built = {canonicalize_name(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
    assert built == set(NAMES.values()), built

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shared = third_party_site(tmp_path / "third-party")
    (Path(purelib) / "_third_party.pth").write_text(f"import site; site.addsitedir({str(shared)!r})\n")

    plugins = sorted(NAMES[d] for d in PLUGIN_DIRS)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--find-links", str(wheels), *plugins],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=offline_env())
    assert proc.returncode == 0, f"pip install {plugins} from the wheels failed:\n{proc.stdout}{proc.stderr}"

    probe = ("import importlib.metadata as m, sys\n"
             "print('\\n'.join(sorted(d.metadata['Name'] for d in m.distributions(path=[sys.argv[1]]))))\n"
             "for n in sys.argv[2:]:\n"
             "    try: m.distribution(n); print('VISIBLE', n)\n"
             "    except m.PackageNotFoundError: pass\n")
    out = subprocess.run([str(python), "-c", probe, purelib, *sorted(TAKEN)], check=True, capture_output=True,
                         text=True, cwd=tmp_path, env=offline_env()).stdout.split()
    assert "VISIBLE" not in out, f"an unrelated distribution is installed: {out}"
    assert set(out) == set(NAMES.values()), f"installed into the fresh venv: {out}"

    # The console script is still `kestrel`; each plugin reports its distribution.
    proc = subprocess.run([str(venv / "bin" / "kestrel"), "plugins", "list"], capture_output=True, text=True,
                          cwd=tmp_path, env=offline_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for line in [f"core  ({CORE} 0.1.0)"] + [f"{d.name}  ({NAMES[d]} 0.1.0)" for d in PLUGIN_DIRS]:
        assert line in proc.stdout.splitlines(), f"`kestrel plugins list` lacks {line!r}:\n{proc.stdout}"
