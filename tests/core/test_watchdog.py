"""The agent's watchdog (kestrel_core/watchdog.py): memory and CPU limits
enforced by shedding load in the profile's order.

In-process, on a driven clock and a driven RSS/CPU reading: the memory
levels are taken once each, in order; CPU pressure takes every step but
``stop`` and gives sampling back.  End to end: a real ``kestrel run`` fed an
entity flood on stdin (every exec a new sequence key) climbs toward its
memory limit: the low-priority pack is shed first (its sequence state freed
and counted), the run stays alive and keeps alerting, then sampling (counted
drops), then a graceful stop with exit status 75, the sinks flushed (every
alert line whole) and the counts in the stop summary."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import threading
import types

import attrs

from kestrel_core.profile import WatchdogSection
from kestrel_core.runtime import Stats
from kestrel_core.testing import wait_for
from kestrel_core.watchdog import EXIT_WATCHDOG, Watchdog

from .test_run import final_counts, kestrel

MB = 2 ** 20


@attrs.define
class FakeRun:
    engine: object = attrs.Factory(lambda: types.SimpleNamespace(rules=[]))
    packset: object = None
    stops: list = attrs.Factory(list)

    def request_stop(self, reason):
        self.stops.append(reason)


def test_memory_levels_are_taken_once_each_in_order():
    settings = WatchdogSection(memory_mb=100, shed_levels=[0.5, 0.7, 0.9], interval_s=1.0)
    rss, clock = [10 * MB], [0.0]
    wd = Watchdog(settings, Stats(), rss=lambda: rss[0], cpu=lambda: 0.0, clock=lambda: clock[0])
    run = FakeRun()

    def at(mb):
        rss[0] = mb * MB
        clock[0] += 1.0
        wd.tick(run)

    at(40)
    assert wd.taken == {}
    at(55)
    assert list(wd.taken) == ["low_priority_packs"]
    at(60)
    at(50)  # memory went down: nothing is taken twice, nothing given back
    assert list(wd.taken) == ["low_priority_packs"] and run.stops == []
    assert wd.drop([object()]) is None
    at(75)
    assert list(wd.taken) == ["low_priority_packs", "sample"]
    dropped = [wd.drop([object()]) for _ in range(8)]
    assert dropped.count(None) == 8 // settings.sample_every  # one batch in sample_every is evaluated
    assert set(dropped) == {None, "watchdog_sample"}
    at(95)
    assert list(wd.taken) == ["low_priority_packs", "sample", "stop"] and run.stops == ["watchdog"]
    assert wd.drop([object()]) == "watchdog_stop"
    assert wd.shed_total == {("low_priority_packs", "memory"): 1, ("sample", "memory"): 1, ("stop", "memory"): 1}
    assert wd.peak_rss == 95 * MB
    assert "RSS 95 MB reached 90% of the 100 MB limit" in wd.summary()[2]


def test_a_custom_order_is_followed():
    settings = WatchdogSection(memory_mb=100, shed_order=["sample", "stop"], shed_levels=[0.6, 0.8], interval_s=1.0)
    rss, clock = [70 * MB], [0.0]
    wd = Watchdog(settings, Stats(), rss=lambda: rss[0], cpu=lambda: 0.0, clock=lambda: clock[0])
    run = FakeRun()
    wd.tick(run)
    assert list(wd.taken) == ["sample"]


def test_cpu_pressure_sheds_but_never_stops_and_gives_sampling_back():
    settings = WatchdogSection(cpu_percent=50, cpu_windows=2, interval_s=1.0, shed_order=["sample", "stop"],
                               shed_levels=[0.5, 0.9])
    cpu, clock = [0.0], [0.0]
    wd = Watchdog(settings, Stats(), rss=lambda: 10 * MB, cpu=lambda: cpu[0], clock=lambda: clock[0])
    run = FakeRun()
    wd.tick(run)

    def window(cpu_s):
        cpu[0] += cpu_s
        clock[0] += 1.0
        wd.tick(run)

    window(0.9)
    assert wd.taken == {}  # one window over is not enough
    window(0.9)
    assert wd.taken == {"sample": "cpu"}
    for _ in range(6):
        window(0.9)
    assert wd.taken == {"sample": "cpu"} and run.stops == []  # CPU never stops the agent
    window(0.1)
    window(0.1)
    assert wd.taken == {}
    assert any("sample given back" in e for e in wd.events)


def test_shed_levels_must_match_the_order():
    import pytest

    with pytest.raises(ValueError, match="shed_levels"):
        WatchdogSection(memory_mb=100, shed_levels=[0.9, 0.5])


# --------------------------------------------------------------------------- end to end


def exec_event(i: int) -> str:
    return json.dumps({"@timestamp": 1_700_000_000_000 + i, "event": {"category": "process", "action": "exec"},
                       "process": {"name": "nc" if i % 500 == 0 else "sh", "pid": i, "entity_id": f"e{i}",
                                   "args": ["sh", "-c", f"job {i}"]}})


class Flood(threading.Thread):
    """Execs with a new entity id each (a new sequence key each) on the run's stdin, until the pipe closes."""

    def __init__(self, stdin) -> None:
        super().__init__(daemon=True)
        self.stdin, self.done, self.sent = stdin, threading.Event(), 0

    def run(self) -> None:
        try:
            while not self.done.is_set():
                self.stdin.write("\n".join(exec_event(self.sent + k) for k in range(500)) + "\n")
                self.stdin.flush()
                self.sent += 500
        except (BrokenPipeError, ValueError, OSError):
            pass


