"""The baseline detector end to end: ``kestrel run`` (a real process) over a
JSONL trace, then ``kestrel replay`` of the same trace recorded as a .klog;
the snapshot file carries what was learned into the next run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

T0 = 1_767_600_000  # 2026-01-05T08:00:00Z


def stamp(i: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(T0 + i, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def exec_ev(i: int, host: str, name: str, parent: str, args: list[str], container: str | None = None) -> dict:
    ev = {"@timestamp": stamp(i), "event": {"category": ["process"], "type": ["start"], "action": "exec"},
          "host": {"name": host},
          "process": {"pid": 1000 + i, "name": name, "executable": f"/usr/bin/{name}", "args": args,
                      "parent": {"pid": 900, "name": parent, "executable": f"/usr/sbin/{parent}"}}}
    if container:
        ev["container"] = {"id": container}
    return ev


def connect_ev(i: int, host: str, name: str, ip: str, port: int) -> dict:
    return {"@timestamp": stamp(i), "event": {"category": ["network"], "type": ["connection"],
                                               "action": "connection_attempted"},
            "host": {"name": host}, "process": {"pid": 900, "name": name},
            "destination": {"ip": ip, "port": port}}


def open_ev(i: int, host: str, name: str, path: str) -> dict:
    return {"@timestamp": stamp(i), "event": {"category": ["file"], "type": ["access"], "action": "open"},
            "host": {"name": host}, "process": {"pid": 900, "name": name}, "file": {"path": path}}


WARMUP = 10
"""Events per host learned before deviations alert (warmup_events)."""


def warmup_trace() -> list[dict]:
    ev = [exec_ev(0, "web-1", "nginx", "systemd", ["nginx", "-g", "daemon off;"])]
    for n in range(3):
        ev.append(exec_ev(1 + n, "web-1", "nginx", "nginx", ["nginx", "-g", "daemon off;"]))
    for n in range(3):
        ev.append(connect_ev(4 + n, "web-1", "nginx", "10.0.0.5", 5432))
    for n in range(3):
        ev.append(open_ev(7 + n, "web-1", "nginx", f"/var/log/nginx/access.log.{n}"))
    assert len(ev) == WARMUP
    return ev


def after_trace(start: int) -> list[dict]:
    """Repeats of learned behaviour, then a new child and a new peer (and their repeats)."""
    i = start
    return [
        exec_ev(i, "web-1", "nginx", "nginx", ["nginx", "-g", "daemon off;"]),    # learned child: no alert
        connect_ev(i + 1, "web-1", "nginx", "10.0.0.5", 5432),                   # learned peer: no alert
        open_ev(i + 2, "web-1", "nginx", "/var/log/nginx/error.log"),            # learned prefix: no alert
        exec_ev(i + 3, "web-1", "sh", "nginx", ["sh", "-c", "id"]),              # new child
        connect_ev(i + 4, "web-1", "nginx", "203.0.113.9", 4444),                # new peer
        connect_ev(i + 5, "web-1", "nginx", "203.0.113.9", 4444),                # its repeat: alerted once
        exec_ev(i + 6, "web-1", "sh", "nginx", ["sh", "-c", "id"]),              # repeat of the new child
    ]


def write_jsonl(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def write_profile(tmp: Path, source: str, alerts: str, extra: str = "") -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    prof = tmp / "baseline.toml"
    prof.write_text(f"""
[kestrel]
plugins = ["detector-baseline"]

[rules]
paths = ["rules"]

{source}

[[sinks]]
type = "jsonl"
path = "{alerts}"

