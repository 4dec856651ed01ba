"""PaperExchange: the ccxt-compatible async facade, faults, latency, price ticks, watch_*."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal as D
from pathlib import Path

import ccxt
import pytest

from adapters.markets import Markets
from adapters.paper import FaultPlan, PaperEngine, PaperExchange, PriceReplay, error_code
from core.clock import VirtualClock

SHARED = Path(__file__).resolve().parents[2] / "shared"
MARKETS = {
    "binance": Markets.from_file(SHARED / "data/markets/binanceusdm-linear.json"),
    "bybit": Markets.from_file(SHARED / "data/markets/bybit.json"),
}
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
ORDER_KEYS = {"id", "clientOrderId", "timestamp", "datetime", "lastTradeTimestamp", "symbol", "type", "side", "price", "average", "amount", "filled", "remaining", "cost", "status", "reduceOnly", "triggerPrice", "stopPrice", "fee", "trades", "info"}
POSITION_KEYS = {"symbol", "contracts", "contractSize", "side", "entryPrice", "markPrice", "notional", "leverage", "unrealizedPnl", "liquidationPrice", "marginMode", "hedged", "timestamp", "info"}


def make(flavour: str = "binance", *, faults: FaultPlan | None = None, replay: bool = False, **knobs) -> tuple[PaperExchange, VirtualClock]:
    clock = VirtualClock()
    knobs.setdefault("slippage_bps", 0)
    engine = PaperEngine(MARKETS[flavour], flavour=flavour, **knobs)
    prices = PriceReplay(MARKETS[flavour], start_ms=clock.now_ms()) if replay else None
    ex = PaperExchange(engine, clock, faults=faults, price_replay=prices)
    if not replay:
        ex.set_mark(BTC, "40000")
        ex.set_mark(ETH, "3000")
    return ex, clock


def run(coro):
    return asyncio.run(coro)


def stop_params(flavour: str, trigger, **extra):
    if flavour == "binance":
        return {"stopPrice": trigger, "reduceOnly": True, **extra}
    return {"triggerPrice": trigger, "triggerDirection": "descending", "reduceOnly": True, **extra}


# ------------------------------------------------------------------ meta
@pytest.mark.parametrize("flavour,count", [("binance", 7), ("bybit", 20)])
def test_load_markets_returns_the_raw_ccxt_markets(flavour, count):
    ex, _ = make(flavour)
    markets = run(ex.load_markets())
    assert len(markets) == count and ex.markets is markets and BTC in ex.symbols
    assert markets[BTC]["linear"] is True and markets[BTC]["id"] == "BTCUSDT"
    assert ex.amount_to_precision(BTC, 0.0129) == "0.012" and ex.price_to_precision(BTC, 40000.06) == "40000.1"


def test_unknown_symbol_is_bad_symbol():
    ex, _ = make()
    with pytest.raises(ccxt.BadSymbol):
        run(ex.fetch_ticker("FOO/USDT:USDT"))


def test_the_request_log_can_be_read_while_calls_append_to_it():
    # the bot's calls append on the I/O loop while a test reads on its own thread; a reader
    # slower than the bot once failed with "deque mutated during iteration"
    ex, _ = make()
    run(ex.fetch_ticker(BTC))
    seen = []
    for r in ex.requests:
        run(ex.fetch_ticker(BTC))  # a call lands mid-iteration
        seen.append(r["method"])
    assert seen == ["fetch_ticker"] and len(ex.requests) == 2


# --------------------------------------------------------------- orders
def test_market_order_returns_a_ccxt_order_dict():
    ex, clock = make()
    o = run(ex.create_order(BTC, "market", "buy", 0.01, None, {"newClientOrderId": "entry-1"}))
    assert ORDER_KEYS <= set(o)
    assert (o["type"], o["side"], o["status"], o["filled"], o["remaining"], o["average"]) == ("market", "buy", "closed", 0.01, 0.0, 40000.0)
    assert o["clientOrderId"] == "entry-1" and o["timestamp"] == clock.now_ms() and o["datetime"].endswith("Z")
    assert o["info"]["executedQty"] == "0.010" and o["info"]["avgPrice"] == "40000" and o["info"]["status"] == "FILLED"
    assert o["fee"] == {"cost": 0.2, "currency": "USDT"} and len(o["trades"]) == 1
    assert isinstance(o["amount"], float) and isinstance(o["info"]["origQty"], str)


@pytest.mark.parametrize(
    "type_,params",
    [("market", {"triggerPrice": 39000}), ("market", {"stopLossPrice": 39000}), ("market", {"stopPrice": 39000}), ("STOP_MARKET", {"stopPrice": 39000})],
)
def test_binance_stop_market_in_every_ccxt_spelling(type_, params):
    ex, _ = make()
    run(ex.create_order(BTC, "market", "buy", 0.01))
    o = run(ex.create_order(BTC, type_, "sell", 0.01, None, {**params, "reduceOnly": True}))
    assert (o["type"], o["status"], o["triggerPrice"], o["stopPrice"], o["reduceOnly"]) == ("stop_market", "open", 39000.0, 39000.0, True)
    info = o["info"]
    assert (info["type"], info["workingType"], info["closePosition"], info["positionSide"], info["stopPrice"]) == ("STOP_MARKET", "MARK_PRICE", False, "BOTH", "39000.0")


def test_bybit_stop_shape_and_trigger_direction_required():
    ex, _ = make("bybit")
    run(ex.create_order(BTC, "market", "buy", 0.01))
    o = run(ex.create_order(BTC, "market", "sell", 0.01, None, stop_params("bybit", 39000, orderLinkId="sl-1")))
    assert (o["type"], o["status"], o["triggerPrice"], o["clientOrderId"]) == ("market", "open", 39000.0, "sl-1")
    assert (o["info"]["orderStatus"], o["info"]["orderLinkId"], o["info"]["positionIdx"], o["info"]["triggerDirection"]) == ("Untriggered", "sl-1", 0, 2)
    with pytest.raises(ccxt.ArgumentsRequired):
        run(ex.create_order(BTC, "market", "sell", 0.01, None, {"triggerPrice": 39000, "reduceOnly": True}))
    sl = run(ex.create_order(BTC, "market", "sell", 0.01, None, {"stopLossPrice": 38000}))  # ccxt forces reduceOnly
    assert sl["reduceOnly"] is True
    canceled = run(ex.cancel_order(sl["id"], BTC))
    assert canceled["status"] == "canceled" and canceled["info"]["orderStatus"] == "Deactivated"


@pytest.mark.parametrize("flavour,ended", [("binance", "expired"), ("bybit", "canceled")])
def test_partial_fill_and_expired_stop_statuses_as_ccxt_reports_them(flavour, ended):
    """Binance: EXPIRED -> "expired"; Bybit: Cancelled -> "canceled" (ccxt's mapping), filled tells the truth."""
    ex, _ = make(flavour, faults=FaultPlan(partial_fill_prob=1.0, seed=1))
    o = run(ex.create_order(BTC, "market", "buy", 0.1))
    assert o["status"] == ended and 0 < o["filled"] < 0.1 and o["remaining"] == pytest.approx(0.1 - o["filled"])
    (p,) = run(ex.fetch_positions())
    assert p["contracts"] == o["filled"]
    stop = run(ex.create_order(BTC, "market", "sell", o["filled"], None, stop_params(flavour, 39000)))
    ex.with_engine(lambda e, now: e.external_close_position(BTC, now))
    ex.set_mark(BTC, 38000)
    after = run(ex.fetch_order(stop["id"], BTC, {"acknowledged": True}))
    assert after["status"] == ended and after["filled"] == 0.0


@pytest.mark.parametrize("flavour,cls,code", [("binance", ccxt.OrderImmediatelyFillable, -2021), ("bybit", ccxt.InvalidOrder, 110093)])
def test_would_trigger_immediately_through_the_facade(flavour, cls, code):
    ex, _ = make(flavour)
    run(ex.create_order(BTC, "market", "buy", 0.01))
    with pytest.raises(ccxt.InvalidOrder) as exc:
        run(ex.create_order(BTC, "market", "sell", 0.01, None, stop_params(flavour, 40500)))
    assert type(exc.value) is cls and error_code(exc.value) == code
    assert ex.requests[-1]["outcome"] == cls.__name__


@pytest.mark.parametrize("flavour,key,extra", [("binance", "clientOrderId", {}), ("bybit", "orderLinkId", {"acknowledged": True})])
def test_fetch_order_by_client_order_id(flavour, key, extra):
    ex, _ = make(flavour)
    run(ex.create_order(BTC, "market", "buy", 0.01))
    placed = run(ex.create_order(BTC, "market", "sell", 0.01, None, stop_params(flavour, 39000, **{key: "sl-7"})))
    for oid in (None, ""):
        got = run(ex.fetch_order(oid, BTC, {"clientOrderId": "sl-7", **extra}))
        assert got["id"] == placed["id"] and got["status"] == "open"
    assert run(ex.fetch_open_order(None, BTC, {"clientOrderId": "sl-7"}))["id"] == placed["id"]
    with pytest.raises(ccxt.OrderNotFound):
        run(ex.fetch_closed_order(placed["id"], BTC))
    with pytest.raises(ccxt.OrderNotFound):
        run(ex.fetch_order(None, BTC, {"clientOrderId": "nope", **extra}))


def test_ccxt_argument_rules_are_kept():
    """ccxt refuses these before sending anything; so does the paper exchange."""
    ex, _ = make("binance")
    with pytest.raises(ccxt.ArgumentsRequired):
        run(ex.fetch_order("1"))
    with pytest.raises(ccxt.ArgumentsRequired):
        run(ex.cancel_order("1"))
    by, _ = make("bybit")
    with pytest.raises(ccxt.ArgumentsRequired):
        run(by.fetch_order("1", BTC))  # unified account: fetchOpenOrder / fetchClosedOrder, or acknowledged


def test_ambiguous_timeout_on_a_refused_request_still_times_out():
    ex, _ = make()
    ex.fail_next("create_order", "timeout", ambiguous=True)
    with pytest.raises(ccxt.RequestTimeout):
        run(ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True}))  # refused (-2022), answer lost
    assert ex.requests[-1]["outcome"] == "executed(InvalidOrder)+RequestTimeout"


