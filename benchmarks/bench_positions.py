"""Position actors on the paper exchange: entry-to-stop gap, and mark ticks through 500 actors.

The 500 positions are real: opened through the real atomic-open flow, each
with its own stop on the paper exchange. The exchange lists 500 markets for
that, each a copy of the recorded BTC/USDT:USDT rules under another name.
"""

from __future__ import annotations


import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from actors.messages import MarkPrice, OpenRequest, PositionOpened
from actors.position import PositionActor
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.markets import Markets
from adapters.paper import FaultPlan, PaperEngine, PaperExchange
from adapters.venue import STYLES, Venue
from benchmarks._util import pct, row, summary_us
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from core.messages import Message, Shutdown, StartChild
from supervision.supervisor import ChildSpec, Supervisor
from core.clock import RealClock
from core.config import parse_config
from tradebot.wiring import build_executor

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class TimedMark(Message, frozen=True, kw_only=True):
    mark: MarkPrice
    sent_ns: int


class Collect(Message, frozen=True, kw_only=True):
    pass


class TimedPosition(PositionActor):
    """The real position actor, plus a stopwatch around its mark-price handler."""

    def started(self) -> None:
        self.lat: list[int] = []
        super().started()

    @handles(TimedMark)
    def _timed(self, msg: TimedMark) -> None:
        self._on_mark(msg.mark)
        self.lat.append(time.perf_counter_ns() - msg.sent_ns)

    @handles(Collect)
    def _collect(self, msg: Collect) -> list[int]:
        out, self.lat = self.lat, []
        return out


class Opened(ManagedActor):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.opened: dict[str, PositionOpened] = {}  # before start: a proxy may read it while on_start takes the epoch

    @handles(PositionOpened)
    def _got(self, msg: PositionOpened) -> None:
        self.opened[msg.position_id] = msg


def cloned_markets(n: int) -> Markets:
    btc = Markets.from_file(SHARED / "markets" / "binanceusdm-linear.json").resolve("BTCUSDT")
    return Markets([msgspec.structs.replace(btc, symbol=f"S{i:03d}/USDT:USDT", id=f"S{i:03d}USDT", base=f"S{i:03d}") for i in range(n)])


class Bench:
    def __init__(self, tmp: str, n_markets: int, faults: FaultPlan | None) -> None:
        self.io = IOLoop("bench-io").start()
        self.store = EventStore(Path(tmp) / "bench.db", self.io).open()
        self.clock = RealClock()
        cfg = parse_config('[position]\nverify_interval_secs = 3600\n[demo]\nsignals_file = ""\n', base_dir=Path(tmp))
        self.ctx = ActorContext(clock=self.clock, io=self.io, store=self.store, config=cfg, directory=Directory())
        self.markets = cloned_markets(n_markets)
        engine = PaperEngine(self.markets, flavour="binance", initial_balance=Decimal(10**9), slippage_bps=Decimal(0))
        self.exchange = PaperExchange(engine, self.clock, flavour="binance", faults=faults, markets_path=SHARED / "markets" / "binanceusdm-linear.json")
        for m in self.markets:
            self.exchange.set_mark(m.symbol, Decimal(40000))
        self.venue = Venue("paper", self.exchange, self.markets, build_executor(cfg, "paper", self.clock, self.store), STYLES["binance"])
        self.sup = Supervisor.start(ctx=self.ctx, children=[])
        self.collector = Opened.start(name="collector", ctx=self.ctx)

    def open(self, symbols: list[str], cls: type = PositionActor) -> None:
        for sym in symbols:
            pid = f"b{sym}"
            req = OpenRequest(position_id=pid, exchange="paper", symbol=sym, side="long", quote_amount=Decimal(100), leverage=10, correlation_id=pid, requested_by=self.collector)
            venue = self.venue
            self.sup.tell(StartChild(spec=ChildSpec(name=f"position:{sym}:{pid}", factory=lambda n, c, r=req, p=pid: cls.start(name=n, ctx=c, venue=venue, position_id=p, request=r), kind="position", restart="transient")))

    def wait_opened(self, count: int, timeout_s: float = 120) -> dict[str, PositionOpened]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.collector.proxy().opened.get()
            if len(got) >= count:
                return got
            time.sleep(0.01)  # benchmark driver waiting on a condition
        raise TimeoutError(f"only {len(self.collector.proxy().opened.get())} of {count} positions opened")

    def close(self) -> None:
        self.sup.tell(Shutdown(reason="bench done"))
        self.sup.actor_stopped.wait(60)
        self.collector.stop()
        self.store.close()
        self.io.stop()
        self.clock.close()


