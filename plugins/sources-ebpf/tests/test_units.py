"""Parts that need no BPF: BTF reading, the prefix encoding, the push-down
plan from rules, the process table and record decoding helpers, probe()."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import pytest
from kestrel_sources_ebpf import btf, plan, source
from kestrel_sources_ebpf.decode import EV, EXEC, HDR, exit_code
from kestrel_sources_ebpf.kinds import BY_NAME, KINDS
from kestrel_sources_ebpf.proctable import ProcTable, entity_id, split_args
from kestrel_sources_ebpf.program import encode_prefix

from kestrel_core.eql.engine import DetectionEngine
from kestrel_core.eql.ir import compile_query
from kestrel_core.eql.pushdown import (
    literal_filters,
    literal_prefix,
    step_filter,
    wildcard_match,
)
from kestrel_core.interfaces import Interest, LiteralFilter
from kestrel_core.packs import load_rule_pack
from kestrel_core.schema import Schema

RULES = Path(__file__).resolve().parents[3] / "rules" / "linux"
HAVE_BTF = btf.VMLINUX.is_file()


@pytest.mark.skipif(not HAVE_BTF, reason="no /sys/kernel/btf/vmlinux on this host")
def test_btf_offsets_of_the_running_kernel():
    b = btf.BTF.load()
    offs = {m: btf._first_offset(b, s, f) for m, s, f in btf.OFFSETS}
    assert offs["OFF_TASK_PID"] + 4 == offs["OFF_TASK_TGID"]  # pid_t pid; pid_t tgid; (adjacent in every kernel)
    assert offs["OFF_SOCK_COMMON"] == 0 and offs["OFF_CRED_EUID"] > offs["OFF_CRED_UID"]
    assert offs["OFF_MM_ARG_END"] == offs["OFF_MM_ARG_START"] + 8
    assert offs["OFF_CRED_SUID"] == offs["OFF_CRED_UID"] + 8 and offs["OFF_CRED_SGID"] == offs["OFF_CRED_GID"] + 8
    assert offs["OFF_KERNFS_NODE_PARENT"] != offs["OFF_KERNFS_NODE_NAME"]
    assert all(v >= 0 for v in offs.values())
    with pytest.raises(btf.BTFError, match="no_such_member"):
        b.offset("task_struct", "no_such_member")
    with pytest.raises(btf.BTFError, match="not in BTF"):
        b.offset("no_such_struct", "x")


def test_btf_rejects_garbage():
    with pytest.raises(btf.BTFError):
        btf.BTF(b"\0" * 64)


def test_record_layouts_match_the_c_structs():
    assert HDR.size == 72
    assert EXEC.size == 72 + 8 + 256 + 1024 + 8 * 4 + 2 * 8 + 2 * 128 + 8 + 4096  # header, argv, ident, env
    assert EV.size == 72 + 32 + 32 + 8 + 8 + 512


def test_prefix_encoding_is_case_insensitive_for_letters_only():
    p = encode_prefix("/ETC/Shadow", 1 << 4)
    raw = b"/etc/shadow"
    assert bytes(struct.pack("<4Q", *p.mask))[: len(raw) + 1] == b"\xff" * len(raw) + b"\0"
    val = struct.pack("<4Q", *p.val)
    assert val.startswith(raw)
    fold = struct.pack("<4Q", *p.fold)
    assert fold[0] == 0 and fold[1] == 0x20  # '/' is not folded, 'e' is
    path = b"/Etc/SHADOW-".ljust(32, b"\0")
    words = struct.unpack("<4Q", path)
    assert all(((w | f) & m) == v for w, f, m, v in zip(words, p.fold, p.mask, p.val))
    other = struct.unpack("<4Q", b"/etc/passwd".ljust(32, b"\0"))
    assert not all(((w | f) & m) == v for w, f, m, v in zip(other, p.fold, p.mask, p.val))


def test_pushdown_analysis():
    s = Schema.ecs()
    q = compile_query('file where event.action in ("open", "creation") and (file.path : "/etc/*" or '
                      'file.path == "/root/x") and not process.name : "cat"', s)
    f = step_filter(q.nodes, q.steps[0].pred, "file")
    assert dict(f.constraints) == {"event.action": ("creation", "open"), "file.path": ("/etc/*", "/root/x")}
    q = compile_query('file where file.path : "/etc/*" or process.name == "x"', s)
    assert step_filter(q.nodes, q.steps[0].pred, "file").constraints == ()  # one branch leaves the path free
    assert literal_prefix("/etc/rc?.d/*") == "/etc/rc" and literal_prefix("abc") == "abc"
    assert wildcard_match("/TMP/*", "/tmp/x") and not wildcard_match("/tmp/?", "/tmp/xy")
    assert wildcard_match("a[b", "A[B")
    assert literal_filters([]) == ()


def test_plan_from_the_default_pack():
    rules, errors = load_rule_pack([RULES])
    assert not errors
    interest = DetectionEngine(Schema.ecs(), rules).interest()
    p = plan.plan_for(interest)
    names = {KINDS[k].name for k in p.kinds}
    assert {"exec", "open_read", "create", "chmod", "connect", "unlink"} <= names
    # reads leave the kernel only for the paths read rules look at
    assert BY_NAME["open_read"].code in p.prefix_kinds
    read_bit = 1 << BY_NAME["open_read"].code
    read_prefixes = {q for q, bits in p.prefixes.items() if bits & read_bit}
    assert "/etc/shadow" in read_prefixes and not any(q in ("/", "/etc/") for q in read_prefixes)
    assert len(p.prefixes) <= plan.MAX_PREFIXES


def test_plan_edge_cases():
    assert plan.plan_for(Interest()) is plan.ALL
    only_net = plan.plan_for(Interest(categories=frozenset({"network"}), wants_all=False))
    assert {KINDS[k].category for k in only_net.kinds} == {"network"}
    anyrule = plan.plan_for(Interest(filters=(LiteralFilter(None, ()),)))
    assert anyrule.kinds == frozenset(KINDS) and not anyrule.prefix_kinds
    # a relative or wildcard-led path pattern disables the prefix filter for that kind
    rel = plan.plan_for(Interest(filters=(LiteralFilter("file", (("event.action", ("deletion",)),
                                                                  ("file.path", ("*/x",)))),)))
    assert rel.kinds == {BY_NAME["unlink"].code} and not rel.prefix_kinds
    many = tuple(LiteralFilter("file", (("event.action", ("deletion",)), ("file.path", (f"/d{i:02}/x*",))))
                 for i in range(40))
    merged = plan.plan_for(Interest(filters=many))
    assert len(merged.prefixes) <= plan.MAX_PREFIXES
    for i in range(40):  # every original prefix is still admitted
        assert any(f"/d{i:02}/x".startswith(q) for q in merged.prefixes)


def test_proc_table_seed_and_lru(tmp_path):
    t = ProcTable(capacity=4)
    me = t.from_proc(os.getpid())
    assert me is not None and me.pid == os.getpid() and me.cwd == os.getcwd()
    with open(f"/proc/{os.getpid()}/stat", "rb") as fh:
        ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])
    assert me.entity_id == entity_id(os.getpid(), ticks)
    parent = t.get(os.getpid(), ticks * (10**9 // os.sysconf("SC_CLK_TCK")))
    for pid in range(1_000_000, 1_000_005):  # gone pids: placeholders
        t.on_fork(pid, 0, parent)
    assert len(t.procs) == 4 and t.evicted == 2
    child = t.procs[1_000_004]
    fields = t.base_fields(child, os.getpid(), ticks * (10**9 // os.sysconf("SC_CLK_TCK")))
    assert fields["process.parent.entity_id"] == me.entity_id and fields["process.name"] == me.name
    t.on_exec(child, "/usr/bin/true", ["true"], "/")
    again = t.base_fields(child, os.getpid(), ticks * (10**9 // os.sysconf("SC_CLK_TCK")))
    assert again["process.name"] == "true" and again["process.Ext.exec_chain"] == [me.executable]


def test_helpers():
    assert split_args(b"a\0b c\0") == ["a", "b c"] and split_args(b"") == []
    assert exit_code(3 << 8) == 3 and exit_code(9) == 137


def test_probe_names_every_missing_piece(monkeypatch, tmp_path):
    from kestrel_sources_ebpf import program

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(program, "HEADERS", tmp_path / "no-headers")
    monkeypatch.setattr(program, "TRACEFS", tmp_path / "no-tracefs")
    monkeypatch.setattr(os, "uname", lambda: os.uname_result(("Linux", "h", "0.0-none", "", "x86_64")))
    monkeypatch.setattr(source, "Path", lambda p: tmp_path / "nothing" if "debug" in str(p) else Path(p))
    probe = source.probe_host()
    assert not probe.available
    assert "not root" in probe.reason and "kernel headers" in probe.reason and "tracefs" in probe.reason


class _FakeRing:
    """A memfd laid out like a BPF ring buffer map (consumer page, producer
    page, data pages mapped twice), written the way the kernel writes it."""

    def __init__(self, size: int = 2 * mmap.PAGESIZE) -> None:
        self.page, self.size, self.prod = mmap.PAGESIZE, size, 0
        self.fd = os.memfd_create("ring")
        os.ftruncate(self.fd, 2 * self.page + 2 * size)

    def put(self, payload: bytes, flags: int = 0) -> int:
        """Append a record; returns the file offset of its header."""
        page, size, pos = self.page, self.size, self.prod
        rec = struct.pack("<II", len(payload) | flags, 0) + payload
        rec += b"\0" * (-len(rec) % 8)
        off = pos & (size - 1)
        head, tail = rec[:size - off], rec[size - off:]  # tail: the part that wraps to the start
        for copy in (0, size):  # the kernel maps the data pages twice: both copies hold every record
            os.pwrite(self.fd, head, 2 * page + copy + off)
            os.pwrite(self.fd, tail, 2 * page + copy)
        self.prod = pos + len(rec)
        os.pwrite(self.fd, struct.pack("<Q", self.prod), page)
        return 2 * page + off

    def consumer(self) -> int:
        return struct.unpack("<Q", os.pread(self.fd, 8, 0))[0]


def test_ring_reader_walks_the_kernel_ring_layout():
    """RingReader on a fake ring: committed records in order, discarded ones
    skipped, a busy (reserved) record stops the batch, the limit holds, a
    record that wraps reads contiguously, and the consumer position moves
    past what was read."""
    from kestrel_sources_ebpf.program import RINGBUF_BUSY, RINGBUF_DISCARD, RingReader

    ring = _FakeRing()
    put, consumer, size = ring.put, ring.consumer, ring.size
    try:
        reader = RingReader(ring.fd, size)
        got: list[bytes] = []

        def take(block: bytes, recs: list[tuple[int, int]]) -> None:
            got.extend(block[o:o + n] for o, n in recs)

        assert reader.read(take) == 0 and reader.pending() == 0
        put(b"first")
        put(b"skipped", RINGBUF_DISCARD)
        put(b"third!!!")
        assert reader.read(take) == 2 and got == [b"first", b"third!!!"]
        assert consumer() == ring.prod and reader.pending() == 0
        got.clear()
        before = ring.prod
        busy_at = put(b"reserved", RINGBUF_BUSY)
        put(b"after")
        assert reader.read(take) == 0 and consumer() == before  # nothing passes a reserved record
        os.pwrite(ring.fd, struct.pack("<I", len(b"reserved")), busy_at)  # commit
        assert reader.read(take, limit=1) == 1 and got == [b"reserved"]
        assert reader.read(take) == 1 and got == [b"reserved", b"after"]
        while size - ring.prod % size > 64:  # fill up to just before the end
            put(b"x" * 56)
            reader.read(lambda _b, _r: None)
        assert size - ring.prod % size <= 64
        got.clear()
        put(bytes(range(100)))  # wraps around the end of the data pages
        assert reader.read(take) == 1 and got == [bytes(range(100))]
        assert consumer() == ring.prod
        # The data pages are mapped once (the kernel's second copy would be resident memory for nothing).
        assert len(reader._prod) == mmap.PAGESIZE + size
        reader.close()
    finally:
        os.close(ring.fd)


def test_ring_reader_takes_runs_of_same_size_records_at_once():
    """Runs of records of one size (read with a strided slice) end exactly at
    a record of another size, a discarded or a reserved one, the limit, or
    the producer position, also across the end of the data pages."""
    from kestrel_sources_ebpf.program import RINGBUF_BUSY, RINGBUF_DISCARD, RingReader

    ring = _FakeRing(4 * mmap.PAGESIZE)
    try:
        reader = RingReader(ring.fd, ring.size)
        got: list[bytes] = []

        def take(block: bytes, recs: list[tuple[int, int]]) -> None:
            got.extend(block[o:o + n] for o, n in recs)

        def rec(i: int, n: int = 20) -> bytes:
            return i.to_bytes(4, "little") * (n // 4)

        want = [rec(i) for i in range(40)] + [rec(40, 28)] + [rec(i) for i in range(41, 60)]
        for r in want[:50]:
            ring.put(r)
        ring.put(b"gone" * 5, RINGBUF_DISCARD)
        for r in want[50:]:
            ring.put(r)
        assert reader.read(take, limit=30) == 30 and got == want[:30]
        assert reader.read(take) == 30 and got == want
        got.clear()
        first = [rec(i) for i in range(25)]
        for r in first:
            ring.put(r)
        busy_at = ring.put(rec(99), RINGBUF_BUSY)
        ring.put(rec(100))
        assert reader.read(take) == 25 and got == first
        os.pwrite(ring.fd, struct.pack("<I", 20), busy_at)
        assert reader.read(take) == 2 and got[-2:] == [rec(99), rec(100)]
        got.clear()
        many = [rec(i % 250) for i in range(700)]  # ~20 KB: wraps the 16 KiB data area
        for i in range(0, 700, 100):
            for r in many[i:i + 100]:
                ring.put(r)
            reader.read(take, limit=64)
        while reader.read(take):
            pass
        assert got == many and ring.consumer() == ring.prod
        reader.close()
    finally:
        os.close(ring.fd)


def _ev_record(ts: int, pid: int, start_ns: int, kind: int, path: bytes, dfd: int = -100, ret: int = 3) -> bytes:
    return EV.pack(ts, start_ns, 0, kind, pid, pid, 0, 0, 0, 0, ret, b"t", 0, 0, 0, 0, b"", b"", 0, 0, 0, 0,
                   dfd, -100, path, b"")


def test_decoded_paths_follow_chdir_and_dirfds_across_repeated_records(tmp_path):
    """The decoder keeps the file fields of a path a process opens again; a
    relative path must still follow the process's chdir, a dirfd-relative one
    is resolved per record (the fd may now name another directory), and every
    event has its own timestamp (its own fields dict once settled)."""
    from kestrel_sources_ebpf.decode import Decoder
    from kestrel_sources_ebpf.proctable import TICK_NS

    schema = Schema.ecs()
    table = ProcTable(64, host_name="h")
    dec = Decoder(table, schema, clock_offset_ns=0)
    pid = os.getpid()
    with open(f"/proc/{pid}/stat", "rb") as fh:
        start_ns = int(fh.read().rsplit(b")", 1)[1].split()[19]) * TICK_NS
    table.get(pid, start_ns).cwd = "/a"
    open_read, chdir = BY_NAME["open_read"].code, 26
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    fd = os.open(d1, os.O_RDONLY | os.O_DIRECTORY)
    try:
        recs = [_ev_record(1, pid, start_ns, open_read, b"x"), _ev_record(2, pid, start_ns, open_read, b"x"),
                _ev_record(3, pid, start_ns, open_read, b"/etc/./hosts"),
                _ev_record(4, pid, start_ns, open_read, b"/etc/./hosts"),
                _ev_record(5, pid, start_ns, open_read, b"x", dfd=fd)]
        block = b"".join(recs)
        offs = [(i * EV.size, EV.size) for i in range(len(recs))]
        events: list = []
        dec.decode_batch(block, offs, frozenset({open_read, chdir}), events)
        fd2 = os.open(d2, os.O_RDONLY | os.O_DIRECTORY)
        os.dup2(fd2, fd)
        os.close(fd2)
        more = [_ev_record(6, pid, start_ns, open_read, b"x", dfd=fd), _ev_record(7, pid, start_ns, chdir, b"/b", ret=0),
                _ev_record(8, pid, start_ns, open_read, b"x")]
        dec.decode_batch(b"".join(more), [(i * EV.size, EV.size) for i in range(3)],
                         frozenset({open_read, chdir}), events)
    finally:
        os.close(fd)
    fp, fts = schema.resolve("file.path"), schema.resolve("@timestamp")
    assert [e.fields[fp] for e in events] == ["/a/x", "/a/x", "/etc/hosts", "/etc/hosts", f"{d1}/x", f"{d2}/x",
                                              "/b/x"]
    assert [e.get(fts) for e in events] == [1, 2, 3, 4, 5, 6, 8]
    for e in events:  # what an alert or an event sink gets: a dict of its own, with its own time
        e.settle()
    assert len({id(e.fields) for e in events}) == len(events)
    assert [e.fields[fts] for e in events] == [1, 2, 3, 4, 5, 6, 8]
    assert events[1].fields[schema.resolve("file.name")] == "x"
    assert events[3].fields[schema.resolve("file.directory")] == "/etc"


def test_the_decode_caches_are_bounded_across_processes():
    """Many processes each opening many paths: the decoded-path caches (and
    ``hot``, which holds them) are dropped past FILE_CACHE_MAX in all, and
    every record still decodes to its own path."""
    from kestrel_sources_ebpf import decode
    from kestrel_sources_ebpf.decode import Decoder
    from kestrel_sources_ebpf.proctable import TICK_NS

    schema = Schema.ecs()
    table = ProcTable(1024, host_name="h")
    dec = Decoder(table, schema, clock_offset_ns=0)
    open_read, per_proc, procs = BY_NAME["open_read"].code, 200, 16
    ppid = 4_100_000  # pids above any pid_max in use: never read from /proc
    table.get(ppid, TICK_NS)

    def rec(ts: int, pid: int, path: bytes) -> bytes:
        return EV.pack(ts, 2 * TICK_NS, TICK_NS, open_read, pid, pid, ppid, 0, 0, 0, 3, b"t", 0, 0, 0, 0, b"", b"",
                       0, 0, 0, 0, -100, -100, path, b"")

    recs = [rec(n, ppid + 1 + i, b"/d/%d/%d" % (i, n)) for i in range(procs) for n in range(per_proc)]
    events: list = []
    dec.decode_batch(b"".join(recs), [(k * EV.size, EV.size) for k in range(len(recs))], frozenset({open_read}),
                     events)
    fp = schema.resolve("file.path")
    assert [e.fields[fp] for e in events] == [f"/d/{i}/{n}" for i in range(procs) for n in range(per_proc)]
    held = sum(len(files) for p in table.procs.values() for _b, _t, files in p.templates.values())
    assert procs * per_proc > decode.FILE_CACHE_MAX
    assert dec.cache_drops == procs * per_proc // (decode.FILE_CACHE_MAX + 1)
    assert held <= decode.FILE_CACHE_MAX and len(dec.hot) <= decode.HOT_MAX


def test_repeated_path_records_follow_exec_of_the_process_and_its_parent():
    """decode_batch reuses what it built for a repeated (process, parent, kind,
    ids, outcome, path) record only while the table entries are unchanged: an
    exec of the parent or of the process itself shows in the next record."""
    from kestrel_sources_ebpf.decode import Decoder
    from kestrel_sources_ebpf.proctable import TICK_NS, Proc

    schema = Schema.ecs()
    table = ProcTable(64, host_name="h")
    dec = Decoder(table, schema, clock_offset_ns=0)
    ppid, pid = 4_000_001, 4_000_002  # above any pid_max in use: never read from /proc
    parent = Proc(ppid, 5, 1, "", "sh", "/bin/sh", ["sh"], "/")
    child = Proc(pid, 7, ppid, parent.entity_id, "cat", "/bin/cat", ["cat"], "/home")
    table._put(parent)
    table._put(child)
    open_read = BY_NAME["open_read"].code

    def opens(*stamps: int) -> list:
        recs = [EV.pack(ts, 7 * TICK_NS, 5 * TICK_NS, open_read, pid, pid, ppid, 0, 0, 0, 3, b"t", 0, 0, 0, 0,
                        b"", b"", 0, 0, 0, 0, -100, -100, b"f", b"") for ts in stamps]
        out: list = []
        dec.decode_batch(b"".join(recs), [(i * EV.size, EV.size) for i in range(len(recs))],
                         frozenset({open_read}), out)
        return out

    exe, pexe, path = (schema.resolve(p) for p in ("process.executable", "process.parent.executable", "file.path"))
    first = opens(1, 2, 3)
    table.on_exec(parent, "/usr/bin/make", ["make"], "")
    after_parent = opens(4, 5)
    table.on_exec(child, "/usr/bin/gcc", ["gcc"], "/src")
    after_child = opens(6, 7)
    got = [(e.fields[exe], e.fields[pexe], e.fields[path]) for e in first + after_parent + after_child]
    assert got == [("/bin/cat", "/bin/sh", "/home/f")] * 3 + [("/bin/cat", "/usr/bin/make", "/home/f")] * 2 + \
        [("/usr/bin/gcc", "/usr/bin/make", "/src/f")] * 2
    assert [e.get(schema.resolve("@timestamp")) for e in first + after_parent + after_child] == list(range(1, 8))
    assert dec.hot  # the inline path was in use


def test_a_record_identical_to_the_one_before_decodes_like_it_alone():
    """decode_batch's shortcut for a path record identical to the record
    before it but for the time gives the fields decoding that record on its
    own gives and shares the earlier event's ``content``; any difference in
    thread, ids, outcome or path (one path extending the other too) takes
    the full path.  Bytes after the path's NUL do not matter."""
    from kestrel_sources_ebpf.decode import Decoder
    from kestrel_sources_ebpf.proctable import TICK_NS, Proc

    schema = Schema.ecs()
    ppid, pid = 4_000_001, 4_000_002  # above any pid_max in use: never read from /proc
    open_read = BY_NAME["open_read"].code

    def decoder() -> Decoder:
        table = ProcTable(64, host_name="h")
        table._put(Proc(ppid, 5, 1, "", "sh", "/bin/sh", ["sh"], "/"))
        table._put(Proc(pid, 7, ppid, "x", "cat", "/bin/cat", ["cat"], "/home"))
        return Decoder(table, schema, clock_offset_ns=0)

    def rec(ts: int, path: bytes = b"/etc/hosts", tid: int = pid, uid: int = 0, ret: int = 3) -> bytes:
        return EV.pack(ts, 7 * TICK_NS, 5 * TICK_NS, open_read, pid, tid, ppid, uid, uid, 0, ret, b"t", 0, 0, 0, 0,
                       b"", b"", 0, 0, 0, 0, -100, -100, path, b"")

    recs = [rec(1), rec(2), rec(3, b"/etc/hosts\0leftover bytes"), rec(4, b"/etc/hosts2"), rec(5, b"/etc/hosts2"),
            rec(6, b"/etc/host"), rec(7, tid=pid + 1), rec(8, uid=1000), rec(9, uid=1000, ret=-2), rec(10, ret=-2),
            rec(11, b"rel"), rec(12, b"rel"), rec(13)]
    batch: list = []
    dec = decoder()
    dec.decode_batch(b"".join(recs), [(i * EV.size, EV.size) for i in range(len(recs))], frozenset({open_read}), batch)
    alone = decoder()
    want = [alone.decode(r).to_ecs(schema) for r in recs]
    assert [e.to_ecs(schema) for e in batch] == want
    assert [e.get(schema.resolve("@timestamp")) for e in batch] == list(range(1, 14))
    assert batch[2].content is batch[1].content is not None  # (the first of each is decoded in full)
    assert batch[4].content is not None and batch[4].content is not batch[1].content
    assert want[8]["event.outcome"] == "failure" and want[8]["user.id"] == "1000"
    assert batch[2].fields is batch[1].fields is batch[1].content  # shared until settled
    for e in batch:
        e.settle()
    assert len({id(e.fields) for e in batch}) == len(batch)
    assert [e.fields[schema.resolve("@timestamp")] for e in batch] == list(range(1, 14))


