"""The falco source end to end, as a user runs it: ``kestrel run --profile``
in a subprocess over a file, stdin, a followed file and Falco's http_output
(real POSTs to the listener), ``kestrel record`` + ``kestrel replay``.

The alerts are Falco json_output lines built by
``kestrel_sources_falco.testing.story`` (its docstring says what they are
based on: Falco's ``formats.cpp`` and falcosecurity/rules' outputs).
"""

from __future__ import annotations

import base64
import collections
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kestrel_core.testing import wait_for
from kestrel_sources_falco.testing import STORY_ALERTS, T0_NS, alert, line, story

RULES = Path(__file__).resolve().parents[3] / "rules" / "linux"
FINAL = re.compile(r"stopped \((\w+)\): read (\d+), processed (\d+), dropped (\d+), alerts (\d+)")


def write_profile(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(f"""
        [kestrel]
        plugins = ["sources-falco"]
        [rules]
        paths = ["{RULES}"]
        [[sources]]
        type = "falco"
    """) + textwrap.dedent(source) + textwrap.dedent("""
        [[sinks]]
        type = "jsonl"
        path = "alerts.jsonl"
    """))
    return path


def kestrel(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kestrel_core", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def alerts_in(path: Path) -> collections.Counter:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(json.loads(x)["rule"]["id"] for x in path.read_text().splitlines()
                               if x.strip() and "rule" in json.loads(x))


def final(stderr: str) -> dict:
    m = FINAL.search(stderr)
    assert m, stderr
    return {"reason": m.group(1), "read": int(m.group(2)), "processed": int(m.group(3)),
            "dropped": int(m.group(4)), "alerts": int(m.group(5))}


def story_with_bad_lines() -> tuple[list[str], list[str]]:
    """The story's lines with three malformed ones among them, and the errors expected for them."""
    lines = [line(doc) for doc in story()]
    lines.insert(2, "{not json")
    bad_pid = story()[0]
    bad_pid["output_fields"]["proc.pid"] = "4x"
    lines.insert(5, line(bad_pid))
    lines.insert(8, json.dumps({"output": "no rule here", "time": "2026-07-25T17:20:00.000000000Z"}))
    lines.insert(10, "17:20:00.000000000: Warning Sensitive file opened for reading by non-trusted program | "
                     "file=/etc/shadow evt_type=openat user=root")  # json_output left off
    return lines, [":3: invalid JSON", ":6: output_fields['proc.pid']: expected an integer, got '4x'",
                   ":9: missing 'rule' (not a Falco json_output alert)",
                   ":11: not JSON but Falco's text output: set json_output: true"]


def test_file_of_falco_lines_raises_the_linux_pack_alerts_and_reports_bad_lines(tmp_path):
    lines, errors = story_with_bad_lines()
    (tmp_path / "falco.jsonl").write_text("\n".join(lines) + "\n")
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, 'path = "falco.jsonl"')))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    for e in errors:
        assert f"falco.jsonl{e}" in err, err
    assert alerts_in(tmp_path / "alerts.jsonl") == STORY_ALERTS
    n = len(story())
    assert final(err) == {"reason": "eof", "read": n + 4, "processed": n, "dropped": 4,
                          "alerts": sum(STORY_ALERTS.values())}


def test_stdin_then_record_and_replay_give_the_same_alerts(tmp_path):
    lines, errors = story_with_bad_lines()
    data = "\n".join(lines) + "\n"
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, 'path = "-"')), stdin=subprocess.PIPE)
    _out, err = proc.communicate(data, timeout=120)
    assert proc.returncode == 0, err
    assert "<stdin>:3: invalid JSON" in err
    assert alerts_in(tmp_path / "alerts.jsonl") == STORY_ALERTS

    # record the profile's falco source into a .klog, then replay the log through the pack
    proc = kestrel("record", "--profile", str(tmp_path / "p.toml"), "-o", str(tmp_path / "falco.klog"),
                   stdin=subprocess.PIPE)
    _out, err = proc.communicate(data, timeout=120)
    assert proc.returncode == 0, err
    assert f"recorded {len(story())} events" in err and "dropped 4" in err
    proc = kestrel("replay", str(tmp_path / "falco.klog"), "--rules", str(RULES), "-o", str(tmp_path / "r.jsonl"))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert alerts_in(tmp_path / "r.jsonl") == STORY_ALERTS


