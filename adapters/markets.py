"""Market rules (tick, step, limits) as exact Decimals, and rounding by them.

Markets come from ccxt market dicts: loaded from a venue by ccxt, or from the
recorded definitions in ``data/markets/`` for the paper exchange. Exact values
are taken from the raw exchange filters in ``info`` (``tickSize "0.10"``),
because ccxt's parsed ``precision`` is a float.

Rounding is direction-aware. A protective stop is rounded *away from the
market* so it never ends up closer than asked (a long's sell stop rounds down,
a short's buy stop rounds up), and a price never rounds to zero: the least
is one tick (the old bot sent prices below one tick: seed 004).
"""

from __future__ import annotations

import json
from decimal import ROUND_DOWN, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import msgspec

from core.grid import Rounding, to_grid


class Market(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str  # ccxt unified, e.g. BTC/USDT:USDT
    id: str  # venue id, e.g. BTCUSDT
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal | None = None
    max_market_qty: Decimal | None = None
    min_notional: Decimal = Decimal(0)
    contract_size: Decimal = Decimal(1)
    max_leverage: int | None = None
    #: The venue's taker fee rate (0.0005 = 0.05 %) where the market data has it.
    taker_fee: Decimal | None = None
    #: The lowest / highest price the venue accepts at all (Binance PRICE_FILTER, Bybit priceFilter).
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    #: The venue's price band around the mark for limit orders, as multipliers (down, up):
    #: Binance PERCENT_PRICE multiplierDown/Up (0.95, 1.05); Bybit riskParameters
    #: priceLimitRatioX (1 - X, 1 + X). None where the market data carries none.
    price_band: tuple[Decimal, Decimal] | None = None

    def round_price(self, price: Decimal, rounding: Rounding = Rounding.NEAREST) -> Decimal:
        """``price`` on the tick grid; never below one tick."""
        try:
            return to_grid(price, self.tick_size, rounding)
        except ValueError as exc:
            raise ValueError(f"{self.id}: {exc}") from None

    def stop_price(self, price: Decimal, *, closing_side: str) -> Decimal:
        """A stop price rounded away from the market: a sell stop down, a buy stop up."""
        return self.round_price(price, Rounding.DOWN if closing_side == "sell" else Rounding.UP)  # = stop_on_grid

    def limit_bounds(self, side: str, mark: Decimal | None) -> tuple[Decimal, Decimal | None]:
        """The lowest and highest limit price (on the grid) the venue accepts now for ``side``.

        The percent-price band only bounds the aggressive side, as on both venues: a
        sell may not be priced below ``mark x down``, a buy not above ``mark x up``
        (Binance PERCENT_PRICE, Bybit priceLimitRatioX); the passive side is bounded
        by the market's min/max price only. Never below one tick."""
        low = max(self.min_price or self.tick_size, self.tick_size)
        high = self.max_price
        if self.price_band is not None and mark is not None and mark > 0:
            down, up = self.price_band
            if side == "sell":
                low = max(low, self.round_price(mark * down, Rounding.UP))
            else:
                cap = (mark * up / self.tick_size).to_integral_value(rounding=ROUND_FLOOR) * self.tick_size
                high = cap if high is None else min(high, cap)
        return low, high

    def round_qty(self, qty: Decimal) -> Decimal:
        """``qty`` rounded down to the step (never more than asked)."""
        if not qty.is_finite():
            raise ValueError(f"{self.id}: quantity is not a finite number: {qty}")
        return (qty / self.step_size).to_integral_value(rounding=ROUND_DOWN) * self.step_size

    def check_order(self, qty: Decimal, price: Decimal, *, market_order: bool = True) -> str | None:
        """Why an order of ``qty`` at ``price`` would be refused, or None."""
        if qty <= 0:
            return f"quantity {qty} is not positive"
        if qty != self.round_qty(qty):
            return f"quantity {qty} is not a multiple of the step {self.step_size}"
        if qty < self.min_qty:
            return f"quantity {qty} is below the minimum {self.min_qty}"
        limit = self.max_market_qty if market_order and self.max_market_qty else self.max_qty
        if limit is not None and qty > limit:
            return f"quantity {qty} is above the maximum {limit}"
        if self.min_notional and qty * price * self.contract_size < self.min_notional:
            return f"notional {qty * price} is below the minimum {self.min_notional}"
        return None


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _filters(info: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    return {f.get("filterType"): f for f in info.get("filters", []) if isinstance(f, dict)}


def market_from_ccxt(m: dict[str, Any]) -> Market:
    """A Market from a ccxt market dict (Binance USDⓈ-M or Bybit linear)."""
    info = m.get("info") or {}
    filters = _filters(info)
    price_f = filters.get("PRICE_FILTER") or info.get("priceFilter") or {}
    lot_f = filters.get("LOT_SIZE") or info.get("lotSizeFilter") or {}
    mkt_f = filters.get("MARKET_LOT_SIZE") or {}
    notional_f = filters.get("MIN_NOTIONAL") or {}
    limits = m.get("limits") or {}
    tick = _dec(price_f.get("tickSize")) or _dec(m["precision"]["price"])
    step = _dec(lot_f.get("stepSize") or lot_f.get("qtyStep")) or _dec(m["precision"]["amount"])
    min_qty = _dec(lot_f.get("minQty") or lot_f.get("minOrderQty")) or _dec((limits.get("amount") or {}).get("min")) or step
    min_notional = _dec(notional_f.get("notional") or lot_f.get("minNotionalValue")) or _dec((limits.get("cost") or {}).get("min")) or Decimal(0)
    lev = (limits.get("leverage") or {}).get("max")
    taker = _dec(m.get("taker"))
    if tick is None or step is None or tick <= 0 or step <= 0:
        raise ValueError(f"market {m.get('symbol')}: no usable tick/step size")
    assert min_qty is not None  # it falls back to step, checked just above
    return Market(
        symbol=m["symbol"],
        id=m["id"],
        base=m["base"],
        quote=m["quote"],
        tick_size=tick.normalize(),
        step_size=step.normalize(),
        min_qty=min_qty.normalize(),
        max_qty=_dec(lot_f.get("maxQty") or lot_f.get("maxOrderQty")),
        max_market_qty=_dec(mkt_f.get("maxQty") or lot_f.get("maxMktOrderQty")),
        min_notional=min_notional,
        contract_size=_dec(m.get("contractSize")) or Decimal(1),
        max_leverage=int(lev) if lev else None,
        taker_fee=taker,
        min_price=_positive(price_f.get("minPrice")),
        max_price=_positive(price_f.get("maxPrice")),
        price_band=_price_band(filters, info),
    )


def _positive(value: Any) -> Decimal | None:
    d = _dec(value)
    return d.normalize() if d is not None and d > 0 else None


def _price_band(filters: dict[Any, dict[str, Any]], info: dict[str, Any]) -> tuple[Decimal, Decimal] | None:
    """Binance PERCENT_PRICE (multipliers around the mark) or Bybit's price limit ratio X."""
    pct = filters.get("PERCENT_PRICE") or {}
    down, up = _dec(pct.get("multiplierDown")), _dec(pct.get("multiplierUp"))
    if down is not None and up is not None and 0 < down < 1 < up:
        return down.normalize(), up.normalize()
    ratio = _dec((info.get("riskParameters") or {}).get("priceLimitRatioX"))
    if ratio is not None and 0 < ratio < 1:
        return (1 - ratio).normalize(), (1 + ratio).normalize()
    return None


class Markets:
    """The linear USDT perpetuals of one venue, by unified symbol and by id."""

    def __init__(self, markets: list[Market]) -> None:
        self.by_symbol = {m.symbol: m for m in markets}
        self.by_id = {m.id: m for m in markets}

    @classmethod
    def from_ccxt(cls, raw: dict[str, dict[str, Any]]) -> Markets:
        linear = [v for v in raw.values() if v.get("type") == "swap" and v.get("linear") and v.get("quote") == "USDT" and v.get("settle", "USDT") == "USDT"]
        return cls([market_from_ccxt(v) for v in linear])

    @classmethod
    def from_file(cls, path: Path) -> Markets:
        return cls.from_ccxt(json.loads(Path(path).read_text()))

    def resolve(self, symbol: str) -> Market:
        """Accept ``BTCUSDT`` or ``BTC/USDT:USDT``; raise KeyError naming the symbol."""
        text = symbol.strip().upper()
        market = self.by_symbol.get(text) or self.by_id.get(text) or self.by_id.get(text.split(":")[0].replace("/", ""))
        if market is None:
            raise KeyError(f"unknown symbol {symbol!r} (known: {', '.join(sorted(self.by_id))})")
        return market

    def __contains__(self, symbol: str) -> bool:
        try:
            self.resolve(symbol)
        except KeyError:
            return False
        return True

    def __iter__(self):
        return iter(self.by_symbol.values())

    def __len__(self) -> int:
        return len(self.by_symbol)
