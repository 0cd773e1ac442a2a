"""Rebuild demo/capture.jsonl: a small fleet's benign activity with a handful
of attack stories at fixed points.  Deterministic (fixed seed):

    .venv/bin/python demo/build_capture.py

Uses the benchmark generator (benchmarks/generate.py, benchmarks/attacks.py).
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.generate import Generator  # noqa: E402

SEED = 2026
HOSTS = 16
EVENTS = 2400

# stream position -> (story, host index).  Host roles come from the seed; the
# builder checks that web stories land on a web host and the container escape
# on a Kubernetes node.
STORIES = [
    ("reverse_shell_bash", "web"),
    ("webshell_recon", "web"),
    ("curl_pipe_shell", "app"),
    ("download_chmod_exec", "build"),
    ("user_then_sudoers", "db"),
    ("ssh_key_implant", "bastion"),
    ("kernel_module", "db"),
    ("setuid_bit", "app"),
    ("ld_preload", "web"),
    ("container_escape", "k8s"),
    ("shadow_read", "bastion"),
    ("log_tamper", "build"),
]


def build() -> tuple[list[dict], dict]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _build()
    finally:
        if enabled:
            gc.enable()


def _build() -> tuple[list[dict], dict]:
    g = Generator(seed=SEED, hosts=HOSTS, attack_rate=0.0, mean_gap_us=700_000)
    by_role: dict[str, list[int]] = {}
    for h in g.hosts:
        by_role.setdefault(h.role, []).append(h.idx)
    schedule = {}
    step = EVENTS // (len(STORIES) + 1)
    for i, (name, role) in enumerate(STORIES):
        hosts = by_role.get(role) or by_role["web"]
        schedule[step * (i + 1) - 40] = (name, hosts[i % len(hosts)])
    evs = g.generate(EVENTS, schedule)
    for e in evs:
        e.pop("_ts_us", None)
        e.pop("_story", None)
        e["event"].pop("dataset", None)
        e["event"].pop("module", None)
        e["host"].pop("os", None)
    return evs, g.injected


def main() -> int:
    evs, injected = build()
    out = ROOT / "demo" / "capture.jsonl"
    with open(out, "w") as f:
        for e in evs:
            f.write(json.dumps(e, separators=(",", ":")) + "\n")
    print(f"wrote {len(evs)} events ({out.stat().st_size / 1e6:.2f} MB) to {out}; stories: {injected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
