"""Binance USDⓈ-M futures: everything the bot knows about this venue, in one unit.

Its request style (:class:`BinanceStyle`: order shapes, the separate book of
conditional orders, raw field names of REST and stream answers), its
published rate limits (:data:`LIMITS`), its error codes (:data:`CODES`), its
leverage / margin refusals, and the ccxt constructor defaults. The paper
exchange's ``binance`` flavour uses the same style. Registered in
:mod:`adapters.venues`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from adapters.errors import Outcome
from adapters.rate_tables import VenueLimits, Window
from adapters.venues.style import VenueStyle
from adapters.venues.unit import DAY_MS, VenueUnit


class BinanceStyle(VenueStyle):
    """Binance USDⓈ-M (and the paper exchange's binance flavour).

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
    #: Binance's 24 h ticker has no mark price: ``GET /fapi/v1/premiumIndex?symbol=``.
    mark_price_method = "fetch_mark_price"
    #: ``GET /fapi/v1/premiumIndex`` without a symbol reads every mark; Binance charges it weight 10
    #: against 1 per symbol, so below 10 symbols the single reads are cheaper in what the venue limits.
    mark_prices_method = "fetch_mark_prices"
    mark_batch_min_symbols = 10
    #: ccxt.pro's mark price stream (``<symbol>@markPrice@1s``) and its unsubscribe.
    mark_watch_method = "watch_mark_prices"
    mark_unwatch_method = "un_watch_mark_prices"
    #: The user-data connection is subscribed as "linear".
    stream_subscriptions: ClassVar[dict[str, tuple[str, ...]]] = {"orders": ("linear",), "positions": ("linear",), "marks": ("markPrice:",)}
    closing_flags: tuple[str, ...] = ("reduceOnly", "closePosition")
    client_id_fields: tuple[str, ...] = ("clientOrderId", "clientAlgoId")
    fill_pnl_field = "realizedPnl"

    # ------------------------------------------------------ order shapes
    def client_id_params(self, client_id: str) -> dict[str, Any]:
        return {"newClientOrderId": client_id}

    def position_params(self, position_side: str, *, closing: bool) -> dict[str, Any]:
        """One-way: closing orders are reduce-only. Hedge: the position side instead
        (Binance refuses ``reduceOnly`` in hedge mode, -1106)."""
        if self.hedge_mode:
            return {"positionSide": position_side.upper()}
        return {"reduceOnly": True} if closing else {}

    def stop_order(self, closing_side: str, stop_price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        return "STOP_MARKET", {"stopPrice": self._num(stop_price), "workingType": "MARK_PRICE", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    def take_profit_order(self, closing_side: str, price: Decimal, client_id: str) -> tuple[str, dict[str, Any]]:
        return "TAKE_PROFIT_MARKET", {"stopPrice": self._num(price), "workingType": "MARK_PRICE", **self.position_params(self._closed(closing_side), closing=True), **self.client_id_params(client_id)}

    # ------------------------------------------------- ids and routing
    def report_id(self, raw: dict[str, Any]) -> str:
        """Conditional (algo) orders get :attr:`ALGO_PREFIX`. REST answers carry ``algoId``;
        the user-data stream's ``ALGO_UPDATE`` carries ``aid``."""
        info = raw.get("info") or {}
        algo_id = info.get("algoId", info.get("aid"))
        if algo_id is not None:
            return f"{self.ALGO_PREFIX}{algo_id}"
        return str(raw.get("id"))

    def order_ref(self, order_id: str) -> tuple[str, dict[str, Any]]:
        if order_id.startswith(self.ALGO_PREFIX):
            return order_id[len(self.ALGO_PREFIX):], {"trigger": True}
        return order_id, {}

    def lookups(self, client_id: str, conditional: bool | None, has: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """None (unknown kind): both books are asked, regular first."""
        regular = ("fetch_order", {"origClientOrderId": client_id})
        algo = ("fetch_order", {"clientOrderId": client_id, "trigger": True})
        return [algo] if conditional else [regular] if conditional is False else [regular, algo]

    def open_order_queries(self) -> list[dict[str, Any]]:
        return [{}, {"trigger": True}]  # both books

    def triggered_order_id(self, raw: dict[str, Any]) -> str | None:
        info = raw.get("info") or {}
        child = info.get("actualOrderId")
        return str(child) if child not in (None, "", 0, "0") else None

    def forced_close_kind(self, client_id: str | None) -> str | None:
        """Binance names the orders it sends itself: ``autoclose-...`` (liquidation) and
        ``adl_autoclose`` (auto-deleveraging); its trade list does not say."""
        cid = client_id or ""
        if cid.startswith("adl_autoclose"):
            return "adl"
        if cid.startswith("autoclose-"):
            return "liquidation"
        return None

    # ------------------------------------------------- raw fields
    def order_position_side(self, info: dict[str, Any]) -> str | None:
        side = str(info.get("positionSide") or info.get("ps") or "").upper()  # REST positionSide, stream ps
        return side.lower() if side in ("LONG", "SHORT") else None

    def margin_mode_leverage(self, info: dict[str, Any]) -> Any:
        return info.get("leverage")  # GET /fapi/v1/symbolConfig: margin type and leverage in one read

    def raw_mark(self, info: dict[str, Any]) -> Any:
        raw = info.get("markPrice")  # premiumIndex
        if raw in (None, "") and info.get("e") == "markPriceUpdate":
            raw = info.get("p")  # <symbol>@markPrice
        return raw

    def stream_order(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``ORDER_TRADE_UPDATE`` says ``ps`` / ``cp`` where the REST order says ``positionSide`` / ``closePosition``."""
        info = raw.get("info") or {}
        extra = {}
        if "ps" in info and "positionSide" not in info:
            extra["positionSide"] = info["ps"]
        if "cp" in info and "closePosition" not in info:
            extra["closePosition"] = info["cp"]
        if not extra:
            return raw
        return {**raw, "info": {**info, **extra}}

    def raw_position_side(self, info: dict[str, Any]) -> str:
        """``ACCOUNT_UPDATE`` gives a signed ``pa`` (one-way mode)."""
        try:
            signed = Decimal(str(info.get("pa")))
        except ArithmeticError:
            return "long"
        return "short" if signed.is_finite() and signed < 0 else "long"


_ORDER = {"weight_1m": 1, "orders_10s": 1, "orders_1m": 1}

#: developers.binance.com, "USDⓈ-M Futures / General Info / Limits" and each endpoint's "Request
#: Weight"; the Futures rate-limit FAQ; checked against ccxt's ``binance.py`` cost tables:
#: REQUEST_WEIGHT 2400/min per IP, ORDERS 1200/min and 300/10 s per account. The executor does not
#: see a call's arguments, so where the weight depends on them the table charges the case this bot
#: sends (noted per row).
LIMITS = VenueLimits(
    style="binance",
    windows=(
        Window("weight_1m", 2400, 60_000),
        Window("orders_10s", 300, 10_000),
        Window("orders_1m", 1200, 60_000),
    ),
    costs={
        # POST /fapi/v1/order, /fapi/v1/algoOrder: 1 on both order limits; the docs say 0 on the IP
        # weight, 1 is charged so that an order burst also shows in the weight window.
        "create_order": _ORDER,
        "cancel_order": {"weight_1m": 1},  # DELETE /fapi/v1/order, /fapi/v1/algoOrder
        "fetch_order": {"weight_1m": 1},  # GET /fapi/v1/order, /fapi/v1/algoOrder
        "fetch_open_orders": {"weight_1m": 40},  # GET /fapi/v1/openOrders, openAlgoOrders: 1 with a symbol, 40 without (sync lists all)
        "fetch_positions": {"weight_1m": 5},  # GET /fapi/v2|v3/positionRisk
        "fetch_mark_price": {"weight_1m": 1},  # GET /fapi/v1/premiumIndex with a symbol
        "fetch_mark_prices": {"weight_1m": 10},  # GET /fapi/v1/premiumIndex without a symbol: every mark
        "fetch_ticker": {"weight_1m": 1},  # GET /fapi/v1/ticker/24hr with a symbol (40 without)
        "fetch_balance": {"weight_1m": 5},  # GET /fapi/v2|v3/balance
        "fetch_my_trades": {"weight_1m": 5},  # GET /fapi/v1/userTrades
    },
    default_cost={"weight_1m": 5},
)

#: Codes that say more than ccxt's class: code -> (outcome, skip the symbol for ms).
CODES: dict[str, tuple[Outcome, int]] = {
    "-1002": (Outcome.FATAL, 0),  # unauthorized
    "-1003": (Outcome.RATE_LIMITED, 0),  # too many requests
    "-1016": (Outcome.MAINTENANCE, 0),  # service shutting down / no longer available (maintenance)
    "-1022": (Outcome.FATAL, 0),  # signature not valid (wrong secret)
    "-1013": (Outcome.REJECTED, 0),  # filter failure (precision, min notional)
    "-2010": (Outcome.INSUFFICIENT_FUNDS, 0),  # new order rejected: balance (seed 000: old stop still reserves)
    "-2011": (Outcome.NOT_FOUND, 0),  # unknown order sent (cancel)
    "-2013": (Outcome.NOT_FOUND, 0),  # order does not exist (query)
    "-2014": (Outcome.FATAL, 0),  # API-key format invalid
    "-2015": (Outcome.FATAL, 0),  # invalid API-key, IP, or permissions for action
    "-2019": (Outcome.INSUFFICIENT_FUNDS, 0),  # margin is insufficient
    "-2021": (Outcome.WOULD_TRIGGER, 0),  # order would immediately trigger
    "-2022": (Outcome.REJECTED, 0),  # reduce-only order rejected
    "-4140": (Outcome.SYMBOL_UNAVAILABLE, DAY_MS),  # invalid symbol status for opening
    "-4164": (Outcome.REJECTED, 0),  # notional below minimum
}

#: Refusals of a leverage / margin change, in words a user can act on.
SETUP_REFUSALS: dict[str, str] = {
    "-4028": "leverage not valid for this symbol (above its bracket's maximum)",
    "-4046": "margin type already set",
    "-4047": "margin type cannot be changed while orders are open on the symbol",
    "-4048": "margin type cannot be changed while a position is open on the symbol",
    "-4161": "leverage cannot be lowered in isolated margin with a position open",
}

#: What we always want from ccxt (deep-merged under ``exchange.ccxt_options``).
CCXT_DEFAULTS: dict[str, Any] = {
    "options": {
        "defaultType": "swap",
        # load_markets would first read the spot wallet's coin list (GET /sapi/v1/capital/config/getall,
        # and /sapi/v1/margin/allPairs with fetchMargins) on the spot host: a second host a futures bot
        # does not need, and one a futures-only key or a URL override does not reach.
        "fetchCurrencies": False,
        # Venue.open_orders() may list the whole account (weight 40 instead of 1): we know.
        "warnOnFetchOpenOrdersWithoutSymbol": False,
        # ccxt.pro: a watch_positions / watch_orders would first fetch all positions over REST
        # and, if that read failed, wait for it forever. The sync actor's full reads are the snapshot.
        "watchPositions": {"fetchPositionsSnapshot": False, "awaitPositionsSnapshot": False},
        # ccxt.pro gives every new set of mark-price symbols its own connection and counts the
        # sets (never down) against a limit of 200 per connection. One connection carries all
        # (we subscribe at most max_open_positions streams; Binance allows 1024 per connection).
        "streamLimits": {"linear": 1},
        "subscriptionLimitByStream": {"linear": 1_000_000_000},
    },
}


def enable_testnet(exchange: Any) -> None:
    """ccxt 4.5.90 refuses Binance's futures sandbox (``NotSupported: testnet/sandbox mode is not
    supported for futures anymore``): testnet means demo trading (keys from Binance's demo site)."""
    exchange.enable_demo_trading(True)


UNIT = VenueUnit(
    name="binance",
    exchange_name="binanceusdm",
    style=BinanceStyle,
    limits=LIMITS,
    codes=CODES,
    code_keys=("code",),
    # 418: "IP banned until <ms>" after repeated 429s (2 minutes to 3 days; the body names the end).
    ban_statuses={418: 120_000},
    current_price_codes={},  # -2021 does not say which price it compared with
    maintenance_codes={},
    setup_refusals=SETUP_REFUSALS,
    setup_already=frozenset({"-4046"}),
    account_wide_margin=False,  # GET /fapi/v1/symbolConfig: margin type and leverage per symbol
    ccxt_defaults=CCXT_DEFAULTS,
    enable_testnet=enable_testnet,
    # The user-data stream's listenKey (ccxt.pro creates, keeps alive and closes it).
    read_only_writes=frozenset({("POST", "listenKey"), ("PUT", "listenKey"), ("DELETE", "listenKey")}),
)
