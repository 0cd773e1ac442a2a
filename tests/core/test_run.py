"""``kestrel run`` end to end, as a user runs it: a subprocess, a profile,
real files, a real HTTP scrape of the Prometheus sink, a real SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kestrel_core.testing import wait_for

RULE = textwrap.dedent('''
    [[rule]]
    id = "test.nc"
    name = "netcat started"
    severity = "high"
    query = 'process where process.name == "nc"'
''')


def event(i: int, name: str = "ls") -> dict:
    return {"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process", "action": "exec"},
            "process": {"name": name, "pid": 1000 + i, "args": [name, "-x"]}}


def kestrel(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kestrel_core", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


REPLAY_TO_JSONL = """
    [[sources]]
    type = "jsonl"
    path = "events.jsonl"
    [[sinks]]
    type = "jsonl"
    path = "alerts.jsonl"
"""


def run_to_completion(tmp_path, profile_head: str, components: str = REPLAY_TO_JSONL) -> tuple[str, list[dict]]:
    """Write p.toml (head + components) in tmp_path, run it to the end, return
    stderr and the alerts the JSONL sink wrote."""
    (tmp_path / "p.toml").write_text(textwrap.dedent(profile_head) + textwrap.dedent(components))
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    alerts_file = tmp_path / "alerts.jsonl"
    alerts = [json.loads(line) for line in alerts_file.read_text().splitlines()] if alerts_file.exists() else []
    return err, alerts


FINAL = re.compile(r"stopped \((\w+)\): read (\d+), processed (\d+), dropped (\d+), alerts (\d+)")


def final_counts(stderr: str) -> dict[str, int | str]:
    m = FINAL.search(stderr)
    assert m, stderr
    return {"reason": m.group(1), "read": int(m.group(2)), "processed": int(m.group(3)),
            "dropped": int(m.group(4)), "alerts": int(m.group(5))}


def sigterm_and_count(proc: subprocess.Popen) -> dict:
    """SIGTERM a live run; it must exit 0 having stopped for the signal."""
    try:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Fatal Python error" not in err, err  # a source blocked on stdin must not abort interpreter shutdown
    counts = final_counts(err)
    assert counts["reason"] == "signal"
    return counts


def test_replay_file_with_bad_line_keeps_everything_else(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [json.dumps(event(0, "nc")), json.dumps(event(1)), "{not json", json.dumps(event(3, "nc")),
             json.dumps({"@timestamp": 5, "process": {"name": "nc"}})]
    events.write_text("\n".join(lines) + "\n")
    (tmp_path / "rules.toml").write_text(RULE)
    err, got = run_to_completion(tmp_path, """
        [kestrel]
        mode = "replay"
        [rules]
        paths = ["rules.toml"]
    """)
    assert "events.jsonl:3:2: invalid JSON: expected a string key" in err
    assert "events.jsonl:5: missing 'event.category'" in err
    assert [a["rule"]["id"] for a in got] == ["test.nc", "test.nc"]
    assert [a["events"][0]["process"]["pid"] for a in got] == [1000, 1003]
    assert all(a["mode"] == "replay" for a in got)
    counts = final_counts(err)
    assert counts == {"reason": "eof", "read": 5, "processed": 3, "dropped": 2, "alerts": 2}


def test_sigterm_mid_stream_with_prometheus_scrape(tmp_path):
    """Events arrive on stdin; half are sent, /metrics is scraped while the run
    is live, then SIGTERM: exit 0, every accepted event processed, counts balance."""
    port = free_port()
    (tmp_path / "rules.toml").write_text(RULE)
    (tmp_path / "p.toml").write_text(textwrap.dedent(f"""
        [kestrel]
        plugins = ["sink-prometheus"]
        [rules]
        paths = ["rules.toml"]
        [bus]
        batch_size = 256
        flush_interval_ms = 20
        [[sources]]
        type = "jsonl"
        path = "-"
        [[sinks]]
        type = "prometheus"
        address = "127.0.0.1:{port}"
    """))
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"), stdin=subprocess.PIPE)
    try:
        sent = 5000
        payload = "".join(json.dumps(event(i, "nc" if i % 1000 == 0 else "ls")) + "\n" for i in range(sent))
        proc.stdin.write(payload)
        proc.stdin.flush()

        def processed():
            try:
                samples = scrape(port)
            except OSError:
                return None
            return samples if total(samples, "kestrel_events_processed_total") == sent else None

        samples = wait_for(processed, timeout=60, what="all sent events to be counted on /metrics")
        assert samples[("kestrel_events_processed_total", (("event_category", "process"), ("source", "jsonl")))] == sent
        assert samples[("kestrel_alerts_total", (("rule", "test.nc"), ("severity", "high")))] == 5
        assert total(samples, "kestrel_last_event_timestamp_seconds") == pytest.approx(1_700_000_004.999)
    except BaseException:
        proc.kill()
        raise
    # stdin is still open: the source is blocked in a read when the signal arrives
    counts = sigterm_and_count(proc)
    assert counts["read"] == counts["processed"] + counts["dropped"] == sent
    assert counts["alerts"] == 5


def test_sigterm_during_file_replay_balances(tmp_path):
    """A large file: SIGTERM lands while the source is still reading."""
    port = free_port()
    n = 200_000
    with open(tmp_path / "big.jsonl", "w") as fh:
        for i in range(n):
            fh.write(json.dumps(event(i)) + "\n")
    (tmp_path / "p.toml").write_text(textwrap.dedent(f"""
        [kestrel]
        plugins = ["sink-prometheus"]
        [bus]
        capacity = 4096
        batch_size = 512
        [[sources]]
        type = "jsonl"
        path = "big.jsonl"
        [[sinks]]
        type = "prometheus"
        address = "127.0.0.1:{port}"
    """))
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"))
    try:
        def started():
            try:
                return total(scrape(port), "kestrel_events_processed_total") > 0
            except OSError:
                return False

        wait_for(started, timeout=60, what="the first events to be processed")
    except BaseException:
        proc.kill()
        raise
    counts = sigterm_and_count(proc)
    assert 0 < counts["processed"] < n, "the signal should have landed mid-stream"
    assert counts["read"] == counts["processed"] + counts["dropped"]


def test_sequence_rules_budgets_and_rule_warnings(tmp_path):
    """Sequence rules run under the profile's budgets; semantic warnings and
    broken rules are logged while the good rules still fire."""
    (tmp_path / "rules.toml").write_text(textwrap.dedent('''
        [[rule]]
        id = "test.seq"
        name = "ls then nc by pid"
        query = """
        sequence by process.pid
          [process where process.name == "ls"]
          [process where process.name == "nc"]
        """

        [[rule]]
        id = "test.typo"
        name = "field typo"
        query = 'process where process.pid == "abc"'

        [[rule]]
        id = "test.broken"
        name = "broken"
        query = 'process where process.name =='
    '''))
    events = tmp_path / "events.jsonl"
    recs = [event(0, "ls"), event(1, "nc")]
    recs[1]["process"]["pid"] = 1000
    events.write_text("".join(json.dumps(r) + "\n" for r in recs))
    err, alerts = run_to_completion(tmp_path, """
        [rules]
        paths = ["rules.toml"]
        on_error = "skip"
        [budgets]
        max_partials_per_entity = 4
        state_ttl_s = 60
    """)
    assert "rules.toml:19:39: error: unexpected end" in err, err  # the broken rule, located in its file
    assert "[rule test.broken]" in err
    assert "rules.toml:14:36: warning: type mismatch" in err, err
    assert "loaded 2 rules (1 rejected)" in err
    assert [a["rule"]["id"] for a in alerts] == ["test.seq"]
    assert [e["process"]["name"] for e in alerts[0]["events"]] == ["ls", "nc"]


def test_missing_input_file_is_a_located_error_before_start(tmp_path):
    (tmp_path / "p.toml").write_text('[[sources]]\ntype = "jsonl"\npath = "nowhere.jsonl"\n')
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2  # a path that does not exist: usage or input error (docs/cli.md)
    assert f"{tmp_path / 'p.toml'}:1:1: source 'jsonl': No such file or directory: {tmp_path / 'nowhere.jsonl'}" in err


def test_progress_bar_on_a_tty(tmp_path):
    """On a terminal a file input shows a progress bar (rich) on stderr."""
    from kestrel_core.testing import run_on_a_terminal

    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(event(i)) + "\n" for i in range(20_000)))
    (tmp_path / "p.toml").write_text('[[sources]]\ntype = "jsonl"\npath = "events.jsonl"\n')
    code, _, tty = run_on_a_terminal("run", "--profile", str(tmp_path / "p.toml"), stdout_too=True, timeout=60)
    assert code == 0
    screen = tty.decode(errors="replace")
    assert "reading" in screen and "stopped (eof): read 20000" in screen


def test_matcher_is_selected_by_the_profile_with_the_same_alerts(tmp_path):
    """The bundled demo replay gives the same alerts whichever built-in matcher
    runs, and a second replay writes the same bytes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {}
    for matcher in ("literal-index", "category", "literal-index"):
        first_bytes = (tmp_path / f"{matcher}.jsonl").read_bytes() if matcher in results else None
        profile = tmp_path / f"{matcher}.toml"
        profile.write_text(textwrap.dedent(f"""
            [kestrel]
            mode = "replay"
            [engine]
            matcher = "{matcher}"
            [rules]
            paths = ["{root}/rules/linux"]
            [[sources]]
            type = "jsonl"
            path = "{root}/demo/capture.jsonl"
            [[sinks]]
            type = "jsonl"
            path = "{matcher}.jsonl"
        """))
        proc = kestrel("run", "--profile", str(profile))
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        alerts = [json.loads(line) for line in (tmp_path / f"{matcher}.jsonl").read_text().splitlines()]
        assert len(alerts) == final_counts(err)["alerts"] > 0
        results[matcher] = [(a["rule"]["id"], [e["event"]["id"] for e in a["events"]]) for a in alerts]
        if first_bytes is not None:  # replay is reproducible byte for byte
            assert (tmp_path / f"{matcher}.jsonl").read_bytes() == first_bytes
    assert results["literal-index"] == results["category"]


