"""Measure the portable source on this host and print a table.

    .venv/bin/python plugins/sources-portable/benchmarks/bench_portable.py [--execs 2000]

Rows: exec events seen for a shell loop of N short-lived /bin/true execs
(connector and /proc polling), how many of them carry full args, source
CPU time per exec, file events for N created+written+chmod'ed files, and
the cost of one /proc polling scan and one /proc/net/tcp scan.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Self

from kestrel_sources_portable.netpoll import TcpPoller
from kestrel_sources_portable.procfs import list_pids, snapshot
from kestrel_sources_portable.source import PortableSource

from kestrel_core.testing import make_context


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Running:
    """A PortableSource on a thread, records kept."""

    def __init__(self, match=lambda r: False, **settings: object) -> None:
        self.match = match
        self.matched = 0
        """Records for which ``match`` was true (counted as they arrive: cheap to wait on)."""
        self.context = make_context()
        self.source = PortableSource(PortableSource.Settings(**settings), self.context)
        self.records: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.source.run, args=(self._emit, self.stop))

    def _emit(self, record: dict) -> bool:
        self.records.append(record)
        self.matched += self.match(record)
        return True

    def __enter__(self) -> Self:
        self.thread.start()
        if not self.source.ready.wait(30):
            raise RuntimeError("source did not start")
        return self

    def wait_for(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.matched < n:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def exec_loop(n: int, marker: str) -> tuple[float, int]:
    """n execs of /bin/true with a marker argument; returns (wall seconds, the loop shell's pid)."""
    t0 = time.perf_counter()
    shell = subprocess.Popen(["/bin/sh", "-c", f'i=0; while [ $i -lt {n} ]; do /bin/true {marker}; i=$((i+1)); done'])
    shell.wait()
    return time.perf_counter() - t0, shell.pid


def bench_execs(n: int, process: str, files: bool = False) -> list[str]:
    marker = f"kestrel-bench-{process}-{os.getpid()}"
    shell_pid = [0]

    def is_loop_exec(r: dict) -> bool:
        return r["event.action"] == "exec" and r.get("process.parent.pid") == shell_pid[0] != 0

    with Running(is_loop_exec, process=process, files=files, poll_interval_ms=100) as run:
        time.sleep(0.3)
        c0 = cpu_s()
        loop = f"read go; i=0; while [ $i -lt {n} ]; do /bin/true {marker}; i=$((i+1)); done"
        shell = subprocess.Popen(["/bin/sh", "-c", loop], stdin=subprocess.PIPE)
        shell_pid[0] = shell.pid
        t0 = time.perf_counter()
        shell.communicate(b"go\n")
        wall = time.perf_counter() - t0
        run.wait_for(n, timeout=5)
        cpu = cpu_s() - c0
        seen = [r for r in run.records if is_loop_exec(r)]
        full = sum(1 for r in seen if marker in r.get("process.args", []))
        image = sum(1 for r in seen if r.get("process.executable") == "/usr/bin/true")
        lost = sum(run.context.stats.events_dropped.values())
        total = len(run.records)
    result = (f"{len(seen)} exec events ({image} with the image path, {full} with args), {n / wall:.0f} exec/s "
              f"offered, {cpu / n * 1e6:.0f} us source CPU per exec ({total} records from the whole host), "
              f"kernel overflows {lost}")
    return [f"{n} execs of /bin/true, process = {process}, files = {str(files).lower()}", result]


def bench_files(n: int) -> list[str]:
    tmp = tempfile.mkdtemp(prefix="kestrel-bench-")
    try:
        def is_chmod(r: dict) -> bool:
            return r["event.action"] == "chmod" and r.get("file.directory") == tmp

        with Running(is_chmod, files=True) as run:
            time.sleep(0.3)
            c0 = cpu_s()
            t0 = time.perf_counter()
            # Another process writes: the source ignores its own process's files.
            writer = (f"import os\nfor i in range({n}):\n    p = os.path.join({tmp!r}, f'f{{i}}')\n"
                      f"    with open(p, 'w') as fh: fh.write('x')\n    os.chmod(p, 0o755)\n")
            subprocess.run([sys.executable, "-c", writer], check=True)
            wall = time.perf_counter() - t0

            run.wait_for(n, timeout=10)
            cpu = cpu_s() - c0
            mine = [r for r in run.records if r.get("file.directory") == tmp]
            got = {a: sum(r["event.action"] == a for r in mine) for a in ("create", "open_write", "chmod")}
    finally:
        shutil.rmtree(tmp)
    return [f"{n} files created, written, chmod'ed", ", ".join(f"{v} {k}" for k, v in got.items()) +
            f" ({n / wall:.0f} files/s offered; source CPU {cpu / n * 1e6:.0f} us per file, "
            f"{len(run.records)} records from the whole host in the window)"]


def bench_scans(repeat: int = 20) -> list[list[str]]:
    pids = list(list_pids())
    t0 = time.perf_counter()
    for _ in range(repeat):
        for pid in list_pids():
            snapshot(pid)
    per_poll = (time.perf_counter() - t0) / repeat
    poller = TcpPoller()
    poller.poll()
    t0 = time.perf_counter()
    for _ in range(repeat):
        poller._seen = set()  # every socket new: includes the /proc/*/fd inode scan
        poller.poll()
    per_net = (time.perf_counter() - t0) / repeat
    return [[f"/proc full snapshot scan ({len(pids)} processes)", f"{per_poll * 1e3:.1f} ms per scan"],
            ["/proc/net/tcp poll with inode->pid scan", f"{per_net * 1e3:.1f} ms per poll"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--execs", type=int, default=2000)
    ap.add_argument("--files", type=int, default=1000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (proc connector and fanotify need it)")
    rows = [bench_execs(args.execs, "connector"), bench_execs(args.execs, "connector", files=True),
            bench_execs(args.execs, "poll"), bench_files(args.files),
            *bench_scans()]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}} | result")
    print(f"{'-' * width}-|-------")
    for name, result in rows:
        print(f"{name:<{width}} | {result}")


if __name__ == "__main__":
    main()
