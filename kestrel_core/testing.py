"""Helpers for plugin authors' tests (and Kestrel's own).

``make_context`` and ``make_event`` build what components receive at run
time without a profile; ``collect_records`` runs a source to completion;
``wait_for`` polls a condition with a deadline (tests observe, never sleep and
hope); ``run_kestrel`` runs the CLI in a child process; ``private_tmpfs`` mounts a fresh tmpfs (root); ``SinkContract`` is a base class whose tests every sink must pass: subclass it
in your plugin's tests and provide a ``sink`` fixture.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from .alert import Alert
from .event import Event
from .interfaces import Sink, Source
from .runtime import RunContext
from .schema import Schema

T = TypeVar("T")


def make_context(**kwargs: Any) -> RunContext:
    kwargs.setdefault("schema", Schema.ecs())
    return RunContext(**kwargs)


def make_event(context: RunContext, category: str, ts_ns: int = 0, event_id: int = 0, source_id: str = "test",
               **fields: Any) -> Event:
    """``make_event(ctx, "process", 5, process__name="sh")``: ``__`` stands for a dot."""
    resolved = {context.schema.resolve(k.replace("__", ".")): v for k, v in fields.items()}
    return Event(category, resolved, ts_ns, ts_ns, event_id, source_id=source_id)


def make_alert(context: RunContext, rule_id: str = "test.rule", severity: str = "high", n_events: int = 1) -> Alert:
    events = [make_event(context, "process", i, i + 1, process__name=f"p{i}") for i in range(n_events)]
    return Alert(rule_id=rule_id, rule_name=f"rule {rule_id}", severity=severity, events=events,
                 fields={"process.name": [f"p{i}" for i in range(n_events)]}, ts_mono_ns=n_events - 1,
                 ts_wall_ns=n_events - 1)


def collect_records(source: Source, limit: int | None = None) -> list[Any]:
    """Run ``source`` on this thread and return what it emitted (stops after ``limit``)."""
    records: list[Any] = []
    stop = threading.Event()

    def emit(record: Any) -> bool:
        records.append(record)
        if limit is not None and len(records) >= limit:
            stop.set()
        return True

    source.run(emit, stop)
    return records


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.01) -> T:
    """Call ``predicate`` until it returns something truthy and return that;
    raise ``AssertionError`` naming ``what`` once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_kestrel(*args: str, cwd: str | Path | None = None, timeout: float = 120,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``kestrel *args`` (this interpreter's ``-m kestrel_core``) to completion,
    output captured as text."""
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, **kwargs)


@contextlib.contextmanager
def private_tmpfs(path: Path, label: str = "kestrel-test") -> Iterator[Path]:
    """Mount a fresh 32 MiB tmpfs on ``path`` (created) for the block, so a
    fanotify mount/filesystem mark on it sees only the test's own files; skip
    the test when mounting is not possible here."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", label, str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the test: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class AlertTap(Sink):
    """A sink that keeps every alert with its arrival time (ns since the
    epoch), for tests that check what a live run raised and how fast."""

    PLUGIN_NAME = "alert-tap"

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        self.alerts: list[tuple[Alert, int]] = []
        self.lock = threading.Lock()

    def write_alert(self, alert: Alert) -> None:
        with self.lock:
            self.alerts.append((alert, time.time_ns()))

    def by_rule(self, rule_id: str) -> list[tuple[Alert, int]]:
        with self.lock:
            return [a for a in self.alerts if a[0].rule_id == rule_id]


class SinkContract:
    """Lifecycle every sink honours: open, any number of writes, flush, close;
    alerts survive a flush; an empty run is fine.  Provide a ``sink`` fixture
    returning an unopened instance."""

    @pytest.fixture
    def sink(self) -> Iterator[Sink]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `sink` fixture")

    def test_is_a_sink(self, sink: Sink) -> None:
        assert isinstance(sink, Sink) and sink.PLUGIN_NAME

    def test_empty_lifecycle(self, sink: Sink) -> None:
        sink.open()
        sink.flush()
        sink.close()

    def test_alerts_and_events(self, sink: Sink) -> None:
        sink.open()
        try:
            sink.write_events([make_event(sink.context, "process", 1, 1, process__name="sh")])
            sink.write_alert(make_alert(sink.context))
            sink.write_alert(make_alert(sink.context, "test.seq", "low", n_events=3))
            sink.flush()
        finally:
            sink.close()

    def test_probe(self, sink: Sink) -> None:
        probe = type(sink).probe()
        assert isinstance(probe.available, bool)
        assert probe.available or probe.reason, "an unavailable component must say why"
