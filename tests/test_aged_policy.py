"""Aged positions, the pure policy: phases, the loss schedule, exit prices on the grid (Decimal exact)."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.aged_policy import HOUR_MS, Phase, allowed_loss, exit_price, fee_rate, phase_at, reason_of, target_price
from adapters.markets import Markets
from core.config import AgedConfig
from core.ids import Side
from tests.conftest import SHARED

D = Decimal
H = HOUR_MS
CFG = AgedConfig()
BINANCE = Markets.from_file(SHARED / "data" / "markets" / "binanceusdm-linear.json")
BYBIT = Markets.from_file(SHARED / "data" / "markets" / "bybit.json")
BTC = BINANCE.resolve("BTCUSDT")
#: A sub-cent market like the 1000-prefixed meme contracts, built from a real one.
MEME = msgspec.structs.replace(BINANCE.resolve("DOGEUSDT"), id="1000MEMEUSDT", symbol="1000MEME/USDT:USDT", tick_size=D("1E-7"), step_size=D(1000), min_qty=D(1000), min_price=D("1E-7"))


def minutes(m: int) -> int:
    return m * 60_000


@pytest.mark.parametrize(
    ("age_ms", "phase"),
    [
        (3 * H - minutes(1), None),  # 2 h 59 m: not aged
        (3 * H - 1, None),
        (3 * H, Phase.GRACE),
        (11 * H - 1, Phase.GRACE),  # the last millisecond of the grace
        (11 * H, Phase.PROGRESSIVE),
        (27 * H, Phase.PROGRESSIVE),
        (11 * H + 16 * H + 40 * 60_000, Phase.CAP),  # 0.6 %/h from 11 h: the cap at 27 h 40 m
        (100 * H, Phase.CAP),
    ],
)
def test_phases_at_their_boundaries(age_ms, phase):
    assert phase_at(CFG, age_ms) is phase


def test_the_loss_schedule_with_the_defaults():
    # accelerate_after_hours = 10 counts from open: with a 3 h + 8 h wait the whole progressive runs at 0.6 %/h
    assert allowed_loss(CFG, 3 * H) == 0
    assert allowed_loss(CFG, 11 * H) == 0
    assert allowed_loss(CFG, 12 * H) == D("0.6")
    assert allowed_loss(CFG, 15 * H) == D("2.4")
    assert allowed_loss(CFG, 27 * H) == D("9.6")
    assert allowed_loss(CFG, 28 * H) == D(10)
    assert allowed_loss(CFG, 200 * H) == D(10)


def test_the_acceleration_starts_when_the_position_is_older_than_accelerate_after_hours():
    cfg = AgedConfig(accelerate_after_hours=D(15))
    assert allowed_loss(cfg, 15 * H) == D(2)  # 4 h at 0.5 %/h
    assert allowed_loss(cfg, 15 * H - minutes(6)) == D("1.95")
    assert allowed_loss(cfg, 16 * H) == D("2.6")  # then 0.6 %/h
    assert allowed_loss(cfg, 20 * H) == D("5")


def test_widening_stays_within_the_cap():
    assert allowed_loss(CFG, 12 * H, D(2)) == D("2.6")
    assert allowed_loss(CFG, 27 * H, D(2)) == D(10)


def test_fees_come_from_the_market_data_else_the_config():
    assert fee_rate(BTC, CFG) == D("0.0005")
    assert fee_rate(BYBIT.resolve("BTCUSDT"), CFG) == D("0.0006")
    assert fee_rate(msgspec.structs.replace(BTC, taker_fee=None), AgedConfig(fallback_fee_percent=D("0.1"))) == D("0.001")


@pytest.mark.parametrize(
    ("side", "loss", "price"),
    [
        (Side.LONG, D(0), D("40040.1")),  # 40000 x 1.0005 / 0.9995 = 40040.02...: a sell rounds up
        (Side.SHORT, D(0), D("39960.0")),  # 40000 x 0.9995 / 1.0005 = 39960.01...: a buy rounds down
        (Side.LONG, D("2.5"), D("39039.6")),  # 40000 x 0.9755 / 0.9995 = 39039.51...
        (Side.SHORT, D("2.5"), D("40959.5")),  # 40000 x 1.0245 / 1.0005 = 40959.52...
        (Side.LONG, D(10), D("36038.1")),
        (Side.SHORT, D(10), D("43958.0")),
    ],
)
def test_exit_prices_are_exact_on_the_grid(side, loss, price):
    target = target_price(side, D(40000), D("0.0005"), loss)
    got, _ = exit_price(BTC, side, target, None)
    assert got == price
    fee = D("0.0005")
    net_loss = (D(40000) * (1 + fee) - got * (1 - fee)) if side is Side.LONG else (got * (1 + fee) - D(40000) * (1 - fee))
    assert net_loss / D(40000) * 100 <= loss  # never more loss than allowed
    assert net_loss / D(40000) * 100 > loss - D("0.0001") * 100 / 40000 * 10 - D("0.001")


def test_breakeven_means_no_loss_after_both_fees():
    for side in Side:
        price, _ = exit_price(BTC, side, target_price(side, D("40000"), D("0.0005"), D(0)), None)
        assert price is not None
        pnl = side.pnl(D(40000), price, D(1)) - (D(40000) + price) * D("0.0005")
        assert pnl >= 0


def test_the_percent_price_band_moves_an_aggressive_exit_towards_the_market():
    # a long allowed a 10 % loss while the mark is 20 % above the target: the sell may not be below mark x 0.95
    price, note = exit_price(BTC, Side.LONG, D(30000), D(40000))
    assert price == D(38000) and "lowest sell price" in note
    price, note = exit_price(BTC, Side.SHORT, D(50000), D(40000))
    assert price == D(42000) and "highest buy price" in note


def test_an_exit_the_venue_limits_would_force_into_more_loss_is_refused():
    price, why = exit_price(BTC, Side.LONG, D(5_000_000), D(4_400_000))  # above the max price 4529764
    assert price is None and "maximum" in why
    price, why = exit_price(BTC, Side.SHORT, D(500), D(600))  # below the min price 556.8
    assert price is None and "minimum" in why


def test_a_sub_cent_market_gets_prices_on_its_grid_never_zero():
    price, _ = exit_price(MEME, Side.LONG, target_price(Side.LONG, D("0.0000123"), D("0.0005"), D(0)), None)
    assert price == D("0.0000124")  # 0.00001231...: up
    price, _ = exit_price(MEME, Side.SHORT, target_price(Side.SHORT, D("0.0000123"), D("0.0005"), D("2.5")), None)
    assert price == D("0.0000125")  # 0.00001259...: down
    price, why = exit_price(MEME, Side.SHORT, D("0.00000005"), None)
    assert price is None and "one tick" in why
    price, _ = exit_price(MEME, Side.LONG, D("0.00000001"), None)
    assert price == MEME.tick_size


def test_close_reasons():
    assert reason_of(Phase.GRACE, D(0)) == "aged: grace"
    assert reason_of(Phase.PROGRESSIVE, D("2.50")) == "aged: progressive 2.5%"
    assert reason_of(Phase.CAP, D(10)) == "aged: cap 10%"


REAL = [BINANCE.resolve("TRXUSDT"), BINANCE.resolve("DOGEUSDT"), BYBIT.resolve("TRXUSDT"), BYBIT.resolve("DOGEUSDT"), MEME, BTC]


@settings(max_examples=300, deadline=None)
@given(
    market=st.sampled_from(REAL),
    side=st.sampled_from(list(Side)),
    entry_ticks=st.integers(min_value=1, max_value=10**7),
    age_ms=st.integers(min_value=0, max_value=60 * H),
    widen=st.sampled_from([D(0), D(2), D(4), D(8)]),
    mark_ratio=st.decimals(min_value=D("0.5"), max_value=D("1.5"), places=3) | st.none(),
)
def test_any_exit_is_on_the_grid_positive_and_never_beyond_the_cap(market, side, entry_ticks, age_ms, widen, mark_ratio):
    entry = market.tick_size * entry_ticks
    loss = allowed_loss(CFG, age_ms, widen)
    assert D(0) <= loss <= CFG.max_loss_percent
    fee = fee_rate(market, CFG)
    target = target_price(side, entry, fee, loss)
    mark = entry * mark_ratio if mark_ratio is not None else None
    price, why = exit_price(market, side, target, mark)
    if price is None:
        assert why
        return
    assert price > 0 and price >= market.tick_size
    assert price == market.round_price(price)
    assert price >= target if side is Side.LONG else price <= target  # never more loss than allowed


def test_ctl_aged_rows_show_phase_age_loss_exit_and_distance_to_the_mark():
    from supervision.commands import aged_rows, with_age
    from tradebot.cli import _render

    now = 1_700_000_000_000
    row = {
        "position_id": "p1", "symbol": "BTCUSDT", "side": "long", "aged_from_ms": now - 12 * H, "aged_phase": "progressive", "aged_loss": "0.6",
        "aged_price": "39784.0", "aged_qty": "0.025", "aged_order_id": "9", "aged_mark": "39600", "aged_mark_ms": now - 30_000, "aged_since": "entry fill",
        "tick_size": "0.1", "step_size": "0.001",
    }
    plain = {"position_id": "p2", "symbol": "ETHUSDT", "opened_ts_ms": now - H}
    [aged] = aged_rows([row, plain], now)
    assert (aged["phase"], aged["age_h"], aged["loss_percent"], aged["exit_price"], aged["distance_percent"], aged["mark_age_s"]) == ("progressive", 12.0, "0.6", "39784.0", "0.46", 30)
    assert [r["age_h"] for r in with_age([row, plain], now)] == [12.0, 1.0]
    text = _render("aged", [aged])
    assert "progressive" in text and "39784.0" in text and "0.46" in text
    assert _render("aged", []) == "no aged positions"
