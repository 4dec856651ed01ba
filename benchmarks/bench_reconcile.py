"""Reconciliation: one full reconcile of 500 positions and 2,000 open orders; the request budget."""

from __future__ import annotations

import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

import msgspec

from actors.sync import SyncActor
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.venue import STYLES, Venue
from benchmarks._util import pct, row
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from supervision.messages import ChildStopped, ReconcileFinished, ReconcileNow, StartChild
from tradebot.clock import RealClock
from tradebot.config import parse_config
from tradebot.wiring import build_executor

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
    btc = Markets.from_file(SHARED / "markets" / "binanceusdm-linear.json").resolve("BTCUSDT")
    markets = Markets([msgspec.structs.replace(btc, symbol=f"Z{i:03d}/USDT:USDT", id=f"Z{i:03d}USDT", base=f"Z{i:03d}") for i in range(n_pos)])
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
    c = parse_config("")
    per_hour_shared = 2 * 3600 / c.guard.interval_secs  # positions + open orders per guard check (sync shares them)
    own = 3600 / c.position.verify_interval_secs
    row("reconciliation reads for the whole account", f"{per_hour_shared:.0f} per hour while positions are open (2 reads per guard check), none when flat except sync's own every {c.sync.interval_secs} s")
    for n in (5, 50, 500):
        row(f"  per position-hour with {n} positions", f"{per_hour_shared / n + own:.1f} (incl. the owner's own check every {c.position.verify_interval_secs} s; the seed's bot: 30)")

