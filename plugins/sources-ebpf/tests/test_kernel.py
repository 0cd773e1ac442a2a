"""The source on the real kernel: each kind of event arrives normalized to
the ECS contract, with the right process and parent fields."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kestrel_sources_ebpf.decode import KIND_OFFSET, PATH_OFFSET
from kestrel_sources_ebpf.normalizer import EbpfNormalizer
from kestrel_sources_ebpf.proctable import TICK_NS, entity_id
from kestrel_sources_ebpf.source import EbpfSource
from kestrel_sources_ebpf.testing import LossEmit, Running, needs_kernel, wait_for

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.interfaces import Interest, LiteralFilter
from kestrel_core.packs import load_rule_pack
from kestrel_core.schema import Schema
from kestrel_core.testing import make_context

pytestmark = needs_kernel

COMMON = ("@timestamp", "event.kind", "event.category", "event.type", "event.action", "event.module", "host.name",
          "host.id", "host.os.type", "host.os.kernel", "host.os.name", "host.os.family", "process.parent.args_count",
          "process.pid", "process.entity_id", "process.name", "process.executable", "process.args",
          "process.args_count", "process.command_line", "process.working_directory", "process.parent.pid",
          "process.parent.entity_id", "process.parent.name", "process.parent.executable", "process.parent.args",
          "process.parent.command_line", "user.id", "user.effective.id", "group.id")


def proc_entity(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    return entity_id(pid, int(stat[stat.rindex(b")") + 2:].split()[19]))


def check_common(rec: dict) -> None:
    missing = [f for f in COMMON if f not in rec]
    assert not missing, f"missing {missing} in {rec}"
    assert rec["event.kind"] == "event" and rec["event.module"] == "ebpf"
    assert isinstance(rec["event.category"], list) and isinstance(rec["event.type"], list)
    assert abs(rec["@timestamp"] - time.time_ns()) < 60 * 10**9
    assert isinstance(rec["user.id"], str) and isinstance(rec["group.id"], str)
    assert rec["process.args_count"] == len(rec["process.args"])
    assert rec["process.parent.args_count"] == len(rec["process.parent.args"])
    assert rec["host.os.type"] == "linux" and rec["host.os.kernel"] == os.uname().release


def test_exec_fork_exit_with_parent_fields(start_source, tmp_path):
    run = start_source()
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n/bin/true one 'two words'\nexit 7\n")
    script.chmod(0o755)
    me = os.getpid()
    p = subprocess.Popen([str(script)], cwd=tmp_path)
    p.wait()
    sh_exec = run.find(lambda r: r["event.action"] == "exec" and r["process.pid"] == p.pid, what="sh exec")
    check_common(sh_exec)
    assert sh_exec["event.category"] == ["process"] and sh_exec["event.type"] == ["start"]
    assert sh_exec["process.name"] == "dash" or sh_exec["process.executable"].endswith("sh")
    assert sh_exec["process.args"] == ["/bin/sh", str(script)]
    assert sh_exec["process.working_directory"] == str(tmp_path)
    assert sh_exec["process.parent.pid"] == me
    assert sh_exec["process.parent.entity_id"] == proc_entity(me)
    assert sh_exec["process.parent.executable"] == os.path.realpath(sys.executable)
    assert sh_exec["user.id"] == str(os.getuid()) and sh_exec["user.effective.id"] == str(os.geteuid())
    true_exec = run.find(lambda r: r["event.action"] == "exec" and r["process.parent.pid"] == p.pid
                         and r["process.name"] == "true", what="true exec")
    assert true_exec["process.args"] == ["/bin/true", "one", "two words"]
    assert true_exec["process.command_line"] == "/bin/true one two words"
    assert true_exec["process.executable"] == "/usr/bin/true"
    assert true_exec["process.parent.name"] == sh_exec["process.name"]
    assert true_exec["process.parent.entity_id"] == sh_exec["process.entity_id"]
    assert true_exec["process.parent.args"] == ["/bin/sh", str(script)]
    fork = run.find(lambda r: r["event.action"] == "fork" and r["process.pid"] == true_exec["process.pid"],
                    what="fork of the shell")
    check_common(fork)
    assert fork["process.entity_id"] == true_exec["process.entity_id"]  # stable over the exec
    assert fork["process.parent.pid"] == p.pid and fork["process.name"] == sh_exec["process.name"]
    exit_ = run.find(lambda r: r["event.action"] == "end" and r["process.pid"] == p.pid, what="exit")
    assert exit_["event.type"] == ["end"] and exit_["process.exit_code"] == 7
    assert exit_["process.entity_id"] == sh_exec["process.entity_id"]
    # the exec chain: the forked python became sh
    assert sh_exec["process.Ext.exec_chain"][-1] == os.path.realpath(sys.executable)


def test_entity_id_matches_proc_seed(start_source):
    run = start_source()
    p = subprocess.Popen(["sleep", "5"])
    try:
        rec = run.find(lambda r: r["event.action"] == "exec" and r["process.pid"] == p.pid, what="sleep exec")
        assert rec["process.entity_id"] == proc_entity(p.pid)
    finally:
        p.kill()
        p.wait()


def test_file_events(start_source, tmp_path):
    run = start_source()
    d = tmp_path
    cmd = ("echo x > new.txt; cat new.txt > /dev/null; echo y >> new.txt; chmod 4755 new.txt; chown 12:34 new.txt; "
           "mv new.txt moved.txt; rm moved.txt")
    p = subprocess.run(["/bin/sh", "-c", cmd], cwd=d, check=True)
    del p
    path, moved = str(d / "new.txt"), str(d / "moved.txt")

    def one(action: str, fpath: str) -> dict:
        return run.find(lambda r: r["event.action"] == action and r.get("file.path") == fpath, what=f"{action} {fpath}")

    create = one("creation", path)
    check_common(create)
    assert create["event.category"] == ["file"] and create["event.type"] == ["creation"]
    assert create["file.name"] == "new.txt" and create["file.directory"] == str(d) and create["file.extension"] == "txt"
    read = one("open", path)
    assert read["event.type"] == ["access"] and read["process.name"] == "cat"
    assert read["process.parent.name"] in ("sh", "dash")
    write = one("open_write", path)
    assert write["event.type"] == ["change"]
    chmod = one("chmod", path)
    assert chmod["file.mode"] == "4755" and chmod["process.name"] == "chmod" and chmod["event.outcome"] == "success"
    chown = one("chown", path)
    assert chown["file.owner"] == "12" and chown["event.type"] == ["change"]
    rename = one("rename", moved)
    assert rename["file.Ext.original.path"] == path and rename["process.name"] == "mv"
    assert rename["file.Ext.original.name"] == "new.txt" and rename["file.Ext.original.extension"] == "txt"
    assert rename["file.name"] == "moved.txt" and rename["file.extension"] == "txt"
    assert rename["user.Ext.real.id"] == rename["user.id"] == str(os.getuid())
    unlink = one("deletion", moved)
    assert unlink["event.type"] == ["deletion"]


def test_created_flag_only_when_the_file_is_new(start_source, tmp_path):
    """O_CREAT on an existing file is a write, not a creation (file->f_mode FMODE_CREATED)."""
    run = start_source()
    f = tmp_path / "exists.txt"
    f.write_text("a")
    fd = os.open(f, os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    def opens() -> list[str]:
        return [r["event.action"] for r in run.emit.snapshot() if r.get("file.path") == str(f)]

    wait_for(lambda: len(opens()) >= 2, 10, "both opens")
    assert opens() == ["creation", "open_write"]


def test_network_events(start_source):
    run = start_source()
    listener = socket.socket(socket.AF_INET6)
    listener.bind(("::1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("::1", port))
    server, _ = listener.accept()
    lport = client.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(("127.0.0.3", 5353))
    try:
        bind = run.find(lambda r: r["event.action"] == "bind" and r.get("network.type") == "ipv6"
                        and r["process.pid"] == os.getpid(), what="bind")
        assert bind["source.ip"] == "::1" and bind["network.transport"] == "tcp"
        conn = run.find(lambda r: r["event.action"] == "connection_attempted" and r.get("destination.port") == port,
                        what="connect")
        check_common(conn)
        assert conn["event.category"] == ["network"] and "connection" in conn["event.type"]
        assert conn["network.direction"] == "egress" and conn["destination.ip"] == "::1"
        assert conn["source.port"] == lport and conn["network.transport"] == "tcp"
        acc = run.find(lambda r: r["event.action"] == "connection_accepted" and r.get("destination.port") == port,
                       what="accept")
        assert acc["network.direction"] == "ingress" and acc["source.port"] == lport and acc["source.ip"] == "::1"
        u = run.find(lambda r: r["event.action"] == "connection_attempted" and r.get("destination.port") == 5353,
                     what="udp")
        assert u["network.transport"] == "udp" and u["network.type"] == "ipv4" and u["destination.ip"] == "127.0.0.3"
    finally:
        for s in (udp, server, client, listener):
            s.close()


def test_privilege_memfd_ptrace_and_exec_mappings(start_source):
    run = start_source()
    code = r"""
