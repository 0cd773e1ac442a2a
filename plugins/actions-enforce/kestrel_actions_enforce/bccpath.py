"""The lifecycle shared by the rungs that are one bcc program: compile,
open the program's report ring, honour the ``enabled`` map, poll reports on a
thread, read the ``counters`` array, release everything on close."""

from __future__ import annotations

import abc
import ctypes
import threading
from typing import Any, ClassVar

from .base import EnforcementPath, Report
from .bccload import compile_program, program_text
from .reporter import RingReporter


class BccProgramPath(EnforcementPath):
    PROGRAM: ClassVar[str]
    """``bpf/<PROGRAM>.c`` in this package."""
    RING: ClassVar[str]
    """The ring buffer the program reports its own decisions on."""
    COUNTERS: ClassVar[tuple[str, ...]]
    """Names of the ``counters`` array's slots, in order."""

    def __init__(self, report: Report | None = None) -> None:
        super().__init__(report)
        self._bpf: Any = None
        self._reporter: RingReporter | None = None
        self._lock = threading.Lock()
        self.enabled = True

    def install(self) -> None:
        self._bpf = compile_program(program_text(self.PROGRAM))
        self._loaded(self._bpf)
        self._bpf[self.RING.encode()].open_ring_buffer(self._on_report)
        self._write_enabled(self.enabled)
        self._reporter = RingReporter(self._bpf, self.NAME)
        self._reporter.start()

    def _loaded(self, bpf: Any) -> None:
        """Called after compiling, before anything else touches ``bpf``."""

    @abc.abstractmethod
    def _on_report(self, ctx: Any, data: Any, size: int) -> None:
        """One record from ``RING`` (on the reporter thread)."""

    def _write_enabled(self, enabled: bool) -> None:
        self._bpf[b"enabled"][ctypes.c_int(0)] = ctypes.c_uint32(1 if enabled else 0)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if self._bpf is not None:
            self._write_enabled(enabled)

    def metrics(self) -> dict[str, float]:
        if self._bpf is None:
            return {}
        table = self._bpf[b"counters"]
        return {name: float(table[ctypes.c_int(i)].value) for i, name in enumerate(self.COUNTERS)}

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.stop()
            self._reporter = None
        if self._bpf is not None:
            self._bpf.cleanup()  # detaches the program; maps go with it
            self._bpf = None
