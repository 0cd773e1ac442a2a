"""Test helpers for code that drives the ebpf source (this plugin's tests and
the benchmark): the capability probe as a skip marker, waiting on a
condition with a deadline, and an emit that records events and losses."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kestrel_core.testing import AlertTap, wait_for
from kestrel_sources_ebpf.source import EbpfSource, probe_host

PROBE = probe_host()
needs_kernel = pytest.mark.skipif(not PROBE.available, reason=f"eBPF source unavailable here: {PROBE.reason}")


def write_profile(path: Path, rules: Path, sink: str, **source: Any) -> Path:
    """A profile at ``path`` running the ebpf source (``source``: its settings)
    on the rule pack ``rules``, with one sink (``sink``: the body of its
    ``[[sinks]]`` table)."""
    settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in source.items())
    path.write_text(f'[kestrel]\nplugins = ["sources-ebpf"]\nlog_level = "error"\n[rules]\npaths = ["{rules}"]\n'
                    f'[[sources]]\ntype = "ebpf"\n{settings}[[sinks]]\n{sink}\n')
    return path


class LossEmit:
    """An emit that records records and losses, like the core's SourceEmitter."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.records: list[dict[str, Any]] = []
        self.losses: list[tuple[int, int, int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, record: Any) -> bool:
        record = record.to_ecs(self.schema)  # the source emits Events keyed by field id
        with self.lock:
            self.records.append(record)
        return True

    def loss(self, lost: int, first_ts_ns: int, last_ts_ns: int, reason: str = "overflow", **_wall: int) -> None:
        with self.lock:
            self.losses.append((lost, first_ts_ns, last_ts_ns, reason))

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.records)


class Running:
    def __init__(self, source: EbpfSource, emit: LossEmit, thread: threading.Thread, stop: threading.Event) -> None:
        self.source, self.emit, self.thread, self.stop_event = source, emit, thread, stop

    def find(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0, what: str = "record") -> dict:
        return wait_for(lambda: next((r for r in self.emit.snapshot() if pred(r)), None), timeout, what)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "source did not stop"


def start_run(profile_path: Any, program: Any = None, tap: bool = True) -> tuple[Any, threading.Thread, AlertTap | None]:
    """Build the run of a profile whose first source is ``ebpf``, optionally on an
    already loaded ``program`` (compiling takes seconds), execute it on a thread
    and return once the source is attached: ``(run, thread, alert tap or None)``."""
    from kestrel_core.startup import load_profile
    from kestrel_core.pipeline import Run

    profile, host = load_profile(profile_path)
    job = Run.build(profile, host)
    src = job.sources[0][0]
    assert src.PLUGIN_NAME == "ebpf", f"first source of {profile_path} is {src.PLUGIN_NAME!r}, not 'ebpf'"
    if program is not None:
        src.program = program
    alerts = AlertTap() if tap else None
    if alerts is not None:
        job.sinks.append(alerts)
    job.open()
    thread = threading.Thread(target=job.execute, daemon=True)
    thread.start()
    wait_for(src.ready.is_set, 60, "the ebpf source to attach")
    return job, thread, alerts