def test_rules_check_knows_the_fields_this_plugin_declares(tmp_path):
    """kestrel_declare_fields: with sources-ebpf installed, `kestrel rules
    check --strictness error` accepts a rule naming process.Ext.exec_chain
    (no `?`) and still rejects a misspelt field."""
    from kestrel_core.testing import run_kestrel

    def pack(field: str) -> Path:
        d = tmp_path / field
        d.mkdir()
        (d / "pack.toml").write_text('[pack]\nname = "p"\nversion = "1.0"\npriority = 0\n')
        (d / "r.toml").write_text(f'''id = "r"
name = "r"
description = "a rule"
severity = "low"
risk_score = 10
query = \'\'\'
process where event.action == "exec" and {field} : "/tmp/*"
\'\'\'
''')
        return d

    ok = run_kestrel("rules", "check", "--strictness", "error", str(pack("process.Ext.exec_chain")))
    assert ok.returncode == 0, ok.stderr
    bad = run_kestrel("rules", "check", "--strictness", "error", str(pack("process.Ext.exec_chian")))
    assert bad.returncode == 2 and "exec_chian" in bad.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting tracefs needs root")
def test_probe_on_a_fresh_boot_mounts_tracefs():
    """A fresh machine has no tracefs mounted: the probe mounts it (in a
    private mount namespace here) and reports the source available."""
    import subprocess
    import sys

    code = ("import logging, subprocess\nfrom kestrel_core import host\nlogging.basicConfig(level=logging.INFO)\n"
            "for p in ('/sys/kernel/debug/tracing', '/sys/kernel/tracing'):\n"
            "    while (p, 'tracefs') in host.mounts(): subprocess.run(['umount', '-l', p], check=True)\n"
            "from kestrel_sources_ebpf.source import probe_host\n"
            "probe = probe_host()\nprint(probe.available, probe.reason)\n")
    done = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True "), done.stdout
    assert "mounted tracefs" in done.stderr



