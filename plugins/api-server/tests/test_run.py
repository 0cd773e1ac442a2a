"""The sink inside ``kestrel run`` (a subprocess): durability across SIGKILL,
rules from the running engine, refusal to start off loopback without a token."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys

from kestrel_core.testing import wait_for
from kestrel_api_server.testing import SSEClient, proc_event, request


def test_alerts_the_sink_stored_survive_sigkill_and_restart(kestrel_run):
    run = kestrel_run().start()
    stream = SSEClient(run.base, last_event_id=0)
    try:
        run.feed(*[proc_event("nc" if i % 2 else "curl", host=f"h{i}", pid=1000 + i) for i in range(40)])
        # the stream shows an alert only after the store committed it
        seen = [i for i, _ in stream.alerts(40, timeout=30)]
        assert seen == list(range(1, 41))
    finally:
        stream.close()
    run.stop(signal.SIGKILL)
    assert run.proc.returncode == -signal.SIGKILL
    # straight from the file, as a crash left it (WAL not checkpointed)
    conn = sqlite3.connect(run.workdir / "alerts.sqlite")
    assert [r[0] for r in conn.execute("SELECT seq FROM alerts ORDER BY seq")] == list(range(1, 41))
    conn.close()
    run.start()
    status, _, body = request(run.base, "GET", "/api/alerts?limit=100")
    assert status == 200 and [a["id"] for a in body["alerts"]] == list(range(40, 0, -1))
    run.feed(proc_event("nc"))
    assert run.wait_alerts(41)[0]["id"] == 41  # ids go on after the crash
    assert run.stop() == 0


def test_rules_and_health_from_the_running_engine(kestrel_run):
    run = kestrel_run().start()
    run.feed(proc_event("nc"), proc_event("nc"))
    run.wait_alerts(2)
    status, _, rules = request(run.base, "GET", "/api/rules")
    assert status == 200 and rules["mode"] == "detect"
    by_id = {r["id"]: r for r in rules["rules"]}
    assert set(by_id) == {"t-nc", "t-curl", "t-dropper", "t-shadow"}
    assert by_id["t-dropper"]["kind"] == "sequence" and by_id["t-dropper"]["matching"]["strategy"] == "lazy-dfa"
    assert by_id["t-nc"]["hits"] == 2 and by_id["t-curl"]["hits"] == 0
    assert by_id["t-shadow"]["severity"] == "critical" and by_id["t-nc"]["kind"] == "event"
    assert by_id["t-nc"]["matching"]["strategy"] in ("ac", "ac+pred", "scan")
    assert by_id["t-nc"]["cost"] is None  # no [engine] cost_profile in this profile
    status, _, health = request(run.base, "GET", "/api/health")
    assert health["sources"] == [{"name": "jsonl", "type": "jsonl"}]
    wait_for(lambda: request(run.base, "GET", "/api/health")[2]["engine"]["events_processed"] == 2, 10,
             "the engine's counters")
    assert run.stop() == 0


def test_non_loopback_without_token_refuses_to_start(tmp_path):
    (tmp_path / "p.toml").write_text('[kestrel]\nplugins = ["api-server"]\n[[sources]]\ntype = "jsonl"\npath = "-"\n'
                                     '[[sinks]]\ntype = "api"\naddress = "0.0.0.0:0"\n')
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "run", "--profile", "p.toml"], cwd=tmp_path,
                          input="", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "address 0.0.0.0:0 is not loopback, so the API needs a bearer token" in proc.stderr
    assert 'token_file = "..."' in proc.stderr
    assert not (tmp_path / "kestrel-alerts.sqlite").exists()


def test_rule_costs_from_the_cost_profile(kestrel_run):
    run = kestrel_run(extra_profile="[engine]\ncost_profile = true\n").start()
    run.feed(proc_event("nc"), proc_event("ls"), proc_event("curl"))
    run.wait_alerts(2)
    rules = {r["id"]: r for r in request(run.base, "GET", "/api/rules")[2]["rules"]}
    assert rules["t-nc"]["cost"]["evaluations"] >= 1 and rules["t-nc"]["cost"]["eval_seconds"] > 0
    assert all(set(r["cost"]) == {"eval_seconds", "evaluations", "candidate_hits"} for r in rules.values())
    assert run.stop() == 0
