"""Test helpers (here, not in tests/: the suite runs with
--import-mode=importlib, so test modules cannot import a sibling module):
a PortableSource running on a thread, probe-based skip markers, and the
``live`` fixture that tests/conftest.py re-exports."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kestrel_core.testing import make_context

from . import connector, fidwatch
from .source import PortableSource

Record = dict[str, Any]


def _connector_reason() -> str:
    ok, why = connector.probe()
    return "" if ok else why


def _fanotify_reason() -> str:
    from kestrel_sources_fanotify import fanotify as fan

    ok, why = fan.probe("/")
    if not ok:
        return why
    mask, why = fidwatch.probe("/")
    return "" if mask else why


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netlink connector, fanotify)")
needs_connector = pytest.mark.skipif(bool(_connector_reason()), reason=_connector_reason() or "-")
needs_fanotify = pytest.mark.skipif(bool(_fanotify_reason()), reason=_fanotify_reason() or "-")


class LiveSource:
    """A PortableSource on a thread; ``wait_for`` scans records as they come."""

    def __init__(self, **settings: Any) -> None:
        self.context = make_context()
        self.source = PortableSource(PortableSource.Settings(**settings), self.context)
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.source.run, args=(self._emit, self.stop), daemon=True)

    def _emit(self, record: Record) -> bool:
        with self._lock:
            self.records.append(record)
        return True

    def start(self) -> LiveSource:
        self.thread.start()
        assert self.source.ready.wait(30), "source did not subscribe within 30 s"
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "source did not stop within 30 s"

    def snapshot(self) -> list[Record]:
        with self._lock:
            return list(self.records)

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float = 20.0, what: str = "") -> Record:
        deadline = time.monotonic() + timeout
        while True:
            for record in self.snapshot():
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no record {what or 'matching'} within {timeout} s")
            time.sleep(0.02)


@pytest.fixture
def live() -> Iterator[Callable[..., LiveSource]]:
    started: list[LiveSource] = []

    def start(**settings: Any) -> LiveSource:
        src = LiveSource(**settings).start()
        started.append(src)
        return src

    yield start
    for src in started:
        src.close()
