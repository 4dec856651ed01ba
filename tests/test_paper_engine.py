"""PaperEngine: fills, stops, reduce-only, margin, liquidation, refusals, measurements, snapshots."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.markets import Markets
from adapters.paper.engine import PaperEngine
from adapters.paper.errors import ERRORS, error_code, venue_error

SHARED = Path(__file__).resolve().parents[2] / "shared"
MARKETS = {
    "binance": Markets.from_file(SHARED / "data/markets/binanceusdm-linear.json"),
    "bybit": Markets.from_file(SHARED / "data/markets/bybit.json"),
}
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
T0 = 1_700_000_000_000


def engine(flavour: str = "binance", mark: str = "40000", **knobs) -> PaperEngine:
    """An engine with no slippage and the BTC mark at ``mark``."""
    knobs.setdefault("slippage_bps", 0)
    e = PaperEngine(MARKETS[flavour], flavour=flavour, **knobs)
    e.on_mark(BTC, D(mark), T0)
    e.on_mark(ETH, D("3000"), T0)
    return e


def buy(e: PaperEngine, qty, t=T0, **params):
    return e.create_order(BTC, "market", "buy", qty, None, params, now_ms=t)


def sell(e: PaperEngine, qty, t=T0, **params):
    return e.create_order(BTC, "market", "sell", qty, None, params, now_ms=t)


def stop(e: PaperEngine, side: str, qty, trigger, t=T0, **params):
    params.setdefault("reduceOnly", True)
    return e.create_order(BTC, "market", side, qty, None, {"stopLossPrice": trigger, **params}, now_ms=t)


def pos(e: PaperEngine, key: str = f"{BTC}|both"):
    return e.positions.get(key)


def refused(exc_info, cls, code):
    assert type(exc_info.value) is cls, f"{type(exc_info.value).__name__} is not {cls.__name__}"
    assert error_code(exc_info.value) == code


# ------------------------------------------------------------------ error table
def test_error_table_classes_are_the_ones_ccxt_raises_for_those_codes():
    """Every (flavour, condition) class equals ccxt's own mapping of that code (linear table first)."""
    tables = {
        "binance": ccxt_async.binanceusdm().describe()["exceptions"],
        "bybit": ccxt_async.bybit().describe()["exceptions"],
    }
    for flavour, conditions in ERRORS.items():
        ex = tables[flavour]
        for condition, (cls, code, _msg) in conditions.items():
            linear = ex.get("linear", {}).get("exact", {}) if flavour == "binance" else {}
            expected = linear.get(str(code)) or ex["exact"].get(str(code)) or ccxt.ExchangeError
            assert cls is expected, f"{flavour}/{condition} ({code}): {cls.__name__} but ccxt raises {expected.__name__}"


def test_error_messages_are_shaped_like_ccxt():
    e = venue_error("binance", "would_trigger_falling")
    assert type(e) is ccxt.OrderImmediatelyFillable
    assert str(e) == 'binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}'
    b = venue_error("bybit", "reduce_only_flat", now_ms=5)
    assert str(b).startswith('bybit {"retCode":110017,"retMsg":"current position is zero')
    assert error_code(b) == 110017 and json.loads(str(b)[len("bybit ") :])["time"] == 5


# ------------------------------------------------------------------- market fills
def test_market_entry_fills_at_mark_plus_slippage_and_pays_taker_fee():
    e = engine(slippage_bps=10)
    o = buy(e, "0.010")
    assert o.status == "closed" and o.filled == D("0.010")
    assert o.average == D("40040.0")  # 40000 + 10 bps, against the taker
    assert o.fee == D("40040") * D("0.01") * D("0.0005")
    p = pos(e)
    assert (p.side, p.size, p.entry_price, p.margin) == ("long", D("0.010"), D("40040.0"), D("40.04"))
    assert e.wallet == D(10000) - o.fee
    assert e.balance()["free"] == e.wallet - D("40.04")
    s = sell(e, "0.010")
    assert s.average == D("39960.0")
    assert pos(e) is None and e.fills[-1].realized_pnl == (D("39960") - D("40040")) * D("0.01")


