"""The binary event log (``.klog`` v1): writer, reader, JSON export.

Layout (docs/klog.md has the byte tables): a 12-byte file header (magic,
format version), then frames.  Every frame starts with a sync marker and
carries its type, a sequence number, the payload length and a CRC32, so a
reader can (a) stop cleanly at a torn tail and say at which byte it starts,
(b) detect a damaged frame, name it by number, and resynchronize on the next
sync marker.  Payloads are msgpack (a well-kept C codec: one call packs or
unpacks a whole frame of events, far faster than per-field ``struct`` in
Python; numbers in docs/klog.md).

Events are stored normalized (field id -> typed value) for replay, plus what
is needed to give back the source document exactly (``kestrel export``): the
original JSON value of each field the normalizer changed (``@timestamp``
string, ``event.category`` string vs list, ...), or the whole document when
its shape cannot be rebuilt from the field paths (dotted keys, ...).
"""

from __future__ import annotations

import bisect
import enum
import gc
import logging
import mmap
import os
import platform
import socket
import struct
import weakref
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Sequence

import attrs
import msgpack
import orjson

from .. import __version__
from ..event import Event, Gap
from ..jsonlines import dump_json
from ..normalize import nest as _nest
from ..schema import SCHEMA_VERSION, FieldType, Schema

log = logging.getLogger("kestrel")

MAGIC = b"\x89KLOG\r\n\x1a"
"""PNG-style: a non-ASCII first byte and CR LF / ^Z catch text-mode mangling."""
FORMAT_VERSION = 1
FILE_HEADER = struct.Struct("<8sHH")  # magic, format version, reserved (0)
SYNC = b"\xf7KF\xa5"
"""Frame sync marker.  0xF7 never occurs in UTF-8 text; a chance match inside
a payload is rejected by the frame CRC."""
FRAME = struct.Struct("<4sBBHIII")  # sync, type, flags, count, seq, length, crc32
MAX_FRAME_PAYLOAD = 64 << 20
"""A length above this is damage, not data."""
EVENTS_PER_FRAME = 512
"""Events per frame: large enough that per-frame costs (CRC, one write and
flush) vanish, small enough that a damaged frame loses few events."""


class FrameType(enum.IntEnum):
    HEADER = 1
    DEFS = 2
    EVENTS = 3
    GAP = 4
    END = 5


class Codec(enum.IntEnum):
    """Frame flags bits 0-1: payload compression (measured in docs/klog.md)."""

    NONE = 0
    ZLIB = 1
    ZSTD = 2
    LZ4 = 3


FSYNC_POLICIES = ("never", "close", "frame")

