"""Incidents (kestrel_core/incidents.py, docs/incidents.md): the demo
capture's alerts correlate into one incident per scripted attack story, with
no benign event in any, byte-identically across processes and the same in a
live run as in replay; the life cycle, the storyline rules and the risk."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import time
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from kestrel_core.alert import Alert
from kestrel_core.incidents import TACTICS, Correlator, combined_risk, tactic_of
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.runtime import RunContext
from kestrel_core.schema import Schema

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "rules" / "linux"
KLOG = ROOT / "demo" / "capture.klog"


@lru_cache(maxsize=1)
def _stories() -> dict[str, set[str]]:
    """story name -> the event.id of each of its events (what demo/build_capture.py scripted)."""
    spec = importlib.util.spec_from_file_location("build_capture", ROOT / "demo" / "build_capture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _, placed = mod.build()
    assert len(placed) == len(mod.STORIES)
    return {name: set(info["event_ids"]) for name, info in placed.items()}


def _replay_bytes(seed: str) -> bytes:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "replay", str(KLOG), "--rules", str(PACK),
                           "--incidents"], capture_output=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@lru_cache(maxsize=1)
def _demo_output() -> bytes:
    return _replay_bytes("1")


def _final(records: list[dict]) -> list[dict]:
    """The incidents as they closed (not those merged into another)."""
    return [r["incident"] for r in records if r["incident"]["status"] == "closed"
            and r["incident"]["reason"] != "merged"]


def test_demo_replay_gives_one_incident_per_story_without_benign_events():
    lines = [json.loads(line) for line in _demo_output().splitlines()]
    alerts = [line for line in lines[1:-1] if "rule" in line]
    records = [line for line in lines[1:-1] if "incident" in line]
    assert len(alerts) + len(records) == len(lines) - 2
    stories = _stories()
    story_of = {eid: name for name, ids in stories.items() for eid in ids}
    final = _final(records)
    assert len(final) == len(stories) == 15
    assert len({inc["id"] for inc in final}) == 15
    assert lines[-1]["incidents"]["closed"] == len(final)

    # the alerts each story completes (demo/README.md: every alert's last event is a story event)
    by_story: dict[str, list[dict]] = {}
    for a in alerts:
        by_story.setdefault(story_of[a["events"][-1]["event"]["id"]], []).append(a)
    matched = set()
    for inc in final:
        linked = {e["id"] for t in inc["timeline"] for e in t["events"] if e["linked"]}
        owners = {story_of.get(eid, "benign") for eid in linked}
        assert len(owners) == 1 and "benign" not in owners, (inc["id"], owners)
        (story,) = owners
        matched.add(story)
        # every event an incident links as evidence is one of its story's events
        assert linked <= stories[story]
        # an event outside the storyline is never what completed an alert
        for t in inc["timeline"]:
            assert t["events"][-1]["linked"]
        # all of the story's alerts, in the order they were raised
        expected = by_story[story]
        assert [t["rule"] for t in inc["timeline"]] == [a["rule"]["id"] for a in expected]
        assert inc["alerts"] == len(expected)
        # tactics: in the order they first appear in the alerts' tags
        tactics = list(dict.fromkeys(t for a in expected for t in map(tactic_of, a["rule"]["tags"]) if t))
        assert inc["tactics"] == tactics and tactics and set(tactics) <= set(TACTICS)
        # risk: one per rule (its highest), combined as independent evidence
        per_rule: dict[str, float] = {}
        for a in expected:
            per_rule[a["rule"]["id"]] = max(per_rule.get(a["rule"]["id"], 0), a["rule"]["risk_score"])
        assert inc["risk_score"] == pytest.approx(100 * (1 - math.prod(1 - r / 100 for r in per_rule.values())),
                                                  abs=0.01)
        hosts = {e["host"]["name"] for a in expected for e in a["events"]}
        assert hosts == {inc["host"]["name"]}
    assert matched == set(stories)


def test_demo_incidents_are_byte_identical_across_processes():
    other, first = _replay_bytes("4242").splitlines(), _demo_output().splitlines()
    assert other[1:-1] == first[1:-1]  # every alert and incident line, byte for byte
    assert any(b'"incident"' in line for line in other)

    def ident(line: bytes) -> dict:  # engine_build_id hashes the source: it changes if code is edited meanwhile
        d = json.loads(line)
        d.pop("engine_build_id")
        return d

    assert ident(other[0]) == ident(first[0]) and ident(other[-1]) == ident(first[-1])


def test_stories_sharing_a_host_stay_apart_and_a_planted_job_joins_its_dropper():
    """web-0003, db-0002, app-0001 and build-0015 each hold two stories: apart.
    The miner's cron job runs 5 min later under cron (another tree): joined by
    the address its command line shares with the dropper's."""
    lines = [json.loads(line) for line in _demo_output().splitlines()]
    final = _final([line for line in lines if "incident" in line])
    per_host: dict[str, int] = {}
    for inc in final:
        per_host[inc["host"]["name"].split(".")[0]] = per_host.get(inc["host"]["name"].split(".")[0], 0) + 1
    assert {h: n for h, n in per_host.items() if n > 1} == {"web-0003": 2, "db-0002": 2, "app-0001": 2,
                                                            "build-0015": 2}
    (miner,) = [inc for inc in final if "kestrel.linux.crypto_miner" in inc["rules"]]
    cron_job = [p for p in miner["processes"] if p["name"] == "cron"]
    assert cron_job and cron_job[0]["context"]
    assert miner["rules"].count("kestrel.linux.download_piped_to_shell") == 1  # listed once, raised twice
    assert sum(t["rule"] == "kestrel.linux.download_piped_to_shell" for t in miner["timeline"]) == 2
    # the setuid copy: written by root's session, run by deploy's: one incident over two sessions
    (setuid,) = [inc for inc in final if "kestrel.linux.setuid_bit_set" in inc["rules"]]
    sessions = [p for p in setuid["processes"] if (p["command_line"] or "").startswith("'sshd: ")]
    assert len(sessions) == 2


