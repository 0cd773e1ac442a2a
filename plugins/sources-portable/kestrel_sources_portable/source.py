"""PortableSource: live process and file events without eBPF.

Mechanisms, best first, each chosen by a capability probe at start:

* processes: the netlink process connector (every fork/exec/exit, uid/gid
  changes, ptrace attach), else /proc polling (misses short-lived processes);
* files: fanotify notifications in fd mode (open, write) and FID mode
  (create, delete, rename, attribute change);
* network (off by default): /proc/net/tcp{,6} polling.

Producers run on threads of their own and hand observations to the
``run`` thread, which holds them for ``reorder_ms`` and handles them in
timestamp order: an exec from the connector (kernel time) is then applied
to the process table before the file events of the new image (stamped when
read), so those carry the right process fields.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from typing import Any

import attrs

from kestrel_core.interfaces import Emit, Interest, Probe, Source, SourceCapabilities
from kestrel_core.validators import non_negative, positive

from . import connector as cn
from .coverage import Coverage
from .ecs import EXTRA_FIELDS
from .processes import ProcessTracker, ProcPoller, connector_loop, poll_loop
from .table import ProcessTable

log = logging.getLogger("kestrel.portable")

PROCESS_KINDS_CONNECTOR = ["exec", "fork", "exit", "setuid", "setgid", "ptrace"]
FILE_KINDS_FD = ["open", "open_write"]
FILE_KINDS_FID = ["create", "unlink", "rename", "chmod", "chown"]
NETWORK_KINDS = ["connect", "accept", "bind"]
UNKNOWN_PID_WAIT_NS = 500_000_000
DEFAULT_IGNORE_OPEN = ("/etc/ld.so.cache", "/usr/lib/", "/lib/", "/lib64/", "/usr/lib64/", "/usr/share/locale/",
                       "/usr/share/zoneinfo/", "/proc/", "/sys/", "/dev/null")


def _process_mechanism(_inst: Any, attribute: Any, value: str) -> None:
    if value not in ("auto", "connector", "poll"):
        raise ValueError(f"{attribute.name} must be \"auto\", \"connector\" or \"poll\", got {value!r}")


@attrs.define
class Mechanisms:
    """What ``choose`` picked on this host, with the reasons."""

    process: str  # "connector" | "poll"
    process_reason: str
    files_fd: bool
    files_fid_mask: int
    files_reason: str
    network: bool
    network_reason: str


def choose(process: str, files: bool, network: bool, file_paths: list[str]) -> Mechanisms:
    """Probe each mechanism (cheap: open, then close, a socket or group)."""
    ok, why = cn.probe() if process in ("auto", "connector") else (False, "process = \"poll\" in the profile")
    if ok:
        proc_mech, proc_reason = "connector", why
    else:
        proc_mech, proc_reason = "poll", f"/proc polling ({why})"
    fd_ok, fid_mask, file_reason = False, 0, "files = false in the profile"
    if files:
        try:
            from kestrel_sources_fanotify import fanotify as fan

            from . import fidwatch
        except ImportError as exc:
            file_reason = f"kestrel-edr-sources-fanotify is not importable: {exc}"
        else:
            root = file_paths[0] if file_paths else "/"
            fd_ok, fd_reason = fan.probe(root)
            fid_mask, fid_reason = fidwatch.probe(root)
            file_reason = f"{fd_reason}; {fid_reason}"
    net_reason = "network = false in the profile (polling /proc/net/tcp is off by default)"
    if network:
        net_ok = os.path.exists("/proc/net/tcp")
        net_reason = "/proc/net/tcp{,6} polling" if net_ok else "/proc/net/tcp is missing"
        network = net_ok
    return Mechanisms(proc_mech, proc_reason, fd_ok, fid_mask, file_reason, network, net_reason)


def coverage_of(m: Mechanisms) -> Coverage:
    cov = Coverage()
    if m.process == "connector":
        cov.see(PROCESS_KINDS_CONNECTOR, "netlink process connector")
        cov.notes.append("ptrace: attach/seize only, not PTRACE_TRACEME; setuid family reported as setuid/setgid")
    else:
        cov.see(["exec", "exit"], "/proc polling")
        cov.lack(["fork", "setuid", "setgid", "ptrace"], "no process connector")
        cov.notes.append("/proc polling misses processes shorter than the poll interval")
    if m.files_fd:
        cov.see(FILE_KINDS_FD, "fanotify")
    else:
        cov.lack(FILE_KINDS_FD, m.files_reason)
    if m.files_fid_mask:
        cov.see(FILE_KINDS_FID, "fanotify FID")
        cov.notes.append("chmod/chown are inferred from FAN_ATTRIB plus stat")
    else:
        cov.lack(FILE_KINDS_FID, m.files_reason if not m.files_fd else "no fanotify FID mode")
    if m.network:
        cov.see(NETWORK_KINDS, "/proc/net/tcp polling")
        cov.notes.append("TCP only, connections shorter than the poll interval are missed")
    else:
        cov.lack(NETWORK_KINDS, "no eBPF; /proc/net polling off")
    return cov.finish()


class PortableSource(Source):
    PLUGIN_NAME = "portable"
    DESCRIPTION = "live process/file events without eBPF: proc connector or /proc polling, fanotify"

    @attrs.define(kw_only=True)
    class Settings:
        process: str = attrs.field(default="auto", validator=_process_mechanism)
        """``auto``: the process connector if it works, else /proc polling."""
        poll_interval_ms: float = attrs.field(default=200.0, validator=positive)
        """/proc polling period (used only without the connector)."""
        files: bool = True
        """fanotify file events (needs kestrel-edr-sources-fanotify and root)."""
        file_paths: list[str] = attrs.Factory(lambda: ["/", "/tmp", "/dev/shm", "/var/tmp", "/home", "/etc"])
        """Every filesystem holding one of these paths is watched (whole-filesystem marks)."""
        ignore_open_prefixes: list[str] = attrs.Factory(lambda: list(DEFAULT_IGNORE_OPEN))
        """Read-only opens under these prefixes are not reported (libraries, locale data);
        writes, creations and attribute changes there still are."""
        network: bool = False
        """Poll /proc/net/tcp{,6} for new TCP sockets (costly, see README)."""
        network_interval_ms: float = attrs.field(default=500.0, validator=positive)
        max_processes: int = attrs.field(default=32768, validator=positive)
        """Bound of the process table (least recently used evicted first)."""
        reorder_ms: float = attrs.field(default=50.0, validator=non_negative)
        """How long observations wait so that they are handled in timestamp order."""

    def __init__(self, settings: Any, context: Any) -> None:
        super().__init__(settings, context)
        self.name = self.PLUGIN_NAME
        for path, ftype in EXTRA_FIELDS:
            context.schema.declare(path, ftype)
        self.interest = Interest()
        self.mechanisms: Mechanisms | None = None
        self.coverage: Coverage | None = None
        self._emit_loss: Any = None
        self.ready = threading.Event()
        """Set once every producer is subscribed (tests wait on it)."""

    @classmethod
    def probe(cls) -> Probe:
        m = choose("auto", True, False, ["/"])
        missing = ", ".join(coverage_of(m).missing)
        text = f"processes: {m.process_reason}; files: {m.files_reason}; not visible (defaults): {missing}"
        if not os.path.isdir("/proc/self"):
            return Probe.missing("no /proc: neither the process connector's enrichment nor polling can work")
        return Probe.ok(text)

    def _choose(self) -> Mechanisms:
        if self.mechanisms is None:
            s = self.settings
            self.mechanisms = choose(s.process, s.files, s.network, s.file_paths)
            self.coverage = coverage_of(self.mechanisms)
        return self.mechanisms

    def capabilities(self) -> SourceCapabilities:
        self._choose()
        assert self.coverage is not None
        return SourceCapabilities(categories=self.coverage.categories)

    def set_interest(self, interest: Interest) -> None:
        self.interest = interest

    def _wants(self, category: str) -> bool:
        return self.interest.wants_all or category in self.interest.categories

    # ------------------------------------------------------------------ run

    def run(self, emit: Emit, stop: threading.Event) -> None:
        m = self._choose()
        assert self.coverage is not None
        s = self.settings
        inbox: queue.SimpleQueue[tuple[int, int, str, Any]] = queue.SimpleQueue()
        seq = itertools.count()

        def put(ts: int, kind: str, payload: Any) -> None:
            inbox.put((ts, next(seq), kind, payload))

        def lost(what: str) -> Any:
            since = [time.monotonic_ns()]

            def report(n: int) -> None:
                # Handed to the consumer thread, which reports it in order with the events.
                now = time.monotonic_ns()
                put(now, "loss", (n, what, since[0]))
                since[0] = now
            return report

        table = ProcessTable(s.max_processes)
        seeded = table.seed()
        wall_offset = time.time_ns() - time.monotonic_ns()
        tracker = ProcessTracker(table, wall_offset, emit_process=self._wants("process"))
        producer_stop = threading.Event()
        threads: list[threading.Thread] = []
        closers: list[Any] = []
        files_tracker = None
        # Each mechanism that passed its probe but fails to start degrades
        # (logged, coverage updated) instead of taking the source down.
        if m.process == "connector":
            try:
                conn = cn.ProcConnector()
            except OSError as exc:
                self._degrade(m, "process", f"process connector failed to start: {exc}")
            else:
                closers.append(conn)
                threads.append(threading.Thread(target=connector_loop, name="portable-connector",
                                                args=(conn, put, producer_stop, lost("netlink_overflow")), daemon=True))
        if m.process == "poll":
            threads.append(threading.Thread(target=poll_loop, name="portable-poll", daemon=True,
                                            args=(ProcPoller(), s.poll_interval_ms / 1000, put, producer_stop)))
        if (m.files_fd or m.files_fid_mask) and self._wants("file"):
            try:
                files_tracker = self._start_files(m, put, producer_stop, tracker, threads, closers, lost)
            except OSError as exc:
                self._degrade(m, "files", f"fanotify failed to start: {exc}")
        elif m.files_fd or m.files_fid_mask:
            log.info("portable source: no loaded rule looks at file events; fanotify not started")
        if m.network and self._wants("network"):
            from .netpoll import TcpPoller

            poller = TcpPoller()
            poller.poll()  # the baseline, before ``ready``: later sockets are new
            threads.append(threading.Thread(target=self._network_loop, name="portable-net", daemon=True,
                                            args=(poller, put, producer_stop)))

        log.info("portable source: processes via %s; files via %s; network via %s", m.process_reason,
                 m.files_reason if files_tracker else "nothing (" + m.files_reason + ")",
                 m.network_reason if m.network else "nothing (" + m.network_reason + ")")
        log.info("portable source: %s", self.coverage.summary())
        log.info("portable source: process table seeded with %d processes", seeded)
        for t in threads:
            t.start()
        # SourceEmitter.loss in a run (gap records, metrics); absent when tests pass a bare callable.
        self._emit_loss = getattr(emit, "loss", None)
        self.ready.set()
        emitted = [0]

        def counted_emit(record: Any) -> bool:
            emitted[0] += 1
            return emit(record)

        try:
            self._consume(inbox, tracker, files_tracker, counted_emit, stop)
        finally:
            producer_stop.set()
            for t in threads:
                t.join(timeout=2)
            for closer in closers:
                closer.close()
            overflows = sum(n for (name, _), n in self.context.stats.events_lost.items() if name == self.name)
            log.info("portable source: %d records; process table %d entries, %d evicted; %d kernel overflow(s)",
                     emitted[0], len(table), table.evictions, overflows)

    def _degrade(self, m: Mechanisms, what: str, why: str) -> None:
        log.warning("portable source: %s; continuing without it", why)
        if what == "process":
            m.process, m.process_reason = "poll", f"/proc polling ({why})"
        elif what == "fid":
            m.files_fid_mask = 0
        else:
            m.files_fd, m.files_fid_mask, m.files_reason = False, 0, why
        self.coverage = coverage_of(m)

    def _start_files(self, m: Mechanisms, put: Any, stop: threading.Event, tracker: ProcessTracker,
                     threads: list[threading.Thread], closers: list[Any], lost: Any) -> Any:
        from kestrel_sources_fanotify import fanotify as fan

        from .fidwatch import DirEntryWatch
        from .files import FD_MASK, FileTracker, file_loop, filesystem_roots

        roots = filesystem_roots(self.settings.file_paths)
        notifier = dirwatch = None
        if m.files_fd:
            notifier = fan.FanotifyNotifier(FD_MASK, [(r, "filesystem") for r in roots])
            closers.append(notifier)
        if m.files_fid_mask:
            try:
                dirwatch = DirEntryWatch(m.files_fid_mask, roots)
            except OSError as exc:
                if notifier is None:
                    raise
                self._degrade(m, "fid", f"fanotify FID mode failed to start: {exc}")
            else:
                closers.append(dirwatch)
        threads.append(threading.Thread(target=file_loop, name="portable-files", daemon=True,
                                        args=(notifier, dirwatch, put, stop, tracker.exec_paths,
                                              lost("fanotify_overflow"), tuple(self.settings.ignore_open_prefixes))))
        log.info("portable source: fanotify filesystem marks on %s", ", ".join(roots))
        return FileTracker(tracker.table, tracker.wall_offset_ns)

    def _network_loop(self, poller: Any, put: Any, stop: threading.Event) -> None:
        while not stop.wait(self.settings.network_interval_ms / 1000):
            for conn in poller.poll():
                put(time.monotonic_ns(), "net", conn)

    def _consume(self, inbox: queue.SimpleQueue[tuple[int, int, str, Any]], tracker: ProcessTracker,
                 files: Any, emit: Emit, stop: threading.Event) -> None:
        """Release observations in timestamp order once ``reorder_ms`` old.

        File events carry a lower bound of their time (see files.file_loop),
        which can put them before the exec of the process that caused them;
        such an event is moved to just after that exec (an exec or fork of
        the same pid, stamped before the file event was read), so that it
        carries the new image's process fields."""
        hold_ns = int(self.settings.reorder_ms * 1e6)
        wait_unknown = self.mechanisms is not None and self.mechanisms.process == "connector"
        heap: list[tuple[int, int, str, Any]] = []
        image_changes: dict[int, list[int]] = {}
        """pid -> kernel times of its execs/forks still in the heap."""
        draining = False

        def push(item: tuple[int, int, str, Any]) -> None:
            heapq.heappush(heap, item)
            if item[2] in ("exec", "fork"):
                image_changes.setdefault(item[3][0].pid, []).append(item[0])

        while True:
            try:
                push(inbox.get(timeout=0.05))
                while True:  # take everything queued before deciding what is ripe
                    push(inbox.get_nowait())
            except queue.Empty:
                pass
            if stop.is_set():
                draining = True
            horizon = time.monotonic_ns() - (0 if draining else hold_ns)
            while heap and heap[0][0] <= horizon:
                item = heapq.heappop(heap)
                ts, seq, kind, payload = item
                if kind in ("exec", "fork"):
                    pending = image_changes[payload[0].pid]
                    pending.remove(ts)
                    if not pending:
                        del image_changes[payload[0].pid]
                elif kind in ("fd", "dirent"):
                    ev = payload[0]
                    later = [t for t in image_changes.get(ev.pid, ()) if t <= ev.ts_mono_ns]
                    if later:
                        heapq.heappush(heap, (max(later) + 1, seq, kind, payload))
                        continue
                    if (wait_unknown and ev.pid > 0 and not tracker.table.knows(ev.pid) and not draining
                            and time.monotonic_ns() - ev.ts_mono_ns < UNKNOWN_PID_WAIT_NS):
                        # A pid the connector has not told us about yet: its
                        # fork/exec is late (load); wait for it a little.
                        heapq.heappush(heap, (horizon + 1, seq, kind, payload))
                        break
                for record in self._handle(ts, kind, payload, tracker, files):
                    emit(record)
            if draining and not heap:
                return

    def _handle(self, ts: int, kind: str, payload: Any, tracker: ProcessTracker, files: Any) -> list[dict[str, Any]]:
        if kind in ("fd", "dirent"):
            return files.handle(ts, kind, payload) if files is not None else []
        if kind == "loss":
            self._report_loss(ts, payload, tracker.wall_offset_ns)
            return []
        if kind == "net":
            return [self._network_record(ts + tracker.wall_offset_ns, payload, tracker)]
        return tracker.handle(ts, kind, payload)

    def _report_loss(self, ts: int, payload: tuple[int, str, int], wall_offset: int) -> None:
        """Never silent: the kernel says a queue overflowed, not how many
        events it dropped, so ``n`` (overflows seen) is a lower bound."""
        n, reason, since = payload
        report = self._emit_loss
        if report is not None:
            report(n, since, ts, reason, first_wall_ns=since + wall_offset, last_wall_ns=ts + wall_offset)
        else:
            with self.context.stats.lock:
                self.context.stats.events_lost[(self.name, reason)] += n
            log.warning("portable source: %s: the kernel dropped events (%d overflow(s))", reason, n)

    def _network_record(self, ts_wall: int, conn: Any, tracker: ProcessTracker) -> dict[str, Any]:
        from .ecs import add_process, base

        etype = "start" if conn.action == "bind" else "connection"
        record = base(ts_wall, "network", etype, conn.action)
        info = tracker.table.lookup(conn.pid) if conn.pid else None
        if info is not None:
            add_process(record, info, tracker.table.get(info.ppid))
        sock = conn.sock
        record.update({"source.ip": sock.local_ip, "source.port": sock.local_port, "network.transport": "tcp",
                       "network.type": sock.family})
        if conn.action != "bind":
            record.update({"destination.ip": sock.remote_ip, "destination.port": sock.remote_port,
                           "network.direction": "egress" if conn.action == "connect" else "ingress"})
        if conn.action == "accept":  # ECS: source is the peer that initiated
            record.update({"source.ip": sock.remote_ip, "source.port": sock.remote_port,
                           "destination.ip": sock.local_ip, "destination.port": sock.local_port})
        return record

    def describe_record(self, record: Any) -> str:
        if isinstance(record, dict):
            return f"portable {record.get('event.action', '?')} pid {record.get('process.pid', '?')}"
        return self.PLUGIN_NAME
