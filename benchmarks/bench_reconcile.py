"""Reconciliation: one full reconcile of 500 positions and 2,000 open orders; the request budget."""

from __future__ import annotations

import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path


from actors.sync import SyncActor
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.paper import PaperEngine, PaperExchange
from adapters.venue import STYLES, Venue
from benchmarks._util import pct, row
from benchmarks.bench_positions import cloned_markets
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from actors.messages import OpenRequest, PositionClosed, PositionOpened, PositionOpenFailed, ProtectionReport
from core.messages import ChildStopped, ReconcileFinished, ReconcileNow, Shutdown, StartChild
from supervision.supervisor import Supervisor
from core.clock import RealClock, VirtualClock
from core.config import parse_config
from tradebot.wiring import build_executor, position_spec, trading_children

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class Reports(ManagedActor):
    def started(self) -> None:
        self.got: list[ReconcileFinished] = []
        self.event = threading.Event()

    @handles(ReconcileFinished)
    def _got(self, msg: ReconcileFinished) -> None:
        self.got.append(msg)
        self.event.set()

    @handles(StartChild, ChildStopped)
    def _supervisor_business(self, msg: object) -> None:
        pass  # this stand-in plays the supervisor: adoption requests are not the benchmark


def run() -> None:
    print("reconciliation")
    n_pos, orders_per = 500, 4
    markets = cloned_markets(n_pos)
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("bench-io").start()
        store = EventStore(Path(tmp) / "r.db", io).open()
        clock = RealClock()
        cfg = parse_config('[zombies]\ndry_run = true\n[sync]\ninterval_secs = 3600\n[demo]\nsignals_file = ""\n', base_dir=Path(tmp))
        engine = PaperEngine(markets, flavour="binance", initial_balance=Decimal(10**9), slippage_bps=Decimal(0), max_stop_orders_per_symbol=10)
        exchange = PaperExchange(engine, clock, flavour="binance", markets_path=SHARED / "markets" / "binanceusdm-linear.json")

        def fill(e, now):
            for m in markets:
                e.on_mark(m.symbol, Decimal(40000), now)
                e.external_open_position(m.symbol, "buy", Decimal("0.01"), now)
                for k in range(orders_per):  # stops on the protective side: a position's own orders
                    e.external_place_order(m.symbol, "STOP_MARKET", "sell", Decimal("0.01"), now, {"stopPrice": 39000 - k * 100, "reduceOnly": True})

        exchange.with_engine(fill)
        venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), STYLES["binance"])
        directory = Directory()
        reports = Reports.start(name="reports", ctx=ActorContext(clock=clock, io=io, store=store, config=cfg, directory=directory))
        ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=directory, supervisor=reports)
        sync = SyncActor.start(name="sync", ctx=ctx, venue=venue, position_spec=lambda req: None)
        try:
            durations = []
            for _ in range(5):
                reports.proxy().event.get().clear()
                t0 = time.perf_counter()
                sync.tell(ReconcileNow(reply_to=reports))
                reports.proxy().event.get().wait(120)
                durations.append((time.perf_counter() - t0) * 1000)
            last = reports.proxy().got.get()[-1]
            row(f"full reconcile: {last.findings['positions']} positions, {last.findings['orders']} open orders", f"p50 {pct(durations, 50):.0f} ms  max {max(durations):.0f} ms (read + compare, dry run)")
        finally:
            sync.stop()
            reports.stop()
            store.close()
            io.stop()
            clock.close()
    for streams in (True, False):
        for n in (1, 5, 50):
            cost = read_cost(n, streams=streams)
            total = sum(cost.values())
            detail = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(cost.items()))
            row(f"reconciliation requests per position-hour, {n} positions, {'streams live' if streams else 'polling'}", f"{total / n:.1f} ({detail}; the seed's bot: 30)")


class Owner(ManagedActor):
    """Stands in for the intake: counts the positions opened."""

    def started(self) -> None:
        self.opened = 0

    @handles(PositionOpened, PositionOpenFailed, PositionClosed, ProtectionReport)
    def _got(self, msg: object) -> None:
        self.opened += isinstance(msg, PositionOpened)


RECONCILE_READS = ("fetch_positions", "fetch_open_orders", "fetch_order")  # mark prices are the feed's, not reconciliation's


def read_cost(n: int, *, streams: bool, hours: int = 1) -> dict[str, int]:
    """Measured, not computed: n protected positions on the paper exchange, the whole actor
    system (feed, sync, guard, owners) on a virtual clock for ``hours``; the requests the
    exchange saw, by method."""
    markets = cloned_markets(n)
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("bench-io").start()
        store = EventStore(Path(tmp) / "c.db", io).open()
        clock = VirtualClock()
        cfg = parse_config(f'[sync]\nuse_streams = {str(streams).lower()}\n[demo]\nsignals_file = ""\n', base_dir=Path(tmp))
        engine = PaperEngine(markets, flavour="binance", initial_balance=Decimal(10**9), slippage_bps=Decimal(0))
        exchange = PaperExchange(engine, clock, flavour="binance", request_log_size=10**6)
        for m in markets:
            exchange.set_mark(m.symbol, Decimal(40000))
        venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), STYLES["binance"])
        directory = Directory()
        ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=directory)
        owner = Owner.start(name="owner", ctx=ctx)
        sup = Supervisor.start(ctx=ctx, children=trading_children(cfg, venue, directory, []))
        try:
            for i, m in enumerate(markets):
                req = OpenRequest(position_id=f"p{i}", exchange="paper", symbol=m.id, side="long", quote_amount=Decimal(100), leverage=10, correlation_id=f"c{i}", requested_by=owner)
                sup.tell(StartChild(spec=position_spec(venue, directory, f"p{i}", m.id, req)))
            _until(lambda: owner.proxy().opened.get() == n, 60)
            sync = directory.lookup("sync")

            def step(ms: int) -> None:
                clock.advance(ms)
                _until(lambda: not sync.proxy().busy().get(), 10)

            for _ in range(12):
                step(5_000)  # settle past the start
            exchange.requests.clear()
            for _ in range(hours * 720):
                step(5_000)
            counts: dict[str, int] = {}
            for r in exchange.requests.copy():  # the feed still reads marks meanwhile
                if r["method"] in RECONCILE_READS:
                    counts[r["method"]] = counts.get(r["method"], 0) + 1
            return {k: round(v / hours) for k, v in counts.items()}
        finally:
            sup.tell(Shutdown(reason="bench end"))
            if not sup.actor_stopped.wait(3):
                clock.advance(60_000)
                sup.actor_stopped.wait(5)
            owner.stop()
            store.close()
            io.stop()


def _until(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.0005)
