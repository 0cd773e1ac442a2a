"""Issue 12's end-to-end check: `kestrel replay` of the demo capture gives the
same alert lines with the host, lua and wasm runtimes and with a pack mixing
all three per rule, in processes with different hash seeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("kestrel_runtime_lua", reason="plugins/runtime-lua is not installed")
pytest.importorskip("kestrel_runtime_wasm", reason="plugins/runtime-wasm is not installed")


def replay(rules: Path, runtime: str, out: Path, seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-m", "kestrel_core", "replay", "-i", str(ROOT / "demo" / "capture.klog"),
                           "--rules", str(rules), "--runtime", runtime, "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return out.read_text().splitlines()


def test_host_lua_wasm_and_a_three_way_mixed_pack_replay_identically(tmp_path):
    pack = tmp_path / "linux"
    shutil.copytree(ROOT / "rules" / "linux", pack)
    rules = sorted(f for f in pack.rglob("*.toml") if f.name != "pack.toml")
    for i, f in enumerate(rules):  # every third rule on each runtime
        f.write_text(f.read_text().replace("\nmode = ", f'\nruntime = "{("host", "lua", "wasm")[i % 3]}"\nmode = ', 1))
    outs = {(name, seed): replay(path, runtime, tmp_path / f"{name}-{seed}.jsonl", seed)
            for name, path, runtime in (("host", ROOT / "rules" / "linux", "host"),
                                        ("lua", ROOT / "rules" / "linux", "lua"),
                                        ("wasm", ROOT / "rules" / "linux", "wasm"),
                                        ("mixed", pack, "host"))
            for seed in ("0", "4242")}
    host = outs[("host", "0")]
    assert len(host) > 70  # header, 77 alerts, footer
    for (name, seed), lines in outs.items():
        # The header names the runtime and the pack hash (which covers the rules'
        # runtime keys); every alert line and the counts are identical.
        assert lines[1:-1] == host[1:-1], (name, seed)
        assert json.loads(lines[-1]).get("alerts_by_rule") == json.loads(host[-1]).get("alerts_by_rule"), (name, seed)
