"""PriceReplay: candles -> 4 ticks, tick grid, time mapping, wrap-around, synthetic symbols."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal as D
from pathlib import Path

import pytest

from adapters.markets import Markets
from adapters.paper.prices import DATA_DIR, PriceReplay, load_candles

SHARED = Path(__file__).resolve().parents[2] / "shared"
MARKETS = Markets.from_file(SHARED / "data/markets/binanceusdm-linear.json")
BTC, ETH, XRP = "BTC/USDT:USDT", "ETH/USDT:USDT", "XRP/USDT:USDT"
T0 = 1_700_000_000_000
BTC_FILE, XRP_FILE = DATA_DIR / "btc-perp-1m-2022-01.csv", DATA_DIR / "xrp-usdt-perp-5m-2021-11.json"


def replay(**kw) -> PriceReplay:
    kw.setdefault("symbols", [BTC, ETH, XRP])
    return PriceReplay(MARKETS, start_ms=T0, **kw)


def ticks_of(r: PriceReplay, symbol: str, t0: int, t1: int) -> list[tuple[int, D]]:
    return [(ts, p) for ts, s, p in r.ticks_between(t0, t1) if s == symbol]


def test_data_files_are_what_the_docstring_says():
    t0, interval, candles = load_candles(BTC_FILE)
    assert (t0, interval, len(candles)) == (1640991660000, 60_000, 45031)  # 2021-12-31 23:01 UTC
    t0, interval, candles = load_candles(XRP_FILE)
    assert (t0, interval, len(candles)) == (1636934400000, 300_000, 1999)


def test_a_candle_becomes_four_ticks_in_the_documented_order():
    r = replay()
    _t, _iv, candles = load_candles(BTC_FILE)
    up = candles[0]  # 46319 46385 46319 46377: closed up -> open, low, high, close
    assert ticks_of(r, BTC, T0 - 1, T0 + 59_999) == [(T0, D(up[0])), (T0 + 15_000, D(up[2])), (T0 + 30_000, D(up[1])), (T0 + 45_000, D(up[3]))]
    k = next(i for i, (o, h, low, c) in enumerate(candles) if D(o) > D(c) and D(h) > D(o) and D(low) < D(c))
    o, h, low, c = candles[k]
    start = T0 + k * 60_000
    assert [p for _ts, p in ticks_of(r, BTC, start - 1, start + 59_999)] == [D(o), D(h), D(low), D(c)]  # closed down: high first


def test_five_minute_candles_tick_every_75_seconds():
    r = replay()
    xs = ticks_of(r, XRP, T0 - 1, T0 + 600_000)
    assert [ts - T0 for ts, _ in xs] == [i * 75_000 for i in range(9)]
    assert xs[0][1] == D("1.1893") and xs[1][1] == D("1.1891") and xs[2][1] == D("1.1954")  # up candle: open, low, high


def test_every_price_is_on_the_market_tick_grid():
    r = PriceReplay(MARKETS, start_ms=T0)
    for ts, sym, p in r.ticks_between(T0 - 1, T0 + 6 * 3_600_000):
        tick = MARKETS.resolve(sym).tick_size
        assert p % tick == 0 and p >= tick, (sym, p)
        assert p == p.quantize(tick)


def test_ticks_between_is_half_open_and_splits_cleanly():
    r = replay()
    a, b, c = T0 - 1, T0 + 123_456, T0 + 999_999
    assert r.ticks_between(a, b) + r.ticks_between(b, c) == r.ticks_between(a, c)
    assert r.ticks_between(T0, T0) == [] and r.ticks_between(T0 - 10, T0 - 1) == []
    assert r.price_at(BTC, T0 - 5000) == r.price_at(BTC, T0) == D("46319.0")
    assert r.price_at(BTC, T0 + 14_999) == D("46319.0") and r.price_at(BTC, T0 + 30_000) == D("46385.0")


@pytest.mark.parametrize("wrap", ["repeat", "mirror"])
def test_wraps_around_at_the_end_of_the_history(wrap):
    r = replay(wrap=wrap, symbols=[XRP])
    n = len(r.series[XRP].ticks)
    end = T0 + n * 75_000  # engine time of the first tick after the history
    last, after = r.price_at(XRP, end - 1), r.price_at(XRP, end)
    assert last == D("1.0713")  # close of the last candle
    if wrap == "repeat":
        assert after == D("1.1893")  # back to the first open
        assert r.price_at(XRP, end + 75_000) == r.price_at(XRP, T0 + 75_000)
    else:
        assert after == last  # played backwards: continuous
        assert r.price_at(XRP, end + 75_000) == r.price_at(XRP, end - 2 * 75_000 + 1)
        assert r.price_at(XRP, 2 * end - T0) == D("1.1893")  # and forwards again
    assert len(ticks_of(r, XRP, end - 75_000 * 3, end + 75_000 * 3)) == 6


def test_synthetic_symbols_start_at_the_configured_price_and_move():
    r = replay(symbols=[ETH], start_prices={"ETH": "2500"}, seed=1)
    assert r.series[ETH].source.startswith("synthetic")
    assert r.price_at(ETH, T0) == D("2500.00")
    path = [p for _ts, p in ticks_of(r, ETH, T0 - 1, T0 + 3_600_000)]
    assert len(path) == 241 and len(set(path)) > 50
    assert all(D(2000) < p < D(3000) for p in path)
    same = replay(symbols=[ETH], start_prices={"ETH": "2500"}, seed=1)
    other = replay(symbols=[ETH], start_prices={"ETH": "2500"}, seed=2)
    assert ticks_of(same, ETH, T0 - 1, T0 + 3_600_000) == ticks_of(r, ETH, T0 - 1, T0 + 3_600_000)
    assert ticks_of(other, ETH, T0 - 1, T0 + 3_600_000) != ticks_of(r, ETH, T0 - 1, T0 + 3_600_000)


def test_synthetic_returns_are_resampled_btc_returns():
    """Close-to-close log-return volatility of the synthetic path is BTC's, within sampling noise."""
    r = PriceReplay(MARKETS, start_ms=T0, symbols=[ETH], real_histories={}, start_prices={"ETH": "3700"})
    synth = [float(p) for p in r.series[ETH].ticks[3::4]]
    _t, _iv, candles = load_candles(BTC_FILE)
    btc = [float(c[3]) for c in candles]

    def vol(xs: list[float]) -> float:
        return statistics.pstdev(math.log(b / a) for a, b in zip(xs, xs[1:]))

    assert 0.7 < vol(synth) / vol(btc) < 1.4


def test_time_scale_runs_history_faster_than_engine_time():
    r = replay(symbols=[BTC], time_scale=60)  # one history minute per engine second
    assert [ts - T0 for ts, _ in ticks_of(r, BTC, T0 - 1, T0 + 999)] == [0, 250, 500, 750]
    assert r.price_at(BTC, T0 + 1000) == replay(symbols=[BTC]).price_at(BTC, T0 + 60_000)