# --------------------------------------------------------------------------- the correlator on its own

SCHEMA = Schema.ecs()
NORM = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), RunContext(schema=SCHEMA))
S = 1_000_000_000


def _ev(t: float, ent: str, parent: str | None, name: str, action: str = "exec", host: str = "h1", **extra):
    doc = {"@timestamp": f"2026-01-05T08:{int(t) // 60:02d}:{t % 60:09.6f}Z",
           "event": {"category": ["process"], "type": ["start"], "action": action},
           "host": {"name": host}, "process": {"entity_id": ent, "pid": abs(hash(ent)) % 30000, "name": name}}
    if parent:
        doc["process"]["parent"] = {"entity_id": parent}
    for k, v in extra.items():
        doc.setdefault(k, {}).update(v)
    return NORM.normalize(doc, "t")


def _alert(ev, rule: str = "r1", risk: int = 50, tags=("execution",)) -> Alert:
    return Alert(rule_id=rule, rule_name=rule, severity="high", risk_score=risk, tags=tuple(tags), events=[ev],
                 ts_mono_ns=ev.ts_mono_ns, ts_wall_ns=ev.ts_wall_ns)


def test_life_cycle_open_update_close_in_event_time():
    c = Correlator(SCHEMA, window_s=60)
    shell = _ev(0, "sh", None, "bash")
    c.observe([shell])
    a = _ev(1, "a", "sh", "id")
    b = _ev(30, "b", "sh", "uname")
    c.observe([a, b])
    (opened,) = c.add(_alert(a, "r1", 40, ("discovery",)))
    assert opened["incident"]["status"] == "opened"
    (updated,) = c.add(_alert(b, "r2", 50, ("execution", "discovery")))
    assert updated["incident"]["status"] == "updated" and updated["incident"]["id"] == opened["incident"]["id"]
    assert updated["incident"]["tactics"] == ["discovery", "execution"]
    assert updated["incident"]["risk_score"] == combined_risk([40, 50]) == 70.0
    assert c.tick(b.ts_mono_ns + 59 * S) == []  # still inside the window
    (closed,) = c.tick(b.ts_mono_ns + 61 * S)
    assert closed["incident"]["status"] == "closed" and closed["incident"]["reason"] == "inactive"
    # the same storyline after the close: a new incident with another id
    late = _ev(200, "c", "sh", "cat")
    c.observe([late])
    (again,) = c.add(_alert(late))
    assert again["incident"]["status"] == "opened" and again["incident"]["id"] != opened["incident"]["id"]
    (stop,) = c.close_all()
    assert stop["incident"]["reason"] == "stop" and not c.open


