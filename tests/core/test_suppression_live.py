"""Issue 17, "done means" 1, live: the default profile with the eBPF source
(as root; the source mounts tracefs itself when it is not mounted) while a
venv is created under /tmp and pip installs a local wheel built here (no
network): at most 3 alerts, the repeats counted; a shared package-manager
exception in a local pack silences it; the sources-ebpf attack chain still
alerts with that exception in place."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

sources_ebpf = pytest.importorskip("kestrel_sources_ebpf.testing", reason="plugin sources-ebpf is not installed")
needs_kernel, start_run, wait_for = sources_ebpf.needs_kernel, sources_ebpf.start_run, sources_ebpf.wait_for

from kestrel_core.startup import default_profile_path  # noqa: E402
from kestrel_core.suppression import COUNT_FIELD, SUMMARY_FIELD  # noqa: E402

pytestmark = needs_kernel

REPO = Path(__file__).resolve().parents[2]
CHMOD = "kestrel.linux.chmod_exec_in_tmp"
ATTACK = ("kestrel.linux.exec_from_tmp", "kestrel.linux.chmod_exec_in_tmp",
          "kestrel.linux.tmp_binary_network_connect", "kestrel.linux.shadow_file_open",
          "kestrel.linux.dropper_chain")
# What a site adds in its own pack (the bundled pack ships the list empty: an
# entry that names an interpreter would hide droppers written in it).
LOCAL_PACK = '''\
[pack]
name = "site-local"
version = "1"
priority = 20
description = "This site's additions to the bundled pack."

[[lists.package_managers.entry]]
reason = "pip, ensurepip and venv creation mark the scripts they install executable"
all = [
  {{ field = "process.executable", op = "==", value = "{python}" }},
  {{ field = "process.args", op = ":", values = ["*/bin/pip", "*/bin/pip3*", "venv", "*runpy.run_module(\\"pip\\"*"] }},
]
'''


def tiny_wheel(directory: Path) -> Path:
    """A pure-Python wheel with a console script (pip writes it and marks it executable)."""
    name, version = "kestreltiny", "1.0"
    files = {
        f"{name}/__init__.py": b"def main():\n    print('tiny')\n",
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: kestrel-test\nRoot-Is-Purelib: true\n"
                                             b"Tag: py3-none-any\n",
        f"{name}-{version}.dist-info/entry_points.txt": f"[console_scripts]\nkestrel-tiny = {name}:main\n".encode(),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{name}-{version}.dist-info/RECORD", "\n".join(record) + "\n")
    return wheel


def write_profile(tmp: Path, extra_packs: list[Path] = ()) -> Path:
    """The bundled default profile, with the rule paths made absolute and a
    JSONL sink instead of the console."""
    text = default_profile_path().read_text()
    paths = ", ".join(f'"{p}"' for p in [REPO / "rules" / "linux", *extra_packs])
    assert 'paths = ["rules/linux"]' in text and 'type = "console"' in text
    text = text.replace('paths = ["rules/linux"]', f"paths = [{paths}]")
    text = text.replace('type = "console"', f'type = "jsonl"\npath = "{tmp / "alerts.jsonl"}"')
    (tmp / "profile.toml").write_text(text)
    return tmp / "profile.toml"


@pytest.fixture
def work():
    d = Path(tempfile.mkdtemp(prefix="kestrel-pip-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def install(work: Path) -> Path:
    """python -m venv under /tmp (pip comes from ensurepip, offline), then pip
    installs the local wheel with --no-index."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    wheel = tiny_wheel(work)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "--no-cache-dir",
                    "--disable-pip-version-check", str(wheel)], check=True, capture_output=True, timeout=300)
    assert (venv / "bin" / "kestrel-tiny").is_file()
    return venv


def marker(job, tap, work: Path) -> None:
    """chmod +x of a marker file: once its alert arrived, every earlier event was
    processed (one ring buffer, read in order); then stop the run."""
    m = work / "marker"
    m.write_text("x")
    subprocess.run(["chmod", "+x", str(m)], check=True)
    wait_for(lambda: any(a.events[-1].to_ecs(job.context.schema).get("file.path") == str(m)
                         for a, _ in tap.by_rule(CHMOD)), 30, "the marker's alert")


