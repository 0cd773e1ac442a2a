"""BPF-LSM rung: the strongest mechanism (in-kernel decision at the LSM hook,
EPERM, no user-space round trip), probed by loading a tiny
``bprm_check_security`` program through bcc's ``LSM_PROBE``.

On the kernels Kestrel is built on, loading any BPF trampoline program fails
with EPERM (PLATFORM.md), so the probe reports the exact errno and the ladder
moves to the next rung.  The enforcement programs for this rung are not
written: we have no kernel to test them on, and an untested deny path is
worse than an honest "unavailable" (``install`` says so).
"""

from __future__ import annotations

import os

from kestrel_core.interfaces import Probe

from .base import EnforcementPath
from .bccload import Unavailable, compile_program

PROBE_PROGRAM = "LSM_PROBE(bprm_check_security, struct linux_binprm *bprm) { return 0; }"


def lsm_listed() -> str | None:
    """The active LSM list, or None if securityfs is not mounted."""
    try:
        with open("/sys/kernel/security/lsm", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


class BpfLsmPath(EnforcementPath):
    NAME = "bpf-lsm"
    ACTIONS = frozenset({"deny-exec", "deny-open", "deny-connect"})

    @classmethod
    def probe(cls) -> Probe:
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            return Probe.missing("no kernel BTF (/sys/kernel/btf/vmlinux): BPF-LSM needs it")
        lsms = lsm_listed()
        if lsms is not None and "bpf" not in lsms.split(","):
            return Probe.missing(f"'bpf' is not an active LSM (lsm={lsms})")
        try:
            prog = compile_program(PROBE_PROGRAM, quiet=True)  # bcc attaches LSM_PROBE programs while loading
        except Unavailable as exc:
            return Probe.missing(f"loading an LSM program (bprm_check_security) failed: {exc}")
        prog.cleanup()
        return Probe.ok("LSM program bprm_check_security loads and attaches")

    def install(self) -> None:
        raise Unavailable("BPF-LSM enforcement programs are not implemented (no kernel here loads LSM programs "
                          "to test them on)")

    def set_enabled(self, enabled: bool) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass
