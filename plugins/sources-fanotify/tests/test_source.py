"""The fanotify source: ECS records from real kernel events."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from kestrel_core.interfaces import Interest
from kestrel_core.normalize import EcsJsonNormalizer
from kestrel_core.plugins import PluginHost
from kestrel_core.testing import make_context
from kestrel_sources_fanotify import fanotify as fan
from kestrel_sources_fanotify import plugin
from kestrel_sources_fanotify.procinfo import read_proc
from kestrel_sources_fanotify.source import FanotifySource


class Collector:
    """An ``emit`` that keeps records and losses (``emit.loss`` as the core emitter offers it)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.losses: list[tuple[int, int, int, str]] = []
        self.loss_walls: list[tuple[int, int]] = []
        self.lock = threading.Lock()

    def __call__(self, record: dict[str, Any]) -> bool:
        with self.lock:
            self.records.append(record)
        return True

    def loss(self, lost: int, first_ts_ns: int, last_ts_ns: int, reason: str = "overflow", *,
             first_wall_ns: int = 0, last_wall_ns: int = 0) -> None:
        with self.lock:
            self.losses.append((lost, first_ts_ns, last_ts_ns, reason))
            self.loss_walls.append((first_wall_ns, last_wall_ns))

    def matching(self, **want: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if all(_get(r, k) == v for k, v in want.items())]


