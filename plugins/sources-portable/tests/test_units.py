"""Parsing and bookkeeping that need no kernel features."""

from __future__ import annotations

import os
import queue
import struct
import threading

import attrs
import pytest
from kestrel_sources_fanotify import fanotify as fan
from kestrel_sources_portable import connector as cn
from kestrel_sources_portable import plugin
from kestrel_sources_portable.coverage import KINDS, Coverage
from kestrel_sources_portable.ecs import add_file, exit_code
from kestrel_sources_portable.fidwatch import DirEntryEvent
from kestrel_sources_portable.files import FileTracker
from kestrel_sources_portable.netpoll import parse_proc_net_tcp
from kestrel_sources_portable.processes import ProcessTracker
from kestrel_sources_portable.procfs import (
    ProcInfo,
    entity_id,
    parse_stat,
    parse_status_ids,
)
from kestrel_sources_portable.source import Mechanisms, PortableSource, coverage_of
from kestrel_sources_portable.table import ProcessTable

from kestrel_core.plugins import PluginHost
from kestrel_core.testing import run_kestrel
from kestrel_core.testing import make_context


def test_registers_the_portable_source():
    host = PluginHost()
    host.add_module("sources-portable", plugin)
    assert host.registry.get("source", "portable").cls is PortableSource


def test_parse_stat_with_spaces_and_parentheses_in_comm():
    fields = " ".join(["S", "41"] + ["0"] * 17 + ["98765"] + ["0"] * 20)
    assert parse_stat(f"1234 (a (b) c) {fields}") == ("a (b) c", 41, 98765)


def test_parse_status_ids():
    text = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\nGroups:\n"
    assert parse_status_ids(text) == (1000, 0, 100)


def test_entity_id_matches_the_ebpf_scheme():
    assert entity_id(4242, 0x1F) == "1092-1f"
    assert ProcInfo(4242, start_ticks=0x1F).entity_id == "1092-1f"
    assert ProcInfo(4242).entity_id == ""  # unknown start time: no id rather than a wrong one


def _message(what: int, body: bytes) -> bytes:
    payload = struct.pack("=IIQ", what, 0, 123456789) + body
    cnmsg = struct.pack("=IIIIHH", cn.CN_IDX_PROC, cn.CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return struct.pack("=IHHII", 16 + len(cnmsg), 3, 0, 0, 0) + cnmsg


def test_connector_decodes_each_event_kind():
    data = (_message(cn.PROC_EVENT_FORK, struct.pack("=6I", 10, 10, 11, 11, 0, 0))
            + _message(cn.PROC_EVENT_EXEC, struct.pack("=6I", 11, 11, 0, 0, 0, 0))
            + _message(cn.PROC_EVENT_UID, struct.pack("=6I", 11, 11, 1000, 0, 0, 0))
            + _message(cn.PROC_EVENT_PTRACE, struct.pack("=6I", 11, 11, 10, 10, 0, 0))
            + _message(cn.PROC_EVENT_EXIT, struct.pack("=6I", 11, 11, 0x100, 17, 10, 10))
            + _message(cn.PROC_EVENT_COMM, struct.pack("=II16s", 11, 11, b"renamed")))
    events = list(cn.decode(data))
    assert [e.what for e in events] == [cn.PROC_EVENT_FORK, cn.PROC_EVENT_EXEC, cn.PROC_EVENT_UID,
                                        cn.PROC_EVENT_PTRACE, cn.PROC_EVENT_EXIT, cn.PROC_EVENT_COMM]
    fork, execd, uid, ptrace, exited, comm = events
    assert (fork.pid, fork.parent_pid, fork.ts_mono_ns) == (11, 10, 123456789)
    assert execd.pid == 11 and (uid.a, uid.b) == (1000, 0) and ptrace.parent_pid == 10
    assert exit_code(exited.a) == 1 and exited.parent_pid == 10 and comm.comm == "renamed"


def test_connector_skips_truncated_and_foreign_messages():
    good = _message(cn.PROC_EVENT_EXEC, struct.pack("=6I", 5, 5, 0, 0, 0, 0))
    foreign = bytearray(good)
    struct.pack_into("=I", foreign, 16, 99)  # another connector index
    assert list(cn.decode(bytes(foreign))) == []
    assert list(cn.decode(good[:30])) == []


def test_exit_codes():
    assert exit_code(3 << 8) == 3
    assert exit_code(9) == 137  # SIGKILL, shell convention


def test_file_fields():
    rec = add_file({}, "/tmp/a/payload.tar.gz")
    assert rec == {"file.path": "/tmp/a/payload.tar.gz", "file.name": "payload.tar.gz", "file.directory": "/tmp/a",
                   "file.extension": "gz"}
    assert "file.extension" not in add_file({}, "/tmp/.bashrc")


def test_proc_net_tcp_parsing():
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
            "   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4343 1\n")
    listen, est = list(parse_proc_net_tcp(text, "ipv4"))
    assert (listen.local_ip, listen.local_port, listen.state, listen.inode) == ("127.0.0.1", 8080, "0A", 4242)
    assert (est.remote_ip, est.remote_port, est.local_port) == ("127.0.0.1", 8080, 50000)
    six = "h\n   0: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 77 1\n"
    (mapped,) = parse_proc_net_tcp(six, "ipv6")
    assert mapped.local_ip == "127.0.0.1" and mapped.local_port == 80