def test_partial_fill_seeded_leaves_remainder_expired():
    results = []
    for _ in range(2):
        e = engine(partial_fill_prob=1.0, seed=42)
        o = buy(e, "0.100")
        results.append(o.filled)
        assert o.status == "expired" and o.reason
        assert D("0.001") <= o.filled < D("0.100") and o.filled % D("0.001") == 0
        assert pos(e).size == o.filled
    assert results[0] == results[1]


def test_reduce_only_market_larger_than_position_is_cut_to_the_position():
    e = engine()
    buy(e, "0.010")
    o = sell(e, "0.050", reduceOnly=True)
    assert o.status == "closed" and o.filled == D("0.010") and pos(e) is None


# ------------------------------------------------------------------------ stops
@pytest.mark.parametrize("flavour", ["binance", "bybit"])
def test_stop_that_would_trigger_immediately_is_refused(flavour):
    e = engine(flavour)
    buy(e, "0.010")
    with pytest.raises(ccxt.InvalidOrder) as sell_stop:
        stop(e, "sell", "0.010", "40000")  # sell stop at or above the mark
    sell(e, "0.010")
    sell(e, "0.010")
    with pytest.raises(ccxt.InvalidOrder) as buy_stop:
        stop(e, "buy", "0.010", "39999.9")  # buy stop below the mark
    if flavour == "binance":
        refused(sell_stop, ccxt.OrderImmediatelyFillable, -2021)
        refused(buy_stop, ccxt.OrderImmediatelyFillable, -2021)
    else:
        refused(sell_stop, ccxt.InvalidOrder, 110093)
        refused(buy_stop, ccxt.InvalidOrder, 110092)
        assert "expect Falling" in str(sell_stop.value) and "expect Rising" in str(buy_stop.value)
    assert not e.open_orders


def test_stop_triggers_on_the_mark_only_and_closes_with_realised_pnl():
    e = engine()
    entry = buy(e, "0.010")
    s = stop(e, "sell", "0.010", "39000")
    assert s.kind == "stop_market" and s.status == "open"
    e.on_mark(ETH, D("1"), T0 + 1000)  # another symbol crashing does nothing
    e.on_mark(BTC, D("39000.1"), T0 + 2000)  # above the trigger
    e.metrics(T0 + 60_000)  # time passing does nothing
    assert s.status == "open" and pos(e) is not None
    e.on_mark(BTC, D("38950"), T0 + 61_000)
    assert s.status == "closed" and s.filled == D("0.010") and s.triggered
    assert s.average == D("38950")  # executed as a market order at the mark that crossed
    assert pos(e) is None
    realised = (D("38950") - D("40000")) * D("0.010")
    assert e.fills[-1].realized_pnl == realised
    assert e.wallet == D(10000) + realised - entry.fee - s.fee


def test_stop_created_as_stop_market_type_with_stop_price():
    e = engine()
    buy(e, "0.010")
    s = e.create_order(BTC, "STOP_MARKET", "sell", "0.010", None, {"stopPrice": 39000, "reduceOnly": True}, now_ms=T0)
    t = e.create_order(BTC, "market", "sell", "0.010", None, {"triggerPrice": "39500", "reduceOnly": True}, now_ms=T0)
    assert (s.kind, s.trigger_direction, t.kind, t.trigger_direction) == ("stop_market", "falling", "stop_market", "falling")


