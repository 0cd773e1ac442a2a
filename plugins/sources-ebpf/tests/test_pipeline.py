"""The source inside a real run: losses become gap records and counters, and
the default rule pack turns a scripted attack chain into alerts within 1 s."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from kestrel_sources_ebpf.testing import needs_kernel, start_run, wait_for, write_profile

from kestrel_core.event import Event, Gap
from kestrel_core.klog import KlogReader
from kestrel_core.pipeline import Run
from kestrel_core.schema import TIMESTAMP_ID

pytestmark = needs_kernel

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "rules" / "linux"


def stop_run(job: Run, t: threading.Thread) -> None:
    job.request_stop("test")
    t.join(60)
    assert not t.is_alive(), "run did not stop"


def test_flood_with_a_tiny_ring_buffer_is_reported_as_gaps(tmp_path):
    """A 4 KiB ring buffer cannot keep up with an open() flood: every lost
    record is counted in the kernel, reported through emit.loss, recorded as a
    gap in the klog recording and counted in stats.events_lost."""
    profile = write_profile(tmp_path / "p.toml", RULES, 'type = "klog"\npath = "rec.klog"\ncompression = "none"',
                            ringbuf_pages=1, pushdown=False)
    job, t, _tap = start_run(profile)
    src = job.sources[0][0]
    target = tmp_path / "f"
    target.write_text("x")
    flood = subprocess.Popen([sys.executable, "-c", f"for i in range(200000): open({str(target)!r}).close()"])
    try:
        wait_for(lambda: job.context.stats.events_lost, 60, "a counted loss")
    finally:
        flood.kill()
        flood.wait()
    stop_run(job, t)
    lost = job.context.stats.events_lost
    assert set(lost) == {("ebpf", "ringbuf_full")}
    assert lost[("ebpf", "ringbuf_full")] == src.lost > 0
    gaps = [r for r in KlogReader(tmp_path / "rec.klog") if isinstance(r, Gap)]
    assert gaps and sum(g.lost for g in gaps) == src.lost
    assert all(g.source_id == "ebpf" and g.reason == "ringbuf_full" and g.first_ts_ns <= g.last_ts_ns for g in gaps)
    now = time.time_ns()
    assert all(now - 300 * 10**9 < g.first_ts_ns <= now for g in gaps)


def test_recorded_repeated_opens_each_carry_their_own_timestamp(tmp_path, program):
    """Repeated opens of one file share their decoded fields in the pipeline
    (Event.content); a klog recording still gets every one of them, each with
    its own @timestamp."""
    profile = write_profile(tmp_path / "p.toml", RULES, 'type = "klog"\npath = "rec.klog"\ncompression = "none"',
                            pushdown=False)
    job, t, _tap = start_run(profile, program, tap=False)
    target = tmp_path / "again.txt"
    target.write_text("x")
    reader = subprocess.Popen([sys.executable, "-c", f"for i in range(300): open({str(target)!r}).close()"])
    assert reader.wait(30) == 0
    stop_run(job, t)  # the source reads what is left on the ring as it stops
    assert job.sources[0][0].lost == 0
    schema = job.context.schema
    path, pid = schema.resolve("file.path"), schema.resolve("process.pid")
    opens = [r for r in KlogReader(tmp_path / "rec.klog", schema)
             if isinstance(r, Event) and r.fields.get(path) == str(target) and r.fields.get(pid) == reader.pid]
    assert len(opens) == 300
    assert all(e.fields[TIMESTAMP_ID] == e.ts_wall_ns for e in opens)
    assert len({e.ts_wall_ns for e in opens}) == 300


EXPECTED = ("kestrel.linux.exec_from_tmp", "kestrel.linux.chmod_exec_in_tmp",
            "kestrel.linux.tmp_binary_network_connect", "kestrel.linux.shadow_file_open",
            "kestrel.linux.dropper_chain")


@pytest.fixture
def drop_dir():
    d = Path(tempfile.mkdtemp(prefix="kestrel-e2e-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_attack_chain_raises_the_default_pack_alerts_within_a_second(tmp_path, program, drop_dir):
    alerts_file = tmp_path / "alerts.jsonl"
    profile = write_profile(tmp_path / "p.toml", RULES, f'type = "jsonl"\npath = "{alerts_file}"')
    job, t, tap = start_run(profile, program)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    dropped = drop_dir / "x"
    try:
        subprocess.run(["cp", "/bin/bash", str(dropped)], check=True)
        subprocess.run(["chmod", "+x", str(dropped)], check=True)
        script = f"exec 3<>/dev/tcp/127.0.0.1/{port}; read -r line < /etc/shadow; exec 3>&-"
        child = subprocess.run([str(dropped), "-c", script], check=True)
        del child
        for rule in EXPECTED:
            wait_for(lambda rule=rule: tap.by_rule(rule), 10, f"alert {rule}")
    finally:
        listener.close()
        stop_run(job, t)
    me = os.getpid()
    for rule in EXPECTED:
        alert, arrived = tap.by_rule(rule)[0]
        last = alert.events[-1]
        assert arrived - last.ts_wall_ns < 10**9, f"{rule}: {(arrived - last.ts_wall_ns) / 1e9:.3f} s after the event"
    schema = job.context.schema

    def fields(rule: str, i: int = -1) -> dict:
        return tap.by_rule(rule)[0][0].events[i].to_ecs(schema)

    exec_ev = fields("kestrel.linux.exec_from_tmp")
    assert exec_ev["process.executable"] == str(dropped) and exec_ev["process.name"] == "x"
    assert exec_ev["process.parent.pid"] == me and exec_ev["process.parent.name"].startswith("python")
    assert exec_ev["process.args"][1:] == ["-c", script]
    chmod_ev = fields("kestrel.linux.chmod_exec_in_tmp")
    assert chmod_ev["file.path"] == str(dropped) and chmod_ev["process.name"] == "chmod"
    assert chmod_ev["process.parent.pid"] == me
    conn = fields("kestrel.linux.tmp_binary_network_connect")
    assert conn["destination.ip"] == "127.0.0.1" and conn["destination.port"] == port
    assert conn["process.entity_id"] == exec_ev["process.entity_id"]
    assert conn["process.parent.entity_id"] == exec_ev["process.parent.entity_id"]
    shadow = fields("kestrel.linux.shadow_file_open")
    assert shadow["file.path"] == "/etc/shadow" and shadow["process.executable"] == str(dropped)
    assert shadow["process.pid"] == exec_ev["process.pid"]
    chain = tap.by_rule("kestrel.linux.dropper_chain")[0][0]
    first, second = (e.to_ecs(schema) for e in chain.events)
    assert first["file.path"] == str(dropped) and second["process.executable"] == str(dropped)
    # the profile's JSONL sink got the same alerts
    written = alerts_file.read_text()
    for rule in EXPECTED:
        assert rule in written
