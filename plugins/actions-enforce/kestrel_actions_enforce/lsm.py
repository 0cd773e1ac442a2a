"""BPF-LSM rung: the strongest mechanism (in-kernel decision at the LSM hook,
EPERM, no user-space round trip), probed by loading and attaching a two-
instruction ``bprm_check_security`` program (``return 0``) with plain bpf(2)
calls: its attach point is the BTF id of ``bpf_lsm_bprm_check_security``, so
no compiler is needed and none enters the agent.

On the kernels Kestrel is built on, loading any BPF trampoline program fails
with EPERM (PLATFORM.md), so the probe reports the exact errno and the ladder
moves to the next rung.  The enforcement programs for this rung are not
written: we have no kernel to test them on, and an untested deny path is
worse than an honest "unavailable" (``install`` says so).
"""

from __future__ import annotations

import ctypes
import errno
import os

from kestrel_core.interfaces import Probe
from kestrel_sources_ebpf import bpfsys
from kestrel_sources_ebpf.btf import BTF, BTFError, VMLINUX

from .base import EnforcementPath
from .bccload import Unavailable

BPF_PROG_TYPE_LSM, BPF_LSM_MAC = 29, 27
HOOK = "bpf_lsm_bprm_check_security"
RETURN_0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit


class _LsmProgLoad(ctypes.Structure):
    """``union bpf_attr`` for BPF_PROG_LOAD up to ``attach_btf_id``."""
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
                ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
                ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("func_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("line_info", ctypes.c_uint64), ("line_info_cnt", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32)]


def lsm_listed() -> str | None:
    """The active LSM list, or None if securityfs is not mounted."""
    try:
        with open("/sys/kernel/security/lsm", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _fail(step: str, exc: OSError) -> Unavailable:
    err = exc.errno or 0
    return Unavailable(f"{step}: errno {err} ({errno.errorcode.get(err, err)}: {os.strerror(err)})")


def load_and_attach_probe() -> None:
    """Load the ``return 0`` LSM program, attach it, detach it; Unavailable with the errno otherwise."""
    if os.geteuid() != 0:
        raise Unavailable("BPF programs need root")
    try:
        btf_id = BTF.load().func_id(HOOK)
    except (BTFError, OSError) as exc:
        raise Unavailable(f"no {HOOK} in the kernel's BTF ({exc})") from None
    insns = ctypes.create_string_buffer(RETURN_0, len(RETURN_0))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = _LsmProgLoad(prog_type=BPF_PROG_TYPE_LSM, insn_cnt=len(RETURN_0) // 8, insns=ctypes.addressof(insns),
                        license=ctypes.addressof(lic), prog_name=b"kestrel_probe",
                        expected_attach_type=BPF_LSM_MAC, attach_btf_id=btf_id)
    try:
        prog_fd = bpfsys.bpf(bpfsys.BPF_PROG_LOAD, attr, "loading the LSM probe")
    except OSError as exc:
        raise _fail("loading", exc) from None
    try:
        link = bpfsys.bpf(bpfsys.BPF_RAW_TRACEPOINT_OPEN, bpfsys._RawTp(0, prog_fd, 0), "attaching the LSM probe")
        os.close(link)
    except OSError as exc:
        raise _fail("attaching", exc) from None
    finally:
        os.close(prog_fd)


class BpfLsmPath(EnforcementPath):
    NAME = "bpf-lsm"
    ACTIONS = frozenset({"deny-exec", "deny-open", "deny-connect"})

    @classmethod
    def probe(cls) -> Probe:
        if not os.path.exists(VMLINUX):
            return Probe.missing("no kernel BTF (/sys/kernel/btf/vmlinux): BPF-LSM needs it")
        lsms = lsm_listed()
        if lsms is not None and "bpf" not in lsms.split(","):
            return Probe.missing(f"'bpf' is not an active LSM (lsm={lsms})")
        try:
            load_and_attach_probe()
        except Unavailable as exc:
            return Probe.missing(f"loading an LSM program (bprm_check_security) failed: {exc}")
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