import ctypes, mmap, os, signal
libc = ctypes.CDLL(None, use_errno=True)
fd = os.memfd_create("kestrel-test-memfd")
os.setresgid(-1, 0, -1)
os.setuid(0)
m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_EXEC)
child = os.fork()
if child == 0:
    signal.pause()
libc.ptrace(16, child, 0, 0)   # PTRACE_ATTACH
os.waitpid(child, 0)
os.kill(child, 9)
"""
    p = subprocess.run([sys.executable, "-c", code], check=True)
    del p
    memfd = run.find(lambda r: r["event.action"] == "memfd_create" and r.get("file.name") == "kestrel-test-memfd",
                     what="memfd_create")
    check_common(memfd)
    pid = memfd["process.pid"]
    setuid = run.find(lambda r: r["event.action"] == "uid_change" and r["process.pid"] == pid, what="setuid")
    assert setuid["user.target.id"] == "0" and setuid["event.type"] == ["change"]
    setresgid = run.find(lambda r: r["event.action"] == "gid_change" and r["process.pid"] == pid, what="setresgid")
    assert setresgid["group.target.id"] == "0"
    mm = run.find(lambda r: r["event.action"] == "mmap_exec" and r["process.pid"] == pid and "file.path" not in r,
                  what="anonymous exec mapping")
    assert mm["process.mmap.prot"] & 4
    pt = run.find(lambda r: r["event.action"] == "ptrace" and r["process.pid"] == pid, what="ptrace")
    assert pt["event.type"] == ["access"] and pt["target.process.pid"] != pid
    assert pt["target.process.name"].startswith("python")


@pytest.fixture
def short_dir():
    """A directory with a short path: the kernel compares the first 32 bytes of a prefix."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="kp", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d)


