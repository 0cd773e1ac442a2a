"""The baseline on live kernel events: a real run with the ebpf source (and
the default Linux pack, whose push-down would otherwise drop events only the
detector reads) learns what a program does, then flags its new child and its
new peer, and not the repeats.  The program is a copy of bash under a name
nothing else on the host uses, so the host's other activity cannot interfere."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ebpf_testing = pytest.importorskip("kestrel_sources_ebpf.testing",
                                   reason="needs the sources-ebpf plugin (pip install -e plugins/sources-ebpf)")
needs_kernel, start_run, wait_for, write_profile = (ebpf_testing.needs_kernel, ebpf_testing.start_run,
                                                    ebpf_testing.wait_for, ebpf_testing.write_profile)

pytestmark = needs_kernel

RULES = Path(__file__).resolve().parents[3] / "rules" / "linux"


@pytest.fixture
def program_dir():
    d = Path(tempfile.mkdtemp(prefix="kestrel-baseline-", dir="/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _listener() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    return s, s.getsockname()[1]


def test_live_run_learns_then_flags_a_new_child_and_peer(tmp_path, program_dir):
    name = f"klbp{os.getpid() % 100000}"  # comm is cut at 15 characters
    prog = program_dir / name
    shutil.copy("/bin/bash", prog)
    alerts_file = tmp_path / "alerts.jsonl"
    profile = write_profile(tmp_path / "p.toml", RULES, f'type = "jsonl"\npath = "{alerts_file}"')
    profile.write_text(profile.read_text().replace('plugins = ["sources-ebpf"]',
                                                   'plugins = ["sources-ebpf", "detector-baseline"]')
                       + f'\n[[detectors]]\ntype = "baseline"\nsnapshot = "{tmp_path / "b.json"}"\nwarmup = "4s"\n')
    job, t, tap = start_run(profile)

    def mine(rule: str) -> list:
        return [al for al, _ in tap.by_rule(rule) if al.fields["baseline.process"] == name]

    det = job.detectors.detectors[0]
    a, port_a = _listener()
    b, port_b = _listener()
    try:
        def learned() -> bool:
            for scope in list(det.scopes.values()):
                node = scope.processes.get(name)
                if node and "true" in node["children"] and f"127.0.0.1:{port_a}" in node["peers"]:
                    return scope.learning  # learned while still warming up
            return False

        subprocess.run([str(prog), "-c", f"/bin/true; /bin/true; exec 3<>/dev/tcp/127.0.0.1/{port_a}"], check=True)
        wait_for(learned, 20, f"{name}'s child and peer to be learned during the warm-up")
        scope = next(s for s in list(det.scopes.values()) if name in s.processes)
        def warmed_up() -> bool:
            # the warm-up ends on event time: a quiet host may send nothing, so make an event
            subprocess.run(["/bin/true"], check=True)
            return not scope.learning

        wait_for(warmed_up, 30, "the warm-up (4 s of event time) to end")
        subprocess.run([str(prog), "-c", f"/bin/true; /bin/id; exec 3<>/dev/tcp/127.0.0.1/{port_a}; "
                                         f"exec 4<>/dev/tcp/127.0.0.1/{port_b}"], check=True,
                       stdout=subprocess.DEVNULL)
        wait_for(lambda: mine("baseline.new_peer"), 20, "the new peer alert")
    finally:
        a.close()
        b.close()
        job.request_stop("test")
        t.join(60)
    assert not t.is_alive(), "run did not stop"
    # events are processed in order: the peer alert came after every earlier event of the program
    assert [al.fields["baseline.new"] for al in mine("baseline.new_child")] == ["id"]
    assert [al.fields["baseline.new"] for al in mine("baseline.new_peer")] == [f"127.0.0.1:{port_b}"]
    child = mine("baseline.new_child")[0]
    assert child.fields["baseline.reason"].startswith(f"{name} spawned id; learned children of {name}: true(")
    assert child.events[0].to_ecs(job.context.schema)["process.parent.name"] == name