@pytest.mark.parametrize("flavour,code", [("binance", -2022), ("bybit", 110017)])
def test_reduce_only_refused_when_it_would_open_or_increase(flavour, code):
    e = engine(flavour)
    with pytest.raises(ccxt.InvalidOrder) as flat:
        sell(e, "0.010", reduceOnly=True)
    refused(flat, ccxt.InvalidOrder, code)
    with pytest.raises(ccxt.InvalidOrder) as flat_stop:
        stop(e, "sell", "0.010", "39000")
    refused(flat_stop, ccxt.InvalidOrder, code)
    buy(e, "0.010")
    with pytest.raises(ccxt.InvalidOrder) as increase:
        buy(e, "0.010", reduceOnly=True)
    refused(increase, ccxt.InvalidOrder, code)
    with pytest.raises(ccxt.InvalidOrder):
        stop(e, "buy", "0.010", "41000")  # a buy stop would add to the long
    assert pos(e).size == D("0.010") and not e.open_orders


def test_reduce_only_stop_on_a_smaller_position_fills_only_what_is_left():
    e = engine()
    buy(e, "0.020")
    s = stop(e, "sell", "0.020", "39000")
    e.external_place_order(BTC, "market", "sell", "0.015", T0 + 1, {"reduceOnly": True})
    e.on_mark(BTC, D("38000"), T0 + 2)
    assert s.status == "closed" and s.filled == D("0.005")
    assert pos(e) is None and not e.positions  # no short opened


def test_reduce_only_stop_on_a_flat_position_expires():
    e = engine()
    buy(e, "0.010")
    s = stop(e, "sell", "0.010", "39000")
    e.external_close_position(BTC, T0 + 1)
    e.on_mark(BTC, D("38000"), T0 + 2)
    assert s.status == "expired" and s.filled == 0 and not e.positions


def test_close_position_stop_closes_the_whole_position_whatever_its_size():
    e = engine()
    buy(e, "0.010")
    s = e.create_order(BTC, "STOP_MARKET", "sell", None, None, {"stopPrice": 39000, "closePosition": True}, now_ms=T0)
    buy(e, "0.025", t=T0 + 1)  # the position grows after the stop was placed
    assert e.metrics(T0 + 2)["unprotected_ms"] == 0  # closePosition covers any size
    with pytest.raises(ccxt.ExchangeError) as dup:
        e.create_order(BTC, "STOP_MARKET", "sell", None, None, {"stopPrice": 38000, "closePosition": True}, now_ms=T0 + 2)
    assert error_code(dup.value) == -4130
    e.on_mark(BTC, D("38999"), T0 + 3)
    assert s.status == "closed" and s.filled == D("0.035") and not e.positions
    with pytest.raises(ccxt.NotSupported):
        engine("bybit").create_order(BTC, "market", "sell", 0, None, {"stopLossPrice": 39000, "closePosition": True}, now_ms=T0)


# ------------------------------------------------------------ margin, refusals
@pytest.mark.parametrize("flavour,code", [("binance", -2019), ("bybit", 110007)])
def test_insufficient_margin(flavour, code):
    e = engine(flavour, initial_balance=100)
    with pytest.raises(ccxt.InsufficientFunds) as exc:
        buy(e, "0.030")  # 1200 notional / 10 = 120 margin > 100
    refused(exc, ccxt.InsufficientFunds, code)
    buy(e, "0.020")  # 80 margin + 0.4 fee fits
    assert pos(e).margin == D(80) and e.orders and len(e.fills) == 1


def test_symbol_not_trading_refuses_opening_but_not_reducing():
    e = engine()
    e.create_order(ETH, "market", "buy", "0.010", now_ms=T0)
    e.not_trading.add(ETH)
    with pytest.raises(ccxt.BadRequest) as exc:
        e.create_order(ETH, "market", "buy", "0.010", now_ms=T0)
    refused(exc, ccxt.BadRequest, -4140)
    e.create_order(ETH, "market", "sell", "0.010", None, {"reduceOnly": True}, now_ms=T0)
    assert not e.positions


def test_bybit_region_restricted_symbol():
    e = PaperEngine(MARKETS["bybit"], flavour="bybit", restricted=[ETH])
    e.on_mark(ETH, D("3000"), T0)
    with pytest.raises(ccxt.RestrictedLocation) as exc:
        e.create_order(ETH, "market", "buy", "0.10", now_ms=T0)
    refused(exc, ccxt.RestrictedLocation, 170209)


