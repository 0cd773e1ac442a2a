"""Time order in bounded memory for whole-file commands.

``kestrel eval``, ``replay`` and ``record --input`` must hand the engine
events in (time, tie-breaker, input position) order whatever order the file
holds them in, without keeping the file in memory.  :class:`Sorter` does it
the way ``sort(1)`` does: items are kept in memory until a byte budget is
reached, then each full buffer is sorted and spilled to a temporary file as
a *run* (msgpack, one array per item), :data:`FAN_IN` runs of one level
are merged into one of the next, and :meth:`Sorter.sorted` merges what is
left (``heapq.merge``: one item of each run in memory at a time).  When the
input never fills the budget nothing touches the disk.

An item is ``(key, payload)``: ``key`` a tuple of msgpack-able scalars that
orders the items totally (callers end it with the input position, so equal
times keep input order), ``payload`` bytes or any msgpack-able value (the
raw line, say, re-parsed when the item is read back).

:func:`in_order` is the cheap path for input that is already in order or
nearly so: a reorder window of a bounded number of items.  It raises
:class:`OutOfOrder` on an item older than one it has already released;
callers then fall back to a :class:`Sorter` and say which path ran.
"""

from __future__ import annotations

import heapq
import tempfile
from typing import Any, Iterable, Iterator

import msgpack

FAN_IN = 64
"""Runs of one level merged into one at the next level (bounds open files)."""

DEFAULT_BUDGET = 8 * 1024 * 1024
"""Bytes of items kept in memory before a run is spilled (a payload's length
plus a measured ~200 bytes of tuples and ints per item)."""


class OutOfOrder(Exception):
    """An item came after the reorder window had released a later one."""

    def __init__(self, position: int) -> None:
        super().__init__(f"item {position} is older than one already released")
        self.position = position


def in_order(items: Iterable[tuple[tuple, Any]], window: int) -> Iterator[tuple[tuple, Any]]:
    """Items in key order through a heap of at most ``window`` items.

    Raises :class:`OutOfOrder` as soon as an item sorts before one already
    yielded (the input was not within ``window`` of sorted order)."""
    heap: list[tuple[tuple, int, Any]] = []
    last: tuple | None = None
    n = 0
    for key, payload in items:
        n += 1
        if last is not None and key < last:
            raise OutOfOrder(n)
        if len(heap) < window:
            heapq.heappush(heap, (key, n, payload))
            continue
        k, _, p = heapq.heappushpop(heap, (key, n, payload))
        last = k
        yield k, p
    while heap:
        k, _, p = heapq.heappop(heap)
        yield k, p


class Sorter:
    """External merge sort of ``(key, payload)`` items under a memory budget.

    An item's size is its payload's bytes and strings (tuples summed) plus
    a fixed overhead.  ``spill_dir``: where runs go (default: the
    system temporary directory); they are deleted by :meth:`close` or at
    the end of :meth:`sorted`."""

    def __init__(self, budget: int = DEFAULT_BUDGET, spill_dir: str | None = None) -> None:
        if budget <= 0:
            raise ValueError("the memory budget must be positive")
        self.budget = budget
        self.spill_dir = spill_dir
        self._buf: list[tuple[tuple, Any]] = []
        self._bytes = 0
        self._runs: list[Any] = []
        self._levels: list[int] = []
        self.items = 0
        self.spilled_items = 0
        self.merges = 0
        self.spilled_runs = 0

    @property
    def runs(self) -> int:
        """How many runs went to disk so far (before intermediate merges)."""
        return self.spilled_runs

    def add(self, key: tuple, payload: Any) -> None:
        self._buf.append((key, payload))
        self._bytes += _size(payload) + 200
        self.items += 1
        if self._bytes >= self.budget:
            self._spill()

    def _spill(self) -> None:
        self._buf.sort(key=_first)
        f = tempfile.TemporaryFile(dir=self.spill_dir, prefix="kestrel-run-")
        pack = msgpack.Packer(use_bin_type=True).pack
        write = f.write
        for key, payload in self._buf:
            write(pack((key, payload)))
        f.flush()
        f.seek(0)
        self._runs.append(f)
        self.spilled_runs += 1
        self.spilled_items += len(self._buf)
        self._buf = []
        self._bytes = 0
        self._levels.append(0)
        self._compact()

    def _compact(self) -> None:
        """Merge FAN_IN runs of one level into one run of the next (tiered, as
        LSM trees do): open files stay under FAN_IN per level and every item
        is rewritten once per level, log_FAN_IN(runs) times in all."""
        level = 0
        while True:
            same = [i for i, lv in enumerate(self._levels) if lv == level]
            if len(same) < FAN_IN:
                return
            f = tempfile.TemporaryFile(dir=self.spill_dir, prefix="kestrel-run-")
            pack = msgpack.Packer(use_bin_type=True).pack
            write = f.write
            for item in heapq.merge(*(_read_run(self._runs[i]) for i in same), key=_first):
                write(pack(item))
            f.flush()
            f.seek(0)
            for i in same:
                self._runs[i].close()
            keep = [i for i in range(len(self._runs)) if i not in set(same)]
            self._runs = [self._runs[i] for i in keep] + [f]
            self._levels = [self._levels[i] for i in keep] + [level + 1]
            self.merges += 1
            level += 1

    def sorted(self) -> Iterator[tuple[tuple, Any]]:
        """Every item added, in key order (once: the runs are consumed)."""
        self._buf.sort(key=_first)
        if not self._runs:
            buf, self._buf = self._buf, []
            yield from buf
            return
        streams: list[Iterable[tuple[tuple, Any]]] = [_read_run(f) for f in self._runs]
        if self._buf:
            streams.append(self._buf)
        try:
            yield from heapq.merge(*streams, key=_first)
        finally:
            self.close()

    def close(self) -> None:
        for f in self._runs:
            f.close()
        self._runs, self._levels = [], []
        self._buf = []


def _size(payload: Any) -> int:
    if isinstance(payload, (bytes, str)):
        return len(payload)
    if isinstance(payload, tuple):
        return sum(_size(p) for p in payload)
    return 32


def _first(item: tuple[tuple, Any]) -> tuple:
    return item[0]


def _read_run(f: Any) -> Iterator[tuple[tuple, Any]]:
    # msgpack turns the key tuple into a list; keys compare as tuples again
    for key, payload in msgpack.Unpacker(f, raw=False, use_list=False, max_buffer_size=0):
        yield key, payload