[[detectors]]
type = "baseline"
snapshot = "state/baseline.json"
warmup = ""
warmup_events = {WARMUP}
{extra}
""", encoding="utf-8")
    return prof


def kestrel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def alerts_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_jsonl(tmp: Path, trace: Path, alerts: str) -> list[dict]:
    prof = write_profile(tmp, f'[[sources]]\ntype = "jsonl"\npath = "{trace.name}"', alerts)
    proc = kestrel("run", "--profile", str(prof), cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return alerts_of(tmp / alerts)


def summary(alerts: list[dict]) -> list[tuple[str, str]]:
    return [(a["rule"]["id"], a["fields"]["baseline.reason"]) for a in alerts]


EXPECTED = [
    ("baseline.new_child", "nginx spawned sh; learned children of nginx: nginx(4)"),
    ("baseline.new_peer", "nginx connected to 203.0.113.9:4444; learned peers of nginx: 10.0.0.5:5432(4)"),
]


def test_run_learns_then_flags_new_child_and_peer_not_repeats(tmp_path):
    trace = write_jsonl(tmp_path / "trace.jsonl", warmup_trace() + after_trace(WARMUP))
    alerts = run_jsonl(tmp_path, trace, "alerts.jsonl")
    assert summary(alerts) == EXPECTED
    child = alerts[0]
    assert child["events"][0]["process"]["name"] == "sh"
    assert child["fields"]["baseline.process"] == "nginx" and child["fields"]["host.name"] == "web-1"
    snap = json.loads((tmp_path / "state" / "baseline.json").read_text())
    (scope,) = snap["scopes"]
    assert scope["host"] == "web-1" and scope["learning"] is False and scope["learned_events"] == WARMUP
    assert set(scope["processes"]["nginx"]["children"]) == {"nginx", "sh"}  # the deviation was adopted
    assert not list((tmp_path / "state").glob(".*.tmp")), "a temp file of the atomic write was left behind"


def test_snapshot_survives_a_restart_and_is_not_relearned(tmp_path):
    write_jsonl(tmp_path / "warm.jsonl", warmup_trace())
    assert run_jsonl(tmp_path, tmp_path / "warm.jsonl", "a1.jsonl") == []
    snap = tmp_path / "state" / "baseline.json"
    first = json.loads(snap.read_text())
    assert first["scopes"][0]["learning"] is True and first["scopes"][0]["learned_events"] == WARMUP
    # Second process: the warm-up is already complete (10 events), so the very
    # next event is checked, not learned.
    write_jsonl(tmp_path / "after.jsonl", after_trace(WARMUP))
    alerts = run_jsonl(tmp_path, tmp_path / "after.jsonl", "a2.jsonl")
    assert summary(alerts) == EXPECTED
    second = json.loads(snap.read_text())
    assert second["scopes"][0]["learned_events"] == WARMUP, "the second run learned again"
    assert second["counters"]["snapshot_reloaded"] == 1
    # A third run of the same deviations: all adopted, nothing alerts.
    assert run_jsonl(tmp_path, tmp_path / "after.jsonl", "a3.jsonl") == []


def test_replay_of_a_klog_gives_the_same_alerts_as_run(tmp_path):
    trace = write_jsonl(tmp_path / "trace.jsonl", warmup_trace() + after_trace(WARMUP))
    rec = kestrel("record", "--input", str(trace), "-o", str(tmp_path / "trace.klog"), cwd=tmp_path)
    assert rec.returncode == 0, rec.stderr
    prof = write_profile(tmp_path, "", "unused.jsonl")
    outs = []
    for n in (1, 2):
        (tmp_path / "state" / "baseline.json").unlink(missing_ok=True)
        out = tmp_path / f"replay{n}.jsonl"
        proc = kestrel("replay", str(tmp_path / "trace.klog"), "-r", "rules", "--profile", str(prof), "-o", str(out),
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1], "replay with the baseline is not byte-identical"
    lines = [json.loads(x) for x in outs[0].splitlines()]
    assert summary(lines[1:-1]) == EXPECTED
    assert lines[-1]["detectors"] == ["baseline"] and lines[-1]["detector_errors"] == {}
    # the same alerts as a live run over the JSONL
    (tmp_path / "state" / "baseline.json").unlink()
    assert summary(run_jsonl(tmp_path, trace, "run.jsonl")) == EXPECTED
    # and a second replay reloads the snapshot the first left: nothing is re-learned or re-alerted
    proc = kestrel("replay", str(tmp_path / "trace.klog"), "-r", "rules", "--profile", str(prof), "-o",
                   str(tmp_path / "again.jsonl"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    again = [json.loads(x) for x in (tmp_path / "again.jsonl").read_bytes().splitlines()]
    assert again[-1]["counts"]["alerts"] == 0


def test_damaged_snapshot_is_reported_moved_aside_and_not_trusted(tmp_path):
    (tmp_path / "state").mkdir()
    snap = tmp_path / "state" / "baseline.json"
    snap.write_text('{"kestrel_baseline": 1, "shape": {}, "scopes": [{"host": "web-1", "learning": "no"}]}')
    trace = write_jsonl(tmp_path / "trace.jsonl", warmup_trace() + after_trace(WARMUP))
    prof = write_profile(tmp_path, '[[sources]]\ntype = "jsonl"\npath = "trace.jsonl"', "alerts.jsonl")
    proc = kestrel("run", "--profile", str(prof), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{snap}: scope 'web-1'" in proc.stderr and "damaged" in proc.stderr, proc.stderr
    assert (tmp_path / "state" / "baseline.json.damaged").exists()
    assert summary(alerts_of(tmp_path / "alerts.jsonl")) == EXPECTED  # learned afresh
    assert json.loads(snap.read_text())["counters"]["snapshot_damaged"] == 1


def test_node_cap_is_counted(tmp_path):
    names = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
    trace = write_jsonl(tmp_path / "trace.jsonl", [
        open_ev(i, "web-1", "nginx", f"/srv/{n}/index.html") for i, n in enumerate(names)])
    prof = write_profile(tmp_path, '[[sources]]\ntype = "jsonl"\npath = "trace.jsonl"', "alerts.jsonl",
                         "max_nodes_per_scope = 4\npath_depth = 2")
    proc = kestrel("run", "--profile", str(prof), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    snap = json.loads((tmp_path / "state" / "baseline.json").read_text())
    (scope,) = snap["scopes"]
    assert scope["nodes"] == 4  # nginx and its first 3 prefixes
    assert sorted(scope["processes"]["nginx"]["paths"]) == ["/srv/alpha", "/srv/beta", "/srv/gamma"]
    assert scope["capped"] == snap["counters"]["nodes_capped"] == 5


@pytest.mark.parametrize("entry, message", [
    ('type = "baselin"', "did you mean 'baseline'?"),
    ('type = "baseline"\nwarmup_evnts = 3', "unknown key 'warmup_evnts'"),
    ('type = "baseline"\nwarmup = "soon"', "warmup must be a duration"),
    ('type = "baseline"\nwarmup = ""', "warmup and warmup_events are both off"),
])
def test_bad_detector_entries_are_located_profile_errors(tmp_path, entry, message):
    prof = tmp_path / "p.toml"
    prof.write_text(f'[kestrel]\nplugins = ["detector-baseline"]\n\n[[detectors]]\n{entry}\n', encoding="utf-8")
    proc = kestrel("profile", "check", str(prof), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{prof}:5:" in proc.stderr or f"{prof}:6:" in proc.stderr, proc.stderr
    assert message in proc.stderr


# --------------------------------------------------------------------------- kestrel baseline show|diff


def _snapshots(tmp_path):
    write_jsonl(tmp_path / "warm.jsonl", warmup_trace())
    run_jsonl(tmp_path, tmp_path / "warm.jsonl", "a1.jsonl")
    a = tmp_path / "a.json"
    a.write_bytes((tmp_path / "state" / "baseline.json").read_bytes())
    write_jsonl(tmp_path / "after.jsonl", after_trace(WARMUP))
    run_jsonl(tmp_path, tmp_path / "after.jsonl", "a2.jsonl")
    b = tmp_path / "b.json"
    b.write_bytes((tmp_path / "state" / "baseline.json").read_bytes())
    return a, b


def test_show_and_diff(tmp_path):
    a, b = _snapshots(tmp_path)
    show = kestrel("baseline", "show", str(b), cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    out = show.stdout
    assert "web-1: learned from 10 events until 2026-01-05T08:00:10Z" in out
    assert "  nginx (15)\n" in out and "  systemd (0)\n    child nginx (1)" in out
    assert "    child nginx (4) args: -g daemon off;(4)" in out
    assert "    child sh (2) args: -c id(2)" in out
    assert "    peers: 10.0.0.5:5432(4), 203.0.113.9:4444(2)" in out
    assert "    paths: /var/log/nginx(4)" in out
    as_json = json.loads(kestrel("baseline", "show", str(b), "--json", cwd=tmp_path).stdout)
    assert as_json["scopes"][0]["processes"]["nginx"]["peers"]["203.0.113.9:4444"] == 2

    diff = kestrel("baseline", "diff", str(a), str(b), cwd=tmp_path)
    assert diff.returncode == 1, diff.stderr  # they differ
    assert diff.stdout.splitlines() == [
        "scope web-1:",
        "  + nginx child sh (2)",
        "  + nginx peer 203.0.113.9:4444 (2)",
    ]
    same = kestrel("baseline", "diff", str(b), str(b), cwd=tmp_path)
    assert same.returncode == 0 and same.stdout == ""


def test_show_of_a_damaged_snapshot_names_it_and_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kestrel_baseline": 1, "shape": {}, "scopes": [{"host": "h", "container": null, '
                   '"last_ts_ns": 0, "events": 1, "learned_events": 1, "nodes": 5, "capped": 0, "learning": false, '
                   '"processes": {}}]}')
    proc = kestrel("baseline", "show", str(bad), cwd=tmp_path)
    assert proc.returncode == 3
    assert f"{bad}: scope 'h': says 5 nodes, holds 0" in proc.stderr
    (tmp_path / "torn.json").write_text('{"kestrel_baseline": 1, "sha')
    proc = kestrel("baseline", "show", str(tmp_path / "torn.json"), cwd=tmp_path)
    assert proc.returncode == 3 and "torn.json: not JSON" in proc.stderr
    proc = kestrel("baseline", "show", str(tmp_path / "missing.json"), cwd=tmp_path)
    assert proc.returncode == 2 and "missing.json" in proc.stderr