@pytest.mark.parametrize("flavour,cancel_code,fetch_code", [("binance", -2011, -2013), ("bybit", 110001, 110001)])
def test_unknown_order_on_cancel_and_fetch(flavour, cancel_code, fetch_code):
    e = engine(flavour)
    with pytest.raises(ccxt.OrderNotFound) as c:
        e.cancel_order("999", now_ms=T0)
    refused(c, ccxt.OrderNotFound, cancel_code)
    with pytest.raises(ccxt.OrderNotFound) as f:
        e.get_order("999")
    refused(f, ccxt.OrderNotFound, fetch_code)
    filled = buy(e, "0.010")
    with pytest.raises(ccxt.OrderNotFound):
        e.cancel_order(filled.id, now_ms=T0)  # no longer open
    assert e.get_order(filled.id) is filled


@pytest.mark.parametrize("flavour,key,code", [("binance", "newClientOrderId", -4116), ("binance", "clientOrderId", -4116), ("bybit", "orderLinkId", 110072)])
def test_duplicate_client_id_on_an_open_order_and_lookup_by_client_id(flavour, key, code):
    e = engine(flavour)
    buy(e, "0.010")
    s = stop(e, "sell", "0.010", "39000", **{key: "sl-1"})
    assert e.get_order(client_id="sl-1") is s
    with pytest.raises(ccxt.InvalidOrder) as exc:
        stop(e, "sell", "0.010", "38000", **{key: "sl-1"})
    refused(exc, ccxt.InvalidOrder, code)
    e.cancel_order(None, now_ms=T0, client_id="sl-1")
    again = stop(e, "sell", "0.010", "38000", **{key: "sl-1"})  # reusable once the first is closed
    assert e.get_order(client_id="sl-1") is again and again.id != s.id


def test_quantity_and_price_rules_of_the_market():
    e = engine()
    cases = [(BTC, "0.0015", ccxt.BadRequest, -1111), (BTC, "0", ccxt.BadRequest, -4003), (BTC, "121", ccxt.BadRequest, -4005), (BTC, "0.0001", ccxt.BadRequest, -1111), (ETH, "0.001", ccxt.InvalidOrder, -4164)]
    for symbol, qty, cls, code in cases:
        with pytest.raises(cls) as exc:
            e.create_order(symbol, "market", "buy", qty, now_ms=T0)  # ETH: 0.001 * 3000 = 3 < 5 USDT
        refused(exc, cls, code)
    buy(e, "0.010")
    with pytest.raises(ccxt.BadRequest) as tick:
        stop(e, "sell", "0.010", "39000.05")
    refused(tick, ccxt.BadRequest, -1111)
    with pytest.raises(ccxt.BadRequest) as bybit_step:
        e2 = engine("bybit")
        e2.create_order(ETH, "market", "buy", "0.015", now_ms=T0)  # bybit ETH step is 0.01
    refused(bybit_step, ccxt.BadRequest, 10001)


