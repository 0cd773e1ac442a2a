"""``kestrel record`` and ``kestrel export``: sources or JSONL -> log -> JSONL."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, BinaryIO, Callable

import attrs

from ..interfaces import Interest, NormalizeError
from ..jsonlines import MAX_LINE_BYTES, LineError, parse_object, read_lines, too_long
from ..normalize import EcsJsonNormalizer
from ..runtime import RunContext
from ..schema import Schema
from .format import KlogReader, KlogWriter

log = logging.getLogger("kestrel")

JSONL_SOURCE_ID = "jsonl"
"""Source id of converted JSONL events: what ``kestrel run`` with a jsonl source calls them."""


@attrs.define
class ConvertResult:
    events: int = 0
    rejected: int = 0
    """Lines that are not JSON objects the normalizer accepts (each logged with file:line)."""


def convert_jsonl(lines: BinaryIO, out: str | Path | BinaryIO, *, name: str = "<stdin>",
                  normalizer_settings: Any = None, compression: str = "zstd", fsync: str = "close",
                  batch: int = 512, max_line_bytes: int = MAX_LINE_BYTES,
                  progress: Callable[[int, int], None] | None = None) -> ConvertResult:
    """JSONL (a binary stream) -> log.  Each event keeps what export needs to
    give its line back (see :func:`kestrel_core.klog.format.source_extra`).
    ``progress``: told (bytes read, events so far) every 4,096 lines."""
    context = RunContext(schema=Schema.ecs())
    normalizer = EcsJsonNormalizer(normalizer_settings or EcsJsonNormalizer.Settings(), context)
    result = ConvertResult()
    buf = []
    done = 0
    with KlogWriter(out, context.schema, sources=[JSONL_SOURCE_ID], compression=compression, fsync=fsync,
                    meta={"recorded_from": name}) as writer:
        for lineno, raw in read_lines(lines, max_line_bytes):
            if progress is not None:
                done += (raw if raw.__class__ is int else len(raw)) + 1
                if not lineno & 4095:
                    progress(done, result.events + len(buf))
            if raw.__class__ is int:
                log.error("%s", too_long(raw, max_line_bytes).located(name, lineno))
                result.rejected += 1
                continue
            if not raw.strip():
                continue
            try:
                event = normalizer.normalize(parse_object(raw), JSONL_SOURCE_ID)
            except LineError as exc:
                log.error("%s", exc.located(name, lineno))
                result.rejected += 1
                continue
            except NormalizeError as exc:
                log.error("%s:%d: rejected: %s", name, lineno, exc)
                result.rejected += 1
                continue
            buf.append(event)
            if len(buf) >= batch:
                writer.write_events(buf)
                result.events += len(buf)
                buf = []
        writer.write_events(buf)
        result.events += len(buf)
    return result


def record_profile(profile: Any, host: Any, out: str | Path, *, compression: str = "zstd",
                   fsync: str = "close") -> tuple[str, Any]:
    """Run a profile's sources into a log (no rules, no actions, no other
    sinks) until the inputs end or SIGINT/SIGTERM.  Returns (stop reason, stats)."""
    from ..builtins.klog import KlogSink
    from ..pipeline import Run

    job = Run.build(profile, host)
    job.engine = _record_only(job.context.schema)
    for src, _ in job.sources:
        src.set_interest(Interest())  # a recording keeps everything, whatever the profile's rules want
    sink = KlogSink(KlogSink.Settings(path=str(out), compression=compression, fsync=fsync), job.context)
    job.sinks, job.actions = [sink], []
    job.context.components["sink"], job.context.components["action"] = [sink], []
    job.open()
    job.install_signal_handlers()
    return job.execute(), job.context.stats


def _record_only(schema: Schema) -> Any:
    """The engine of ``kestrel record``: no rules, and an interest in
    everything (what the run's parts ask of an engine, with nothing to match)."""
    from ..eql.engine import DetectionEngine

    class RecordOnly(DetectionEngine):
        def interest(self) -> Interest:
            return Interest()

    return RecordOnly(schema, [])


def export_log(path: str | Path, out: BinaryIO, schema: Schema | None = None,
               progress: Callable[[int, int], None] | None = None) -> KlogReader:
    """Log -> JSONL (one source document per event, in log order).  Returns
    the reader, whose ``warnings`` say what could not be read.  ``progress``:
    told (bytes of the log read, events so far) every 4,096 events."""
    reader = KlogReader(path, schema, documents=True)
    try:
        from .format import export_lines

        write = out.write
        for n, line in enumerate(export_lines(reader), 1):
            write(line)
            if progress is not None and not n & 4095:
                progress(reader.bytes_read, n)
    finally:
        reader.close()
    return reader


def stdout_binary() -> BinaryIO:
    return sys.stdout.buffer
