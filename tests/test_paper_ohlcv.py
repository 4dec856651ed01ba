"""The paper exchange's ``fetch_ohlcv``: candles of the marks it replayed (checked against the replay's own
ticks, bucketed by hand), none without a replay, and an unknown timeframe refused as ccxt would."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import ccxt
import pytest

from adapters.paper import PaperExchange
from core.clock import VirtualClock

BTC = "BTC/USDT:USDT"


def test_candles_are_the_replayed_ticks_bucketed_by_minute():
    clock = VirtualClock(start_ms=1_700_000_000_000)
    ex = PaperExchange.paper(clock, replay=True)
    asyncio.run(ex.load_markets())
    t0 = clock.now_ms()
    clock.advance(10 * 60_000)
    candles = asyncio.run(ex.fetch_ohlcv(BTC, "1m", since=t0, limit=5))
    assert len(candles) == 5
    ticks = [(ts, p) for ts, sym, p in ex.price_replay.ticks_between(t0 - 1, t0 + 5 * 60_000 - 1) if sym == BTC]
    by_minute: dict[int, list[Decimal]] = {}
    for ts, p in ticks:
        by_minute.setdefault(ts - ts % 60_000, []).append(p)
    expected = [[k, float(v[0]), float(max(v)), float(min(v)), float(v[-1]), None] for k, v in sorted(by_minute.items())]
    assert candles == expected[:5]
    assert all(c[2] >= max(c[1], c[4]) and c[3] <= min(c[1], c[4]) for c in candles)


def test_no_replay_no_candles_and_unknown_timeframe_is_refused():
    clock = VirtualClock(start_ms=1_700_000_000_000)
    ex = PaperExchange.paper(clock, replay=False)
    asyncio.run(ex.load_markets())
    assert asyncio.run(ex.fetch_ohlcv(BTC, "1m")) == []
    with pytest.raises(ccxt.BadRequest, match="unsupported timeframe '7m'"):
        asyncio.run(ex.fetch_ohlcv(BTC, "7m"))
