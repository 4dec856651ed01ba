"""What every venue's request style offers: the neutral base of the per-venue styles.

A style says what a request looks like on its venue (order types and
parameters, client id fields, how to look an order up, how open orders are
paged) and how the venue's raw fields (ccxt's ``info``, REST and streams) are
read. Only data and small pure functions; :class:`~adapters.venue.Venue` makes
the calls. The venue-specific subclasses live in the venue's own unit
(:mod:`adapters.venues.binance`, :mod:`adapters.venues.bybit`); what is here
holds for any venue, or is the default a venue overrides.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

#: The side of a flat one-way position push (Binance ``ps = BOTH`` with ``pa = 0``, Bybit
#: ``side = ""`` with ``positionIdx = 0``): it names no side, and closes whichever was open.
FLAT_EITHER = "both"


class VenueStyle:
    """One venue's request shapes and field names (subclassed per venue; never used bare)."""

    name = "none"
    #: Open orders arrive in one response (None) or in pages of this many, followed by a cursor.
    page_limit: int | None = None
    #: More pages than this and the listing is refused rather than returned incomplete.
    max_pages = 200
    #: The ccxt method that reads one symbol's mark price.
    mark_price_method = "fetch_mark_price"
    #: The ccxt method that reads every symbol's mark in one request, and from how many wanted
    #: symbols it is used (below that, one read per symbol).
    mark_prices_method = "fetch_mark_prices"
    mark_batch_min_symbols = 1
    #: Does an order's acknowledgement lack its status and fill (then a market order is read back once)?
    read_back_market_orders = False
    #: ccxt.pro's mark price stream and its unsubscribe.
    mark_watch_method = "watch_mark_prices"
    mark_unwatch_method = "un_watch_mark_prices"
    #: Per stream kind, the ccxt.pro subscription keys (prefixes) whose open connection means the stream is live.
    stream_subscriptions: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: The raw order fields (``info``) that make an order *closing only*: it can reduce a
    #: position and never open one. What sync's zombie rules read (``OrderReport.reduce_only``).
    closing_flags: tuple[str, ...] = ("reduceOnly",)
    #: The raw order fields that carry our client order id (after ccxt's unified ``clientOrderId``).
    client_id_fields: tuple[str, ...] = ("clientOrderId",)
    #: The raw fill field that carries the realized PnL of a fill, if the venue reports one.
    fill_pnl_field: str | None = None
    #: Can a position's stop be attached to it and amended in place (one request per move)?
    position_stop_supported = False

    def __init__(self, *, hedge_mode: bool = False) -> None:
        #: The account's position mode (``exchange.hedge_mode``): one-way or hedge (long and short apart).
        self.hedge_mode = hedge_mode

    # ------------------------------------------------------ helpers
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
        raise NotImplementedError

    def position_params(self, position_side: str, *, closing: bool) -> dict[str, Any]:
        raise NotImplementedError

    def entry_order(self, side: str, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {**self.position_params(self._opened(side), closing=False), **self.client_id_params(client_id)}

    def close_order(self, closing_side: str, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {**self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only stop-market on the mark price."""
        raise NotImplementedError

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only take-profit-market on the mark price."""
        raise NotImplementedError

    def exit_limit_order(self, closing_side: str, client_id: str) -> tuple[str, dict[str, Any]]:
        """(ccxt order type, params) of a reduce-only GTC limit exit (the aged exit)."""
        return "limit", {"timeInForce": "GTC", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    #: Our order id of a position-attached stop: the position's, one per symbol and position side.
    POSITION_STOP_PREFIX = "posstop:"

    def position_stop_id(self, symbol_id: str, position_side: str) -> str:
        """The order id under which a position-attached stop is reported (it has no id of its own
        that survives an amendment): the same for every move of that position's stop."""
        return f"{self.POSITION_STOP_PREFIX}{symbol_id}:{position_side if self.hedge_mode else 'both'}"

    def is_position_stop(self, order_id: str) -> bool:
        return order_id.startswith(self.POSITION_STOP_PREFIX)

    def position_stop_request(self, symbol_id: str, position_side: str, stop_price: Decimal) -> tuple[str, dict[str, Any]]:
        """The call that sets (or amends in place) the stop attached to a position, as (ccxt method,
        params); only where :attr:`position_stop_supported`."""
        raise NotImplementedError(f"{self.name}: no position-attached stop")

    def clear_position_stop_request(self, symbol_id: str, position_side: str) -> tuple[str, dict[str, Any]]:
        """The call that removes a position's attached stop (and nothing else)."""
        raise NotImplementedError(f"{self.name}: no position-attached stop")

    def clear_attached_request(self, symbol_id: str, position_side: str | None) -> tuple[str, dict[str, Any]] | None:
        """The call that clears a position's attached TP/SL, as (ccxt method, params); None: the venue has none."""
        return None

    def position_mode_request(self, symbol_id: str) -> tuple[str, dict[str, Any]] | None:
        """The venue call that reads the account's position mode, as (ccxt method, params), where
        ccxt has no unified read; None: ccxt's ``fetch_position_mode`` does."""
        return None

    def hedged_from(self, response: Any) -> bool | None:
        """Hedge mode (True), one-way (False) or unknown (None) from :meth:`position_mode_request`'s answer."""
        return None

    def read_back_queries(self, order_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Where an order's acknowledgement lacks its fill (:attr:`read_back_market_orders`), the
        reads that find it by id, tried in turn until one shows it: (ccxt method, params)."""
        return [("fetch_order", self.fetch_params())]

    # ------------------------------------------------- ids and routing
    def report_id(self, raw: dict[str, Any]) -> str:
        """Our order id for a ccxt order dict."""
        return str(raw.get("id"))

    def order_ref(self, order_id: str) -> tuple[str, dict[str, Any]]:
        """(the exchange's id, ccxt params) to cancel or fetch the order ``order_id``."""
        return order_id, {}

    def fetch_params(self) -> dict[str, Any]:
        return {}

    def lookups(self, client_id: str, conditional: bool | None, has: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """How to find an order by client id: (ccxt method, params), tried in turn.

        ``conditional``: True for a stop or take-profit, False for a market
        order, None when unknown."""
        raise NotImplementedError

    def open_order_queries(self) -> list[dict[str, Any]]:
        """ccxt params of each listing that together make all open orders."""
        return [{}]

    def next_cursor(self, page: list[dict[str, Any]]) -> str | None:
        return None

    def position_query(self, unified: list[str] | None) -> list[str] | None:
        return unified

    def triggered_order_id(self, raw: dict[str, Any]) -> str | None:
        """A fired conditional order's child (the market order that did the fill), if the venue names it."""
        return None

    def fill_kind(self, info: dict[str, Any]) -> str:
        """trade / funding / liquidation / adl / settle, where the venue's fill says."""
        return "trade"

    def forced_close_kind(self, client_id: str | None) -> str | None:
        """liquidation / adl where the venue names its own orders by client id; None otherwise."""
        return None

    # ------------------------------------------------- raw fields (REST)
    def closing_only(self, raw: dict[str, Any]) -> bool:
        """Can this order (a ccxt dict) only reduce a position, never open one? (:attr:`closing_flags`)"""
        info = raw.get("info") or {}
        return bool(raw.get("reduceOnly")) or any(info.get(flag) in (True, "true") for flag in self.closing_flags)

    def client_id(self, raw: dict[str, Any]) -> str | None:
        """Our client order id of a ccxt order dict (:attr:`client_id_fields`)."""
        info = raw.get("info") or {}
        return raw.get("clientOrderId") or next((v for f in self.client_id_fields if (v := info.get(f))), None) or None

    def order_position_side(self, info: dict[str, Any]) -> str | None:
        """Hedge-mode side (long / short) of an order from its raw fields; None in one-way mode."""
        return None

    def attached_kind(self, info: dict[str, Any]) -> str | None:
        """The kind of a TP/SL attached to the position (not cancellable as an order); None for an order."""
        return None

    def opened_ms(self, info: dict[str, Any]) -> Any:
        """When the venue says a position was opened (raw), where it says."""
        return None

    def fill_client_id(self, info: dict[str, Any]) -> str | None:
        """The client order id of a fill's order, from the fill's raw fields."""
        return next((v for f in self.client_id_fields if (v := info.get(f))), None) or None

    def margin_mode_leverage(self, info: dict[str, Any]) -> Any:
        """The symbol's leverage in the raw answer of a margin-mode read, where the venue gives both
        at once (then no separate leverage read is made); None: read the leverage on its own."""
        return None

    def raw_mark(self, info: dict[str, Any]) -> Any:
        """The raw mark price string of a ticker's ``info`` (REST or stream), if it carries one."""
        return info.get("markPrice")

    # ------------------------------------------------- raw fields (streams)
    def stream_order(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A streamed order with its raw fields under the REST names :meth:`Venue._order` reads."""
        return raw

    def stream_position_side(self, p: dict[str, Any], flat: bool) -> str:
        """long / short of a streamed position, or :data:`FLAT_EITHER` for a flat one-way push."""
        side = str(p.get("side") or "").lower()
        if side in ("long", "short"):
            return side
        hedge_side = self.order_position_side(p.get("info") or {})
        if hedge_side:
            return hedge_side
        if flat:
            return FLAT_EITHER  # one-way mode has one position per symbol: this push says it is gone
        return self.raw_position_side(p.get("info") or {})

    def raw_position_side(self, info: dict[str, Any]) -> str:
        """The side of an open one-way position whose unified side is missing, from its raw fields."""
        return "long"
