"""Incidents from the live eBPF source (as root; the source mounts tracefs
itself when it is not mounted): the attack chain of the sources-ebpf tests,
run from one shell script, becomes one incident whose process tree is the
script's, with the alerts on the processes that raised them, written by the
jsonl sink."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

sources_ebpf = pytest.importorskip("kestrel_sources_ebpf.testing", reason="plugin sources-ebpf is not installed")
needs_kernel, start_run, wait_for = sources_ebpf.needs_kernel, sources_ebpf.start_run, sources_ebpf.wait_for

pytestmark = needs_kernel

REPO = Path(__file__).resolve().parents[2]
ATTACK = ("kestrel.linux.exec_from_tmp", "kestrel.linux.chmod_exec_in_tmp",
          "kestrel.linux.tmp_binary_network_connect", "kestrel.linux.shadow_file_open",
          "kestrel.linux.dropper_chain")


def test_the_ebpf_attack_chain_is_one_incident_with_its_process_tree(tmp_path):
    out = tmp_path / "out.jsonl"
    profile = sources_ebpf.write_profile(tmp_path / "p.toml", REPO / "rules" / "linux",
                                         f'type = "jsonl"\npath = "{out}"')
    profile.write_text(profile.read_text() + "\n[incidents]\nenable = true\n")
    work = Path(tempfile.mkdtemp(prefix="kestrel-inc-", dir="/tmp"))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    dropped = work / "kworkerd"
    job, t, tap = start_run(profile)
    try:
        assert job.incidents is not None
        script = (f"cp /bin/bash {dropped} && chmod +x {dropped} && "
                  f"{dropped} -c 'exec 3<>/dev/tcp/127.0.0.1/{port}; read -r line < /etc/shadow; exec 3>&-'")
        subprocess.run(["bash", "-c", script], check=True, timeout=30)
        for rule_id in ATTACK:
            wait_for(lambda rule_id=rule_id: tap.by_rule(rule_id), 15, f"alert {rule_id}")
    finally:
        listener.close()
        job.request_stop("test")
        t.join(60)
        shutil.rmtree(work, ignore_errors=True)
    assert not t.is_alive(), "run did not stop"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    final = [r["incident"] for r in lines if "incident" in r and r["incident"]["status"] == "closed"
             and r["incident"]["reason"] != "merged"]
    ours = [inc for inc in final if any(p["executable"] == str(dropped) for p in inc["processes"])]
    assert len(ours) == 1, [(inc["id"], inc["rules"]) for inc in ours]
    (inc,) = ours
    assert set(ATTACK) <= set(inc["rules"]), inc["rules"]
    assert inc["reason"] == "stop" and inc["tactics"] and inc["risk_score"] >= 99
    by_name = {}
    for p in inc["processes"]:
        by_name.setdefault(p["executable"] or p["name"], p)
    x, chmod = by_name[str(dropped)], next(p for p in inc["processes"] if p["name"] == "chmod")
    assert "kestrel.linux.chmod_exec_in_tmp" in chmod["alerts"]
    assert {"kestrel.linux.exec_from_tmp", "kestrel.linux.shadow_file_open"} <= set(x["alerts"])
    # the chain of real entity ids as the kernel reported it: the script's shell
    # forked chmod, then exec'd the copy in place (same process, same entity:
    # the record names it by its last exec); that shell is the storyline root and
    # the test's own python, running since before the source attached, only context
    assert chmod["parent"] == x["entity_id"] and x["entity_id"] in inc["roots"]
    assert x["execs"] == ["bash"]
    starter = next(p for p in inc["processes"] if p["entity_id"] == x["parent"])
    assert starter["context"] and starter["depth"] == 0 and not starter["alerts"]
    # every alert line of ours in the file is in the incident's timeline, in order
    alert_rules = [r["rule"]["id"] for r in lines if "rule" in r
                   and any((e.get("process") or {}).get("executable") == str(dropped)
                           or str(dropped) in json.dumps(e.get("file") or {}) for e in r["events"])]
    timeline = [e["rule"] for e in inc["timeline"]]
    assert [r for r in timeline if r in alert_rules] == alert_rules
