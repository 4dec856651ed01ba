"""The committed-event fan-out: every committed event reaches each subscriber once, in id order;
a slow or stuck subscriber never slows the writer and loses only what overflows its buffer (counted)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core.events import Event
from tests.conftest import eventually

T0 = 1_700_000_000_000


def ev(i: int) -> Event:
    return Event(type="test.event", ts_ms=T0 + i, actor="tester", data={"i": i})


def test_subscribers_see_every_committed_event_once_in_id_order(store: EventStore, io_loop: IOLoop):
    seen_sync: list[Event] = []
    seen_async: list[Event] = []

    async def slow(events: list[Event]) -> None:
        await asyncio.sleep(0)
        seen_async.extend(events)

    store.subscribe("sync", seen_sync.extend)
    store.subscribe("async", slow)
    threads = [threading.Thread(target=lambda k=k: [store.append(ev(k * 1000 + i)) for i in range(200)]) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.flush()
    committed = io_loop.run(store.query(type_prefixes=("test.",)), 10)
    for seen in (seen_sync, seen_async):
        eventually(lambda seen=seen: len(seen) >= 600, what="600 events delivered")
        assert [e.id for e in seen] == [e.id for e in committed]
        assert [e.data for e in seen] == [e.data for e in committed]


def test_a_stuck_subscriber_never_blocks_the_writer_and_counts_its_drops(store: EventStore, io_loop: IOLoop):
    release = threading.Event()
    got: list[Any] = []

    async def stuck(events: list[Event]) -> None:
        got.append(len(events))
        while not release.is_set():
            await asyncio.sleep(0.005)

    sub = store.subscribe("stuck", stuck, maxlen=50)
    for i in range(500):
        store.append(ev(i))
    store.flush(timeout=10)  # the writer committed everything while the subscriber is stuck
    assert store.health().committed >= 500
    eventually(lambda: sub.dropped > 0, what="overflow counted")
    release.set()
    eventually(lambda: sub.delivered + sub.dropped == 500, what="every event delivered or counted")
    assert sub.delivered <= 500 and sub.dropped >= 500 - 50 - got[0]


def test_a_failing_subscriber_is_counted_and_keeps_receiving(store: EventStore):
    calls: list[int] = []

    def flaky(events: list[Event]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("subscriber bug")

    sub = store.subscribe("flaky", flaky)
    store.append(ev(1))
    store.flush()
    eventually(lambda: sub.failures == 1)
    store.append(ev(2))
    store.flush()
    eventually(lambda: sum(calls) == 2, what="second event delivered")
    store.unsubscribe(sub)
    store.append(ev(3))
    store.flush()
    assert sum(calls) == 2