def test_table_is_bounded_and_keeps_exited_processes_for_late_lookups():
    table = ProcessTable(max_entries=2)
    for pid in (1, 2, 3):
        table.put(ProcInfo(pid, start_ticks=pid))
    assert table.pids() == [2, 3] and table.evictions == 1
    gone = table.pop(3)
    assert 3 not in table and table.lookup(3) is gone
    with pytest.raises(ValueError):
        ProcessTable(0)


def test_coverage_lists_every_contract_kind_once():
    cov = coverage_of(Mechanisms("poll", "polling", False, 0, "no fanotify", False, "off"))
    assert set(cov.seen) | set(cov.missing) == set(KINDS)
    assert not set(cov.seen) & set(cov.missing)
    assert cov.categories == frozenset({"process"})
    text = cov.summary()
    assert text.startswith("sees exec, exit; reduced coverage:") and "no memfd_create" in text
    assert "misses processes shorter than the poll interval" in text


def test_full_coverage_still_names_what_only_ebpf_sees():
    cov = coverage_of(Mechanisms("connector", "c", True, 1, "f", True, "n"))
    assert {"exec", "fork", "chmod", "connect"} <= set(cov.seen)
    assert set(cov.missing) == {"memfd_create", "mmap_exec", "mprotect_exec", "init_module", "finit_module"}
    assert Coverage().finish().categories == frozenset()


