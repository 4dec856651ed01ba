"""The venue layer: domain operations over any ccxt-compatible exchange object.

The position actor speaks only this (open, protect, close, look up); below it
is either the paper exchange or a real ``ccxt.async_support`` exchange: the
same calls, the same dicts, the same exceptions. Here, once:

* quantities and prices are put on the market's grid (a stop rounds away from
  the market, never below one tick) and checked against its limits;
* every call goes through the :class:`Executor` (classification, retries,
  look-up by client order id after an ambiguous timeout);
* ccxt's dicts become typed reports with Decimals.

Venue differences are small strategy objects (:class:`VenueStyle`, one per
venue unit in :mod:`adapters.venues`), not ``if exchange == ...`` branches;
no raw venue field is read here.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import msgspec

from adapters.errors import Outcome, VenueError
from adapters.executor import Executor
from adapters.markets import Market, Markets
from adapters.venue_position_stop import PositionStopVenue
from adapters.venue_setup import TradingSetup
from adapters.venue_streams import StreamingVenue, has_key
from adapters.venues import STYLES, VenueStyle  # noqa: F401 - STYLES is re-exported


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
    limit_price: Decimal | None = None  # a limit order's price (the aged exit)
    reduce_only: bool = False
    ts_ms: int | None = None
    #: Hedge mode: the position side the order acts on (long / short); None in one-way mode.
    position_side: str | None = None
    #: A TP/SL attached to the position (Bybit ``stopOrderType`` TakeProfit/StopLoss/...):
    #: not cancellable as an order, cleared through the position's trading-stop.
    attached: str | None = None
    #: What the venue charged for the filled part, in the market's quote currency (ccxt ``fees``/``fee``,
    #: else the order's trades); None where it reports none, or only in another currency.
    fee: Decimal | None = None

    @property
    def is_stop(self) -> bool:
        return self.trigger_price is not None


class FillReport(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    order_id: str | None
    client_id: str | None
    symbol: str  # venue id
    side: str  # buy / sell
    price: Decimal
    qty: Decimal
    fee: Decimal | None = None
    fee_currency: str | None = None
    realized_pnl: Decimal | None = None
    kind: str = "trade"  # trade / funding / liquidation / adl / settle
    ts_ms: int | None = None


class BalanceReport(msgspec.Struct, frozen=True, kw_only=True):
    """One asset of the account's balance as the venue reports it (None where it does not say)."""

    asset: str
    free: Decimal | None = None
    used: Decimal | None = None
    total: Decimal | None = None
    venue_ts_ms: int | None = None  # the venue's own time of the figures, where it gives one


class PositionReport(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    side: str  # long / short
    qty: Decimal
    entry_price: Decimal
    mark_price: Decimal | None = None
    liquidation_price: Decimal | None = None
    unrealized_pnl: Decimal | None = None
    #: When the venue says the position was opened (Bybit ``createdTime``); None where it does not (Binance).
    opened_ms: int | None = None


def _ticker_mark(ticker: dict[str, Any] | None, style: VenueStyle) -> Decimal | None:
    """A ticker's mark price (never its last trade), if usable."""
    if not ticker:
        return None
    mark = _d(ticker.get("markPrice") or style.raw_mark(ticker.get("info") or {}))
    return mark if mark is not None and mark.is_finite() and mark > 0 else None


def _d(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))




def _fee_sum(fees: Any, quote: str | None) -> Decimal | None:
    """The total of ccxt fee dicts in ``quote`` (a fee without a currency counts as the quote's); None if
    there is none, or any is in another currency (never converted, never guessed)."""
    total: Decimal | None = None
    for f in fees or ():
        cost = _d((f or {}).get("cost"))
        if cost is None:
            continue
        currency = f.get("currency")
        if quote is not None and currency is not None and str(currency) != quote:
            return None
        total = cost if total is None else total + cost
    return total


