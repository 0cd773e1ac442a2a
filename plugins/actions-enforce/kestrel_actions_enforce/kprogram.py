"""One enforcement BPF program, loaded without bcc in this process when it can be.

The C sources (``bpf/*.c``) are compiled by sources-ebpf's short-lived helper
process (``python -m kestrel_sources_ebpf.objects --plain``), cached in the
same directory keyed by source, kernel, BTF and bcc version, and loaded here
with plain bpf(2) calls (:mod:`kestrel_sources_ebpf.objects`,
:mod:`kestrel_sources_ebpf.bpfsys`): libbcc, and the LLVM and clang it
links (~85 MB resident), never enter the agent.  bcc in this process stays
the fallback (``loader = "bcc"``, a failing helper, a non-TSO machine whose
ring must be read by bcc's consumer), logged with the reason.

Both backends offer the same small surface (:class:`Loaded`): ``maps[name]``
indexed with this plugin's ctypes keys and leaves, ``prog_fd(name)``, a
reporter thread that hands each ring record's bytes to a callback, close.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from kestrel_sources_ebpf import objects as ebpf_objects
from kestrel_sources_ebpf import program as ebpf_program

from .bccload import Unavailable, compile_program, program_text

log = logging.getLogger("kestrel.enforce")

LOADERS = ("auto", "objects", "bcc")
LOADER = "auto"
"""Set from the action's ``loader`` setting before the ladder is probed."""
MapTypes = dict[str, tuple[type, type]]
"""map name -> (key ctypes type, leaf ctypes type)."""


def source_path(name: str) -> Path:
    return Path(str(resources.files("kestrel_actions_enforce").joinpath("bpf", f"{name}.c")))


def objects_key(name: str) -> str:
    return ebpf_objects.cache_key(source_path(name), {"plugin": "actions-enforce", "cflags": []})


class Loaded:
    """A loaded program; ``backend`` is ``objects`` or ``bcc``."""

    backend = ""
    cache_hit: bool | None = None
    fallback_reason = ""
    maps: dict[str, Any]

    def prog_fd(self, name: str) -> int:
        raise NotImplementedError

    def start_reports(self, ring: str, on_record: Callable[[bytes], None], name: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ObjectsLoaded(Loaded):
    backend = "objects"

    def __init__(self, name: str, map_types: MapTypes, program_types: dict[str, tuple[int, int]]) -> None:
        key = objects_key(name)
        stem = f"enforce-{name}"
        objs = ebpf_objects.read_cached(key, stem)
        self.cache_hit = objs is not None
        if objs is None:
            log.info("enforce: compiling %s in a helper process (once per kernel; cached in %s)", name,
                     ebpf_objects.CACHE_DIR)
            objs = ebpf_objects.compile_in_helper(key, source_path(name), stem=stem, plain=True)
        events = ebpf_program.tracing_events()
        self._loaded = ebpf_objects.Loaded(objs, events, program_types)
        self._rings: dict[str, int] = {}
        try:
            self.maps = {}
            for map_name, spec in self._loaded.map_specs.items():
                fd = self._loaded.map_fds[map_name]
                if map_name in map_types:
                    k, v = map_types[map_name]
                    self.maps[map_name] = ebpf_program.MapView(fd, k, v)
                elif spec.type == 27:  # BPF_MAP_TYPE_RINGBUF: max_entries is its size in bytes
                    self._rings[map_name] = spec.max_entries
            missing = set(map_types) - set(self.maps)
            if missing:
                raise RuntimeError(f"compiled {name} lacks map(s) {', '.join(sorted(missing))}")
        except BaseException:
            self._loaded.close()
            raise
        self._thread: threading.Thread | None = None
        self._wake = -1
        self._stop = threading.Event()

    def prog_fd(self, name: str) -> int:
        return self._loaded.prog_fds[name]

    def start_reports(self, ring: str, on_record: Callable[[bytes], None], name: str) -> None:
        reader = ebpf_program.RingReader(self._loaded.map_fds[ring], self._rings[ring])
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

        def handle(block: bytes, recs: list[tuple[int, int]]) -> None:
            for off, size in recs:
                try:
                    on_record(block[off:off + size])
                except Exception as exc:  # a broken record must not kill the reporter silently
                    log.error("enforce reporter %s: %s: %s", name, type(exc).__name__, exc)

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    reader.wait(1000, self._wake)  # woken by the kernel's record or by close()
                    while reader.read(handle):
                        pass
                while reader.read(handle):  # what the kernel reported before the stop
                    pass
            finally:
                reader.forget(self._wake)
                reader.close()

        self._thread = threading.Thread(target=loop, name=f"enforce-{name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            os.eventfd_write(self._wake, 1)
            self._thread.join(timeout=5)
            self._thread = None
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1
        self._loaded.close()


class BccLoaded(Loaded):
    backend = "bcc"

    def __init__(self, name: str, program_types: dict[str, tuple[int, int]], reason: str) -> None:
        self.fallback_reason = reason
        self._bpf = compile_program(program_text(name))
        self.maps = _BccMaps(self._bpf)
        self._types = program_types
        self._reporter: Any = None

    def prog_fd(self, name: str) -> int:
        kind, expected = self._types[name]
        return self._bpf.load_func(name.encode(), kind, attach_type=expected).fd

    def start_reports(self, ring: str, on_record: Callable[[bytes], None], name: str) -> None:
        from .reporter import RingReporter

        self._bpf[ring.encode()].open_ring_buffer(lambda _ctx, data, size: on_record(ctypes.string_at(data, size)))
        self._reporter = RingReporter(self._bpf, name)
        self._reporter.start()

    def close(self) -> None:
        if self._reporter is not None:
            self._reporter.stop()
            self._reporter = None
        self._bpf.cleanup()  # detaches the programs; maps go with them


class _BccMaps(dict):
    def __init__(self, bpf: Any) -> None:
        super().__init__()
        self._bpf = bpf

    def __missing__(self, name: str) -> Any:
        table = self._bpf[name.encode()]
        self[name] = table
        return table


def load(name: str, map_types: MapTypes, program_types: dict[str, tuple[int, int]] | None = None,
         loader: str | None = None) -> Loaded:
    """``bpf/<name>.c`` loaded and its tracepoint programs attached; the
    others (``program_types``) loaded for the caller to attach.  Raises
    Unavailable with the reason."""
    loader = loader or LOADER
    program_types = program_types or {}
    if loader not in LOADERS:
        raise ValueError(f"loader must be one of {', '.join(LOADERS)}, not {loader!r}")
    if os.geteuid() != 0:
        raise Unavailable("BPF programs need root")
    reason = "loader = bcc"
    if loader != "bcc":
        if not ebpf_program.TSO:
            reason = "not a TSO machine: the ring is read through bcc's consumer"
        else:
            try:
                return ObjectsLoaded(name, map_types, program_types)
            except Exception as exc:  # noqa: BLE001 - any failure of that path falls back to bcc, with the reason
                reason = f"{type(exc).__name__}: {exc}"
                if loader == "objects":
                    raise Unavailable(f"compiled objects of {name}: {reason}") from None
        log.warning("enforce: %s: compiled objects unavailable, compiling with bcc in this process "
                    "(LLVM stays mapped, ~85 MB): %s", name, reason)
    return BccLoaded(name, program_types, reason)