# -------------------------------------------------------------------- hedge mode
def test_hedge_mode_bybit_position_idx():
    e = engine("bybit", hedge_mode=True)
    e.create_order(BTC, "market", "buy", "0.010", None, {"positionIdx": 1}, now_ms=T0)
    e.create_order(BTC, "market", "sell", "0.020", None, {"positionIdx": 2}, now_ms=T0)
    assert pos(e, f"{BTC}|long").size == D("0.010") and pos(e, f"{BTC}|short").size == D("0.020")
    with pytest.raises(ccxt.BadRequest) as idx:
        e.create_order(BTC, "market", "buy", "0.010", now_ms=T0)  # one-way idx 0 in hedge mode
    refused(idx, ccxt.BadRequest, 10001)
    with pytest.raises(ccxt.InvalidOrder) as wrong_side:
        stop(e, "buy", "0.010", "41000", positionIdx=1)  # a buy does not reduce the long
    refused(wrong_side, ccxt.InvalidOrder, 110017)
    long_sl = stop(e, "sell", "0.010", "39000", positionIdx=1)
    short_sl = stop(e, "buy", "0.020", "41000", positionIdx=2)
    assert e.metrics(T0 + 1000)["unprotected_ms"] == 0
    e.on_mark(BTC, D("38000"), T0 + 2000)
    assert long_sl.status == "closed" and short_sl.status == "open"
    assert f"{BTC}|long" not in e.positions and pos(e, f"{BTC}|short").size == D("0.020")
    assert e.fills[-1].realized_pnl == (D("38000") - D("40000")) * D("0.010")


def test_hedge_mode_binance_position_side_and_ccxt_hedged_param():
    e = engine("binance", hedge_mode=True)
    e.create_order(BTC, "market", "buy", "0.010", None, {"positionSide": "LONG"}, now_ms=T0)
    e.create_order(BTC, "market", "sell", "0.010", None, {"hedged": True}, now_ms=T0)  # opens the short
    assert {k.split("|")[1] for k in e.positions} == {"long", "short"}
    with pytest.raises(ccxt.OperationRejected) as exc:
        buy(e, "0.010")
    refused(exc, ccxt.OperationRejected, -4061)
    e.create_order(BTC, "market", "sell", "0.010", None, {"positionSide": "LONG"}, now_ms=T0)  # closes the long
    assert set(e.positions) == {f"{BTC}|short"}


# ------------------------------------------------------------------- liquidation
def test_liquidation_closes_at_the_liquidation_price_and_leaves_an_orphan_stop():
    e = engine()
    buy(e, "0.010")
    p = pos(e)
    liq = e.liquidation_price(p)
    assert liq == D("36200.0")  # 40000 * (1 - 1/10 + 0.005)
    s = stop(e, "sell", "0.010", "35000")  # below the liquidation price: too late to help
    wallet_before = e.wallet
    e.on_mark(BTC, D("36000"), T0 + 1000)
    assert not e.positions
    f = e.fills[-1]
    assert f.liquidation and f.price == liq and f.qty == D("0.010")
    assert e.wallet == wallet_before - D("40")  # the whole margin is lost
    assert e.totals["liquidations"] == 1 and e.totals["liquidated_margin"] == D("40")
    assert s.status == "open"
    m = e.metrics(T0 + 4000)
    assert m["orphan_orders"] == 1 and m["orphan_order_ids"] == [s.id] and m["orphan_ms"] == 3000
    assert e.position_metrics(BTC)["liquidated"] is True


def test_stop_above_liquidation_fires_before_it_in_the_same_tick():
    e = engine()
    buy(e, "0.010")
    s = stop(e, "sell", "0.010", "39000")
    e.on_mark(BTC, D("36000"), T0 + 1000)  # gap through the stop and the liquidation price
    assert s.status == "closed" and e.totals["liquidations"] == 0 and not e.positions


# ------------------------------------------------------------------ measurements
def test_unprotected_ms_while_open_without_a_stop_then_protected():
    e = engine()
    buy(e, "0.010", t=T0)
    stop(e, "sell", "0.010", "39000", t=T0 + 5000)
    m = e.metrics(T0 + 8000)
    assert m["unprotected_ms"] == 5000 and m["max_unprotected_stretch_ms"] == 5000 and m["unprotected_now"] == 0
    pm = e.position_metrics(BTC)
    assert pm["open"] and pm["open_ms"] == 8000 and pm["unprotected_ms"] == 5000