_EXT_BIGINT = 1
_U64 = 1 << 64


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, int):  # beyond 64 bits (entity keys, JSON big integers)
        return msgpack.ExtType(_EXT_BIGINT, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a .klog")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_BIGINT:
        return int.from_bytes(data, "big", signed=True)
    return msgpack.ExtType(code, data)


def _compressor(codec: Codec) -> Callable[[bytes], bytes]:
    if codec is Codec.NONE:
        return lambda b: b
    if codec is Codec.ZLIB:
        return lambda b: zlib.compress(b, 1)
    if codec is Codec.ZSTD:
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress
    import lz4.frame

    return lambda b: lz4.frame.compress(b)


def _decompressor(codec: int) -> Callable[[bytes], bytes]:
    if codec == Codec.NONE:
        return lambda b: b
    if codec == Codec.ZLIB:
        return zlib.decompress
    if codec == Codec.ZSTD:
        import zstandard

        return zstandard.ZstdDecompressor().decompress
    if codec == Codec.LZ4:
        import lz4.frame

        return lz4.frame.decompress
    raise ValueError(f"unknown compression codec {codec}")


def host_info() -> dict[str, str]:
    uname = platform.uname()
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    # boot_id: ts_mono_ns of live sources is only comparable within one boot
    return {"hostname": socket.gethostname(), "system": uname.system, "kernel": uname.release,
            "machine": uname.machine, "boot_id": boot_id}


# --------------------------------------------------------------------------- documents (lossless export)


class ExtraBuilder:
    """What to store besides an event's typed fields so that export gives
    back its source document (``event.raw``) exactly once re-serialized:

    * ``None``: the typed fields are the document's values, and its shape is
      what nesting the field paths in field order gives (the normalizer
      fills ``fields`` in document order);
    * ``{"o": {field id: original value}}``: the same, but these values were
      changed by the normalizer (an ISO ``@timestamp`` now in ns, a string
      category now a list, a non-canonical IP, ``1.0`` for a long, ...);
    * ``{"r": document JSON}``: a shape the paths cannot rebuild (a key with
      a dot in it, a value no field holds).
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._ids: dict[str, int] = {}

    def __call__(self, event: Event) -> dict[str, Any] | None:
        raw = event.raw
        if raw.__class__ is not dict:
            return None
        fields = event.fields
        originals: dict[int, Any] = {}
        leaves = self._walk(raw, "", fields, originals)
        if leaves is None or leaves != len(fields):
            return {"r": orjson.dumps(raw)}
        return {"o": originals} if originals else None

    def _walk(self, node: dict[str, Any], prefix: str, fields: dict[int, Any], originals: dict[int, Any]) -> int | None:
        """Leaves under ``node``, or None when the document cannot be rebuilt from paths."""
        ids = self._ids
        n = 0
        for key, value in node.items():
            if "." in key:
                return None
            path = prefix + key
            if value.__class__ is dict and value:
                sub = self._walk(value, path + ".", fields, originals)
                if sub is None:
                    return None
                n += sub
                continue
            fid = ids.get(path)
            if fid is None:
                fdef = self.schema.get(path)
                if fdef is None:
                    return None
                fid = ids[path] = fdef.id
            typed = fields.get(fid, _MISSING)
            if typed is not value:
                if typed is _MISSING:
                    return None
                if typed.__class__ is not value.__class__ or typed != value:
                    originals[fid] = value
            n += 1
        return n


_MISSING = object()


def source_extra(event: Event, schema: Schema) -> dict[str, Any] | None:
    """:class:`ExtraBuilder` for one event."""
    return ExtraBuilder(schema)(event)


def document(fields: dict[int, Any], extra: dict[str, Any] | None, parts: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The source document of a stored event (nested ECS from the typed
    fields when the log holds nothing more).  ``parts[field id]`` is the
    field's path split on dots."""
    if extra:
        raw = extra.get("r")
        if raw is not None:
            return orjson.loads(raw)
        orig = extra.get("o") or {}
        return _nest((parts[fid], orig[fid] if fid in orig else value) for fid, value in fields.items())
    return _nest((parts[fid], value) for fid, value in fields.items())


class Nester:
    """:func:`document` at several times the speed: for each field layout (the
    field ids of an event, in order: a log has few) it compiles, once, a
    function whose body is the nested dict display, so one call builds the
    whole document in bytecode.  Keys enter the code only through ``repr``
    of a ``str``."""

    MAX_LAYOUTS = 4096
    """Beyond this many layouts (fields in many orders) fall back to :func:`document`."""

    def __init__(self, parts: Sequence[Sequence[str]]) -> None:
        self.parts = parts
        self._cache: dict[tuple[int, ...], Callable[..., dict[str, Any]] | None] = {}

    def __call__(self, fields: dict[int, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
        orig = None
        if extra:
            if extra.get("r") is not None:
                return orjson.loads(extra["r"])
            orig = extra.get("o")
        layout = tuple(fields)
        build = self._cache.get(layout, _MISSING)
        if build is _MISSING:
            build = self._cache[layout] = self._compile(layout) if len(self._cache) < self.MAX_LAYOUTS else None
        if build is None:
            return document(fields, extra, self.parts)
        if orig:
            return build(*[orig[fid] if fid in orig else value for fid, value in fields.items()])
        return build(*fields.values())

    def _compile(self, layout: tuple[int, ...]) -> Callable[..., dict[str, Any]] | None:
        tree: dict[str, Any] = {}
        for pos, fid in enumerate(layout):
            parts = self.parts[fid]
            node = tree
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    if nxt is not None:  # a path that is both a leaf and a parent: let _nest decide
                        return None
                    nxt = node[part] = {}
                node = nxt
            if parts[-1] in node:
                return None
            node[parts[-1]] = pos

        def display(node: dict[str, Any]) -> str:
            return "{" + ", ".join(f"{key!r}: " + (display(v) if isinstance(v, dict) else f"v{v}")
                                   for key, v in node.items()) + "}"

        args = ", ".join(f"v{i}" for i in range(len(layout)))
        if len(layout) > 250:  # keep the generated function small
            return None
        namespace: dict[str, Any] = {}
        exec(f"def build({args}):\n    return {display(tree)}\n", namespace)  # noqa: S102 - keys are repr()'d str
        return namespace["build"]


# --------------------------------------------------------------------------- writer


class KlogWriter:
    """Appends frames to a new log.  Each frame is written with one call and
    flushed to the OS before ``write_*`` returns, so after a crash the file
    holds whole frames plus at most one torn one; ``fsync`` says when the
    data is also forced to disk (``never``, at ``close``, after every ``frame``)."""

    def __init__(self, target: str | Path | BinaryIO, schema: Schema, *, sources: Sequence[str] = (),
                 compression: str = "zstd", fsync: str = "close", events_per_frame: int = EVENTS_PER_FRAME,
                 host: dict[str, str] | None = None, meta: dict[str, Any] | None = None) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}")
        try:
            self.codec = Codec[compression.upper()]
        except KeyError:
            raise ValueError(f"unknown compression {compression!r} (none, zlib, zstd, lz4)") from None
        try:
            self._compress = _compressor(self.codec)
        except ImportError as exc:
            package = (exc.name or compression).split(".")[0]
            raise ValueError(f"compression {compression!r} needs the {package} package (pip install {package})") \
                from None
        if isinstance(target, (str, Path)):
            self.path: Path | None = Path(target)
            self._fh: BinaryIO = open(target, "wb")
            self._own = True
        else:
            self.path, self._fh, self._own = None, target, False
        self.schema = schema
        self.fsync = fsync
        self.events_per_frame = events_per_frame
        self._packer = msgpack.Packer(default=_pack_default, use_bin_type=True)
        self._seq = 0
        self._nfields = len(schema)
        self._sources: dict[str, int] = {}
        self._extra = ExtraBuilder(schema)
        self.events_written = 0
        self.gaps_written = 0
        self.closed = False
        self._fh.write(FILE_HEADER.pack(MAGIC, FORMAT_VERSION, 0))
        for name in sources:
            self._sources[name] = len(self._sources)
        header = {
            "format_version": FORMAT_VERSION,
            "schema_version": SCHEMA_VERSION,
            "kestrel_version": __version__,
            "fields": [[f.id, f.path, f.type.value] for f in schema],
            "sources": list(self._sources),
            "host": host if host is not None else host_info(),
            "compression": self.codec.name.lower(),
            "meta": meta or {},
        }
        self._frame(FrameType.HEADER, header, 0, compress=False)

    def _frame(self, ftype: FrameType, payload: Any, count: int, compress: bool = True) -> None:
        body = self._packer.pack(payload)
        flags = 0
        if compress and self.codec is not Codec.NONE:
            body, flags = self._compress(body), int(self.codec)
        head = struct.pack("<BBHII", ftype, flags, count, self._seq, len(body))
        crc = zlib.crc32(body, zlib.crc32(head))
        self._fh.write(SYNC + head + struct.pack("<I", crc) + body)
        self._fh.flush()
        if self.fsync == "frame":
            os.fsync(self._fh.fileno())
        self._seq += 1

    def _defs(self, source_names: Sequence[str]) -> None:
        """Announce fields registered since the last frame (first-seen ECS
        extras) and new source names, before the events that use them."""
        new_fields = []
        if len(self.schema) > self._nfields:
            new_fields = [[f.id, f.path, f.type.value] for f in list(self.schema)[self._nfields:]]
            self._nfields += len(new_fields)
        new_sources = []
        for name in source_names:
            if name not in self._sources:
                self._sources[name] = len(self._sources)
                new_sources.append([self._sources[name], name])
        if new_fields or new_sources:
            self._frame(FrameType.DEFS, {"fields": new_fields, "sources": new_sources}, 0)

    def source_index(self, name: str) -> int:
        idx = self._sources.get(name)
        if idx is None:
            self._defs([name])
            idx = self._sources[name]
        return idx

    def write_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        names = {e.source_id for e in events}
        if len(self.schema) > self._nfields or not names <= self._sources.keys():
            self._defs(sorted(names))
        sources, extra = self._sources, self._extra
        step = self.events_per_frame
        for start in range(0, len(events), step):
            chunk = events[start:start + step]
            # 128-bit entity keys as 16 bytes: a C call, where msgpack's
            # overflow hook would cost a Python call per event
            rows = [[e.category, e.ts_mono_ns, e.ts_wall_ns, e.event_id,
                     e.entity_key if e.entity_key < _U64 else e.entity_key.to_bytes(16, "big"),
                     sources[e.source_id], e.fields, None if e.raw is None else extra(e)]
                    for e in chunk]
            self._frame(FrameType.EVENTS, rows, len(rows))
            self.events_written += len(rows)

    def write_gap(self, gap: Gap) -> None:
        src = self.source_index(gap.source_id)
        self._frame(FrameType.GAP, [src, gap.lost, gap.first_ts_ns, gap.last_ts_ns, gap.reason, gap.first_wall_ns,
                                    gap.last_wall_ns], 0)
        self.gaps_written += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        """Write the END frame (a clean close: counts), then fsync per policy."""
        if self.closed:
            return
        self.closed = True
        self._frame(FrameType.END, {"events": self.events_written, "gaps": self.gaps_written}, 0)
        if self.fsync != "never":
            os.fsync(self._fh.fileno())
        if self._own:
            self._fh.close()

    def __enter__(self) -> "KlogWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- reader


@attrs.frozen
class LogWarning:
    """A problem found while reading; reading goes on past it when it can."""

    kind: str
    """``torn_tail``, ``corrupt_frame``, ``bad_payload``, ``missing_frames``, ``duplicate_frame``,
    ``reordered_frame``, ``corrupt_header``, ``unknown_field``, ``unknown_source``, ``no_end``."""
    offset: int
    """Byte offset where the problem starts."""
    message: str
    frames: tuple[int, int] | None = None
    """First and last frame number affected (``corrupt_frame``)."""
    end: int | None = None
    """Byte offset where readable data resumes (``corrupt_frame``) or the file ends (``torn_tail``)."""

    def __str__(self) -> str:
        return self.message


class KlogError(ValueError):
    """The log cannot be read at all (not a .klog, unknown version, damaged header)."""


LOOKAHEAD_FRAMES = 16
"""How many frames past a jump in frame numbers the reader looks for the
missing numbers before it calls them lost: frames found there were only
written out of order."""

_TS_MAX = (1 << 63) - 1
MAX_SOURCES = 1 << 16
"""Source numbers at or past this are damage, not sources."""
_FIELD_TYPES = frozenset(t.value for t in FieldType)
_SYNTH_GAP = -1
"""Pseudo frame type of a gap the reader infers from lost frames."""


class _Shape(ValueError):
    """A payload that decodes (good CRC) but is not what its frame type holds."""


@attrs.define
class _Hole:
    """Frames lost to damage, deletion or a bad payload, waiting for the next
    events to bound them in time."""

    reason: str
    lost: int | None
    """Events known to be lost (the CRC-checked count of a frame whose payload
    is bad), or None: estimated from the neighbours' event ids."""
    prev: tuple[int, int, int, str] | None
    """(ts_mono_ns, ts_wall_ns, event_id, source) of the last event read before the hole."""


def _kind(value: Any) -> str:
    return {dict: "a map", list: "an array", str: "a string", bytes: "bytes", int: "an integer",
            float: "a float", bool: "a boolean", type(None): "nil"}.get(value.__class__, type(value).__name__)


def _check_defs(fields: Any, sources: Any, nfields: int, nsources: int, header: bool) -> None:
    """Field and source definitions: ``[[id, path, type], ...]`` and (header)
    ``[name, ...]`` or (DEFS) ``[[number, name], ...]``.  Ids may only extend
    the tables they add to (a reader allocates up to the largest)."""
    if fields.__class__ is not list:
        raise _Shape(f"'fields' is {_kind(fields)}, not an array")
    limit = nfields + len(fields)
    for i, f in enumerate(fields):
        if (f.__class__ is not list or len(f) != 3 or f[0].__class__ is not int or f[1].__class__ is not str
                or f[2] not in _FIELD_TYPES):
            raise _Shape(f"field definition {i} is not [id, path, type]: {f!r:.80}")
        if not 0 <= f[0] < limit or not f[1]:
            raise _Shape(f"field definition {i} has id {f[0]} (expected below {limit}) or an empty path")
    if sources.__class__ is not list:
        raise _Shape(f"'sources' is {_kind(sources)}, not an array")
    limit = nsources + len(sources)
    for i, src in enumerate(sources):
        if header:
            if src.__class__ is not str:
                raise _Shape(f"source {i} is {_kind(src)}, not a name")
        elif (src.__class__ is not list or len(src) != 2 or src[0].__class__ is not int or not 0 <= src[0] < limit
              or src[1].__class__ is not str):
            raise _Shape(f"source definition {i} is not [number, name] with a number below {limit}: {src!r:.80}")


def _row_problem(row: list, nsources: int) -> str:
    """What is wrong with an event row, or "" when nothing is."""
    cat, ts_mono, ts_wall, eid, _ekey, src, fields, extra = row
    if cat.__class__ is not str:
        return f"category is {_kind(cat)}, not a string"
    for name, value in (("ts_mono_ns", ts_mono), ("ts_wall_ns", ts_wall), ("event_id", eid), ("source number", src)):
        if value.__class__ is not int:
            return f"{name} is {_kind(value)}, not an integer"
    if not 0 <= src < nsources:
        return f"source number {src} is out of range"
    if fields.__class__ is not dict:
        return f"fields are {_kind(fields)}, not a map"
    if extra is not None and extra.__class__ is not dict:
        return f"extra is {_kind(extra)}, not nil or a map"
    return ""


def _runs(lo: int, hi: int, exclude: set[int]) -> list[tuple[int, int]]:
    """[lo, hi] without the numbers in ``exclude``, as ranges."""
    out: list[tuple[int, int]] = []
    start = lo
    for n in sorted(x for x in exclude if lo <= x <= hi):
        if n > start:
            out.append((start, n - 1))
        start = n + 1
    if start <= hi:
        out.append((start, hi))
    return out


RELEASE_BYTES = 16 << 20
"""Bytes of the mapped log read between two releases of its pages (bounds the reader's RSS)."""


class KlogReader:
    """Reads a log in file order.  Damage never raises: each problem becomes a
    :class:`LogWarning` (in ``warnings``, and logged), and every intact frame
    is still read.  Only an unreadable file header raises :class:`KlogError`.

    :param schema: the run's schema; the log's field ids are mapped onto it by
        path (identity, and free, when both were built the same way).
    :param documents: set ``event.raw`` to the source document (export, and
        alerts that show their events as recorded).
    :param lazy_documents: keep what :meth:`document_of` needs to build an
        event's document later, for the few events that end up in alerts
        (replay: building every document would cost 40% of the replay).
        The caller keeps the events alive meanwhile.
    """

    def __init__(self, path: str | Path, schema: Schema | None = None, *, documents: bool = False,
                 lazy_documents: bool = False, on_warning: Callable[[LogWarning], None] | None = None) -> None:
        self.path = Path(path)
        self.schema = schema if schema is not None else Schema.ecs()
        self.documents = documents
        self.lazy_documents = lazy_documents and not documents
        self._pending_docs: weakref.WeakKeyDictionary[Event, tuple[dict[int, Any], Any]] = \
            weakref.WeakKeyDictionary()
        """event -> (fields as stored, extra), when they differ from (event.fields, None).  Weak: a
        streaming replay lets go of the events it is done with, and their entries go with them."""
        self.warnings: list[LogWarning] = []
        self._on_warning = on_warning
        self.header: dict[str, Any] = {}
        self.end: dict[str, Any] | None = None
        """Payload of the END frame when the writer closed the log cleanly."""
        self.sources: list[str] = []
        self._paths: list[str] = []  # log field id -> path
        self._parts: list[tuple[str, ...]] = []  # log field id -> path split on dots
        self._nester = Nester(self._parts)
        self._remap: list[int] | None = None  # log field id -> run field id (None: identity)
        self._unknown_warned = False
        self._decompressors: dict[int, Callable[[bytes], bytes]] = {}
        self.frames: list[tuple[int, int, int, int, int]] = []
        """(frame number, start offset, end offset, type, event count) of every intact frame read."""
        self.events_read = 0
        self.gaps_read = 0
        self.gaps_inferred = 0
        """Gaps the reader added for frames it could not read (damaged, missing, bad payload, torn tail)."""
        self.frames_skipped = 0
        """Duplicate frames skipped."""
        self.bytes_read = 0
        """Bytes of the file scanned so far (for progress bars; ``size`` at the end)."""
        self._last: tuple[int, int, int, str] | None = None
        self._end_counts: dict[str, Any] | None = None
        self._ids_valid: frozenset[int] | None = None
        self._first_copy: dict[int, int] = {}  # frame number -> its index in frames
        with open(self.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            self._buf: bytes | mmap.mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.size = size
        try:
            self._open_header()
        except BaseException:
            self.close()
            raise

    def _open_header(self) -> None:
        size = self.size
        if size < FILE_HEADER.size:
            raise KlogError(f"{self.path}: not a .klog file ({size} bytes, shorter than the file header)")
        magic, version, reserved = FILE_HEADER.unpack_from(self._buf, 0)
        if reserved != 0:  # written as 0: a damaged file header, reported (the frames carry the data)
            self._warn(LogWarning("corrupt_header", 10, f"file header damaged: reserved bytes 10-11 are "
                                  f"0x{reserved:04X}, not 0"))
        if magic != MAGIC:
            raise KlogError(f"{self.path}: not a .klog file (bad magic at byte 0)")
        if version != FORMAT_VERSION:
            raise KlogError(f"{self.path}: .klog format version {version} is not supported (this build reads "
                            f"version {FORMAT_VERSION})")
        self._frames = self._scan()
        first = next(self._frames, None)
        if first is None or first[0] != FrameType.HEADER:
            raise KlogError(f"{self.path}: damaged log header (frame 0 unreadable)"
                            + (f": {self.warnings[-1]}" if self.warnings else ""))
        header = first[1]
        try:
            if header.__class__ is not dict or "fields" not in header or "sources" not in header:
                raise _Shape(f"the header is not a map with 'fields' and 'sources': {header!r:.80}")
            _check_defs(header["fields"], header["sources"], 0, 0, True)
        except _Shape as exc:
            raise KlogError(f"{self.path}: damaged log header (frame 0): {exc}") from None
        self.header = header
        self._define(header.get("fields", []), enumerate(header.get("sources", [])))

    # -- warnings

    def _warn(self, warning: LogWarning) -> None:
        self.warnings.append(warning)
        log.warning("%s: %s", self.path, warning.message)
        if self._on_warning is not None:
            self._on_warning(warning)

    # -- frames

    def _valid_frame_at(self, pos: int) -> tuple[int, int, int, int, int, bytes] | None:
        """(type, flags, count, seq, end, payload) when a whole frame with a good CRC starts at pos."""
        buf, size = self._buf, self.size
        if size - pos < FRAME.size:
            return None
        sync, ftype, flags, count, seq, length, crc = FRAME.unpack_from(buf, pos)
        end = pos + FRAME.size + length
        if sync != SYNC or length > MAX_FRAME_PAYLOAD or end > size:
            return None
        body = buf[pos + FRAME.size:end]
        if zlib.crc32(body, zlib.crc32(buf[pos + 4:pos + 16])) != crc:
            return None
        return ftype, flags, count, seq, end, body

    def _resync(self, pos: int) -> int | None:
        """Offset of the next valid frame at or after pos."""
        buf = self._buf
        while True:
            pos = buf.find(SYNC, pos)
            if pos < 0:
                return None
            if self._valid_frame_at(pos) is not None:
                return pos
            pos += 1

    def _scan(self) -> Iterator[tuple[int, Any, int]]:
        """(frame type, decoded payload, count) of every intact frame, in
        order, with frame numbers checked: a duplicate is skipped, a frame
        written out of order is read where it is, and frames that are lost
        (damaged, missing, with a bad payload, torn) come out as an inferred
        gap (type :data:`_SYNTH_GAP`, a :class:`Gap`) before the next events."""
        pos = FILE_HEADER.size
        size = self.size
        top = -1  # highest frame number read
        soon: set[int] = set()  # numbers the look-ahead saw coming: out of order, not lost
        holes: list[tuple[int, int]] = []  # numbers declared lost, ascending; one arriving later was reordered
        hole_starts: list[int] = []
        pending: list[_Hole] = []
        damaged = False  # bytes before this frame failed the CRC check
        # The pages of the mapping read so far count in the process's RSS until
        # released: drop those behind the reader every RELEASE_BYTES (they are
        # read again from the page cache if a duplicate frame is compared).
        release = getattr(mmap, "MADV_DONTNEED", None) if isinstance(self._buf, mmap.mmap) else None
        released = 0
        while pos < size:
            if release is not None and pos - released >= RELEASE_BYTES:
                upto = pos - pos % mmap.PAGESIZE
                self._buf.madvise(release, 0, upto)
                released = upto
            next_seq = top + 1
            frame = self._valid_frame_at(pos)
            if frame is None:
                nxt = self._resync(pos + 1)
                if nxt is None and self._looks_torn(pos):
                    self._warn(LogWarning("torn_tail", pos, f"torn tail: the file ends at byte {size} inside frame "
                                          f"{next_seq} starting at byte {pos}; the {pos} bytes before it were read "
                                          f"({size - pos} bytes ignored)", (next_seq, next_seq), size))
                    pending.append(_Hole("torn_tail", self._torn_count(pos), self._last))
                    break
                resume = size if nxt is None else nxt
                nseq = None if nxt is None else FRAME.unpack_from(self._buf, nxt)[4]
                last = next_seq if nseq is None else max(next_seq, nseq - 1)
                which = f"frame {next_seq}" if last == next_seq else f"frames {next_seq}-{last}"
                numbers: tuple[int, int] | None = (next_seq, last)
                if nseq is not None and nseq <= next_seq:  # no number missing: garbage, or a damaged copy
                    which, numbers = f"bytes after frame {top} (no frame number is missing after them)", None
                self._warn(LogWarning("corrupt_frame", pos, f"{which} damaged (bytes {pos}-{resume - 1} fail the "
                                      "CRC check); skipped" + (", resumed at the next sync marker"
                                                               if nxt is not None else ", nothing readable after it"),
                                      numbers, resume))
                if nxt is None:
                    pending.append(_Hole("damaged_frames", None, self._last))
                    break
                damaged = True
                pos = nxt
                continue
            ftype, flags, count, seq, end, body = frame
            if seq <= top:
                if seq in soon:
                    soon.discard(seq)
                    self._warn(LogWarning("reordered_frame", pos, f"frame {seq} at byte {pos} is out of order "
                                          f"(it comes after frame {top}); read where it is", (seq, seq), end))
                elif (k := bisect.bisect_right(hole_starts, seq) - 1) >= 0 and seq <= holes[k][1]:
                    self._warn(LogWarning("reordered_frame", pos, f"frame {seq} at byte {pos} comes after frame {top}"
                                          ", later than the reader looks ahead: read, but already counted as lost",
                                          (seq, seq), end))
                else:
                    self._duplicate(seq, pos, end, ftype, count, body)
                    pos = end
                    continue
            elif seq > next_seq:
                ahead = self._peek_seqs(end, next_seq, seq - 1)
                soon |= ahead
                for lo, hi in _runs(next_seq, seq - 1, ahead):
                    holes.append((lo, hi))
                    hole_starts.append(lo)
                    pending.append(_Hole("damaged_frames" if damaged else "missing_frames", None, self._last))
                    if not damaged:
                        which = f"frame {lo} is" if lo == hi else f"frames {lo}-{hi} are"
                        self._warn(LogWarning("missing_frames", pos, f"{which} missing: frame {seq} at byte {pos} "
                                              f"follows frame {top}", (lo, hi), pos))
                top = seq
            else:
                top = seq
            damaged = False
            try:
                payload = self._decode(flags, body, ftype, count)
            except Exception as exc:  # a writer bug, a codec this build lacks, or a payload of the wrong shape
                what = str(exc) if isinstance(exc, _Shape) else f"{type(exc).__name__}: {exc}"
                self._warn(LogWarning("bad_payload", pos, f"frame {seq} at byte {pos}: cannot decode its payload "
                                      f"({what}); skipped", (seq, seq), end))
                if ftype in (FrameType.EVENTS, FrameType.GAP):  # its events, or the loss it recorded, are lost
                    pending.append(_Hole("damaged_frames", count if ftype == FrameType.EVENTS else 0, self._last))
                payload = None
            self.frames.append((seq, pos, end, ftype, count))
            self._first_copy.setdefault(seq, len(self.frames) - 1)
            pos = self.bytes_read = end
            if payload is None:
                continue
            if ftype == FrameType.END:
                self._end_counts = payload
            if ftype == FrameType.EVENTS and payload:
                if pending:
                    gap = self._gap_of(pending, payload[0])
                    pending = []
                    if gap is not None:
                        yield _SYNTH_GAP, gap, 0
                e = payload[-1]
                self._last = (e.ts_mono_ns, e.ts_wall_ns, e.event_id, e.source_id)
            yield ftype, payload, count
        self.bytes_read = size
        gap = self._gap_of(pending, None) if pending else None
        if gap is not None:
            yield _SYNTH_GAP, gap, 0

    def _undefined_source(self, src: int) -> None:
        """Records name a source number no definition declares (its DEFS frame
        was lost): they keep a placeholder name, with one warning."""
        while len(self.sources) <= src:
            self.sources.append(f"source-{len(self.sources)}")
        self._warn(LogWarning("unknown_source", 0, f"records use source number {src}, which no definition frame "
                              f"declares (a lost definitions frame?); it is called {self.sources[src]!r}"))

    def _duplicate(self, seq: int, pos: int, end: int, ftype: int, count: int, body: bytes) -> None:
        idx = self._first_copy.get(seq)
        first = self.frames[idx] if idx is not None else None
        same = first is not None and self._buf[first[1] + FRAME.size:first[2]] == body
        where = f" (first at byte {first[1]})" if first is not None else ""
        self.frames_skipped += 1
        self._warn(LogWarning("duplicate_frame", pos, f"frame {seq} at byte {pos} repeats frame {seq}{where}"
                              + ("" if same else " with different contents")
                              + (f"; skipped ({count} events)" if ftype == FrameType.EVENTS else "; skipped"),
                              (seq, seq), end))

    def _peek_seqs(self, pos: int, lo: int, hi: int) -> set[int]:
        """Numbers in [lo, hi] among the next intact frames from pos."""
        found = set()
        for _ in range(LOOKAHEAD_FRAMES):
            frame = self._valid_frame_at(pos)
            if frame is None:
                break
            if lo <= frame[3] <= hi:
                found.add(frame[3])
            pos = frame[4]
        return found

    def _torn_count(self, pos: int) -> int | None:
        """Events in a torn EVENTS frame, from its (whole, unchecked) header; None when unknown."""
        if self.size - pos < FRAME.size:
            return None
        _sync, ftype, _flags, count, *_rest = FRAME.unpack_from(self._buf, pos)
        return count if ftype == FrameType.EVENTS else 0 if ftype in (FrameType.DEFS, FrameType.END) else None

    def _gap_of(self, holes: list[_Hole], nxt: Event | None) -> Gap | None:
        """One gap for the frames lost between two events read: its count is
        what the lost frames are known to have held, or, when the neighbours'
        event ids allow (ids are consecutive as written), the ids missing
        between them; its time range spans the neighbours (to the end of time
        after the last event read, from 0 before the first).  None when the
        neighbours show that no event was lost (a lost DEFS frame)."""
        prev = holes[0].prev
        known = sum(h.lost or 0 for h in holes)
        lost = known
        if any(h.lost is None for h in holes):
            estimate = None
            if nxt is not None and nxt.event_id > (prev[2] if prev is not None else 0):
                # writers number events from 1 (the bus, the JSONL converter)
                estimate = nxt.event_id - (prev[2] if prev is not None else 0) - 1
            elif nxt is None and self._end_counts is not None:  # after the last event: the END frame's total
                estimate = self._end_counts["events"] - self.events_read
            if estimate is not None and estimate <= 0 and all(h.lost is None for h in holes):
                return None
            lost = max(known, estimate or 0)
        self.gaps_inferred += 1
        lo_ts, lo_wall = (prev[0], prev[1]) if prev is not None else (0, 0)
        hi_ts, hi_wall = (nxt.ts_mono_ns, nxt.ts_wall_ns) if nxt is not None else (_TS_MAX, 0)
        reasons = {h.reason for h in holes}
        reason = "torn_tail" if reasons == {"torn_tail"} else "missing_frames" if reasons == {"missing_frames"} \
            else "damaged_frames"
        source = prev[3] if prev is not None else nxt.source_id if nxt is not None else ""
        return Gap(source, lost, min(lo_ts, hi_ts), max(lo_ts, hi_ts), reason, min(lo_wall, hi_wall) or lo_wall,
                   max(lo_wall, hi_wall))

    def _decode(self, flags: int, body: bytes, ftype: int, count: int = 0) -> Any:
        codec = flags & 3
        decompress = self._decompressors.get(codec)
        if decompress is None:
            decompress = self._decompressors[codec] = _decompressor(codec)
        # Decoding allocates thousands of containers per frame, none of them in
        # a reference cycle: pausing the cyclic collector meanwhile doubles the
        # read rate (it would otherwise rescan every event read so far).
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            payload = msgpack.unpackb(decompress(body), strict_map_key=False, ext_hook=_ext_hook, raw=False)
            if ftype == FrameType.EVENTS:
                return self._events(payload, count)
            self._check(ftype, payload)
            return payload
        finally:
            if paused:
                gc.enable()

    def _check(self, ftype: int, payload: Any) -> None:
        """The shape of a HEADER, DEFS, GAP or END payload (EVENTS: :meth:`_events`)."""
        if ftype == FrameType.GAP:
            if (payload.__class__ is not list or len(payload) != 7 or payload[4].__class__ is not str
                    or any(payload[i].__class__ is not int for i in (0, 1, 2, 3, 5, 6))):
                raise _Shape(f"a GAP frame holds [source, lost, first_ts, last_ts, reason, first_wall, last_wall], "
                             f"not {payload!r:.80}")
            if len(self.sources) <= payload[0] < MAX_SOURCES:
                self._undefined_source(payload[0])
            if not 0 <= payload[0] < len(self.sources) or payload[1] < 0 or payload[2] > payload[3]:
                raise _Shape(f"GAP {payload!r:.80}: source number out of range, negative count or first_ts after "
                             "last_ts")
        elif ftype in (FrameType.DEFS, FrameType.END, FrameType.HEADER):
            if payload.__class__ is not dict:
                raise _Shape(f"a {FrameType(ftype).name} frame holds a map, not {_kind(payload)}")
            if ftype == FrameType.DEFS:
                if "fields" not in payload or "sources" not in payload:
                    raise _Shape(f"a DEFS frame holds 'fields' and 'sources', not {payload!r:.80}")
                _check_defs(payload["fields"], payload["sources"], len(self._paths), len(self.sources), False)
            elif ftype == FrameType.END and any(payload.get(k).__class__ is not int for k in ("events", "gaps")):
                raise _Shape(f"an END frame counts events and gaps as integers, not {payload!r:.80}")

    def _looks_torn(self, pos: int) -> bool:
        """A frame that starts well and only lacks bytes the file does not
        have is a torn tail (a crash mid-write), not damage."""
        if self.size - pos < FRAME.size:
            return self._buf[pos:pos + 4] == SYNC[:max(0, min(4, self.size - pos))]
        sync, *_rest, length, _crc = FRAME.unpack_from(self._buf, pos)
        return sync == SYNC and pos + FRAME.size + length > self.size and length <= MAX_FRAME_PAYLOAD

    # -- definitions

    def _define(self, fields: list, sources: Any) -> None:
        for fid, path, ftype in fields:
            while len(self._paths) <= fid:
                self._paths.append("")
                self._parts.append(("",))
            self._paths[fid] = path
            self._parts[fid] = tuple(path.split("."))
            try:
                target = self.schema.get(path)
                run_id = target.id if target is not None else (
                    self.schema.declare(path, FieldType(ftype)).id if ftype != "any" else self.schema.resolve(path))
            except ValueError:  # declared with another type in this build: keep the path, untyped
                run_id = self.schema.resolve(path)
            if self._remap is None and run_id != fid:
                self._remap = list(range(len(self._paths)))
            if self._remap is not None:
                while len(self._remap) <= fid:
                    self._remap.append(-1)
                self._remap[fid] = run_id
        for idx, name in sources:
            while len(self.sources) <= idx:
                self.sources.append("")
            self.sources[idx] = name

    # -- records

    def __iter__(self) -> Iterator[Event | Gap]:
        return self.records()

    def records(self) -> Iterator[Event | Gap]:
        """Events and gaps in file order."""
        for batch in self.batches():
            if batch.__class__ is list:
                yield from batch
            else:
                yield batch

    def batches(self) -> Iterator[list[Event] | Gap]:
        """Like :meth:`records`, the events of one frame as one list (cheaper)."""
        for ftype, payload, _count in self._frames:
            if ftype == FrameType.EVENTS:
                yield payload  # decoded into events by _decode
            elif ftype == _SYNTH_GAP:
                yield payload
            elif ftype == FrameType.GAP:
                src, lost, first, last, reason, first_wall, last_wall = payload
                self.gaps_read += 1
                yield Gap(self.sources[src], lost, first, last, reason, first_wall, last_wall)
            elif ftype == FrameType.DEFS:
                self._define(payload.get("fields", []), payload.get("sources", []))
            elif ftype == FrameType.END:
                self.end = payload
            # HEADER again or a future frame type: ignored (forward compatible)
        if self.end is None and not any(w.kind == "torn_tail" for w in self.warnings):
            self._warn(LogWarning("no_end", self.size, f"no END frame: the log was not closed (a crash, or still "
                                  f"being written); everything up to byte {self.size} was read", None, self.size))

    def _events(self, rows: Any, count: int) -> list[Event]:
        """Events of one frame, each row's shape checked before use (a few
        type tests per event; :class:`_Shape` names the first bad row)."""
        if rows.__class__ is not list or len(rows) != count:
            raise _Shape(f"an EVENTS frame of {count} events holds {_kind(rows)}"
                         + (f" of {len(rows)}" if rows.__class__ is list else ""))
        sources = self.sources
        nsources, nfields = len(sources), len(self._paths)
        remap = self._remap
        # Field ids checked once per frame, on the union of its events' keys (a
        # tenth of the cost of checking each event's); a malformed row makes
        # the union fail or hold junk, and the row loop below names it.
        try:
            keys = set().union(*[row[6] for row in rows])
        except Exception:
            keys = set()
        if self._ids_valid is None or len(self._ids_valid) != nfields:
            self._ids_valid = frozenset(range(nfields))
        if not keys <= self._ids_valid:
            junk = [k for k in keys if k.__class__ is not int or k < 0]
            if junk and all(row.__class__ is list and len(row) == 8 and row[6].__class__ is dict for row in rows):
                raise _Shape(f"field ids must be non-negative integers, not {sorted(map(repr, junk))[:3]}")
            if remap is None:  # ids no definition declares (a lost DEFS frame): dropped, with one warning
                remap = list(range(nfields))
        documents = self.documents
        lazy, pending = self.lazy_documents, self._pending_docs
        nester = self._nester
        out = []
        append = out.append
        for row in rows:
            try:  # (anything but an array of 8 fails here or on the type tests below)
                cat, ts_mono, ts_wall, eid, ekey, src, fields, extra = row
            except (TypeError, ValueError):
                raise _Shape(f"event {len(out)} is {_kind(row)}" + (f" of {len(row)}" if row.__class__ is list else "")
                             + ", not an array of 8") from None
            if not (cat.__class__ is str and ts_mono.__class__ is int and ts_wall.__class__ is int
                    and eid.__class__ is int and src.__class__ is int and 0 <= src < nsources
                    and fields.__class__ is dict and (extra is None or extra.__class__ is dict)):
                if src.__class__ is int and nsources <= src < MAX_SOURCES:  # its DEFS frame was lost
                    self._undefined_source(src)
                    nsources = len(sources)
                problem = _row_problem(row, nsources)
                if problem:
                    raise _Shape(f"event {len(out)}: {problem}")
            if ekey.__class__ is bytes and len(ekey) == 16:
                ekey = int.from_bytes(ekey, "big")
            elif ekey.__class__ is not int or ekey < 0:
                raise _Shape(f"event {len(out)}: entity key is {_kind(ekey)} {ekey!r:.40}, not an integer or 16 bytes")
            ev = Event(cat, fields if remap is None else self._map_fields(fields, remap), ts_mono, ts_wall, eid,
                       ekey, sources[src])
            if documents:  # from the log's own ids and paths
                ev.raw = self._document(fields, extra, len(out))
            elif lazy and (extra is not None or remap is not None):
                pending[ev] = (fields, extra)
            append(ev)
        self.events_read += len(out)
        return out

    def _document(self, fields: dict[int, Any], extra: Any, index: int = 0) -> dict[str, Any]:
        """The source document, or, when what the log stored to rebuild it is
        damaged, the nested typed fields (with a warning)."""
        try:
            return self._nester(fields, extra)
        except Exception as exc:  # a bad "r" (not JSON) or "o" (not a map of field ids)
            self._warn(LogWarning("bad_payload", 0, f"event {index} of a frame: its source document cannot be "
                                  f"rebuilt ({type(exc).__name__}: {exc}); exported from its typed fields"))
            try:
                return self._nester(fields, None)
            except Exception:  # field ids beyond the table: keep what maps
                return document({f: v for f, v in fields.items() if f < len(self._parts)}, None, self._parts)

    def document_of(self, event: Event) -> dict[str, Any]:
        """The source document of an event this reader (``lazy_documents``) returned."""
        fields, extra = self.document_state(event)
        return self._document(fields, extra)

    def document_state(self, event: Event) -> tuple[dict[int, Any], Any]:
        """What :meth:`document_from` needs to rebuild the document of an event
        this reader returned (msgpack-able: replay's sort path spills it)."""
        return self._pending_docs.get(event, (event.fields, None))

    def document_from(self, fields: dict[int, Any], extra: Any) -> dict[str, Any]:
        """The source document from a :meth:`document_state`."""
        return self._document(fields, extra)

    def _map_fields(self, fields: dict[int, Any], remap: list[int]) -> dict[int, Any]:
        try:
            out = {remap[fid]: value for fid, value in fields.items()}
        except IndexError:  # an id beyond every definition
            out = {-1: None}
        if -1 not in out:
            return out
        out = {}
        for fid, value in fields.items():
            run_id = remap[fid] if fid < len(remap) else -1
            if run_id < 0:
                if not self._unknown_warned:
                    self._unknown_warned = True
                    self._warn(LogWarning("unknown_field", 0, f"events use field id {fid}, which no definition "
                                          "frame declares (a damaged definitions frame?); such fields are dropped"))
                continue
            out[run_id] = value
        return out

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.close()

    def __enter__(self) -> "KlogReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def export_lines(reader: KlogReader) -> Iterator[bytes]:
    """One JSON line per event, in log order (gaps are not documents)."""
    if not reader.documents:
        raise ValueError("export needs a reader opened with documents=True")
    for rec in reader.records():
        if isinstance(rec, Event):
            yield dump_json(rec.raw) + b"\n"
