"""The composition root: which children the supervisor starts, in order.

Dependency order: the exchange (an adapter on the I/O loop, not an actor),
then the price feed, sync and guard, then positions recovered from the store,
then the intake. Intake stays closed until the sync actor's first reconcile
has succeeded, so nothing new is opened until what exists is known and
protected.

``make run`` runs the paper exchange *in-process* (``paper.mode``): one
command, no second process to manage, the same venue layer as a real
exchange, and its state saved across restarts. With ``paper.mode =
"process"`` the bot talks to ``tradebot paper serve`` instead, so killing the
bot (even with SIGKILL) leaves the exchange running, as in life.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from actors.demo_intake import DemoIntake, load_signals
from actors.guard import GuardActor
from actors.mark_book import MarkBook, follow_open, follower
from actors.messages import OpenRequest
from actors.position import PositionActor, position_actor_name
from actors.price_feed import PriceFeed
from actors.signal_intake import FeedStateChanged, SignalFrame, SignalIntake
from actors.sync import SyncActor
from adapters.executor import executor_for
from adapters.markets import Markets
from adapters.venue import Venue
from adapters.venue_health import HealthReport, VenueHealth, VenueHealthChanged
from adapters.venues import VenueStyle, style_for
from supervision.supervisor import ChildSpec

if TYPE_CHECKING:
    from core.config import Config
    from supervision.runtime import Runtime


class NamedRef:
    """A ref that always means the current incarnation of a registered child."""

    def __init__(self, directory: Any, name: str) -> None:
        self._directory, self._name = directory, name

    def tell(self, message: Any) -> None:
        self._directory.tell(self._name, message)


def build_paper_venue(runtime: Runtime) -> Venue:
    """The paper exchange behind the venue layer, in-process or in its own process."""
    from adapters.paper.client import PaperClient
    from adapters.paper.hosting import StateSaver, build_paper_exchange, markets_path

    config, clock = runtime.config, runtime.clock
    markets = Markets.from_file(markets_path(config))
    if config.paper.mode == "process":
        exchange: Any = PaperClient(config.paper_socket)
        runtime.resources.append(lambda: runtime.io.run(exchange.close(), 5))
    else:
        exchange = build_paper_exchange(config, clock, config.paper_state_path)
        exchange.start()
        saver = StateSaver(exchange, config.paper_state_path, clock)
        runtime.resources.append(exchange.stop)
        runtime.resources.append(saver.close)
    runtime.io.run(exchange.load_markets(), 30)
    return Venue("paper", exchange, markets, build_executor(config, "paper", clock, runtime.store), paper_style(config))


def paper_style(config: Config) -> VenueStyle:
    """The paper exchange's flavour, in the account's position mode (``exchange.hedge_mode``)."""
    return style_for(config.paper.flavour, hedge_mode=config.exchange.hedge_mode)


def build_real_venue(runtime: Runtime) -> Venue:
    """Binance USDⓈ-M or Bybit linear through ccxt: the same venue layer as the paper exchange."""
    from adapters.ccxt_exchange import build_ccxt_venue

    venue = runtime.io.run(build_ccxt_venue(runtime.config, runtime.clock, runtime.store), 60)
    runtime.resources.append(lambda: runtime.io.run(venue.exchange.close(), 10))
    return venue


#: The venue's executor with its request budget (the composition root's name for it).
build_executor = executor_for


def position_spec(venue: Venue, directory: Any, position_id: str, symbol: str, request: OpenRequest | None) -> ChildSpec:
    """A transient child: once its position is closed it stays stopped."""
    feed, intake = NamedRef(directory, "price_feed"), NamedRef(directory, "intake")
    return ChildSpec(
        name=position_actor_name(symbol, position_id),
        factory=lambda name, ctx: PositionActor.start(name=name, ctx=ctx, venue=venue, position_id=position_id, request=request, price_feed=feed, report_to=intake),
        kind="position",
        restart="transient",
    )


def trading_children(config: Config, venue: Venue, directory: Any, open_positions: list[dict[str, Any]]) -> list[ChildSpec]:
    adopt_spec = lambda req: position_spec(venue, directory, req.position_id, req.symbol, req)  # noqa: E731
    children = [
        ChildSpec(name="price_feed", factory=lambda name, ctx: PriceFeed.start(name=name, ctx=ctx, venue=venue)),
        ChildSpec(name="sync", factory=lambda name, ctx: SyncActor.start(name=name, ctx=ctx, venue=venue, position_spec=adopt_spec)),
        ChildSpec(name="guard", factory=lambda name, ctx: GuardActor.start(name=name, ctx=ctx)),
    ]
    for p in open_positions if not config.exchange.read_only else ():  # read-only: nobody acts on them
        if p.get("exchange") == venue.name:
            children.append(position_spec(venue, directory, p["position_id"], p["symbol"], None))
    children.append(intake_spec(config, venue, directory))
    return children


def intake_spec(config: Config, venue: Venue, directory: Any) -> ChildSpec:
    """The intake child: the WebSocket signal actor, or the simple file replay."""
    spec_for = lambda req: position_spec(venue, directory, req.position_id, req.symbol, req)  # noqa: E731
    if config.signals.source == "file":
        signals = load_signals(config.demo_signals_path) if config.demo_signals_path else []
        return ChildSpec(name="intake", factory=lambda name, ctx: DemoIntake.start(name=name, ctx=ctx, signals=signals, exchange=venue.name, markets=venue.markets, position_spec=spec_for), kind="intake")
    markets = {venue.name: venue.markets, "paper": venue.markets}
    return ChildSpec(name="intake", factory=lambda name, ctx: SignalIntake.start(name=name, ctx=ctx, venue=venue, markets_by_exchange=markets, position_spec=spec_for), kind="intake")


def start_signal_feed(runtime: Runtime) -> None:
    """The WebSocket path on the I/O loop: (bundled server ->) client -> the intake actor."""
    from adapters.signal_client import SignalClient
    from adapters.signal_server import SignalServer, load_replay

    cfg = runtime.config.signals
    if cfg.source == "file":
        return
    deadline = time.monotonic() + 10
    while runtime.directory.lookup("intake") is None and time.monotonic() < deadline:
        time.sleep(0.01)  # start-up on the main thread, bounded: the supervisor registers its children
    url = cfg.url
    if cfg.source == "bundled":
        server = SignalServer(replay=load_replay(runtime.config.signals_replay_path), waves_every_s=cfg.wave_every_secs, exchange="paper")
        runtime.io.run(server.start(), 10)
        runtime.resources.append(lambda: runtime.io.run(server.stop(), 10))
        url = server.url
    directory = runtime.directory
    client = SignalClient(
        url,
        on_message=lambda raw: directory.tell("intake", SignalFrame(raw=raw)),
        on_state=lambda state, info: directory.tell("intake", FeedStateChanged(state=str(state), info=dict(info or {}))),
        heartbeat_s=cfg.heartbeat_secs,
        dead_after_s=cfg.dead_after_secs,
        buffer_size=cfg.buffer_size,
    )
    runtime.io.run(client.start(), 10)
    runtime.resources.insert(0, lambda: runtime.io.run(client.stop(), 10))
    if cfg.source == "bundled":
        runtime.io.run(server.serve_in_background(first_delay_s=1.0), 10)  # publishing starts once the client listens


def connect_health(health: VenueHealth, supervisor: Callable[[], Any]) -> Callable[[HealthReport], None]:
    """Every change of a venue's health is told to the supervisor (``supervisor()``: its ref, or None
    before it exists); returns the teller, to tell it the state once it is up. Runs on the I/O loop:
    it only tells."""

    def tell(report: HealthReport) -> None:
        ref = supervisor()
        if ref is not None:
            try:
                ref.tell(VenueHealthChanged(report=report))
            except pykka.ActorDeadError:
                pass

    health.subscribe(tell)
    return tell


def start_mark_book(runtime: Runtime) -> MarkBook:
    """The marks the bot saw, for ``ctl positions`` and the dashboard (registered as ``mark_book``);
    it follows the open positions' symbols, from now and after each entry or exit."""
    store, venue = runtime.store, runtime.venue
    assert store is not None

    def increments(symbol: str) -> tuple[Any, Any]:
        try:
            m = venue.markets.resolve(symbol)
        except (KeyError, ValueError, AttributeError):
            return None, None
        return m.tick_size, m.step_size

    book = MarkBook(runtime.directory, increments=increments)
    runtime.directory.register("mark_book", book)

    def open_rows() -> Any:
        return store.positions(open_only=True, consistent=False)

    store.subscribe("mark_book", follower(book, open_rows), maxlen=1000)
    runtime.after_start.append(lambda: void(runtime.io.submit(follow_open(book, open_rows))))  # what is open already
    return book


def void(_: Any) -> None:
    """Drop a result (a hook returns nothing)."""


def build_children(runtime: Runtime) -> list[ChildSpec]:
    """Child specs for the configured system (the paper exchange is the only venue so far)."""
    config = runtime.config
    venue = build_paper_venue(runtime) if config.exchange.name == "paper" else build_real_venue(runtime)
    runtime.venue = venue
    tell_health = connect_health(venue.executor.health, lambda: runtime.supervisor)
    runtime.after_start.append(lambda: tell_health(venue.executor.health.report()))  # what happened before it was up
    assert runtime.store is not None, "the store opens before the children are built"
    open_positions = runtime.io.run(runtime.store.positions(open_only=True), 30)
    from supervision.commands import status_notes

    start_mark_book(runtime)

    runtime.store.subscribe("status", status_notes(lambda: runtime.supervisor), maxlen=1000)  # ctl status: last reconcile, last wave
    from tradebot.ops import ops_children, start_http

    children = [*ops_children(runtime), *trading_children(config, venue, runtime.directory, open_positions)]
    runtime.after_start.append(lambda: void(start_http(runtime)))
    runtime.after_start.append(lambda: start_signal_feed(runtime))  # once "intake" is there to hear it
    return children
