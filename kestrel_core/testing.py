"""Helpers for plugin authors' tests (and Kestrel's own).

``make_context`` and ``make_event`` build what components receive at run
time without a profile; ``collect_records`` runs a source to completion;
``wait_for`` polls a condition with a deadline (tests observe, never sleep and
hope); ``run_kestrel`` runs the CLI in a child process; ``private_tmpfs`` mounts a fresh tmpfs (root); ``SinkContract`` is a base class whose tests every sink must pass: subclass it
in your plugin's tests and provide a ``sink`` fixture.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest

from .alert import Alert
from .event import Event
from .interfaces import Sink, Source
from .runtime import RunContext
from .schema import Schema

T = TypeVar("T")


def make_context(**kwargs: Any) -> RunContext:
    kwargs.setdefault("schema", Schema.ecs())
    return RunContext(**kwargs)


def make_event(context: RunContext, category: str, ts_ns: int = 0, event_id: int = 0, source_id: str = "test",
               **fields: Any) -> Event:
    """``make_event(ctx, "process", 5, process__name="sh")``: ``__`` stands for a dot."""
    resolved = {context.schema.resolve(k.replace("__", ".")): v for k, v in fields.items()}
    return Event(category, resolved, ts_ns, ts_ns, event_id, source_id=source_id)


def make_alert(context: RunContext, rule_id: str = "test.rule", severity: str = "high", n_events: int = 1) -> Alert:
    events = [make_event(context, "process", i, i + 1, process__name=f"p{i}") for i in range(n_events)]
    return Alert(rule_id=rule_id, rule_name=f"rule {rule_id}", severity=severity, events=events,
                 fields={"process.name": [f"p{i}" for i in range(n_events)]}, ts_mono_ns=n_events - 1,
                 ts_wall_ns=n_events - 1)


def make_incident_records(context: RunContext) -> list[dict[str, Any]]:
    """The records of one small incident (opened, updated, closed), as the
    correlator builds them from two alerts (docs/incidents.md)."""
    from .incidents import Correlator

    corr = Correlator(context.schema)
    first, second = make_alert(context), make_alert(context, "test.seq", "low", n_events=2)
    corr.observe(first.events + second.events)
    return corr.add(first) + corr.add(second) + corr.close_all()


def random_events(context: RunContext, n: int = 400, seed: int = 11,
                  parent_names: tuple[Any, ...] = ("bash", "cron")) -> list[Event]:
    """``n`` process and network events with a mix of present, missing and
    badly typed values (the runtime kits' differential corpus), plus one event
    whose values only the host runtime can evaluate (a number as a name)."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        cat = rng.choice(["process", "process", "network"])
        f = {"process__parent__name": rng.choice(list(parent_names))}
        if rng.random() < 0.9:
            f["process__name"] = rng.choice(["bash", "sh", "SH", "zsh", "curl", "a", None, "shell"])
        if rng.random() < 0.8:
            f["process__pid"] = rng.choice([1, 2, 5, 100, 150, 200, 250, 2**60])
        if rng.random() < 0.7:
            f["process__args"] = rng.choice([[], ["-c"], ["-x", "-c"], ["-i"], ["a", "b"]])
        if rng.random() < 0.3:
            f["custom__flag"] = rng.choice([True, False, 1])
            f["custom__n"] = rng.choice([1, 2.0, "2", [1, 3]])
        if cat == "network":
            f["destination__ip"] = rng.choice(["10.1.2.3", "192.168.0.1", "::1"])
            f["destination__port"] = rng.choice([22, 443])
        out.append(make_event(context, cat, i, i + 1, **f))
    out.append(make_event(context, "process", n, n + 1, process__name=5, process__pid="7"))  # host rows
    return out


def rules_of(queries: list[str]) -> list[Any]:
    """Rules ``r0``, ``r1``, ... of the queries, in order."""
    from .rules import Rule

    return [Rule(id=f"r{i}", name=f"r{i}", query=q) for i, q in enumerate(queries)]


def alerts_in_batches(engine: Any, events: list[Event], batch: int = 128) -> list[tuple[str, list[int]]]:
    """(rule id, event ids) of every alert of ``events`` fed in batches, then a flush."""
    got = []
    for i in range(0, len(events), batch):
        got += engine.process_batch(events[i:i + batch])
    got += engine.flush()
    return [(a.rule_id, [e.event_id for e in a.events]) for a in got]


def collect_records(source: Source, limit: int | None = None) -> list[Any]:
    """Run ``source`` on this thread and return what it emitted (stops after ``limit``)."""
    records: list[Any] = []
    stop = threading.Event()

    def emit(record: Any) -> bool:
        records.append(record)
        if limit is not None and len(records) >= limit:
            stop.set()
        return True

    source.run(emit, stop)
    return records


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition",
             interval: float = 0.01) -> T:
    """Call ``predicate`` until it returns something truthy and return that;
    raise ``AssertionError`` naming ``what`` once ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_kestrel(*args: str, cwd: str | Path | None = None, timeout: float = 120,
                **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``kestrel *args`` (this interpreter's ``-m kestrel_core``) to completion,
    output captured as text."""
    return subprocess.run([sys.executable, "-m", "kestrel_core", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, **kwargs)


def run_on_a_terminal(*args: str, timeout: float = 120, stdout_too: bool = False,
                      env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """``kestrel *args`` with stderr (and stdout, with ``stdout_too``) on a
    pseudo-terminal, as a user at a shell sees it: (exit status, stdout bytes
    (empty with ``stdout_too``), what the terminal showed)."""
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "kestrel_core", *args], stdin=subprocess.DEVNULL,
                            stdout=follower if stdout_too else subprocess.PIPE, stderr=follower,
                            env={**os.environ, "COLUMNS": "100", **(env or {})})
    os.close(follower)
    screen: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    out = b"" if stdout_too else proc.stdout.read()  # type: ignore[union-attr]
    try:
        code = proc.wait(timeout=timeout)
    finally:
        proc.kill()
        reader.join(10)
        os.close(leader)
    return code, out, b"".join(screen)


