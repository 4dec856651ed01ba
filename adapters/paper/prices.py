"""Mark prices for the paper exchange, replayed from real candles.

**Real history.** BTC comes from ``btc-perp-1m-2022-01.csv`` (FTX BTC-PERP
1-minute bars, Jan 2022; timestamp text ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC)
and XRP from ``xrp-usdt-perp-5m-2021-11.json`` (``[ts_ms, o, h, l, c, v]``,
5-minute bars, Nov 2021). Prices are used as they are, rounded to the
market's tick.

**Candle -> 4 ticks.** Each candle becomes four mark prices at 0, 1/4, 2/4 and
3/4 of its interval: the open; then the low and then the high if the candle
closed up (open <= close), else the high and then the low; then the close.

**Trade ticks.** A CSV whose header has ``timestamp_ms`` and ``price`` (and no
``open``/``high``/``low``/``close``) is trades: bucketed into 1-second candles
(:func:`trades_to_candles`; an empty second is flat at the previous close),
then four ticks each like any candle. Any other CSV header is refused.

**Synthetic symbols.** Symbols with no history of their own (ETH, LTC, ADA,
DOGE, TRX, ...) get a *synthetic* path: a block bootstrap (blocks of
``block_candles`` consecutive candles, seeded per symbol from ``seed``) of
the real BTC 1-minute candles, each taken as its high/open, low/open and
close/open ratios and chained from a per-symbol start price
(:data:`DEFAULT_START_PRICES`, configurable). So the returns, their
volatility clustering within a block and the intra-candle ranges are real
BTC ones, only rescaled in level; the path is not that coin's real history.
Every price is rounded to that market's tick (never below one tick). Only
each path's block plan is kept (:class:`SyntheticTicks`); its ticks are
computed when asked for, so a thousand markets start in under a second and a
few MB (a full path of Decimals per market took minutes and gigabytes).

**Time.** :class:`PriceReplay` maps engine time onto history time: engine
``start_ms`` is the open of each series' first candle; ``time_scale`` history
ms pass per engine ms. At the end of a series the replay wraps around:
``wrap="mirror"`` (default) plays the series backwards and then forwards
again, so the path stays continuous; ``wrap="repeat"`` starts over from the
first candle (a jump from the last close to the first open).
"""

from __future__ import annotations

import csv
import functools
import json
import random
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, overload

from adapters.markets import Market, Markets

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "prices"
REAL_HISTORIES = {"BTC": "btc-perp-1m-2022-01.csv", "XRP": "xrp-usdt-perp-5m-2021-11.json"}
DEFAULT_START_PRICES = {
    "BTC": "46300", "ETH": "3700", "LTC": "146", "ADA": "1.31", "XRP": "0.83",
    "DOGE": "0.17", "TRX": "0.076", "ZRX": "0.85", "BNB": "510", "SOL": "170",
}  # fmt: skip

Candle = tuple[str, str, str, str]  # open, high, low, close as text


