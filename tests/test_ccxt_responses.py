"""REAL recorded venue responses through ccxt 4.5.90 into our Venue's reports; error translation over real ccxt.

The responses are ccxt's own recordings (``/work/shared/data/ccxt-responses``:
``httpResponse`` is the venue's body, ``parsedResponse`` what ccxt made of
it). Each is answered through the intercepted HTTP layer, so ccxt parses it
exactly as it would parse the live venue, and our Venue turns ccxt's dict into
typed reports. Decimals are checked against the raw strings in the venue's
body. Where a shape we need was never recorded (Binance algo orders) the
canned body is the example in ccxt's own ``parse_order`` source, and the test
says so.

Error translation: real error bodies (status + JSON) through ccxt's own
``handle_errors`` -> the ccxt class it raises -> ``adapters.errors.classify``.
"""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from adapters.ccxt_exchange import HttpRequest, build_ccxt_exchange, build_ccxt_venue, intercept_http
from adapters.errors import Outcome, VenueError, classify
from adapters.venue import OrderStatus, Venue
from tests.conftest import SHARED, make_config
from tests.test_ccxt_flow import ENV, MARKETS, exchange_toml
from core.clock import VirtualClock

D = Decimal
RESPONSES = {v: json.loads((SHARED / "data" / "ccxt-responses" / f"{v}.json").read_text()) for v in ("binance", "bybit")}
DAY_MS = 86_400_000

#: Binance's linear conditional (algo) order as documented in ccxt 4.5.90's binance.parse_order
#: ("createOrder, fetchOrder, fetchOpenOrders, ...: linear swap conditional order"); no recorded response exists.
ALGO_ORDER = {
    "algoId": 3358, "clientAlgoId": "yT58zmV3DSzMBQxc5tAJXU", "algoType": "CONDITIONAL", "orderType": "STOP", "symbol": "BTCUSDT", "side": "BUY",
    "positionSide": "BOTH", "timeInForce": "GTC", "quantity": "0.002", "algoStatus": "NEW", "triggerPrice": "100000.00", "price": "102000.00",
    "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE", "priceMatch": "NONE", "closePosition": False,
    "priceProtect": False, "reduceOnly": False, "createTime": 1763458576201, "updateTime": 1763458576201, "triggerTime": 0, "goodTillDate": 0,
}  # fmt: skip


def response(venue: str, method: str, description: str) -> dict[str, Any]:
    entries = [e for e in RESPONSES[venue]["methods"][method] if e["description"] == description]
    assert len(entries) == 1 and not entries[0].get("disabled"), (venue, method, description)
    return copy.deepcopy(entries[0])


def run(coro):
    return asyncio.run(coro)


