"""A small trading world for tests: virtual clock, real store, paper exchange, supervisor, price feed."""

from __future__ import annotations

import dataclasses
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pykka
import msgspec
import pytest

from actors.messages import OpenRequest, PositionClosed, PositionOpened, PositionOpenFailed, ProtectionReport
from actors.position import position_actor_name
from actors.position_state import rebuild
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.exchange import MARKET_FILES
from adapters.markets import Markets
from adapters.venue import Venue
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from core.messages import Shutdown, StartChild
from supervision.supervisor import Supervisor
from tests.conftest import SHARED, eventually, make_config
from tradebot.wiring import build_executor, paper_style, position_spec, trading_children

BTC = "BTC/USDT:USDT"


class Collector(ManagedActor):
    """Stands in for the intake: records what position actors report."""

    def __init__(self, **kwargs: Any) -> None:
        # Set before start: a proxy may read it while on_start is still taking the epoch.
        super().__init__(**kwargs)
        self.got: list[Any] = []
        self.cond = threading.Condition()

    @handles(PositionOpened, PositionOpenFailed, PositionClosed, ProtectionReport)
    def _got(self, msg: Any) -> None:
        self.got.append(msg)


@dataclasses.dataclass
class World:
    ctx: ActorContext
    exchange: PaperExchange
    venue: Venue
    sup: pykka.ActorRef
    collector: pykka.ActorRef

    def open(self, symbol: str = "BTCUSDT", side: str = "long", pid: str = "p1", quote: str = "100") -> str:
        req = OpenRequest(position_id=pid, exchange="paper", symbol=symbol, side=side, quote_amount=Decimal(quote), leverage=10, correlation_id=f"sig-{pid}", requested_by=self.collector)
        self.sup.tell(StartChild(spec=position_spec(self.venue, self.ctx.directory, pid, symbol, req)))
        return position_actor_name(symbol, pid)

    def reports(self) -> list[Any]:
        return self.collector.proxy().got.get()

    def events(self, pid: str = "p1") -> list:
        return self.ctx.io.run(self.ctx.store.query(position_id=pid), 5)

    def state(self, pid: str = "p1"):
        return rebuild(self.events(pid))

    def engine(self, fn):
        return self.exchange.with_engine(fn)

    def open_orders(self) -> list[dict]:
        return self.ctx.io.run(self.exchange.fetch_open_orders(), 5)

    def positions(self) -> list[dict]:
        return self.ctx.io.run(self.exchange.fetch_positions(), 5)


@pytest.fixture
def engine_knobs() -> dict[str, Any]:
    return {}


@pytest.fixture
def extra_toml() -> str:
    """More config for the world (tests override it with parametrize)."""
    return ""


@pytest.fixture
def world(tmp_path: Path, ctx: ActorContext, engine_knobs: dict[str, Any], extra_toml: str):
    cfg = make_config(tmp_path, "[exchange]\nmax_attempts = 2\nretry_base_delay_ms = 1\n[position]\nretry_delay_ms = 10\nverify_interval_secs = 5\n[demo]\nsignals_file = \"\"\n" + extra_toml)
    if "reply_deadline_secs" not in extra_toml:
        # virtual time here runs thousands of times faster than the actors, and tests jump it by
        # minutes: a liveness deadline of 15 virtual seconds would read an owner merely behind
        # as hung. The guard's liveness is tested where time is stepped against its deadlines.
        cfg = msgspec.structs.replace(cfg, guard=msgspec.structs.replace(cfg.guard, reply_deadline_secs=24 * 3600))
    if engine_knobs.get("hedge_mode"):  # the account's position mode: the engine's and the bot's
        cfg = msgspec.structs.replace(cfg, exchange=msgspec.structs.replace(cfg.exchange, hedge_mode=True))
    ctx = dataclasses.replace(ctx, config=cfg, directory=Directory())
    markets = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
    engine = PaperEngine(markets, **{"flavour": "binance", "slippage_bps": Decimal(0), **engine_knobs})
    exchange = PaperExchange(engine, ctx.clock, flavour="binance")
    ctx.io.run(exchange.load_markets(), 5)
    exchange.set_mark(BTC, Decimal("40000"))
    venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", ctx.clock, ctx.store), paper_style(cfg))
    collector = Collector.start(name="collector", ctx=ctx)
    sup = Supervisor.start(ctx=ctx, children=trading_children(cfg, venue, ctx.directory, []))
    yield World(ctx, exchange, venue, sup, collector)
    sup.tell(Shutdown(reason="test end"))
    if not sup.actor_stopped.wait(3):
        ctx.clock.advance(60_000)
        sup.actor_stopped.wait(5)
    collector.stop()



def opened(world: World, pid: str = "p1") -> PositionOpened:
    return eventually(lambda: [r for r in world.reports() if isinstance(r, PositionOpened) and r.position_id == pid], what=f"{pid} opened")[0]


def actor_gone(world: World, name: str) -> bool:
    return world.sup.proxy().refs.get().get(name) is None


def is_stop(args: dict) -> bool:
    return "stopPrice" in args["params"] or "triggerPrice" in args["params"]


def is_close(args: dict) -> bool:
    return bool(args["params"].get("reduceOnly")) and not is_stop(args)


STOP_REFUSED = lambda: ccxt.InvalidOrder('binanceusdm {"code":-4045,"msg":"Reach max stop order limit."}')  # noqa: E731


def advance_until(world: World, predicate, what: str, step_ms: int = 50):
    return eventually(lambda: (world.ctx.clock.advance(step_ms), predicate())[1], what=what)




def fees_by_hand(world: World, order_id: str | None = None) -> Decimal:
    """What the paper exchange charged, by hand: its taker rate on each of its fills' notional (on its 1e-8
    USDT grid), of one order or of all; read off the exchange, not off the bot's events."""
    from decimal import ROUND_HALF_UP

    def each(e: Any, now: int) -> list[tuple[Decimal, Decimal, Decimal]]:
        return [(f.qty, f.price, e.config.taker_fee_rate) for f in e.fills if order_id is None or f.order_id == order_id]

    return sum(((q * p * r).quantize(Decimal("1E-8"), rounding=ROUND_HALF_UP) for q, p, r in world.engine(each)), Decimal(0))