def test_container_of_the_runtimes_cgroup_names():
    from kestrel_sources_ebpf.proctable import container_of

    cid = "ab" * 32
    assert container_of(f"docker-{cid}.scope", "system.slice") == (cid, "docker")
    assert container_of(f"cri-containerd-{cid}.scope", "kubepods-pod1.slice") == (cid, "containerd")
    assert container_of(f"crio-{cid}.scope", "x") == (cid, "cri-o")
    assert container_of(f"libpod-{cid}.scope", "machine.slice") == (cid, "podman")
    assert container_of(cid, "docker") == (cid, "docker")  # cgroupfs driver: /docker/<id>
    assert container_of(cid, "pod123") == (cid, "")
    assert container_of("session-3.scope", "user-0.slice") == ("", "")
    assert container_of(f"docker-{cid[:-1]}.scope", "x") == ("", "")


def test_set_id_semantics_follow_credentials_7():
    from kestrel_sources_ebpf.proctable import _set_ids

    NO = 0xFFFFFFFF
    assert _set_ids(0, 0, 0, 16, 1000, 0, 0, True) == (1000, 1000, 1000)  # setuid as root: all three
    assert _set_ids(1000, 1000, 0, 16, 0, 0, 0, False) == (1000, 0, 0)  # unprivileged: the effective id only
    assert _set_ids(1000, 1000, 1000, 18, NO, 0, 0, False) == (1000, 0, 0)  # setreuid(-1, 0): saved follows
    assert _set_ids(1000, 1000, 1000, 18, NO, 1000, 0, False) == (1000, 1000, 1000)
    assert _set_ids(0, 0, 0, 20, 5, NO, 7, True) == (5, 0, 7)  # setresuid(5, -1, 7)


