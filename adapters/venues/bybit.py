"""Bybit v5 linear (unified account): everything the bot knows about this venue, in one unit.

Its request style (:class:`BybitStyle`), its published rate limits
(:data:`LIMITS`), its error codes (:data:`CODES`), its leverage / margin
refusals, and the ccxt constructor defaults. The paper exchange's ``bybit``
flavour uses the same style. Registered in :mod:`adapters.venues`.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, ClassVar

from adapters.errors import Outcome
from adapters.rate_tables import VenueLimits, Window
from adapters.venues.style import VenueStyle
from adapters.venues.unit import DAY_MS, VenueUnit

#: ``stopOrderType`` values of TP/SL that belong to the position (trading-stop), not to an order.
ATTACHED_KINDS = frozenset({"TakeProfit", "StopLoss", "TrailingStop", "PartialTakeProfit", "PartialStopLoss", "tpslOrder"})


class BybitStyle(VenueStyle):
    """Bybit v5 linear (unified account), as ccxt 4.5.90 sends it.

    Stops are conditional reduce-only market orders on ``/v5/order/create``
    (``triggerPrice``, ``triggerDirection`` 2 = falls to it / 1 = rises to it,
    ``triggerBy=MarkPrice``, ``orderLinkId``, ``positionIdx``). Cancel, fetch and
    list need no conditional flag for linear (ccxt's ``trigger`` only adds
    ``orderFilter`` on spot, and would otherwise be sent to Bybit as an unknown
    parameter, so it is never passed). Open orders come in pages of at most 50
    with a cursor.

    The position-attached stop (``exchange.stop_mode = "position"``): ``/v5/position/trading-stop``
    sets the position's ``stopLoss`` (full size, ``slTriggerBy=MarkPrice``) and amends it in
    place, so a move is one request and never has two stops or a gap.
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
    #: ``reduceOnly`` or ``closeOnTrigger`` (a conditional order with neither opens a position
    #: when it fires, even on a flat symbol: someone's conditional entry, never a zombie).
    closing_flags: tuple[str, ...] = ("reduceOnly", "closeOnTrigger")
    client_id_fields: tuple[str, ...] = ("orderLinkId",)
    position_stop_supported = True

    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"orderLinkId": client_id}

    def _idx(self, position_side: str | None) -> int:
        """positionIdx: 0 one-way; 1 / 2 the long / short side in hedge mode."""
        return {"long": 1, "short": 2}.get(position_side or "", 0) if self.hedge_mode else 0

    def position_params(self, position_side: str, *, closing: bool) -> dict[str, Any]:
        return {"positionIdx": self._idx(position_side), **({"reduceOnly": True} if closing else {})}

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

    def clear_attached_request(self, symbol_id: str, position_side: str | None) -> tuple[str, dict[str, Any]] | None:
        # /v5/position/trading-stop with "0" clears the position's TP and SL (seed 001: they
        # cannot be cancelled as orders); positionIdx picks the hedge-mode side.
        idx = {"long": 1, "short": 2}.get(position_side or "", 0)
        return "private_post_v5_position_trading_stop", {"category": "linear", "symbol": symbol_id, "positionIdx": idx, "takeProfit": "0", "stopLoss": "0", "tpslMode": "Full"}

    def position_stop_request(self, symbol_id: str, position_side: str, stop_price: Decimal) -> tuple[str, dict[str, Any]]:
        # Full mode: the stop closes the whole position at market when the mark reaches it; the same
        # call with another price amends it in place (no second stop, no moment without one).
        return "private_post_v5_position_trading_stop", {
            "category": "linear", "symbol": symbol_id, "positionIdx": self._idx(position_side), "tpslMode": "Full",
            "stopLoss": self._num(stop_price), "slTriggerBy": "MarkPrice", "slOrderType": "Market",
        }  # fmt: skip

    def clear_position_stop_request(self, symbol_id: str, position_side: str) -> tuple[str, dict[str, Any]]:
        return "private_post_v5_position_trading_stop", {"category": "linear", "symbol": symbol_id, "positionIdx": self._idx(position_side), "tpslMode": "Full", "stopLoss": "0"}

    def report_id(self, raw: dict[str, Any]) -> str:
        """A position's attached stop (``stopOrderType`` StopLoss) is reported under the position's
        stop id (:meth:`position_stop_id`), whatever order id Bybit gives it."""
        info = raw.get("info") or {}
        if info.get("stopOrderType") == "StopLoss" and info.get("symbol"):
            side = self.order_position_side(info) or ("long" if str(info.get("side")) == "Sell" else "short")
            return self.position_stop_id(str(info["symbol"]), side)
        return str(raw.get("id"))

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        # triggerDirection 2 = trigger when the price falls to it (a long's stop), 1 = rises.
        direction = 2 if closing_side == "sell" else 1
        return "market", {"triggerPrice": self._num(stop_price), "triggerDirection": direction, "triggerBy": "MarkPrice", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        return "market", {"takeProfitPrice": self._num(price), "triggerBy": "MarkPrice", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

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

    def fill_kind(self, info: dict[str, Any]) -> str:
        return {"Funding": "funding", "BustTrade": "liquidation", "AdlTrade": "adl", "Settle": "settle"}.get(str(info.get("execType") or ""), "trade")

    # ------------------------------------------------- raw fields
    def order_position_side(self, info: dict[str, Any]) -> str | None:
        return {"1": "long", "2": "short"}.get(str(info.get("positionIdx", "")))

    def attached_kind(self, info: dict[str, Any]) -> str | None:
        kind = info.get("stopOrderType")
        return kind if kind in ATTACHED_KINDS else None

    def opened_ms(self, info: dict[str, Any]) -> Any:
        return info.get("createdTime")

    def raw_position_side(self, info: dict[str, Any]) -> str:
        return "short" if str(info.get("side") or "") == "Sell" else "long"


#: bybit-exchange.github.io/docs/v5/rate-limit: 600 requests per 5 s per IP, and per-UID,
#: per-endpoint limits over a rolling second: order create/amend/cancel 10/s at the default
#: futures tier ("API Rate Limit Rules for PROs": Default, Futures 10/s); order, position,
#: execution and wallet queries 50/s (unified account). Market data is public: only the IP limit.
LIMITS = VenueLimits(
    style="bybit",
    windows=(
        Window("ip_5s", 600, 5_000),
        Window("create_1s", 10, 1_000),  # POST /v5/order/create
        Window("cancel_1s", 10, 1_000),  # POST /v5/order/cancel
        Window("orders_read_1s", 50, 1_000),  # GET /v5/order/realtime (and /v5/order/history)
        Window("positions_1s", 50, 1_000),  # GET /v5/position/list
        Window("executions_1s", 50, 1_000),  # GET /v5/execution/list
        Window("balance_1s", 50, 1_000),  # GET /v5/account/wallet-balance
        Window("trading_stop_1s", 10, 1_000),  # POST /v5/position/trading-stop
    ),
    costs={
        "create_order": {"ip_5s": 1, "create_1s": 1},
        "cancel_order": {"ip_5s": 1, "cancel_1s": 1},
        "clear_attached": {"ip_5s": 1, "trading_stop_1s": 1},
        "set_position_stop": {"ip_5s": 1, "trading_stop_1s": 1},
        "fetch_order": {"ip_5s": 1, "orders_read_1s": 1},
        "fetch_open_orders": {"ip_5s": 1, "orders_read_1s": 1},
        "fetch_positions": {"ip_5s": 1, "positions_1s": 1},
        "fetch_my_trades": {"ip_5s": 1, "executions_1s": 1},
        "fetch_balance": {"ip_5s": 1, "balance_1s": 1},
        "fetch_ticker": {"ip_5s": 1},  # GET /v5/market/tickers (carries the mark price)
        "fetch_mark_price": {"ip_5s": 1},
        "fetch_mark_prices": {"ip_5s": 1},  # GET /v5/market/tickers?category=linear: every linear ticker
    },
    default_cost={"ip_5s": 1},
)

CODES: dict[str, tuple[Outcome, int]] = {
    "10001": (Outcome.REJECTED, 0),  # parameter error (incl. below minimum)
    "10003": (Outcome.FATAL, 0),  # API key invalid
    "10004": (Outcome.FATAL, 0),  # signature error
    "10005": (Outcome.FATAL, 0),  # permission denied (key lacks the permission)
    "10006": (Outcome.RATE_LIMITED, 0),  # too many visits (a per-endpoint limit, HTTP 200)
    "10007": (Outcome.FATAL, 0),  # user authentication failed
    "10010": (Outcome.FATAL, 0),  # request IP not bound to the key
    "10016": (Outcome.RETRYABLE, 0),  # server error (with "maintenance"/"unavailable" in it: MAINTENANCE)
    "33004": (Outcome.FATAL, 0),  # API key expired
    "110001": (Outcome.NOT_FOUND, 0),  # order does not exist
    "110007": (Outcome.INSUFFICIENT_FUNDS, 0),  # available balance not enough
    "110017": (Outcome.REJECTED, 0),  # reduce-only would increase position
    "110092": (Outcome.WOULD_TRIGGER, 0),  # trigger price vs current price (rising)
    "110093": (Outcome.WOULD_TRIGGER, 0),  # trigger price vs current price (falling)
    "170193": (Outcome.REJECTED, 0),  # price rounded to zero
    "170209": (Outcome.SYMBOL_UNAVAILABLE, DAY_MS),  # region-restricted: skip 24 h
}

SETUP_REFUSALS: dict[str, str] = {
    "110043": "leverage already set",
    "110013": "leverage not allowed at the position's risk limit",
    "110024": "a position is open: its margin mode cannot be changed",
    "110026": "margin mode already set",
    "3400045": "the account's margin mode cannot be changed now",
    "10001": "parameter refused (e.g. leverage above the symbol's maximum)",
}

CCXT_DEFAULTS: dict[str, Any] = {
    "options": {
        "defaultType": "swap",
        "defaultSubType": "linear",
        "defaultSettle": "USDT",
        "fetchMarkets": {"types": ["linear"]},
        # Unified trading account assumed: no start-up call to /v5/user/query-api (wallet permissions).
        "enableUnifiedAccount": True,
        "enableUnifiedMargin": False,
        # ccxt.pro: no REST positions snapshot on the first watch (it would also read the inverse
        # positions); the sync actor's full reads are the snapshot.
        "watchPositions": {"fetchPositionsSnapshot": False, "awaitPositionsSnapshot": False},
    },
}


def enable_testnet(exchange: Any) -> None:
    exchange.set_sandbox_mode(True)  # Bybit's testnet host


UNIT = VenueUnit(
    name="bybit",
    exchange_name="bybit",
    style=BybitStyle,
    limits=LIMITS,
    codes=CODES,
    code_keys=("retCode",),
    # 403: the IP limit broken, "stop for at least 10 minutes" (its rate-limit page); unlike
    # retCode 10006 (HTTP 200), which is a per-endpoint limit and an ordinary rate-limit answer.
    ban_statuses={403: 600_000},
    # ``expect Falling, but trigger_price[39200] >= current[39150.5]`` (110093; 110092 rising).
    current_price_codes={code: re.compile(r"current\[\s*(\d+(?:\.\d+)?)\s*\]") for code in ("110092", "110093")},
    # The generic 10016 says "service unavailable" while Bybit is down.
    maintenance_codes={"10016": re.compile(r"maintenance|service unavailable|upgrad", re.IGNORECASE)},
    setup_refusals=SETUP_REFUSALS,
    setup_already=frozenset({"110043", "110026"}),
    account_wide_margin=True,  # unified account: GET /v5/account/info, one margin mode for all symbols
    ccxt_defaults=CCXT_DEFAULTS,
    enable_testnet=enable_testnet,
)
