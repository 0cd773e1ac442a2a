"""Compile and load the tracepoint programs, and drive their maps.

One :class:`Program` owns one loaded BPF object: the ring buffer, the
per-kind switches, the path-prefix filter and the loss counters.  Changing
the interest rewrites maps only; the programs stay attached.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
import platform
import select
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kestrel_core import host

from .btf import BTF, offset_defines
from .kinds import K_CHDIR, K_MAX, KINDS

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan

log = logging.getLogger("kestrel.ebpf")
SOURCE = Path(__file__).with_name("probes.bpf.c")
TRACEFS: Path | None = None
"""The tracing ``events`` directory when set (tests point it elsewhere); else
found, and mounted as root if need be, by :func:`tracing_events`."""
BCC_APT_PACKAGES = "python3-bpfcc libbpfcc"
HEADERS = Path(os.environ.get("KESTREL_KERNEL_HEADERS", "/var/lib/kestrel/kernel-headers"))
PFX_WORDS, MAX_PREFIXES, PREFIX_BYTES = 4, 16, 32
# file->f_mode bit set when this open created the file (include/linux/fs.h,
# unchanged from 6.1 to 6.18; checked by tests/test_kernel.py).
FMODE_CREATED = 0x100000


class Prefix(ctypes.Structure):
    _fields_ = [("val", ctypes.c_uint64 * PFX_WORDS), ("mask", ctypes.c_uint64 * PFX_WORDS),
                ("fold", ctypes.c_uint64 * PFX_WORDS), ("kinds", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


def encode_prefix(prefix: str, kinds: int) -> Prefix:
    """A case-insensitive prefix as the word compare in ``path_passes`` wants
    it; longer than 32 bytes is cut (admits more, never less)."""
    raw = prefix.encode()[:PREFIX_BYTES].lower()
    val, mask, fold = bytearray(PREFIX_BYTES), bytearray(PREFIX_BYTES), bytearray(PREFIX_BYTES)
    for i, b in enumerate(raw):
        val[i], mask[i] = b, 0xFF
        if 0x61 <= b <= 0x7A:
            fold[i] = 0x20
    words = lambda buf: [int.from_bytes(buf[i * 8:(i + 1) * 8], "little") for i in range(PFX_WORDS)]
    p = Prefix()
    p.val[:], p.mask[:], p.fold[:] = words(val), words(mask), words(fold)
    p.kinds = kinds
    return p


RINGBUF_BUSY, RINGBUF_DISCARD, RINGBUF_HDR = 1 << 31, 1 << 30, 8
# Plain loads and stores of the shared positions are only ordered enough on a
# TSO machine (x86): elsewhere the source keeps bcc's per-record callback.
TSO = platform.machine() in ("x86_64", "AMD64", "i686", "i386")


RUN_PROBE = 16
"""Records whose headers are compared at once before trying the whole rest."""


def _same_headers(words: memoryview, at: int, stride: int, header: int, most: int) -> int:
    """How many records from the one whose header word is ``words[at]`` (1 to
    ``most``) carry that same header, ``stride`` words apart: committed, not
    discarded, of the same size.  A flood of one kind of record is read
    with a strided slice instead of one Python step per record."""
    if most <= 1:
        return 1
    probe = min(most, RUN_PROBE)
    heads = words[at:at + probe * stride:stride].tolist()
    if heads.count(header) == probe:
        if most == probe:
            return probe
        heads = words[at:at + most * stride:stride].tolist()
        if heads.count(header) == most:
            return most
    for i, h in enumerate(heads):
        if h != header:
            return i
    return len(heads)  # not reached: some header differs


class RingReader:
    """Reads the BPF ring buffer straight from its memory map, a batch at a time.

    bcc's consumer calls back into Python once per record through ctypes, and
    each call has to take the GIL: ~1.5 µs a record, and with the engine
    thread holding the GIL the C loop waits for it on every record.  Here the
    kernel's layout (``kernel/bpf/ringbuf.c``, as libbpf reads it) is walked
    in Python: a read-write consumer page, then the producer page and the data
    pages (the kernel offers them twice, so a record that wraps is contiguous;
    only the first copy is mapped here).  Each record is
    an 8-byte header (length with BUSY and DISCARD bits, page offset) and its
    bytes, rounded up to 8.  A batch is copied out in one block and the
    consumer position advanced once per batch."""

    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.size, self.mask = size, size - 1
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # The data pages once, not the kernel's second copy: the kernel maps
        # every page of the mapping at mmap time, so the copy would cost its
        # whole size in resident memory (2 MiB by default); the one batch per
        # lap that wraps is stitched from two slices instead.
        self._prod = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        # The positions as native u64 views: one 8-byte load or store each, which
        # the kernel side never sees torn (struct's "<Q" packs byte by byte: a
        # half-written consumer position can look like a full ring to the kernel).
        self._cons_pos = memoryview(self._cons).cast("Q")
        self._prod_pos = memoryview(self._prod)[:8].cast("Q")
        self.data = memoryview(self._prod)[page:]
        """Record bytes (the ring once: a batch that wraps is copied out in two pieces)."""
        self.words = self.data.cast("I")
        """The same memory as native u32s: a record header is 8-aligned (one index, no unpack call)."""
        self._fd = map_fd
        self._poller: select.epoll | None = None
        self._wake_fd = -1

    def wait(self, timeout_ms: int, wake_fd: int = -1) -> None:
        """Block until the ring holds data, ``wake_fd`` (an eventfd) is readable
        or ``timeout_ms`` passes (GIL released)."""
        if self._poller is None:
            self._poller = select.epoll()
            self._poller.register(self._fd, select.EPOLLIN)  # ready while the ring holds data
        if wake_fd != self._wake_fd:
            self.forget(self._wake_fd)
            if wake_fd >= 0:
                self._poller.register(wake_fd, select.EPOLLIN)
            self._wake_fd = wake_fd
        self._poller.poll(timeout_ms / 1000)

    def forget(self, wake_fd: int) -> None:
        """Stop watching ``wake_fd`` (before it is closed: a shared program's
        reader outlives each source run)."""
        if wake_fd >= 0 and wake_fd == self._wake_fd and self._poller is not None:
            try:
                self._poller.unregister(wake_fd)
            except OSError:
                pass
            self._wake_fd = -1

    def pending(self) -> int:
        """Bytes written by the kernel and not yet read."""
        return self._prod_pos[0] - self._cons_pos[0]

    def read(self, handle: Callable[[bytes, list[tuple[int, int]]], None], limit: int = 4096) -> int:
        """Take up to ``limit`` committed records off the ring and hand them to
        ``handle(block, [(offset, size), ...])``; returns how many.  The records
        are copied out in one block (contiguous thanks to the double mapping)
        and their space released before ``handle`` runs, so the kernel can
        refill the ring while they are decoded."""
        cons = self._cons_pos[0]
        prod = self._prod_pos[0]
        if cons >= prod:
            return 0
        data, words, mask, recs = self.data, self.words, self.mask, []
        append, extend = recs.append, recs.extend
        base = cons & mask
        pos, n = cons, 0
        while pos < prod and n < limit:
            off = pos & mask
            length = words[off >> 2]
            if length & RINGBUF_BUSY:  # reserved, not yet committed: stop here, in order
                break
            size = length & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
            step = (size + RINGBUF_HDR + 7) & ~7
            if length & RINGBUF_DISCARD:
                pos += step
                continue
            run = _same_headers(words, off >> 2, step >> 2, length, min(limit - n, (prod - pos) // step))
            if run == 1:
                append((pos - cons + RINGBUF_HDR, size))
            else:
                first = pos - cons + RINGBUF_HDR
                extend(zip(range(first, first + run * step, step), itertools.repeat(size, run)))
            n += run
            pos += run * step
        end = base + (pos - cons)
        block = data[base:end].tobytes() if end <= self.size else data[base:].tobytes() + data[:end - self.size].tobytes()
        self._cons_pos[0] = pos
        if recs:
            handle(block, recs)
        return n

    def close(self) -> None:
        if self._poller is not None:
            self._poller.close()
        self._cons_pos.release()
        self._prod_pos.release()
        self.words.release()
        self.data.release()
        self._prod.close()
        self._cons.close()


def tracing_events() -> Path | None:
    """The tracepoint ``events`` directory, mounting tracefs if it is absent
    (a fresh machine boots without it); None if this host cannot have it."""
    if TRACEFS is not None:
        return TRACEFS if TRACEFS.is_dir() else None
    found = host.ensure_tracefs()
    return None if found is None else found / "events"


def bcc_findable() -> bool:
    """Whether bcc could be imported (by the compile helper, or as the
    fallback), found without importing it."""
    import ctypes.util
    import importlib.util

    try:
        spec = importlib.util.find_spec("bcc")
    except (ImportError, ValueError):
        spec = None
    if spec is None and not (host.SYSTEM_DIST_PACKAGES / "bcc" / "__init__.py").is_file():
        return False
    return ctypes.util.find_library("bcc") is not None


def import_bcc() -> Any:
    """Debian's bcc bindings, from this environment or the system's dist-packages."""
    return host.import_system_module("bcc", BCC_APT_PACKAGES)


LOADERS = ("auto", "objects", "bcc")
"""``auto``: compiled objects (compiled in a helper process, cached; see
objects.py), bcc in this process when that fails (logged with the reason);
``objects``: compiled objects or an error; ``bcc``: bcc in this process."""


class MapView:
    """One map of a program loaded without bcc, indexed like a bcc table:
    ``view[key]`` is a ``leaf`` instance (a list of them, or of ints for a
    scalar leaf, per CPU for a per-CPU map); ``view[key] = value`` writes it."""

    def __init__(self, fd: int, key: type, leaf: type, percpu: int = 0) -> None:
        self.fd, self.key, self.leaf, self.percpu = fd, key, leaf, percpu
        self.stride = (ctypes.sizeof(leaf) + 7) & ~7

    def _key(self, key: Any) -> Any:
        return key if isinstance(key, self.key) else self.key(key)

    def __getitem__(self, key: Any) -> Any:
        from .bpfsys import map_lookup

        if not self.percpu:
            value = self.leaf()
            if not map_lookup(self.fd, self._key(key), value):
                raise KeyError(key)
            return value
        buf = (ctypes.c_uint8 * (self.stride * self.percpu))()
        if not map_lookup(self.fd, self._key(key), buf):
            raise KeyError(key)
        vals = [self.leaf.from_buffer_copy(buf, i * self.stride) for i in range(self.percpu)]
        return [v.value for v in vals] if issubclass(self.leaf, ctypes._SimpleCData) else vals

    def __setitem__(self, key: Any, value: Any) -> None:
        from .bpfsys import map_update

        if not self.percpu:
            map_update(self.fd, self._key(key), value if isinstance(value, self.leaf) else self.leaf(value))
            return
        buf = (ctypes.c_uint8 * (self.stride * self.percpu))()
        for i, v in enumerate(value):
            v = v if isinstance(v, self.leaf) else self.leaf(v)
            ctypes.memmove(ctypes.addressof(buf) + i * self.stride, ctypes.addressof(v), ctypes.sizeof(v))
        map_update(self.fd, self._key(key), buf)

    def __delitem__(self, key: Any) -> None:
        from .bpfsys import map_delete

        if not map_delete(self.fd, self._key(key)):
            raise KeyError(key)

    def clear(self) -> None:
        """Delete every entry (a hash map's; an array's entries cannot go)."""
        from .bpfsys import map_delete, map_keys

        for key in map_keys(self.fd, self.key):
            map_delete(self.fd, key)


class Loss(ctypes.Structure):
    """``struct loss`` of probes.bpf.c."""
    _fields_ = [("count", ctypes.c_uint64), ("first_ts", ctypes.c_uint64), ("last_ts", ctypes.c_uint64)]


MAP_LEAVES: dict[str, tuple[type, bool]] = {
    "enabled": (ctypes.c_uint32, False), "prefix_on": (ctypes.c_uint32, False), "prefixes": (Prefix, False),
    "filtered": (ctypes.c_uint64, False), "lost": (Loss, True), "loss_ack": (ctypes.c_uint64, True)}
"""The maps user space drives: leaf type, per CPU.  Keys are array indices (int)."""


def objects_key(ringbuf_pages: int, has_modules: bool) -> str:
    """The compiled-object cache key of this source's programs with these settings."""
    from . import objects

    return objects.cache_key(SOURCE, {"ringbuf_pages": ringbuf_pages, "modules": has_modules,
                                      "fmode_created": FMODE_CREATED})