async def venue_answering(name: str, answers: dict[str, Any]) -> tuple[Venue, list[HttpRequest]]:
    """Our Venue over real ccxt; ``answers`` maps "METHOD /path" to a body, a (status, body), or a list of them."""
    cfg = make_config(Path("/tmp"), exchange_toml(name))
    ex = build_ccxt_exchange(cfg, env=ENV)
    ex.enableRateLimit = False
    ex.set_markets(json.loads(MARKETS[name].read_text()))
    if name == "binanceusdm":  # as ccxt's static response tests do (the file's "options")
        ex.options["leverageBrackets"] = RESPONSES["binance"]["options"]["leverageBrackets"]
    # the start-up position-mode reads: Binance's positionSide/dual, Bybit's slots of one symbol (one-way: positionIdx 0)
    one_way = {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": [{"symbol": "BTCUSDT", "positionIdx": 0, "size": "0", "side": ""}], "nextPageCursor": ""}, "retExtInfo": {}, "time": 0}
    answers = {"GET /fapi/v1/positionSide/dual": {"dualSidePosition": False}, "GET /v5/position/list": one_way, **answers}

    def respond(req: HttpRequest) -> Any:
        route = f"{req.method} {req.path}"
        if route not in answers:
            raise AssertionError(f"unexpected {route} {req.params}")
        answer = answers[route]
        if isinstance(answer, list) and answer and isinstance(answer[0], _Seq):
            return answer.pop(0).body
        return answer

    requests = intercept_http(ex, respond)
    venue = await build_ccxt_venue(cfg, VirtualClock(start_ms=0), None, exchange=ex)
    venue.setup = None  # leverage / margin mode before the first entry: tests/test_venue_setup.py
    return venue, requests


class _Seq:
    """One answer of a sequence (a route answered differently on successive calls)."""

    def __init__(self, body: Any) -> None:
        self.body = body


def seq(*bodies: Any) -> list[_Seq]:
    return [_Seq(b) for b in bodies]


# ==================================================== Binance USDⓈ-M
def test_binance_positions_from_the_recorded_position_risk():
    rec = response("binance", "fetchPositions", "Fetch linear positions with symbols")
    raw, parsed = rec["httpResponse"][0], rec["parsedResponse"][0]

    async def go():
        v, _ = await venue_answering("binanceusdm", {"GET /fapi/v3/positionRisk": rec["httpResponse"]})
        return await v.positions(["BTCUSDT"]), await v.position("BTCUSDT", "short")

    (p,), none = run(go())
    assert none is None
    assert (p.symbol, p.side) == ("BTCUSDT", parsed["side"]) == ("BTCUSDT", "long")
    assert p.qty == D(raw["positionAmt"]) == D("0.009")
    assert p.entry_price == D(raw["entryPrice"]) == D("67445.9")
    assert p.mark_price == D(raw["markPrice"]) and p.liquidation_price == D(raw["liquidationPrice"]) == D("64846.78939917")
    assert p.unrealized_pnl == D(raw["unRealizedProfit"]) == D("1.2267")


def test_binance_fetch_order_from_the_recorded_open_order():
    """The recorded /fapi/v1/openOrder body; /fapi/v1/order answers the same record."""
    rec = response("binance", "fetchOpenOrder", "swap open order")
    raw = rec["httpResponse"]

    async def go():
        v, reqs = await venue_answering("binanceusdm", {"GET /fapi/v1/order": raw})
        return await v.fetch_order("LTCUSDT", order_id="664082074"), reqs

    o, reqs = run(go())
    assert reqs[-1].params["orderId"] == "664082074"
    assert (o.order_id, o.client_id, o.symbol, o.side, o.status) == ("664082074", raw["clientOrderId"], "LTCUSDT", "buy", OrderStatus.OPEN)
    assert o.amount == D(raw["origQty"]) == D("0.2") and o.filled == D(0) and o.average is None
    assert o.trigger_price is None and not o.reduce_only and not o.is_stop and o.ts_ms == int(raw["time"])


def test_binance_create_response_from_the_recorded_batch_order():
    """The recorded createOrders element (a NEW order on BTCUSDT) as the answer of POST /fapi/v1/order."""
    rec = response("binance", "createOrders", "create swap orders")
    raw = rec["httpResponse"][0]

    async def go():
        v, _ = await venue_answering("binanceusdm", {"POST /fapi/v1/order": raw})
        return await v.open_market("BTCUSDT", "sell", D("0.2"), "tb-p9-e1", ref_price=D("110001"))

    o = run(go())
    assert (o.order_id, o.status, o.side, o.amount, o.filled) == ("4087922044", OrderStatus.OPEN, "sell", D("0.2"), D(0))
    assert o.ts_ms == raw["updateTime"]


def test_binance_open_orders_from_both_books():
    """The recorded open regular order plus ccxt's documented algo order: one list, the algo one with our prefix."""
    regular = response("binance", "fetchOpenOrders", "open portfolio margin orders")["httpResponse"]

    async def go():
        v, reqs = await venue_answering("binanceusdm", {"GET /fapi/v1/openOrders": regular, "GET /fapi/v1/openAlgoOrders": [ALGO_ORDER]})
        return await v.open_orders(), reqs

    orders, reqs = run(go())
    by_id = {o.order_id: o for o in orders}
    assert set(by_id) == {"29067571132", "algo:3358"}
    reg, algo = by_id["29067571132"], by_id["algo:3358"]
    assert (reg.symbol, reg.side, reg.status, reg.amount, reg.is_stop) == ("LTCUSDT", "buy", OrderStatus.OPEN, D("0.41"), False)
    assert (algo.symbol, algo.side, algo.status, algo.amount, algo.trigger_price, algo.client_id) == ("BTCUSDT", "buy", OrderStatus.OPEN, D("0.002"), D("100000"), "yT58zmV3DSzMBQxc5tAJXU")


@pytest.mark.parametrize(
    "algo_status,child_status,expected",
    [
        ("NEW", None, OrderStatus.OPEN),
        ("TRIGGERING", None, OrderStatus.OPEN),
        ("CANCELED", None, OrderStatus.CANCELED),
        ("EXPIRED", None, OrderStatus.EXPIRED),
        ("REJECTED", None, OrderStatus.REJECTED),
        ("FINISHED", "FILLED", OrderStatus.FILLED),
        ("TRIGGERED", "FILLED", OrderStatus.FILLED),
        ("FINISHED", "EXPIRED", OrderStatus.EXPIRED),  # fired, but its market order did not fill (e.g. nothing left to reduce)
    ],
)
def test_binance_algo_statuses_and_the_fill_of_a_fired_stop(algo_status: str, child_status: str | None, expected: OrderStatus):
    """A fired algo order carries no fill; its child market order (``actualOrderId``) does, and is read.
    (No recorded fired algo order exists: ccxt's documented algo record with the status and child id set;
    the child is the recorded swap order with its status and fill set.)"""
    algo = dict(ALGO_ORDER, orderType="STOP_MARKET", side="SELL", reduceOnly=True, algoStatus=algo_status)
    child = response("binance", "fetchOpenOrder", "swap open order")["httpResponse"]
    child.update(symbol="BTCUSDT", orderId="775511", side="SELL", type="MARKET", origType="MARKET", reduceOnly=True, status=child_status or "NEW", origQty="0.002")
    if child_status == "FILLED":
        child.update(executedQty="0.002", avgPrice="99950.10", cumQuote="199.9002")
    if child_status:
        algo["actualOrderId"] = "775511"

    async def go():
        v, reqs = await venue_answering("binanceusdm", {"GET /fapi/v1/algoOrder": algo, "GET /fapi/v1/order": child})
        return await v.fetch_order("BTCUSDT", order_id="algo:3358"), reqs

    o, reqs = run(go())
    assert o.order_id == "algo:3358" and o.status is expected
    if child_status == "FILLED":
        assert (o.filled, o.average) == (D("0.002"), D("99950.10"))
        assert o.fee is None  # Binance's order carries no commission: none is invented
        assert [r.path for r in reqs][-2:] == ["/fapi/v1/algoOrder", "/fapi/v1/order"] and reqs[-1].params["orderId"] == "775511"
    elif not child_status:
        assert reqs[-1].path == "/fapi/v1/algoOrder"


@pytest.mark.parametrize("raw_status,expected", [("NEW", OrderStatus.OPEN), ("PARTIALLY_FILLED", OrderStatus.OPEN), ("FILLED", OrderStatus.FILLED), ("CANCELED", OrderStatus.CANCELED), ("EXPIRED", OrderStatus.EXPIRED), ("EXPIRED_IN_MATCH", OrderStatus.EXPIRED), ("REJECTED", OrderStatus.REJECTED)])
def test_binance_order_statuses(raw_status: str, expected: OrderStatus):
    raw = response("binance", "fetchOpenOrder", "swap open order")["httpResponse"]
    raw["status"] = raw_status

    async def go():
        v, _ = await venue_answering("binanceusdm", {"GET /fapi/v1/order": raw})
        return await v.fetch_order("LTCUSDT", order_id="664082074")

    assert run(go()).status is expected


def test_binance_fills_from_the_recorded_user_trades():
    rec = response("binance", "fetchMyTrades", "Swap private trade")
    raw = rec["httpResponse"][0]

    async def go():
        v, reqs = await venue_answering("binanceusdm", {"GET /fapi/v1/userTrades": rec["httpResponse"]})
        return await v.fills("BTCUSDT", limit=1), reqs

    (f,), reqs = run(go())
    assert reqs[-1].params["symbol"] == "BTCUSDT" and reqs[-1].params["limit"] == "1"
    assert (f.trade_id, f.order_id, f.symbol, f.side, f.kind) == ("272536245", "3524852987", "BTCUSDT", "buy", "trade")
    assert f.price == D(raw["price"]) and f.qty == D(raw["qty"]) and f.fee == D(raw["commission"]) and f.fee_currency == "USDT"
    assert f.realized_pnl == D(0) and f.ts_ms == int(raw["time"])


# ================================================================ Bybit
def test_bybit_positions_from_the_recorded_position_list():
    rec = response("bybit", "fetchPositions", "Fetch linear position")
    raw = rec["httpResponse"]["result"]["list"][0]
    assert rec["httpResponse"]["retCode"] == "0"  # Bybit's success code as a string, as recorded

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/position/list": rec["httpResponse"]})
        return await v.positions(["LTCUSDT"])

    (p,) = run(go())
    assert (p.symbol, p.side) == ("LTCUSDT", "long")
    assert p.qty == D(raw["size"]) == D("1.2") and p.entry_price == D(raw["avgPrice"]) == D("64.59947917")
    assert p.mark_price == D(raw["markPrice"]) and p.unrealized_pnl == D(raw["unrealisedPnl"]) and p.liquidation_price is None


def test_bybit_fetch_order_open_and_filled_from_recordings():
    live = response("bybit", "fetchOpenOrder", "Fetch an open swap order by its ID and symbol")["httpResponse"]
    done = response("bybit", "fetchClosedOrder", "Fetch swap closed order by its ID and symbol")["httpResponse"]

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/order/realtime": seq(live, done)})
        return await v.fetch_order("BTCUSDT", order_id="3606515b-e4d7-4ea4-b096-bb247d0661ae"), await v.fetch_order("BTCUSDT", order_id="aee7453a-a100-465f-857a-3db780e9329a")

    o, f = run(go())
    raw_o, raw_f = live["result"]["list"][0], done["result"]["list"][0]
    assert (o.status, o.side, o.amount, o.filled, o.client_id, o.is_stop) == (OrderStatus.OPEN, "buy", D(raw_o["qty"]), D(0), None, False)
    assert (f.status, f.filled, f.average, f.ts_ms) == (OrderStatus.FILLED, D(raw_f["cumExecQty"]), D(raw_f["avgPrice"]), int(raw_f["createdTime"]))
    assert f.average == D("123498")
    assert f.fee == D(raw_f["cumExecFee"]) == D("0.0679239") and o.fee is None  # the filled order's fee, as Bybit reports it (USDT)


def test_bybit_create_acknowledgement_from_the_recording():
    """Bybit's create answer is {orderId, orderLinkId} only (a recorded spot one; the linear envelope is the same):
    the report keeps the ids, status unknown, completed with what was sent."""
    ack = response("bybit", "createOrder", "spot stopLossPrice order")["httpResponse"]

    async def go():
        v, _ = await venue_answering("bybit", {"POST /v5/order/create": ack})
        return await v.place_stop("BTCUSDT", "sell", D("0.01"), D("39200"), "tb-p1-s2")

    o = run(go())
    assert (o.order_id, o.client_id, o.status) == ("1992319485461489920", "1992319485469878528", OrderStatus.UNKNOWN)
    assert (o.trigger_price, o.amount, o.side) == (D("39200"), D("0.01"), "sell")


@pytest.mark.parametrize(
    "raw_status,expected",
    [("New", OrderStatus.OPEN), ("PartiallyFilled", OrderStatus.OPEN), ("Untriggered", OrderStatus.OPEN), ("Triggered", OrderStatus.OPEN), ("Filled", OrderStatus.FILLED), ("Cancelled", OrderStatus.CANCELED), ("Deactivated", OrderStatus.CANCELED), ("Rejected", OrderStatus.REJECTED), ("PartiallyFilledCanceled", OrderStatus.FILLED)],
)
def test_bybit_order_statuses(raw_status: str, expected: OrderStatus):
    body = response("bybit", "fetchOpenOrder", "Fetch an open swap order by its ID and symbol")["httpResponse"]
    body["result"]["list"][0]["orderStatus"] = raw_status

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/order/realtime": body})
        return await v.fetch_order("BTCUSDT", order_id="3606515b-e4d7-4ea4-b096-bb247d0661ae")

    assert run(go()).status is expected


def test_bybit_stop_record_trigger_price_and_reduce_only():
    """A conditional stop as Bybit lists it: the recorded order record with the conditional fields set."""
    body = response("bybit", "fetchOpenOrder", "Fetch an open swap order by its ID and symbol")["httpResponse"]
    body["result"]["list"][0].update(orderType="Market", side="Sell", orderStatus="Untriggered", stopOrderType="Stop", triggerPrice="39200.00", triggerDirection=2, triggerBy="MarkPrice", reduceOnly=True, orderLinkId="tb-p1-s2", price="0")

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/order/realtime": body})
        return await v.open_orders("BTCUSDT")

    (o,) = run(go())
    assert (o.client_id, o.side, o.status, o.trigger_price, o.reduce_only, o.is_stop) == ("tb-p1-s2", "sell", OrderStatus.OPEN, D("39200.00"), True, True)


def test_bybit_list_responses_parse_every_order():
    rec = response("bybit", "fetchClosedOrders", "Fetch swap closed orders by the symbol")["httpResponse"]
    raws = rec["result"]["list"]

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/order/realtime": rec})
        return await v.open_orders()

    orders = {o.order_id: o for o in run(go())}  # ccxt sorts them by time
    assert set(orders) == {r["orderId"] for r in raws} and len(raws) > 1
    for r in raws:
        o = orders[r["orderId"]]
        assert (o.status, o.reduce_only, o.side) == (OrderStatus.FILLED, r["reduceOnly"], r["side"].lower())
        assert o.filled == D(r["cumExecQty"]) and o.average == D(r["avgPrice"])


def test_bybit_fills_trade_and_funding_from_recordings():
    trade = response("bybit", "fetchMyTrades", "swap trades without symbol")["httpResponse"]
    funding = response("bybit", "fetchMyTrades", "Swap private trade")["httpResponse"]

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/execution/list": seq(trade, funding)})
        return await v.fills("LTCUSDT"), await v.fills("LTCUSDT")

    (t,), (f,) = run(go())
    raw_t, raw_f = trade["result"]["list"][0], funding["result"]["list"][0]
    assert (t.kind, t.side, t.price, t.qty, t.fee) == ("trade", "buy", D(raw_t["execPrice"]), D(raw_t["execQty"]), D(raw_t["execFee"]))
    assert (f.kind, f.price, f.qty, f.fee) == ("funding", D("72.25"), D("1.2"), D(raw_f["execFee"]))


def test_bybit_mark_price_from_the_recorded_ticker():
    body = response("bybit", "fetchTicker", "swap ticker")["httpResponse"]
    body["result"]["list"][0]["lastPrice"] = "1"  # the mark is used, never the last trade

    async def go():
        v, _ = await venue_answering("bybit", {"GET /v5/market/tickers": body})
        return await v.mark_price("BTCUSDT")

    assert run(go()) == D("51444.40")


# ================================================= error translation
BINANCE_ERRORS = [
    ("stop", 400, {"code": -2021, "msg": "Order would immediately trigger."}, ccxt.OrderImmediatelyFillable, Outcome.WOULD_TRIGGER, "-2021", 0),
    ("entry", 400, {"code": -2019, "msg": "Margin is insufficient."}, ccxt.InsufficientFunds, Outcome.INSUFFICIENT_FUNDS, "-2019", 0),
    ("cancel", 400, {"code": -2011, "msg": "Unknown order sent."}, ccxt.OrderNotFound, Outcome.NOT_FOUND, "-2011", 0),
    ("fetch", 400, {"code": -2013, "msg": "Order does not exist."}, ccxt.OrderNotFound, Outcome.NOT_FOUND, "-2013", 0),
    ("entry", 429, {"code": -1003, "msg": "Too many requests; current limit of IP(203.0.113.7) is 2400 requests per minute. Please use the websocket for live updates to avoid polling the API."}, ccxt.DDoSProtection, Outcome.RATE_LIMITED, "-1003", 0),
    ("entry", 400, {"code": -4140, "msg": "Invalid symbol status for opening position."}, ccxt.BadRequest, Outcome.SYMBOL_UNAVAILABLE, "-4140", DAY_MS),
    ("fetch", 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, ccxt.AuthenticationError, Outcome.FATAL, "-2015", 0),
]
BYBIT_ERRORS = [
    ("entry", 200, {"retCode": 10001, "retMsg": "The number of contracts exceeds minimum limit allowed"}, ccxt.BadRequest, Outcome.REJECTED, "10001", 0),
    ("stop", 200, {"retCode": "110017", "retMsg": "current position is zero, cannot fix reduce-only order qty"}, ccxt.InvalidOrder, Outcome.REJECTED, "110017", 0),
    ("entry", 200, {"retCode": 170209, "retMsg": "This trading pair is only available to the China region."}, ccxt.RestrictedLocation, Outcome.SYMBOL_UNAVAILABLE, "170209", DAY_MS),
    ("fetch", 200, {"retCode": 10006, "retMsg": "Too many visits!"}, ccxt.RateLimitExceeded, Outcome.RATE_LIMITED, "10006", 0),
    ("cancel", 200, {"retCode": 110001, "retMsg": "order not exists or too late to cancel"}, ccxt.OrderNotFound, Outcome.NOT_FOUND, "110001", 0),
    ("stop", 200, {"retCode": 110093, "retMsg": "expect Falling, but trigger_price[41000] >= current[40000]"}, ccxt.InvalidOrder, Outcome.WOULD_TRIGGER, "110093", 0),
    ("entry", 200, {"retCode": 110007, "retMsg": "ab not enough for new order"}, ccxt.InsufficientFunds, Outcome.INSUFFICIENT_FUNDS, "110007", 0),
    ("fetch", 200, {"retCode": 10003, "retMsg": "API key is invalid."}, ccxt.AuthenticationError, Outcome.FATAL, "10003", 0),
]


async def _raw_call(ex: Any, op: str, bybit: bool) -> Any:
    if op == "entry":
        return await ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01)
    if op == "stop":
        return await ex.create_order("BTC/USDT:USDT", "market", "sell", 0.01, None, {"triggerPrice": "41000", "triggerDirection": 2} if bybit else {"stopPrice": "41000"})
    if op == "cancel":
        return await ex.cancel_order("1", "BTC/USDT:USDT")
    return await ex.fetch_order("1", "BTC/USDT:USDT", {"acknowledged": True} if bybit else {})


