"""EbpfSource: live process, file, network and privilege events from kernel
tracepoints (bcc), with interest push-down and loss accounting."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from kestrel_core.event import Event
from kestrel_core.interfaces import Emit, EmittedKind, Interest, Probe, Source, SourceCapabilities
from kestrel_core.validators import non_negative, one_of, positive, power_of_two

from .decode import KIND_OFFSET, Decoder
from .exeinfo import DEFAULT_ENV_VARS
from .kinds import K_CHDIR, KINDS
from .normalizer import declare_fields
from .plan import ALL, Plan, plan_for
from .program import LOADERS
from .proctable import ProcTable

log = logging.getLogger("kestrel.ebpf")

CHDIR = frozenset({K_CHDIR})
BATCH_RECORDS = 2048
"""Records decoded and handed to the bus per ring buffer read (the space is released per read)."""


_NET = ("network.type", "network.transport", "network.direction", "source.ip", "source.port", "destination.ip",
        "destination.port")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "exec": ("process.args_truncated",), "exit": ("process.exit_code",),
    "rename": ("file.Ext.original.path", "file.Ext.original.name", "file.Ext.original.extension"), "chmod": ("file.mode",), "chown": ("file.owner", "file.group"),
    "connect": _NET, "accept": _NET, "bind": ("network.type", "network.transport", "source.ip", "source.port"),
    "ptrace": ("target.process.pid", "target.process.name", "process.ptrace.request"),
    "memfd_create": ("file.name",), "finit_module": ("file.path",), "mmap_exec": ("process.mmap.prot", "file.path"),
    **{k: ("user.target.id",) for k in ("setuid", "setreuid", "setresuid")},
    **{k: ("group.target.id",) for k in ("setgid", "setregid", "setresgid")},
}
"""Per kind name, the fields decode.py adds beyond the process table's (``ProcTable.base_ref``) and what every
record has (time, classification, ids; ``event.outcome`` on system calls; ``file.path/name/directory/extension``
on file kinds): ``EbpfSource.emitted_kinds``.  Keep in step with decode.py; tests/test_fields.py compares a
live capture."""


def probe_host() -> Probe:
    """What this host lacks for the eBPF source, all reasons at once.  As root,
    tracefs is mounted first when absent: only a kernel without tracepoints,
    not a fresh boot, makes the source unavailable."""
    from . import program

    missing = []
    root = os.geteuid() == 0
    if not root:
        missing.append("not root (loading BPF programs needs CAP_BPF and CAP_PERFMON; run as root)")
    if not Path("/sys/kernel/btf/vmlinux").is_file():
        missing.append("no kernel BTF (/sys/kernel/btf/vmlinux): struct offsets cannot be read")
    # Only looked for, not imported: importing bcc maps LLVM into this process
    # for good, and with cached objects the agent never needs it.
    if not program.bcc_findable():
        missing.append(f"bcc not found (install it with: apt-get install {program.BCC_APT_PACKAGES})")
    if not program.HEADERS.is_dir() and not Path(f"/lib/modules/{os.uname().release}/build").is_dir():
        missing.append(f"no kernel headers for bcc ({program.HEADERS} missing: run plugins/sources-ebpf/scripts/install.sh)")
    events = program.tracing_events()
    if events is None or not (events / "syscalls").is_dir():
        missing.append("no syscall tracepoints: tracefs could not be mounted" if root else
                       "tracefs not mounted (as root Kestrel mounts it at /sys/kernel/tracing)")
    if missing:
        return Probe.missing("; ".join(missing))
    return Probe.ok(f"tracepoints ({events.parent}), compiled by bcc in a helper process and cached, ring buffer, "
                    "BTF offsets")


COALESCE_BELOW = 64
"""A read of fewer records than this (but some) waits ``coalesce_ms`` before the next wait."""


class StopWake:
    """An eventfd that becomes readable when ``stop`` is set, so the source's
    ring wait needs no short timeout to notice a stop.  A watcher thread
    waits on the event (checking every few seconds whether the source ended
    on its own); the fd is written and closed under one lock, so a late
    write never reaches a reused fd number."""

    def __init__(self, stop: threading.Event) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stop, self._lock, self._closed = stop, threading.Lock(), False
        threading.Thread(target=self._watch, name="ebpf-stop-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(5.0):
            if self._closed:
                return
        with self._lock:
            if not self._closed:
                os.eventfd_write(self.fd, 1)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self.fd)


class EbpfSource(Source):
    PLUGIN_NAME = "ebpf"
    DESCRIPTION = "live kernel events (exec, fork, exit, files, network, privilege changes) from eBPF tracepoints"
    NORMALIZER = "ebpf"

    @attrs.define(kw_only=True)
    class Settings:
        ringbuf_pages: int = attrs.field(default=512, validator=power_of_two)
        """Ring buffer size in 4 KiB pages (a power of two); 512 = 2 MiB."""
        max_processes: int = attrs.field(default=32768, validator=positive)
        """Bound of the process table (least recently used evicted first, counted)."""
        poll_ms: int = attrs.field(default=1000, validator=positive)
        """Longest wait for kernel records before checking the loss counters (a stop wakes the wait at once;
        a loss only happens with records waiting, which end the wait too)."""
        coalesce_ms: int = attrs.field(default=20, validator=non_negative)
        """After a read of only a few records, let more gather this long before the next one: a trickle of
        events then costs at most 1000/coalesce_ms wakeups a second, not one per record; 0: read at once."""
        pushdown: bool = True
        """Let the loaded rules decide which kinds and paths leave the kernel."""
        env_vars: list[str] = attrs.field(factory=lambda: list(DEFAULT_ENV_VARS))
        """Environment variables copied into ``process.env_vars`` at exec (KEY=VALUE); [] for none."""
        loader: str = attrs.field(default="auto", validator=one_of(*LOADERS))
        """``auto``: programs compiled once per kernel in a helper process and cached, loaded without bcc
        (bcc in this process if that fails, logged); ``objects``: that or fail; ``bcc``: compile in this process."""
        hash_max_mb: int = attrs.field(default=64, validator=non_negative)
        """Executables up to this size get ``process.hash.sha256`` (cached per file version); 0: no hashing."""

    def __init__(self, settings: Any, context: Any, program: Any = None) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        declare_fields(context.schema)
        self.program = program
        """A loaded :class:`~.program.Program` to reuse (tests share one), else loaded by ``run``."""
        self.plan: Plan = ALL
        self.table = ProcTable(settings.max_processes)
        self.decoder = Decoder(self.table, context.schema, env_allow=tuple(settings.env_vars),
                               hash_max_bytes=settings.hash_max_mb << 20)
        self.ready = threading.Event()
        """Set once programs are attached and the plan applied (tests wait on it)."""
        self.received = 0
        self.emitted = 0
        self.dropped_kind = 0
        self.malformed = 0
        self.lost = 0
        self.stale_discarded = 0
        """Records a shared program held from its previous user, discarded at start."""

    @classmethod
    def probe(cls) -> Probe:
        return probe_host()

    @classmethod
    def emitted_kinds(cls) -> tuple[EmittedKind, ...]:
        from .proctable import Ident, Proc

        # A process whose identity has every optional part (tty, container) and
        # whose parent and leaders are known: base_ref then shows every key it can add.
        table = ProcTable(4)
        full = Ident(0, 0, 0, 0, 0, 0, 1, 1, 136, 0, 1, 1, "0" * 64, "docker")
        leader = Proc(1, 0, 0, "", "", "", [], "")
        leader.ident = full
        table.procs[1] = leader
        proc = Proc(2, 0, 1, "", "", "", [], "")
        proc.ident, proc.sha256, proc.env_vars = full, "0" * 64, ["LD_PRELOAD=x"]
        common = set(table.base_ref(proc, 1, 0)) | {
            "@timestamp", "event.category", "event.type", "event.action", "user.id", "user.effective.id", "group.id",
            "user.name", "group.name", "user.Ext.real.id", "group.Ext.real.id"}
        files = ("file.path", "file.name", "file.directory", "file.extension")
        return tuple(EmittedKind(k.name, k.category, frozenset(
            common.union(("event.outcome",) if k.code > 3 else (), files if k.category == "file" else (),
                         KIND_FIELDS.get(k.name, ()))), k.action) for k in KINDS.values())

    def capabilities(self) -> SourceCapabilities:
        return SourceCapabilities(categories=frozenset({"process", "file", "network", "driver"}))

    def set_interest(self, interest: Interest) -> None:
        self.plan = plan_for(interest) if self.settings.pushdown else ALL
        log.info("ebpf push-down: %s", self.plan.describe())
        if self.program is not None and self.ready.is_set():
            self.program.configure(self.plan)  # maps only: programs stay attached

    def stats(self) -> dict[str, Any]:
        return {"received": self.received, "emitted": self.emitted, "dropped_kind": self.dropped_kind, "lost": self.lost,
                "malformed": self.malformed, "table_size": len(self.table.procs), "table_evicted": self.table.evicted,
                "table_seeded": self.table.seeded, "stale_discarded": self.stale_discarded,
                "decode_cache_drops": self.decoder.cache_drops,
                "executables_hashed": self.decoder.hasher.hashed if self.decoder.hasher else 0,
                "executables_not_hashed": self.decoder.hasher.skipped if self.decoder.hasher else 0,
                "kernel_filtered": self.program.filtered_counts() if self.program is not None else {}}

    def run(self, emit: Emit, stop: threading.Event) -> None:
        own = self.program is None
        if own:
            from .program import Program

            started = time.monotonic()
            self.program = Program(self.settings.ringbuf_pages, loader=self.settings.loader)
        program = self.program
        from .program import TSO

        def on_record(_ctx: Any, data: int, size: int) -> None:
            # bcc's per-record callback: used where the ring cannot be read in place (not x86)
            self.received += 1
            raw = ctypes.string_at(data, size)
            event = self._decode_one(raw, 0, size)
            if event is not None:
                self.emitted += 1
                emit(event)

        # Events are built by field id here, named after this source: no normalizer pass.
        emit_batch = getattr(emit, "emit_events", None) or getattr(emit, "emit_batch", None)
        self.decoder.source_id = self.name

        decode_batch = self.decoder.decode_batch

        def on_batch(block: bytes, recs: list[tuple[int, int]]) -> None:
            # Decoding a whole batch and handing it over at once: one GIL
            # holder, one lock round-trip on the bus per batch.
            events: list[Event] = []
            dropped, bad = decode_batch(block, recs, self.plan.kinds | CHDIR, events)
            self.received += len(recs)
            self.dropped_kind += dropped
            for kind, size, exc in bad:
                self._malformed(kind, size, exc)
            self.emitted += len(events)
            if emit_batch is not None:
                emit_batch(events)
            else:
                for event in events:
                    emit(event)

        # A shared program may hold records produced for its previous user
        # (a fresh one holds none: its kinds are all off until configured).
        reader = program.reader() if TSO else None
        stale = [0]

        def count_stale(_block: Any, recs: Any = None) -> None:
            stale[0] += len(recs) if recs is not None else 1

        if reader is not None:
            reader.read(count_stale, 1 << 62)
        else:
            program.open_ring(lambda _c, _d, _s: count_stale(None))
            program.consume()
            program.open_ring(on_record)
        self.stale_discarded = stale[0]
        # Records flow from configure() on and wait in the ring; /proc is read
        # after it, so a process started meanwhile is in the ring, the table
        # or both, never in neither.  Only then is the source ready: every
        # exec after "watching" is delivered.
        program.configure(self.plan)
        self.table.seed()
        self.ready.set()
        if own:
            how = ("bcc in this process" if program.backend == "bcc" else
                   "cached compiled objects" if program.cache_hit else "compiled in a helper process, now cached")
            log.info("ebpf: watching (programs ready in %.2f s: %s)", time.monotonic() - started, how)
        else:
            log.info("ebpf: watching (shared programs; %d records of their previous user discarded)",
                     self.stale_discarded)
        report_loss = getattr(emit, "loss", None)
        next_loss_check = 0.0
        # A stop wakes the ring wait through an eventfd, so the wait needs no
        # short timeout to notice it (an idle source stays asleep).
        wake = StopWake(stop) if reader is not None else None
        wake_fd = wake.fd if wake is not None else -1
        coalesce = self.settings.coalesce_ms / 1000
        try:
            while not stop.is_set():
                if reader is not None:
                    reader.wait(self.settings.poll_ms, wake_fd)
                    n = reader.read(on_batch, BATCH_RECORDS)
                    while n == BATCH_RECORDS and not stop.is_set():
                        if time.monotonic() >= next_loss_check:
                            break
                        n = reader.read(on_batch, BATCH_RECORDS)
                    if 0 < n < COALESCE_BELOW and coalesce:
                        stop.wait(coalesce)
                else:
                    program.poll(self.settings.poll_ms)
                now = time.monotonic()
                if now >= next_loss_check:
                    self._check_loss(report_loss)
                    next_loss_check = now + 0.05
            if reader is not None:
                reader.read(on_batch, 1 << 62)
            else:
                program.consume()
            self._check_loss(report_loss)
        finally:
            if wake is not None:
                reader.forget(wake_fd)
                wake.close()
            self.ready.clear()
            # The run's stop summary reports these counters in words; this line is for debugging.
            log.debug("ebpf source stopped: %s", self.stats())
            if own:
                program.close()
                self.program = None
            else:
                program.configure(Plan(frozenset()))  # a shared program goes quiet between users

    def _decode_one(self, data: bytes, off: int, size: int) -> Event | None:
        """The record of ``size`` bytes at ``data[off:]`` -> its Event, or None
        (a table-only record, a kind no longer wanted, or a malformed one: counted)."""
        kind = data[off + KIND_OFFSET]
        if kind not in self.plan.kinds and kind != K_CHDIR:  # e.g. an O_CREAT open that created nothing, when reads are off
            self.dropped_kind += 1
            return None
        try:
            return self.decoder.decode(data[off:off + size])
        except Exception as exc:  # noqa: BLE001 - a bad record is reported, the source goes on
            self._malformed(kind, size, exc)
            return None

    def _malformed(self, kind: int, size: int, exc: Exception) -> None:
        self.malformed += 1
        log.error("ebpf record of kind %s (%d bytes): %s: %s", KINDS.get(kind, kind), size, type(exc).__name__, exc)
        self.context.reject(self.name, "malformed")

    def _check_loss(self, report_loss: Any) -> None:
        lost, first, last = self.program.take_loss()
        if not lost:
            return
        self.lost += lost
        offset = self.decoder.offset
        if report_loss is not None:
            report_loss(lost, first + offset, last + offset, reason="ringbuf_full",
                        first_wall_ns=first + offset, last_wall_ns=last + offset)
        else:  # an emit without loss reporting (a bare callable): still never silent
            log.warning("ebpf: ring buffer full, %d events lost", lost)

    def describe_record(self, record: Any) -> str:
        if isinstance(record, Event):
            record = record.to_ecs(self.context.schema)
        if isinstance(record, dict):
            return f"ebpf {record.get('event.action')} record of pid {record.get('process.pid')}"
        return "ebpf record"