def stop(job, t) -> None:
    job.request_stop("test")
    t.join(60)
    assert not t.is_alive(), "run did not stop"


def pip_records(job, tap, work: Path) -> tuple[list, list]:
    """(alerts, suppression summaries) raised by the install: those whose events name the test's
    directory (other programs on the host alert too), but the marker."""
    schema = job.context.schema

    def ours(alert) -> bool:
        docs = [e.to_ecs(schema) for e in alert.events]
        if any(d.get("file.path") == str(work / "marker") for d in docs):
            return False
        return any(str(work) in repr([d.get(k) for k in ("file.path", "process.executable", "process.args")])
                   for d in docs)

    mine = [a for a, _ in tap.alerts if ours(a)]
    return ([a for a in mine if not a.fields.get(SUMMARY_FIELD)], [a for a in mine if a.fields.get(SUMMARY_FIELD)])


def describe(job, alerts) -> str:
    schema = job.context.schema
    return "\n".join(f"{a.rule_id} {a.fields.get(COUNT_FIELD)} {a.events[-1].to_ecs(schema).get('process.entity_id')}: {a.events[-1].to_ecs(schema).get('process.args')} "
                     f"{a.events[-1].to_ecs(schema).get('file.path')}" for a in alerts)


def test_pip_install_in_a_tmp_venv_gives_at_most_3_alerts_with_the_repeats_counted(tmp_path, work):
    job, t, tap = start_run(write_profile(tmp_path))
    try:
        install(work)
        marker(job, tap, work)
    finally:
        stop(job, t)
    alerts, summaries = pip_records(job, tap, work)
    assert 1 <= len(alerts) <= 3, describe(job, alerts)
    assert {a.rule_id for a in alerts} == {CHMOD}, describe(job, alerts)
    suppressed = sum(a.fields.get(COUNT_FIELD, 0) for a in alerts + summaries)  # the install's own
    # pip marks each installed script executable: without suppression these were more alerts
    assert suppressed >= 1, describe(job, alerts + summaries)
    # every suppressed repeat is counted and reported (on a later alert of its key or in a summary
    # record); the run's count may hold repeats of other programs' alerts too
    assert job.suppressor.suppressed[CHMOD] >= suppressed
    assert len(summaries) <= len(alerts)
    metric = job.context.stats.extra["metrics"]["kestrel_alerts_suppressed_total"]
    assert metric["values"][(CHMOD,)] == job.suppressor.suppressed[CHMOD]
    written = (tmp_path / "alerts.jsonl").read_text()
    assert written.count(SUMMARY_FIELD) >= len(summaries)
    total = job.suppressor.suppressed[CHMOD]
    assert any(f"{total:,} {CHMOD}" in line for line in job.stop_summary("test"))


def test_a_shared_package_manager_exception_silences_pip_and_the_attack_chain_still_alerts(tmp_path, work):
    local = tmp_path / "local"
    local.mkdir()
    (local / "pack.toml").write_text(LOCAL_PACK.format(python=os.path.realpath(sys.executable)))
    job, t, tap = start_run(write_profile(tmp_path, [local]))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        rule = next(r for r in job.packset.rules if r.id == CHMOD)
        assert [e.list_name for e in rule.exceptions] == ["package_managers"]
        install(work)
        marker(job, tap, work)
        alerts, summaries = pip_records(job, tap, work)
        assert alerts == [] and summaries == [], describe(job, alerts)
        # the attack chain of plugins/sources-ebpf/tests/test_pipeline.py
        dropped = work / "x"
        subprocess.run(["cp", "/bin/bash", str(dropped)], check=True)
        subprocess.run(["chmod", "+x", str(dropped)], check=True)
        script = f"exec 3<>/dev/tcp/127.0.0.1/{port}; read -r line < /etc/shadow; exec 3>&-"
        subprocess.run([str(dropped), "-c", script], check=True)
        for rule_id in ATTACK:
            wait_for(lambda rule_id=rule_id: tap.by_rule(rule_id), 10, f"alert {rule_id}")
    finally:
        listener.close()
        stop(job, t)
    chmod_ev = [a.events[-1].to_ecs(job.context.schema) for a, _ in tap.by_rule(CHMOD)]
    assert any(e["file.path"] == str(dropped) and e["process.name"] == "chmod" for e in chmod_ev)