def test_a_long_running_parent_ends_the_storyline():
    """Two jobs of a daemon started long before: two incidents; two commands
    of a shell started just before: one."""
    c = Correlator(SCHEMA, window_s=60)
    daemon = _ev(0, "cron", None, "cron")
    job1, job2 = _ev(120, "j1", "cron", "sh"), _ev(125, "j2", "cron", "sh")
    c.observe([daemon, job1, job2])
    first = c.add(_alert(job1))[-1]["incident"]["id"]
    second = c.add(_alert(job2))[-1]["incident"]["id"]
    assert first != second
    k1, k2 = _ev(126, "k1", "j2", "id"), _ev(127, "k2", "j2", "id")
    c.observe([k1, k2])
    assert c.add(_alert(k1))[-1]["incident"]["id"] == second
    assert c.add(_alert(k2))[-1]["incident"]["id"] == second
    # a process whose start was never seen (running before the capture) joins nothing by ancestry
    orphan1, orphan2 = _ev(128, "o1", "unseen", "sh"), _ev(129, "o2", "unseen", "sh")
    c.observe([orphan1, orphan2])
    assert c.add(_alert(orphan1))[-1]["incident"]["id"] != c.add(_alert(orphan2))[-1]["incident"]["id"]


def test_hosts_never_mix_and_indicators_join_within_a_host():
    c = Correlator(SCHEMA, window_s=600)
    x = _ev(1, "x", None, "curl", host="h1", process={"command_line": "curl http://203.0.113.9/a"})
    y = _ev(2, "y", None, "wget", host="h1", process={"command_line": "wget -q http://203.0.113.9/b"})
    z = _ev(3, "z", None, "wget", host="h2", process={"command_line": "wget -q http://203.0.113.9/b"})
    lo1 = _ev(4, "l1", None, "nc", host="h1", process={"command_line": "nc 127.0.0.1 4444"})
    lo2 = _ev(5, "l2", None, "nc", host="h1", process={"command_line": "nc 127.0.0.1 4444"})
    c.observe([x, y, z, lo1, lo2])
    ids = [c.add(_alert(e))[-1]["incident"]["id"] for e in (x, y, z, lo1, lo2)]
    assert ids[0] == ids[1]  # same host, same address
    assert ids[2] not in ids[:2]  # another host
    assert len({ids[0], ids[3], ids[4]}) == 3  # loopback joins nothing


def test_incident_id_is_derived_from_the_first_alert():
    def run() -> str:
        c = Correlator(SCHEMA)
        e = _ev(1, "p", None, "sh")
        c.observe([e])
        return c.add(_alert(e))[0]["incident"]["id"]

    assert run() == run() and run().startswith("inc-")


def test_tactics_and_risk_helpers():
    assert tactic_of("command_and_control") == "command_and_control"
    assert tactic_of("Defense-Evasion") == "defense_evasion"
    assert tactic_of("TA0003") == "persistence"
    assert tactic_of("T1105") is None and tactic_of("linux") is None
    assert combined_risk([]) == 0.0
    assert combined_risk([99, 99]) == 99.99
    assert combined_risk([150]) == 100.0


# --------------------------------------------------------------------------- live run, sinks

LIVE_PROFILE = """
[kestrel]
mode = "replay"

[rules]
paths = ["{pack}"]

[incidents]
enable = true

[[sources]]
type = "klog"
path = "{klog}"

[[sinks]]
type = "jsonl"
path = "out.jsonl"

[[sinks]]
type = "console"
show_fields = false
"""


def _by_incident(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["incident"]["id"], []).append(r)
    return out