def test_partial_cover_counts_as_unprotected_and_closed_positions_stop_accruing():
    e = engine()
    buy(e, "0.010", t=T0)
    stop(e, "sell", "0.005", "39000", t=T0)
    assert e.metrics(T0 + 2000)["unprotected_ms"] == 2000
    sell(e, "0.010", t=T0 + 2000, reduceOnly=True)
    m = e.metrics(T0 + 10_000)
    assert m["unprotected_ms"] == 2000 and m["positions_open"] == 0
    assert e.position_metrics(BTC)["open"] is False


def test_two_stops_on_one_position_count_as_overlap():
    e = engine()
    buy(e, "0.010", t=T0)
    a = stop(e, "sell", "0.010", "39000", t=T0)
    stop(e, "sell", "0.010", "39500", t=T0 + 1000)
    e.cancel_order(a.id, now_ms=T0 + 4000)
    m = e.metrics(T0 + 9000)
    assert m["overlap_ms"] == 3000 and m["unprotected_ms"] == 0
    assert e.position_metrics(BTC)["overlap_ms"] == 3000


def test_orphan_count_and_orphan_ms_after_an_external_close():
    e = engine()
    buy(e, "0.010")
    s = stop(e, "sell", "0.010", "39000")
    assert e.metrics(T0)["orphan_orders"] == 0
    e.external_close_position(BTC, T0 + 1000)
    assert e.metrics(T0 + 3000)["orphan_orders"] == 1
    e.cancel_order(s.id, now_ms=T0 + 3000)
    m = e.metrics(T0 + 10_000)
    assert m["orphan_orders"] == 0 and m["orphan_ms"] == 2000


def test_external_cancel_and_external_open():
    e = engine()
    buy(e, "0.010")
    s = stop(e, "sell", "0.010", "39000")
    e.external_cancel_order(s.id, T0 + 1000)
    assert s.status == "canceled" and s.reason == "canceled externally"
    assert e.metrics(T0 + 3000)["unprotected_ms"] == 2000
    e.external_open_position(ETH, "short", D("0.5"), T0 + 3000)
    assert e.positions[f"{ETH}|both"].side == "short"
    assert e.orders[max(e.orders, key=int)].origin == "external"


# ---------------------------------------------------------------- persistence
def _busy(e: PaperEngine, t: int) -> None:
    buy(e, "0.030", t=t)
    stop(e, "sell", "0.010", "39000", t=t, newClientOrderId="a")
    stop(e, "sell", "0.010", "38000", t=t + 10)
    e.on_mark(BTC, D("38500"), t + 20)
    e.create_order(ETH, "market", "sell", "1.000", now_ms=t + 30)
    e.on_mark(ETH, D("3400"), t + 40)  # liquidates the short
    e.set_leverage(BTC, 20, now_ms=t + 50)


def test_snapshot_restore_round_trip_is_exact_and_continues_identically():
    e = engine(partial_fill_prob=0.5, seed=3)
    _busy(e, T0)
    snap = json.loads(json.dumps(e.snapshot()))
    r = PaperEngine.restore(snap, MARKETS["binance"])
    assert r.snapshot() == e.snapshot()
    assert r.metrics(T0 + 99_000) == e.metrics(T0 + 99_000)
    for x in (e, r):
        buy(x, "0.050", t=T0 + 100_000)  # same RNG draw for the partial fill
        x.on_mark(BTC, D("30000"), T0 + 110_000)
    assert r.snapshot() == e.snapshot()


# ------------------------------------------------------------------ property test
ops = st.lists(
    st.one_of(
        st.tuples(st.just("mark"), st.integers(-600, 600)),
        st.tuples(st.just("market"), st.sampled_from(["buy", "sell"]), st.integers(1, 40), st.booleans()),
        st.tuples(st.just("stop"), st.integers(1, 40), st.integers(1, 80)),
        st.tuples(st.just("close"), st.just(0)),
    ),
    min_size=5,
    max_size=40,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, st.sampled_from([5, 10, 50]))
