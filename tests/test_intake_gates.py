"""Issue 11, bug 4 end to end: what the venue's health and a margin refusal do to new entries.

Real supervisor, real signal intake and position actors, real store, the paper
exchange (faults injected), the wiring's health hook; virtual time.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from actors.signal_intake import MARGIN_BLOCK, SignalFrame, SignalIntake
from adapters.errors import VenueError
from adapters.paper import PaperEngine, PaperExchange
from adapters.venue import STYLES, Venue
from core.messages import Shutdown
from core.signal_protocol import WAVE_MS, wave_of
from supervision.actor import ActorContext
from supervision.directory import Directory
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import SHARED, eventually, make_config
from tests.test_waves import markets
from tradebot.wiring import build_executor, connect_health, position_spec

D = Decimal
CONFIG = """
[exchange]
max_attempts = 2
retry_base_delay_ms = 1
[position]
retry_delay_ms = 10
quote_amount = 100
leverage = 10
verify_interval_secs = 3600
[feeds]
mark_interval_ms = 600000
[signals]
source = "bundled"
process_after_secs = 3
wave_limit = 2
buffer_factor = 3
max_open_positions = 1000
min_free_balance = 0
[venue_health]
unreachable_after_failures = 3
unreachable_after_secs = 10
margin_recheck_secs = 30
[demo]
signals_file = ""
"""


@pytest.fixture
def gates(tmp_path: Path, ctx: ActorContext):
    cfg = make_config(tmp_path, CONFIG)
    ctx = ActorContext(clock=ctx.clock, io=ctx.io, store=ctx.store, config=cfg, directory=Directory())
    ms = markets()
    engine = PaperEngine(ms, flavour="binance", initial_balance=D(150), slippage_bps=D(0), seed=5)  # margin for one entry of 100 (x10), not two
    exchange = PaperExchange(engine, ctx.clock, flavour="binance", markets_path=SHARED / "data" / "markets" / "binanceusdm-linear.json")
    for m in ms:
        exchange.set_mark(m.symbol, D(40000))
    venue = Venue("paper", exchange, ms, build_executor(cfg, "paper", ctx.clock, ctx.store), STYLES["binance"])
    spec_for = lambda req: position_spec(venue, ctx.directory, req.position_id, req.symbol, req)  # noqa: E731
    intake = ChildSpec(name="intake", factory=lambda n, c: SignalIntake.start(name=n, ctx=c, venue=venue, markets_by_exchange={"paper": ms}, position_spec=spec_for), kind="intake")
    holder: dict[str, Any] = {}
    connect_health(venue.executor.health, lambda: holder.get("sup"))
    sup = Supervisor.start(ctx=ctx, children=[intake])
    holder["sup"] = sup
    eventually(lambda: ctx.directory.lookup("intake"), what="intake started")
    yield ctx, exchange, venue, sup
    sup.tell(Shutdown(reason="test end"))
    if not sup.actor_stopped.wait(5):
        ctx.clock.advance(60_000)
        sup.actor_stopped.wait(10)


def status(sup) -> dict[str, Any]:
    return sup.proxy().status().get(timeout=10)


def intake_open(ctx: ActorContext) -> bool:
    return ctx.directory.lookup("intake").proxy().intake_open.get(timeout=10)


def query(ctx: ActorContext, *types: str) -> list:
    return ctx.io.run(ctx.store.query(types=types), 30)


def advance_until(ctx: ActorContext, predicate, what: str, step_ms: int = 50, timeout: float = 30.0) -> Any:
    return eventually(lambda: (ctx.clock.advance(step_ms), predicate())[1], timeout=timeout, what=what)


def wave_frame(ctx: ActorContext, n: int) -> tuple[int, bytes]:
    now = ctx.clock.now_ms()
    wave = wave_of(now)
    signals = [{"id": f"s-{i}", "exchange": "paper", "symbol": f"W{i:03d}USDT", "action": "buy", "score_week": str(1 - i / 100), "score_month": "0.5", "wave_ts_ms": wave, "created_ms": now} for i in range(n)]
    return wave, json.dumps({"type": "batch", "wave_ts_ms": wave, "signals": signals}).encode()


def test_a_revoked_key_blocks_intake_and_status_until_an_authenticated_call_succeeds(gates):
    ctx, exchange, venue, sup = gates
    eventually(lambda: intake_open(ctx), what="intake open")
    exchange.fail_next("fetch_positions", ccxt.AuthenticationError('binanceusdm {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'))
    with pytest.raises(VenueError):
        ctx.io.run(venue.positions(), 10)
    assert len([r for r in exchange.requests if r["method"] == "fetch_positions"]) == 1  # not retried
    eventually(lambda: not intake_open(ctx), what="intake blocked")
    st = status(sup)
    assert st["healthy"] is False and any(p.startswith("CRITICAL: exchange paper") and "-2015" in p for p in st["problems"])
    assert "exchange-fatal:paper" in st["intake"]["blocked"]
    assert [e.severity.name for e in query(ctx, "exchange.fatal")] == ["CRITICAL"]
    ctx.io.run(venue.mark_price("W001USDT"), 10)  # public: proves nothing about the key
    assert "exchange-fatal:paper" in status(sup)["intake"]["blocked"]
    ctx.io.run(venue.free_balance(), 10)
    eventually(lambda: intake_open(ctx), what="intake reopened")
    assert status(sup)["healthy"] is True


def test_an_unreachable_exchange_blocks_intake_with_a_reason_and_reopens_when_reads_succeed(gates):
    ctx, exchange, venue, sup = gates
    eventually(lambda: intake_open(ctx), what="intake open")
    assert ctx.io.run(venue.positions(), 10) == []
    last_answer = ctx.clock.now_ms()
    exchange.fail_next("fetch_positions", "network", count=8)
    for _ in range(4):
        with pytest.raises(VenueError):
            ctx.io.run(venue.positions(), 10)
        ctx.clock.advance(5_000)
    eventually(lambda: not intake_open(ctx), what="intake blocked")
    ctx.clock.advance(22_000)
    st = status(sup)
    problem = next(p for p in st["problems"] if "unreachable" in p)
    assert problem.startswith("exchange paper unreachable for 42 s: last answer at ") and "keep their stops" in problem
    assert st["exchanges"]["paper"]["last_answer_at"] in problem and last_answer % 1000 == 0
    assert st["healthy"] is False and st["intake"]["open"] is False and st["exchanges"]["paper"]["unreachable_for_s"] == 42
    assert ctx.io.run(venue.positions(), 10) == []
    eventually(lambda: intake_open(ctx), what="intake reopened")
    assert status(sup)["healthy"] is True


def test_maintenance_blocks_intake_and_a_probe_that_succeeds_reopens_it(gates):
    ctx, exchange, venue, sup = gates
    eventually(lambda: intake_open(ctx), what="intake open")
    exchange.fail_next("fetch_balance", ccxt.OnMaintenance('binanceusdm {"code":-1016,"msg":"System is under maintenance."}'))
    fut = ctx.io.submit(venue.free_balance())
    eventually(lambda: not intake_open(ctx), what="intake blocked")
    assert any("maintenance" in p for p in status(sup)["problems"])
    advance_until(ctx, lambda: fut.done(), "the probe answered", step_ms=500)
    assert fut.result() > 0
    eventually(lambda: intake_open(ctx), what="intake reopened")


def test_an_ip_ban_blocks_intake_shows_in_status_and_reads_wait_the_venues_ten_minutes(gates):
    """Bybit's HTTP 403 (the IP limit broken: stop for at least 10 minutes), not its retCode 10006."""
    ctx, exchange, venue, sup = gates
    eventually(lambda: intake_open(ctx), what="intake open")
    exchange.fail_next("fetch_balance", ccxt.RateLimitExceeded("bybit GET https://api.bybit.com/v5/account/wallet-balance?accountType=UNIFIED 403 Forbidden access too frequent"))
    fut = ctx.io.submit(venue.free_balance())
    eventually(lambda: not intake_open(ctx), what="intake blocked")
    st = status(sup)
    problem = next(p for p in st["problems"] if "banned" in p)
    assert problem.startswith("CRITICAL: exchange paper banned our IP until ") and "(600 s left)" in problem and "stops already on the venue stay live" in problem
    assert st["exchanges"]["paper"]["banned_until"] is not None and "exchange-banned:paper" in st["intake"]["blocked"]
    (alert,) = query(ctx, "alert.exchange_banned")
    assert alert.severity.name == "CRITICAL" and alert.data["status"] == 403 and alert.data["wait_ms"] == 600_000 and not alert.data["stated_by_venue"]
    calls = lambda: len([r for r in exchange.requests if r["method"] == "fetch_balance"])  # noqa: E731
    ctx.clock.advance(599_000)
    eventually(lambda: calls() == 1, what="one refused read")
    assert not fut.done() and not intake_open(ctx)  # nothing went out in the ten minutes
    advance_until(ctx, lambda: fut.done(), "the read after the ban", step_ms=200)
    assert fut.result() > 0 and calls() == 2
    eventually(lambda: intake_open(ctx), what="intake reopened")
    assert [e.type for e in query(ctx, "exchange.ban_over")] == ["exchange.ban_over"]


