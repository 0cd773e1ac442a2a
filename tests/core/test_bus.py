import threading

from kestrel_core.bus import EventBus
from kestrel_core.event import Event
from kestrel_core.runtime import Stats


def events(n, start=0):
    return [Event("process", {}, start + i, start + i) for i in range(n)]


def test_drop_policy_counts_every_dropped_event():
    stats = Stats()
    bus = EventBus(capacity=10, stats=stats, policy="drop")
    assert bus.put("s", events(8))
    assert not bus.put("s", events(5))
    assert stats.events_dropped[("s", "queue_full")] == 5
    assert stats.events_read["s"] == 13
    assert stats.queue_depth == 8


def test_block_policy_waits_for_the_consumer_and_loses_nothing():
    stats = Stats()
    bus = EventBus(capacity=4, stats=stats, policy="block")
    bus.producer_started()
    done = threading.Event()

    def produce():
        for i in range(10):
            bus.put("s", events(3, i * 3))
        bus.producer_done()
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    got = []
    while not bus.finished:
        batch = bus.get(1.0)
        if batch:
            assert stats.queue_depth <= 4
            got.extend(batch)
    t.join(5)
    assert done.is_set()
    assert [e.ts_mono_ns for e in got] == list(range(30))
    assert [e.event_id for e in got] == list(range(1, 31))  # unique, increasing
    assert not stats.events_dropped


def test_oversized_batch_is_admitted_into_an_empty_queue():
    bus = EventBus(capacity=2, stats=Stats(), policy="drop")
    assert bus.put("s", events(5))


def test_get_times_out_with_none():
    bus = EventBus(capacity=2, stats=Stats())
    bus.producer_started()
    assert bus.get(0.01) is None
    assert not bus.finished


def test_emitter_takes_events_a_source_built_itself_without_normalizing():
    """``emit_events``: events built by the source (source_id set) are batched
    and put on the bus as they are; the normalizer is not called."""
    from kestrel_core.pipeline import SourceEmitter
    from kestrel_core.testing import make_context

    class NoNormalizer:
        def normalize(self, record, source_id):
            raise AssertionError("emit_events must not normalize")

    ctx = make_context()
    bus = EventBus(capacity=100, stats=ctx.stats)
    emitter = SourceEmitter(object(), "live", NoNormalizer(), bus, ctx, batch_size=4)
    events = [Event("file", {}, i, i, source_id="live") for i in range(6)]
    assert emitter.emit_events(events[:3]) == 3 and bus.empty()  # below the batch size: buffered
    assert emitter.emit_events(events[3:]) == 3
    batch = bus.get(0)  # batches of batch_size, however many a call hands over
    assert batch == events[:4] and [e.event_id for e in batch] == [1, 2, 3, 4]
    assert ctx.stats.events_read["live"] == 4 and bus.empty()
    emitter.close()  # the rest is handed over at close
    assert bus.get(0) == events[4:] and [e.event_id for e in events[4:]] == [5, 6]
    assert emitter.emit_events(events) == 0


def test_flush_from_the_engine_thread_never_waits_for_room():
    """The engine thread flushes quiet sources' partial batches; with the
    queue full (block policy) it must not wait for room only it can make:
    the partial batch stays buffered until there is room."""
    from kestrel_core.pipeline import SourceEmitter
    from kestrel_core.testing import make_context

    ctx = make_context()
    bus = EventBus(capacity=8, stats=ctx.stats)
    emitter = SourceEmitter(object(), "s", None, bus, ctx, batch_size=4)
    assert emitter.emit_events(events(4)) == emitter.emit_events(events(4, start=4)) == 4  # the queue is full
    emitter.emit_events(events(2, start=8))  # a partial batch, buffered
    flusher = threading.Thread(target=emitter.flush)
    flusher.start()
    flusher.join(2)
    assert not flusher.is_alive(), "flush waited on a full queue"
    assert ctx.stats.events_read["s"] == 8  # nothing handed over, nothing counted
    assert len(bus.get(0)) == 4  # room again
    emitter.flush()
    assert [len(bus.get(0)), len(bus.get(0))] == [4, 2] and ctx.stats.events_read["s"] == 10