def candle_ticks(o: Decimal, h: Decimal, low: Decimal, c: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """The four ticks of one candle, in the documented order."""
    return (o, low, h, c) if o <= c else (o, h, low, c)


def _csv_time(text: str) -> int:
    """A CSV candle's open time: epoch ms, or UTC text (2022-01-01 00:01:00[.000000])."""
    if text.isdigit():
        return int(text)
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


#: Trade ticks become candles of this length (see :func:`trades_to_candles`).
TRADES_CANDLE_MS = 1_000
CANDLE_COLUMNS = ("timestamp or timestamp_ms", "open", "high", "low", "close")
TRADE_COLUMNS = ("timestamp_ms", "price")


def csv_format(header: Sequence[str]) -> str:
    """``"candles"`` or ``"trades"`` from a CSV header; ValueError naming the expected columns otherwise."""
    cols = {c.strip() for c in header}
    if {"open", "high", "low", "close"} <= cols and cols & {"timestamp", "timestamp_ms"}:
        return "candles"
    if {"timestamp_ms", "price"} <= cols:
        return "trades"
    raise ValueError(f"unknown CSV header {','.join(header)!r}: expected candles ({', '.join(CANDLE_COLUMNS)}[, volume]) "
                     f"or trades ({', '.join(TRADE_COLUMNS)}[, trade_id, quantity, buyer_maker])")


def trades_to_candles(trades: Iterable[tuple[int, str]], candle_ms: int = TRADES_CANDLE_MS) -> tuple[int, tuple[Candle, ...]]:
    """(first open ms, candles) from (time ms, price text) trades in file order (times never decreasing).

    Each ``candle_ms`` bucket (aligned to epoch multiples) with trades is a candle: the first trade's
    price the open, the highest and lowest the high and low, the last the close; a bucket without a
    trade is a flat candle at the previous close. The candles then become marks like any candle's."""
    candles: list[Candle] = []
    t0 = bucket = None
    o = h = low = c = ""
    for ts, price in trades:
        b = ts - ts % candle_ms
        if bucket is not None and b < bucket:
            raise ValueError(f"trade times go backwards at {ts} ms")
        if bucket is None or b != bucket:
            if bucket is not None:
                candles.append((o, h, low, c))
                candles.extend((c, c, c, c) for _ in range((b - bucket) // candle_ms - 1))
            else:
                t0 = b
            bucket, o, h, low = b, price, price, price
        else:
            h = price if Decimal(price) > Decimal(h) else h
            low = price if Decimal(price) < Decimal(low) else low
        c = price
    if bucket is None or t0 is None:
        raise ValueError("no trades")
    candles.append((o, h, low, c))
    return t0, tuple(candles)


@functools.lru_cache(maxsize=8)
def load_candles(path: Path) -> tuple[int, int, tuple[Candle, ...]]:
    """(first open time ms, interval ms, candles) of a CSV (candles or trades, told by the header) or JSON candle file."""
    path = Path(path)
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            kind = csv_format(reader.fieldnames or [])
            rows = list(reader)
        if kind == "trades":
            t0, from_trades = trades_to_candles((int(r["timestamp_ms"]), r["price"].strip()) for r in rows)
            return t0, TRADES_CANDLE_MS, from_trades
        key = "timestamp" if "timestamp" in rows[0] else "timestamp_ms"
        times = [_csv_time(r[key]) for r in rows[:2]]
        candles = tuple((r["open"], r["high"], r["low"], r["close"]) for r in rows)
    else:
        rows = json.loads(path.read_text())
        times = [int(r[0]) for r in rows[:2]]
        # A venue's kline export: [open time ms, open, high, low, close, ...], prices as numbers or as text.
        candles = tuple(tuple(x if isinstance(x, str) else repr(x) for x in r[1:5]) for r in rows)  # type: ignore[misc]
    return times[0], times[1] - times[0], candles


@functools.lru_cache(maxsize=32)
def _real_ticks(path: Path, market: Market) -> tuple[Decimal, ...]:
    _t0, _iv, candles = load_candles(path)
    out: list[Decimal] = []
    cache: dict[str, Decimal] = {}
    for candle in candles:
        o, h, low, c = (cache.get(x) or cache.setdefault(x, market.round_price(Decimal(x)).quantize(market.tick_size)) for x in candle)
        out.extend(candle_ticks(o, h, low, c))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _btc_ratios(btc_path: Path) -> tuple[array, array, array, array]:
    """Per BTC candle: high/open, low/open, close/open, and the running product of the
    close/open ratios before it (so a block's opens are one multiplication each)."""
    _t0, _iv, candles = load_candles(btc_path)
    rh, rl, rc, run = array("d"), array("d"), array("d"), array("d", [1.0])
    for o, h, low, c in candles:
        fo = float(o)
        rh.append(float(h) / fo)
        rl.append(float(low) / fo)
        rc.append(float(c) / fo)
        run.append(run[-1] * rc[-1])
    return rh, rl, rc, run


class SyntheticTicks(Sequence[Decimal]):
    """A synthetic tick path, computed on demand from its block plan.

    Only the plan is kept per symbol (each block's BTC start candle and its
    opening price, a few hundred numbers), not tens of thousands of Decimals:
    a thousand markets start in well under a second and a few MB. The blocks
    are drawn from the seeded generator exactly as a full path would be, so a
    path is the same whenever and in whatever order its ticks are asked for."""

    def __init__(self, btc_path: Path, market: Market, start_price: Decimal, seed: int, n_candles: int, block_candles: int) -> None:
        self._rh, self._rl, self._rc, self._run = _btc_ratios(btc_path)
        rng = random.Random(f"{seed}:{market.symbol}")
        self._block, self._n = block_candles, n_candles * 4
        self._starts: list[int] = []
        self._opens: list[float] = []
        price = float(start_price)
        for _ in range(-(-n_candles // block_candles)):
            j = rng.randrange(0, len(self._rc) - block_candles)
            self._starts.append(j)
            self._opens.append(price)
            price *= self._run[j + block_candles] / self._run[j]
        self._tick_f, self._tick = float(market.tick_size), market.tick_size
        self._first = market.round_price(start_price).quantize(market.tick_size)
        self._last: tuple[int, tuple[Decimal, Decimal, Decimal, Decimal]] | None = None

    def _on_grid(self, p: float) -> Decimal:
        return max(round(p / self._tick_f), 1) * self._tick

    def _candle(self, k: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        if self._last is not None and self._last[0] == k:
            return self._last[1]
        b, i = divmod(k, self._block)
        j = self._starts[b]
        o = self._opens[b] * self._run[j + i] / self._run[j]
        ticks = candle_ticks(*(self._on_grid(x) for x in (o, o * self._rh[j + i], o * self._rl[j + i], o * self._rc[j + i])))
        self._last = (k, ticks)
        return ticks

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Decimal: ...
    @overload
    def __getitem__(self, i: slice) -> list[Decimal]: ...
    def __getitem__(self, i: int | slice) -> Decimal | list[Decimal]:
        if isinstance(i, slice):
            return [self[g] for g in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._first if i == 0 else self._candle(i // 4)[i % 4]


class _Series:
    __slots__ = ("source", "symbol", "tick_ms", "ticks")

    def __init__(self, symbol: str, tick_ms: int, ticks: Sequence[Decimal], source: str):
        self.symbol, self.tick_ms, self.ticks, self.source = symbol, tick_ms, ticks, source


class PriceReplay:
    """Mark prices for every symbol as a function of engine time.

    ``PriceReplay(markets, start_ms=clock.now_ms(), symbols=None, start_prices=None,
    seed=0, time_scale=1, wrap="mirror", synthetic_candles=10_080, block_candles=60,
    data_dir=DATA_DIR, real_histories=None)``. ``symbols`` defaults to every market;
    ``start_prices`` (by base coin) apply to synthetic series; ``real_histories``
    (base coin -> file in ``data_dir``, default :data:`REAL_HISTORIES`; ``{}``
    makes every symbol synthetic).
    """

    def __init__(
        self,
        markets: Markets,
        *,
        start_ms: int,
        symbols: Iterable[str] | None = None,
        start_prices: dict[str, str | Decimal] | None = None,
        seed: int = 0,
        time_scale: int = 1,
        wrap: str = "mirror",
        synthetic_candles: int = 10_080,
        block_candles: int = 60,
        data_dir: Path = DATA_DIR,
        real_histories: dict[str, str] | None = None,
    ) -> None:
        if wrap not in ("mirror", "repeat"):
            raise ValueError(f"wrap must be mirror or repeat, not {wrap!r}")
        if time_scale < 1:
            raise ValueError("time_scale must be >= 1")
        self.start_ms, self.time_scale, self.wrap = int(start_ms), int(time_scale), wrap
        prices = {**DEFAULT_START_PRICES, **{k.upper(): str(v) for k, v in (start_prices or {}).items()}}
        btc_path = Path(data_dir) / REAL_HISTORIES["BTC"]
        _t0, btc_interval, _c = load_candles(btc_path)
        self.series: dict[str, _Series] = {}
        for sym in symbols or [m.symbol for m in markets]:
            m = markets.resolve(sym)
            history = (REAL_HISTORIES if real_histories is None else real_histories).get(m.base)
            if history:
                _t0, interval, _c = load_candles(Path(data_dir) / history)
                self.series[m.symbol] = _Series(m.symbol, interval // 4, _real_ticks(Path(data_dir) / history, m), f"real:{history}")
            else:
                start = Decimal(prices.get(m.base, "1"))
                synthetic = SyntheticTicks(btc_path, m, start, seed, synthetic_candles, block_candles)
                self.series[m.symbol] = _Series(m.symbol, btc_interval // 4, synthetic, f"synthetic:bootstrap(BTC 1m, seed={seed}, start={start})")

    @property
    def symbols(self) -> list[str]:
        return list(self.series)

    def _price(self, s: _Series, g: int) -> Decimal:
        n = len(s.ticks)
        cycle, i = divmod(g, n)
        if self.wrap == "mirror" and cycle % 2:
            i = n - 1 - i
        return s.ticks[i]

    def _ts(self, s: _Series, g: int) -> int:
        return self.start_ms + g * s.tick_ms // self.time_scale

    def _index_at(self, s: _Series, t_ms: int) -> int:
        """The last tick index whose engine time is <= ``t_ms`` (-1 before the start)."""
        off = t_ms - self.start_ms
        return -((-(off + 1) * self.time_scale) // s.tick_ms) - 1

    def ticks_between(self, t0_ms: int, t1_ms: int) -> list[tuple[int, str, Decimal]]:
        """Every (engine ts, symbol, price) with ``t0_ms < ts <= t1_ms``, in time order."""
        out: list[tuple[int, str, Decimal]] = []
        for s in self.series.values():
            lo, hi = max(self._index_at(s, t0_ms) + 1, 0), self._index_at(s, t1_ms)
            out.extend((self._ts(s, g), s.symbol, self._price(s, g)) for g in range(lo, hi + 1))
        out.sort(key=lambda x: x[0])
        return out

    def candles(self, symbol: str, timeframe_ms: int, since_ms: int, until_ms: int, limit: int = 500) -> list[list[Any]]:
        """OHLC candles of engine time (``[open ts, o, h, l, c, None]``, volume not replayed) built from
        the ticks in ``[since_ms, until_ms]``: what this exchange served as its mark, nothing else."""
        s = self.series[symbol]
        lo, hi = max(self._index_at(s, since_ms - 1) + 1, 0), self._index_at(s, until_ms)
        lo = max(lo, hi - 200_000)  # a bounded answer: the newest ticks
        out: list[list[Any]] = []
        for g in range(lo, hi + 1):
            ts, price = self._ts(s, g), self._price(s, g)
            bucket = ts - ts % timeframe_ms
            if out and out[-1][0] == bucket:
                c = out[-1]
                c[2], c[3], c[4] = max(c[2], price), min(c[3], price), price
            else:
                out.append([bucket, price, price, price, price, None])
        return out[:limit]

    def price_at(self, symbol: str, t_ms: int) -> Decimal:
        """The mark at engine time ``t_ms`` (the first tick before the start)."""
        s = self.series[symbol]
        return self._price(s, max(self._index_at(s, t_ms), 0))

    def prices_at(self, t_ms: int) -> dict[str, Decimal]:
        return {sym: self.price_at(sym, t_ms) for sym in self.series}
