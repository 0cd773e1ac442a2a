"""The event kinds the kernel side reports, with their ECS classification.

Numbers match the ``K_*`` macros in probes.bpf.c.  Push-down (``pushdown.py``)
decides per kind whether any loaded rule could want it.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Kind:
    code: int
    name: str
    category: str
    types: tuple[str, ...]
    action: str


_TABLE = (
    (1, "exec", "process", ("start",), "exec"),
    (2, "fork", "process", ("start",), "fork"),
    (3, "exit", "process", ("end",), "exit"),
    (4, "open_read", "file", ("access",), "open"),
    (5, "open_write", "file", ("change",), "open_write"),
    (6, "create", "file", ("creation",), "create"),
    (7, "unlink", "file", ("deletion",), "unlink"),
    (8, "rename", "file", ("change",), "rename"),
    (9, "chmod", "file", ("change",), "chmod"),
    (10, "chown", "file", ("change",), "chown"),
    (11, "connect", "network", ("connection", "start"), "connect"),
    (12, "accept", "network", ("connection", "start"), "accept"),
    (13, "bind", "network", ("start",), "bind"),
    (14, "ptrace", "process", ("access",), "ptrace"),
    (15, "memfd_create", "process", ("info",), "memfd_create"),
    (16, "setuid", "process", ("change",), "setuid"),
    (17, "setgid", "process", ("change",), "setgid"),
    (18, "setreuid", "process", ("change",), "setreuid"),
    (19, "setregid", "process", ("change",), "setregid"),
    (20, "setresuid", "process", ("change",), "setresuid"),
    (21, "setresgid", "process", ("change",), "setresgid"),
    (22, "init_module", "driver", ("start",), "init_module"),
    (23, "finit_module", "driver", ("start",), "finit_module"),
    (24, "mmap_exec", "process", ("change",), "mmap_exec"),
    (25, "mprotect_exec", "process", ("change",), "mprotect_exec"),
)
KINDS: dict[int, Kind] = {row[0]: Kind(*row) for row in _TABLE}
BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS.values()}
K_CHDIR = 26
"""chdir/fchdir: not an event, it keeps the process table's working directories right."""
K_MAX = K_CHDIR + 1
FILE_PATH_KINDS = frozenset(k.code for k in KINDS.values() if k.category == "file")
"""Kinds whose ``file.path`` the kernel can filter by prefix."""
