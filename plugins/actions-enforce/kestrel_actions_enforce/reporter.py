"""A thread that polls a bcc program's ring buffers until stopped."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("kestrel.enforce")


class RingReporter:
    def __init__(self, bpf: Any, name: str, poll_ms: int = 50) -> None:
        self._bpf = bpf
        self._poll_ms = poll_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"enforce-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._bpf.ring_buffer_poll(self._poll_ms)
            except Exception as exc:  # a broken callback must not kill the reporter silently
                log.error("enforce reporter %s: %s: %s", self._thread.name, type(exc).__name__, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        try:
            self._bpf.ring_buffer_consume()  # what the kernel reported before stop
        except Exception:
            pass
