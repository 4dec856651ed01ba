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
    """How one venue wants its requests: Binance USDⓈ-M (and the paper exchange's binance flavour).

    Only data and small pure functions; the :class:`Venue` does the calls.

    Binance, as ccxt 4.5.90 routes it: market orders go to ``/fapi/v1/order``;
    every conditional order (STOP_MARKET, TAKE_PROFIT_MARKET: any order with
    ``stopPrice``/``triggerPrice``) goes to ``/fapi/v1/algoOrder`` with
    ``algoType=CONDITIONAL`` and ``clientAlgoId``. Cancelling, fetching and
    listing those needs ccxt's ``trigger`` flag (else the request goes to the
    regular book and Binance answers "unknown order"), hence :attr:`ALGO_PREFIX`.
    """

    name = "binance"
    #: Binance USDⓈ-M conditional orders live in a separate book (``/fapi/v1/algoOrder``,
    #: their own id space ``algoId``). Their ids carry this prefix in our reports, so a
    #: cancel or look-up by id is routed to the right book without knowing the order's
    #: kind, and it survives restarts (the prefixed id is what the events record).
    ALGO_PREFIX = "algo:"
    #: Open orders arrive in one response (None) or in pages of this many, followed by a cursor.
    page_limit: int | None = None
    #: More pages than this and the listing is refused rather than returned incomplete.
    max_pages = 200
    #: The ccxt method that reads the mark price (Binance's 24 h ticker has no mark price).
    mark_price_method = "fetch_mark_price"
    #: Does an order's acknowledgement lack its status and fill (then a market order is read back once)?
    read_back_market_orders = False

    def __init__(self, *, hedge_mode: bool = False) -> None:
        #: The account's position mode (``exchange.hedge_mode``): one-way or hedge (long and short apart).
        self.hedge_mode = hedge_mode

    @staticmethod
    def _num(value: Decimal) -> str:
        """A Decimal as plain text for a request parameter (never an exponent, never a float)."""
        return format(value, "f")

    @staticmethod
    def _opened(side: str) -> str:
        return "long" if side == "buy" else "short"

    @staticmethod
    def _closed(closing_side: str) -> str:
        return "long" if closing_side == "sell" else "short"

    # ------------------------------------------------------ order shapes
    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"newClientOrderId": client_id}

    def position_params(self, position_side: str, *, closing: bool) -> dict[str, Any]:
        """One-way: closing orders are reduce-only. Hedge: the position side instead
        (Binance refuses ``reduceOnly`` in hedge mode, -1106)."""
        if self.hedge_mode:
            return {"positionSide": position_side.upper()}
        return {"reduceOnly": True} if closing else {}

    def entry_order(self, side: str, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {**self.position_params(self._opened(side), closing=False), **self.client_id_params(client_id)}

    def close_order(self, closing_side: str, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {**self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only stop-market on the mark price."""
        return "STOP_MARKET", {"stopPrice": self._num(stop_price), "workingType": "MARK_PRICE", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only take-profit-market on the mark price."""
        return "TAKE_PROFIT_MARKET", {"stopPrice": self._num(price), "workingType": "MARK_PRICE", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    # ------------------------------------------------- ids and routing
    def report_id(self, raw: dict[str, Any]) -> str:
        """Our order id for a ccxt order dict: conditional (algo) orders get :attr:`ALGO_PREFIX`."""
        info = raw.get("info") or {}
        if info.get("algoId") is not None:
            return f"{self.ALGO_PREFIX}{info['algoId']}"
        return str(raw.get("id"))

    def order_ref(self, order_id: str) -> tuple[str, dict[str, Any]]:
        """(the exchange's id, ccxt params) to cancel or fetch the order ``order_id``."""
        if order_id.startswith(self.ALGO_PREFIX):
            return order_id[len(self.ALGO_PREFIX):], {"trigger": True}
        return order_id, {}

    def fetch_params(self) -> dict[str, Any]:
        return {}

    def lookups(self, client_id: str, conditional: bool | None, has: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """How to find an order by client id: (ccxt method, params), tried in turn.

        ``conditional``: True for a stop or take-profit, False for a market
        order, None when unknown (both books are asked, regular first)."""
        regular = ("fetch_order", {"origClientOrderId": client_id})
        algo = ("fetch_order", {"clientOrderId": client_id, "trigger": True})
        return [algo] if conditional else [regular] if conditional is False else [regular, algo]

    def open_order_queries(self) -> list[dict[str, Any]]:
        """ccxt params of each listing that together make all open orders: both books."""
        return [{}, {"trigger": True}]

    def next_cursor(self, page: list[dict[str, Any]]) -> str | None:
        return None

    def position_query(self, unified: list[str] | None) -> list[str] | None:
        return unified

    def triggered_order_id(self, raw: dict[str, Any]) -> str | None:
        """A fired conditional order's child (the market order that did the fill), if the venue names it."""
        info = raw.get("info") or {}
        child = info.get("actualOrderId")
        return str(child) if child not in (None, "", 0, "0") else None

    def fill_kind(self, info: dict[str, Any]) -> str:
        return "trade"


class BybitStyle(VenueStyle):
    """Bybit v5 linear (unified account), as ccxt 4.5.90 sends it.

    Stops are conditional reduce-only market orders on ``/v5/order/create``
    (``triggerPrice``, ``triggerDirection`` 2 = falls to it / 1 = rises to it,
    ``triggerBy=MarkPrice``, ``orderLinkId``, ``positionIdx``). Cancel, fetch and
    list need no conditional flag for linear (ccxt's ``trigger`` only adds
    ``orderFilter`` on spot, and would otherwise be sent to Bybit as an unknown
    parameter, so it is never passed). Open orders come in pages of at most 50
    with a cursor.

    Preferred next step (not used yet): the position-attached stop through
    ``/v5/position/trading-stop`` (ccxt ``private_post_v5_position_trading_stop``,
    or ``create_order`` with ``stopLossPrice`` and ``tradingStopEndpoint``) amends
    the stop in place, so a move never has two stops or a gap.
    """

    name = "bybit"
    page_limit = 50
    mark_price_method = "fetch_ticker"  # Bybit's v5 ticker carries markPrice
    read_back_market_orders = True  # /v5/order/create answers {orderId, orderLinkId} only

    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"orderLinkId": client_id}

    def position_params(self, position_side: str, *, closing: bool) -> dict[str, Any]:
        # positionIdx: 0 one-way; 1 / 2 the long / short side in hedge mode.
        idx = (1 if position_side == "long" else 2) if self.hedge_mode else 0
        return {"positionIdx": idx, **({"reduceOnly": True} if closing else {})}

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        # triggerDirection 2 = trigger when the price falls to it (a long's stop), 1 = rises.
        direction = 2 if closing_side == "sell" else 1
        return "market", {"triggerPrice": self._num(stop_price), "triggerDirection": direction, "triggerBy": "MarkPrice", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {"takeProfitPrice": self._num(price), "triggerBy": "MarkPrice", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def report_id(self, raw: dict[str, Any]) -> str:
        return str(raw.get("id"))

    def order_ref(self, order_id: str) -> tuple[str, dict[str, Any]]:
        return order_id, {}

    def fetch_params(self) -> dict[str, Any]:
        # ccxt's bybit.fetch_order only sees the last 500 orders and insists on being told so.
        return {"acknowledged": True}

    def lookups(self, client_id: str, conditional: bool | None, has: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        if has.get("fetchCanceledAndClosedOrders"):
            # ccxt's bybit.fetch_order(None, ...) would send "orderId=None": ask by orderLinkId
            # among the live orders (/v5/order/realtime), then among the closed ones (/v5/order/history).
            return [("fetch_open_orders", {"orderLinkId": client_id}), ("fetch_canceled_and_closed_orders", {"orderLinkId": client_id})]
        return [("fetch_order", {"clientOrderId": client_id, "orderLinkId": client_id, **self.fetch_params()})]  # the paper exchange

    def open_order_queries(self) -> list[dict[str, Any]]:
        return [{}]  # without orderFilter Bybit lists active and conditional orders together

    def next_cursor(self, page: list[dict[str, Any]]) -> str | None:
        if not self.page_limit or len(page) < self.page_limit:
            return None
        return (page[0].get("info") or {}).get("nextPageCursor") or None  # ccxt puts the cursor on the first order

    def position_query(self, unified: list[str] | None) -> list[str] | None:
        return unified if unified is None or len(unified) == 1 else None  # ccxt: at most one symbol

    def triggered_order_id(self, raw: dict[str, Any]) -> str | None:
        return None  # a Bybit conditional order keeps its id when it fires

    def fill_kind(self, info: dict[str, Any]) -> str:
        return {"Funding": "funding", "BustTrade": "liquidation", "AdlTrade": "adl", "Settle": "settle"}.get(str(info.get("execType") or ""), "trade")


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
        kind, params = self.style.stop_order(closing_side, price, client_id)
        return await self._place("create_order.stop", m, kind, closing_side, qty, params, client_id, conditional=True, price=price, ctx=ctx)

    async def place_take_profit(self, symbol: str, closing_side: str, qty: Decimal, price: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """A reduce-only take-profit-market (partial exit) on the mark price."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        price = m.round_price(price)
        kind, params = self.style.take_profit_order(closing_side, price, client_id)
        return await self._place("create_order.take_profit", m, kind, closing_side, qty, params, client_id, conditional=True, price=price, ctx=ctx)

    async def close_market(self, symbol: str, closing_side: str, qty: Decimal, client_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport:
        """Reduce-only market close of ``qty`` (the caller verifies the result)."""
        m = self.market(symbol)
        qty = m.round_qty(qty)
        kind, params = self.style.close_order(closing_side, client_id)
        report = await self._place("create_order.close", m, kind, closing_side, qty, params, client_id, conditional=False, ctx=ctx)
        return await self._read_back(symbol, report, ctx)

    async def _place(self, op: str, m: Market, kind: str, side: str, qty: Decimal, params: dict[str, Any], client_id: str, *, conditional: bool, price: Decimal | None = None, ctx: dict[str, Any] | None) -> OrderReport:
        """Every order goes out once: after an ambiguous failure it is looked up by its client id."""
        return await self.executor.run(
            op,
            lambda: self._create(m, kind, side, qty, params, price),
            idempotent=False,
            lookup=lambda: self.fetch_order(m.id, client_id=client_id, conditional=conditional),
            context=ctx,
        )

    async def cancel(self, symbol: str, order_id: str, *, ctx: dict[str, Any] | None = None) -> OrderReport | None:
        """Cancel an order; None if the venue does not know it (already gone).

        The style routes the id to its book (Binance: a conditional order's id
        carries the algo prefix and is cancelled with ccxt's ``trigger`` flag)."""
        m = self.market(symbol)
        exchange_id, params = self.style.order_ref(order_id)
        try:
            raw = await self.executor.run("cancel_order", lambda: self.exchange.cancel_order(exchange_id, m.symbol, params), idempotent=True, context=ctx)
        except VenueError as err:
            if err.outcome is Outcome.NOT_FOUND:
                return None
            raise
        return self._order(raw, m)

    async def _read_back(self, symbol: str, report: OrderReport, ctx: dict[str, Any] | None) -> OrderReport:
        """Where a venue acknowledges an order with its ids only (Bybit), read the market order back
        once for its status and fill; if it is not visible yet, the bare acknowledgement stands."""
        if report.status is not OrderStatus.UNKNOWN or not self.style.read_back_market_orders:
            return report
        try:
            found = await self.fetch_order(symbol, order_id=report.order_id, ctx=ctx)
        except VenueError:
            return report
        return found if found is not None else report

    async def _create(self, m: Market, kind: str, side: str, qty: Decimal, params: dict[str, Any], trigger: Decimal | None = None) -> OrderReport:
        raw = await self.exchange.create_order(m.symbol, kind, side, float(qty), None, params)
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
            try:
                raw = await self.executor.run("fetch_order", lambda method=method, params=params: self._lookup_call(method, m, client_id, params), idempotent=True, record=False, context=ctx)
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
        return msgspec.structs.replace(report, status=status, filled=child.filled, average=child.average)

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
                page = await self.executor.run("fetch_open_orders", lambda params=params: self.exchange.fetch_open_orders(unified, None, self.style.page_limit, params), idempotent=True, record=False)
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

    async def positions(self, symbols: list[str] | None = None) -> list[PositionReport]:
        unified = [self.market(s).symbol for s in symbols] if symbols else None
        query = self.style.position_query(unified)
        raw = await self.executor.run("fetch_positions", lambda: self.exchange.fetch_positions(query), idempotent=True, record=False)
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
                )
            )
        return out

    # ----------------------------------------------------------- streams
    def streams_supported(self) -> bool:
        """Can this exchange object push order and position updates (ccxt's watch_* methods)?"""
        has = getattr(self.exchange, "has", None)
        if isinstance(has, dict) and not has.get("watchOrders"):
            return False  # ccxt's REST classes: streaming needs ccxt.pro (not wired)
        return callable(getattr(self.exchange, "watch_orders", None)) and callable(getattr(self.exchange, "watch_positions", None))

    async def watch_orders(self) -> list[OrderReport]:
        """The next batch of order updates from the venue's stream."""
        raw = await self.exchange.watch_orders()
        return [self._order(o, self.markets.by_symbol.get(o.get("symbol"))) for o in raw if o.get("symbol") in self.markets.by_symbol]

    async def watch_positions(self) -> list[tuple[str, str, Decimal]]:
        """The next batch of position updates: (symbol id, side, quantity; 0 = closed)."""
        raw = await self.exchange.watch_positions()
        out = []
        for p in raw:
            m = self.markets.by_symbol.get(p.get("symbol"))
            if m is not None:
                qty = abs(_d(p.get("contracts")) or Decimal(0))
                out.append((m.id, p.get("side") or "long", qty))
        return out

    async def position(self, symbol: str, side: str | None = None) -> PositionReport | None:
        for p in await self.positions([symbol]):
            if p.symbol == self.market(symbol).id and (side is None or p.side == side):
                return p
        return None

    async def mark_price(self, symbol: str) -> Decimal:
        m = self.market(symbol)
        method = self.style.mark_price_method
        ticker = await self.executor.run(method, lambda: getattr(self.exchange, method)(m.symbol), idempotent=True, record=False)
        info = ticker.get("info") or {}
        mark = _d(ticker.get("markPrice") or info.get("markPrice"))  # the mark, never the last trade
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

    async def fills(self, symbol: str, *, since_ms: int | None = None, limit: int | None = None) -> list[FillReport]:
        """Our executions on ``symbol`` (ccxt ``fetch_my_trades``), oldest first."""
        m = self.market(symbol)
        raw = await self.executor.run("fetch_my_trades", lambda: self.exchange.fetch_my_trades(m.symbol, since_ms, limit), idempotent=True, record=False)
        out = []
        for t in raw:
            info = t.get("info") or {}
            fee = t.get("fee") or {}
            out.append(
                FillReport(
                    trade_id=str(t.get("id")),
                    order_id=str(t.get("order")) if t.get("order") is not None else None,
                    client_id=info.get("orderLinkId") or info.get("clientOrderId") or None,
                    symbol=m.id,
                    side=str(t.get("side") or "").lower(),
                    price=_d(t.get("price")) or Decimal(0),
                    qty=_d(t.get("amount")) or Decimal(0),
                    fee=_d(fee.get("cost")),
                    fee_currency=fee.get("currency"),
                    realized_pnl=_d(info.get("realizedPnl")),
                    kind=self.style.fill_kind(info),
                    ts_ms=t.get("timestamp"),
                )
            )
        return out

    # ---------------------------------------------------------- parsing
    @staticmethod
    def _client_id(raw: dict[str, Any]) -> str | None:
        info = raw.get("info") or {}
        return raw.get("clientOrderId") or info.get("clientOrderId") or info.get("orderLinkId") or info.get("clientAlgoId") or None

    def _order(self, raw: dict[str, Any], m: Market | None) -> OrderReport:
        info = raw.get("info") or {}
        status = _STATUS.get(str(raw.get("status") or "").lower(), OrderStatus.UNKNOWN)
        trigger = _d(raw.get("triggerPrice") or raw.get("stopPrice") or raw.get("stopLossPrice"))
        reduce_only = bool(raw.get("reduceOnly") or info.get("reduceOnly") in (True, "true") or info.get("closePosition") in (True, "true"))
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
            reduce_only=reduce_only,
            ts_ms=raw.get("timestamp"),
        )
