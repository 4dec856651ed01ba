"""How each venue wants its requests: small strategy objects, no branching on names.

The :class:`~adapters.venue.Venue` makes the calls; a style only says what the
request looks like on its venue (order types and parameters, client id
fields, how to look an order up, how open orders are paged). Verified against
ccxt's own recorded requests in ``tests/test_ccxt_requests.py``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar


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
    #: The ccxt method that reads every symbol's mark in one request (``GET /fapi/v1/premiumIndex``
    #: without a symbol), and from how many wanted symbols it is used: Binance charges it weight 10
    #: against 1 per symbol, so below 10 symbols the single reads are cheaper in what the venue limits.
    mark_prices_method = "fetch_mark_prices"
    mark_batch_min_symbols = 10
    #: Does an order's acknowledgement lack its status and fill (then a market order is read back once)?
    read_back_market_orders = False
    #: ccxt.pro's mark price stream (Binance: ``<symbol>@markPrice@1s``) and its unsubscribe.
    mark_watch_method = "watch_mark_prices"
    mark_unwatch_method = "un_watch_mark_prices"
    #: Per stream kind, the ccxt.pro subscription keys (prefixes) whose open connection means
    #: the stream is live (Binance: the user-data connection is subscribed as "linear").
    stream_subscriptions: ClassVar[dict[str, tuple[str, ...]]] = {"orders": ("linear",), "positions": ("linear",), "marks": ("markPrice:",)}

    def __init__(self, *, hedge_mode: bool = False) -> None:
        #: The account's position mode (``exchange.hedge_mode``): one-way or hedge (long and short apart).
        self.hedge_mode = hedge_mode

    #: The raw order fields (``info``) that make an order *closing only*: it can reduce a
    #: position and never open one (Binance: ``reduceOnly``, ``closePosition``). Any other order,
    #: conditional or not, can open a position. What sync's zombie rules read (``OrderReport.reduce_only``).
    closing_flags: tuple[str, ...] = ("reduceOnly", "closePosition")

    def clear_attached_request(self, symbol_id: str, position_side: str | None) -> tuple[str, dict[str, Any]] | None:
        """The call that clears a position's attached TP/SL, as (ccxt method, params); None: the
        venue has none (Binance's stops are all plain orders, cancelled as such)."""
        return None

    def closing_only(self, raw: dict[str, Any]) -> bool:
        """Can this order (a ccxt dict) only reduce a position, never open one? (:attr:`closing_flags`)"""
        info = raw.get("info") or {}
        return bool(raw.get("reduceOnly")) or any(info.get(flag) in (True, "true") for flag in self.closing_flags)

    def position_mode_request(self, symbol_id: str) -> tuple[str, dict[str, Any]] | None:
        """The venue call that reads the account's position mode, as (ccxt method, params), where
        ccxt has no unified read; None: ccxt's ``fetch_position_mode`` does (Binance)."""
        return None

    def hedged_from(self, response: Any) -> bool | None:
        """Hedge mode (True), one-way (False) or unknown (None) from :meth:`position_mode_request`'s answer."""
        return None

    def read_back_queries(self, order_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Where an order's acknowledgement lacks its fill (:attr:`read_back_market_orders`), the
        reads that find it by id, tried in turn until one shows it: (ccxt method, params)."""
        return [("fetch_order", self.fetch_params())]

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

    def exit_limit_order(self, closing_side: str, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only GTC limit exit (the aged exit)."""
        return "limit", {"timeInForce": "GTC", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    # ------------------------------------------------- ids and routing
    def report_id(self, raw: dict[str, Any]) -> str:
        """Our order id for a ccxt order dict: conditional (algo) orders get :attr:`ALGO_PREFIX`.

        REST answers carry ``algoId``; the user-data stream's ``ALGO_UPDATE`` carries ``aid``."""
        info = raw.get("info") or {}
        algo_id = info.get("algoId", info.get("aid"))
        if algo_id is not None:
            return f"{self.ALGO_PREFIX}{algo_id}"
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
        return "trade"  # Binance's trade list does not say; the order does (forced_close_kind)

    def forced_close_kind(self, client_id: str | None) -> str | None:
        """Binance names the orders it sends itself: ``autoclose-...`` (liquidation) and
        ``adl_autoclose`` (auto-deleveraging). None: an ordinary order (or a venue whose
        fills already say, Bybit)."""
        cid = client_id or ""
        if cid.startswith("adl_autoclose"):
            return "adl"
        if cid.startswith("autoclose-"):
            return "liquidation"
        return None


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
    #: ``GET /v5/market/tickers?category=linear``: every linear ticker (with markPrice) for one
    #: request of the IP limit, as cheap as one symbol's, so it is used from the first symbol.
    mark_prices_method = "fetch_tickers"
    mark_batch_min_symbols = 1
    read_back_market_orders = True  # /v5/order/create answers {orderId, orderLinkId} only
    mark_watch_method = "watch_tickers"  # the public tickers.<symbol> topic carries markPrice too
    mark_unwatch_method = "un_watch_tickers"
    stream_subscriptions: ClassVar[dict[str, tuple[str, ...]]] = {"orders": ("orders",), "positions": ("positions",), "marks": ("ticker:",)}

    #: Bybit: ``reduceOnly`` or ``closeOnTrigger`` (a conditional order with neither opens a position
    #: when it fires, even on a flat symbol: someone's conditional entry, never a zombie).
    closing_flags: tuple[str, ...] = ("reduceOnly", "closeOnTrigger")

    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"orderLinkId": client_id}

    def position_mode_request(self, symbol_id: str) -> tuple[str, dict[str, Any]] | None:
        # v5 has no "get position mode": a symbol's position list, asked by name, shows its slots
        # even when flat: one with positionIdx 0 in one-way mode, two (1 buy side, 2 sell side) in hedge mode.
        return "private_get_v5_position_list", {"category": "linear", "symbol": symbol_id}

    def hedged_from(self, response: Any) -> bool | None:
        rows = ((response or {}).get("result") or {}).get("list") or []
        slots = {str(r.get("positionIdx")) for r in rows if isinstance(r, dict)}
        if slots & {"1", "2"}:
            return True
        return False if "0" in slots else None

    def read_back_queries(self, order_id: str) -> list[tuple[str, dict[str, Any]]]:
        # /v5/order/realtime by orderId (open and recently closed orders: one round trip), then, when
        # realtime lists open orders only (Bybit documents this after a restart of theirs), /v5/order/history.
        return [("fetch_order", self.fetch_params()), ("fetch_canceled_and_closed_orders", {"orderId": order_id})]

    def position_params(self, position_side: str, *, closing: bool) -> dict[str, Any]:
        # positionIdx: 0 one-way; 1 / 2 the long / short side in hedge mode.
        idx = (1 if position_side == "long" else 2) if self.hedge_mode else 0
        return {"positionIdx": idx, **({"reduceOnly": True} if closing else {})}

    def clear_attached_request(self, symbol_id: str, position_side: str | None) -> tuple[str, dict[str, Any]] | None:
        # /v5/position/trading-stop with "0" clears the position's TP and SL (seed 001: they
        # cannot be cancelled as orders); positionIdx picks the hedge-mode side.
        idx = {"long": 1, "short": 2}.get(position_side or "", 0)
        return "private_post_v5_position_trading_stop", {"category": "linear", "symbol": symbol_id, "positionIdx": idx, "takeProfit": "0", "stopLoss": "0", "tpslMode": "Full"}

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
        """The page's ``nextPageCursor``, from whichever order carries it: ccxt attaches it to the first
        raw order (Bybit lists newest first) and then sorts the page oldest first, so it usually
        ends up on the last one."""
        if not self.page_limit or len(page) < self.page_limit:
            return None
        return next((c for o in page if (c := (o.get("info") or {}).get("nextPageCursor"))), None)

    def position_query(self, unified: list[str] | None) -> list[str] | None:
        return unified if unified is None or len(unified) == 1 else None  # ccxt: at most one symbol

    def triggered_order_id(self, raw: dict[str, Any]) -> str | None:
        return None  # a Bybit conditional order keeps its id when it fires

    def fill_kind(self, info: dict[str, Any]) -> str:
        return {"Funding": "funding", "BustTrade": "liquidation", "AdlTrade": "adl", "Settle": "settle"}.get(str(info.get("execType") or ""), "trade")


STYLES: dict[str, VenueStyle] = {"binance": VenueStyle(), "bybit": BybitStyle()}


#: Every venue the bot speaks, by ccxt id and paper flavour: its request style.
KNOWN_VENUES: dict[str, type[VenueStyle]] = {"binanceusdm": VenueStyle, "binance": VenueStyle, "bybit": BybitStyle}


def style_for(venue: str, *, hedge_mode: bool = False) -> VenueStyle:
    """The request style of a venue (``binanceusdm`` / ``bybit``, or a paper flavour), in the
    account's position mode; an unknown name is refused (never silently given another's style)."""
    try:
        return KNOWN_VENUES[venue](hedge_mode=hedge_mode)
    except KeyError:
        raise ValueError(f"no venue style for {venue!r} (known: {', '.join(sorted(KNOWN_VENUES))})") from None