def test_pushdown_filters_in_kernel_and_follows_set_interest(start_source, program, short_dir):
    tmp_path = short_dir
    interest = Interest(categories=frozenset({"file"}), wants_all=False, filters=(
        LiteralFilter("file", (("event.action", ("open",)), ("file.path", (str(tmp_path / "wanted") + "*",)))),))
    run = start_source(interest)
    assert program.plan.kinds == {4} and program.plan.prefix_kinds == {4}
    before = program.filtered_counts().get("open_read", 0)
    (tmp_path / "wanted.txt").write_text("w")
    (tmp_path / "other.txt").write_text("o")
    n = 200
    code = f"for i in range({n}):\n    open({str(tmp_path / 'other.txt')!r}).close()\nopen({str(tmp_path / 'wanted.txt')!r}).close()"
    subprocess.run([sys.executable, "-c", code], check=True)
    run.find(lambda r: r.get("file.path") == str(tmp_path / "wanted.txt"), what="the wanted open")
    assert not [r for r in run.emit.snapshot() if r.get("file.path") == str(tmp_path / "other.txt")]
    assert not [(r["event.action"], r["process.name"], r.get("file.path")) for r in run.emit.snapshot() if r["event.action"] != "open"]
    assert program.filtered_counts().get("open_read", 0) - before >= n
    # a rule reload widens the filter without reloading the programs
    loaded = program.objects or program.bpf
    run.source.set_interest(Interest())
    assert (program.objects or program.bpf) is loaded and len(program.plan.kinds) > 20
    subprocess.run(["cat", str(tmp_path / "other.txt")], check=True, stdout=subprocess.DEVNULL)
    run.find(lambda r: r.get("file.path") == str(tmp_path / "other.txt"), what="the other file after widening")


def test_normalizer_builds_events(start_source):
    run = start_source()
    p = subprocess.run(["/bin/true"], check=True)
    del p
    rec = run.find(lambda r: r["event.action"] == "exec" and r["process.name"] == "true", what="exec")
    # a flat record (as tools and recordings hold them) is mapped path by path
    ctx = make_context()
    ev = EbpfNormalizer(EbpfNormalizer.Settings(), ctx).normalize(rec, "ebpf")
    flat = ev.to_ecs(ctx.schema)
    assert ev.category == "process" and flat == rec
    assert ev.ts_wall_ns == rec["@timestamp"] and ev.entity_key != 0 and ev.source_id == "ebpf"
    assert ctx.schema.get("network.type").declared and ctx.schema.get("target.process.pid").declared
    # the source's own events pass through with the source name stamped
    from kestrel_sources_ebpf.normalizer import entity_key
    own = run.source.decoder
    assert ev.entity_key == entity_key(rec["process.entity_id"])
    assert own.f["process.args"] == run.source.context.schema.resolve("process.args")
    with pytest.raises(Exception, match="ebpf record"):
        EbpfNormalizer(EbpfNormalizer.Settings(), ctx).normalize({"x": 1}, "ebpf")


def test_tick_ns_is_clock_tick():
    assert TICK_NS * os.sysconf("SC_CLK_TCK") == 10**9


