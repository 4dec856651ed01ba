"""The store under a market-wide burst: N positions move their stops at once.

Each position writes what a stop move writes: ``stop_move_sent`` (durable,
write-ahead), ``stop_placed`` (not durable) and ``stop_moved`` (durable),
each with its projection. Producers append from 8 threads without waiting
(as position owners now do: the command is sent on commit), callbacks count
the commits; meanwhile a reader asks the projection (``positions``, committed
read) and a position's events (``query``, consistent read) every 10 ms.
Goal (issue 16): 3,000 positions (~9,000 events) committed within 2 s, reads
answered within 50 ms during it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from benchmarks._util import pct, row
from core.events import Event

T0 = 1_700_000_000_000


def _event(type_: str, pid: int, i: int) -> Event:
    proj = {"exchange": "paper", "symbol": f"S{pid % 500:03d}USDT", "state": "protected", "is_open": True, "side": "long", "quantity": "0.010",
            "stop_price": str(Decimal("40000") + i), "stop_order_id": f"o{pid}-{i}", "move_client_id": f"tb-{pid}-m{i}"}
    return Event(type=type_, ts_ms=T0 + i, actor=f"position:S{pid % 500:03d}USDT:{pid}", position_id=f"p{pid}", symbol=proj["symbol"], exchange="paper",
                 data={"price": proj["stop_price"], "client_id": proj["move_client_id"]}, projection=proj)


def burst(n: int) -> dict[str, float]:
    """One burst of ``n`` positions; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("bench-burst").start()
        store = EventStore(Path(tmp) / "burst.db", io).open()
        try:
            for pid in range(n):  # the book exists before the burst
                store.append(_event("position.stop_placed", pid, 0))
            store.flush(60)
            done = threading.Event()
            remaining = [2 * n]
            lock = threading.Lock()

            def committed(_fut: object) -> None:
                with lock:
                    remaining[0] -= 1
                    if remaining[0] == 0:
                        done.set()

            reads: list[int] = []
            full: list[int] = []
            consistent: list[int] = []
            stop_reading = threading.Event()

            def reader() -> None:
                while not stop_reading.is_set():
                    t = time.perf_counter_ns()
                    io.run(store.query(position_id="p2", limit=5, newest_first=True, consistent=False), 30)
                    reads.append(time.perf_counter_ns() - t)
                    t = time.perf_counter_ns()
                    io.run(store.positions(consistent=False), 30)
                    full.append(time.perf_counter_ns() - t)
                    t = time.perf_counter_ns()
                    io.run(store.query(position_id="p1", limit=5, newest_first=True), 30)
                    consistent.append(time.perf_counter_ns() - t)
                    time.sleep(0.01)

            def produce(part: int, threads: int) -> None:
                for pid in range(part, n, threads):
                    store.append_durable(_event("position.stop_move_sent", pid, 1)).add_done_callback(committed)
                for pid in range(part, n, threads):
                    store.append(_event("position.stop_placed", pid, 1))
                    store.append_durable(_event("position.stop_moved", pid, 1)).add_done_callback(committed)

            r = threading.Thread(target=reader)
            r.start()
            time.sleep(0.05)
            start = time.perf_counter()
            producers = [threading.Thread(target=produce, args=(t, 8)) for t in range(8)]
            for p in producers:
                p.start()
            done.wait(120)
            elapsed = time.perf_counter() - start
            stop_reading.set()
            r.join()
            for p in producers:
                p.join()
            return {"commit_s": elapsed, "read_p50": pct(reads, 50) / 1e6, "read_max": max(reads) / 1e6, "read_p99": pct(reads, 99) / 1e6, "full_p50": pct(full, 50) / 1e6, "full_max": max(full) / 1e6, "consistent_p50": pct(consistent, 50) / 1e6,
                    "consistent_max": max(consistent) / 1e6, "events": 3 * n, "batch": store.health().last_batch}
        finally:
            store.close()
            io.stop()


def run() -> None:
    print("store under a burst: N positions move their stops at once (3 events each, 2 durable); reads during it")
    for n in (1000, 3000):
        f = burst(n)
        row(f"{n:,} positions ({f['events']:,} events): all committed", f"{f['commit_s']:.2f} s")
        row("  read of one position's events (committed)", f"p50 {f['read_p50']:.1f} ms, p99 {f['read_p99']:.1f} ms, max {f['read_max']:.1f} ms")
        row("  read of one position's events (consistent)", f"p50 {f['consistent_p50']:.1f} ms, max {f['consistent_max']:.1f} ms")
        row(f"  read of the whole projection ({n:,} rows, committed)", f"p50 {f['full_p50']:.1f} ms, max {f['full_max']:.1f} ms")


if __name__ == "__main__":
    import sys

    sys.setswitchinterval(0.001)  # as the runtime and `make bench` do
    run()