def test_fetch_open_orders_includes_stops_and_pages_with_limit_and_cursor():
    ex, _ = make()
    run(ex.create_order(BTC, "market", "buy", 0.05))
    ids = [run(ex.create_order(BTC, "market", "sell", 0.01, None, {"stopPrice": 39000 - i * 100, "reduceOnly": True}))["id"] for i in range(5)]
    assert [o["id"] for o in run(ex.fetch_open_orders(BTC))] == ids
    seen, cursor = [], ""
    while True:
        page = run(ex.fetch_open_orders(BTC, None, 2, {"cursor": cursor}))
        seen += [o["id"] for o in page]
        cursor = page[-1]["info"]["nextPageCursor"]
        if not cursor:
            break
    assert seen == ids
    assert run(ex.fetch_open_orders(ETH)) == []


def test_positions_balance_ticker_and_trades():
    ex, clock = make()
    run(ex.set_leverage(5, BTC))
    run(ex.create_order(BTC, "market", "buy", 0.01))
    ex.set_mark(BTC, "41000")
    (p,) = run(ex.fetch_positions([BTC]))
    assert POSITION_KEYS <= set(p)
    assert (p["side"], p["contracts"], p["entryPrice"], p["markPrice"], p["leverage"], p["unrealizedPnl"], p["marginMode"], p["hedged"]) == ("long", 0.01, 40000.0, 41000.0, 5, 10.0, "isolated", False)
    assert p["liquidationPrice"] == 32200.0 and p["info"]["positionAmt"] == "0.010"
    bal = run(ex.fetch_balance())
    assert bal["USDT"]["used"] == 80.0 and bal["used"]["USDT"] == 80.0
    assert bal["USDT"]["free"] == pytest.approx(10000 - 0.2 - 80) and bal["total"]["USDT"] == pytest.approx(10000 - 0.2 + 10)
    t = run(ex.fetch_ticker(BTC))
    assert t["last"] == 41000.0 and t["info"]["markPrice"] == "41000.0" and t["timestamp"] == clock.now_ms()
    assert run(ex.fetch_mark_price(BTC))["markPrice"] == 41000.0
    clock.advance(1000)
    run(ex.create_order(BTC, "market", "sell", 0.01, None, {"reduceOnly": True}))
    trades = run(ex.fetch_my_trades(BTC))
    assert [x["side"] for x in trades] == ["buy", "sell"] and D(trades[1]["info"]["realizedPnl"]) == D("10")
    assert len(run(ex.fetch_my_trades(BTC, clock.now_ms()))) == 1 and len(run(ex.fetch_my_trades(None, None, 1))) == 1
    assert run(ex.fetch_positions()) == []