@pytest.mark.parametrize(
    "name,op,status,body,klass,outcome,code,skip_ms",
    [("binanceusdm", *case) for case in BINANCE_ERRORS] + [("bybit", *case) for case in BYBIT_ERRORS],
    ids=[f"binance{c[2]['code']}" for c in BINANCE_ERRORS] + [f"bybit{c[2]['retCode']}" for c in BYBIT_ERRORS],
)
def test_real_error_bodies_through_ccxt_are_classified(name, op, status, body, klass, outcome, code, skip_ms):
    bybit = name == "bybit"
    if bybit:
        body = {**body, "result": {}, "retExtInfo": {}, "time": 1700000000000}
    ex = build_ccxt_exchange(make_config(Path("/tmp"), exchange_toml(name)), env=ENV)
    ex.enableRateLimit = False
    ex.set_markets(json.loads(MARKETS[name].read_text()))
    intercept_http(ex, lambda req: (status, body))

    async def go():
        with pytest.raises(ccxt.BaseError) as err:
            await _raw_call(ex, op, bybit)
        return err.value

    exc = run(go())
    assert isinstance(exc, klass), f"ccxt raised {type(exc).__name__}"
    err = classify(exc)
    assert (err.outcome, err.code, err.skip_symbol_ms) == (outcome, code, skip_ms)


