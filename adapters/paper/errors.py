"""The paper venue's refusals: one table, flavour -> condition -> (ccxt class, code, message).

Each entry is what the real venue answers and the ccxt exception class that
ccxt 4.5 raises for that code (``tests/test_paper_engine.py`` checks every
class against ccxt's own ``describe()['exceptions']`` tables). Messages are
shaped as ccxt builds them: the exchange id, a space, then the response body,
e.g. ``binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}``
or ``bybit {"retCode":110017,"retMsg":"...","result":{},"retExtInfo":{},"time":...}``.

Messages may hold ``{placeholders}`` filled from :func:`venue_error` keywords.
"""

from __future__ import annotations

import json
import re
from typing import Any

import ccxt

Entry = tuple[type[ccxt.BaseError], int, str]

EXCHANGE_IDS = {"binance": "binanceusdm", "bybit": "bybit"}

ERRORS: dict[str, dict[str, Entry]] = {
    "binance": {
        "bad_symbol": (ccxt.BadSymbol, -1121, "Invalid symbol."),
        "qty_precision": (ccxt.BadRequest, -1111, "Precision is over the maximum defined for this asset."),
        "price_precision": (ccxt.BadRequest, -1111, "Precision is over the maximum defined for this asset."),
        "qty_zero": (ccxt.BadRequest, -4003, "Quantity less than or equal to zero."),
        "qty_below_min": (ccxt.BadRequest, -4004, "Quantity less than min quantity."),
        "qty_above_max": (ccxt.BadRequest, -4005, "Quantity greater than max quantity."),
        "min_notional": (ccxt.InvalidOrder, -4164, "Order's notional must be no smaller than {min} (unless you choose reduce only)."),
        "would_trigger_falling": (ccxt.OrderImmediatelyFillable, -2021, "Order would immediately trigger."),
        "would_trigger_rising": (ccxt.OrderImmediatelyFillable, -2021, "Order would immediately trigger."),
        "reduce_only_flat": (ccxt.InvalidOrder, -2022, "ReduceOnly Order is rejected."),
        "reduce_only_increase": (ccxt.InvalidOrder, -2022, "ReduceOnly Order is rejected."),
        "insufficient_margin": (ccxt.InsufficientFunds, -2019, "Margin is insufficient."),
        "not_trading": (ccxt.BadRequest, -4140, "Invalid symbol status for opening position."),
        "restricted": (ccxt.BadRequest, -4140, "Invalid symbol status for opening position."),
        "cancel_unknown": (ccxt.OrderNotFound, -2011, "Unknown order sent."),
        "fetch_unknown": (ccxt.OrderNotFound, -2013, "Order does not exist."),
        "duplicate_client_id": (ccxt.InvalidOrder, -4116, "ClientOrderId is duplicated."),
        "rate_limit": (ccxt.RateLimitExceeded, -1003, "Too many requests; current limit of IP is 2400 requests per minute."),
        "position_side_mismatch": (ccxt.OperationRejected, -4061, "Order's position side does not match user's setting."),
        "close_position_exists": (ccxt.ExchangeError, -4130, "An open stop or take profit order with GTE and closePosition in the direction is existing."),
        "max_stop_orders": (ccxt.OperationRejected, -4045, "Reach max stop order limit."),
        "invalid_leverage": (ccxt.BadRequest, -4028, "Leverage {leverage} is not valid"),
        "price_above_band": (ccxt.BadRequest, -4016, "Limit price can't be higher than {limit}."),
        "price_below_band": (ccxt.BadRequest, -4024, "Limit price can't be lower than {limit}."),
    },
    "bybit": {
        "bad_symbol": (ccxt.BadRequest, 10001, "params error: symbol invalid"),
        "qty_precision": (ccxt.BadRequest, 10001, "params error: Qty invalid"),
        "price_precision": (ccxt.BadRequest, 10001, "params error: TriggerPrice invalid"),
        "qty_zero": (ccxt.BadRequest, 10001, "params error: Qty invalid"),
        "qty_below_min": (ccxt.BadRequest, 10001, "The number of contracts exceeds minimum limit allowed"),
        "qty_above_max": (ccxt.BadRequest, 10001, "The number of contracts exceeds maximum limit allowed: too large"),
        "min_notional": (ccxt.BadRequest, 10001, "The order value is below the minimum order value {min}USDT"),
        "would_trigger_falling": (ccxt.InvalidOrder, 110093, "expect Falling, but trigger_price[{trigger}] >= current[{mark}]"),
        "would_trigger_rising": (ccxt.InvalidOrder, 110092, "expect Rising, but trigger_price[{trigger}] <= current[{mark}]"),
        "reduce_only_flat": (ccxt.InvalidOrder, 110017, "current position is zero, cannot fix reduce-only order qty"),
        "reduce_only_increase": (ccxt.InvalidOrder, 110017, "Reduce-only rule not satisfied"),
        "insufficient_margin": (ccxt.InsufficientFunds, 110007, "ab not enough for new order"),
        "not_trading": (ccxt.BadRequest, 10001, "params error: symbol is not trading"),
        "restricted": (ccxt.RestrictedLocation, 170209, "This trading pair is only available to the China region."),
        "cancel_unknown": (ccxt.OrderNotFound, 110001, "Order does not exist"),
        "fetch_unknown": (ccxt.OrderNotFound, 110001, "Order does not exist"),
        "duplicate_client_id": (ccxt.InvalidOrder, 110072, "OrderLinkedID is duplicate"),
        "rate_limit": (ccxt.RateLimitExceeded, 10006, "Too many visits!"),
        "position_side_mismatch": (ccxt.BadRequest, 10001, "position idx not match position mode"),
        "close_position_exists": (ccxt.BadRequest, 10001, "params error: closePosition is not supported"),
        "max_stop_orders": (ccxt.InvalidOrder, 110009, "The number of stop orders exceeds maximum limit allowed"),
        "invalid_leverage": (ccxt.BadRequest, 10001, "leverage invalid"),
        "leverage_not_modified": (ccxt.BadRequest, 110043, "leverage not modified"),
        "price_above_band": (ccxt.InvalidOrder, 110003, "Order price exceeds the upper limit {limit}."),
        "price_below_band": (ccxt.InvalidOrder, 110003, "Order price is lower than the lower limit {limit}."),
    },
}


def venue_error(flavour: str, condition: str, now_ms: int = 0, **fmt: Any) -> ccxt.BaseError:
    """The ccxt exception the real venue's answer to ``condition`` produces (not raised)."""
    cls, code, msg = ERRORS[flavour][condition]
    msg = msg.format(**fmt) if fmt else msg
    if flavour == "binance":
        body: dict[str, Any] = {"code": code, "msg": msg}
    else:
        body = {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": now_ms}
    return cls(f"{EXCHANGE_IDS[flavour]} {json.dumps(body, separators=(',', ':'))}")


def paper_error(flavour: str, cls: type[ccxt.BaseError], text: str) -> ccxt.BaseError:
    """An error with no venue code (network faults, unsupported features), prefixed like ccxt's."""
    return cls(f"{EXCHANGE_IDS[flavour]} {text}")


_CODE = re.compile(r'"(?:code|retCode)":\s*"?(-?\d+)')


def error_code(exc: BaseException) -> int | None:
    """The venue code inside a ccxt exception message, or None."""
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None