def test_set_leverage_refusals():
    ex, _ = make("bybit")
    with pytest.raises(ccxt.BadRequest) as same:
        run(ex.set_leverage(10, BTC))  # bybit: "leverage not modified"
    assert error_code(same.value) == 110043
    with pytest.raises(ccxt.BadRequest):
        run(ex.set_leverage(500, BTC))


def test_hedge_mode_through_the_facade():
    ex, _ = make("bybit", hedge_mode=True)
    run(ex.create_order(BTC, "market", "buy", 0.01, None, {"positionIdx": 1}))
    run(ex.create_order(BTC, "market", "sell", 0.02, None, {"positionIdx": 2}))
    sides = {(p["side"], p["contracts"], p["hedged"], p["info"]["positionIdx"]) for p in run(ex.fetch_positions())}
    assert sides == {("long", 0.01, True, 1), ("short", 0.02, True, 2)}


# ------------------------------------------------------------------ faults
def test_fail_next_scripts_exact_faults():
    ex, _ = make()
    run(ex.create_order(BTC, "market", "buy", 0.01))
    ex.faults.fail_next("create_order", "network", count=3)
    for _ in range(3):
        with pytest.raises(ccxt.NetworkError):
            run(ex.create_order(BTC, "market", "sell", 0.01, None, {"stopPrice": 39000, "reduceOnly": True}))
    assert run(ex.fetch_open_orders()) == []  # failed before reaching the venue
    ok = run(ex.create_order(BTC, "market", "sell", 0.01, None, {"stopPrice": 39000, "reduceOnly": True}))
    assert ok["status"] == "open"
    assert [r["outcome"] for r in list(ex.requests)[-6:-2]] == ["ok", "NetworkError", "NetworkError", "NetworkError"]
    ex.faults.fail_next("fetch_balance", ccxt.ExchangeNotAvailable)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        run(ex.fetch_balance())