def test_accounting_is_consistent_and_reduce_only_never_flips(sequence, leverage):
    """wallet == initial + Σ realised − Σ fees − liquidated margin, and reduce-only never flips a position."""
    e = engine(initial_balance=2000, leverage=leverage, slippage_bps=2)
    t, price = T0, D(40000)

    def side_size():
        p = pos(e)
        return (p.side, p.size) if p else (None, D(0))

    for op in sequence:
        t += 1000
        before = side_size()
        reduce_only_op = False
        try:
            if op[0] == "mark":
                price = max(D(1000), price + D(op[1]) * 10)
                e.on_mark(BTC, price, t)
                reduce_only_op = True  # only reduce-only stops and liquidations act on a mark
            elif op[0] == "market":
                _k, side, steps, ro = op
                e.create_order(BTC, "market", side, D(steps) / 1000, None, {"reduceOnly": ro}, now_ms=t)
                reduce_only_op = ro
            elif op[0] == "stop":
                _k, steps, dist = op
                p = pos(e)
                if p is not None:
                    side = "sell" if p.side == "long" else "buy"
                    trig = price - dist * 10 if side == "sell" else price + dist * 10
                    e.create_order(BTC, "market", side, D(steps) / 1000, None, {"stopPrice": trig, "reduceOnly": True}, now_ms=t)
            else:
                e.external_close_position(BTC, t)
                reduce_only_op = True
        except (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest, ccxt.OperationRejected):  # the venue's own refusals
            pass
        after = side_size()
        for p in e.positions.values():
            assert p.size > 0 and p.margin >= 0
        if reduce_only_op and before[0] is not None:
            assert after[0] in (None, before[0]) and after[1] <= before[1], f"reduce-only flipped/increased {before} -> {after}"
        fills_realised = sum((f.realized_pnl for f in e.fills), D(0))
        fills_fees = sum((f.fee for f in e.fills), D(0))
        tot = e.totals
        assert e.wallet == D(2000) + fills_realised - fills_fees
        assert e.wallet == D(2000) + tot["realized_pnl"] - tot["fees"] - tot["liquidated_margin"]
        for o in e.orders.values():
            assert 0 <= o.filled <= o.requested_amount or o.close_position or o.origin == "liquidation"