def order_fee(raw: dict[str, Any], quote: str | None) -> Decimal | None:
    """The fee a ccxt order reports: its ``fees`` (or ``fee``), else the sum over its ``trades``' fees."""
    fee = _fee_sum(raw.get("fees") or ([raw["fee"]] if raw.get("fee") else []), quote)
    if fee is not None:
        return fee
    trades = raw.get("trades") or []
    per_trade = [_fee_sum(t.get("fees") or ([t["fee"]] if t.get("fee") else []), quote) for t in trades if isinstance(t, dict)]
    if not per_trade or any(f is None for f in per_trade):
        return None
    return sum((f for f in per_trade if f is not None), Decimal(0))


def _ms(value: Any) -> int | None:
    try:
        ms = int(str(value))
    except (TypeError, ValueError):
        return None
    return ms if ms > 0 else None


class Venue(StreamingVenue, PositionStopVenue):
    """Domain operations on one exchange account.

    ``position_stop``: stops are the position's own, amended in place (:mod:`adapters.venue_position_stop`),
    where the style offers it; otherwise every stop is an order."""

    def __init__(self, name: str, exchange: Any, markets: Markets, executor: Executor, style: VenueStyle, *, setup: TradingSetup | None = None, position_stop: bool = False) -> None:
        if position_stop and not style.position_stop_supported:
            raise ValueError(f"{name}: position-attached stops are not offered by the {style.name} style")
        self.position_stop = position_stop
        self.name = name
        self.exchange = exchange
        self.markets = markets
        self.executor = executor
        self.style = style
        #: Leverage and margin mode set before the first entry on a symbol (real venues; None: left alone).
        self.setup = setup
        self._marks_seen: dict[str, Any] = {}  # StreamingVenue: ccxt.pro tickers already handed out
        self._order_listeners = []  # StreamingVenue.add_order_listener

    def market(self, symbol: str) -> Market:
        try:
            return self.markets.resolve(symbol)
        except KeyError as exc:
            raise VenueError(Outcome.REJECTED, str(exc.args[0])) from None

    # ----------------------------------------------------------- orders
    async def open_market(self, symbol: str, side: str, qty: Decimal, client_id: str, *, ref_price: Decimal, leverage: int | None = None, ctx: dict[str, Any] | None = None) -> OrderReport:
        """Market entry; after an ambiguous timeout, the order is looked up, never re-sent blindly.

        ``ref_price`` (the mark the size was computed from) checks min notional. With a
        :attr:`setup`, the symbol's leverage (``leverage``: what the size was computed with)
        and margin mode are set and verified first; if they cannot be, the entry is refused
        (REJECTED) before it is sent.
        """
        m = self.market(symbol)
        qty = m.round_qty(qty)
        if problem := m.check_order(qty, ref_price):
            raise VenueError(Outcome.REJECTED, f"{m.id}: {problem}")
        if self.setup is not None:
            await self.setup.ensure(self, m, leverage=leverage, ctx=ctx)
        kind, params = self.style.entry_order(side, client_id)
        report = await self._place("create_order.entry", m, kind, side, qty, params, client_id, conditional=False, ctx=ctx)
        return await self._read_back(symbol, report, ctx)

    async def place_stop(self, symbol: str, closing_side: str, qty: Decimal, stop_price: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """A reduce-only stop-market triggered by the mark price, rounded away from the market."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        price = m.stop_price(stop_price, closing_side=closing_side)
        if qty <= 0:
            raise VenueError(Outcome.REJECTED, f"{m.id}: stop quantity {qty} rounds to zero")
        if self.position_stop:
            return await self._set_position_stop(m, closing_side, qty, price, client_id, ctx)
        kind, params = self.style.stop_order(closing_side, price, client_id)
        return await self._place("create_order.stop", m, kind, closing_side, qty, params, client_id, conditional=True, price=price, ctx=ctx)

    async def place_take_profit(self, symbol: str, closing_side: str, qty: Decimal, price: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """A reduce-only take-profit-market (partial exit) on the mark price."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        price = m.round_price(price)
        kind, params = self.style.take_profit_order(closing_side, price, client_id)
        return await self._place("create_order.take_profit", m, kind, closing_side, qty, params, client_id, conditional=True, price=price, ctx=ctx)

    async def place_exit_limit(self, symbol: str, closing_side: str, qty: Decimal, price: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """A reduce-only GTC limit order at ``price`` (the aged exit, client id ``tb-<pid>-x<n>``).

        The caller rounds the price in its safe direction; one off the grid or below
        one tick is refused here, never silently re-rounded (seed 004: prices
        rounded to 0 or below one tick)."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        if qty <= 0:
            raise VenueError(Outcome.REJECTED, f"{m.id}: exit quantity {qty} rounds to zero")
        if not price.is_finite() or price < m.tick_size or m.round_price(price) != price:
            raise VenueError(Outcome.REJECTED, f"{m.id}: exit price {price} is not on the tick grid {m.tick_size} (at least one tick)")
        kind, params = self.style.exit_limit_order(closing_side, client_id)
        return await self._place("create_order.exit", m, kind, closing_side, qty, params, client_id, conditional=False, limit=price, ctx=ctx)

    async def close_market(self, symbol: str, closing_side: str, qty: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """Reduce-only market close of ``qty`` (the caller verifies the result)."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        kind, params = self.style.close_order(closing_side, client_id)
        report = await self._place("create_order.close", m, kind, closing_side, qty, params, client_id, conditional=False, ctx=ctx)
        return await self._read_back(symbol, report, ctx)

    async def _place(
        self, op: str, m: Market, kind: str, side: str, qty: Decimal, params: dict[str, Any], client_id: str, *, conditional: bool, price: Decimal | None = None,
        limit: Decimal | None = None, ctx: dict[str, Any] | None,
    ) -> OrderReport:
        """Every order goes out once: after an ambiguous failure it is looked up by its client id."""
        report: OrderReport = await self.executor.run(
            op,
            lambda: self._create(m, kind, side, qty, params, price, limit),
            idempotent=False,
            lookup=lambda: self.fetch_order(m.id, client_id=client_id, conditional=conditional),
            context=ctx,
        )
        if report is not None:
            self._acted("place", report, report.order_id)
        return report

    async def cancel(self, symbol: str, order_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport | None:
        """Cancel an order; None if the venue does not know it (already gone).

        The style routes the id to its book (Binance: a conditional order's id
        carries the algo prefix and is cancelled with ccxt's ``trigger`` flag)."""
        m = self.market(symbol)
        if self.style.is_position_stop(order_id):
            return await self._clear_position_stop(m, order_id, ctx)
        exchange_id, params = self.style.order_ref(order_id)
        try:
            raw = await self.executor.run("cancel_order", lambda: self.exchange.cancel_order(exchange_id, m.symbol, params), idempotent=True, context=ctx)
        except VenueError as err:
            if err.outcome is Outcome.NOT_FOUND:
                return None
            raise
        self._acted("cancel", None, order_id)
        return self._order(raw, m)

    async def clear_attached(self, symbol: str, position_side: str | None, *, ctx: dict[str, Any] | None = None) -> bool:
        """Clear the TP/SL attached to a position (Bybit trading-stop); False if the venue has none.

        The venue's answer code is checked by ccxt (a ``retCode`` arriving as the string
        "0" is success); any other answer is raised as a :class:`VenueError`."""
        m = self.market(symbol)
        request = self.style.clear_attached_request(m.id, position_side)
        if request is None or not callable(getattr(self.exchange, request[0], None)):
            return False
        method, params = request
        await self.executor.run("clear_attached", lambda: getattr(self.exchange, method)(params), idempotent=True, context=ctx)
        return True

    async def _read_back(self, symbol: str, report: OrderReport, ctx: dict[str, Any] | None) -> OrderReport:
        """Where a venue acknowledges an order with its ids only (Bybit), read the market order back
        for its status and fill: one round trip (realtime by id), a second only where the first
        does not show it (the history). Not visible anywhere yet: the bare acknowledgement stands
        (the position actor then resolves it by client id)."""
        if report.status is not OrderStatus.UNKNOWN or not self.style.read_back_market_orders:
            return report
        m = self.market(symbol)
        for method, params in self.style.read_back_queries(report.order_id):
            if not callable(getattr(self.exchange, method, None)):
                continue

            def call(method: str = method, params: dict[str, Any] = params) -> Awaitable[dict[str, Any] | None]:
                return self._by_id(method, m, report.order_id, params)

            try:
                found = await self.executor.run("fetch_order", call, idempotent=True, record=False, context=ctx)
            except VenueError as err:
                if err.outcome is Outcome.NOT_FOUND:
                    continue  # realtime no longer lists it: the next read (the history)
                return report
            if found is not None:
                return await self._with_fill(self._order(found, m), found, m, ctx)
        return report

    async def _by_id(self, method: str, m: Market, order_id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if method == "fetch_order":
            return await self.exchange.fetch_order(order_id, m.symbol, params)
        orders = await getattr(self.exchange, method)(m.symbol, None, None, params)
        return next((o for o in orders if str(o.get("id")) == order_id), None)

    async def _create(self, m: Market, kind: str, side: str, qty: Decimal, params: dict[str, Any], trigger: Decimal | None = None, limit: Decimal | None = None) -> OrderReport:
        raw = await self.exchange.create_order(m.symbol, kind, side, float(qty), float(limit) if limit is not None else None, params)
        report = self._order(raw, m)
        # An acknowledgement with ids only (Bybit) is completed with what was sent; its status stays unknown.
        return msgspec.structs.replace(report, side=report.side or side, amount=report.amount or qty, trigger_price=report.trigger_price or trigger)

    # ---------------------------------------------------------- queries
    async def fetch_order(self, symbol: str, *, order_id: str | None = None, client_id: str | None = None, ctx: dict[str, Any] | None = None, conditional: bool | None = None) -> OrderReport | None:
        """An order by id or client id; None if the venue does not know it.

        ``conditional`` (by client id only): True for a stop or take-profit,
        False for a market order, None if unknown; on Binance it says which
        book(s) to ask (the default asks both)."""
        m = self.market(symbol)
        if client_id and not order_id:
            return await self._lookup(m, client_id, conditional, ctx)
        if not order_id:
            raise VenueError(Outcome.REJECTED, f"{m.id}: fetch_order needs an order id or a client id")
        if self.style.is_position_stop(str(order_id)):
            return await self._fetch_position_stop(m, str(order_id), ctx)
        exchange_id, params = self.style.order_ref(str(order_id))
        params = {**params, **self.style.fetch_params()}
        try:
            raw = await self.executor.run("fetch_order", lambda: self.exchange.fetch_order(exchange_id, m.symbol, params), idempotent=True, record=False, context=ctx)
        except VenueError as err:
            if err.outcome is Outcome.NOT_FOUND:
                return None
            raise
        return await self._with_fill(self._order(raw, m), raw, m, ctx)

    async def _lookup(self, m: Market, client_id: str, conditional: bool | None, ctx: dict[str, Any] | None) -> OrderReport | None:
        has = getattr(self.exchange, "has", None) or {}
        for method, params in self.style.lookups(client_id, conditional, has):
            def call(method: str = method, params: dict[str, Any] = params) -> Awaitable[dict[str, Any] | None]:
                return self._lookup_call(method, m, client_id, params)

            try:
                raw = await self.executor.run("fetch_order", call, idempotent=True, record=False, context=ctx)
            except VenueError as err:
                if err.outcome is Outcome.NOT_FOUND:
                    continue
                raise
            if raw is not None:
                return await self._with_fill(self._order(raw, m), raw, m, ctx)
        return None

    async def _lookup_call(self, method: str, m: Market, client_id: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if method == "fetch_order":
            return await self.exchange.fetch_order(None, m.symbol, params)
        orders = await getattr(self.exchange, method)(m.symbol, None, None, params)
        return next((o for o in orders if self._client_id(o) == client_id), None)

    async def _with_fill(self, report: OrderReport, raw: dict[str, Any], m: Market, ctx: dict[str, Any] | None) -> OrderReport:
        """A fired conditional order whose fill is on its child order (Binance algo: ``actualOrderId``)."""
        child_id = self.style.triggered_order_id(raw)
        if child_id is None or report.filled > 0 or report.status is not OrderStatus.FILLED:
            return report
        try:
            child_raw = await self.executor.run("fetch_order", lambda: self.exchange.fetch_order(child_id, m.symbol, self.style.fetch_params()), idempotent=True, record=False, context=ctx)
        except VenueError:
            return report  # what the conditional order says is all we know
        child = self._order(child_raw, m)
        status = child.status if child.status is not OrderStatus.UNKNOWN else report.status
        return msgspec.structs.replace(report, status=status, filled=child.filled, average=child.average, fee=child.fee)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        """ALL open orders (of ``symbol``, or of the account): every book, every page.

        A listing that does not end within the style's page budget is refused
        (RETRYABLE) rather than returned incomplete."""
        m = self.market(symbol) if symbol else None
        unified = m.symbol if m else None
        found: dict[str, OrderReport] = {}
        for query in self.style.open_order_queries():
            cursor: str | None = None
            for _ in range(self.style.max_pages):
                params = {**query, **({"cursor": cursor} if cursor else {})}

                def fetch_page(params: dict[str, Any] = params) -> Awaitable[list[dict[str, Any]]]:
                    return self.exchange.fetch_open_orders(unified, None, self.style.page_limit, params)

                page = await self.executor.run("fetch_open_orders", fetch_page, idempotent=True, record=False)
                for o in page:
                    if o.get("symbol") in self.markets.by_symbol:
                        report = self._order(o, self.markets.by_symbol[o["symbol"]])
                        found.setdefault(report.order_id, report)
                cursor = self.style.next_cursor(page)
                if not cursor:
                    break
            else:
                raise VenueError(Outcome.RETRYABLE, f"open orders: still more after {self.style.max_pages} pages; not returning a partial list")
        return list(found.values())

    async def positions(self, symbols: list[str] | None = None, ctx: dict[str, Any] | None = None) -> list[PositionReport]:
        unified = [self.market(s).symbol for s in symbols] if symbols else None
        query = self.style.position_query(unified)
        raw = await self.executor.run("fetch_positions", lambda: self.exchange.fetch_positions(query), idempotent=True, record=False, context=ctx)
        out = []
        for p in raw:
            m = self.markets.by_symbol.get(p.get("symbol"))
            qty = _d(p.get("contracts")) or Decimal(0)
            if m is None or qty == 0 or (unified is not None and m.symbol not in unified):
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
                    opened_ms=_ms(self.style.opened_ms(p.get("info") or {})),
                )
            )
        return out

    async def position(self, symbol: str, side: str | None = None, ctx: dict[str, Any] | None = None) -> PositionReport | None:
        for p in await self.positions([symbol], ctx):
            if p.symbol == self.market(symbol).id and (side is None or p.side == side):
                return p
        return None

    async def mark_price(self, symbol: str, ctx: dict[str, Any] | None = None) -> Decimal:
        m = self.market(symbol)
        method = self.style.mark_price_method
        ticker = await self.executor.run(method, lambda: getattr(self.exchange, method)(m.symbol), idempotent=True, record=False, context=ctx)
        mark = _ticker_mark(ticker, self.style)
        if mark is None:
            raise VenueError(Outcome.RETRYABLE, f"{m.id}: no usable mark price in ticker")
        return mark

    async def mark_prices(self, symbols: list[str]) -> dict[str, Decimal]:
        """The marks of ``symbols`` ({venue id: mark}), in one request where the venue offers one.

        The one request (Binance ``premiumIndex`` without a symbol, Bybit ``tickers`` for the
        category) is used from :attr:`VenueStyle.mark_batch_min_symbols` wanted symbols on, so
        the cost of polling stops growing with positions; a symbol the answer lacks is left out
        (the next interval reads it again). Without such a call (the paper exchange), or for
        fewer symbols, each symbol is read on its own."""
        markets = [self.market(s) for s in symbols]
        if markets and self._can_batch_marks(len(markets)):
            method = self.style.mark_prices_method
            tickers = await self.executor.run("fetch_mark_prices", lambda: getattr(self.exchange, method)(None), idempotent=True, record=False)
            # By the venue's own id (``info.symbol``): ccxt may file a ticker under another market of
            # that id (Bybit's BTCUSDT is a spot and a linear id) when both are loaded.
            by_id = {str((t.get("info") or {}).get("symbol")): t for t in (tickers or {}).values() if isinstance(t, dict)}
            found = {m.id: mark for m in markets if (mark := _ticker_mark(by_id.get(m.id) or (tickers or {}).get(m.symbol), self.style)) is not None}
            if not found:
                raise VenueError(Outcome.RETRYABLE, f"{method}: no usable mark price for {', '.join(m.id for m in markets)}")
            return found
        out = {}
        for m in markets:
            out[m.id] = await self.mark_price(m.symbol)
        return out

    def _can_batch_marks(self, wanted: int) -> bool:
        method = self.style.mark_prices_method
        has = getattr(self.exchange, "has", None) or {}
        return bool(method) and wanted >= self.style.mark_batch_min_symbols and has.get(has_key(method)) is True and callable(getattr(self.exchange, method, None))

    async def balance(self, asset: str = "USDT") -> BalanceReport:
        """The account's balance in ``asset`` (ccxt ``fetch_balance``, a READ-class call): free, used (margin), total."""
        bal = await self.executor.run("fetch_balance", lambda: self.exchange.fetch_balance(), idempotent=True, record=False)
        acct = bal.get(asset) or {}
        ts = bal.get("timestamp")
        return BalanceReport(asset=asset, free=_d(acct.get("free")), used=_d(acct.get("used")), total=_d(acct.get("total")), venue_ts_ms=int(ts) if isinstance(ts, int | float) else None)

    async def free_balance(self, asset: str = "USDT") -> Decimal:
        bal = await self.executor.run("fetch_balance", lambda: self.exchange.fetch_balance(), idempotent=True, record=False)
        return _d((bal.get(asset) or {}).get("free")) or Decimal(0)

    async def fills(self, symbol: str, *, since_ms: int | None = None, limit: int | None = None, ctx: dict[str, Any] | None = None) -> list[FillReport]:
        """Our executions on ``symbol`` (ccxt ``fetch_my_trades``), oldest first."""
        m = self.market(symbol)
        raw = await self.executor.run("fetch_my_trades", lambda: self.exchange.fetch_my_trades(m.symbol, since_ms, limit), idempotent=True, record=False, context=ctx)
        out = []
        for t in raw:
            info = t.get("info") or {}
            fee = t.get("fee") or {}
            out.append(
                FillReport(
                    trade_id=str(t.get("id")),
                    order_id=str(t.get("order")) if t.get("order") is not None else None,
                    client_id=self.style.fill_client_id(info),
                    symbol=m.id,
                    side=str(t.get("side") or "").lower(),
                    price=_d(t.get("price")) or Decimal(0),
                    qty=_d(t.get("amount")) or Decimal(0),
                    fee=_d(fee.get("cost")),
                    fee_currency=fee.get("currency"),
                    realized_pnl=_d(info.get(self.style.fill_pnl_field)) if self.style.fill_pnl_field else None,
                    kind=self.style.fill_kind(info),
                    ts_ms=t.get("timestamp"),
                )
            )
        return out

    # ---------------------------------------------------------- parsing
    def _client_id(self, raw: dict[str, Any]) -> str | None:
        return self.style.client_id(raw)

    def _order(self, raw: dict[str, Any], m: Market | None) -> OrderReport:
        info = raw.get("info") or {}
        status = _STATUS.get(str(raw.get("status") or "").lower(), OrderStatus.UNKNOWN)
        trigger = _d(raw.get("triggerPrice") or raw.get("stopPrice") or raw.get("stopLossPrice"))
        reduce_only = self.style.closing_only(raw)
        return OrderReport(
            order_id=self.style.report_id(raw),
            client_id=self._client_id(raw),
            symbol=m.id if m else str(raw.get("symbol")),
            side=str(raw.get("side") or "").lower(),
            status=status,
            amount=_d(raw.get("amount")) or Decimal(0),
            filled=_d(raw.get("filled")) or Decimal(0),
            average=_d(raw.get("average")),
            trigger_price=trigger if trigger else None,
            limit_price=_d(raw.get("price")) if str(raw.get("type") or "").lower() == "limit" else None,
            reduce_only=reduce_only,
            ts_ms=raw.get("timestamp"),
            position_side=self.style.order_position_side(info),
            attached=self.style.attached_kind(info),
            fee=order_fee(raw, m.quote if m else None) if (_d(raw.get("filled")) or 0) > 0 else None,
        )