@pytest.mark.parametrize("n", [5000])
def test_rapid_execs_all_arrive(start_source, tmp_path, n):
    """n execs in a tight loop, with the default pack's push-down (as a default
    profile runs): n exec events, or a loss count that explains the difference."""
    rules, errors = load_rule_pack([Path(__file__).resolve().parents[3] / "rules" / "linux"])
    assert not errors
    run = start_source(DetectionEngine(Schema.ecs(), rules).interest())
    # xargs forks and execs each child directly: no shell per child
    p = subprocess.run(f"seq {n} | xargs -n1 -P1 /bin/true", shell=True, check=True)
    del p
    xargs = run.find(lambda r: r["event.action"] == "exec" and r["process.name"] == "xargs", what="xargs exec")

    def count() -> int:
        return sum(1 for r in run.emit.snapshot() if r["event.action"] == "exec"
                   and r["process.parent.pid"] == xargs["process.pid"])

    def settled() -> bool:
        lost = sum(x[0] for x in run.emit.losses)
        return count() + lost >= n

    wait_for(settled, 60, f"{n} exec events")
    lost = sum(x[0] for x in run.emit.losses)
    got = count()
    assert got <= n, got
    assert got == n or lost >= n - got, f"{n - got} exec events missing, only {lost} losses counted"
    assert run.source.stats()["malformed"] == 0


def test_long_argv_is_cut_and_flagged(start_source):
    run = start_source()
    long_arg = "a" * 3000
    subprocess.run(["/bin/true", "short", long_arg], check=True)
    rec = run.find(lambda r: r["event.action"] == "exec" and r["process.name"] == "true"
                   and r["process.args"][1:2] == ["short"], what="exec with a long argv")
    assert rec.get("process.args_truncated") is True
    assert rec["process.args"][2] == long_arg[: len(rec["process.args"][2])] and len(rec["process.args"][2]) < 1024
    subprocess.run(["/bin/true", "tiny"], check=True)
    small = run.find(lambda r: r["event.action"] == "exec" and r["process.args"] == ["/bin/true", "tiny"],
                     what="exec with a short argv")
    assert "process.args_truncated" not in small


def test_bcc_callback_consumer_where_the_ring_cannot_be_read_in_place(monkeypatch, tmp_path):
    """Off x86 the programs are loaded by bcc in this process and the ring is
    read through bcc's per-record callback: same events."""
    from kestrel_sources_ebpf import program as program_mod

    monkeypatch.setattr(program_mod, "TSO", False)
    prog = program_mod.Program(ringbuf_pages=256)
    assert prog.backend == "bcc" and "ring is read through bcc" in prog.fallback_reason
    ctx = make_context()
    src = EbpfSource(EbpfSource.Settings(), ctx, program=prog)
    src.set_interest(Interest())
    emit, stop = LossEmit(ctx.schema), threading.Event()
    t = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
    t.start()
    run = Running(src, emit, t, stop)
    try:
        wait_for(src.ready.is_set, 30, "the source to attach")
        assert prog._ring_open  # bcc's consumer is the one draining the ring
        target = tmp_path / "cb-target"
        p = subprocess.run(["/bin/sh", "-c", f"echo x > {target}"], check=True)
        del p
        rec = run.find(lambda r: r["event.action"] in ("creation", "open_write") and r.get("file.path") == str(target),
                       what="create through the bcc consumer")
        assert rec["process.name"] in ("sh", "dash") and rec["event.outcome"] == "success"
        run.find(lambda r: r["event.action"] == "exec" and r["process.args"][:2] == ["/bin/sh", "-c"],
                 what="exec through the bcc consumer")
    finally:
        run.stop()
        prog.close()


