"""Issue 16, bug 2: after a restart, intake opens only once every recovered position has checked its stop.

Real supervisor, sync, guard, price feed and position actors, real store, the
paper exchange; virtual time. Three positions are opened, the tree is shut
down (their stops stay on the exchange), then a new tree recovers them from
the store while the exchange fails the owners' order look-ups for a while;
the startup reconcile (positions and open orders) succeeds at once. The
intake (a stand-in that records what it is told) must not open before every
owner's look-up has been answered; and one owner that never gets an answer
keeps it closed only for ``supervisor.recovery_wait_secs``, with an error
event naming it.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.messages import OpenRequest
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.exchange import MARKET_FILES
from adapters.venue import Venue
from core.messages import IntakeChanged, Shutdown, StartChild
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import SHARED, eventually, make_config
from tradebot.wiring import build_executor, paper_style, position_spec, trading_children

SYMBOLS = {"BTCUSDT": "BTC/USDT:USDT", "ETHUSDT": "ETH/USDT:USDT", "XRPUSDT": "XRP/USDT:USDT"}
MARKS = {"BTC/USDT:USDT": "40000", "ETH/USDT:USDT": "3000", "XRP/USDT:USDT": "0.8"}
TOML = """
[exchange]
max_attempts = 1
retry_base_delay_ms = 1
[position]
retry_delay_ms = 200
verify_interval_secs = 3600
[sync]
use_streams = false
[supervisor]
recovery_wait_secs = 20
[feeds]
mark_interval_ms = 600000
[demo]
signals_file = ""
"""


class GateWatcher(ManagedActor):
    """Stands in for the intake: at each IntakeChanged, which owners' look-ups had been answered."""

    def __init__(self, *, exchange: PaperExchange, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.exchange = exchange
        self.seen: list[tuple[bool, set[str]]] = []

    @handles(IntakeChanged)
    def _changed(self, msg: IntakeChanged) -> None:
        answered = {r["args"]["symbol"] for r in list(self.exchange.requests) if r["method"] == "fetch_order" and r["outcome"] == "ok"}
        self.seen.append((msg.open, answered))


def _tree(ctx: ActorContext, venue: Venue, exchange: PaperExchange, open_positions: list[dict]) -> tuple[Any, list[ChildSpec]]:
    children = [c for c in trading_children(ctx.config, venue, ctx.directory, open_positions) if c.kind != "intake"]
    children.append(ChildSpec(name="intake", factory=lambda n, c: GateWatcher.start(name=n, ctx=c, exchange=exchange), kind="intake"))
    return Supervisor.start(ctx=ctx, children=children), children


def _stop(ctx: ActorContext, sup: Any) -> None:
    sup.tell(Shutdown(reason="test"))
    if not sup.actor_stopped.wait(3):
        ctx.clock.advance(60_000)
        sup.actor_stopped.wait(10)


def _setup(tmp_path: Path, ctx: ActorContext) -> tuple[ActorContext, PaperExchange, Venue, list[dict]]:
    cfg = make_config(tmp_path, TOML)
    ctx = dataclasses.replace(ctx, config=cfg, directory=Directory())
    markets = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
    exchange = PaperExchange(PaperEngine(markets, flavour="binance", slippage_bps=Decimal(0)), ctx.clock, flavour="binance")
    ctx.io.run(exchange.load_markets(), 5)
    for sym, mark in MARKS.items():
        exchange.set_mark(sym, Decimal(mark))
    venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", ctx.clock, ctx.store), paper_style(cfg))
    sup, _ = _tree(ctx, venue, exchange, [])
    for i, sym in enumerate(SYMBOLS):
        req = OpenRequest(position_id=f"r{i}", exchange="paper", symbol=sym, side="long", quote_amount=Decimal(100), leverage=10, correlation_id=f"sig-r{i}")
        sup.tell(StartChild(spec=position_spec(venue, ctx.directory, f"r{i}", sym, req)))
    protected = lambda: (rows := ctx.io.run(ctx.store.positions(), 5)) and len(rows) == 3 and all(r["state"] == "protected" for r in rows) and rows  # noqa: E731
    eventually(lambda: (ctx.clock.advance(50), protected())[1], timeout=30, what="three protected positions")
    _stop(ctx, sup)
    rows = ctx.io.run(ctx.store.positions(), 5)
    assert len(rows) == 3 and len([o for o in ctx.io.run(exchange.fetch_open_orders(), 5) if o["reduceOnly"]]) == 3
    exchange.requests.clear()
    return ctx, exchange, venue, rows


def _watcher(ctx: ActorContext) -> Any:
    return eventually(lambda: ctx.directory.lookup("intake"), what="the intake stand-in")


def _events(ctx: ActorContext, type_: str) -> list:
    return ctx.io.run(ctx.store.query(types=(type_,)), 5)


def test_intake_waits_for_every_recovered_owner_to_check_its_stop(tmp_path: Path, ctx: ActorContext):
    ctx, exchange, venue, rows = _setup(tmp_path, ctx)
    exchange.faults.fail_next("fetch_order", "network", count=6)  # the owners' checks fail for a while; the reconcile does not
    sup, _ = _tree(ctx, venue, exchange, rows)
    try:
        watcher = _watcher(ctx)
        eventually(lambda: (ctx.clock.advance(50), any(o for o, _ in watcher.proxy().seen.get()))[1], timeout=30, what="intake opened")
        opened = next(answered for is_open, answered in watcher.proxy().seen.get() if is_open)
        assert opened == set(SYMBOLS.values()), f"intake opened before every recovered owner checked its stop: only {sorted(opened)}"
        assert exchange.faults.pending("fetch_order") == 0
        assert _events(ctx, "sync.reconciled")[0].id < _events(ctx, "supervisor.recovery_complete")[0].id, "the reconcile alone did not open it"
        assert _events(ctx, "supervisor.recovery_complete")[0].data["owners"] == 3
        assert not _events(ctx, "supervisor.recovery_incomplete")
    finally:
        _stop(ctx, sup)


def test_an_owner_that_never_reports_holds_intake_only_for_the_bounded_wait(tmp_path: Path, ctx: ActorContext):
    ctx, exchange, venue, rows = _setup(tmp_path, ctx)
    exchange.faults.fail_next("fetch_order", "network", count=10_000, when=lambda a: a.get("symbol") == "ETH/USDT:USDT")
    sup, _ = _tree(ctx, venue, exchange, rows)
    try:
        watcher = _watcher(ctx)
        start = ctx.clock.now_ms()
        eventually(lambda: (ctx.clock.advance(100), any(o for o, _ in watcher.proxy().seen.get()))[1], timeout=30, what="intake opened after the bounded wait")
        assert ctx.clock.now_ms() - start >= 20_000, "not before recovery_wait_secs"
        incomplete = _events(ctx, "supervisor.recovery_incomplete")
        assert len(incomplete) == 1 and incomplete[0].data["missing"] == ["position:ETHUSDT:r1"]
        assert not _events(ctx, "supervisor.recovery_complete")
    finally:
        exchange.faults._script.clear()
        _stop(ctx, sup)
