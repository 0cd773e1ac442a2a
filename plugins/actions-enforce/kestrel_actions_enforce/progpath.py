"""The lifecycle shared by the rungs that are one BPF program: load it
(:mod:`.kprogram`: compiled objects, bcc as the fallback), read its report
ring on a thread, honour the ``enabled`` map, read the ``counters`` array,
release everything on close."""

from __future__ import annotations

import abc
import ctypes
import threading
from typing import ClassVar

from . import kprogram
from .base import EnforcementPath, Report


class ProgramPath(EnforcementPath):
    PROGRAM: ClassVar[str]
    """``bpf/<PROGRAM>.c`` in this package."""
    RING: ClassVar[str]
    """The ring buffer the program reports its own decisions on."""
    COUNTERS: ClassVar[tuple[str, ...]]
    """Names of the ``counters`` array's slots, in order."""
    MAPS: ClassVar[kprogram.MapTypes]
    """The maps user space drives: name -> (key type, leaf type)."""
    PROGRAM_TYPES: ClassVar[dict[str, tuple[int, int]]] = {}
    """Programs attached by the rung itself: name -> (program type, expected attach type)."""

    def __init__(self, report: Report | None = None) -> None:
        super().__init__(report)
        self._prog: kprogram.Loaded | None = None
        self._lock = threading.Lock()
        self.enabled = True

    @classmethod
    def load(cls) -> kprogram.Loaded:
        return kprogram.load(cls.PROGRAM, {"enabled": (ctypes.c_int, ctypes.c_uint32),
                                           "counters": (ctypes.c_int, ctypes.c_uint64), **cls.MAPS},
                             cls.PROGRAM_TYPES)

    @property
    def backend(self) -> str:
        """``objects`` or ``bcc`` once installed."""
        return self._prog.backend if self._prog is not None else ""

    def install(self) -> None:
        self._prog = self.load()
        try:
            self._loaded(self._prog)
            self._write_enabled(self.enabled)
            self._prog.start_reports(self.RING, self._on_record, self.NAME)
        except BaseException:
            self._prog.close()
            self._prog = None
            raise

    def _loaded(self, prog: kprogram.Loaded) -> None:
        """Called after loading, before anything else touches the program."""

    @abc.abstractmethod
    def _on_record(self, raw: bytes) -> None:
        """One record from ``RING`` (on the reporter thread)."""

    def _write_enabled(self, enabled: bool) -> None:
        self._prog.maps["enabled"][ctypes.c_int(0)] = ctypes.c_uint32(1 if enabled else 0)

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if self._prog is not None:
            self._write_enabled(enabled)

    def metrics(self) -> dict[str, float]:
        if self._prog is None:
            return {}
        table = self._prog.maps["counters"]
        return {name: float(table[ctypes.c_int(i)].value) for i, name in enumerate(self.COUNTERS)}

    def close(self) -> None:
        if self._prog is not None:
            self._prog.close()
            self._prog = None