def test_insufficient_margin_pauses_entries_until_the_balance_recovers(gates):
    ctx, exchange, _venue, sup = gates
    ctx.clock.advance(WAVE_MS - ctx.clock.now_ms() % WAVE_MS + 60_000)
    eventually(lambda: intake_open(ctx), what="intake open")
    _, frame = wave_frame(ctx, 6)  # 6 candidates (buffer 3 x 2), 2 opened at once: one fits the margin, one does not
    ctx.directory.tell("intake", SignalFrame(raw=frame))
    advance_until(ctx, lambda: query(ctx, "intake.wave_finished"), "wave finished")
    failed = query(ctx, "intake.position_failed")
    assert len(failed) == 1 and "insufficient" in failed[0].data["reason"].lower()
    dropped = query(ctx, "intake.candidates_dropped")
    assert len(dropped) == 1 and dropped[0].data["dropped"] == ["s-2", "s-3", "s-4", "s-5"]  # not tried one after another
    assert len(query(ctx, "intake.signal_selected")) == 2
    eventually(lambda: not intake_open(ctx), what="intake blocked for margin")
    assert status(sup)["intake"]["blocked"][MARGIN_BLOCK].startswith("insufficient margin:")
    advance_until(ctx, lambda: query(ctx, "intake.margin_still_short"), "a balance read, still short", step_ms=1_000)
    assert not intake_open(ctx)
    exchange.with_engine(lambda e, now: setattr(e, "wallet", e.wallet + D(1000)))  # a deposit
    advance_until(ctx, lambda: query(ctx, "intake.margin_recovered"), "margin recovered", step_ms=1_000)
    eventually(lambda: intake_open(ctx), what="intake reopened")
    assert MARGIN_BLOCK not in status(sup)["intake"]["blocked"]