def test_a_live_run_gives_the_incidents_replay_gives(tmp_path):
    """kestrel run (klog source, jsonl and console sinks, [incidents] enable)
    over the demo capture: the same incident records as kestrel replay, each
    after the alert that caused it; the console shows the trees."""
    profile = tmp_path / "p.toml"
    profile.write_text(LIVE_PROFILE.format(pack=PACK, klog=KLOG))
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "run", "--profile", str(profile)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    live = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    replayed = [json.loads(line) for line in _demo_output().splitlines()][1:-1]
    live_records = [line for line in live if "incident" in line]
    assert _by_incident(live_records) == _by_incident([line for line in replayed if "incident" in line])
    assert len(_final(live_records)) == 15
    # an opened or updated record comes right after its alert, live as in replay
    for lines in (live, replayed):
        for i, line in enumerate(lines):
            if "incident" in line and line["incident"]["status"] != "closed":
                prev = next(p for p in reversed(lines[:i]) if "rule" in p)
                assert prev["rule"]["id"] == line["incident"]["timeline"][-1]["rule"]
    # the console: a line per opened incident, a tree per closed one, with the alerts on their processes
    out = proc.stdout
    assert out.count("INCIDENT inc-") == 16 + 15
    assert "incidents: 15 closed (16 opened, 1 merged into another)" in proc.stderr  # the stop summary
    assert "└─ .b (pid 4284) /dev/shm/.b -p  ! seq_download_tool_then_tmp_exec  ! dropper_chain  ! exec_from_tmp" in out
    assert "tactics credential_access > collection > discovery" in out


def test_a_sink_without_write_incident_is_not_sent_records():
    from kestrel_core.delivery import Delivery, SinkWorker
    from kestrel_core.interfaces import Sink
    from kestrel_core.runtime import Stats

    class Old(Sink):
        PLUGIN_NAME = "old"

        def write_alert(self, alert):
            self.got.append(("alert", alert.rule_id))

    class New(Old):
        PLUGIN_NAME = "new"

        def write_incident(self, record):
            self.got.append(("incident", record["incident"]["id"]))

    c = Correlator(SCHEMA)
    e = _ev(1, "p", None, "sh")
    c.observe([e])
    alert = _alert(e)
    (record,) = c.add(alert)
    stats = Stats()
    for cls, expect in ((Old, [("alert", "r1")]), (New, [("alert", "r1"), ("incident", record["incident"]["id"])])):
        sink = cls(None, None)
        sink.got = []
        worker = SinkWorker(sink, cls.PLUGIN_NAME, Delivery(), stats)
        worker.start()
        worker.put_alert(alert)
        worker.put_incident(record)
        worker.finish()
        assert worker.wait(time.monotonic() + 10)
        assert sink.got == expect and worker.takes_incidents == (cls is New)
    assert not stats.sink_dropped


