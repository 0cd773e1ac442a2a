"""Wakes the SSE streams when the engine thread stored an alert.

The hub carries no alerts: a stream is woken, then reads the store for
``seq > last sent``.  So a slow client can never make the engine wait, a
woken stream never misses an alert (the store has it), and a stream that
resumes after a reconnect reads exactly what it has not seen.  Live events
(``type: event``, not stored, not resumable) are the exception: each
subscriber that asked for them has a bounded queue that drops its oldest
entries and counts them.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any


class Subscriber:
    def __init__(self, hub: "Hub", want_events: bool, max_events: int) -> None:
        self.hub = hub
        self.wake = asyncio.Event()
        self.events: collections.deque | None = collections.deque(maxlen=max_events) if want_events else None
        self.events_dropped = 0

    def close(self) -> None:
        self.hub.unsubscribe(self)


class Hub:
    def __init__(self, max_events_per_subscriber: int = 1000) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._pending = False
        self.max_events = max_events_per_subscriber
        self.closed = False
        self.recent = RecentAlerts()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The server's event loop (called on it, at start-up)."""
        self._loop = loop

    def subscribe(self, want_events: bool = False) -> Subscriber:
        sub = Subscriber(self, want_events, self.max_events)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _wake_all(self) -> None:
        with self._lock:
            self._pending = False
            subs = list(self._subs)
        for sub in subs:
            sub.wake.set()

    def notify(self) -> None:
        """New alerts are in the store (any thread).  Coalesced: one wake-up
        per loop iteration however many alerts arrived meanwhile."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            if self._pending:
                return
            self._pending = True
        try:
            loop.call_soon_threadsafe(self._wake_all)
        except RuntimeError:  # loop closed meanwhile
            pass

    def publish_events(self, docs: list[dict[str, Any]]) -> None:
        """Processed events for the subscribers that asked for them (any thread)."""
        with self._lock:
            subs = [s for s in self._subs if s.events is not None]
        if not subs:
            return
        for sub in subs:
            q = sub.events
            overflow = len(q) + len(docs) - q.maxlen
            if overflow > 0:
                sub.events_dropped += min(overflow, len(q) + len(docs))
            q.extend(docs)
        self.notify()

    def wants_events(self) -> bool:
        with self._lock:
            return any(s.events is not None for s in self._subs)

    def close(self) -> None:
        """Ends every stream (server shutting down)."""
        self.closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._wake_all)
            except RuntimeError:
                pass


class RecentAlerts:
    """The latest committed alerts, each already formatted as an SSE message,
    so that N streams cost one encoding per alert instead of N store reads
    and N encodings.  A stream further behind than this window reads the
    store instead.  Appended by the engine thread after each commit (then the
    hub is notified); read by the server's loop."""

    def __init__(self, size: int = 20000) -> None:
        self.size = size
        self._seqs: list[int] = []
        self._texts: list[str] = []
        self._lock = threading.Lock()

    def extend(self, items: list[tuple[int, str]]) -> None:
        with self._lock:
            for seq, text in items:
                if self._seqs and seq <= self._seqs[-1]:
                    continue
                self._seqs.append(seq)
                self._texts.append(text)
            if len(self._seqs) > 2 * self.size:
                del self._seqs[: -self.size]
                del self._texts[: -self.size]

    def since(self, seq: int, limit: int) -> list[tuple[int, str]] | None:
        """Messages of the alerts after ``seq`` (at most ``limit``), or None
        when the window does not reach back to ``seq``."""
        import bisect

        with self._lock:
            if not self._seqs or seq < self._seqs[0] - 1:
                return None
            i = bisect.bisect_right(self._seqs, seq)
            return list(zip(self._seqs[i:i + limit], self._texts[i:i + limit]))