def test_every_record_of_a_flood_is_delivered_or_counted_lost(program, short_dir):
    """Records of an open() flood the consumer cannot keep up with: each one
    is either read off the ring or counted lost, also while the loss counters
    are read over and over during the flood (a read-modify-write of the
    kernel's per-CPU counters used to overwrite increments: losses went
    uncounted)."""
    from kestrel_sources_ebpf.plan import Plan, plan_for

    target = short_dir / "flooded"
    target.write_text("x")
    interest = Interest(categories=frozenset({"file"}), wants_all=False, filters=(
        LiteralFilter("file", (("event.action", ("open",)), ("file.path", (str(target),)))),))
    plan = plan_for(interest)
    assert plan.prefix_kinds == {4}  # only the flood's opens reach the ring
    reader = program.reader()
    reader.read(lambda _b, _r: None, 1 << 62)
    program.take_loss()
    delivered, lost, windows = [0], 0, []

    wanted = str(target).encode() + b"\0"
    others = [0]

    def take(block: bytes, recs: list) -> None:
        # Relative and not-yet-faulted-in paths pass the kernel's prefix
        # filter by design (user space resolves them): other processes' opens
        # can share the ring with the flood, so only the flood's are counted.
        for off, _size in recs:
            if block[off + KIND_OFFSET] == 4 and block.startswith(wanted, off + PATH_OFFSET):
                delivered[0] += 1
            else:
                others[0] += 1

    n = 200_000
    program.configure(plan)
    # chdir records (always on with a non-empty plan) of other processes would
    # be delivered or lost alongside the flood on a busy host: switch them off.
    import ctypes

    from kestrel_sources_ebpf.kinds import K_CHDIR
    program.enabled[ctypes.c_int(K_CHDIR)] = ctypes.c_uint32(0)
    try:
        flood = subprocess.Popen([sys.executable, "-c", "import os\n"
                                  f"for i in range({n}): os.close(os.open({str(target)!r}, os.O_RDONLY))"])
        while flood.poll() is None:
            for _ in range(20):
                got = program.take_loss()
                if got[0]:
                    lost += got[0]
                    windows.append(got)
            reader.read(take, 16)
        assert flood.returncode == 0
        while reader.read(take, 1 << 20):
            pass
        got = program.take_loss()
        lost += got[0]
        while reader.read(take, 1 << 20):
            pass
    finally:
        program.configure(Plan(frozenset()))
    assert lost > 0, "the consumer kept up: nothing was tested"
    assert delivered[0] <= n
    assert delivered[0] + lost >= n, f"{n - delivered[0] - lost} records neither delivered nor counted lost"
    # The loss counter cannot tell the flood's records from others' lost beside them:
    # allow as many extra losses as other records were seen per delivered flood record.
    slack = others[0] * (lost / max(1, delivered[0])) * 2 + 16
    assert delivered[0] + lost - n <= slack, f"{delivered[0] + lost - n} more counted than sent ({others[0]} others)"
    assert all(0 < first <= last for _, first, last in windows)


class _ExecOnWatching(logging.Handler):
    """Execs a tagged process from inside the source's own "watching" log
    call: the earliest moment a user reading the log could act."""

    def __init__(self, tag: str) -> None:
        super().__init__(logging.INFO)
        self.tag, self.fired = tag, 0

    def emit(self, record: logging.LogRecord) -> None:
        if "watching" in record.getMessage():
            self.fired += 1
            subprocess.run(["/bin/true", self.tag], check=True)


def _exec_right_after_ready(src: EbpfSource, tag: str) -> None:
    """Start ``src``; exec a uniquely tagged process the moment it logs
    "watching" (and once more the moment ``ready`` is set); both execs must
    be among its records, with no loss reported."""
    emit, stop = LossEmit(src.context.schema), threading.Event()
    hook = _ExecOnWatching(tag + "-log")
    logger = logging.getLogger("kestrel.ebpf")
    logger.addHandler(hook)
    level = logger.level
    logger.setLevel(logging.INFO)
    t = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
    t.start()
    run = Running(src, emit, t, stop)
    try:
        assert src.ready.wait(60), "the source did not become ready"
        subprocess.run(["/bin/true", tag], check=True)  # no pause between ready and the exec
        for arg in (tag + "-log", tag):
            run.find(lambda r: r.get("event.action") == "exec" and r.get("process.args") == ["/bin/true", arg],
                     what=f"the exec of {arg} right after ready")
        assert hook.fired == 1 and not emit.losses
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)
        run.stop()


def test_exec_right_after_ready_is_delivered_own_program():
    """The real start path (compile, attach, configure, read /proc): execs
    issued the instant it says "watching" or sets ``ready`` are delivered."""
    src = EbpfSource(EbpfSource.Settings(), make_context())
    src.set_interest(Interest())
    _exec_right_after_ready(src, f"kestrel-ready-{os.getpid()}")


def test_exec_right_after_ready_is_delivered_on_restart(program):
    """Restarting on an attached program (the shared-program path) twenty
    times: every exec right after ready arrives."""
    for i in range(20):
        src = EbpfSource(EbpfSource.Settings(), make_context(), program=program)
        src.set_interest(Interest())
        _exec_right_after_ready(src, f"kestrel-restart-{os.getpid()}-{i}")


# ------------------------------------------------------------ identity (issue: ECS fidelity)

def _exec_of(run, tag: str, what: str) -> dict:
    return run.find(lambda r: r.get("event.action") == "exec" and tag in (r.get("process.args") or []),
                    what=what)