def test_webhook_posts_each_closed_incident_once(tmp_path):
    """A real HTTP receiver: the webhook sink POSTs the 77 alerts and the 15
    closed incidents (one JSON object each, as the replay writes them)."""
    import http.server
    import threading

    bodies: list = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                bodies.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        profile = tmp_path / "p.toml"
        profile.write_text(LIVE_PROFILE.format(pack=PACK, klog=KLOG).split("[[sinks]]")[0] +
                           f'[[sinks]]\ntype = "webhook"\nurl = "http://127.0.0.1:{server.server_address[1]}/h"\n')
        proc = subprocess.run([sys.executable, "-m", "kestrel_core", "run", "--profile", str(profile)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    finally:
        server.shutdown()
        server.server_close()
    incidents = [b["incident"] for b in bodies if "incident" in b]
    assert sum("rule" in b for b in bodies) == 77
    replayed = _final([json.loads(line) for line in _demo_output().splitlines() if b'"incident"' in line])
    assert sorted(incidents, key=lambda i: i["id"]) == sorted(replayed, key=lambda i: i["id"])


def test_bounded_state_timeline_cap_and_links_forgotten_on_close():
    c = Correlator(SCHEMA, window_s=60, max_timeline=3)
    shell = _ev(0, "sh", None, "bash")
    kids = [_ev(1 + i, f"k{i}", "sh", "id") for i in range(5)]
    c.observe([shell, *kids])
    for i, k in enumerate(kids):
        rec = c.add(_alert(k, f"r{i}", 10))[-1]["incident"]
    assert rec["alerts"] == 5 and len(rec["timeline"]) == 3 and rec["timeline_dropped"] == 2
    assert rec["rules"] == [f"r{i}" for i in range(5)]  # every rule still counts in the risk
    assert rec["risk_score"] == combined_risk([10] * 5)
    assert c.counts["timeline_dropped"] == 2
    assert c._by_root
    c.close_all()
    assert not c._by_root and not c._by_indicator and not c.open


def test_a_failing_correlation_is_logged_counted_and_detection_goes_on(caplog):
    c = Correlator(SCHEMA)
    good = _ev(1, "p", None, "sh")
    c.observe([good])

    class Broken:
        category = "process"
        ts_mono_ns = ts_wall_ns = event_id = 0
        fields = None  # .get raises AttributeError

    bad = Alert(rule_id="r", rule_name="r", events=[Broken()], ts_mono_ns=1)
    with caplog.at_level("ERROR", logger="kestrel"):
        assert c.add(bad) == []
        c.observe([Broken()])
    assert c.counts["errors"] == 2
    assert "incidents: add failed" in caplog.text
    assert c.add(_alert(good))[0]["incident"]["status"] == "opened"  # the next alert still correlates


def test_stop_summary_line():
    from kestrel_core.incidents import incidents_summary

    c = Correlator(SCHEMA)
    e = _ev(1, "p", None, "sh")
    c.observe([e])
    c.add(_alert(e))
    c.close_all()
    assert incidents_summary(c.counts) == "incidents: 1 closed (1 opened)"


@pytest.mark.parametrize("body, message", [
    ("window_s = 0", "window_s must be positive"),
    ("enable = \"yes\"", "boolean"),
    ("windows = 60", "windows"),
])
def test_incidents_section_errors_are_located(tmp_path, body, message):
    from kestrel_core.profile import ProfileError
    from kestrel_core.startup import load_profile

    path = tmp_path / "p.toml"
    path.write_text('[[sources]]\ntype = "jsonl"\npath = "-"\n\n[incidents]\n' + body + "\n")
    with pytest.raises(ProfileError) as err:
        load_profile(str(path))
    assert err.value.line == 6 and err.value.column >= 1, str(err.value)
    assert message in str(err.value) and str(err.value).startswith(f"{path}:6:")


def test_an_exec_in_place_keeps_the_names_the_process_had():
    c = Correlator(SCHEMA)
    sh = _ev(0, "p", None, "perl", process={"executable": "/usr/bin/perl"})
    again = _ev(1, "p", None, "[kworker/0:1]", process={"executable": "/memfd: (deleted)"})
    c.observe([sh, again])
    (rec,) = c.add(_alert(again))
    (proc,) = rec["incident"]["processes"]
    assert proc["name"] == "[kworker/0:1]" and proc["execs"] == ["perl"]


def test_an_event_in_a_storyline_the_incident_already_holds_is_linked():
    """Two sessions joined by a file (artifact); a later sequence pairing an
    event of each is linked on both sides."""
    from kestrel_core.alert import Alert

    c = Correlator(SCHEMA, window_s=60)
    sshd = _ev(0, "sshd", None, "sshd")
    s1, s2 = _ev(100, "s1", "sshd", "bash"), _ev(150, "s2", "sshd", "bash")
    w = _ev(101, "w", "s1", "cp", action="creation", file={"path": "/dev/shm/.b"})
    r = _ev(151, "r", "s2", ".b", process={"executable": "/dev/shm/.b"})
    c.observe([sshd, s1, s2, w, r])
    c.add(_alert(w))
    pair = Alert(rule_id="seq", rule_name="seq", risk_score=50, events=[w, r], ts_mono_ns=r.ts_mono_ns,
                 ts_wall_ns=r.ts_wall_ns)
    joined = c.add(pair)[-1]["incident"]
    assert [e["linked"] for e in joined["timeline"][-1]["events"]] == [True, True]  # by the shared file
    later = _ev(152, "l", "s1", "id")
    c.observe([later])
    by_user = Alert(rule_id="u", rule_name="u", risk_score=50, events=[later, r], ts_mono_ns=r.ts_mono_ns + 1,
                    ts_wall_ns=r.ts_wall_ns + 1)
    rec = c.add(by_user)[-1]["incident"]
    assert rec["id"] == joined["id"] and [e["linked"] for e in rec["timeline"][-1]["events"]] == [True, True]
    assert rec["roots"] == ["s1", "s2"]


def test_jsonl_sink_writes_incident_lines_among_alerts(tmp_path):
    from kestrel_core.builtins.jsonl import JsonlAlertSink
    from kestrel_core.testing import make_alert, make_context, make_incident_records

    sink = JsonlAlertSink(JsonlAlertSink.Settings(path=str(tmp_path / "a.jsonl")), make_context())
    records = make_incident_records(sink.context)
    sink.open()
    sink.write_alert(make_alert(sink.context))
    sink.write_incident(records[0])
    sink.write_incident(records[-1])
    sink.close()
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [next(iter(r)) for r in rows] == ["rule", "incident", "incident"]
    assert rows[1] == json.loads(json.dumps(records[0])) and rows[2]["incident"]["status"] == "closed"


def test_a_quiet_run_closes_incidents_on_the_events_clock(tmp_path):
    """No more events: the idle tick (the events' clock advanced by the time
    elapsed since the last batch) closes an incident after its window."""
    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run

    rules = tmp_path / "r.toml"
    rules.write_text('id = "t.sh"\nname = "sh"\nquery = \'process where process.name == "sh"\'\n')
    profile = tmp_path / "p.toml"
    profile.write_text(f'[rules]\npaths = ["{rules}"]\n[incidents]\nenable = true\nwindow_s = 0.3\n'
                       '[[sources]]\ntype = "jsonl"\npath = "-"\n[[sinks]]\ntype = "jsonl"\npath = "out.jsonl"\n')
    job = Run.build(*load_profile(str(profile)))
    job.open()
    try:
        ev = _ev(1, "p", None, "sh")
        job._process([ev])
        assert job.incidents.open
        deadline = time.monotonic() + 10
        while job.incidents.open and time.monotonic() < deadline:
            job._idle()
            time.sleep(0.05)
        assert not job.incidents.open and job.incidents.counts["closed"] == 1
    finally:
        job._finish()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["incident"]["status"] for r in lines if "incident" in r] == ["opened", "closed"]
    assert lines[-1]["incident"]["reason"] == "inactive"


def test_containers_are_scopes_of_their_own():
    c = Correlator(SCHEMA, window_s=600)
    cmd = {"command_line": "curl http://203.0.113.9/a"}
    a = _ev(1, "a", None, "curl", process=cmd, container={"id": "c1"})
    b = _ev(2, "b", None, "curl", process=cmd, container={"id": "c2"})
    d = _ev(3, "d", None, "curl", process=cmd, container={"id": "c1"})
    c.observe([a, b, d])
    recs = [c.add(_alert(e))[-1]["incident"] for e in (a, b, d)]
    assert recs[0]["id"] == recs[2]["id"] != recs[1]["id"]
    assert recs[0]["container"] == {"id": "c1"} and recs[1]["container"] == {"id": "c2"}
    assert recs[0]["host"] == {"name": "h1"}


def test_the_session_leader_stands_in_for_an_unknown_parent():
    """A process reported without a parent (a source that gives only the
    session) joins its session leader's storyline when that started recently."""
    c = Correlator(SCHEMA, window_s=60)
    leader = _ev(0, "L", None, "bash")
    x = _ev(5, "x", None, "id", process={"session_leader": {"entity_id": "L"}})
    y = _ev(6, "y", None, "whoami", process={"session_leader": {"entity_id": "L"}})
    c.observe([leader, x, y])
    assert c.root(c._scope(x), "x") == "L"
    assert c.add(_alert(x))[-1]["incident"]["id"] == c.add(_alert(y))[-1]["incident"]["id"]
