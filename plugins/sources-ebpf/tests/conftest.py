"""Shared fixtures: one compiled program set for the whole test session
(compiling and attaching takes seconds), and a runner that drives an
EbpfSource on a thread (helpers in kestrel_sources_ebpf/testing.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kestrel_sources_ebpf.source import EbpfSource
from kestrel_sources_ebpf.testing import PROBE, LossEmit, Running, wait_for

from kestrel_core.interfaces import Interest
from kestrel_core.testing import make_context


@pytest.fixture(scope="session")
def program():
    if not PROBE.available:
        pytest.skip(f"eBPF source unavailable here: {PROBE.reason}")
    from kestrel_sources_ebpf.program import Program

    prog = Program(ringbuf_pages=1024)
    yield prog
    prog.close()


@pytest.fixture
def start_source(program) -> Iterator[Callable[..., Running]]:
    """``start_source(interest=None, **settings)``: a running source on the shared program."""
    running: list[Running] = []

    def start(interest: Interest | None = None, **settings: Any) -> Running:
        ctx = make_context()
        src = EbpfSource(EbpfSource.Settings(**settings), ctx, program=program)
        src.set_interest(interest or Interest())
        emit, stop = LossEmit(ctx.schema), threading.Event()
        t = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
        t.start()
        wait_for(src.ready.is_set, 30, "the source to attach")
        r = Running(src, emit, t, stop)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop()
