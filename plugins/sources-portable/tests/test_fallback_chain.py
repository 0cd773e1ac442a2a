"""Issue 5's fallback done-means: a run with the portable source (no eBPF)
and the bundled Linux pack detects the exec and file parts of a scripted
attack chain, with parent/child fields, and its log says what it cannot see.

The run is in-process with a tap sink next to the profile's, so alerts are
timed as they arrive (the JSONL sink's file is flushed at the end of a run)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from kestrel_sources_portable.testing import needs_connector, needs_fanotify, needs_root

import kestrel_core
from kestrel_core.startup import load_profile
from kestrel_core.pipeline import Run
from kestrel_core.testing import AlertTap, wait_for

PACK = Path(kestrel_core.__file__).resolve().parent / "data" / "rules" / "linux"
EXPECTED = ("kestrel.linux.exec_from_tmp", "kestrel.linux.chmod_exec_in_tmp", "kestrel.linux.shadow_file_open",
            "kestrel.linux.dropper_chain")


class Tap(AlertTap):
    PLUGIN_NAME = "tap"

    def about(self, rule_id: str, mark: str, schema: Any) -> list[tuple[Any, int]]:
        """Alerts of ``rule_id`` whose events mention ``mark`` (other tests may run beside this one)."""
        with self.lock:
            found = list(self.alerts)
        return [(a, t) for a, t in found if a.rule_id == rule_id and any(mark in str(e.to_ecs(schema)) for e in a.events)]


@needs_root
@needs_connector
@needs_fanotify
def test_portable_source_detects_the_exec_and_file_parts_of_the_chain(tmp_path, caplog):
    assert PACK.is_dir(), f"bundled rule pack missing at {PACK}"
    profile_path = tmp_path / "portable.toml"
    profile_path.write_text(f"""\
[kestrel]
mode = "detect"
plugins = ["sources-portable"]

[rules]
paths = ["{PACK}"]

[[sources]]
type = "portable"

[[sinks]]
type = "jsonl"
path = "alerts.jsonl"
""")
    caplog.set_level(logging.INFO, logger="kestrel")
    profile, host = load_profile(profile_path)
    job = Run.build(profile, host)
    source = job.sources[0][0]
    assert source.PLUGIN_NAME == "portable"
    tap = Tap()
    job.sinks.append(tap)
    job.open()
    runner = threading.Thread(target=job.execute, daemon=True)
    runner.start()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    drop_dir = tempfile.mkdtemp(prefix="kestrel-chain-", dir="/tmp")
    tool = f"{drop_dir}/bash"
    chain = None
    schema = job.context.schema
    try:
        wait_for(source.ready.is_set, 60, "portable source subscribed")
        script = (f"cp /bin/bash {tool} && chmod +x {tool} && "
                  f"exec {tool} -c 'cat /etc/shadow > /dev/null; exec 3<>/dev/tcp/127.0.0.1/{port}; read line'")
        chain = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.PIPE)
        listener.settimeout(30)
        peer, _ = listener.accept()  # the chain got as far as its connect
        peer.close()
        for rule in EXPECTED:
            wait_for(lambda rule=rule: tap.about(rule, drop_dir, schema), 20, f"alert {rule}")
    finally:
        if chain is not None:
            chain.stdin.close()
            chain.wait(timeout=10)
        listener.close()
        job.request_stop("test")
        runner.join(60)
        shutil.rmtree(drop_dir, ignore_errors=True)
    assert not runner.is_alive(), "run did not stop"

    log = caplog.text
    # It says what it cannot see, and why.
    assert "reduced coverage: no connect/accept/bind (no eBPF; /proc/net polling off)" in log
    assert "no memfd_create/mmap_exec/mprotect_exec/init_module/finit_module (no eBPF" in log

    def first(rule: str) -> tuple[dict, int, int]:
        alert, arrived = tap.about(rule, drop_dir, schema)[0]
        return alert.events[-1].to_ecs(schema), arrived, alert.events[-1].ts_wall_ns

    execs = [a.events[-1].to_ecs(schema) for a, _ in tap.about("kestrel.linux.exec_from_tmp", drop_dir, schema)]
    exec_ev = next((e for e in execs if e["process.pid"] == chain.pid), execs)
    assert "process.Ext.incomplete" not in exec_ev, exec_ev
    assert exec_ev["process.executable"] == tool and exec_ev["process.name"] == "bash"
    assert exec_ev["process.args"] == [tool, "-c", f"cat /etc/shadow > /dev/null; exec 3<>/dev/tcp/127.0.0.1/{port}; read line"]
    assert exec_ev["process.pid"] == chain.pid  # the shell exec'd the copy: same process
    assert exec_ev["process.parent.pid"] == os.getpid()
    assert exec_ev["process.parent.executable"] == os.readlink("/proc/self/exe")
    chmod_ev, _, _ = first("kestrel.linux.chmod_exec_in_tmp")
    assert chmod_ev["file.path"] == tool and chmod_ev["file.mode"] == "755"
    assert chmod_ev["process.parent.pid"] == chain.pid
    shadow_ev, _, _ = first("kestrel.linux.shadow_file_open")
    assert shadow_ev["file.path"] == "/etc/shadow" and shadow_ev["process.name"] == "cat"
    assert shadow_ev["process.parent.pid"] == chain.pid and shadow_ev["process.parent.executable"] == tool
    assert shadow_ev["process.parent.entity_id"] == exec_ev["process.entity_id"]
    # Each alert within 1 s of the event that completed it (event times are
    # kernel times for processes, a lower bound for files: this overstates).
    for rule in EXPECTED:
        _, arrived, happened = first(rule)
        assert arrived - happened < 10**9, f"{rule}: alert {(arrived - happened) / 1e9:.3f} s after the event"
    dropper = tap.about("kestrel.linux.dropper_chain", drop_dir, schema)[0][0]
    created, run = (e.to_ecs(schema) for e in dropper.events)
    assert created["file.path"] == tool and run["process.executable"] == tool