class _Reference:
    """The measurements by their definition: before each call, charge the time since the last
    one to a full assessment of every position and open order taken after the last call."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.status: dict[str, tuple[bool, bool]] = {}
        self.orphans: list = []
        self.unprotected = self.overlap = self.orphan = 0
        self.by_symbol: dict[str, list[int]] = {}
        self.stretch: dict[str, int] = {}
        self.max_stretch = 0

    def before(self, t: int) -> None:
        if self.last is not None and t > self.last:
            dt = t - self.last
            for key, (unprotected, overlap) in self.status.items():
                sym = self.by_symbol.setdefault(key.split("|")[0], [0, 0, 0])
                if unprotected:
                    self.unprotected += dt
                    sym[0] += dt
                    self.stretch[key] = self.stretch.get(key, 0) + dt
                    self.max_stretch = max(self.max_stretch, self.stretch[key])
                else:
                    self.stretch[key] = 0
                if overlap:
                    self.overlap += dt
                    sym[1] += dt
            for o in self.orphans:
                self.orphan += dt
                self.by_symbol.setdefault(o.symbol, [0, 0, 0])[2] += dt
        self.last = t if self.last is None else max(self.last, t)

    def after(self, e: PaperEngine) -> None:
        from adapters.paper.metrics import assess

        self.status, self.orphans = assess(e.positions.values(), e.open_orders.values())
        for key in list(self.stretch):
            if key not in self.status:
                self.stretch[key] = 0  # closed: a new position on the key starts its own stretch


_OP = st.tuples(st.sampled_from(["buy", "sell", "stop", "stop2", "cancel", "close", "mark", "external"]), st.sampled_from([BTC, ETH]), st.integers(0, 3000), st.integers(0, 10_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_OP, min_size=1, max_size=40))
def test_incremental_measurements_equal_their_definition(ops):
    """The engine re-assesses only the symbols a change touched and charges episodes and symbols
    lazily; over any sequence of entries, stops, cancels, closes and marks its figures are those of
    a full assessment of every position and order before every call."""
    e = engine()
    ref = _Reference()
    ref.before(T0)
    ref.after(e)
    t = T0
    price = {BTC: D(40000), ETH: D(3000)}
    for kind, sym, dt, r in ops:
        t += dt
        qty = "0.010" if sym == BTC else "0.100"
        ref.before(max(t, e.now_ms))
        try:
            if kind in ("buy", "sell"):
                e.create_order(sym, "market", kind, qty, None, {}, now_ms=t)
            elif kind in ("stop", "stop2"):
                p = pos(e, f"{sym}|both")
                side = "sell" if p is None or p.side == "long" else "buy"
                off = D(1) - D(r % 50 + 1) / 1000 if side == "sell" else D(1) + D(r % 50 + 1) / 1000
                trigger = (price[sym] * off).quantize(D("0.1") if sym == BTC else D("0.01"))
                half = qty if kind == "stop" else ("0.005" if sym == BTC else "0.050")
                e.create_order(sym, "market", side, half, None, {"stopLossPrice": str(trigger), "reduceOnly": True}, now_ms=t)
            elif kind == "cancel":
                live = [o for o in e.open_orders.values() if o.symbol == sym]
                if live:
                    e.cancel_order(live[r % len(live)].id, now_ms=t)
                else:
                    e.metrics(t)
            elif kind == "close":
                e.external_close_position(sym, t)
            elif kind == "external":
                e.external_open_position(sym, "long" if r % 2 else "short", D(qty), t)
            else:
                step = D(r - 5000) / D(100_000)  # up to +-5 %
                price[sym] = (price[sym] * (1 + step)).quantize(D("0.1") if sym == BTC else D("0.01"))
                e.on_mark(sym, price[sym], t)
        except ccxt.BaseError:
            pass  # refused (reduce-only with nothing to reduce, ...): the call still charged the time
        ref.after(e)
        ref.before(max(t, e.now_ms))
        m = e.metrics(t)
        ref.after(e)
        assert (m["unprotected_ms"], m["overlap_ms"], m["orphan_ms"]) == (ref.unprotected, ref.overlap, ref.orphan)
        assert m["max_unprotected_stretch_ms"] == ref.max_stretch
        assert m["unprotected_now"] == sum(1 for u, _ in ref.status.values() if u) and m["orphan_orders"] == len(ref.orphans)
        for s in (BTC, ETH):
            totals = e.position_metrics(s)["symbol_totals"]
            want = ref.by_symbol.get(s, [0, 0, 0])
            assert [totals.get("unprotected_ms", 0), totals.get("overlap_ms", 0), totals.get("orphan_ms", 0)] == want, s
    restored = PaperEngine.restore(json.loads(json.dumps(e.snapshot())), MARKETS["binance"])
    ref.before(t + 1000)
    got = restored.metrics(t + 1000)  # a restored engine goes on charging the same state
    assert (got["unprotected_ms"], got["overlap_ms"], got["orphan_ms"]) == (ref.unprotected, ref.overlap, ref.orphan)


def test_a_position_report_alone_is_charged_up_to_its_time():
    """Episodes and symbol totals are charged lazily: a position report asked for on its own (no
    metrics call before it) still counts every millisecond up to the time it is asked at."""
    e = engine()
    buy(e, "0.010", t=T0)
    pm = e.position_metrics(BTC, now_ms=T0 + 5000)
    assert pm["open_ms"] == 5000 and pm["unprotected_ms"] == 5000 and pm["max_unprotected_stretch_ms"] == 5000
    assert pm["symbol_totals"]["unprotected_ms"] == 5000
    assert "charged_ms" not in pm and "unprotected_count" not in pm["symbol_totals"]  # bookkeeping stays inside
