"""Import and compile through bcc, with every failure turned into a reason.

bcc comes from Debian (python3-bpfcc), found in this environment or the
system's dist-packages (:func:`kestrel_core.host.import_system_module`);
PyPI's ``bcc`` is unrelated.  bcc reads tracepoint formats from tracefs,
which is mounted first when a fresh boot has left it out.
It compiles at load time against kernel headers: the merged Debian tree
the install script builds is used unless ``BCC_KERNEL_SOURCE`` is set.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from importlib import resources
from typing import Any, Iterator

from kestrel_core import host

MERGED_HEADERS = "/var/lib/kestrel/kernel-headers"


class Unavailable(RuntimeError):
    """A mechanism cannot work on this host; the message is the reason."""


def bcc_module() -> Any:
    """The ``bcc`` module, or Unavailable naming what is missing."""
    if os.geteuid() != 0:
        raise Unavailable("BPF programs need root")
    if "BCC_KERNEL_SOURCE" not in os.environ and os.path.isdir(MERGED_HEADERS):
        os.environ["BCC_KERNEL_SOURCE"] = MERGED_HEADERS
    if host.ensure_tracefs() is None:
        raise Unavailable("no tracefs: it could not be mounted at /sys/kernel/tracing")
    try:
        return host.import_system_module("bcc", "python3-bpfcc libbpfcc")
    except ImportError as exc:
        raise Unavailable(f"bcc is not importable ({exc})") from None


def program_text(name: str) -> str:
    """The C source of one of this package's BPF programs (``bpf/<name>.c``)."""
    return resources.files("kestrel_actions_enforce").joinpath("bpf", f"{name}.c").read_text(encoding="utf-8")


def compile_program(text: str, cflags: list[str] | None = None, quiet: bool = False) -> Any:
    """``bcc.BPF(text=...)``; a compile or load failure becomes Unavailable with
    the errno of the failing bpf() call (bcc's own message hides it).  ``quiet``
    (for probes expected to fail): what libbcc prints on stderr goes into the
    error instead of onto the user's terminal."""
    bcc = bcc_module()
    ctypes.set_errno(0)
    with _stderr_captured(quiet) as said:
        try:
            return bcc.BPF(text=text.encode(), cflags=cflags or [])
        except Exception as exc:
            err = ctypes.get_errno()
            failure = exc
    detail = f"errno {err} ({errnoname(err)}: {os.strerror(err)})" if err else str(failure)
    printed = " ".join(said).strip()
    raise Unavailable(f"{detail}; bcc said: {printed or failure}") from None


@contextlib.contextmanager
def _stderr_captured(active: bool) -> Iterator[list[str]]:
    """Point fd 2 at a temporary file for the block (libbcc writes there from C);
    the yielded list holds the lines written once the block has ended."""
    lines: list[str] = []
    if not active:
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def errnoname(err: int) -> str:
    import errno

    return errno.errorcode.get(err, str(err))
