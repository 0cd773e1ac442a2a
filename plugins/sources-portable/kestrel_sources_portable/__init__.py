"""Kestrel source plugin: live events without eBPF (proc connector, /proc polling, fanotify)."""
