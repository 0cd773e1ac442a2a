"""``kestrel eval`` over a file of any size in bounded memory.

The input is read once and handed to the engine in (time, tie-breaker,
input position) order without being held:

* ``window`` path: the lines are already in order, or nearly (a reorder
  window of :data:`WINDOW` events absorbs small disorder).  One pass, each
  line parsed once.
* ``sort`` path: the first event older than one already released
  (:class:`~kestrel_core.ordering.OutOfOrder`) abandons the window pass;
  the input is read again (a regular file from its start; a pipe from the
  copy of the candidate lines the window pass kept, then on) into a
  :class:`~kestrel_core.ordering.Sorter`, which spills sorted runs past the
  memory budget and merges them.

Matches are collected through a Sorter too, so their output order (the last
event's order, as Elasticsearch returns sequences) needs no unbounded list,
and nothing is printed before the path that produced it is known to hold.
Which path ran, how many lines the literal prefilter skipped and how many
runs were spilled are in :attr:`EvalInput.stats`.
"""

from __future__ import annotations

import itertools
import tempfile
from typing import Any, Callable, Iterator

import msgpack

from ..event import Event
from ..ordering import DEFAULT_BUDGET, OutOfOrder, Sorter, in_order

WINDOW = 2048
"""Events the window path holds to absorb disorder (about 3 MB of typical ECS lines)."""

OUTPUT_BUDGET = 2 * 1024 * 1024
"""Bytes of match output held before it is spilled (the matches wait for the path to finish)."""

Built = tuple[int, Any, Event]
"""What ``build(lineno, line)`` returns: (timestamp ns, tie-breaker or None, event)."""


def order_key(ts: int, tb: Any, idx: int) -> tuple:
    """Total order of events: time, then tie-breaker (numbers before strings,
    present before absent), then input position; every part msgpack-able."""
    if tb is None:
        return (ts, 1, 0, "", idx)
    if isinstance(tb, bool) or not isinstance(tb, (int, float)) or tb != tb:
        return (ts, 0, 1, str(tb), idx)
    if isinstance(tb, int) and not -(1 << 63) <= tb < (1 << 63):
        tb = float(tb)  # beyond what a run file can hold exactly; order as its float
    return (ts, 0, 0, tb, idx)


class EvalInput:
    """The events of one JSONL input, in order, for one evaluation.

    ``open_lines()`` gives ``(line number, line bytes | overlong length)``
    from the start (called again for a restart when ``restartable``);
    ``accept(lineno, line)`` is False for a line to skip unparsed (the
    prefilter), ``build(lineno, line)`` makes the event or raises, and
    ``on_bad(lineno, line_or_length, exc)`` is told of every line that is not
    an event.  ``reset_bad()`` forgets them when a restartable input is read
    again."""

    def __init__(self, open_lines: Callable[[], Iterator[tuple[int, Any]]], build: Callable[[int, bytes], Built],
                 on_bad: Callable[[int, Any, Exception], None], *, accept: Callable[[bytes], bool] | None = None,
                 restartable: bool, reset_bad: Callable[[], None] = lambda: None, window: int = WINDOW,
                 budget: int = DEFAULT_BUDGET) -> None:
        self.open_lines, self.build, self.on_bad, self.accept = open_lines, build, on_bad, accept
        self.restartable, self.reset_bad = restartable, reset_bad
        self.window, self.budget = window, budget
        self.stats: dict[str, Any] = {"path": "window", "events": 0, "skipped_by_prefilter": 0, "runs_spilled": 0}
        self._lines: Iterator[tuple[int, Any]] | None = None
        self._tee: Any = None

    # ---------------------------------------------------------------- passes
    def _candidates(self, lines: Iterator[tuple[int, Any]], tee: Any = None) -> Iterator[tuple[int, bytes, Built]]:
        accept, build, on_bad = self.accept, self.build, self.on_bad
        pack = msgpack.Packer(use_bin_type=True).pack if tee is not None else None
        for lineno, line in lines:
            if line.__class__ is bytes:
                if not line.strip():
                    continue
                if accept is not None and not accept(line):
                    self.stats["skipped_by_prefilter"] += 1
                    continue
            try:
                if line.__class__ is not bytes:
                    raise ValueError(line)
                built = build(lineno, line)
            except Exception as exc:  # the caller's build raises its located input errors
                on_bad(lineno, line, exc)
                continue
            if tee is not None:
                tee.write(pack((lineno, line)))
            yield lineno, line, built

    def window_events(self) -> Iterator[Event]:
        """One pass through a reorder window; raises OutOfOrder when that cannot order the input."""
        self._lines = self.open_lines()
        if not self.restartable:
            self._tee = tempfile.TemporaryFile(prefix="kestrel-eval-")
        items = ((order_key(ts, tb, n), ev) for n, (_l, _line, (ts, tb, ev))
                 in enumerate(self._candidates(self._lines, self._tee)))
        eid = 0
        for _key, ev in in_order(items, self.window):
            eid += 1
            ev.event_id = eid
            yield ev
        self.stats["events"] = eid
        self._close_tee()

    def sorted_events(self) -> Iterator[Event]:
        """Every event through an external sort (after a window pass gave up)."""
        self.stats["path"] = "sort"
        if self.restartable:
            self.reset_bad()
            self.stats["skipped_by_prefilter"] = 0
            sources: Iterator[tuple[int, Any]] = self.open_lines()
            seen: Iterator[tuple[int, bytes, Built]] = self._candidates(sources)
        else:
            # the lines the window pass took are in the tee (already checked); the rest come after
            tee, self._tee = self._tee, None
            tee.seek(0)
            kept = ((lineno, line, None) for lineno, line in msgpack.Unpacker(tee, raw=False, use_list=False,
                                                                               max_buffer_size=0))
            rest = self._candidates(self._lines) if self._lines is not None else iter(())
            seen = itertools.chain(kept, rest)  # type: ignore[arg-type]
        sorter = Sorter(self.budget)
        n = 0
        for lineno, line, built in seen:
            if built is None:
                built = self.build(lineno, line)
            ts, tb, _ev = built
            sorter.add(order_key(ts, tb, n), (lineno, line))
            n += 1
        self.stats["runs_spilled"] = sorter.runs
        eid = 0
        for _key, (lineno, line) in sorter.sorted():
            eid += 1
            ev = self.build(lineno, line)[2]
            ev.event_id = eid
            yield ev
        self.stats["events"] = eid

    def _close_tee(self) -> None:
        if self._tee is not None:
            self._tee.close()
            self._tee = None

    def close(self) -> None:
        self._close_tee()


def stream_matches(inp: EvalInput, run: Callable[[Iterator[Event]], Iterator[tuple[tuple, bytes]]],
                   budget: int = OUTPUT_BUDGET) -> Iterator[bytes]:
    """Output lines of ``run(events)`` (``(order key, line)`` per match) in key
    order, over the window path, or the sort path when the window gives up."""
    try:
        out = Sorter(budget)
        try:
            for key, line in run(inp.window_events()):
                out.add(key, line)
        except OutOfOrder:
            out.close()
            out = Sorter(budget)
            for key, line in run(inp.sorted_events()):
                out.add(key, line)
        for _key, line in out.sorted():
            yield line
    finally:
        inp.close()
