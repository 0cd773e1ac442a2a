"""`pip install kestrel` must carry what the bundled default profile needs."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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
