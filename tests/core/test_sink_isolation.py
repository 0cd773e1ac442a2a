"""Sink isolation (issue 14, item 13): a sink that fails, is down or stalls
never stops detection or the other sinks; its failures are logged with its
name, counted, retried or bypassed as its ``delivery`` settings say, and
shutdown waits for it only a bounded time.  Every test talks to a real HTTP
server on 127.0.0.1 and waits on conditions, never on sleeps."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from kestrel_core.testing import SinkContract, make_alert, make_context, wait_for

RULE = textwrap.dedent('''
    [[rule]]
    id = "test.nc"
    name = "netcat started"
    severity = "high"
    query = 'process where process.name == "nc"'
''')
N_ALERTS = 30


class Receiver:
    """A webhook receiver whose answer to the i-th request (0-based) is
    ``script(i)``: ``200``, another status, or ``"stall"`` (hold the request
    until the test ends, past any client timeout)."""

    def __init__(self, script: Callable[[int], int | str]) -> None:
        self.script = script
        self.requests: list[tuple[int | str, dict, object]] = []  # (answer, headers, body)
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver.lock:
                    answer = receiver.script(len(receiver.requests))
                    receiver.requests.append((answer, dict(self.headers), body))
                if answer == "stall":
                    receiver.release.wait(60)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list:
        """Bodies the receiver answered 200 to, in order."""
        with self.lock:
            return [body for answer, _h, body in self.requests if answer == 200]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(script: Callable[[int], int | str]) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def write_inputs(tmp_path: Path, n: int = N_ALERTS) -> None:
    """``n`` netcat events (one alert each) among as many others."""
    lines = []
    for i in range(2 * n):
        name = "nc" if i % 2 else "ls"
        lines.append(json.dumps({"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process"},
                                 "process": {"name": name, "pid": 1000 + i}}))
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "rules.toml").write_text(RULE)


def profile(tmp_path: Path, webhook: str, head: str = "") -> Path:
    """jsonl source -> jsonl sink, the webhook sink, another jsonl sink."""
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(head) + textwrap.dedent("""
        [rules]
        paths = ["rules.toml"]
        [[sources]]
        type = "jsonl"
        path = "events.jsonl"
        [[sinks]]
        type = "jsonl"
        path = "first.jsonl"
    """) + textwrap.dedent(webhook) + textwrap.dedent("""
        [[sinks]]
        type = "jsonl"
        path = "second.jsonl"
    """))
    return path


def kestrel_run(path: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "run", "--profile", str(path)], capture_output=True,
                          text=True, timeout=timeout)
    return proc, time.monotonic() - start


def jsonl_alerts(tmp_path: Path, name: str) -> list[int]:
    return [json.loads(line)["events"][0]["process"]["pid"] for line in (tmp_path / name).read_text().splitlines()]


EXPECTED_PIDS = [1000 + i for i in range(2 * N_ALERTS) if i % 2]


def run_in_process(path: Path):
    """Build, open and execute the profile's run here (its stats stay readable)."""
    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run

    prof, host = load_profile(path)
    job = Run.build(prof, host)
    job.open()
    reason = job.execute()
    return job, reason


# --------------------------------------------------------------------------- the done-means test


def test_failing_webhook_between_two_jsonl_sinks(tmp_path, receiver):
    """A receiver answering 501 to everything: both JSONL sinks hold every
    alert, the run exits 0 at EOF, and the summary counts the webhook's
    failures (each attempt) and the alerts it never delivered."""
    server = receiver(lambda i: 501)
    write_inputs(tmp_path)
    proc, _ = kestrel_run(profile(tmp_path, f"""
        [[sinks]]
        type = "webhook"
        url = "{server.url}"
        delivery = {{ retries = 1, backoff_ms = 1 }}
    """))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert jsonl_alerts(tmp_path, "first.jsonl") == EXPECTED_PIDS
    assert jsonl_alerts(tmp_path, "second.jsonl") == EXPECTED_PIDS
    assert re.search(r"stopped \(eof\): read 60, processed 60, dropped 0, alerts 30", proc.stderr), proc.stderr
    assert len(server.requests) == 2 * N_ALERTS  # every alert tried twice (retries = 1)
    assert re.search(r"sink webhook: 60 errors \(last: POST http://127\.0\.0\.1:\d+/hook \(1 alert\): HTTP 501 "
                     r"Not Implemented\); not delivered: 30 alerts \(the sink raised, retries exhausted\)",
                     proc.stderr), proc.stderr
    assert "sink 'webhook': write_alert failed: POST" in proc.stderr  # logged with its name
    assert proc.stderr.count("write_alert failed") < 5  # rate-limited: not one line per failure (60)


