"""Error translation: each ccxt class and each venue code we rely on -> outcome class; our bugs -> None."""

from __future__ import annotations

import errno
from decimal import Decimal

import aiohttp
import ccxt
import pytest

from adapters.errors import Outcome, VenueError, classify, translate, venue_code

DAY_MS = 86_400_000


def binance(code: int, msg: str) -> str:
    return f'binanceusdm {{"code":{code},"msg":"{msg}"}}'


def bybit(code: int | str, msg: str) -> str:
    return f'bybit {{"retCode":{code},"retMsg":"{msg}","result":{{}},"retExtInfo":{{}},"time":1700000000000}}'


CASES = [
    # ccxt class as ccxt raises it for the code, message as ccxt formats it
    (ccxt.RateLimitExceeded(binance(-1003, "Too many requests.")), Outcome.RATE_LIMITED, "-1003", True),
    (ccxt.BadRequest(binance(-1013, "Filter failure: MIN_NOTIONAL")), Outcome.REJECTED, "-1013", False),
    (ccxt.InvalidOrder(binance(-2010, "Account has insufficient balance for requested action.")), Outcome.INSUFFICIENT_FUNDS, "-2010", False),
    (ccxt.OrderNotFound(binance(-2011, "Unknown order sent.")), Outcome.NOT_FOUND, "-2011", False),
    (ccxt.OrderNotFound(binance(-2013, "Order does not exist.")), Outcome.NOT_FOUND, "-2013", False),
    (ccxt.InsufficientFunds(binance(-2019, "Margin is insufficient.")), Outcome.INSUFFICIENT_FUNDS, "-2019", False),
    (ccxt.OrderImmediatelyFillable(binance(-2021, "Order would immediately trigger.")), Outcome.WOULD_TRIGGER, "-2021", False),
    (ccxt.InvalidOrder(binance(-2022, "ReduceOnly Order is rejected.")), Outcome.REJECTED, "-2022", False),
    (ccxt.BadRequest(binance(-4140, "Invalid symbol status for opening position.")), Outcome.SYMBOL_UNAVAILABLE, "-4140", False),
    (ccxt.InvalidOrder(binance(-4164, "Order's notional must be no smaller than 5")), Outcome.REJECTED, "-4164", False),
    (ccxt.BadRequest(bybit(10001, "params error: qty below minimum")), Outcome.REJECTED, "10001", False),
    (ccxt.RateLimitExceeded(bybit(10006, "Too many visits!")), Outcome.RATE_LIMITED, "10006", True),
    (ccxt.InvalidOrder(bybit(110017, "Reduce-only rule not satisfied")), Outcome.REJECTED, "110017", False),
    (ccxt.InvalidOrder(bybit('"110017"', "Reduce-only rule not satisfied")), Outcome.REJECTED, "110017", False),  # retCode as a string
    (ccxt.InvalidOrder(bybit(170193, "Buy order price cannot be higher than 0.")), Outcome.REJECTED, "170193", False),
    (ccxt.RestrictedLocation(bybit(170209, "This trading pair is only available to the China region.")), Outcome.SYMBOL_UNAVAILABLE, "170209", False),
    (ccxt.InsufficientFunds(bybit(110007, "ab not enough for new order")), Outcome.INSUFFICIENT_FUNDS, "110007", False),
    # classes without a code
    (ccxt.RequestTimeout("binanceusdm POST https://fapi.binance.com/fapi/v1/order request timeout (10000 ms)"), Outcome.UNKNOWN, None, False),
    (ccxt.NetworkError("binanceusdm GET ... ECONNRESET"), Outcome.RETRYABLE, None, True),
    (ccxt.ExchangeNotAvailable("bybit 503 Service Unavailable"), Outcome.RETRYABLE, None, True),
    (ccxt.OnMaintenance("binanceusdm system maintenance"), Outcome.MAINTENANCE, None, True),
    (ccxt.OnMaintenance(binance(-1, "System is under maintenance.")), Outcome.MAINTENANCE, "-1", True),
    (ccxt.BadRequest(binance(-1016, "This service is no longer available.")), Outcome.MAINTENANCE, "-1016", True),
    (ccxt.ExchangeNotAvailable('binanceusdm 503 Service Unavailable {"msg":"System maintenance in progress"}'), Outcome.MAINTENANCE, None, True),
    (ccxt.ExchangeError(bybit(10016, "service unavailable")), Outcome.MAINTENANCE, "10016", True),
    (ccxt.ExchangeError(bybit(10016, "Server error")), Outcome.RETRYABLE, "10016", True),
    (ccxt.DDoSProtection("binanceusdm 418 IP banned"), Outcome.RATE_LIMITED, None, True),
    (ccxt.AuthenticationError(binance(-2015, "Invalid API-key, IP, or permissions for action.")), Outcome.FATAL, "-2015", False),
    (ccxt.AuthenticationError(binance(-2014, "API-key format invalid.")), Outcome.FATAL, "-2014", False),
    (ccxt.AuthenticationError(binance(-1002, "You are not authorized to execute this request.")), Outcome.FATAL, "-1002", False),
    (ccxt.ExchangeError(binance(-1002, "You are not authorized to execute this request.")), Outcome.FATAL, "-1002", False),  # the code decides
    (ccxt.AuthenticationError(bybit(10003, "API key is invalid.")), Outcome.FATAL, "10003", False),
    (ccxt.AuthenticationError(bybit(10004, "Error sign, please check your signature generation algorithm.")), Outcome.FATAL, "10004", False),
    (ccxt.PermissionDenied(bybit(10005, "Permission denied, please check your API key permissions.")), Outcome.FATAL, "10005", False),
    (ccxt.PermissionDenied(bybit(10010, "Unmatched IP, please check your API key's bound IP addresses.")), Outcome.FATAL, "10010", False),
    (ccxt.PermissionDenied("bybit permission denied"), Outcome.FATAL, None, False),
    (ccxt.AccountSuspended("binanceusdm This action is disabled on this account."), Outcome.FATAL, None, False),
    (ccxt.InvalidOrder("binanceusdm order amount too small"), Outcome.REJECTED, None, False),
    (ccxt.BadSymbol("binanceusdm does not have market symbol NOPE/USDT:USDT"), Outcome.REJECTED, None, False),
    (TimeoutError("read timed out"), Outcome.UNKNOWN, None, False),
    (ConnectionResetError("peer reset"), Outcome.RETRYABLE, None, True),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), Outcome.RETRYABLE, None, True),
    (aiohttp.ClientConnectionError("cannot connect"), Outcome.RETRYABLE, None, True),
]

