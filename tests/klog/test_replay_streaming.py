"""``kestrel replay`` in bounded memory: the window path on a log in time
order, the external sort (spilling runs) on one whose frames are not, and the
same bytes whichever path ran and whatever the memory budget."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.generate import Generator, strip_private
from kestrel_core import replay as replay_mod
from kestrel_core.klog import KlogReader, KlogWriter
from kestrel_core.replay import replay

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules" / "linux"


def kestrel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], capture_output=True, timeout=300,
                          env=dict(os.environ, PYTHONHASHSEED="0"))


@pytest.fixture(scope="module")
def generated_log(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gen")
    g = Generator(seed=11, hosts=50)
    with open(d / "stream.jsonl", "w") as f:
        for ev in g.generate(6000):
            f.write(json.dumps(strip_private(ev), separators=(",", ":")) + "\n")
    proc = kestrel("record", "--input", str(d / "stream.jsonl"), "-o", str(d / "stream.klog"))
    assert proc.returncode == 0, proc.stderr
    return d / "stream.klog"


def run(logs: list[Path], **kw) -> tuple[bytes, dict, list]:
    buf = io.BytesIO()
    result = replay(logs, [PACK], buf, **kw)
    return buf.getvalue(), result.stats, result.alerts


def test_tiny_budget_gives_the_default_bytes(generated_log):
    default = kestrel("replay", str(generated_log), "--rules", str(PACK))
    assert default.returncode == 0, default.stderr
    assert b"replay order: window path" in default.stderr
    budget1 = kestrel("replay", str(generated_log), "--rules", str(PACK), "--memory-budget", "1")
    assert budget1.returncode == 0, budget1.stderr
    assert budget1.stdout == default.stdout
    # the external sort, spilling many runs, writes the same bytes as the window path
    spilled, stats, alerts = run([generated_log], path="sort", memory_budget_mb=0.05)
    assert stats["path"] == "sort" and stats["runs_spilled"] > 5, stats
    assert alerts and spilled == default.stdout


def test_bad_budget_is_refused(generated_log):
    proc = kestrel("replay", str(generated_log), "--rules", str(PACK), "--memory-budget", "0")
    assert proc.returncode != 0 and b"--memory-budget" in proc.stderr


def test_frames_out_of_time_order_take_the_sort_path(generated_log, tmp_path, monkeypatch):
    # two sources interleaved with skew: frames of source b lag 1500 events behind those of source a
    with KlogReader(generated_log, documents=True) as reader:
        events = list(reader.records())
        schema = reader.schema
    lag = 1500
    a = [e for i, e in enumerate(events) if i % 2 == 0]
    b = [e for i, e in enumerate(events) if i % 2 == 1]
    for e in a:
        e.source_id = "a"
    for e in b:
        e.source_id = "b"
    skewed = tmp_path / "skewed.klog"
    with KlogWriter(skewed, schema, events_per_frame=100) as w:
        w.write_events(a[:lag])
        for start in range(0, max(len(a), len(b)), 100):
            w.write_events(a[lag + start:lag + start + 100])
            w.write_events(b[start:start + 100])
    monkeypatch.setattr(replay_mod, "WINDOW", 64)  # the log is further out of order than that
    out, stats, alerts = run([skewed], memory_budget_mb=0.05)
    assert stats["path"] == "sort" and stats["passes"] == 2 and stats["runs_spilled"] > 1, stats
    in_memory, mstats, _ = run([skewed], path="sort", memory_budget_mb=1024)
    assert mstats["runs_spilled"] == 0 and out == in_memory
    # the engine saw the events in the order of the time-ordered log: the same alerts on the same events
    _, _, ordered = run([generated_log])
    assert alerts
    assert [(x.rule_id, [e.event_id for e in x.events]) for x in alerts] == \
        [(x.rule_id, [e.event_id for e in x.events]) for x in ordered]