@contextlib.contextmanager
def private_tmpfs(path: Path, label: str = "kestrel-test") -> Iterator[Path]:
    """Mount a fresh 32 MiB tmpfs on ``path`` (created) for the block, so a
    fanotify mount/filesystem mark on it sees only the test's own files; skip
    the test when mounting is not possible here."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", label, str(path)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the test: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class AlertTap(Sink):
    """A sink that keeps every alert with its arrival time (ns since the
    epoch), for tests that check what a live run raised and how fast."""

    PLUGIN_NAME = "alert-tap"

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        self.alerts: list[tuple[Alert, int]] = []
        self.lock = threading.Lock()

    def write_alert(self, alert: Alert) -> None:
        with self.lock:
            self.alerts.append((alert, time.time_ns()))

    def by_rule(self, rule_id: str) -> list[tuple[Alert, int]]:
        with self.lock:
            return [a for a in self.alerts if a[0].rule_id == rule_id]


class SinkContract:
    """Lifecycle every sink honours: open, any number of writes, flush, close;
    alerts survive a flush; an empty run is fine.  Provide a ``sink`` fixture
    returning an unopened instance."""

    @pytest.fixture
    def sink(self) -> Iterator[Sink]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `sink` fixture")

    def test_is_a_sink(self, sink: Sink) -> None:
        assert isinstance(sink, Sink) and sink.PLUGIN_NAME

    def test_empty_lifecycle(self, sink: Sink) -> None:
        sink.open()
        sink.flush()
        sink.close()

    def test_alerts_and_events(self, sink: Sink) -> None:
        sink.open()
        try:
            sink.write_events([make_event(sink.context, "process", 1, 1, process__name="sh")])
            sink.write_alert(make_alert(sink.context))
            sink.write_alert(make_alert(sink.context, "test.seq", "low", n_events=3))
            sink.flush()
        finally:
            sink.close()

    def test_incident_records(self, sink: Sink) -> None:
        """A sink takes incident records between its alerts (one that does not
        implement ``write_incident`` ignores them)."""
        records = make_incident_records(sink.context)
        assert [r["incident"]["status"] for r in records] == ["opened", "updated", "closed"]
        sink.open()
        try:
            sink.write_alert(make_alert(sink.context))
            for record in records:
                sink.write_incident(record)
            sink.flush()
        finally:
            sink.close()

    def test_probe(self, sink: Sink) -> None:
        probe = type(sink).probe()
        assert isinstance(probe.available, bool)
        assert probe.available or probe.reason, "an unavailable component must say why"


# --------------------------------------------------------------------------- runtime conformance kit


def kestrel_tests_dir() -> Path:
    """Kestrel's own test corpus (conformance cases, differential suite):
    ``$KESTREL_TESTS_DIR``, else ``tests/`` of the source tree this core was
    installed from (editable install or checkout)."""
    import os

    env = os.environ.get("KESTREL_TESTS_DIR")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "tests"
    if not (path / "conformance" / "cases").is_dir():
        raise AssertionError(f"the Kestrel test corpus is not at {path} (set KESTREL_TESTS_DIR to the tests/ "
                             f"directory of a Kestrel checkout): the runtime conformance kit needs it")
    return path


def kestrel_root() -> Path:
    return kestrel_tests_dir().parent


def _load_module(name: str, path: Path) -> Any:
    import importlib.util

    for extra in (str(path.parent), str(kestrel_tests_dir() / "conformance")):
        if extra not in sys.path:
            sys.path.insert(0, extra)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


class _CorpusKit:
    """What the runtime and matcher kits share: the EQL conformance corpus and
    the differential suite against ``eql``, run through ``kestrel eval`` with
    the component under test selected by :meth:`cli_args`."""

    MAX_REPORTED = 15
    KIND = ""

    def component(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def cli_args(self) -> list[str]:
        return [f"--{self.KIND}", self.component()]

    def _failures(self, what: str, failures: list[str], total: int) -> None:
        if failures:
            shown = "\n\n".join(failures[: self.MAX_REPORTED])
            raise AssertionError(f"{self.KIND} {self.component()!r}: {len(failures)} of {total} {what} failed:\n\n{shown}")

    def test_conformance_cases(self, tmp_path: Path) -> None:
        tests = kestrel_tests_dir()
        conf = _load_module("kestrel_conformance_cases", tests / "conformance" / "test_conformance.py")
        runner = _load_module("kestrel_runner", tests / "conformance" / "kestrel_runner.py")
        assert not conf.PROBLEMS, conf.PROBLEMS
        failures = []
        for case in conf.CASES:
            res = runner.run_eval(case.query, case.events, [*case.args, *self.cli_args()], workdir=tmp_path)
            why = None
            if res.crash is not None:
                why = f"raised:\n{res.crash}"
            elif case.error is not None:
                locs = runner.error_locations(res.stderr)
                line, col = case.error["line"], case.error.get("column")
                if res.exit_code == 0 or not any(l == line and (col is None or c == col) for l, c in locs):
                    why = f"wanted an error at {line}:{col}; exit {res.exit_code}, stderr {res.stderr!r}"
            elif res.exit_code != 0:
                why = f"exit {res.exit_code}: {res.stderr}"
            else:
                got = runner.match_ids(res.matches)
                if got != case.expected:
                    why = f"expected {case.expected}\n  got      {got}"
            if why:
                failures.append(f"[{case.file}] {case.id}\n  query: {case.query}\n  {why}")
        assert len(conf.CASES) >= 300
        self._failures("conformance cases", failures, len(conf.CASES))

    def test_differential_against_eql(self, tmp_path: Path) -> None:
        tests = kestrel_tests_dir()
        diff = _load_module("kestrel_differential", tests / "differential" / "test_differential.py")
        runner = _load_module("kestrel_runner", tests / "conformance" / "kestrel_runner.py")
        cases = [(q, diff.FIXED_EVENTS) for q in diff.HAND_WRITTEN]
        cases += [(c.query, c.events) for c in map(diff.generate, diff.SEEDS)]
        cases += [(c.query, c.events) for c in map(diff.generate_dense, diff.DENSE_SEEDS)]
        failures = []
        for query, events in cases:
            res = runner.run_eval(query, events, [*diff.KESTREL_ARGS, *self.cli_args()], workdir=tmp_path)
            if res.crash is not None or res.exit_code != 0:
                failures.append(f"query: {query}\n  exit {res.exit_code}: {res.crash or res.stderr}")
                continue
            ours, theirs = runner.match_ids(res.matches), diff.eql_matches(query, events)
            if ours != theirs:
                failures.append(diff._report(query, events, ours, theirs))
        self._failures("differential cases", failures, len(cases))


class RuntimeConformance(_CorpusKit):
    """The runtime conformance kit: every predicate runtime (host, Lua, Wasm,
    a third party's) must give the host runtime's results on

    * the whole EQL conformance corpus (tests/conformance/cases) through
      ``kestrel eval --runtime NAME``;
    * the differential suite against the ``eql`` package (tests/differential);
    * the Linux rule pack's golden tests (``kestrel rules test --runtime NAME``);
    * the demo replay (``kestrel replay demo/capture.klog --rules rules/linux
      --runtime NAME``): byte-identical output to the host runtime's, also from
      a child process with another PYTHONHASHSEED.

    Subclass it in your plugin's tests and set ``RUNTIME`` to the runtime's
    name (``PLUGIN_NAME``); each test reports every failing case at once.
    """

    RUNTIME: str = ""
    KIND = "runtime"

    def component(self) -> str:
        return self.RUNTIME

    def test_runtime_is_available(self) -> None:
        from .runtimes import resolve

        assert self.RUNTIME, "set RUNTIME to the runtime's name"
        resolve(self.RUNTIME)  # raises with the reason when not installed or its probe fails

    def test_linux_pack_golden_tests(self) -> None:
        from .packs import load_packs, run_rule_test
        from .runtimes import resolve

        ps = load_packs([kestrel_root() / "rules" / "linux"])
        assert ps.ok, [str(e) for e in ps.errors]
        runtimes = resolve(self.RUNTIME, ps.rules)
        outcomes = [run_rule_test(r, t, runtimes=runtimes) for r in ps.rules for t in r.tests]
        assert len(outcomes) >= 50
        failures = [f"{o.rule_id} / {o.test}: {o.detail}" for o in outcomes if not o.passed]
        self._failures("golden tests", failures, len(outcomes))

    def test_demo_replay_identical_to_host(self, tmp_path: Path) -> None:
        import io
        import os

        from .replay import replay

        root = kestrel_root()
        log_path, pack = root / "demo" / "capture.klog", root / "rules" / "linux"
        host, ours = io.BytesIO(), io.BytesIO()
        replay([log_path], [pack], host, runtime="host")
        result = replay([log_path], [pack], ours, runtime=self.RUNTIME)
        assert result.footer["counts"]["alerts"] >= 50
        a, b = host.getvalue().splitlines(), ours.getvalue().splitlines()
        diff = [f"line {i + 1}:\n  host: {x[:300]!r}\n  {self.RUNTIME}: {y[:300]!r}"
                for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(a) != len(b):
            diff.append(f"host wrote {len(a)} lines, {self.RUNTIME} {len(b)}")
        self._failures("replay output lines", diff, max(len(a), len(b)))
        # two child processes, host and this runtime, with other PYTHONHASHSEEDs (children, not this process:
        # the header's engine build id hashes the core's sources as they are when a process starts)
        outs = []
        for runtime, seed in (("host", "1"), (self.RUNTIME, "12345")):
            out = tmp_path / f"alerts-{runtime}.jsonl"
            proc = run_kestrel("replay", str(log_path), "--rules", str(pack), "--runtime", runtime, "-o", str(out),
                               env=dict(os.environ, PYTHONHASHSEED=seed))
            assert proc.returncode == 0, proc.stderr
            outs.append(out.read_bytes())
        assert outs[0] == outs[1], "child processes with other PYTHONHASHSEEDs gave other bytes"