#: Not the venue's answer: our own bugs (and an OS error that is not a socket's). Never translated.
BUGS = [
    KeyError("id"),
    ValueError("something odd"),
    AttributeError("'NoneType' object has no attribute 'get'"),
    TypeError("unsupported operand type(s) for -: 'NoneType' and 'int'"),
    ZeroDivisionError("division by zero"),
    FileNotFoundError(errno.ENOENT, "No such file or directory"),
]


@pytest.mark.parametrize(("exc", "outcome", "code", "retryable"), CASES, ids=[f"{type(c[0]).__name__}-{c[2]}" for c in CASES])
def test_translation_table(exc, outcome, code, retryable):
    err = translate(exc)
    assert isinstance(err, VenueError)
    assert err.outcome is outcome
    assert err.code == code
    assert err.retryable is retryable


@pytest.mark.parametrize("exc", BUGS, ids=[type(b).__name__ for b in BUGS])
def test_our_bugs_are_not_translated(exc):
    assert translate(exc) is None
    with pytest.raises(type(exc)) as raised:
        classify(exc)  # for a caller that only expects venue failures: the bug itself, not a refusal
    assert raised.value is exc


@pytest.mark.parametrize(("exc", "transport"), [
    (ccxt.NetworkError("binanceusdm GET ... ECONNRESET"), True),
    (ccxt.RequestTimeout("binanceusdm request timeout (10000 ms)"), True),
    (ccxt.ExchangeNotAvailable("bybit 503 Service Unavailable"), True),
    (ConnectionRefusedError(), True),
    (ccxt.RateLimitExceeded(binance(-1003, "Too many requests.")), False),  # an answer: the venue is there
    (ccxt.OnMaintenance("binanceusdm System is under maintenance."), False),
    (ccxt.InvalidOrder(binance(-2022, "ReduceOnly Order is rejected.")), False),
])
def test_transport_failures_are_those_without_an_answer(exc, transport):
    assert translate(exc).transport is transport


