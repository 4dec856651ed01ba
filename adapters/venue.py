"""The venue layer: domain operations over any ccxt-compatible exchange object.

The position actor speaks only this (open, protect, close, look up); below it
is either the paper exchange or a real ``ccxt.async_support`` exchange: the
same calls, the same dicts, the same exceptions. Here, once:

* quantities and prices are put on the market's grid (a stop rounds away from
  the market, never below one tick) and checked against its limits;
* every call goes through the :class:`Executor` (classification, retries,
  look-up by client order id after an ambiguous timeout);
* ccxt's dicts become typed reports with Decimals.

Venue differences are small strategy objects (:class:`VenueStyle`), not
``if exchange == ...`` branches.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

import msgspec

from adapters.errors import Outcome, VenueError
from adapters.executor import Executor
from adapters.markets import Market, Markets


class OrderStatus(enum.Enum):
    OPEN = "open"
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"  # Bybit reports no status for a moment after create


_STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED, "cancelled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}


class OrderReport(msgspec.Struct, frozen=True, kw_only=True):
    order_id: str
    client_id: str | None
    symbol: str  # venue id, e.g. BTCUSDT
    side: str  # buy / sell
    status: OrderStatus
    amount: Decimal
    filled: Decimal
    average: Decimal | None = None
    trigger_price: Decimal | None = None
    reduce_only: bool = False
    ts_ms: int | None = None

    @property
    def is_stop(self) -> bool:
        return self.trigger_price is not None


class PositionReport(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: str  # long / short
    qty: Decimal
    entry_price: Decimal
    mark_price: Decimal | None = None
    liquidation_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None


def _d(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


class VenueStyle:
    """How one venue wants its orders; subclasses differ only in data."""

    name = "binance"

    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"newClientOrderId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"clientOrderId": client_id, "origClientOrderId": client_id}

    def fetch_params(self) -> dict[str, Any]:
        return {}

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only stop-market on the mark price."""
        return "STOP_MARKET", {"stopPrice": float(stop_price), "reduceOnly": True, "workingType": "MARK_PRICE", **self.client_id_params(client_id)}

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only take-profit-market on the mark price."""
        return "TAKE_PROFIT_MARKET", {"stopPrice": float(price), "reduceOnly": True, "workingType": "MARK_PRICE", **self.client_id_params(client_id)}


class BybitStyle(VenueStyle):
    name = "bybit"

    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"orderLinkId": client_id}

    def lookup_params(self, client_id: str) -> dict[str, Any]:
        return {"clientOrderId": client_id, "orderLinkId": client_id, **self.fetch_params()}

    def fetch_params(self) -> dict[str, Any]:
        # ccxt's bybit.fetch_order only sees the last 500 orders and insists on being told so.
        return {"acknowledged": True}

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        # triggerDirection 2 = trigger when the price falls to it (a long's stop), 1 = rises.
        direction = 2 if closing_side == "sell" else 1
        return "market", {"triggerPrice": float(stop_price), "triggerDirection": direction, "triggerBy": "MarkPrice", "reduceOnly": True, **self.client_id_params(client_id)}

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {"takeProfitPrice": float(price), "triggerBy": "MarkPrice", "reduceOnly": True, **self.client_id_params(client_id)}


STYLES: dict[str, VenueStyle] = {"binance": VenueStyle(), "bybit": BybitStyle()}


class Venue:
    """Domain operations on one exchange account."""

    def __init__(self, name: str, exchange: Any, markets: Markets, executor: Executor, style: VenueStyle) -> None:
        self.name = name
        self.exchange = exchange
        self.markets = markets
        self.executor = executor
        self.style = style

    def market(self, symbol: str) -> Market:
        try:
            return self.markets.resolve(symbol)
        except KeyError as exc:
            raise VenueError(Outcome.REJECTED, str(exc.args[0])) from None

    # ----------------------------------------------------------- orders
    async def open_market(self, symbol: str, side: str, qty: Decimal, client_id: str, *, ref_price: Decimal, ctx: dict[str, Any] | None = None) -> OrderReport:
        """Market entry; after an ambiguous timeout, the order is looked up, never re-sent blindly.

        ``ref_price`` (the mark the size was computed from) checks min notional.
        """
        m = self.market(symbol)
        qty = m.round_qty(qty)
        if problem := m.check_order(qty, ref_price):
            raise VenueError(Outcome.REJECTED, f"{m.id}: {problem}")
        params = self.style.client_id_params(client_id)
        return await self.executor.run(
            "create_order.entry",
            lambda: self._create(m, "market", side, qty, params),
            idempotent=False,
            lookup=lambda: self.fetch_order(symbol, client_id=client_id),
            context=ctx,
        )

    async def place_stop(self, symbol: str, closing_side: str, qty: Decimal, stop_price: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """A reduce-only stop-market triggered by the mark price, rounded away from the market."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        price = m.stop_price(stop_price, closing_side=closing_side)
        if qty <= 0:
            raise VenueError(Outcome.REJECTED, f"{m.id}: stop quantity {qty} rounds to zero")
        kind, params = self.style.stop_order(closing_side, price, client_id)
        return await self.executor.run(
            "create_order.stop",
            lambda: self._create(m, kind, closing_side, qty, params),
            idempotent=False,
            lookup=lambda: self.fetch_order(symbol, client_id=client_id),
            context=ctx,
        )

    async def place_take_profit(self, symbol: str, closing_side: str, qty: Decimal, price: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """A reduce-only take-profit-market (partial exit) on the mark price."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        kind, params = self.style.take_profit_order(closing_side, m.round_price(price), client_id)
        return await self.executor.run(
            "create_order.take_profit",
            lambda: self._create(m, kind, closing_side, qty, params),
            idempotent=False,
            lookup=lambda: self.fetch_order(symbol, client_id=client_id),
            context=ctx,
        )

    async def close_market(self, symbol: str, closing_side: str, qty: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """Reduce-only market close of ``qty`` (the caller verifies the result)."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        params = {"reduceOnly": True, **self.style.client_id_params(client_id)}
        return await self.executor.run(
            "create_order.close",
            lambda: self._create(m, "market", closing_side, qty, params),
            idempotent=False,
            lookup=lambda: self.fetch_order(symbol, client_id=client_id),
            context=ctx,
        )

    async def cancel(self, symbol: str, order_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport | None:
        """Cancel an order; None if the venue does not know it (already gone)."""
        m = self.market(symbol)
        try:
            raw = await self.executor.run("cancel_order", lambda: self.exchange.cancel_order(order_id, m.symbol), idempotent=True, context=ctx)
        except VenueError as err:
            if err.outcome is Outcome.NOT_FOUND:
                return None
            raise
        return self._order(raw, m)

    async def _create(self, m: Market, kind: str, side: str, qty: Decimal, params: dict[str, Any]) -> OrderReport:
        raw = await self.exchange.create_order(m.symbol, kind, side, float(qty), None, params)
        return self._order(raw, m)

    # ---------------------------------------------------------- queries
    async def fetch_order(self, symbol: str, *, order_id: str | None = None, client_id: str | None = None, ctx: dict[str, Any] | None = None) -> OrderReport | None:
        """An order by id or client id; None if the venue does not know it."""
        m = self.market(symbol)
        params = self.style.lookup_params(client_id) if client_id and not order_id else self.style.fetch_params()
        try:
            raw = await self.executor.run("fetch_order", lambda: self.exchange.fetch_order(order_id, m.symbol, params), idempotent=True, record=False, context=ctx)
        except VenueError as err:
            if err.outcome is Outcome.NOT_FOUND:
                return None
            raise
        return self._order(raw, m)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        m = self.market(symbol) if symbol else None
        raw = await self.executor.run("fetch_open_orders", lambda: self.exchange.fetch_open_orders(m.symbol if m else None), idempotent=True, record=False)
        return [self._order(o, self.markets.by_symbol.get(o["symbol"])) for o in raw if o.get("symbol") in self.markets.by_symbol]

    async def positions(self, symbols: list[str] | None = None) -> list[PositionReport]:
        unified = [self.market(s).symbol for s in symbols] if symbols else None
        raw = await self.executor.run("fetch_positions", lambda: self.exchange.fetch_positions(unified), idempotent=True, record=False)
        out = []
        for p in raw:
            m = self.markets.by_symbol.get(p.get("symbol"))
            qty = _d(p.get("contracts")) or Decimal(0)
            if m is None or qty == 0:
                continue
            out.append(
                PositionReport(
                    symbol=m.id,
                    side=p.get("side") or ("long" if qty > 0 else "short"),
                    qty=abs(qty) * (m.contract_size if m.contract_size != 1 else 1),
                    entry_price=_d(p.get("entryPrice")) or Decimal(0),
                    mark_price=_d(p.get("markPrice")),
                    liquidation_price=_d(p.get("liquidationPrice")),
                    unrealized_pnl=_d(p.get("unrealizedPnl")),
                )
            )
        return out

    async def position(self, symbol: str, side: str | None = None) -> PositionReport | None:
        for p in await self.positions([symbol]):
            if p.symbol == self.market(symbol).id and (side is None or p.side == side):
                return p
        return None

    async def mark_price(self, symbol: str) -> Decimal:
        m = self.market(symbol)
        ticker = await self.executor.run("fetch_ticker", lambda: self.exchange.fetch_ticker(m.symbol), idempotent=True, record=False)
        info = ticker.get("info") or {}
        mark = _d(ticker.get("markPrice") or info.get("markPrice") or ticker.get("last"))
        if mark is None or not mark.is_finite() or mark <= 0:
            raise VenueError(Outcome.RETRYABLE, f"{m.id}: no usable mark price in ticker")
        return mark

    async def mark_prices(self, symbols: list[str]) -> dict[str, Decimal]:
        out = {}
        for symbol in symbols:
            out[self.market(symbol).id] = await self.mark_price(symbol)
        return out

    async def free_balance(self, asset: str = "USDT") -> Decimal:
        bal = await self.executor.run("fetch_balance", lambda: self.exchange.fetch_balance(), idempotent=True, record=False)
        return _d((bal.get(asset) or {}).get("free")) or Decimal(0)

    # ---------------------------------------------------------- parsing
    def _order(self, raw: dict[str, Any], m: Market | None) -> OrderReport:
        info = raw.get("info") or {}
        status = _STATUS.get(str(raw.get("status") or "").lower(), OrderStatus.UNKNOWN)
        trigger = _d(raw.get("triggerPrice") or raw.get("stopPrice") or raw.get("stopLossPrice"))
        reduce_only = bool(raw.get("reduceOnly") or info.get("reduceOnly") in (True, "true") or info.get("closePosition") in (True, "true"))
        return OrderReport(
            order_id=str(raw.get("id")),
            client_id=raw.get("clientOrderId") or info.get("clientOrderId") or info.get("orderLinkId"),
            symbol=m.id if m else str(raw.get("symbol")),
            side=str(raw.get("side") or "").lower(),
            status=status,
            amount=_d(raw.get("amount")) or Decimal(0),
            filled=_d(raw.get("filled")) or Decimal(0),
            average=_d(raw.get("average")),
            trigger_price=trigger if trigger else None,
            reduce_only=reduce_only,
            ts_ms=raw.get("timestamp"),
        )
