"""The venues' published request limits as data, and which class each request is.

Binance USDⓈ-M (developers.binance.com, checked against ccxt's ``binance.py``
cost tables): 2400 request weight per minute per IP, 300 orders per 10 s and
1200 per minute per account. Bybit v5 (its rate-limit page, default tier, and
ccxt's ``bybit.py``): 600 requests per 5 s per IP; per endpoint and second:
order create / cancel / trading-stop 10, order, position, execution and
wallet queries 50. :mod:`adapters.rate_limit` enforces them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import msgspec


class Priority(enum.IntEnum):
    """Service class of a request: lower value is served first."""

    PROTECT = 0
    ENTRY = 1
    READ = 2


class Window(msgspec.Struct, frozen=True):
    """One published limit: ``limit`` units per rolling ``window_ms``."""

    name: str
    limit: int
    window_ms: int


class VenueLimits(msgspec.Struct, frozen=True):
    """A venue's windows and what each executor op costs in them (units per window).

    ``costs`` is keyed by the executor's op name (``create_order.stop``) or
    its family (``create_order``); unknown ops cost ``default_cost``.
    """

    style: str
    windows: tuple[Window, ...]
    costs: Mapping[str, Mapping[str, int]]
    default_cost: Mapping[str, int]

    def cost(self, op: str) -> Mapping[str, int]:
        found = self.costs.get(op)
        if found is None:
            found = self.costs.get(op.split(".", 1)[0], self.default_cost)
        return found


_ORDER = {"weight_1m": 1, "orders_10s": 1, "orders_1m": 1}

#: Binance USDⓈ-M (developers.binance.com, "USDⓈ-M Futures / General Info / Limits" and each
#: endpoint's "Request Weight"; the Futures rate-limit FAQ): REQUEST_WEIGHT 2400/min per IP,
#: ORDERS 1200/min and 300/10 s per account. The executor does not see a call's arguments, so
#: where the weight depends on them the table charges the case this bot sends (noted per row).
BINANCE = VenueLimits(
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

#: Bybit v5 (bybit-exchange.github.io/docs/v5/rate-limit): 600 requests per 5 s per IP, and
#: per-UID, per-endpoint limits over a rolling second: order create/amend/cancel 10/s at the
#: default futures tier ("API Rate Limit Rules for PROs": Default, Futures 10/s); order,
#: position, execution and wallet queries 50/s (unified account). Market data is public:
#: only the IP limit applies.
BYBIT = VenueLimits(
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

#: No windows: every request passes at once (an unknown venue, or a test that wants none).
UNLIMITED = VenueLimits(style="none", windows=(), costs={}, default_cost={})

LIMITS: dict[str, VenueLimits] = {"binance": BINANCE, "bybit": BYBIT}

#: ``exchange.name`` -> table style (the paper venue uses ``paper.flavour``).
STYLE_OF_VENUE = {"binanceusdm": "binance", "bybit": "bybit"}

#: Ops that keep a position protected, whoever sends them.
PROTECT_OPS = frozenset({"create_order.stop", "create_order.close"})
#: Ops that remove orders (or a position's attached TP/SL): protective when a position actor sends them.
CANCEL_OPS = frozenset({"cancel_order", "clear_attached"})
#: Other writes: entries and take-profits (``create_order.*`` not in PROTECT_OPS).
WRITE_FAMILIES = frozenset({"create_order", "edit_order"})


def priority_of(op: str, ctx: Mapping[str, Any] | None = None) -> Priority:
    """The class of an executor op.

    A cancel is protective when a position actor sends it (its context names
    the position: replacing its stop, clearing its leftovers); the sync
    actor's zombie clean-up is ENTRY. Callers that know better pass an
    explicit priority to :meth:`Executor.run`.
    """
    if op in PROTECT_OPS:
        return Priority.PROTECT
    if op in CANCEL_OPS:
        return Priority.PROTECT if ctx and ctx.get("position_id") else Priority.ENTRY
    if op.split(".", 1)[0] in WRITE_FAMILIES:
        return Priority.ENTRY
    return Priority.READ


_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")
_RETRY_AFTER = re.compile(r"retry[-_ ]?after\W{0,4}(\d+(?:\.\d+)?)", re.IGNORECASE)


def retry_after_ms(message: str, now_ms: int) -> int | None:
    """How long the venue asked us to stay away, if its answer says so.

    ccxt puts the response *body* in the exception, not the headers: a Binance
    418 body names the ban's end ("IP banned until 1568014514000"); a
    ``Retry-After`` header only counts if a proxy or a test put it in the text.
    """
    if m := _BANNED_UNTIL.search(message):
        return max(0, int(m.group(1)) - now_ms)
    if m := _RETRY_AFTER.search(message):
        return int(float(m.group(1)) * 1000)
    return None