def test_identity_from_proc_matches_the_running_process():
    from kestrel_sources_ebpf.proctable import ident_from_proc

    i = ident_from_proc(os.getpid(), os.getpgrp(), os.getsid(0), 0)
    assert (i.ruid, i.euid, i.rgid, i.egid) == (os.getuid(), os.geteuid(), os.getgid(), os.getegid())
    assert i.sid == os.getsid(0) and i.pgid == os.getpgrp()
    with open("/proc/self/status") as fh:
        cap_eff = int(next(line for line in fh if line.startswith("CapEff:")).split()[1], 16)
    assert i.cap_eff == cap_eff


def test_env_vars_keeps_only_the_allow_list():
    from kestrel_sources_ebpf.exeinfo import env_vars

    raw = b"PATH=/bin\0LD_PRELOAD=/tmp/x.so\0TOKEN=secret\0LD_PRELOAD_NOT=1\0=odd\0noequals\0"
    assert env_vars(raw, frozenset({"LD_PRELOAD", "HTTPS_PROXY"})) == ["LD_PRELOAD=/tmp/x.so"]
    assert env_vars(raw, frozenset()) == [] and env_vars(b"", frozenset({"PATH"})) == []


def test_hasher_caches_by_file_version(tmp_path):
    import hashlib

    from kestrel_sources_ebpf.exeinfo import ExeHasher

    f = tmp_path / "bin"
    f.write_bytes(b"a" * 1000)
    h = ExeHasher(max_bytes=2000)
    assert h.digest(0, str(f)) == hashlib.sha256(b"a" * 1000).hexdigest() and h.hashed == 1
    assert h.digest(0, str(f)) is not None and h.hashed == 1  # cached
    f.write_bytes(b"b" * 1500)
    assert h.digest(0, str(f)) == hashlib.sha256(b"b" * 1500).hexdigest() and h.hashed == 2
    f.write_bytes(b"c" * 3000)
    assert h.digest(0, str(f)) is None and h.skipped == 1  # over max_bytes