def test_receiver_that_is_down_is_bypassed(tmp_path):
    """Nothing listens on the port: connection refused.  After 3 failed alerts
    the sink is bypassed for the rest of the run; the other sinks get everything."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connecting is refused
    write_inputs(tmp_path)
    job, reason = run_in_process(profile(tmp_path, f"""
        [[sinks]]
        type = "webhook"
        url = "http://127.0.0.1:{port}/hook"
        delivery = {{ retries = 0, bypass_after = 3, bypass_s = 0 }}
    """))
    assert reason == "eof"
    assert jsonl_alerts(tmp_path, "first.jsonl") == EXPECTED_PIDS
    assert jsonl_alerts(tmp_path, "second.jsonl") == EXPECTED_PIDS
    stats = job.context.stats
    assert stats.sink_errors == {"webhook": 3}
    assert dict(stats.sink_dropped) == {("webhook", "alert", "failed"): 3, ("webhook", "alert", "bypassed"): 27}
    assert "refused" in job.workers[1].last_error
    assert any("sink webhook: 3 errors" in line for line in job.stop_summary(reason))


def test_recovering_receiver_gets_every_alert_after_retry(tmp_path, receiver):
    """501 twice, a stall past the timeout, then 200: with retries every alert
    arrives, in detection order, and the three failures are counted."""
    answers = {0: 501, 1: 501, 2: "stall"}
    server = receiver(lambda i: answers.get(i, 200))
    write_inputs(tmp_path)
    job, reason = run_in_process(profile(tmp_path, f"""
        [[sinks]]
        type = "webhook"
        url = "{server.url}"
        timeout_s = 0.5
        headers = {{ X-Tenant = "blue" }}
        token = "s3cret"
        delivery = {{ retries = 5, backoff_ms = 1 }}
    """))
    assert reason == "eof"
    assert [body["events"][0]["process"]["pid"] for body in server.received()] == EXPECTED_PIDS
    assert job.context.stats.sink_errors == {"webhook": 3}
    assert not job.context.stats.sink_dropped
    _answer, headers, body = server.requests[-1]
    assert headers["X-Tenant"] == "blue" and headers["Authorization"] == "Bearer s3cret"
    assert body["rule"]["id"] == "test.nc"
    assert jsonl_alerts(tmp_path, "second.jsonl") == EXPECTED_PIDS


def test_batches_post_arrays_and_refused_batches_are_not_retried(tmp_path, receiver):
    """``batch_size`` > 1: each POST is a JSON array.  A 400 cannot succeed
    later, so it is not retried: every alert of the refused batch is counted."""
    server = receiver(lambda i: 400 if i == 0 else 200)
    write_inputs(tmp_path)
    job, reason = run_in_process(profile(tmp_path, f"""
        [[sinks]]
        type = "webhook"
        url = "{server.url}"
        batch_size = 8
    """))
    assert reason == "eof"
    bodies = [body for _a, _h, body in server.requests]
    assert all(isinstance(b, list) and 1 <= len(b) <= 8 for b in bodies)
    refused = len(bodies[0])
    delivered = [a["events"][0]["process"]["pid"] for b in server.received() for a in b]
    assert delivered == EXPECTED_PIDS[refused:]
    stats = job.context.stats
    assert stats.sink_errors == {"webhook": 1}  # DELIVERY_DEFAULTS retry 3 times, but not a 400
    assert dict(stats.sink_dropped) == {("webhook", "alert", "failed"): refused}


def test_stalled_sink_never_holds_up_detection(tmp_path, receiver):
    """A receiver that never answers, a 5 s timeout, a queue of 2: the engine
    goes on (the alerts that do not fit are counted ``queue_full``), shutdown
    waits 1 s for the sink and counts what it still held.  Nothing is silent:
    every alert is delivered or counted."""
    server = receiver(lambda i: "stall")
    write_inputs(tmp_path)
    proc, elapsed = kestrel_run(profile(tmp_path, f"""
        [[sinks]]
        type = "webhook"
        url = "{server.url}"
        timeout_s = 5
        delivery = {{ queue = 2, shutdown_timeout_s = 1 }}
    """, head="""
        [kestrel]
        plugins = ["sink-prometheus"]
    """))
    assert proc.returncode == 0, proc.stderr
    assert jsonl_alerts(tmp_path, "first.jsonl") == EXPECTED_PIDS
    assert jsonl_alerts(tmp_path, "second.jsonl") == EXPECTED_PIDS
    # Delivering to the webhook on the engine thread would take 30 x 5 s.
    assert elapsed < 25, f"run took {elapsed:.1f} s"
    assert "sink 'webhook' did not finish within 1.0 s (shutdown_timeout_s)" in proc.stderr, proc.stderr
    m = re.search(r"sink webhook: not delivered: (.*)", proc.stderr)
    assert m, proc.stderr
    counts = {why: int(n) for n, why in re.findall(r"(\d+) alerts? \(([^)]*)\)", m.group(1))}
    assert counts.get("queue full", 0) > 0, proc.stderr
    assert sum(counts.values()) == N_ALERTS, proc.stderr  # none delivered (the receiver never answers)
    wait_for(lambda: len(server.requests) >= 1, 10, "the stalled request")


def test_prometheus_sink_exports_the_sink_counters(tmp_path):
    """kestrel_sink_errors_total{sink} and kestrel_sink_dropped_total through the Prometheus sink."""
    pytest.importorskip("kestrel_sink_prometheus")
    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_inputs(tmp_path)
    path = profile(tmp_path, f"""
        [[sinks]]
        type = "webhook"
        url = "http://127.0.0.1:{port}/hook"
        delivery = {{ retries = 0 }}
        [[sinks]]
        type = "prometheus"
        address = "127.0.0.1:0"
    """, head="""
        [kestrel]
        plugins = ["sink-prometheus"]
    """)
    job, _ = run_in_process(path)
    from kestrel_sink_prometheus.collector import StatsCollector
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(StatsCollector(lambda: job.context.stats))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(registry).decode()) for s in fam.samples}
    assert samples[("kestrel_sink_errors_total", (("sink", "webhook"),))] == N_ALERTS
    assert samples[("kestrel_sink_dropped_total", (("kind", "alert"), ("reason", "failed"),
                                                   ("sink", "webhook")))] == N_ALERTS


# --------------------------------------------------------------------------- settings


def test_sink_settings_errors_are_located(tmp_path):
    write_inputs(tmp_path)
    path = profile(tmp_path, """
        [[sinks]]
        type = "webhook"
        url = "ftp://example.org/x"
    """)
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "profile", "check", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert re.search(r"p\.toml:\d+:\d+: error: .*url must be an http:// or https:// URL", proc.stderr), proc.stderr
    path = profile(tmp_path, """
        [[sinks]]
        type = "webhook"
        url = "http://127.0.0.1:9/x"
        delivery = { retry = 2 }
    """)
    proc = subprocess.run([sys.executable, "-m", "kestrel_core", "profile", "check", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0
    assert re.search(r"p\.toml:\d+:\d+: error: unknown key 'retry' in \[\[sinks\]\] #2 delivery", proc.stderr), \
        proc.stderr
    assert "did you mean 'retries'?" in proc.stderr


def test_delivery_settings_are_documented():
    from kestrel_core.delivery import Delivery

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from test_docs import check_table
    finally:
        sys.path.pop(0)
    check_table("Sink delivery", Delivery)


class TestWebhookContract(SinkContract):
    """The lifecycle every sink honours, against a receiver that answers 200."""

    @pytest.fixture
    def sink(self, receiver):
        from kestrel_core.builtins.webhook import WebhookSink

        server = receiver(lambda i: 200)
        self.server = server
        return WebhookSink(WebhookSink.Settings(url=server.url), make_context())

    def test_alerts_and_events(self, sink):
        super().test_alerts_and_events(sink)
        assert [body["rule"]["id"] for body in self.server.received()] == ["test.rule", "test.seq"]
        assert len(self.server.received()[1]["events"]) == 3

    def test_token_from_the_environment(self, receiver, monkeypatch):
        from kestrel_core.builtins.webhook import WebhookSink

        server = receiver(lambda i: 200)
        monkeypatch.setenv("KESTREL_TEST_TOKEN", "from-env")
        sink = WebhookSink(WebhookSink.Settings(url=server.url, token="ignored", token_env="KESTREL_TEST_TOKEN"),
                           make_context())
        sink.open()
        sink.write_alert(make_alert(sink.context))
        assert server.requests[0][1]["Authorization"] == "Bearer from-env"
        monkeypatch.delenv("KESTREL_TEST_TOKEN")
        with pytest.raises(ValueError, match="KESTREL_TEST_TOKEN"):
            WebhookSink(WebhookSink.Settings(url=server.url, token_env="KESTREL_TEST_TOKEN"), make_context()).open()


def test_a_stalled_event_sink_holds_at_most_queue_events(tmp_path):
    """A sink that takes events and blocks: the engine goes on, the batches past
    ``queue_events`` are counted as dropped events for that sink, nothing else."""
    from kestrel_core.delivery import Delivery, SinkWorker
    from kestrel_core.interfaces import Sink
    from kestrel_core.runtime import Stats

    release = threading.Event()

    class Stuck(Sink):
        PLUGIN_NAME = "stuck"

        def write_alert(self, alert):
            pass

        def write_events(self, events):
            release.wait(30)

    stats = Stats()
    worker = SinkWorker(Stuck(None, make_context()), "stuck", Delivery(queue_events=25, shutdown_timeout_s=5), stats)
    worker.start()
    try:
        worker.put_events([object()] * 10)  # taken by the worker, which then blocks
        wait_for(lambda: worker.depth() == 0, 10, "the first batch to be taken")
        for _ in range(5):
            worker.put_events([object()] * 10)  # 2 fit (20 <= 25), 3 do not
        assert worker.depth() == 2
        assert dict(stats.sink_dropped) == {("stuck", "event", "queue_full"): 30}
    finally:
        release.set()
        worker.finish()
        assert worker.wait(time.monotonic() + 10)
    assert dict(stats.sink_dropped) == {("stuck", "event", "queue_full"): 30}