PACKS = {
    "low": ("lowpack", -1, "low.flood", '[process where event.action == "exec"] [network where true]'),
    "main": ("main", 10, "main.flood", '[process where event.action == "exec"] [file where true]'),
}


def write_profile(tmp_path, watchdog: str) -> None:
    for d, (name, prio, rid, steps) in PACKS.items():
        (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / d / "pack.toml").write_text(f'[pack]\nname = "{name}"\nversion = "1"\npriority = {prio}\n')
        extra = ('\n[[rule]]\nid = "main.nc"\nname = "netcat"\nquery = \'process where process.name == "nc"\'\n'
                 if d == "main" else "")
        (tmp_path / d / "rules.toml").write_text(
            f'[[rule]]\nid = "{rid}"\nname = "{rid}"\nquery = \'sequence by process.entity_id {steps}\'\n' + extra)
    (tmp_path / "p.toml").write_text(textwrap.dedent("""
        [rules]
        paths = ["low", "main"]
        [budgets]
        max_partials_per_rule = 10000000
        [status]
        path = "status.json"
        interval_s = 0.2
        [[sources]]
        type = "jsonl"
        path = "-"
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
    """) + textwrap.dedent(watchdog))


def status(tmp_path) -> dict | None:
    try:
        return json.loads((tmp_path / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def main_nc_alerts(tmp_path) -> int:
    p = tmp_path / "alerts.jsonl"
    return p.read_text().count('"main.nc"') if p.exists() else 0


def test_entity_flood_is_shed_in_order_and_the_run_stops_gracefully(tmp_path):
    # the RSS of this run kind with no events: the limit is set above it
    write_profile(tmp_path, "[watchdog]\nmemory_mb = 100000\n")
    idle = kestrel("run", "--profile", str(tmp_path / "p.toml"), stdin=subprocess.PIPE)
    _out, err = idle.communicate("", timeout=120)
    assert idle.returncode == 0, err
    base_mb = status(tmp_path)["watchdog"]["peak_rss_bytes"] / MB
    assert 20 < base_mb < 500, base_mb
    # the stop level is 80 MB below the limit: between the last check and the exit a flood on stdin still
    # grows the process (reads ahead, dropped queued batches), measured at up to ~60 MB here
    limit = base_mb + 230
    levels = [(base_mb + 50) / limit, (base_mb + 100) / limit, (base_mb + 150) / limit]
    (tmp_path / "status.json").unlink()
    write_profile(tmp_path, f"""
        [watchdog]
        memory_mb = {limit:.0f}
        shed_levels = [{levels[0]:.3f}, {levels[1]:.3f}, {levels[2]:.3f}]
        shed_order = ["low_priority_packs", "sample", "stop"]
        sample_every = 4
        interval_s = 0.1
    """)
    proc = kestrel("run", "--profile", str(tmp_path / "p.toml"), stdin=subprocess.PIPE)
    flood = Flood(proc.stdin)
    flood.start()
    try:
        def shed(step):
            doc = status(tmp_path)
            return doc is not None and step in doc["watchdog"]["shed"] and doc

        doc = wait_for(lambda: shed("low_priority_packs"), timeout=120, what="the low-priority pack shed")
        assert list(doc["watchdog"]["shed"]) == ["low_priority_packs"]
        assert doc["watchdog"]["shed_rules"] == ["low.flood"] and doc["watchdog"]["partials_dropped"] > 1000
        assert proc.poll() is None  # alive, and still alerting
        n = main_nc_alerts(tmp_path)
        wait_for(lambda: main_nc_alerts(tmp_path) > n, timeout=60, what="main.nc alerts after the shed")
        doc = wait_for(lambda: shed("sample"), timeout=120, what="sampling")
        assert list(doc["watchdog"]["shed"])[:2] == ["low_priority_packs", "sample"]
        assert proc.poll() is None
        proc.wait(timeout=180)  # the stop step ends it
    finally:
        flood.done.set()
        if proc.poll() is None:
            proc.kill()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_WATCHDOG, err
    assert "Traceback" not in err and "MemoryError" not in err
    steps = re.findall(r"WARNING: watchdog: (\w+) \(|ERROR: watchdog: (\w+) \(", err)
    assert ["".join(s) for s in steps] == ["low_priority_packs", "sample", "stop"]  # the configured order
    counts = final_counts(err)
    assert counts["reason"] == "watchdog"
    assert counts["read"] == counts["processed"] + counts["dropped"] and counts["dropped"] > 0
    assert re.search(r"dropped: .*from jsonl \(not evaluated: the watchdog is sampling\)", err)
    assert re.search(r"[\d,]+ shed by the watchdog", err)  # the low pack's sequence states, counted
    peak = re.search(r"watchdog: peak RSS (\d+) MB \(limit (\d+) MB\)", err)
    assert peak and int(peak.group(1)) < int(peak.group(2))  # stopped below the limit
    doc = status(tmp_path)
    assert doc["stopped"] is True and list(doc["watchdog"]["shed"]) == ["low_priority_packs", "sample", "stop"]
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["rule"]["id"] for line in lines)  # sinks flushed, no line cut off