class Stderr:
    """A child's stderr lines, read on a thread, so a test can wait for one."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for text in proc.stderr:
            self.lines.append(text)

    def search(self, pattern: str) -> re.Match | None:
        return next((m for m in map(re.compile(pattern).search, list(self.lines)) if m), None)

    def text(self) -> str:
        self._thread.join(timeout=30)
        return "".join(self.lines)


def stop(proc: subprocess.Popen, stderr: Stderr) -> str:
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = stderr.text()
    assert proc.returncode == 0, text
    return text


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "falcosecurity/falco",
                                          **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_listener(tmp_path: Path, source: str) -> tuple[subprocess.Popen, Stderr, str]:
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, source)), stdin=subprocess.DEVNULL)
    stderr = Stderr(proc)
    try:
        m = wait_for(lambda: stderr.search(r"listening for Falco's http_output on (http://\S+/)")
                     or proc.poll() is not None, 60, "the falco listener")
    except AssertionError:
        proc.kill()
        raise
    assert proc.poll() is None, stderr.text()
    return proc, stderr, m.group(1)


def test_http_output_posts_raise_the_alerts_and_malformed_posts_get_400(tmp_path):
    proc, stderr, url = start_listener(tmp_path, 'listen = "127.0.0.1:0"')
    try:
        docs = story()
        statuses = [post(url, line(doc).encode())[0] for doc in docs[:3]]
        status, reply = post(url, b"{not json")
        assert status == 400 and "http post 4" in reply["message"]
        assert post(url, json.dumps({"output": "x", "time": "2026-07-25T17:20:00Z"}).encode())[0] == 400
        # several lines in one post: the good ones are taken, the bad one named
        body = (line(docs[3]) + "\n" + "[1]" + "\n" + line(docs[4]) + "\n").encode()
        status, reply = post(url, body)
        assert status == 400 and "http post 6 line 2" in reply["message"]
        statuses += [post(url, line(doc).encode())[0] for doc in docs[5:]]
        assert statuses == [200] * (len(docs) - 2)
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url, timeout=10)
        assert exc.value.code == 405
        wait_for(lambda: alerts_in(tmp_path / "alerts.jsonl") == STORY_ALERTS, 30, "the story's alerts")
    finally:
        text = stop(proc, stderr)
    assert "http post 4: invalid JSON" in text
    assert "http post 5: missing 'rule'" in text
    assert "http post 6 line 2: expected a JSON object" in text
    assert final(text) == {"reason": "signal", "read": len(story()) + 3, "processed": len(story()), "dropped": 3,
                           "alerts": sum(STORY_ALERTS.values())}


def test_http_listener_off_loopback_needs_a_token(tmp_path):
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, 'listen = "0.0.0.0:0"')))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "listen 0.0.0.0:0 is not loopback, so posts need a token" in err, err

    proc, stderr, url = start_listener(tmp_path, 'listen = "0.0.0.0:0"\ntoken_file = "falco.token"')
    try:
        token_file = tmp_path / "falco.token"
        assert os.stat(token_file).st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        url = url.replace("0.0.0.0", "127.0.0.1")
        doc = line(story()[0]).encode()
        assert post(url, doc)[0] == 401
        assert post(url, doc, {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
        # what libcurl sends for Falco's http_output url http://falco:TOKEN@host:port/
        basic = base64.b64encode(f"falco:{token}".encode()).decode()
        assert post(url, doc, {"Authorization": f"Basic {basic}"})[0] == 200
        later = story(t0_ns=T0_NS + 10**9)[0]  # another read (the same alert again would be merged into the first)
        assert post(url, line(later).encode(), {"Authorization": f"Bearer {token}"})[0] == 200
        wait_for(lambda: alerts_in(tmp_path / "alerts.jsonl")["kestrel.linux.shadow_file_open"] == 2, 30,
                 "two shadow_file_open alerts")
    finally:
        text = stop(proc, stderr)
    assert final(text)["read"] == 2  # refused posts are not events


def test_followed_file_is_read_as_falco_appends_to_it(tmp_path):
    lines = [line(doc) for doc in story()]
    events = tmp_path / "events.txt"  # Falco's file_output
    events.write_text(lines[0] + "\n")
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, 'path = "events.txt"\nfollow = true')),
                   stdin=subprocess.DEVNULL)
    stderr = Stderr(proc)
    try:
        wait_for(lambda: alerts_in(tmp_path / "alerts.jsonl")["kestrel.linux.shadow_file_open"] == 1, 60,
                 "the first line's alert")
        with events.open("a") as fh:
            fh.write("\n".join(lines[1:]) + "\n{half a line")
        wait_for(lambda: alerts_in(tmp_path / "alerts.jsonl") == STORY_ALERTS, 60, "the appended lines' alerts")
        with events.open("a") as fh:
            fh.write(" and the rest}\n")  # the partial line completes: one line, malformed
        wait_for(lambda: stderr.search(rf"events.txt:{len(lines) + 1}: invalid JSON"), 60, "the completed line")
        # rotation: the file moved away ending inside a line, a new one with one alert
        with events.open("a") as fh:
            fh.write("{cut")
        events.rename(tmp_path / "events.txt.1")
        events.write_text(line(story(T0_NS + 10**9)[0]) + "\n")
        wait_for(lambda: alerts_in(tmp_path / "alerts.jsonl")["kestrel.linux.shadow_file_open"] == 2, 60,
                 "the alert from the new file")
    finally:
        text = stop(proc, stderr)
    assert f"events.txt:{len(lines) + 2}: line cut off where the file was replaced" in text
    assert "events.txt was replaced or truncated; reading it from the start" in text
    assert final(text) == {"reason": "signal", "read": len(lines) + 3, "processed": len(lines) + 1, "dropped": 2,
                           "alerts": sum(STORY_ALERTS.values()) + 1}


@pytest.mark.parametrize("source, message", [
    ('path = "x.jsonl"\nlisten = "127.0.0.1:2801"', "give exactly one of path"),
    ("follow = true\npath = \"-\"", "follow needs a file path"),
    ('listen = "127.0.0.1"', "listen '127.0.0.1': expected host:port"),
    ('path = "-"\n[sources.rule_actions]\n"Write below etc" = "write"', "rule_actions['Write below etc'] must be"),
])
def test_bad_settings_are_located_profile_errors(tmp_path, source, message):
    proc = kestrel("profile", "check", str(write_profile(tmp_path, source)))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert re.search(r"p\.toml:\d+:\d+: error: .*" + re.escape(message), err), err


def test_falco_drop_reports_become_losses_that_flag_overlapping_sequences(tmp_path):
    """Falco's own alert for kernel-side drops (rule "Falco internal: syscall
    event drop", source internal, n_drops as a string: falco
    userspace/falco/event_drops.cpp and falco_outputs.cpp) is a loss record,
    not an event: counted as lost, and a sequence whose window overlaps the
    second it covers is flagged incomplete_due_to_loss."""
    docs = story()
    connect = next(i for i, d in enumerate(docs) if d["output_fields"].get("evt.type") == "connect")
    shell_ns = docs[connect + 1]["output_fields"]["evt.time"]
    drop = {"hostname": "web-1", "output": "Falco internal: syscall event drop. 17 system calls dropped in last second.",
            "output_fields": {"n_drops": "17", "n_evts": "90211", "n_drops_buffer_total": "17",
                              "ebpf_enabled": "1"},
            "priority": "Debug", "rule": "Falco internal: syscall event drop", "source": "internal",
            "time": docs[connect + 1]["time"]}
    assert drop["time"].endswith(f"{shell_ns % 10**9:09d}Z")
    lines = [line(d) for d in docs[:connect]] + [line(drop)] + [line(d) for d in docs[connect:]]
    (tmp_path / "falco.jsonl").write_text("\n".join(lines) + "\n")
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, 'path = "falco.jsonl"')))
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "lost 17 events (falco_syscall_drops)" in err, err
    alerts = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert collections.Counter(a["rule"]["id"] for a in alerts) == STORY_ALERTS
    assert {a["rule"]["id"] for a in alerts if a["incomplete_due_to_loss"]} == {
        "kestrel.linux.seq_interpreter_connect_then_shell"}
    assert final(err) == {"reason": "eof", "read": len(docs), "processed": len(docs), "dropped": 0,
                          "alerts": sum(STORY_ALERTS.values())}


@pytest.mark.parametrize("window, alerts", [(50, 1), (0, 2)])
def test_alerts_of_several_falco_rules_for_one_syscall_become_one_event(tmp_path, window, alerts):
    """With Falco's ``rule_matching: all`` one open of /etc/shadow is reported
    by the default rule and by the catch-all rule, one after the other, with
    the same time: one event carrying both rules' fields (the pid from the
    catch-all), so shadow_file_open fires once; merge_window_ms = 0 keeps two."""
    default = story()[0]
    catch_all = alert("Kestrel file open", "Informational", "kestrel open", {
        "evt.type": "openat", "evt.res": "SUCCESS", "fd.name": "/etc/shadow", "fd.type": "file",
        "evt.arg.flags": "O_RDONLY|O_CLOEXEC", "proc.name": "cat", "proc.exepath": "/usr/bin/cat", "proc.pid": 4300,
        "proc.ppid": 4000}, default["output_fields"]["evt.time"], tags=("kestrel", "filesystem"))
    (tmp_path / "falco.jsonl").write_text(line(default) + "\n" + line(catch_all) + "\n")
    proc = kestrel("run", "--profile", str(write_profile(tmp_path, f'path = "-"\nmerge_window_ms = {window}')),
                   stdin=subprocess.PIPE)
    _out, err = proc.communicate((tmp_path / "falco.jsonl").read_text(), timeout=120)
    assert proc.returncode == 0, err
    got = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["rule"]["id"] for a in got] == ["kestrel.linux.shadow_file_open"] * alerts
    if alerts == 1:
        event = got[0]["events"][0]
        assert event["process.pid"] == 4300 and event["process.parent.name"] == "bash"  # from each of the two
        assert event["falco.rules"] == ["Read sensitive file untrusted", "Kestrel file open"]
        assert event["falco.priority"] == "Warning"
    assert final(err) == {"reason": "eof", "read": 2, "processed": alerts, "dropped": 2 - alerts,
                          "alerts": alerts}


def test_bundled_profiles_check_and_run_the_story_from_stdin():
    profiles = RULES.parents[1] / "profiles"
    for name in ("falco.toml", "falco-http.toml"):
        proc = kestrel("profile", "check", str(profiles / name))
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    proc = kestrel("run", "--profile", str(profiles / "falco.toml"), stdin=subprocess.PIPE)
    _out, err = proc.communicate("".join(line(d) + "\n" for d in story()), timeout=120)
    assert proc.returncode == 0, err
    assert final(err)["alerts"] == sum(STORY_ALERTS.values())


def test_http_listener_answers_expect_100_continue_like_libcurl_wants(tmp_path):
    """libcurl (Falco's http_output) may send ``Expect: 100-continue`` and hold
    the body back until the server says so (or a second passes): the listener
    answers at once, then takes the body."""
    import socket

    proc, stderr, url = start_listener(tmp_path, 'listen = "127.0.0.1:0"')
    try:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        body = line(story()[0]).encode()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: falcosecurity/falco\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         f"Expect: 100-continue\r\n\r\n".encode())
            interim = sock.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            sock.sendall(body)
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, reply
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply
        wait_for(lambda: alerts_in(tmp_path / "alerts.jsonl")["kestrel.linux.shadow_file_open"] == 1, 30,
                 "the alert")
    finally:
        stop(proc, stderr)


def test_http_listener_caps_its_connections(tmp_path):
    """Connections beyond max_connections get 503 and are closed (each served
    one holds a thread); a freed slot serves again; the refusals are logged."""
    import socket

    proc, stderr, url = start_listener(tmp_path, 'listen = "127.0.0.1:0"\nmax_connections = 2')
    try:
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        idle = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
        # the two idle connections hold both slots once the server has accepted them
        def refused() -> bool:
            with socket.create_connection((host, int(port)), timeout=10) as extra:
                return extra.recv(4096).startswith(b"HTTP/1.1 503")
        wait_for(refused, 30, "a refused third connection")
        for sock in idle:
            sock.close()

        def served() -> bool:
            try:
                return post(url, line(story()[0]).encode())[0] == 200
            except (urllib.error.URLError, ValueError, ConnectionError):
                return False
        wait_for(served, 30, "a post served once the slots are free")
    finally:
        text = stop(proc, stderr)
    assert re.search(r"refused \d+ connections over max_connections \(2\)", text), text