def test_errors_through_the_venue():
    """The same bodies seen from the Venue: an unknown order on cancel is "already gone", a stop that would
    trigger is WOULD_TRIGGER at once, a rate limit on a read is retried."""
    ok_mark = {"symbol": "BTCUSDT", "markPrice": "40000.00", "indexPrice": "40000", "time": 1}

    async def go():
        v, reqs = await venue_answering(
            "binanceusdm",
            {
                "DELETE /fapi/v1/algoOrder": (400, {"code": -2011, "msg": "Unknown order sent."}),
                "POST /fapi/v1/algoOrder": (400, {"code": -2021, "msg": "Order would immediately trigger."}),
                "GET /fapi/v1/premiumIndex": seq((429, {"code": -1003, "msg": "Too many requests."}), ok_mark),
            },
        )
        gone = await v.cancel("BTCUSDT", "algo:1")
        with pytest.raises(VenueError) as would:
            await v.place_stop("BTCUSDT", "sell", D("0.01"), D("41000"), "tb-p1-s2")
        mark = await v.mark_price("BTCUSDT")
        return gone, would.value, mark, reqs

    gone, would, mark, reqs = run(go())
    assert gone is None
    assert would.outcome is Outcome.WOULD_TRIGGER and would.code == "-2021"
    assert mark == D("40000") and [r.path for r in reqs].count("/fapi/v1/premiumIndex") == 2
    assert [r.path for r in reqs].count("/fapi/v1/algoOrder") == 2  # the refused stop was not re-sent