def test_process_name_is_the_name_it_was_executed_by(start_source, tmp_path):
    """process.name is the last component of the path passed to execve (the
    kernel's comm, untruncated), as published rules expect; executable is the
    resolved file."""
    link = tmp_path / "a-rather-long-tool-name"
    link.symlink_to("/bin/true")
    run = start_source()
    tag = f"name-{os.getpid()}"
    subprocess.run([str(link), tag], check=True)
    rec = _exec_of(run, tag, "exec through a symlink")
    assert rec["process.name"] == "a-rather-long-tool-name"
    assert rec["process.executable"] == os.path.realpath("/bin/true")


def test_setsid_makes_the_shell_the_session_and_group_leader(start_source):
    run = start_source()
    tag = f"leader-{os.getpid()}"
    # setsid(1) calls setsid() and execs sh in the same process: sh leads the new session and group.
    p = subprocess.Popen(["setsid", "/bin/sh", "-c", f"/bin/true {tag}; exit 0"])
    p.wait()
    rec = _exec_of(run, tag, "true in the new session")
    sh = run.find(lambda r: r.get("event.action") == "exec" and r["process.pid"] == p.pid and
                  r["process.name"] == "sh", what="sh exec")
    for leader in ("process.session_leader", "process.group_leader", "process.entry_leader"):
        assert rec[f"{leader}.pid"] == p.pid, leader
        assert rec[f"{leader}.entity_id"] == sh["process.entity_id"] and rec[f"{leader}.name"] == "sh", leader
    assert sh["process.session_leader.pid"] == p.pid  # the leader is its own leader
    assert rec["process.interactive"] is False and "process.tty.char_device.major" not in rec
    assert rec["process.entry_leader.entry_meta.type"] in ("unknown", "init", "sshd", "terminal", "console")


def test_setuid_changes_the_ids_of_that_event_and_later_ones(start_source):
    run = start_source()
    tag = f"setuid-{os.getpid()}"
    code = f"import os; os.setgid(65534); os.setuid(65534); os.execv('/bin/true', ['/bin/true', '{tag}'])"
    p = subprocess.Popen([sys.executable, "-c", code])
    p.wait()
    change = run.find(lambda r: r.get("event.action") == "uid_change" and r["process.pid"] == p.pid, what="setuid")
    assert change["user.target.id"] == "65534" and change["event.outcome"] == "success"
    assert change["user.id"] == change["user.Ext.real.id"] == "65534"  # Defend's uid_change: the ids after the call
    assert change["process.user.id"] == change["process.real_user.id"] == change["process.saved_user.id"] == "65534"
    assert change["process.group.id"] == "65534" and change["process.user.name"] == "nobody"
    rec = _exec_of(run, tag, "exec after setuid")
    assert rec["user.id"] == rec["process.user.id"] == rec["process.real_user.id"] == "65534"
    assert rec["user.name"] == "nobody" and rec["process.group.name"] == "nogroup"
    assert rec["process.parent.user.id"] == "0" and rec["process.parent.real_user.id"] == "0"
    assert rec["process.thread.capabilities.effective"] == []  # root's capabilities went with the uid


def test_file_capabilities_show_in_the_capability_sets(start_source, tmp_path):
    """A copy of sleep given cap_net_raw with setcap, run as nobody: exactly
    that capability is effective and permitted; a root process has them all."""
    binary = tmp_path / "capped"
    shutil.copy("/bin/sleep", binary)
    subprocess.run(["setcap", "cap_net_raw+ep", str(binary)], check=True)
    os.chmod(tmp_path, 0o755)
    run = start_source()
    tag = "0.01"
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(binary), tag], check=True)
    rec = run.find(lambda r: r.get("event.action") == "exec" and r.get("process.executable") == str(binary),
                   what="the capped exec")
    assert rec["process.thread.capabilities.effective"] == ["CAP_NET_RAW"]
    assert rec["process.thread.capabilities.permitted"] == ["CAP_NET_RAW"]
    assert rec["process.user.id"] == "65534"
    root_tag = f"root-{os.getpid()}"
    subprocess.run(["/bin/true", root_tag], check=True)
    root = _exec_of(run, root_tag, "a root exec")
    assert {"CAP_SYS_ADMIN", "CAP_BPF", "CAP_NET_RAW"} <= set(root["process.thread.capabilities.effective"])


