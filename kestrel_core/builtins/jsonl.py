"""JSONL in and out: a source of ECS JSON events (file or stdin) and a sink
writing one alert per line."""

from __future__ import annotations

import os
import stat
import sys
import threading
from typing import Any, BinaryIO

import attrs

from ..interfaces import EMITS_ANY, Emit, Sink, Source
from ..jsonlines import MAX_LINE_BYTES, LineError, dump_json, parse_object, read_lines, too_long
from ..validators import positive


BATCH = 256
"""Records of a regular file handed to the pipeline per call."""


class JsonlSource(Source):
    """One JSON object per line; nested (``{"process": {"name": ..}}``) or
    dotted (``{"process.name": ..}``) keys.  A malformed line (not JSON, not
    UTF-8, nested too deep, longer than ``max_line_bytes``) is logged with its
    file:line:column, counted as dropped (reason ``malformed``) and skipped."""

    PLUGIN_NAME = "jsonl"
    DESCRIPTION = "ECS JSON events, one per line, from a file or stdin"
    NORMALIZER = "ecs-json"

    @classmethod
    def emitted_kinds(cls) -> str:
        return EMITS_ANY  # whatever the input holds

    @attrs.define(kw_only=True)
    class Settings:
        path: str = "-"
        """File to read (relative to the profile), or ``-`` for stdin."""
        max_line_bytes: int = attrs.field(default=MAX_LINE_BYTES, validator=positive)
        """Longest line accepted, in bytes; a longer one is skipped and counted as malformed."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        self._lineno = 0
        self._lines: dict[int, int] | None = None
        self._done = 0
        self._total = 0
        self.display_path = "<stdin>" if settings.path == "-" else settings.path
        self._path = None
        if settings.path != "-":
            profile = context.profile
            self._path = profile.resolve_path(settings.path) if profile is not None else settings.path
            # Fail before the run starts, and know the size for the progress bar.
            self._total = os.stat(self._path).st_size

    def _open(self) -> BinaryIO:
        if self._path is None:
            return sys.stdin.buffer
        return open(self._path, "rb")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        fh = self._open()
        limit = self.settings.max_line_bytes
        # A regular file is handed over BATCH records at a time (one call and
        # one lock round-trip per batch); a pipe or stdin record by record, so
        # a live line is never held back waiting for more.
        emit_batch = getattr(emit, "emit_batch", None) if stat.S_ISREG(os.fstat(fh.fileno()).st_mode) else None
        batch: list[Any] = []
        try:
            for lineno, raw in read_lines(fh, limit):
                self._lineno = lineno
                if raw.__class__ is int:
                    self._done += raw + 1
                    self._reject(too_long(raw, limit))
                    continue
                self._done += len(raw) + 1
                if not raw.strip():
                    continue
                try:
                    record = parse_object(raw)
                except LineError as exc:
                    self._reject(exc)
                    continue
                if emit_batch is None:
                    emit(record)
                    if stop.is_set():
                        break
                    continue
                batch.append((lineno, record))
                if len(batch) >= BATCH:
                    self._hand_over(emit_batch, batch)
                    batch = []
                    if stop.is_set():
                        break
            if batch:
                self._hand_over(emit_batch, batch)
        finally:
            if fh is not sys.stdin.buffer:
                fh.close()

    def _hand_over(self, emit_batch: Any, batch: list[tuple[int, Any]]) -> None:
        last = self._lineno
        self._lines = {id(record): lineno for lineno, record in batch}  # for describe_record while they normalize
        try:
            emit_batch([record for _lineno, record in batch])
        finally:
            self._lines, self._lineno = None, last

    def _reject(self, exc: LineError) -> None:
        self.context.log.error("%s", exc.located(self.display_path, self._lineno))
        self.context.reject(self.name, "malformed")

    def reject(self, reason: str) -> None:
        self.context.log.error("%s:%d: %s", self.display_path, self._lineno, reason)
        self.context.reject(self.name, "malformed")

    def progress(self) -> tuple[int, int] | None:
        # (min: a last line without its newline was counted with one)
        return (min(self._done, self._total), self._total) if self._total else None

    def describe_record(self, record: Any) -> str:
        lines = self._lines
        return f"{self.display_path}:{lines.get(id(record), self._lineno) if lines else self._lineno}"


class JsonlAlertSink(Sink):
    """Alerts (``Alert.to_dict``) and incident records as JSON lines, to a file or stdout."""

    PLUGIN_NAME = "jsonl"
    DESCRIPTION = "alerts as JSON lines to a file or stdout"

    @attrs.define(kw_only=True)
    class Settings:
        path: str = "-"
        """File to write (relative to the profile), or ``-`` for stdout."""
        append: bool = False
        """Append to the file instead of truncating it at start."""

    def open(self) -> None:
        if self.settings.path == "-":
            self._fh = sys.stdout.buffer
        else:
            profile = self.context.profile
            path = profile.resolve_path(self.settings.path) if profile is not None else self.settings.path
            self._fh = open(path, "ab" if self.settings.append else "wb")

    def write_alert(self, alert: Any) -> None:
        self._fh.write(dump_json(alert.to_dict(self.context.schema)) + b"\n")

    def write_incident(self, record: dict[str, Any]) -> None:
        # the line kestrel replay --incidents writes too (docs/incidents.md)
        self._fh.write(dump_json(record) + b"\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not sys.stdout.buffer:
            self._fh.close()
