"""Bounded event bus between source threads and the engine thread.

Sources hand over *batches* (one lock round-trip per batch, not per event).
Capacity is counted in events.  When the queue is full the profile's policy
applies: ``block`` makes the source wait (nothing is lost; the kernel side of a
live source counts its own overflow), ``drop`` discards the batch and counts
every event in it under (source, "queue_full").
"""

from __future__ import annotations

import collections
import threading
from typing import Sequence

from .event import Event
from .runtime import Stats


class EventBus:
    def __init__(self, capacity: int, stats: Stats, policy: str = "block") -> None:
        if policy not in ("block", "drop"):
            raise ValueError(f"unknown back-pressure policy {policy!r}")
        self.capacity = capacity
        self.policy = policy
        self.stats = stats
        self._batches: collections.deque[list[Event]] = collections.deque()
        self._size = 0
        # Shares the stats lock so metric readers see counters consistent with the queue.
        self._cond = threading.Condition(stats.lock)
        self._producers = 0
        self._closed = False
        self._next_id = 1

    def producer_started(self) -> None:
        with self._cond:
            self._producers += 1

    def producer_done(self) -> None:
        with self._cond:
            self._producers -= 1
            self._cond.notify_all()

    def put(self, source: str, batch: Sequence[Event], wait: bool = True) -> bool | None:
        """Queue a batch; returns False if it was dropped.  Event ids are
        assigned here so they are unique and increasing across sources.
        With ``wait`` false, a full queue under the ``block`` policy returns
        None at once (nothing queued, nothing counted): the engine thread
        must never wait for room only it can make."""
        n = len(batch)
        if n == 0:
            return True
        with self._cond:
            full = self._size + n > self.capacity and self._size > 0
            if full and not wait and self.policy == "block" and not self._closed:
                return None
            self.stats.events_read[source] += n
            if self.policy == "drop":
                if full:
                    self.stats.events_dropped[(source, "queue_full")] += n
                    return False
            else:
                # A batch larger than the whole capacity is still admitted into an empty queue.
                while self._size + n > self.capacity and self._size > 0 and not self._closed:
                    self._cond.wait()
            first = self._next_id
            self._next_id = first + n
            batch = list(batch)
            for ev, eid in zip(batch, range(first, first + n)):
                ev.event_id = eid
            self._batches.append(batch)
            self._size += n
            self.stats.queue_depth = self._size
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> list[Event] | None:
        """Next batch, or None after ``timeout`` or once every producer is done
        and the queue is empty (check ``finished``)."""
        with self._cond:
            if not self._batches and self._producers > 0:
                self._cond.wait(timeout)
            if not self._batches:
                return None
            batch = self._batches.popleft()
            self._size -= len(batch)
            self.stats.queue_depth = self._size
            self._cond.notify_all()
            return batch

    def empty(self) -> bool:
        with self._cond:
            return not self._batches

    @property
    def finished(self) -> bool:
        with self._cond:
            return self._producers == 0 and not self._batches

    def close(self) -> None:
        """Wake blocked producers (shutdown); queued batches stay to be drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
