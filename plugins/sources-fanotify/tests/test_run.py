"""End to end: `kestrel run` with the fanotify source raises alerts for real file and exec events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

RULES = '''
[[rule]]
id = "fan-test-001"
name = "Trigger file written"
query = 'file where event.type : "change" and file.name == "trigger.txt"'
severity = "high"

[[rule]]
id = "fan-test-002"
name = "Copied binary executed"
query = 'process where event.action == "exec" and process.name == "mytrue"'
severity = "high"
'''


def test_kestrel_run_alerts_on_fanotify_events(tmp_path: Path, tmpfs: Path, wait_for):
    (tmp_path / "rules.toml").write_text(RULES)
    # A shell copied under the mark, kept alive (reading stdin) until its exec alert is
    # written: the source reads the process and its parent from /proc, which a
    # process that has already exited no longer has.
    held = tmpfs / "mytrue"
    held.write_bytes(Path("/bin/sh").read_bytes())
    held.chmod(0o755)
    profile = tmp_path / "fan.toml"
    profile.write_text(f'''
[kestrel]
mode = "detect"
plugins = ["sources-fanotify"]

[rules]
paths = ["rules.toml"]

[[sources]]
type = "fanotify"
paths = ["{tmpfs}"]
mark = "mount"
events = ["exec", "close_write"]
poll_ms = 50

[[sinks]]
type = "jsonl"
path = "alerts.jsonl"
''')
    def alerts_text() -> str:
        path = tmp_path / "alerts.jsonl"
        return path.read_text() if path.exists() else ""

    kestrel = Path(sys.executable).with_name("kestrel")
    proc = subprocess.Popen([str(kestrel), "run", "--profile", str(profile)], stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("fanotify: watching" in line for line in lines), 20, "the source to start watching")
        child = subprocess.Popen([str(held), "-c", "read line"], stdin=subprocess.PIPE)
        try:
            wait_for(lambda: "fan-test-002" in alerts_text(), 10, "the exec alert")
        finally:
            child.communicate(b"\n", timeout=10)
        assert child.returncode == 0
        subprocess.run(["sh", "-c", f"echo hit > {tmpfs}/trigger.txt"], check=True, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines() if line.strip()]
    by_rule = {a["rule"]["id"]: a for a in alerts}
    assert set(by_rule) == {"fan-test-001", "fan-test-002"}, (alerts, "".join(lines))
    execd = by_rule["fan-test-002"]["events"][0]
    assert execd["process"]["executable"] == str(held)
    assert execd["process"]["parent"]["pid"] == os.getpid()
    written = by_rule["fan-test-001"]["events"][0]
    assert written["file"]["path"] == f"{tmpfs}/trigger.txt"
    assert any("stopped (signal)" in line for line in lines), "".join(lines)