def test_unknown_matcher_is_a_located_profile_error(tmp_path):
    (tmp_path / "p.toml").write_text('[engine]\nmatcher = "acdfa"\n')
    proc = kestrel("profile", "check", str(tmp_path / "p.toml"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "p.toml:2:11: error: no matcher named 'acdfa'" in err


def test_alerts_reach_a_file_sink_while_the_run_goes_on(tmp_path):
    """A live run flushes its sinks after alerts: an alert is in the file while stdin is still open."""
    (tmp_path / "rules.toml").write_text(RULE)
    (tmp_path / "p.toml").write_text(textwrap.dedent(f'''
        [rules]
        paths = ["rules.toml"]
        [[sources]]
        type = "jsonl"
        path = "-"
        [[sinks]]
        type = "jsonl"
        path = "{tmp_path / 'alerts.jsonl'}"
    '''))
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"), stdin=subprocess.PIPE)
    try:
        proc.stdin.write(json.dumps(event(0, "nc")) + "\n")
        proc.stdin.flush()
        alerts = tmp_path / "alerts.jsonl"
        started = time.monotonic()
        wait_for(lambda: alerts.exists() and alerts.read_text().endswith("\n"), timeout=30, what="alert in the file")
        assert proc.poll() is None, "the run must still be going"
        assert json.loads(alerts.read_text())["rule"]["id"] == "test.nc"
        assert time.monotonic() - started < 5, "the alert sat in a buffer"
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_signal_handler_takes_no_lock_and_the_run_loop_stops_for_it(tmp_path):
    """SIGINT/SIGTERM handlers run on the engine thread between two bytecodes,
    maybe while it holds the (non-reentrant) stats lock: the handler only
    notes the signal, and the run loop stops for it (reason "signal").
    Before, a handler that landed inside the lock deadlocked the run."""
    import threading

    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run

    (tmp_path / "p.toml").write_text('[[sources]]\ntype = "jsonl"\npath = "-"\n')
    profile, host = load_profile(tmp_path / "p.toml")
    job = Run.build(profile, host)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        job.install_signal_handlers()
        handler = signal.getsignal(signal.SIGTERM)
        with job.context.stats.lock:  # as if the signal landed inside it
            t = threading.Thread(target=handler, args=(signal.SIGTERM, None))
            t.start()
            t.join(2)
            assert not t.is_alive(), "the signal handler waited for the stats lock"
        assert job.signalled == "SIGTERM" and not job.stop.is_set()
        job._take_signal()
        assert job.stop.is_set() and job.stop_reason == "signal"
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
