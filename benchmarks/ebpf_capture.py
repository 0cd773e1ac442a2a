"""Record what the eBPF source really emits, per event kind, for a scripted workload.

    .venv/bin/python benchmarks/ebpf_capture.py [-o capture.json] [--samples]

Needs root and what the ebpf source needs (plugins/sources-ebpf/scripts/install.sh).
Starts an :class:`~kestrel_sources_ebpf.source.EbpfSource` with every kind
enabled (no push-down), runs one scripted behaviour per kernel kind in a fresh
directory under /tmp (exec, fork, exit, open for read and write, create,
rename, unlink, chmod, chown, connect, accept, bind, ptrace, memfd_create,
setuid/setgid and the re/res variants, finit_module of a non-module,
mmap and mprotect with PROT_EXEC), keeps the events of that workload's
processes and writes, per ``event.action``: the ECS fields seen with their
value types, ``event.category``/``event.type``, and with ``--samples`` one
whole record.  ``benchmarks/ecs_coverage.py --capture FILE`` counts a field
as emitted if this capture saw it; docs/ecs-fidelity.md quotes the samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

WORKLOAD = r'''
import ctypes, mmap, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
os.chdir(d)
# exec (and fork, exit) of a child with arguments
os.spawnv(os.P_WAIT, "/bin/true", ["true", "--marker", d])
# files: create, open for read and write, rename, chmod, chown, unlink
with open("f1.txt", "w") as fh: fh.write("x")
with open("f1.txt") as fh: fh.read()
with open("f1.txt", "a") as fh: fh.write("y")
os.rename("f1.txt", "f2.sh")
os.chmod("f2.sh", 0o755)
os.chown("f2.sh", 65534, 65534)
os.unlink("f2.sh")
# network: bind + listen, connect, accept
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
conn.close(); cli.close(); srv.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("127.0.0.1", 9)); u.close()
# memfd_create, mmap / mprotect with PROT_EXEC
fd = os.memfd_create("kestrel-capture", 0); os.write(fd, b"\0" * 4096)
m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC, flags=mmap.MAP_SHARED); m.close(); os.close(fd)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, 4096, 3, 0x22, -1, 0)
libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(4096), 5)
# finit_module of a file that is not a module (fails: EINVAL/ENOEXEC), init_module of garbage
fd = os.open("/dev/null", os.O_RDONLY)
libc.syscall(313, fd, b"", 0); os.close(fd)
buf = ctypes.create_string_buffer(64); libc.syscall(175, buf, 64, b"")
# ptrace: attach to a child and detach
pid = os.fork()
if pid == 0:
    time.sleep(2); os._exit(0)
libc.ptrace(16, pid, None, None); os.waitpid(pid, 0); libc.ptrace(17, pid, None, None)
os.kill(pid, 9); os.waitpid(pid, 0)
# id changes in a child: setgid, setregid, setresgid, setuid, setreuid, setresuid
pid = os.fork()
if pid == 0:
    os.setgid(65534); os.setregid(65534, 65534); os.setresgid(65534, 65534, 65534)
    os.setresuid(0, 0, 0); os.setreuid(0, 0); os.setuid(65534)
    os._exit(0)
os.waitpid(pid, 0)
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="-", help="JSON file to write ('-': stdout)")
    parser.add_argument("--samples", action="store_true", help="include one whole record per action")
    args = parser.parse_args()

    from kestrel_core.interfaces import Interest
    from kestrel_core.testing import make_context
    from kestrel_sources_ebpf.source import EbpfSource, probe_host
    from kestrel_sources_ebpf.testing import LossEmit, wait_for

    probe = probe_host()
    if not probe.available:
        print(f"ebpf source unavailable: {probe.reason}", file=sys.stderr)
        return 4
    ctx = make_context()
    src = EbpfSource(EbpfSource.Settings(pushdown=False), ctx)
    src.set_interest(Interest())
    emit, stop = LossEmit(ctx.schema), threading.Event()
    thread = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
    thread.start()
    wait_for(src.ready.is_set, 120, "the ebpf source to attach")
    with tempfile.TemporaryDirectory(prefix="kestrel-capture-") as work:
        script = Path(work) / "workload.py"
        script.write_text(WORKLOAD)
        # Its own session, so the session and entry leader are a process the source saw start:
        # the caller's session leader may have exited (a CI runner's often has), and then the
        # leader fields are rightly absent.
        child = subprocess.Popen([sys.executable, str(script), work], start_new_session=True)
        pid = child.pid
        child.wait()
        time.sleep(1.0)
        stop.set()
        thread.join(30)
    records = emit.snapshot()
    ours = _workload_records(records, pid, work)
    by_action: dict[str, Any] = {}
    for rec in ours:
        action = rec.get("event.action", "?")
        entry = by_action.setdefault(action, {"category": rec.get("event.category"), "type": rec.get("event.type"),
                                              "outcome": set(), "count": 0, "fields": {}, "sample": None})
        entry["count"] += 1
        if "event.outcome" in rec:
            entry["outcome"].add(rec["event.outcome"])
        for path, value in rec.items():
            entry["fields"].setdefault(path, type(value).__name__)
        if args.samples and (entry["sample"] is None or len(rec) > len(entry["sample"])):
            entry["sample"] = rec
    out = {"kernel": os.uname().release, "records": len(ours), "actions": {}}
    for action, entry in sorted(by_action.items()):
        entry["outcome"] = sorted(entry["outcome"])
        entry["fields"] = dict(sorted(entry["fields"].items()))
        if not args.samples:
            del entry["sample"]
        out["actions"][action] = entry
    text = json.dumps(out, indent=1, default=str)
    if args.output == "-":
        print(text)
    else:
        Path(args.output).write_text(text + "\n")
    print(f"{len(ours)} records of the workload, {len(by_action)} actions: {', '.join(sorted(by_action))}",
          file=sys.stderr)
    return 0


def _workload_records(records: list[dict[str, Any]], root_pid: int, work: str) -> list[dict[str, Any]]:
    """The records of the workload's process tree (its pid, and every process forked from one of it)."""
    pids = {root_pid}
    ours = []
    for rec in records:  # in order: a fork's record precedes its child's records
        pid, ppid = rec.get("process.pid"), rec.get("process.parent.pid")
        if pid in pids or (ppid in pids and rec.get("event.action") in ("fork", "exec")) or \
                work in str(rec.get("process.args", "")):
            pids.add(pid)
            ours.append(rec)
    return ours


if __name__ == "__main__":
    raise SystemExit(main())