def test_settings_are_validated_with_a_location(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text('[kestrel]\nplugins = ["sources-portable"]\n\n[[sources]]\ntype = "portable"\n'
                       'process = "ebpf"\npoll_interval_ms = 0\n')
    proc = run_kestrel("profile", "check", profile.name, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.startswith("p.toml:6:") and "process" in proc.stderr, proc.stderr


def test_source_registers_its_extra_fields():
    context = make_context()
    PortableSource(PortableSource.Settings(), context)
    assert context.schema.get("target.process.pid").type.value == "long"
    assert context.schema.get("user.target.id").declared


def test_probe_says_which_mechanism():
    probe = PortableSource.probe()
    assert probe.available
    assert ("netlink process connector" in probe.reason) or ("/proc polling" in probe.reason)


# ---------------------------------------------------------------- consumer ordering and file inference


def _tracker() -> tuple[ProcessTracker, FileTracker]:
    table = ProcessTable()
    table.put(ProcInfo(1, start_ticks=1, executable="/sbin/init", args=["init"]))
    table.put(ProcInfo(7, ppid=1, start_ticks=70, executable="/usr/bin/bash", args=["bash"]))
    table.put(ProcInfo(8, ppid=1, start_ticks=80, executable="/usr/bin/cp", args=["cp", "a", "/tmp/x"]))
    return ProcessTracker(table, 0), FileTracker(table, 0)


def test_file_events_are_ordered_by_lower_bound_but_after_their_process_exec():
    procs, files = _tracker()
    src = PortableSource(PortableSource.Settings(reorder_ms=0), make_context())
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    new_image = ProcInfo(7, ppid=1, start_ticks=70, executable="/tmp/x", args=["/tmp/x", "-v"], cwd="/", uid=0,
                         euid=0, gid=0)
    # read at 10_000 (late), happened after 100: cp's creation of /tmp/x
    inbox.put((100, 0, "dirent", (DirEntryEvent(fan.FAN_CREATE, 8, "/tmp/x", 0, 10_000), None)))
    # the exec of /tmp/x by pid 7, kernel time 500
    inbox.put((500, 1, "exec", (cn.KernelProcEvent(cn.PROC_EVENT_EXEC, 500, 7, 7), new_image)))
    # an open by pid 7, read at 600, lower bound 100: must come after the exec
    opened = fan.FileEvent(fan.FAN_OPEN, 7, "/etc/shadow", 0, 600, "open")
    inbox.put((100, 2, "fd", (opened, None)))
    stop = threading.Event()
    stop.set()
    out: list[dict] = []
    src._consume(inbox, procs, files, lambda r: out.append(r) or True, stop)
    assert [(r["event.action"], r["@timestamp"]) for r in out] == [("creation", 100), ("exec", 500), ("open", 501)]
    assert out[0]["process.name"] == "cp"
    assert out[2]["process.executable"] == "/tmp/x" and out[2]["process.parent.executable"] == "/sbin/init"


def _attrib(files: FileTracker, path: str, state: tuple, pid: int = 8) -> list[dict]:
    return files.handle(1, "dirent", (DirEntryEvent(fan.FAN_ATTRIB, pid, path, 0, 1), state))


def test_attribute_changes_are_classified_from_the_state_seen_before():
    _, files = _tracker()
    files.handle(0, "dirent", (DirEntryEvent(fan.FAN_CREATE, 8, "/tmp/f", 0, 1), (0o644, 0, 0, 10, 20, 20)))
    (chmod,) = _attrib(files, "/tmp/f", (0o4755, 0, 0, 10, 20, 30))
    assert chmod["event.action"] == "chmod" and chmod["file.mode"] == "4755"
    assert "file.Ext.inferred_action" not in chmod
    (chown,) = _attrib(files, "/tmp/f", (0o4755, 1000, 0, 10, 20, 40))
    assert chown["event.action"] == "chown" and chown["file.owner"] == "1000"
    assert _attrib(files, "/tmp/f", (0o4755, 1000, 0, 50, 50, 50)) == []  # touch: one clock reading
    (same,) = _attrib(files, "/tmp/f", (0o4755, 1000, 0, 50, 50, 60))  # chmod to the same mode
    assert same["event.action"] == "chmod" and same["file.Ext.inferred_action"] is True


def test_a_file_renamed_before_its_creation_was_read_still_gets_chown():
    """The creation of /tmp/n is read only after the file was renamed (its stat
    at read time fails): the state taken when the rename is read is what a
    later attribute change compares with, so a chown is still a chown."""
    from kestrel_sources_portable.fidwatch import FAN_RENAME

    _, files = _tracker()
    files.handle(0, "dirent", (DirEntryEvent(fan.FAN_CREATE, 8, "/tmp/n", 0, 1), None))
    files.handle(1, "dirent", (DirEntryEvent(FAN_RENAME, 8, "/tmp/n2", 0, 2, old_path="/tmp/n"),
                               (0o644, 0, 0, 10, 20, 20)))
    (chown,) = _attrib(files, "/tmp/n2", (0o644, 1, 1, 10, 20, 30))
    assert chown["event.action"] == "chown" and chown["file.owner"] == "1"


def test_merged_create_attrib_delete_yields_each_action():
    _, files = _tracker()
    mask = fan.FAN_CREATE | fan.FAN_ATTRIB | fan.FAN_DELETE
    out = files.handle(0, "dirent", (DirEntryEvent(mask, 8, "/tmp/g", 0, 1), (0o755, 0, 0, 1, 2, 3)))
    assert [r["event.action"] for r in out] == ["creation", "chmod", "deletion"]


def test_write_is_reported_once_per_open():
    _, files = _tracker()
    ev = fan.FileEvent(fan.FAN_MODIFY, 8, "/tmp/w", 0, 1, "modify")
    first = files.handle(0, "fd", (ev, None))
    again = files.handle(0, "fd", (ev, None))
    closed = files.handle(0, "fd", (fan.FileEvent(fan.FAN_CLOSE_WRITE, 8, "/tmp/w", 0, 2, "close_write"), None))
    reopened = files.handle(0, "fd", (fan.FileEvent(fan.FAN_CLOSE_WRITE, 8, "/tmp/w", 0, 3, "close_write"), None))
    assert [r["event.action"] for r in first] == ["open_write"] and again == [] and closed == []
    assert [r["event.action"] for r in reopened] == ["open_write"]  # opened for writing, never written


def test_a_kernel_overflow_is_reported_as_a_loss_in_order():
    procs, files = _tracker()
    src = PortableSource(PortableSource.Settings(reorder_ms=0), make_context())
    calls: list[tuple] = []

    class Emit:
        def __call__(self, record: dict) -> bool:
            calls.append(("event", record["event.action"]))
            return True

        def loss(self, n: int, first: int, last: int, reason: str, **walls: int) -> None:
            calls.append(("loss", n, first, last, reason))

    emit = Emit()
    src._emit_loss = emit.loss
    inbox: queue.SimpleQueue = queue.SimpleQueue()
    inbox.put((900, 1, "loss", (2, "netlink_overflow", 400)))
    inbox.put((300, 0, "exit", (cn.KernelProcEvent(cn.PROC_EVENT_EXIT, 300, 8, 8, 1), None)))
    stop = threading.Event()
    stop.set()
    src._consume(inbox, procs, files, emit, stop)
    assert calls == [("event", "end"), ("loss", 2, 400, 900, "netlink_overflow")]


def test_exec_whose_arguments_read_empty_at_first_gets_them_when_handled():
    """cmdline can read empty when the exec event is read: a live process's
    arguments are read again when the event is handled (this process here)."""
    from kestrel_sources_portable.procfs import snapshot

    procs, _ = _tracker()
    me = snapshot(os.getpid())
    assert me.args
    early = attrs.evolve(me, args=[])
    (execd,) = procs.handle(1_000, "exec", (cn.KernelProcEvent(cn.PROC_EVENT_EXEC, 1_000, me.pid, me.pid), early))
    assert execd["process.args"] == me.args


def test_exec_of_a_process_gone_before_proc_was_read_keeps_what_is_known():
    procs, _ = _tracker()
    fork = cn.KernelProcEvent(cn.PROC_EVENT_FORK, 1_000_000, 9, 9, parent_pid=7)
    (forked,) = procs.handle(1_000_000, "fork", (fork, ("bash", 7, 90)))
    assert forked["process.entity_id"] == entity_id(9, 90) and forked["process.executable"] == "/usr/bin/bash"
    procs.exec_paths[9] = "/usr/bin/true"  # fanotify's FAN_OPEN_EXEC saw the image
    gone = ProcInfo(9, incomplete=True)
    (execd,) = procs.handle(2_000_000, "exec", (cn.KernelProcEvent(cn.PROC_EVENT_EXEC, 2_000_000, 9, 9), gone))
    assert execd["process.Ext.incomplete"] is True
    assert execd["process.executable"] == "/usr/bin/true" and "process.args" not in execd
    assert execd["process.entity_id"] == entity_id(9, 90)  # from the fork
    assert execd["process.parent.pid"] == 7 and execd["process.parent.executable"] == "/usr/bin/bash"
    (exited,) = procs.handle(3_000_000, "exit", (cn.KernelProcEvent(cn.PROC_EVENT_EXIT, 3_000_000, 9, 9, 7, a=0),
                                                 None))
    assert exited["process.exit_code"] == 0 and exited["process.name"] == "true"
