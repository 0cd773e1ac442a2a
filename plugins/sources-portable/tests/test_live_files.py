"""File events on the real kernel (fanotify fd + FID mode), by another process
(the source ignores its own), under a fresh temporary directory."""

from __future__ import annotations

import os
import subprocess

from kestrel_sources_portable.testing import needs_connector, needs_fanotify, needs_root


@needs_root
@needs_connector
@needs_fanotify
def test_create_write_chmod_rename_unlink_exec(live, tmp_path):
    d = str(tmp_path)
    src = live(file_paths=[d])
    assert {"create", "open_write", "chmod", "rename", "unlink", "open"} <= set(src.source.coverage.seen)
    # Two steps: attributes are stat'ed when an event is read, so a chown
    # right behind the write it follows could be read as part of that state.
    steps = f"cp /bin/sh {d}/tool && chmod 0750 {d}/tool && echo hi > {d}/note && mv {d}/note {d}/note2 && echo $$"
    first = subprocess.run(["/bin/sh", "-c", steps], cwd=d, check=True, capture_output=True, text=True)
    first_pid = int(first.stdout)

    def on(action: str, path: str):
        return src.wait_for(lambda r: r["event.action"] == action and r.get("file.path") == path,
                            what=f"{action} {path}")

    renamed = on("rename", f"{d}/note2")
    script = f"chown 1:1 {d}/note2 && : > {d}/gone && rm {d}/gone && exec {d}/tool -c 'read line' tool-arg"
    proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.PIPE, cwd=d)
    try:
        created = on("creation", f"{d}/tool")
        written = on("open_write", f"{d}/tool")
        chmod = on("chmod", f"{d}/tool")
        # fd-mode paths are read when the event is: the file may be renamed by then
        note = src.wait_for(lambda r: r["event.action"] == "open_write" and r.get("file.path") in (f"{d}/note",
                            f"{d}/note2"), what="open_write of note")
        chown = on("chown", f"{d}/note2")
        unlinked = on("deletion", f"{d}/gone")
        execd = src.wait_for(lambda r: r["event.action"] == "exec" and r.get("process.pid") == proc.pid
                             and r.get("process.executable") == f"{d}/tool", what="exec of the copied shell")
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)

    assert created["event.category"] == ["file"] and created["event.type"] == ["creation"]
    assert created["file.name"] == "tool" and created["file.directory"] == d
    assert created["process.name"] == "cp" and created["process.parent.pid"] == first_pid
    assert written["event.type"] == ["change"] and written["process.name"] == "cp"
    assert chmod["file.mode"] == "750" and chmod["process.name"] == "chmod"
    # chmod is short-lived: its args are there unless it exited before /proc was read
    assert chmod.get("process.args", ["chmod", "0750", f"{d}/tool"]) == ["chmod", "0750", f"{d}/tool"]
    assert note["process.pid"] == first_pid  # the shell's own redirection
    assert renamed["file.Ext.original.path"] == f"{d}/note" and renamed["process.name"] == "mv"
    assert chown["file.owner"] == "1"
    assert unlinked["event.type"] == ["deletion"] and unlinked["process.name"] == "rm"
    assert execd["process.args"] == [f"{d}/tool", "-c", "read line", "tool-arg"]
    assert execd["process.parent.pid"] == os.getpid()


@needs_root
@needs_connector
@needs_fanotify
def test_open_of_a_credential_file_names_the_reader(live, tmp_path):
    secret = tmp_path / "secret.key"
    secret.write_text("k")
    src = live(file_paths=[str(tmp_path)])
    proc = subprocess.Popen(["/bin/sh", "-c", f"cat {secret} > /dev/null; read line"], stdin=subprocess.PIPE)
    try:
        rec = src.wait_for(lambda r: r["event.action"] == "open" and r.get("file.path") == str(secret),
                           what="open of the key file")
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert rec["event.type"] == ["access"] and rec["file.extension"] == "key"
    assert rec["process.name"] == "cat" and rec["process.parent.pid"] == proc.pid


@needs_root
@needs_connector
@needs_fanotify
def test_touch_is_not_a_chmod(live, tmp_path):
    """Once the file's state is known (here: from its creation), a change of
    times only is dropped.  The attributes are read when the event is, so
    the test lets each step be read before the next (a sentinel file created
    after the touch comes later in the same fanotify queue)."""
    target, sentinel = tmp_path / "t", tmp_path / "sentinel"
    src = live(file_paths=[str(tmp_path)])

    def created(path):
        return src.wait_for(lambda r: r["event.action"] == "creation" and r.get("file.path") == str(path),
                            what=f"create {path}")

    subprocess.run(["/bin/sh", "-c", f": > {target}"], check=True)
    created(target)
    subprocess.run(["/bin/sh", "-c", f"touch {target}; : > {sentinel}"], check=True)
    created(sentinel)
    assert not [r for r in src.snapshot() if r["event.action"] == "chmod" and r.get("file.path") == str(target)]
    subprocess.run(["/bin/sh", "-c", f"chmod 700 {target}"], check=True)
    rec = src.wait_for(lambda r: r["event.action"] == "chmod" and r.get("file.path") == str(target), what="chmod")
    assert rec["file.mode"] == "700" and rec.get("process.name", "chmod") == "chmod"