def entry_to_stop(orders: list[Any]) -> list[float]:
    """Per position: ms from the entry fill to its stop being live on the exchange."""
    by_pid: dict[str, dict[str, int]] = {}
    for o in orders:
        cid = o.client_id or ""
        if cid.startswith("tb-"):
            pid, kind = cid.split("-")[1], cid.split("-")[2][0]
            by_pid.setdefault(pid, {})[kind] = o.created_ms
    return [v["s"] - v["e"] for v in by_pid.values() if "e" in v and "s" in v]


def run() -> None:
    print("positions on the paper exchange")
    lat_lo, lat_hi = 5, 15
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(tmp, 200, FaultPlan(latency_ms_min=lat_lo, latency_ms_max=lat_hi, seed=1))
        try:
            symbols = [m.id for m in b.markets]
            for i in range(0, len(symbols), 10):  # waves of 10 concurrent opens
                b.open(symbols[i : i + 10])
                b.wait_opened(i + 10)
            orders = b.exchange.with_engine(lambda e, now: list(e.orders.values()))
            gaps = entry_to_stop(orders)
            mean_rt = (lat_lo + lat_hi) / 2
            row(f"entry fill -> stop live ({len(gaps)} positions, latency {lat_lo}-{lat_hi} ms)", f"p50 {pct(gaps, 50):.0f} ms  p99 {pct(gaps, 99):.0f} ms  max {max(gaps):.0f} ms")
            row("  the same in exchange round trips (mean latency 10 ms)", f"p50 {pct(gaps, 50) / mean_rt:.2f}  p99 {pct(gaps, 99) / mean_rt:.2f}")
            m = b.exchange.with_engine(lambda e, now: e.metrics(now))
            row("  paper exchange: unprotected ms, all positions", f"{m['unprotected_ms']} ms total, longest stretch {m['max_unprotected_stretch_ms']} ms, now {m['unprotected_now']}")
        finally:
            b.close()

    with tempfile.TemporaryDirectory() as tmp:
        n = 500
        b = Bench(tmp, n, None)
        try:
            t0 = time.perf_counter()
            b.open([m.id for m in b.markets], cls=TimedPosition)
            b.wait_opened(n)
            row(f"open {n} positions (no latency), all protected", f"{time.perf_counter() - t0:.2f} s")
            refs = [b.ctx.directory.lookup(f"position:{m.id}:b{m.id}") for m in b.markets]
            now_ms = b.clock.now_ms()
            for ref, m in zip(refs, b.markets):  # +1.75 % on the exchange too: every position starts trailing (one move each)
                b.exchange.set_mark(m.symbol, Decimal(40700))
                ref.tell(MarkPrice(symbol=m.id, price=Decimal(40700), ts_ms=now_ms))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(b.io.run(b.store.query(types=("position.stop_moved",)), 30)) < n:
                time.sleep(0.05)  # waiting for the 500 first moves (bounded)
            row(f"  {n} positions activated trailing and moved their stop", f"{len(b.io.run(b.store.query(types=('position.stop_moved',)), 30))} moves")
            price = Decimal(40750)  # trailing and improving; moves held by the 60 s rate limit: pure decision cost
            for m in b.markets:
                b.exchange.set_mark(m.symbol, price)
            rounds = 40
            start = time.perf_counter()
            for _ in range(rounds):
                for ref, m in zip(refs, b.markets):
                    ref.tell(TimedMark(mark=MarkPrice(symbol=m.id, price=price, ts_ms=now_ms), sent_ns=time.perf_counter_ns()))
            samples: list[int] = []
            for ref in refs:
                samples.extend(ref.ask(Collect(), timeout=120))
            elapsed = time.perf_counter() - start
            row(f"mark ticks through {n} trailing position actors (burst)", f"{len(samples) / elapsed:,.0f} ticks/s")
            row("  tick-to-decision latency, burst", summary_us(samples))
            paced: list[int] = []
            for _ in range(10):
                for ref, m in zip(refs, b.markets):
                    ref.tell(TimedMark(mark=MarkPrice(symbol=m.id, price=price, ts_ms=now_ms), sent_ns=time.perf_counter_ns()))
                time.sleep(0.1)  # one tick per position every 100 ms: 5,000 ticks/s offered
            for ref in refs:
                paced.extend(ref.ask(Collect(), timeout=120))
            row(f"  tick-to-decision latency, paced ({n} ticks per 100 ms)", summary_us(paced))
        finally:
            b.close()



