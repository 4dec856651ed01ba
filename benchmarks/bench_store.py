"""Event store: append throughput and commit latency on a real SQLite file."""

from __future__ import annotations

import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from benchmarks._util import row, summary_us
from core.events import Event


def _event(i: int, thread: int) -> Event:
    return Event(
        type="bench.price_seen",
        ts_ms=1_700_000_000_000 + i,
        actor=f"position:BTCUSDT:{thread}",
        position_id=f"p{thread}",
        correlation_id=f"c{thread}",
        symbol="BTCUSDT",
        exchange="paper",
        data={"mark": Decimal("43210.5"), "stop": Decimal("42000.1"), "seq": i},
    )


def run() -> None:
    print("event store (SQLite WAL, aiosqlite, batched writer)")
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("bench-io").start()
        store = EventStore(Path(tmp) / "bench.db", io).open()
        try:
            threads, per_thread = 4, 50_000
            start = time.perf_counter()

            def produce(t: int) -> None:
                for i in range(per_thread):
                    store.append(_event(i, t))

            workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            store.flush(120)
            elapsed = time.perf_counter() - start
            total = threads * per_thread
            row(f"append throughput ({threads} threads x {per_thread:,})", f"{total / elapsed:,.0f} events/s ({elapsed:.2f} s)")

            # Commit latency: durable appends from 8 concurrent writers (the
            # write-ahead path an actor takes before acting on the exchange).
            latencies: list[int] = []
            lock = threading.Lock()

            def durable(t: int) -> None:
                mine = []
                for i in range(400):
                    t0 = time.perf_counter_ns()
                    store.append_durable(_event(i, t)).result(10)
                    mine.append(time.perf_counter_ns() - t0)
                with lock:
                    latencies.extend(mine)

            workers = [threading.Thread(target=durable, args=(t,)) for t in range(8)]
            start = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            elapsed = time.perf_counter() - start
            row("durable append commit latency (8 writers)", summary_us(latencies))
            row("durable append throughput (8 writers)", f"{len(latencies) / elapsed:,.0f} events/s")
        finally:
            store.close()
            io.stop()