def test_container_id_from_a_docker_scope_cgroup(start_source):
    """A process in a cgroup2 directory named as docker's systemd driver names
    containers gets container.id and container.runtime."""
    from kestrel_core import host

    root = host.ensure_cgroup2()
    assert root is not None, "no cgroup2 hierarchy could be mounted"
    cid = hashlib.sha256(f"kestrel-{os.getpid()}".encode()).hexdigest()
    scope = root / "kestrel-test.slice" / f"docker-{cid}.scope"
    scope.mkdir(parents=True, exist_ok=True)
    run = start_source()
    tag = f"container-{os.getpid()}"
    try:
        code = (f"import os; open({str(scope / 'cgroup.procs')!r}, 'w').write(str(os.getpid())); "
                f"os.execv('/bin/true', ['/bin/true', '{tag}'])")
        subprocess.run([sys.executable, "-c", code], check=True)
        rec = _exec_of(run, tag, "exec in the container cgroup")
    finally:
        scope.rmdir()
        scope.parent.rmdir()
    assert rec["container.id"] == cid and rec["container.runtime"] == "docker"
    assert rec["process.entry_leader.entry_meta.type"] == "container"
    outside = f"outside-{os.getpid()}"
    subprocess.run(["/bin/true", outside], check=True)
    assert "container.id" not in _exec_of(run, outside, "exec outside")


