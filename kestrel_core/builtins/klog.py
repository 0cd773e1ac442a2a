"""``.klog`` in and out: a source replaying a recorded log through a run, and
a sink recording every processed event (and every loss) of a run."""

from __future__ import annotations

import os
import threading
from typing import Any

import attrs

from ..event import Event, Gap
from ..interfaces import EMITS_ANY, Emit, NormalizeError, Normalizer, Sink, Source
from ..klog.format import FSYNC_POLICIES, KlogReader, KlogWriter


def _resolve(context: Any, path: str) -> str:
    profile = context.profile
    return str(profile.resolve_path(path)) if profile is not None else path


class KlogSource(Source):
    """Events and gaps of a recorded log, in file order.  Damage in the log
    is logged (torn tail with its byte offset, damaged frames by number) and
    every readable record is still emitted.  ``kestrel replay`` is the
    deterministic offline path; this source feeds a log through a live run."""

    PLUGIN_NAME = "klog"
    DESCRIPTION = "events recorded in a .klog event log"
    NORMALIZER = "klog"

    @classmethod
    def emitted_kinds(cls) -> str:
        return EMITS_ANY  # whatever the input holds

    @attrs.define(kw_only=True)
    class Settings:
        path: str
        """Log to read, relative to the profile."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        self._path = _resolve(context, settings.path)
        self._total = os.stat(self._path).st_size  # fail before the run starts
        self._done = 0
        self._count = 0

    def run(self, emit: Emit, stop: threading.Event) -> None:
        loss = getattr(emit, "loss", None)
        with KlogReader(self._path, self.context.schema, documents=True) as reader:
            for rec in reader.records():
                if isinstance(rec, Gap):
                    if loss is not None:
                        loss(rec.lost, rec.first_ts_ns, rec.last_ts_ns, rec.reason, first_wall_ns=rec.first_wall_ns,
                             last_wall_ns=rec.last_wall_ns)
                    continue
                self._count += 1
                emit(rec)
                if stop.is_set():
                    break
            self._done = self._total

    def progress(self) -> tuple[int, int] | None:
        return (self._done, self._total) if self._total else None

    def describe_record(self, record: Any) -> str:
        return f"{self.settings.path}: event {self._count}"


class KlogNormalizer(Normalizer):
    """The events of a log are normalized already: passed through as they are."""

    PLUGIN_NAME = "klog"
    DESCRIPTION = "events read from a .klog (already normalized)"

    def normalize(self, record: Any, source_id: str) -> Event:
        if not isinstance(record, Event):
            raise NormalizeError(f"expected an event read from a .klog, got {type(record).__name__}")
        return record


class KlogSink(Sink):
    """Records every processed event and every loss (gap) of the run in a
    ``.klog``; ignores alerts (replay recomputes them)."""

    PLUGIN_NAME = "klog"
    DESCRIPTION = "records the run's events and losses in a .klog event log"

    @attrs.define(kw_only=True)
    class Settings:
        path: str
        """Log to write, relative to the profile (truncated at start)."""
        compression: str = attrs.field(default="zstd",
                                       validator=attrs.validators.in_(("none", "zlib", "zstd", "lz4")))
        """Frame compression: ``zstd`` (default), ``zlib``, ``lz4`` or ``none``."""
        fsync: str = attrs.field(default="close", validator=attrs.validators.in_(FSYNC_POLICIES))
        """``never``, ``close`` (default) or ``frame`` (after every frame)."""

    _writer: KlogWriter | None = None

    def open(self) -> None:
        sources = [s.name for s in self.context.components.get("source", []) if getattr(s, "name", None)]
        self._writer = KlogWriter(_resolve(self.context, self.settings.path), self.context.schema, sources=sources,
                                  compression=self.settings.compression, fsync=self.settings.fsync)

    def write_alert(self, alert: Any) -> None:
        pass

    def write_events(self, events: Any) -> None:
        if self._writer is not None:
            self._writer.write_events(events)

    def write_gap(self, gap: Gap) -> None:
        if self._writer is not None:
            self._writer.write_gap(gap)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
