"""Real price history through the whole trailing path, with faults: shared by a test and `make bench`.

50 (or N) positions on markets that copy BTC/USDT:USDT's rules and replay the
real BTC 1-minute history (a candle = 4 ticks), each opened at a different
moment so entries and paths differ. The paper exchange runs on the real clock
with the history sped up, injects transient errors, ambiguous timeouts and
latency, and measures what the user cares about: time unprotected, time with
two stops, orphans. Every event goes to a real SQLite store.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from actors.messages import OpenRequest, PositionClosed, PositionOpened, PositionOpenFailed
from actors.position import position_actor_name
from actors.position_state import rebuild
from actors.price_feed import PriceFeed
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.markets import Markets
from adapters.paper import FaultPlan, PaperEngine, PaperExchange, PriceReplay
from adapters.venue import STYLES, Venue
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from core.messages import ClosePosition, Shutdown, StartChild
from supervision.supervisor import ChildSpec, Supervisor
from core.clock import RealClock
from core.config import parse_config
from tradebot.wiring import build_executor, position_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FAULTS = FaultPlan(error_rates={"*": {"network": 0.05}}, ambiguous_timeout_rate={"create_order": 0.01, "cancel_order": 0.01}, latency_ms_min=1, latency_ms_max=8, seed=11)

CONFIG = """
[exchange]
max_attempts = 4
retry_base_delay_ms = 5
retry_max_delay_ms = 50
rate_limit_delay_ms = 20
[position]
retry_delay_ms = 20
verify_interval_secs = 2
[trailing]
activation_percent = 1.0
callback_percent = 0.5
min_move_interval_secs = 1
[feeds]
mark_interval_ms = 50
[demo]
signals_file = ""
"""


class Counter(ManagedActor):
    def started(self) -> None:
        self.opened: set[str] = set()
        self.failed: set[str] = set()

    @handles(PositionOpened)
    def _opened(self, msg: PositionOpened) -> None:
        self.opened.add(msg.position_id)

    @handles(PositionOpenFailed)
    def _failed(self, msg: PositionOpenFailed) -> None:
        self.failed.add(msg.position_id)

    @handles(PositionClosed)
    def _closed(self, msg: PositionClosed) -> None:
        pass  # expected at the end of the replay


def _markets(n: int) -> Markets:
    btc = Markets.from_file(SHARED / "markets" / "binanceusdm-linear.json").resolve("BTCUSDT")
    return Markets([msgspec.structs.replace(btc, symbol=f"R{i:02d}/USDT:USDT", id=f"R{i:02d}USDT", base=f"R{i:02d}") for i in range(n)])


def run_replay(n_positions: int = 50, seconds: float = 20.0, time_scale: int = 600, faults: FaultPlan | None = FAULTS) -> dict[str, Any]:
    """Open n positions over the first seconds, let them trail, close them all; return the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("replay-io").start()
        store = EventStore(Path(tmp) / "replay.db", io).open()
        clock = RealClock()
        cfg = parse_config(CONFIG, base_dir=Path(tmp))
        ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=Directory())
        markets = _markets(n_positions)
        engine = PaperEngine(markets, flavour="binance", initial_balance=Decimal(10**9), slippage_bps=Decimal(1))
        histories = {m.base: "btc-perp-1m-2022-01.csv" for m in markets}
        replay = PriceReplay(markets, start_ms=clock.now_ms(), time_scale=time_scale, data_dir=SHARED / "prices", real_histories=histories)
        exchange = PaperExchange(engine, clock, flavour="binance", faults=faults, price_replay=replay, tick_interval_ms=20, markets_path=SHARED / "markets" / "binanceusdm-linear.json")
        exchange.start()
        venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), STYLES["binance"])
        sup = Supervisor.start(ctx=ctx, children=[ChildSpec(name="price_feed", factory=lambda n, c: PriceFeed.start(name=n, ctx=c, venue=venue))])
        counter = Counter.start(name="counter", ctx=ctx)
        started = time.monotonic()
        try:
            ids = []
            for i, m in enumerate(markets):
                pid = f"r{i:02d}"
                side = "long" if i % 2 == 0 else "short"
                req = OpenRequest(position_id=pid, exchange="paper", symbol=m.id, side=side, quote_amount=Decimal(100), leverage=10, correlation_id=pid, requested_by=counter)
                sup.tell(StartChild(spec=position_spec(venue, ctx.directory, pid, m.id, req)))
                ids.append((pid, m.id))
                time.sleep(seconds * 0.3 / n_positions)  # staggered entries (driver pacing, not an actor)
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))  # let the history play
            for pid, sym in ids:
                ref = ctx.directory.lookup(position_actor_name(sym, pid))
                if ref is not None:
                    ref.tell(ClosePosition(reason="end of replay"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(ctx.directory.lookup(position_actor_name(s, p)) for p, s in ids):
                time.sleep(0.05)  # waiting for every position actor to finish (bounded)
            metrics = exchange.with_engine(lambda e, now: e.metrics(now))
            orders = exchange.with_engine(lambda e, now: list(e.orders.values()))
            events = io.run(store.query(type_prefixes=("position.",)), 60)
            requests = io.run(store.query(types=("exchange.request",)), 60)
        finally:
            exchange.stop()
            sup.tell(Shutdown(reason="replay done"))
            sup.actor_stopped.wait(30)
            counter.stop()
            store.close()
            io.stop()
            clock.close()
    return _figures(metrics, orders, events, requests, ids, n_positions, seconds, time_scale)


def _figures(metrics: dict[str, Any], orders: list[Any], events: list[Any], requests: list[Any], ids: list[tuple[str, str]], n: int, seconds: float, time_scale: int) -> dict[str, Any]:
    by_cid = {o.client_id: o for o in orders if o.client_id}
    initial_gap_ms = 0
    loosened = []
    moves = 0
    overlap_steps = []
    for pid, _sym in ids:
        evs = [e for e in events if e.position_id == pid]
        entry = by_cid.get(f"tb-{pid}-e1")
        first_stop = next((by_cid.get(e.data["client_id"]) for e in evs if e.type == "position.stop_placed"), None)
        if entry is not None and first_stop is not None and entry.filled > 0:
            initial_gap_ms += first_stop.created_ms - (entry.last_trade_ms or entry.created_ms)
        prices = [Decimal(e.data["price"]) for e in evs if e.type in ("position.stop_placed", "position.stop_moved")]
        side = next((e.data["side"] for e in evs if e.type == "position.open_requested"), "long")
        for a, b in zip(prices, prices[1:]):
            if (b < a) if side == "long" else (b > a):
                loosened.append((pid, a, b))
        for e in evs:
            if e.type == "position.stop_moved":
                moves += 1
                new, old = by_cid.get(e.data["client_id"]), next((o for o in orders if o.id == e.data["old_order_id"]), None)
                if new is not None and old is not None:
                    overlap_steps.append(max(0, old.updated_ms - new.created_ms))
        rebuild(evs)  # every history must fold without an invalid transition
    hours = n * seconds * time_scale / 3_600
    return {
        "positions": n,
        "history_hours": seconds * time_scale / 3_600,
        "moves": moves,
        "moves_per_position_hour": moves / hours if hours else 0.0,
        "unprotected_ms": metrics["unprotected_ms"],
        "initial_gap_ms": initial_gap_ms,
        "unprotected_ms_outside_entry": metrics["unprotected_ms"] - initial_gap_ms,
        "overlap_ms": metrics["overlap_ms"],
        "max_overlap_step_ms": max(overlap_steps, default=0),
        "orphans_at_end": metrics["orphan_orders"],
        "open_positions_at_end": metrics["positions_open"],
        "loosened": loosened,
        "failed_requests": sum(1 for r in requests if r.data.get("outcome") != "ok"),
        "requests": len(requests),
    }
