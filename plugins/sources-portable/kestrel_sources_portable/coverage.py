"""Which live-source event kinds the portable source can see, and why not.

The kinds are those of the live-source contract (shared with sources-ebpf);
``Coverage`` is computed from the mechanisms actually chosen at start, so
the log and ``capabilities()`` say exactly what this run sees.
"""

from __future__ import annotations

import attrs

# kind -> event.category
KINDS: dict[str, str] = {
    "exec": "process", "fork": "process", "exit": "process", "setuid": "process", "setgid": "process",
    "ptrace": "process", "memfd_create": "process", "mmap_exec": "process", "mprotect_exec": "process",
    "open": "file", "open_write": "file", "create": "file", "unlink": "file", "rename": "file",
    "chmod": "file", "chown": "file",
    "connect": "network", "accept": "network", "bind": "network",
    "init_module": "driver", "finit_module": "driver",
}

NEVER: dict[str, str] = {
    "memfd_create": "no eBPF: no syscall tracing",
    "mmap_exec": "no eBPF: no syscall tracing",
    "mprotect_exec": "no eBPF: no syscall tracing",
    "init_module": "no eBPF: no syscall tracing",
    "finit_module": "no eBPF: no syscall tracing",
}


@attrs.define
class Coverage:
    seen: dict[str, str] = attrs.Factory(dict)
    """kind -> mechanism that produces it."""
    missing: dict[str, str] = attrs.Factory(dict)
    """kind -> why it is not visible."""
    notes: list[str] = attrs.Factory(list)
    """Caveats of the chosen mechanisms (partial visibility)."""

    def see(self, kinds: list[str], mechanism: str) -> None:
        for kind in kinds:
            self.seen[kind] = mechanism
            self.missing.pop(kind, None)

    def lack(self, kinds: list[str], why: str) -> None:
        for kind in kinds:
            if kind not in self.seen:
                self.missing[kind] = why

    def finish(self) -> Coverage:
        for kind, why in NEVER.items():
            self.lack([kind], why)
        for kind in KINDS:
            if kind not in self.seen and kind not in self.missing:
                self.missing[kind] = "not enabled"
        return self

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(KINDS[k] for k in self.seen)

    def summary(self) -> str:
        """One line for the log: what is seen, then what is not and why."""
        by_why: dict[str, list[str]] = {}
        for kind, why in self.missing.items():
            by_why.setdefault(why, []).append(kind)
        lacking = "; ".join(f"no {'/'.join(kinds)} ({why})" for why, kinds in by_why.items())
        seen = ", ".join(self.seen)
        text = f"sees {seen or 'nothing'}"
        if lacking:
            text += f"; reduced coverage: {lacking}"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return text
