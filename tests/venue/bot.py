"""The real bot path on the venue server: config, exchange, venue, supervisor and trading tree.

Everything between the position actor and the wire is production code:
PositionActor, PriceFeed, SyncActor, GuardActor, Venue + style, Executor and
its limiter, ``build_ccxt_venue`` (load_markets and the position-mode check
over HTTP), ccxt's signing, routing and parsing. Time is real (the venue is).
Used by ``tests/test_venue_binance.py``, ``tests/test_venue_bybit.py`` and ``benchmarks/bench_venue.py``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pykka

from actors.messages import OpenRequest, PositionClosed, PositionOpened, PositionOpenFailed, ProtectionReport
from actors.position import position_actor_name
from adapters.ccxt_exchange import build_ccxt_venue
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.venue import Venue
from core.clock import RealClock
from core.config import parse_config
from core.messages import Shutdown, StartChild
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from supervision.supervisor import Supervisor
from tests.venue.binance_server import BinanceVenueServer, urls_toml
from tests.venue.bybit_server import BybitVenueServer
from tests.venue.bybit_server import urls_toml as bybit_urls_toml
from tradebot.wiring import position_spec, trading_children

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
API_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
ENV = {"TB_VENUE_KEY": API_KEY, "TB_VENUE_SECRET": API_SECRET}

#: Streams off (polling, as with streams down) and fast cadences so scenarios take seconds:
#: the guard every second, sync every 2 s, marks every 200 ms.
FAST = """
[sync]
use_streams = false
interval_secs = 2
grace_secs = 2
[feeds]
use_streams = false
mark_interval_ms = 200
[position]
retry_delay_ms = 50
verify_interval_secs = 600
[trailing]
min_move_interval_secs = 0
[guard]
interval_secs = 1
[demo]
signals_file = ""
"""


def exchange_toml(url: str, *, timeout_ms: int = 2000, rate_limit_delay_ms: int = 200, extra: str = "", name: str = "binanceusdm", hedge_mode: bool = False) -> str:
    """A live-mode (testnet = false) config for ``name`` (binanceusdm or bybit) whose every request goes to ``url``."""
    urls = bybit_urls_toml if name == "bybit" else urls_toml
    return (
        f'[exchange]\nname = "{name}"\ntestnet = false\napi_key_env = "TB_VENUE_KEY"\napi_secret_env = "TB_VENUE_SECRET"\n'
        f"max_attempts = 4\nretry_base_delay_ms = 20\nrate_limit_delay_ms = {rate_limit_delay_ms}\nhedge_mode = {str(hedge_mode).lower()}\n"
        + extra  # [exchange] keys, before the ccxt_options tables begin
        + urls(url).rstrip("\n")
        + f"\ntimeout = {timeout_ms}\n"
    )


def server(**kw: Any) -> BinanceVenueServer:
    return BinanceVenueServer(api_key=API_KEY, secret=API_SECRET, **kw).start()


def bybit_server(**kw: Any) -> BybitVenueServer:
    return BybitVenueServer(api_key=API_KEY, secret=API_SECRET, **kw).start()


class Collector(ManagedActor):
    """Stands in for the intake: records what position actors report."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.got: list[Any] = []  # set before the actor runs: a proxy may ask at once

    @handles(PositionOpened, PositionOpenFailed, PositionClosed, ProtectionReport)
    def _got(self, msg: Any) -> None:
        self.got.append(msg)


@dataclasses.dataclass
class Bot:
    server: BinanceVenueServer | BybitVenueServer
    ctx: ActorContext
    venue: Venue
    sup: pykka.ActorRef
    collector: pykka.ActorRef
    _ids: Any = dataclasses.field(default_factory=lambda: itertools.count(1))

    def open(self, symbol: str = "BTCUSDT", side: str = "long", quote: str = "100", pid: str | None = None, leverage: int = 10) -> str:
        pid = pid or f"p{next(self._ids)}"
        req = OpenRequest(position_id=pid, exchange=self.venue.name, symbol=symbol, side=side, quote_amount=Decimal(quote), leverage=leverage, correlation_id=f"sig-{pid}", requested_by=self.collector)
        self.sup.tell(StartChild(spec=position_spec(self.venue, self.ctx.directory, pid, symbol, req)))
        return position_actor_name(symbol, pid)

    def reports(self) -> list[Any]:
        return list(self.collector.proxy().got.get())

    def opened(self) -> list[PositionOpened]:
        return [r for r in self.reports() if isinstance(r, PositionOpened)]

    def events(self, **query: Any) -> list[Any]:
        return self.ctx.io.run(self.ctx.store.query(**query), 10)

    def stop(self) -> None:
        self.sup.tell(Shutdown(reason="test end"))
        self.sup.actor_stopped.wait(10)
        self.collector.stop()
        self.ctx.io.run(self.venue.exchange.close(), 10)


def start_bot(
    tmp: Path, venue_server: BinanceVenueServer | BybitVenueServer, *, toml: str = FAST, timeout_ms: int = 2000, rate_limit_delay_ms: int = 200,
    exchange: Any = None, hedge_mode: bool = False, exchange_extra: str = "",
) -> Bot:
    """The trading tree over real ccxt (binanceusdm or bybit, as the server speaks) on
    ``venue_server`` (start-up included); ``exchange``: a ccxt exchange built by the caller
    (e.g. with its HTTP calls recorded); ``exchange_extra``: more ``[exchange]`` lines
    (``read_only = true``, probe cadences)."""
    tmp.mkdir(parents=True, exist_ok=True)
    name = getattr(venue_server, "exchange_name", "binanceusdm")
    cfg = parse_config(
        exchange_toml(venue_server.url, timeout_ms=timeout_ms, rate_limit_delay_ms=rate_limit_delay_ms, name=name, hedge_mode=hedge_mode, extra=exchange_extra) + toml,
        base_dir=tmp,
    )
    io = IOLoop("venue-io").start()
    store = EventStore(tmp / "events.db", io).open()
    clock = RealClock()
    ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=Directory())
    venue = io.run(build_ccxt_venue(cfg, clock, store, env=ENV, exchange=exchange), 30)
    collector = Collector.start(name="collector", ctx=ctx)
    sup = Supervisor.start(ctx=ctx, children=trading_children(cfg, venue, ctx.directory, []))
    return Bot(venue_server, ctx, venue, sup, collector)


def close_bot(bot: Bot) -> None:
    """Stop the tree, then the store, the loop and the clock (bounded)."""
    try:
        bot.stop()
    finally:
        bot.ctx.store.close()
        bot.ctx.io.stop()
        bot.ctx.clock.close()


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition", poll_s: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll_s)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]
