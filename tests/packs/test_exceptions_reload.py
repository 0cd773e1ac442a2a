"""Hot reload applies exception edits: a live run (JSONL source on a FIFO, the
real watcher) picks up a new entry in a shared list of pack.toml and a
rule's own [[exception]], and a bad entry is rejected whole with its location."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from pathlib import Path

import pytest

from kestrel_core.pipeline import Run
from kestrel_core.startup import load_profile
from kestrel_core.testing import wait_for

MANIFEST = '''\
[pack]
name = "live"
version = "1"
priority = 1

[lists.tools]
description = "known-good tools"
{entries}'''
ENTRY = '''
[[lists.tools.entry]]
reason = "{reason}"
field = "process.name"
op = "{op}"
values = ["{value}"]
'''
RULE = '''\
id = "t.tmp"
name = "exec from /tmp"
description = "x"
exception_lists = ["tools"]
query = 'process where process.executable : "/tmp/*"'
{own}'''
OWN = '''
[[exception]]
reason = "the backup agent"
field = "process.executable"
op = "wildcard"
value = "/tmp/backup/*"
'''


def replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def live(tmp_path):
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "pack.toml").write_text(MANIFEST.format(entries=""))
    (pack / "tmp.toml").write_text(RULE.format(own=""))
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    (tmp_path / "profile.toml").write_text(textwrap.dedent('''\
        [rules]
        paths = ["pack"]
        watch = true
        [bus]
        batch_size = 1
        flush_interval_ms = 10
        [[sources]]
        type = "jsonl"
        path = "events.fifo"
        '''))
    prof, host = load_profile(tmp_path / "profile.toml")
    job = Run.build(prof, host)
    job.open()
    thread = threading.Thread(target=job.execute, daemon=True)
    thread.start()
    writer = open(fifo, "w")
    state = {"ts": 0}

    def send(name: str, exe: str) -> None:
        state["ts"] += 1
        doc = {"@timestamp": 1_767_600_000_000 + state["ts"],
               "event": {"category": ["process"], "type": ["start"], "action": "exec"},
               "process": {"pid": state["ts"], "name": name, "executable": exe}}
        writer.write(json.dumps(doc) + "\n")
        writer.flush()

    def alerts() -> int:
        with job.context.stats.lock:
            return sum(n for (r, _), n in job.context.stats.alerts.items() if r == "t.tmp")

    yield pack, job, send, alerts
    job.request_stop("test")
    writer.close()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_reload_applies_list_and_rule_exceptions_and_rejects_a_bad_one(live, caplog):
    pack, job, send, alerts = live
    caplog.set_level("INFO", logger="kestrel")
    wait_for(job.reloader.ready.is_set, 10, "the watcher to go live")
    send("pip", "/tmp/venv/bin/pip")
    wait_for(lambda: alerts() == 1, 10, "the alert before any exception")

    # a shared list entry in pack.toml
    replace(pack / "pack.toml", MANIFEST.format(entries=ENTRY.format(reason="pip", op="==", value="pip")))
    wait_for(lambda: job.reloader.outcomes["applied"] == 1, 10, "the list edit to be applied")
    assert [e.reason for e in job.packset.rules[0].exceptions] == ["pip"]
    send("pip", "/tmp/venv/bin/pip")           # excepted now
    send("agent", "/tmp/backup/agent")         # not yet
    wait_for(lambda: alerts() == 2, 10, "the backup agent's alert")

    # the rule's own entry
    replace(pack / "tmp.toml", RULE.format(own=OWN))
    wait_for(lambda: job.reloader.outcomes["applied"] == 2, 10, "the rule edit to be applied")
    send("agent", "/tmp/backup/agent")         # excepted now
    send("pip", "/tmp/venv/bin/pip")           # still excepted
    send("x", "/tmp/x")                        # marker: still alerts
    wait_for(lambda: alerts() == 3, 10, "the marker alert")

    # a bad operator: the whole set is rejected, the previous exceptions keep running
    replace(pack / "pack.toml", MANIFEST.format(entries=ENTRY.format(reason="pip", op="=~", value="pip")))
    wait_for(lambda: job.reloader.outcomes["rejected"] == 1, 10, "the bad edit to be rejected")
    assert f"{pack / 'pack.toml'}:12:6: error: [[lists.tools.entry]] #1: unknown operator '=~'" in caplog.text
    send("pip", "/tmp/venv/bin/pip")
    send("y", "/tmp/y")
    wait_for(lambda: alerts() == 4, 10, "the marker alert after the rejection")

    # an entry past its expiry day: applied without it, the warning logged
    expired = ENTRY.format(reason="pip", op="==", value="pip") + "expires = 2020-01-31\n"
    replace(pack / "pack.toml", MANIFEST.format(entries=expired))
    wait_for(lambda: job.reloader.outcomes["applied"] == 3, 10, "the expired entry's set to be applied")
    wait_for(lambda: "warning: exception (list 'tools') expired on 2020-01-31, ignored" in caplog.text, 10,
             "the expiry warning")
    send("pip", "/tmp/venv/bin/pip")  # no longer excepted
    wait_for(lambda: alerts() == 5, 10, "pip's alert once its entry expired")