def test_ambiguous_timeout_leaves_the_order_in_place():
    ex, _ = make()
    run(ex.create_order(BTC, "market", "buy", 0.01))
    ex.faults.fail_next("create_order", "timeout", ambiguous=True)
    with pytest.raises(ccxt.RequestTimeout):
        run(ex.create_order(BTC, "market", "sell", 0.01, None, {"stopPrice": 39000, "reduceOnly": True, "newClientOrderId": "sl-1"}))
    found = run(ex.fetch_order(None, BTC, {"clientOrderId": "sl-1"}))
    assert found["status"] == "open" and [o["id"] for o in run(ex.fetch_open_orders(BTC))] == [found["id"]]
    assert ex.requests[-3]["outcome"] == "executed+RequestTimeout" and ex.requests[-3]["ambiguous"]


def test_fault_rates_with_a_seed_are_reproducible():
    plan = FaultPlan(error_rates={"fetch_balance": {"network": 0.3, "rate_limit": 0.2}}, ambiguous_timeout_rate={"*": 0.1}, seed=7)

    def outcomes() -> list[str]:
        ex, _ = make(faults=plan)

        async def go():
            out = []
            for _ in range(60):
                try:
                    await ex.fetch_balance()
                    out.append("ok")
                except ccxt.BaseError as exc:
                    out.append(f"{type(exc).__name__}:{error_code(exc)}")
            return out

        return run(go())

    first, second = outcomes(), outcomes()
    assert first == second
    assert {"ok", "NetworkError:None", "RateLimitExceeded:-1003", "RequestTimeout:None"} <= set(first)


def test_latency_is_applied_before_the_engine_call():
    ex, _ = make(faults=FaultPlan(latency_ms_min=30, latency_ms_max=30))
    run(ex.fetch_balance())
    assert ex.requests[-1]["latency_ms"] == 30 and ex.requests[-1]["elapsed_ms"] >= 29


