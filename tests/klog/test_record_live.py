"""`kestrel record --profile` of a source that never ends: SIGTERM closes the
log cleanly; SIGKILL leaves a log whose every flushed frame still reads."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from kestrel_core.event import Event
from kestrel_core.klog import KlogError, KlogReader


def doc(i: int) -> bytes:
    return orjson.dumps({"@timestamp": 1_767_600_000_000_000_000 + i, "event": {"category": ["process"]},
                         "process": {"pid": i, "name": f"p{i}"}}) + b"\n"


def events_in(path: Path) -> int:
    try:
        with KlogReader(path) as r:
            return sum(isinstance(x, Event) for x in r.records())
    except (KlogError, FileNotFoundError):  # not even the header yet
        return 0


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def recorder(tmp_path):
    (tmp_path / "p.toml").write_text('[kestrel]\nlog_level = "info"\n[[sources]]\ntype = "jsonl"\npath = "-"\n')
    out = tmp_path / "live.klog"
    proc = subprocess.Popen([sys.executable, "-m", "kestrel_core", "record", "--profile", str(tmp_path / "p.toml"),
                             "-o", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_recording_a_live_source_survives_the_end(recorder, sig):
    proc, out = recorder
    proc.stdin.write(b"".join(doc(i) for i in range(300)))
    proc.stdin.flush()  # the stream stays open: the source never ends by itself
    wait_for(lambda: events_in(out) == 300, what="300 events flushed to the log")
    proc.send_signal(sig)
    proc.wait(60)
    with KlogReader(out, documents=True) as r:
        recs = list(r.records())
        kinds = [w.kind for w in r.warnings]
    assert [e.raw["process"]["pid"] for e in recs] == list(range(300))  # every event, in order
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, proc.stderr.read()
        assert kinds == [] and r.end == {"events": 300, "gaps": 0}
        assert b"recorded 300 events" in proc.stderr.read()
    else:
        assert kinds == ["no_end"] and r.end is None  # every flushed frame read; the cut is reported
