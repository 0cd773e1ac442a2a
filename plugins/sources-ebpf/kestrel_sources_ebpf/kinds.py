"""The event kinds the kernel side reports, with their ECS classification.

``event.action`` values are Elastic Defend's where Defend has the event
(``end``, ``creation``, ``deletion``, ``connection_attempted``,
``connection_accepted``, ``uid_change``, ``gid_change``, ``load_module``;
docs/ecs-fidelity.md); kinds Defend does not report on Linux keep Kestrel's
names (``open``, ``open_write``, ``chmod``, ``chown``, ``bind``, ...).  Several
kinds may share an action (the setuid family): push-down enables all of them.

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
    (3, "exit", "process", ("end",), "end"),
    (4, "open_read", "file", ("access",), "open"),
    (5, "open_write", "file", ("change",), "open_write"),
    (6, "create", "file", ("creation",), "creation"),
    (7, "unlink", "file", ("deletion",), "deletion"),
    (8, "rename", "file", ("change",), "rename"),
    (9, "chmod", "file", ("change",), "chmod"),
    (10, "chown", "file", ("change",), "chown"),
    (11, "connect", "network", ("connection", "start"), "connection_attempted"),
    (12, "accept", "network", ("connection", "start"), "connection_accepted"),
    (13, "bind", "network", ("start",), "bind"),
    (14, "ptrace", "process", ("access",), "ptrace"),
    (15, "memfd_create", "process", ("info",), "memfd_create"),
    (16, "setuid", "process", ("change",), "uid_change"),
    (17, "setgid", "process", ("change",), "gid_change"),
    (18, "setreuid", "process", ("change",), "uid_change"),
    (19, "setregid", "process", ("change",), "gid_change"),
    (20, "setresuid", "process", ("change",), "uid_change"),
    (21, "setresgid", "process", ("change",), "gid_change"),
    (22, "init_module", "driver", ("start",), "load_module"),
    (23, "finit_module", "driver", ("start",), "load_module"),
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