def test_symbol_refusals_skip_the_symbol_for_a_day():
    assert classify(ccxt.RestrictedLocation(bybit(170209, "restricted"))).skip_symbol_ms == DAY_MS
    assert classify(ccxt.BadRequest(binance(-4140, "Invalid symbol status"))).skip_symbol_ms == DAY_MS
    assert classify(ccxt.InvalidOrder(binance(-2022, "x"))).skip_symbol_ms == 0


def test_success_codes_are_not_error_codes():
    assert venue_code(ccxt.ExchangeError('bybit {"retCode":0,"retMsg":"OK"}')) is None


def test_classify_is_idempotent():
    err = classify(ccxt.OrderNotFound(binance(-2011, "Unknown order sent.")))
    assert classify(err) is err
    assert "not_found [-2011]" in str(err)


@pytest.mark.parametrize(("exc", "price"), [
    (ccxt.InvalidOrder(bybit(110093, "expect Falling, but trigger_price[39200] >= current[39150.5]")), "39150.5"),
    (ccxt.InvalidOrder(bybit(110092, "expect Rising, but trigger_price[0.3000] <= current[0.3012]")), "0.3012"),
    (ccxt.InvalidOrder(bybit(110093, "expect Falling, but trigger_price is too high")), None),  # no price: re-read the mark
    (ccxt.OrderImmediatelyFillable(binance(-2021, "Order would immediately trigger.")), None),  # Binance says none
])
def test_would_trigger_carries_the_venues_current_price_where_it_says_it(exc, price):
    err = translate(exc)
    assert err is not None and err.outcome is Outcome.WOULD_TRIGGER
    assert err.current_price == (None if price is None else Decimal(price))


@pytest.mark.parametrize(("exc", "status", "ban_ms"), [
    # Binance's own handler: "<id> <status> <reason> <body>"; the body names the ban's end (read by the executor)
    (ccxt.DDoSProtection('binanceusdm 418 I\'m a teapot {"code":-1003,"msg":"Way too many requests; IP(1.2.3.4) banned until 1700000090000."}'), 418, 120_000),
    (ccxt.DDoSProtection('binanceusdm 429 Too Many Requests {"code":-1003,"msg":"Too many requests; current limit of IP(1.2.3.4) is 2400 requests per minute."}'), 429, None),
    # Bybit: HTTP 403 is the IP limit broken ("stop for at least 10 minutes"); retCode 10006 (HTTP 200) is not a ban
    (ccxt.RateLimitExceeded("bybit GET https://api.bybit.com/v5/order/realtime?category=linear 403 Forbidden access too frequent"), 403, 600_000),
    (ccxt.RateLimitExceeded(bybit(10006, "Too many visits!")), None, None),
    # Binance 403 is its web firewall, not a rate-limit ban: left as it was
    (ccxt.ExchangeNotAvailable("binanceusdm GET https://fapi.binance.com/fapi/v1/order 403 Forbidden "), 403, None),
])
def test_hard_bans_are_told_from_rate_limit_answers_by_status(exc, status, ban_ms):
    err = translate(exc)
    assert err.status == status and err.ban_ms == ban_ms
    if ban_ms is not None or err.code in ("-1003", "10006"):
        assert err.outcome is Outcome.RATE_LIMITED