def test_request_rate_limit_in_clock_time():
    ex, clock = make("bybit")
    ex.max_requests_per_s = 2
    run(ex.fetch_balance())
    run(ex.fetch_balance())
    with pytest.raises(ccxt.RateLimitExceeded) as exc:
        run(ex.fetch_balance())
    assert error_code(exc.value) == 10006
    clock.advance(1000)
    run(ex.fetch_balance())


def test_closed_exchange_refuses_calls():
    ex, _ = make()
    run(ex.close())
    with pytest.raises(ccxt.ExchangeClosedByUser):
        run(ex.fetch_balance())


# ------------------------------------------------------------ prices on the clock
def test_prices_advance_on_the_virtual_clock_and_trigger_stops():
    ex, clock = make(replay=True)
    ex.start()
    replay = ex.price_replay
    t0 = clock.now_ms()
    assert ex.engine.marks[BTC] == replay.price_at(BTC, t0)
    run(ex.create_order(ETH, "market", "buy", 0.1))
    path = [replay.price_at(ETH, t0 + i * 15_000) for i in range(1, 400)]
    trigger = min(path[:200]) + D("0.01")
    stop = run(ex.create_order(ETH, "market", "sell", 0.1, None, {"stopPrice": str(trigger), "reduceOnly": True}))
    clock.advance(200 * 15_000)
    assert ex.engine.marks[ETH] == replay.price_at(ETH, clock.now_ms())
    assert run(ex.fetch_order(stop["id"], ETH))["status"] == "closed" and run(ex.fetch_positions()) == []
    ex.stop()
    frozen = dict(ex.engine.marks)
    clock.advance(600_000)
    assert ex.engine.marks == frozen and clock.pending() == 0


def test_external_actions_through_with_engine():
    ex, clock = make()
    run(ex.create_order(BTC, "market", "buy", 0.01))
    ex.with_engine(lambda e, now: e.external_close_position(BTC, now))
    assert run(ex.fetch_positions()) == []
    assert run(ex.fetch_my_trades(BTC))[-1]["side"] == "sell"


# ------------------------------------------------------------------- watch_*
def test_watch_orders_returns_updates_since_the_previous_call():
    ex, _ = make()

    async def go():
        watcher = asyncio.create_task(ex.watch_orders(BTC))
        await asyncio.sleep(0)  # let it subscribe
        entry = await ex.create_order(BTC, "market", "buy", 0.01)
        first = await watcher
        stop = await ex.create_order(BTC, "market", "sell", 0.01, None, {"stopPrice": 39000, "reduceOnly": True})
        second = await ex.watch_orders(BTC)
        ex.set_mark(BTC, 38000)
        third = await ex.watch_orders(BTC)
        return entry, first, stop, second, third

    entry, first, stop, second, third = run(go())
    assert [o["id"] for o in first] == [entry["id"]] and first[0]["status"] == "closed"
    assert [(o["id"], o["status"]) for o in second] == [(stop["id"], "open")]
    assert [(o["id"], o["status"]) for o in third] == [(stop["id"], "closed")]


def test_watch_positions_reports_open_and_closed():
    ex, _ = make()

    async def go():
        watcher = asyncio.create_task(ex.watch_positions([BTC]))
        await asyncio.sleep(0)
        await ex.create_order(BTC, "market", "buy", 0.01)
        opened = await watcher
        ex.with_engine(lambda e, now: e.external_close_position(BTC, now))
        closed = await ex.watch_positions([BTC])
        return opened, closed

    opened, closed = run(go())
    assert opened[0]["contracts"] == 0.01 and opened[0]["side"] == "long"
    assert closed[0]["contracts"] == 0.0


def test_watch_orders_is_woken_by_a_change_on_another_thread():
    ex, _ = make()
    run(ex.create_order(BTC, "market", "buy", 0.01))
    stop = run(ex.create_order(BTC, "market", "sell", 0.01, None, {"stopPrice": 39000, "reduceOnly": True}))

    async def go():
        watcher = asyncio.create_task(ex.watch_orders(BTC))
        await asyncio.sleep(0)
        t = threading.Thread(target=ex.set_mark, args=(BTC, 38000))  # like the clock thread's price tick
        t.start()
        result = await asyncio.wait_for(watcher, timeout=5)
        t.join()
        return result

    updates = run(go())
    assert [(o["id"], o["status"]) for o in updates] == [(stop["id"], "closed")]
