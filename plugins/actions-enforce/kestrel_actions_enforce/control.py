"""The instant rollback: ``kestrel enforce off``.

A state file, ``<runtime_dir>/enforce.state`` ("on" / "off"), written
atomically by :func:`set_enforcement`.  Each running enforcer has a watcher
thread that reads the file every 10 ms (a few µs: cheap, needs no inotify,
and works whether the writer is the CLI, a script or a configuration
manager; stat-based change detection was not used because inode numbers are
reused and mtimes are coarse) and
applies a change to every mechanism at once; it then acknowledges in
``<runtime_dir>/enforce.applied.<pid>``, and :func:`set_enforcement` waits
for those acknowledgements, so the command returns once the rollback holds.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from typing import Callable

import click

log = logging.getLogger("kestrel.enforce")

DEFAULT_RUNTIME_DIR = "/run/kestrel"
STATE_FILE = "enforce.state"
ACK_PREFIX = "enforce.applied."
POLL_S = 0.01


def state_path(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, STATE_FILE)


def read_state(runtime_dir: str) -> bool:
    """True unless the state file says "off" (no file: enforcement on)."""
    try:
        with open(state_path(runtime_dir), encoding="ascii") as fh:
            return fh.read().strip() != "off"
    except OSError:
        return True


def _write_atomic(path: str, text: str) -> None:
    head, tail = os.path.split(path)
    tmp = os.path.join(head, f".{tail}.tmp")  # not matched by the acknowledgement glob
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def set_enforcement(enabled: bool, runtime_dir: str | os.PathLike[str] = DEFAULT_RUNTIME_DIR,
                    timeout_s: float = 5.0) -> list[int]:
    """Switch enforcement on or off for every Kestrel using ``runtime_dir``.

    Writes the state file, then waits (up to ``timeout_s``) until each running
    enforcer acknowledged it.

    :return: pids of the enforcers that acknowledged.
    :raise TimeoutError: a live enforcer did not apply the change in time.
    """
    runtime_dir = os.fspath(runtime_dir)
    os.makedirs(runtime_dir, exist_ok=True)
    want = "on" if enabled else "off"
    _write_atomic(state_path(runtime_dir), want + "\n")
    deadline = time.monotonic() + timeout_s
    acked: list[int] = []
    for ack in sorted(glob.glob(os.path.join(runtime_dir, ACK_PREFIX + "*"))):
        suffix = ack.rsplit(".", 1)[1]
        if not suffix.isdigit():
            continue
        pid = int(suffix)
        if not _alive(pid):
            continue
        while True:
            try:
                with open(ack, encoding="ascii") as fh:
                    if fh.read().strip() == want:
                        acked.append(pid)
                        break
            except OSError:
                break  # the enforcer stopped meanwhile
            if time.monotonic() > deadline:
                raise TimeoutError(f"enforcer pid {pid} did not apply enforcement {want} within {timeout_s} s")
            time.sleep(POLL_S)
    return acked


def status_text(runtime_dir: str) -> str:
    """What ``kestrel enforce status`` prints: the switch, where it comes
    from (a state file only exists once ``kestrel enforce on|off`` ran), and
    the running enforcers' acknowledgements."""
    path = state_path(runtime_dir)
    if os.path.exists(path):
        line = f"enforcement {'on' if read_state(runtime_dir) else 'off'} (state file {path})"
    else:
        line = (f"enforcement on: no state file yet ({path}): enforcement is at its profile default "
                f"(`kestrel enforce off` creates the file)")
    running = []
    for ack in sorted(glob.glob(os.path.join(runtime_dir, ACK_PREFIX + "*"))):
        suffix = ack.rsplit(".", 1)[1]
        if suffix.isdigit() and _alive(int(suffix)):
            try:
                with open(ack, encoding="ascii") as fh:
                    running.append(f"pid {suffix} ({fh.read().strip()})")
            except OSError:
                continue
    return line + ("\nrunning enforcers: " + ", ".join(running) if running else "\nno running enforcer")


class StateWatcher:
    """Polls the state file and calls ``apply(enabled)`` on each change."""

    def __init__(self, runtime_dir: str, apply: Callable[[bool], None], tick: Callable[[], None] | None = None) -> None:
        self.runtime_dir = runtime_dir
        os.makedirs(runtime_dir, exist_ok=True)
        self._apply = apply
        self._tick = tick
        self._ack = os.path.join(runtime_dir, f"{ACK_PREFIX}{os.getpid()}")
        self._stop = threading.Event()
        self.enabled = read_state(runtime_dir)
        self._thread = threading.Thread(target=self._loop, name="enforce-state", daemon=True)

    def start(self) -> None:
        _write_atomic(self._ack, ("on" if self.enabled else "off") + "\n")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            enabled = read_state(self.runtime_dir)
            if enabled != self.enabled:
                try:
                    self._apply(enabled)
                except Exception as exc:
                    log.error("enforce: applying enforcement %s failed: %s", enabled, exc)
                self.enabled = enabled
                _write_atomic(self._ack, ("on" if enabled else "off") + "\n")
            if self._tick is not None:
                self._tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            os.unlink(self._ack)
        except OSError:
            pass


@click.command("enforce")
@click.argument("state", type=click.Choice(["on", "off", "status"]))
@click.option("--runtime-dir", default=DEFAULT_RUNTIME_DIR, show_default=True, envvar="KESTREL_RUNTIME_DIR",
              help="Directory the running Kestrel watches (the enforce action's runtime_dir).")
@click.option("--timeout", "timeout_s", default=5.0, show_default=True, help="Seconds to wait for running enforcers.")
def enforce_command(state: str, runtime_dir: str, timeout_s: float) -> None:
    """Switch enforcement on or off at once (off: every rule only detects);
    status says which, and which running enforcers applied it."""
    if state == "status":
        click.echo(status_text(runtime_dir))
        return
    try:
        pids = set_enforcement(state == "on", runtime_dir, timeout_s)
    except TimeoutError as exc:  # exit 4 (docs/cli.md): a running enforcer that does not answer
        click.echo(f"kestrel: error: {exc}", err=True)
        raise SystemExit(4) from None
    except OSError as exc:  # e.g. /run/kestrel not writable without root: 4, not a traceback
        click.echo(f"kestrel: error: cannot write {state_path(runtime_dir)}: {exc.strerror or exc}", err=True)
        raise SystemExit(4) from None
    applied = f"applied by pid {', '.join(map(str, pids))}" if pids else "no running enforcer"
    click.echo(f"enforcement {state} ({applied})")
