"""The scale table: 100 / 300 / 1,000 (/ 3,000) positions in one process.

Per size, in one run: RSS per position actor (real owners, each with its stop
on the in-process paper exchange) next to a bare pykka actor; paced
tick -> decision latency (p50/p99) and process CPU per tick of the owners
next to bare pykka actors handling the same ticks (the very same message, the
two populations taking turns round by round; a sideways market, so after the
first mark the owners' ticks fall inside their calm band, see
``actors/plan_mark.py``); tick -> exchange: with every owner trailing and
ticked through its conflation slot as the price feed delivers, the ns from a
tick that calls for a move to the new stop's order at the exchange, and the
share of ticks that woke an owner; the burst of every owner making its first stop move
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

from actors.messages import MarkPrice, MarkReady, MarkSlot
from actors.position import PositionActor
from benchmarks._util import pct, row
from benchmarks.bench_positions import Bench, Collect, TimedMark, TimedPosition
from core.messages import Message, Shutdown
from supervision.supervisor import ChildSpec, Supervisor

TICKS_PER_S = 2_000  # offered to each population, paced


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class Bare(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self) -> None:
        super().__init__()
        self.lat: list[int] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, TimedMark):  # the very message the owners get, decided on at once
            self.lat.append(time.perf_counter_ns() - message.sent_ns)
            return None
        out, self.lat = self.lat, []
        return out


def paced(populations: list[list[Any]], make: Any, rounds: int) -> list[float]:
    """``rounds`` paced rounds of one tick to every actor, the populations taking turns
    round by round (so drift in the machine's load falls on both alike). Returns each
    population's process CPU seconds per tick: sending and handling, the sending alike for
    all (the same message), measured over its rounds (each round's handling is done well
    within its pause)."""
    cpu = [0.0 for _ in populations]
    for r in range(rounds):
        for k, refs in enumerate(populations):
            gap = len(refs) / TICKS_PER_S
            t0, c0 = time.perf_counter(), time.process_time()
            for ref in refs:
                ref.tell(make(r))
            left = gap - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)  # benchmark driver pacing the offered load
            cpu[k] += time.process_time() - c0
    return [c / (rounds * len(refs)) for c, refs in zip(cpu, populations, strict=True)]


MOVES_PER_ROUND, MOVE_ROUNDS = 3, 30


def tick_to_exchange(b: Bench, refs: list[Any], calm: Decimal, now_ms: int) -> tuple[list[int], float]:
    """Every owner trailing and ticked each round, delivered as the price feed delivers
    (each owner's conflation slot, ``MarkReady`` only when the slot tells: a mark inside the
    calm band an owner published wakes nobody); in each round a few of the ticks are a jump
    that calls for an emergency move: ns from such a tick's delivery to the new stop's order
    reaching the exchange, and how many ticks woke an owner. Rounds last at least 0.5 s, so
    the moves (two orders each) stay well inside Binance's order limit and the figure is the
    bot's, not the rate limiter's."""
    arrivals: dict[str, int] = {}
    create = b.exchange.create_order

    async def timed_create(symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None) -> Any:
        cid = next((v for v in (params or {}).values() if isinstance(v, str) and v.startswith("tb-")), None)
        if cid is not None:
            arrivals.setdefault(cid, time.perf_counter_ns())
        return await create(symbol, type, side, amount, price, params)

    b.exchange.create_order = timed_create  # type: ignore[method-assign]  # a stopwatch at the exchange's door
    jump = calm * Decimal("1.012")  # the wanted stop is 1.3 % past the live one: moved at once
    markets = list(b.markets)
    step = max(1, len(refs) // (MOVES_PER_ROUND * MOVE_ROUNDS))
    order = list(range(0, len(refs), step))[: MOVES_PER_ROUND * MOVE_ROUNDS]
    sent: dict[str, int] = {}
    slots = [MarkSlot() for _ in refs]
    told = ticks = 0
    jumped: set[int] = set()
    try:
        for r in range(-1, MOVE_ROUNDS):  # round -1: every owner gets its slot and publishes its band (not timed)
            chosen = set(order[r * MOVES_PER_ROUND : (r + 1) * MOVES_PER_ROUND]) if r >= 0 else set()
            for i in chosen:
                b.exchange.set_mark(markets[i].symbol, jump)  # the exchange moves first (driver work)
            t0 = time.perf_counter()
            for i, ref in enumerate(refs):
                ns, now = time.perf_counter_ns(), b.clock.now_ms()
                if i in chosen:
                    sent[f"b{markets[i].id}"] = ns
                ticks += r >= 0
                price = jump if i in chosen else (jump - 10 if i in jumped else calm)  # after its jump: just below its new best
                if slots[i].put(MarkPrice(symbol=markets[i].id, price=price, ts_ms=now), now):  # the feed's delivery
                    told += r >= 0
                    ref.tell(MarkReady(symbol=markets[i].id, slot=slots[i]))
            jumped |= chosen
            left = max(0.5, len(refs) / TICKS_PER_S) - (time.perf_counter() - t0)
            if left > 0:
                time.sleep(left)  # benchmark driver pacing the offered load
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len({c.split("-")[1] for c in arrivals} & set(sent)) < len(sent):
            time.sleep(0.05)  # waiting for the last moves to reach the exchange (bounded)
    finally:
        b.exchange.create_order = create  # type: ignore[method-assign]
    first: dict[str, int] = {}
    for cid, ns in arrivals.items():
        pid = cid.split("-")[1]
        if pid in sent and ns >= sent[pid]:
            first[pid] = min(first.get(pid, ns), ns)
    return [first[p] - sent[p] for p in first], told / ticks


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

            # paced ticks, a sideways market under the best of the burst (40,700): the first mark after the
            # move takes the rules (the state changed), every later one is inside the calm band. No owner
            # wants a move afterwards: the move phase below times single moves, not a market-wide burst
            # (that is the burst above). A tick that makes a new best always takes the whole rules.
            price = Decimal(40700)
            sideways = [price - 10 * (k % 5) for k in range(64)]
            for ref in refs:
                ref.ask(Collect(), timeout=120)  # drop the burst's samples
            rounds = max(5, min(40, 20_000 // n))
            cpu_owner, cpu_bare = paced([refs, bare], lambda r: TimedMark(mark=MarkPrice(symbol=markets[0].id, price=sideways[r % 64], ts_ms=now_ms), sent_ns=time.perf_counter_ns()), rounds)
            samples = [x for ref in refs for x in ref.ask(Collect(), timeout=120)]
            bare_samples = [x for ref in bare for x in ref.ask("collect", timeout=120)]
            out.update(cpu_us=cpu_owner * 1e6, bare_cpu_us=cpu_bare * 1e6)
            out.update(p50=pct(samples, 50) / 1e6, p99=pct(samples, 99) / 1e6, bare_p50=pct(bare_samples, 50) / 1e6, bare_p99=pct(bare_samples, 99) / 1e6)
            for ref in bare:
                ref.stop(block=False)
            lat, woken = tick_to_exchange(b, refs, sideways[1], now_ms)
            out.update(move_p50=pct(lat, 50) / 1e6, move_p99=pct(lat, 99) / 1e6, move_n=len(lat), woken=woken)

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
    print(f"  {'positions':>9} {'RSS/actor':>10} {'bare':>7} {'tick p50':>9} {'p99':>7} {'bare p50':>9} {'p99':>7} {'CPU/tick':>9} {'bare':>6} {'burst':>8} {'read p50':>9} {'max':>7} {'recovery':>9} {'move p50':>9} {'p99':>7} {'woken':>6}")
    for n in sizes:
        f = one_size(n)
        print(f"  {n:>9,} {f['rss_kb']:>8.0f}KB {f['bare_rss_kb']:>5.0f}KB {f['p50']:>7.1f}ms {f['p99']:>5.1f}ms {f['bare_p50']:>7.1f}ms {f['bare_p99']:>5.1f}ms {f['cpu_us']:>7.1f}us {f['bare_cpu_us']:>4.1f}us "
              f"{f['burst_s']:>7.2f}s {f['read_p50_ms']:>7.1f}ms {f['read_max_ms']:>5.0f}ms {f['recovery_s']:>8.2f}s {f['move_p50']:>7.1f}ms {f['move_p99']:>5.1f}ms {f['woken']:>6.1%}" + ("" if f["moved"] >= n else f"  (only {f['moved']:.0f} moved)"), flush=True)
    row("burst: every owner's first stop move at once", "3 events each (2 write-ahead), until all committed")
    row("recovery: new supervisor until every owner checked its stop", "in-process rebuild; a SIGKILLed process adds its start-up")
    row("move: a tick calling for a stop move -> its order at the exchange", f"{MOVES_PER_ROUND} such ticks per round among every owner's, {MOVE_ROUNDS} rounds")


if __name__ == "__main__":
    import sys

    from loguru import logger

    logger.remove()
    sys.setswitchinterval(0.001)
    run()