def test_exec_carries_the_image_hash_and_allow_listed_env_vars(start_source, tmp_path):
    """process.hash.sha256 is what sha256sum says of the exec'd file (also
    for a second exec, from the cache, and after the file changed); only the
    allow-listed environment variables are copied."""
    binary = tmp_path / "hashed"
    shutil.copy("/bin/sleep", binary)
    run = start_source()
    env = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": "/tmp/evil.so", "SECRET_TOKEN": "do-not-copy"}
    subprocess.run([str(binary), "0.01"], env=env, check=True)
    first = run.find(lambda r: r.get("event.action") == "exec" and r.get("process.executable") == str(binary),
                     what="the hashed exec")
    want = subprocess.run(["sha256sum", str(binary)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert first["process.hash.sha256"] == want
    assert first["process.env_vars"] == ["LD_PRELOAD=/tmp/evil.so"]
    with open(binary, "ab") as fh:  # a new file version: hashed again, not served from the cache
        fh.write(b"\0")
    subprocess.run([str(binary), "0.02"], env={"PATH": "/usr/bin:/bin"}, check=True)
    second = run.find(lambda r: r.get("event.action") == "exec" and r.get("process.args") == [str(binary), "0.02"],
                      what="the exec after the change")
    want2 = subprocess.run(["sha256sum", str(binary)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert second["process.hash.sha256"] == want2 != want and "process.env_vars" not in second


# --- the agent's footprint: compiled objects instead of bcc in the process, and an idle source that sleeps

CHILD = r"""
import json, os, sys, time
from kestrel_sources_ebpf.decode import KIND_OFFSET
from kestrel_sources_ebpf.kinds import BY_NAME
from kestrel_sources_ebpf.plan import Plan
from kestrel_sources_ebpf.program import Program

prog = Program(ringbuf_pages=64, loader="objects")
reader = prog.reader()
reader.read(lambda b, r: None, 1 << 62)
prog.configure(Plan(frozenset({BY_NAME["open_write"].code})))
marker = sys.argv[1].encode()
seen = []
def handle(block, recs):
    seen.extend(off for off, size in recs if block[off + KIND_OFFSET] == BY_NAME["open_write"].code
                and marker in block[off:off + size])
deadline = time.monotonic() + 10
while not seen and time.monotonic() < deadline:
    os.close(os.open(sys.argv[1], os.O_WRONLY))
    reader.wait(100)
    reader.read(handle, 4096)
maps = open("/proc/self/maps").read()
print(json.dumps({"backend": prog.backend, "cache_hit": prog.cache_hit, "load_s": prog.load_s,
                  "bcc_imported": "bcc" in sys.modules, "seen": len(seen),
                  "compiler_mapped": [n for n in ("libLLVM", "libclang", "libbcc") if n in maps]}))
prog.close()
"""


def _child(tmp_path: Path, cache: Path) -> dict:
    import json

    marker = tmp_path / "marker.txt"
    marker.write_text("m")
    env = dict(os.environ, KESTREL_EBPF_CACHE=str(cache))
    done = subprocess.run([sys.executable, "-c", CHILD, str(marker)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_kernel
def test_compiled_objects_load_without_bcc_in_the_process_and_start_from_the_cache(tmp_path):
    """The first start compiles in a helper process and fills the cache; the
    next loads from it in well under a second; neither process ever maps the
    compiler (bcc, LLVM, clang), and the programs it attached deliver events."""
    cache = tmp_path / "cache"
    cold = _child(tmp_path, cache)
    assert cold["backend"] == "objects" and cold["cache_hit"] is False
    assert list(cache.glob("probes-*.json"))
    warm = _child(tmp_path, cache)
    for run in (cold, warm):
        assert run["seen"] >= 1, run
        assert not run["bcc_imported"] and not run["compiler_mapped"], run
    assert warm["cache_hit"] is True and warm["load_s"] < 1.0, warm


@needs_kernel
def test_a_damaged_cache_file_is_recompiled(tmp_path, monkeypatch, caplog):
    from kestrel_sources_ebpf import objects
    from kestrel_sources_ebpf.program import Program

    monkeypatch.setattr(objects, "CACHE_DIR", tmp_path)
    prog = Program(ringbuf_pages=64, loader="objects")
    prog.close()
    (path,) = tmp_path.glob("probes-*.json")
    path.write_text(path.read_text()[:1000])
    with caplog.at_level(logging.WARNING, logger="kestrel.ebpf"):
        prog = Program(ringbuf_pages=64, loader="objects")
    try:
        assert prog.backend == "objects" and prog.cache_hit is False
        assert any("not a compiled-objects file" in r.getMessage() and str(path) in r.getMessage()
                   for r in caplog.records)
    finally:
        prog.close()


@needs_kernel
def test_a_cache_file_others_can_write_is_not_loaded(tmp_path, monkeypatch, caplog):
    from kestrel_sources_ebpf import objects
    from kestrel_sources_ebpf.program import Program

    monkeypatch.setattr(objects, "CACHE_DIR", tmp_path)
    Program(ringbuf_pages=64, loader="objects").close()
    (path,) = tmp_path.glob("probes-*.json")
    path.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="kestrel.ebpf"):
        prog = Program(ringbuf_pages=64, loader="objects")
    prog.close()
    assert prog.cache_hit is False
    assert any("writable by others" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    assert path.stat().st_mode & 0o777 == 0o600  # rewritten by the helper with its own mode


@needs_kernel
def test_a_failing_compile_helper_falls_back_to_bcc_in_the_process_with_the_reason(tmp_path, monkeypatch, caplog):
    from kestrel_sources_ebpf import objects
    from kestrel_sources_ebpf.program import Program

    monkeypatch.setattr(objects, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(objects, "HELPER_TIMEOUT_S", 0.01)  # the helper cannot finish: the path fails for real
    with caplog.at_level(logging.WARNING, logger="kestrel.ebpf"):
        prog = Program(ringbuf_pages=64)
    try:
        assert prog.backend == "bcc" and "did not finish" in prog.fallback_reason
        assert any("compiling with bcc in this process" in r.getMessage() and "did not finish" in r.getMessage()
                   for r in caplog.records)
        prog.enabled[ctypes.c_int(1)] = ctypes.c_uint32(0)  # the maps are bcc's tables, driven the same way
    finally:
        prog.close()
    with pytest.raises(RuntimeError, match="did not finish"):
        Program(ringbuf_pages=64, loader="objects")


@needs_kernel
def test_per_cpu_map_views_read_and_write_every_cpu():
    from kestrel_sources_ebpf import bpfsys
    from kestrel_sources_ebpf.program import Loss, MapView

    ncpu = bpfsys.possible_cpus()
    fd = bpfsys.map_create(6, 4, ctypes.sizeof(Loss), 1, 0, "kt_percpu")  # BPF_MAP_TYPE_PERCPU_ARRAY
    try:
        view = MapView(fd, ctypes.c_int, Loss, ncpu)
        view[0] = [Loss(i + 1, 10 * i, 20 * i) for i in range(ncpu)]
        assert [(v.count, v.first_ts, v.last_ts) for v in view[0]] == [(i + 1, 10 * i, 20 * i) for i in range(ncpu)]
        assert bpfsys.map_info(fd).value_size == ctypes.sizeof(Loss)
    finally:
        os.close(fd)
    fd = bpfsys.map_create(6, 4, 8, 1, 0, "kt_percpu_u64")
    try:
        view = MapView(fd, ctypes.c_int, ctypes.c_uint64, ncpu)
        view[0] = list(range(7, 7 + ncpu))
        assert view[0] == list(range(7, 7 + ncpu))
    finally:
        os.close(fd)


def _thread_switches(tid: int) -> int:
    text = Path(f"/proc/self/task/{tid}/status").read_text()
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))


def test_an_idle_source_sleeps_and_a_stop_still_wakes_it_at_once(start_source):
    """Nothing to deliver: the source thread wakes about once per poll_ms,
    not ten times a second; a stop ends a minute-long wait at once."""
    run = start_source(Interest(categories=frozenset(), wants_all=False), poll_ms=60_000)
    assert not run.source.plan.kinds
    tid = run.thread.native_id
    time.sleep(0.5)
    before = _thread_switches(tid)
    time.sleep(3)
    assert _thread_switches(tid) - before <= 3
    started = time.monotonic()
    run.stop()
    assert time.monotonic() - started < 2.0
