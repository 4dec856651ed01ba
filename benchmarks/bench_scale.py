"""The scale table: 100 / 300 / 1,000 (/ 3,000) positions in one process.

Per size, in one run: RSS per position actor (real owners, each with its stop
on the in-process paper exchange) next to a bare pykka actor; paced
tick -> decision latency (p50/p99) of the owners next to bare pykka actors
handling the same ticks; the burst of every owner making its first stop move
at once (time until every ``stop_moved`` is committed, and the latency of
committed reads of the store during it); and recovery: a new supervisor
rebuilding every owner from the store until each has checked its stop
(``supervisor.recovery_complete``, what gates the intake after a restart).
``TRADEBOT_BENCH_SCALE`` picks the sizes (default 100,300,1000,3000). The
paper exchange runs in-process, on the bot's I/O loop, so the burst times its
engine too; it re-assesses only the symbols a call touched (before, every
position and order on every call: its work grew with the square of the book,
and at 3,000 a read queued on the loop during the burst went unanswered for
over 30 s). The store alone at 3,000 is ``bench_burst``. The bench sets the
burst's exchange marks before the clock starts so the burst times the bot, not
the driver.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from decimal import Decimal
from typing import Any

import pykka

from actors.messages import MarkPrice
from actors.position import PositionActor
from benchmarks._util import pct, row
from benchmarks.bench_positions import Bench, Collect, TimedMark, TimedPosition
from core.messages import Message, Shutdown
from supervision.supervisor import ChildSpec, Supervisor

TICKS_PER_S = 2_000  # offered to each population, paced


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class BareTick(Message, frozen=True, kw_only=True):
    sent_ns: int


class Bare(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.lat: list[int] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, BareTick):
            self.lat.append(time.perf_counter_ns() - message.sent_ns)
            return None
        out, self.lat = self.lat, []
        return out


def paced(refs: list[Any], make: Any, rounds: int) -> None:
    gap = len(refs) / TICKS_PER_S
    for _ in range(rounds):
        t0 = time.perf_counter()
        for ref in refs:
            ref.tell(make())
        left = gap - (time.perf_counter() - t0)
        if left > 0:
            time.sleep(left)  # benchmark driver pacing the offered load


def one_size(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(tmp, n, None)
        try:
            before = rss_kb()
            b.open([m.id for m in b.markets], cls=TimedPosition)
            b.wait_opened(n, timeout_s=600)
            out["rss_kb"] = (rss_kb() - before) / n
            markets = list(b.markets)
            refs = [b.ctx.directory.lookup(f"position:{m.id}:b{m.id}") for m in markets]
            before = rss_kb()
            bare = [Bare.start() for _ in range(n)]
            out["bare_rss_kb"] = (rss_kb() - before) / n
            now_ms = b.clock.now_ms()

            # the burst: every owner's first stop move at once (trailing activates at +1.5 %)
            reads: list[int] = []
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set() or not reads:
                    t = time.perf_counter_ns()
                    b.io.run(b.store.query(position_id=f"b{markets[0].id}", limit=5, newest_first=True, consistent=False), 30)
                    reads.append(time.perf_counter_ns() - t)
                    time.sleep(0.01)  # one read every 10 ms

            for m in b.markets:  # the exchange moves first (driver work, not timed)
                b.exchange.set_mark(m.symbol, Decimal(40700))
            r = threading.Thread(target=reader)
            r.start()
            t0 = time.perf_counter()
            for ref, m in zip(refs, b.markets, strict=True):
                ref.tell(MarkPrice(symbol=m.id, price=Decimal(40700), ts_ms=now_ms))
            deadline = time.monotonic() + 300
            moved, last_id = 0, 0
            while time.monotonic() < deadline and moved < n:  # only new rows: polling must not load the loop it measures
                fresh = b.io.run(b.store.query(types=("position.stop_moved",), after_id=last_id, consistent=False), 60)
                moved += len(fresh)
                last_id = max((e.id or 0 for e in fresh), default=last_id)
                time.sleep(0.05)  # waiting for every first move (bounded)
            out["burst_s"] = time.perf_counter() - t0
            out["moved"] = moved
            stop.set()
            r.join()
            out["read_p50_ms"], out["read_max_ms"] = pct(reads, 50) / 1e6, max(reads) / 1e6

            # paced ticks: trailing, improving, moves held by the 60 s interval (pure decision cost)
            price = Decimal(40750)
            for m in b.markets:
                b.exchange.set_mark(m.symbol, price)
            for ref in refs:
                ref.ask(Collect(), timeout=120)  # drop the burst's samples
            rounds = max(5, min(40, 20_000 // n))
            paced(refs, lambda: TimedMark(mark=MarkPrice(symbol=markets[0].id, price=price, ts_ms=now_ms), sent_ns=time.perf_counter_ns()), rounds)
            samples = [x for ref in refs for x in ref.ask(Collect(), timeout=120)]
            paced(bare, lambda: BareTick(sent_ns=time.perf_counter_ns()), rounds)
            bare_samples = [x for ref in bare for x in ref.ask("collect", timeout=120)]
            out.update(p50=pct(samples, 50) / 1e6, p99=pct(samples, 99) / 1e6, bare_p50=pct(bare_samples, 50) / 1e6, bare_p99=pct(bare_samples, 99) / 1e6)
            for ref in bare:
                ref.stop(block=False)

            # recovery: the tree goes down (stops stay), a new supervisor rebuilds every owner
            b.sup.tell(Shutdown(reason="bench: restart"))
            b.sup.actor_stopped.wait(120)
            specs = [ChildSpec(name=f"position:{m.id}:b{m.id}", factory=lambda nm, c, p=f"b{m.id}": PositionActor.start(name=nm, ctx=c, venue=b.venue, position_id=p), kind="position", restart="transient")
                     for m in b.markets]
            t0 = time.perf_counter()
            b.sup = Supervisor.start(ctx=b.ctx, children=specs)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not b.io.run(b.store.query(types=("supervisor.recovery_complete",), consistent=False), 30):
                time.sleep(0.05)  # waiting for every owner's report (bounded)
            out["recovery_s"] = time.perf_counter() - t0
        finally:
            b.close()
    return out


def run() -> None:
    sizes = [int(x) for x in os.environ.get("TRADEBOT_BENCH_SCALE", "100,300,1000,3000").split(",") if x]
    print(f"scale: positions in one process (real owners on the in-process paper exchange; paced ticks {TICKS_PER_S:,}/s offered)")
    print(f"  {'positions':>9} {'RSS/actor':>10} {'bare':>7} {'tick p50':>9} {'p99':>7} {'bare p50':>9} {'p99':>7} {'burst':>8} {'read p50':>9} {'max':>7} {'recovery':>9}")
    for n in sizes:
        f = one_size(n)
        print(f"  {n:>9,} {f['rss_kb']:>8.0f}KB {f['bare_rss_kb']:>5.0f}KB {f['p50']:>7.1f}ms {f['p99']:>5.1f}ms {f['bare_p50']:>7.1f}ms {f['bare_p99']:>5.1f}ms "
              f"{f['burst_s']:>7.2f}s {f['read_p50_ms']:>7.1f}ms {f['read_max_ms']:>5.0f}ms {f['recovery_s']:>8.2f}s" + ("" if f["moved"] >= n else f"  (only {f['moved']:.0f} moved)"), flush=True)
    row("burst: every owner's first stop move at once", "3 events each (2 write-ahead), until all committed")
    row("recovery: new supervisor until every owner checked its stop", "in-process rebuild; a SIGKILLed process adds its start-up")


if __name__ == "__main__":
    import sys

    from loguru import logger

    logger.remove()
    sys.setswitchinterval(0.001)
    run()