def test_bybit_string_ret_code_zero_is_success_and_string_error_codes_are_read():
    """retCode "0" (a string) is success all the way; retCode "110017" (a string) keeps its code."""
    ok = response("bybit", "createOrder", "spot stopLossPrice order")["httpResponse"]
    assert ok["retCode"] == "0"
    refused = {"retCode": "110017", "retMsg": "current position is zero, cannot fix reduce-only order qty", "result": {}, "retExtInfo": {}, "time": "1752238990423"}

    async def go():
        v, _ = await venue_answering("bybit", {"POST /v5/order/create": seq(refused, ok)})
        with pytest.raises(VenueError) as err:
            await v.place_stop("BTCUSDT", "sell", D("0.01"), D("39200"), "tb-p1-s2")
        return err.value, await v.place_stop("BTCUSDT", "sell", D("0.01"), D("39200"), "tb-p1-s3")

    err, placed = run(go())
    assert (err.outcome, err.code) == (Outcome.REJECTED, "110017")
    assert placed.order_id == "1992319485461489920"


def test_an_orders_fee_in_the_quote_from_its_fees_or_its_trades_never_converted():
    """ccxt's ``fees`` (or ``fee``), else the sum of its trades' fees; a fee in another currency (BNB) or a
    trade without one gives None rather than a guess."""
    from adapters.venue import order_fee

    usdt = {"cost": 0.02, "currency": "USDT"}
    assert order_fee({"fee": usdt, "fees": [usdt, {"cost": "0.01", "currency": "USDT"}]}, "USDT") == D("0.03")
    assert order_fee({"fee": usdt}, "USDT") == D("0.02")
    assert order_fee({"fee": {"cost": 0.0001, "currency": "BNB"}}, "USDT") is None
    assert order_fee({"fee": None, "fees": [], "trades": [{"fee": usdt}, {"fees": [{"cost": 0.5, "currency": "USDT"}]}]}, "USDT") == D("0.52")
    assert order_fee({"trades": [{"fee": usdt}, {"fee": None}]}, "USDT") is None
    assert order_fee({"fee": None, "trades": []}, "USDT") is None