def _get(record: dict[str, Any], dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("__"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@pytest.fixture
def start_source() -> Iterator:
    """Run a source on a thread (as the pipeline does); stopped and joined at teardown."""
    running: list[tuple[threading.Thread, threading.Event]] = []

    def start(tmpfs: Path, emit: Collector | None = None, **settings: Any) -> tuple[FanotifySource, Collector]:
        settings.setdefault("paths", [str(tmpfs)])
        settings.setdefault("mark", "mount")
        settings.setdefault("poll_ms", 50)
        source = FanotifySource(FanotifySource.Settings(**settings), make_context())
        emit = emit or Collector()
        stop = threading.Event()
        t = threading.Thread(target=source.run, args=(emit, stop), daemon=True)
        t.start()
        running.append((t, stop))
        return source, emit

    yield start
    for t, stop in running:
        stop.set()
        t.join(5)
        assert not t.is_alive(), "the source must return once stop is set"


def wait_marked(tmpfs: Path, emit: Collector, run_py, wait_for) -> None:
    """The source's marks are in place once an open of a probe file is reported."""
    probe = tmpfs / ".probe"
    probe.touch()

    def seen():
        run_py(f"open({str(probe)!r}).close()")
        return emit.matching(file__path=str(probe))

    wait_for(seen, 5, "the source to watch the tmpfs")


def test_registers_the_source():
    host = PluginHost()
    host.add_module("sources-fanotify", plugin)
    assert host.registry.get("source", "fanotify").cls is FanotifySource


def test_probe_is_a_kestrel_probe(fanotify_ok):
    probe = FanotifySource.probe()
    assert probe.available and "filesystem" in probe.reason


def test_open_close_write_and_exec_records(tmpfs: Path, sh_copy: Path, start_source, run_py, wait_for):
    source, emit = start_source(tmpfs, events=["open", "exec", "close_write"])
    wait_marked(tmpfs, emit, run_py, wait_for)
    target = tmpfs / "report.csv"
    writer = run_py(f"import os; open({str(target)!r}, 'w').write('a,b'); print(os.getpid())", cwd=str(tmpfs))
    wpid = int(writer.stdout)
    child = subprocess.Popen([str(sh_copy), "-c", "read line", "two words"], cwd=str(tmpfs), stdin=subprocess.PIPE)
    try:  # alive until its exec record is in: the source reads it and its parent from /proc
        wait_for(lambda: emit.matching(process__pid=child.pid, event__action="exec"), 5, "exec record")
    finally:
        child.communicate(b"\n", timeout=5)
    assert child.returncode == 0
    wait_for(lambda: emit.matching(process__pid=wpid, event__action="close_write"), 5, "close_write record")

    opened = emit.matching(process__pid=wpid, event__action="open")[0]
    assert opened["event"] == {"kind": "event", "category": ["file"], "type": ["access"], "action": "open",
                               "module": "fanotify"}
    assert opened["file"] == {"path": str(target), "name": "report.csv", "directory": str(tmpfs), "extension": "csv"}
    closed = emit.matching(process__pid=wpid, event__action="close_write")[0]
    assert closed["event"]["category"] == ["file"] and closed["event"]["type"] == ["change"]
    assert closed["file"]["path"] == str(target)
    for rec in (opened, closed):
        proc = rec["process"]
        # The writer may be gone when its events are read: then only pid (and entity) are known.
        if "executable" in proc:
            assert proc["executable"] == os.path.realpath(proc["executable"])
            assert proc["working_directory"] == str(tmpfs)
            assert proc["parent"]["pid"] == os.getpid()
        assert isinstance(rec["@timestamp"], int)
        assert rec["host"]["name"]

    execd = emit.matching(process__pid=child.pid, event__action="exec")[0]
    assert execd["event"]["category"] == ["process"] and execd["event"]["type"] == ["start"]
    proc = execd["process"]
    assert proc["executable"] == str(sh_copy) and proc["name"] == "mysh"
    if proc.get("args_count", 1) > 1:  # argv read from /proc once the new image runs
        assert proc["args"] == [str(sh_copy), "-c", "read line", "two words"] and proc["args_count"] == 4
        assert proc["command_line"] == f"{sh_copy} -c read line two words"
    assert proc["parent"]["pid"] == os.getpid()
    assert proc["parent"]["executable"] == os.path.realpath("/proc/self/exe")
    assert proc["entity_id"].startswith(f"{child.pid:x}-")
    assert execd["user"] == {"id": "0", "effective": {"id": "0"}, "Ext": {"real": {"id": "0"}}} and execd["group"] == {"id": "0"}
    assert "file" not in execd


def test_exclude_self(tmpfs: Path, start_source, run_py, wait_for):
    _, emit = start_source(tmpfs, events=["open"])
    wait_marked(tmpfs, emit, run_py, wait_for)
    mine = tmpfs / "mine"
    mine.write_text("x")
    theirs = tmpfs / "theirs"
    run_py(f"open({str(theirs)!r}, 'w').close()")
    wait_for(lambda: emit.matching(file__path=str(theirs)), 5, "the child's open")
    assert not emit.matching(file__path=str(mine)), "Kestrel's own opens are excluded"
    assert not emit.matching(process__pid=os.getpid())

    _, emit2 = start_source(tmpfs, events=["open"], exclude_self=False)
    wait_marked(tmpfs, emit2, run_py, wait_for)
    again = tmpfs / "mine-again"

    def own_open_seen():
        again.write_text("y")
        return emit2.matching(file__path=str(again), process__pid=os.getpid())

    wait_for(own_open_seen, 5, "own open with exclude_self = false")


def test_records_normalize_to_typed_events(tmpfs: Path, start_source, run_py, wait_for):
    _, emit = start_source(tmpfs, events=["open"])
    wait_marked(tmpfs, emit, run_py, wait_for)
    context = make_context()
    normalizer = EcsJsonNormalizer(EcsJsonNormalizer.Settings(), context)
    event = normalizer.normalize(emit.records[-1], "fanotify")
    assert event.category == "file"
    schema = context.schema
    assert event.fields[schema.resolve("file.path")] == str(tmpfs / ".probe")
    assert isinstance(event.fields[schema.resolve("process.pid")], int)
    assert event.fields[schema.resolve("event.type")] == ["access"]


class GatedCollector(Collector):
    """Blocks the source thread inside ``emit`` while the gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.blocked = threading.Event()

    def __call__(self, record: dict[str, Any]) -> bool:
        if not self.gate.is_set():
            self.blocked.set()
            self.gate.wait(10)
        return super().__call__(record)


def test_overflow_becomes_a_loss(tmpfs: Path, small_queue, start_source, run_py, wait_for):
    restore = small_queue(8)
    emit = GatedCollector()
    source, _ = start_source(tmpfs, emit, events=["open"])
    wait_marked(tmpfs, emit, run_py, wait_for)
    restore()  # the source's group keeps the size it was created with
    emit.gate.clear()
    run_py(f"open({str(tmpfs / '.probe')!r}).close()")
    assert emit.blocked.wait(5), "the source should be held in emit"
    # While the source is held, 300 opens of distinct files (never merged) overflow a queue of 8.
    res = run_py(f"import os\nfor i in range(300):\n    open(os.path.join({str(tmpfs)!r}, str(i)), 'w').close()")
    assert res.returncode == 0, res.stderr
    emit.gate.set()
    wait_for(lambda: emit.losses, 5, "a loss report")
    lost, first, last, reason = emit.losses[0]
    assert lost >= 1 and first <= last and reason == "fanotify_overflow"
    assert emit.loss_walls[0] == (first, last), "wall times given for display"
    assert source.reported_overflows >= 1
    assert len(emit.matching(event__action="open")) < 300


def test_gone_process_degrades_to_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    info = read_proc(proc.pid)
    assert info.pid == proc.pid and not info.alive and info.args == () and info.executable == ""
    source = FanotifySource(FanotifySource.Settings(events=["open", "exec"]), make_context())
    ev = fan.FileEvent(fan.FAN_OPEN | fan.FAN_OPEN_EXEC, proc.pid, "/usr/bin/true", 1, 1, "exec")
    execd, opened = source.records([ev])
    assert execd["process"] == {"pid": proc.pid, "entity_id": str(proc.pid), "executable": "/usr/bin/true",
                                "name": "true", "args": ["/usr/bin/true"], "args_count": 1,
                                "command_line": "/usr/bin/true"}
    assert opened["process"] == {"pid": proc.pid, "entity_id": str(proc.pid)}
    assert opened["file"]["path"] == "/usr/bin/true" and "user" not in opened


def test_elf_interpreter_open_is_not_an_exec():
    source = FanotifySource(FanotifySource.Settings(events=["exec"]), make_context())
    ev = fan.FileEvent(fan.FAN_OPEN_EXEC, os.getpid() + 10**6, "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                       1, 1, "exec")
    assert source.records([ev]) == []


def test_settings_are_validated():
    with pytest.raises(ValueError, match="unknown fanotify event.*'create'"):
        FanotifySource.Settings(events=["open", "create"])
    with pytest.raises(ValueError, match="at least one"):
        FanotifySource.Settings(events=[])
    with pytest.raises(ValueError, match="unknown mark type 'dir'"):
        FanotifySource.Settings(mark="dir")


def test_interest_push_down_narrows_the_mask():
    def narrowed(categories: set[str], wants_all: bool = False) -> set[str]:
        source = FanotifySource(FanotifySource.Settings(events=["open", "exec", "close_write"]), make_context())
        source.set_interest(Interest(categories=frozenset(categories), wants_all=wants_all))
        return source.kinds

    assert narrowed({"process"}) == {"exec"}
    assert narrowed({"file"}) == {"open", "close_write"}
    assert narrowed({"network"}) == set()
    assert narrowed(set(), wants_all=True) == {"open", "exec", "close_write"}
    source = FanotifySource(FanotifySource.Settings(events=["exec", "modify"]), make_context())
    assert source.mask() == fan.FAN_OPEN_EXEC | fan.FAN_MODIFY
    assert source.capabilities().categories == frozenset({"process", "file"})


def test_exec_image_names_the_new_binary_whatever_proc_shows_mid_exec():
    """An exec event is read while execve runs: /proc may show the old image,
    or the new executable with the old comm (seen in CI: executable .../mysh,
    name 'python'); the record names the binary being executed either way."""
    from kestrel_sources_fanotify.procinfo import ProcInfo

    old = ProcInfo(pid=7, name="python", executable="/usr/bin/python3.11", args=("python", "x.py"))
    new = FanotifySource._exec_image(old, "/tmp/mnt/mysh")
    assert (new.name, new.executable, new.args) == ("mysh", "/tmp/mnt/mysh", ("/tmp/mnt/mysh",))
    half = ProcInfo(pid=7, name="python", executable="/tmp/mnt/mysh", args=("python", "x.py"))
    assert FanotifySource._exec_image(half, "/tmp/mnt/mysh").name == "mysh"
    done = ProcInfo(pid=7, name="python3", executable="/usr/bin/python3.11", args=("python3",))
    assert FanotifySource._exec_image(done, "/usr/bin/python3.11") == done  # comm of a symlinked name: kept
