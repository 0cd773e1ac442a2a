"""Fixtures of the api-server tests (helpers: :mod:`kestrel_api_server.testing`)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from kestrel_core.testing import make_context
from kestrel_api_server import ApiSink
from kestrel_api_server.testing import KestrelRun, free_port


@pytest.fixture
def open_api(tmp_path) -> Iterator[Callable[..., ApiSink]]:
    """Build and open an ``api`` sink on a free port (closed at teardown)."""
    sinks: list[ApiSink] = []

    def make(context=None, **settings: Any) -> ApiSink:
        settings.setdefault("address", "127.0.0.1:0")
        settings.setdefault("path", str(tmp_path / "alerts.sqlite"))
        settings.setdefault("commit", "alert")  # tests write alerts one by one, no run flushes for them
        sink = ApiSink(ApiSink.Settings(**settings), context or make_context())
        sinks.append(sink)
        sink.open()
        return sink

    yield make
    for sink in sinks:
        sink.close()


@pytest.fixture
def kestrel_run(tmp_path) -> Iterator[Callable[..., KestrelRun]]:
    runs: list[KestrelRun] = []

    def make(**kw: Any) -> KestrelRun:
        run = KestrelRun(tmp_path, kw.pop("port", None) or free_port(), **kw)
        runs.append(run)
        return run

    yield make
    for run in runs:
        if run.proc is not None and run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(10)