class Program:
    def __init__(self, ringbuf_pages: int = 256, btf: BTF | None = None, loader: str = "auto") -> None:
        events = tracing_events()
        if events is None:
            raise RuntimeError("no tracefs: mount -t tracefs nodev /sys/kernel/tracing (as root)")
        if ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError(f"ringbuf_pages must be a power of two, not {ringbuf_pages}")
        if loader not in LOADERS:
            raise ValueError(f"loader must be one of {', '.join(LOADERS)}, not {loader!r}")
        started = time.monotonic()
        self.has_modules = (events / "syscalls" / "sys_enter_finit_module").is_dir()
        self.bpf: Any = None
        """bcc's BPF object when bcc loaded the programs in this process, else None."""
        self.objects: Any = None
        """The :class:`~.objects.Loaded` programs and maps when loaded without bcc."""
        self.cache_hit: bool | None = None
        """Whether the compiled objects came from the cache (None: bcc in-process)."""
        self.fallback_reason = ""
        """Why the compiled-object path was not used (empty when it was, or was not tried)."""
        if loader == "bcc":
            self.fallback_reason = "loader = bcc"
        elif not TSO:
            # The in-place ring reader needs TSO; elsewhere bcc's consumer reads the ring.
            self.fallback_reason = f"{platform.machine()}: the ring is read through bcc's consumer"
        else:
            try:
                self._load_objects(events, ringbuf_pages)
            except Exception as exc:  # noqa: BLE001 - any failure of that path falls back to bcc, with the reason
                if loader == "objects":
                    raise
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
                log.warning("ebpf: compiled objects unavailable, compiling with bcc in this process "
                            "(LLVM stays mapped, ~85 MB): %s", self.fallback_reason)
        if self.objects is None:
            self._load_bcc(ringbuf_pages, btf)
        self.backend = "objects" if self.objects is not None else "bcc"
        self.load_s = time.monotonic() - started
        """Seconds from start to programs attached (compile included)."""
        self._lost_seen = 0
        """Records counted lost so far (all CPUs)."""
        self._lost_seen_cpu: list[int] = []
        self.plan: Plan | None = None
        self._ring_open = False
        self._handler: Callable[[int, int, int], None] = lambda _c, _d, _s: None
        self.ring_bytes = ringbuf_pages * mmap.PAGESIZE
        self._reader: RingReader | None = None

    def _load_objects(self, events: Path, ringbuf_pages: int) -> None:
        from . import objects
        from .bpfsys import possible_cpus

        key = objects_key(ringbuf_pages, self.has_modules)
        objs = objects.read_cached(key)
        self.cache_hit = objs is not None
        if objs is None:
            log.info("ebpf: compiling the tracepoint programs in a helper process (once per kernel; cached in %s)",
                     objects.CACHE_DIR)
            objs = objects.compile_in_helper(key, SOURCE, ringbuf_pages=ringbuf_pages, modules=self.has_modules)
        loaded = objects.Loaded(objs, events)
        ncpu = possible_cpus()
        try:
            for name, (leaf, percpu) in MAP_LEAVES.items():
                setattr(self, name, MapView(loaded.map_fds[name], ctypes.c_int, leaf, ncpu if percpu else 0))
            self._ring_fd = loaded.map_fds["events"]
        except KeyError as exc:
            loaded.close()
            raise RuntimeError(f"compiled objects lack map {exc}") from None
        self.objects = loaded

    def _load_bcc(self, ringbuf_pages: int, btf: BTF | None) -> None:
        BPF = import_bcc().BPF
        if HEADERS.is_dir():
            os.environ.setdefault("BCC_KERNEL_SOURCE", str(HEADERS))
        cflags = offset_defines(btf) + [f"-DRINGBUF_PAGES={ringbuf_pages}", f"-DFMODE_CREATED_={FMODE_CREATED}",
                                        "-Wno-macro-redefined", "-Wno-unused-function"]
        if self.has_modules:
            cflags.append("-DHAVE_MODULE_SYSCALLS")
        self.bpf = BPF(src_file=str(SOURCE).encode(), cflags=cflags)
        for name in MAP_LEAVES:
            setattr(self, name, self.bpf[name.encode()])
        self._ring_fd = self.bpf[b"events"].map_fd

    def reader(self) -> RingReader:
        """The memory-mapped batch reader of the ring buffer (one per program).
        It shares the consumer position with bcc's consumer: use one at a time."""
        if self._reader is None:
            self._reader = RingReader(self._ring_fd, self.ring_bytes)
        return self._reader

    def open_ring(self, callback: Callable[[int, int, int], None]) -> None:
        """``callback(ctx, data pointer, size)`` for each record (bcc's signature).
        The ring is opened once; a later call replaces the callback (a second
        bcc consumer on the same map would steal records from the first)."""
        self._handler = callback
        if self.bpf is None:
            raise RuntimeError("bcc's ring consumer needs the programs loaded by bcc (loader = bcc)")
        if not self._ring_open:
            self.bpf[b"events"].open_ring_buffer(self._dispatch)
            self._ring_open = True

    def _dispatch(self, ctx: int, data: int, size: int) -> None:
        self._handler(ctx, data, size)

    def poll(self, timeout_ms: int) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)

    def consume(self) -> None:
        self.bpf.ring_buffer_consume()

    def configure(self, plan: Plan) -> None:
        """Send exactly ``plan.kinds``; for a kind in ``plan.prefix_kinds``,
        only paths starting with one of its prefixes (case-insensitively)."""
        if len(plan.prefixes) > MAX_PREFIXES:
            raise ValueError(f"{len(plan.prefixes)} path prefixes, the kernel filter holds {MAX_PREFIXES}")
        # Widen first (prefixes, then switches on), narrow last, so a reload never drops wanted events.
        items = sorted(plan.prefixes.items())
        for i, (p, bits) in enumerate(items):
            self.prefixes[ctypes.c_int(i)] = encode_prefix(p, bits)
        wanted = set(plan.kinds) | ({K_CHDIR} if plan.kinds else set())
        for k in range(1, K_MAX):
            if k in wanted:
                self.enabled[ctypes.c_int(k)] = ctypes.c_uint32(1)
            self.prefix_on[ctypes.c_int(k)] = ctypes.c_uint32(1 if k in plan.prefix_kinds else 0)
        for k in range(1, K_MAX):
            if k not in wanted:
                self.enabled[ctypes.c_int(k)] = ctypes.c_uint32(0)
        for i in range(len(items), MAX_PREFIXES):
            self.prefixes[ctypes.c_int(i)] = Prefix()
        self.plan = plan

    def filtered_counts(self) -> dict[str, int]:
        """Records the in-kernel path filter kept out of user space, per kind name."""
        return {KINDS[k].name: int(self.filtered[ctypes.c_int(k)].value) for k in range(1, K_MAX)
                if k in KINDS and self.filtered[ctypes.c_int(k)].value}

    def take_loss(self) -> tuple[int, int, int]:
        """(records lost since the last call, first ts, last ts) summed over CPUs.

        The kernel's per-CPU counts are only read (never written back: that
        raced with the kernel's increments and lost counts); the count taken
        is acknowledged in ``loss_ack``, and the kernel starts a CPU's next
        window at its first loss after the acknowledgement.  A loss counted
        between the read and the acknowledgement keeps the previous window's
        first time: the window reported next is wider, never narrower."""
        zero = ctypes.c_int(0)
        per_cpu = self.lost[zero]
        seen = self._lost_seen_cpu
        if len(seen) < len(per_cpu):
            seen.extend([0] * (len(per_cpu) - len(seen)))
        new, first, last = 0, 0, 0
        for i, cpu_loss in enumerate(per_cpu):
            count = cpu_loss.count
            if count > seen[i]:
                new += count - seen[i]
                seen[i] = count
                if cpu_loss.first_ts:
                    first = cpu_loss.first_ts if not first else min(first, cpu_loss.first_ts)
                last = max(last, cpu_loss.last_ts)
        if new <= 0:
            return 0, 0, 0
        acks = self.loss_ack[zero]
        for i in range(len(acks)):
            acks[i] = seen[i]
        self.loss_ack[zero] = acks
        self._lost_seen += new
        now = time.monotonic_ns()
        return new, first or last or now, last or now

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self.objects is not None:
            self.objects.close()
            self.objects = None
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
