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
