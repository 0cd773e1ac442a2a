"""``kestrel replay``: byte-identical output across processes and hash seeds,
the same alerts as a live run, simulated blocking, gaps flagged, damaged logs
replayed past the damage; ``kestrel record --profile`` and the ``klog`` source."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from kestrel_core.event import Gap
from kestrel_core.klog import KlogReader, KlogWriter
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.schema import SCHEMA_VERSION
from kestrel_core.testing import make_context

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "capture.jsonl"
PACK = ROOT / "rules" / "linux"


def kestrel(*args: str, seed: str = "0", cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], capture_output=True, env=env, cwd=cwd,
                          timeout=300)


def lines(data: bytes) -> list[dict]:
    return [orjson.loads(x) for x in data.splitlines()]


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "capture.klog"
    proc = kestrel("record", "--input", str(DEMO), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def test_replay_is_byte_identical_across_processes_and_hash_seeds(demo_log, tmp_path):
    outs = []
    for seed in ("1", "31337"):
        out = tmp_path / f"alerts-{seed}.jsonl"
        proc = kestrel("replay", str(demo_log), "--rules", str(PACK), "-o", str(out), seed=seed)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    doc = lines(outs[0])
    header, alerts, footer = doc[0], doc[1:-1], doc[-1]
    sha = __import__("hashlib").sha256(demo_log.read_bytes()).hexdigest()
    for part in (header, footer):
        assert part["logs"] == [{"name": "capture.klog", "sha256": sha}]
        assert len(part["rule_pack_hash"]) == 64 and len(part["engine_build_id"]) == 64
        assert part["schema_version"] == SCHEMA_VERSION
    assert footer["counts"]["alerts"] == len(alerts) > 10
    assert footer["counts"]["events"] == len(DEMO.read_bytes().splitlines())
    assert footer["counts"]["incomplete_due_to_loss"] == 0
    assert all(a["mode"] == "replay" for a in alerts)


def test_replay_gives_the_alerts_of_a_live_run(demo_log, tmp_path):
    (tmp_path / "p.toml").write_text(textwrap.dedent(f'''
        [rules]
        paths = ["{PACK}"]
        [[sources]]
        type = "jsonl"
        path = "{DEMO}"
        [[sinks]]
        type = "jsonl"
        path = "live.jsonl"
    '''))
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"))
    assert proc.returncode == 0, proc.stderr
    rep = kestrel("replay", str(demo_log), "--rules", str(PACK))
    assert rep.returncode == 0, rep.stderr

    def essence(alerts: list[dict]) -> list[bytes]:
        return sorted(orjson.dumps([a["rule"]["id"], a["events"], a["join_keys"]]) for a in alerts)

    live = lines((tmp_path / "live.jsonl").read_bytes())
    assert live and essence(live) == essence(lines(rep.stdout)[1:-1])


RULES = {
    "enforced_tmp_exec.toml": '''
        id = "t.tmp_exec"
        name = "exec from /tmp"
        description = "a binary run from /tmp"
        severity = "high"
        mode = "enforce"
        actions = ["alert", "deny-exec"]
        query = 'process where process.executable : "/tmp/*"'
    ''',
    "shadow_nc.toml": '''
        id = "t.nc"
        name = "nc"
        description = "netcat"
        mode = "shadow"
        actions = ["alert", "kill"]
        query = 'process where process.name == "nc"'
    ''',
    "seq.toml": '''
        id = "t.seq"
        name = "curl then chmod"
        description = "download then make executable"
        query = """
        sequence by process.parent.pid
          [process where process.name == "curl"]
          [process where process.name == "chmod"]
        """
    ''',
}


@pytest.fixture
def pack(tmp_path) -> Path:
    d = tmp_path / "pack"
    d.mkdir()
    (d / "pack.toml").write_text('[pack]\nname = "t"\nversion = "1"\npriority = 1\n')
    for name, text in RULES.items():
        (d / name).write_text(textwrap.dedent(text))
    return d


T0 = 1_767_600_000_000_000_000


def proc_doc(ts: int, name: str, exe: str, pid: int, ppid: int = 1) -> dict:
    return {"@timestamp": T0 + ts, "event": {"category": ["process"], "action": "exec"},
            "process": {"name": name, "executable": exe, "pid": pid, "parent": {"pid": ppid}}}


def write_events(path: Path, docs: list[dict], gaps: list[Gap] = (), source: str = "ebpf") -> None:
    ctx = make_context()
    norm = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), ctx)
    events = [norm.normalize(d, source) for d in docs]
    with KlogWriter(path, ctx.schema, events_per_frame=2) as w:
        w.write_events(events[:2])
        for g in gaps:
            w.write_gap(g)
        w.write_events(events[2:])


def test_blocking_actions_are_simulated_and_loss_flags_sequences(tmp_path, pack):
    docs = [proc_doc(10, "curl", "/usr/bin/curl", 10, ppid=1), proc_doc(20, "chmod", "/usr/bin/chmod", 11, ppid=1),
            proc_doc(30, "x", "/tmp/x", 12), proc_doc(40, "nc", "/usr/bin/nc", 13),
            proc_doc(100, "curl", "/usr/bin/curl", 14, ppid=2), proc_doc(200, "chmod", "/usr/bin/chmod", 15, ppid=2)]
    log = tmp_path / "a.klog"
    write_events(log, docs, [Gap("ebpf", 4, T0 + 12, T0 + 15, "overflow")])
    proc = kestrel("replay", str(log), "--rules", str(pack))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    alerts = {(a["rule"]["id"], a["ts_mono_ns"] - T0): a for a in out[1:-1]}
    assert alerts[("t.tmp_exec", 30)]["actions"] == ["would block: deny-exec (process.executable=/tmp/x, "
                                                     "process.pid=12)"]
    assert alerts[("t.nc", 40)]["actions"] == ["would not block: kill (process.pid=13, process.executable="
                                               "/usr/bin/nc) (rule mode shadow)"]
    assert alerts[("t.seq", 20)]["incomplete_due_to_loss"] is True  # window [10, 20] overlaps [12, 15]
    assert alerts[("t.seq", 200)]["incomplete_due_to_loss"] is False
    counts = out[-1]["counts"]
    assert counts == {"events": 6, "gaps": 1, "events_lost": 4, "alerts": 4, "incomplete_due_to_loss": 1,
                      "would_block": 1}


def test_events_are_replayed_in_time_order_whatever_the_file_order(tmp_path, pack):
    docs = [proc_doc(20, "chmod", "/usr/bin/chmod", 11), proc_doc(10, "curl", "/usr/bin/curl", 10)]
    write_events(tmp_path / "a.klog", docs)
    proc = kestrel("replay", str(tmp_path / "a.klog"), "--rules", str(pack))
    assert proc.returncode == 0, proc.stderr
    assert [a["rule"]["id"] for a in lines(proc.stdout)[1:-1]] == ["t.seq"]


def test_two_logs_merge_by_time(tmp_path, pack):
    write_events(tmp_path / "a.klog", [proc_doc(10, "curl", "/usr/bin/curl", 10)], source="ebpf")
    write_events(tmp_path / "b.klog", [proc_doc(20, "chmod", "/usr/bin/chmod", 11)], source="fanotify")
    proc = kestrel("replay", str(tmp_path / "b.klog"), str(tmp_path / "a.klog"), "--rules", str(pack))
    assert proc.returncode == 0, proc.stderr
    out = lines(proc.stdout)
    assert [a["rule"]["id"] for a in out[1:-1]] == ["t.seq"]
    assert [x["name"] for x in out[0]["logs"]] == ["b.klog", "a.klog"]


def test_damaged_log_reports_and_replays_the_rest(demo_log, tmp_path):
    reader = KlogReader(demo_log)
    list(reader.records())
    frames = [f for f in reader.frames if f[3] == 3]
    reader.close()
    data = bytearray(demo_log.read_bytes())
    victim = frames[1]
    data[victim[1] + 40] ^= 0x55
    cut = frames[-1][1] + 100  # and a torn tail
    bad = tmp_path / "bad.klog"
    bad.write_bytes(bytes(data[:cut]))
    proc = kestrel("replay", str(bad), "--rules", str(PACK))
    assert proc.returncode == 3
    err = proc.stderr.decode()
    assert f"frame {victim[0]} damaged" in err and f"file ends at byte {cut}" in err
    footer = lines(proc.stdout)[-1]
    lost = victim[4] + frames[-1][4]
    assert footer["counts"]["events"] == sum(f[4] for f in frames) - lost
    assert len(footer["warnings"]) == 2 and footer["counts"]["alerts"] > 10


def test_broken_rules_are_refused_with_locations(demo_log, tmp_path, pack):
    (pack / "bad.toml").write_text('id = "t.bad"\nname = "bad"\ndescription = "x"\nquery = \'process where ((\'\n')
    proc = kestrel("replay", str(demo_log), "--rules", str(pack))
    assert proc.returncode == 2
    assert "bad.toml:" in proc.stderr.decode() and b"nothing replayed" in proc.stderr


def test_record_a_profile_and_run_the_klog_source(tmp_path):
    src_lines = DEMO.read_bytes().splitlines()[:300]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(src_lines) + b"\n")
    (tmp_path / "rec.toml").write_text('[[sources]]\ntype = "jsonl"\npath = "in.jsonl"\n')
    proc = kestrel("record", "--profile", str(tmp_path / "rec.toml"), "-o", str(tmp_path / "rec.klog"))
    assert proc.returncode == 0, proc.stderr
    exp = kestrel("export", str(tmp_path / "rec.klog"))
    assert exp.returncode == 0, exp.stderr
    assert exp.stdout.splitlines() == [orjson.dumps(orjson.loads(x)) for x in src_lines]

    for kind, path in (("jsonl", "in.jsonl"), ("klog", "rec.klog")):
        (tmp_path / f"{kind}.toml").write_text(textwrap.dedent(f'''
            [rules]
            paths = ["{PACK}"]
            [[sources]]
            type = "{kind}"
            path = "{path}"
            [[sinks]]
            type = "jsonl"
            path = "alerts-{kind}.jsonl"
        '''))
        run = kestrel("run", "--profile", str(tmp_path / f"{kind}.toml"))
        assert run.returncode == 0, run.stderr
    a, b = ((tmp_path / f"alerts-{k}.jsonl").read_bytes() for k in ("jsonl", "klog"))
    assert a and a == b
