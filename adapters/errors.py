"""Exchange errors translated once, at the adapter edge, into outcome classes.

Everything above the venue layer sees only :class:`VenueError` with an
:class:`Outcome`; nobody else looks at ccxt exceptions or venue codes. The
table is data: ccxt's class decides unless the venue code says more (the
code table wins, e.g. Binance -4140 arrives as a plain BadRequest but means
"this symbol cannot be opened now").

Only failures *of the exchange or of the way to it* are translated: ccxt's
exceptions (the paper exchange raises ccxt's classes too), network errors
(aiohttp client errors, socket errors) and timeouts. Anything else raised
inside an exchange call (a ``KeyError`` while parsing a reply, an
``AttributeError``) is a bug of ours, not a venue refusal: :func:`translate`
returns None for it and the caller must let it propagate (the actor crashes,
its supervisor restarts it, it rebuilds from its events).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import json
import re
import socket
import ssl
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt


class Outcome(enum.Enum):
    RETRYABLE = "retryable"  # network trouble, venue busy: safe to retry reads and cancels
    MAINTENANCE = "maintenance"  # the venue is down for maintenance: the request was not executed; pause, probe
    RATE_LIMITED = "rate_limited"  # back off longer, then retry
    UNKNOWN = "unknown"  # timeout: the request may have been executed; look it up first
    WOULD_TRIGGER = "would_trigger"  # stop price already crossed
    INSUFFICIENT_FUNDS = "insufficient_funds"
    NOT_FOUND = "not_found"  # unknown order: for a cancel it means "already gone"
    SYMBOL_UNAVAILABLE = "symbol_unavailable"  # not trading / region-restricted: skip the symbol
    REJECTED = "rejected"  # invalid order or request: do not retry
    FATAL = "fatal"  # authentication, permissions: stop and call a human


class VenueError(Exception):
    """A classified exchange failure."""

    def __init__(
        self, outcome: Outcome, message: str, *, code: str | None = None, skip_symbol_ms: int = 0, transport: bool = False,
        current_price: Decimal | None = None, status: int | None = None, ban_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.code = code
        self.skip_symbol_ms = skip_symbol_ms
        #: WOULD_TRIGGER: the price the venue compared the trigger with, where its answer says it
        #: (Bybit 110092 / 110093 "... current[39150.0]"); None where it does not (Binance -2021).
        self.current_price = current_price
        #: No answer from the venue: the network, a timeout, the venue's front door (503). What
        #: "unreachable" counts; a refusal with a venue code proves the venue is reachable.
        self.transport = transport
        #: The HTTP status of the answer, where ccxt's message carries it.
        self.status = status
        #: A hard IP ban (RATE_LIMITED): how long to stay away when the answer names no end
        #: (Binance 418 names it: "banned until <ms>"); None for an ordinary rate-limit answer.
        self.ban_ms = ban_ms

    @property
    def retryable(self) -> bool:
        return self.outcome in (Outcome.RETRYABLE, Outcome.RATE_LIMITED, Outcome.MAINTENANCE)

    def __str__(self) -> str:
        code = f" [{self.code}]" if self.code else ""
        return f"{self.outcome.value}{code}: {self.args[0]}"


# Most specific first: the first isinstance match wins.
_BY_CLASS: list[tuple[type[BaseException], Outcome]] = [
    (ccxt.RequestTimeout, Outcome.UNKNOWN),
    (ccxt.RateLimitExceeded, Outcome.RATE_LIMITED),
    (ccxt.DDoSProtection, Outcome.RATE_LIMITED),
    (ccxt.OnMaintenance, Outcome.MAINTENANCE),  # Binance "System is under maintenance."
    (ccxt.NetworkError, Outcome.RETRYABLE),  # ExchangeNotAvailable, InvalidNonce
    (ccxt.OrderImmediatelyFillable, Outcome.WOULD_TRIGGER),
    (ccxt.OrderNotFound, Outcome.NOT_FOUND),
    (ccxt.InsufficientFunds, Outcome.INSUFFICIENT_FUNDS),
    (ccxt.RestrictedLocation, Outcome.SYMBOL_UNAVAILABLE),
    (ccxt.AuthenticationError, Outcome.FATAL),  # invalid key, PermissionDenied, AccountSuspended
    (ccxt.InvalidOrder, Outcome.REJECTED),
    (ccxt.BadRequest, Outcome.REJECTED),
    (ccxt.ExchangeError, Outcome.REJECTED),
    (ccxt.BadResponse, Outcome.RETRYABLE),
    (ccxt.CancelPending, Outcome.RETRYABLE),
    (ccxt.OperationFailed, Outcome.RETRYABLE),
]

_DAY_MS = 86_400_000

#: Venue codes that say more than ccxt's class: code -> (outcome, skip the symbol for ms).
CODE_OUTCOMES: dict[str, tuple[Outcome, int]] = {
    # Binance USDⓈ-M
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
    "-4140": (Outcome.SYMBOL_UNAVAILABLE, _DAY_MS),  # invalid symbol status for opening
    "-4164": (Outcome.REJECTED, 0),  # notional below minimum
    # Bybit v5
    "10001": (Outcome.REJECTED, 0),  # parameter error (incl. below minimum)
    "10003": (Outcome.FATAL, 0),  # API key invalid
    "10004": (Outcome.FATAL, 0),  # signature error
    "10005": (Outcome.FATAL, 0),  # permission denied (key lacks the permission)
    "10006": (Outcome.RATE_LIMITED, 0),  # too many visits
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
    "170209": (Outcome.SYMBOL_UNAVAILABLE, _DAY_MS),  # region-restricted: skip 24 h
}

#: Would-trigger answers that carry the venue's current price, and where: Bybit's
#: ``expect Falling, but trigger_price[39200] >= current[39150.5]`` (110093; 110092 rising).
_CURRENT_PRICE = {code: re.compile(r"current\[\s*(\d+(?:\.\d+)?)\s*\]") for code in ("110092", "110093")}

#: HTTP answers that are IP bans, not ordinary rate-limit answers, by ccxt exchange id and status,
#: with the wait to honour when the answer names none. Binance 418: "IP banned until <ms>" after
#: repeated 429s (2 minutes to 3 days; the body names the end). Bybit 403: the IP limit broken,
#: "stop for at least 10 minutes" (its rate-limit page); unlike retCode 10006 (HTTP 200), which is a
#: per-endpoint limit and an ordinary rate-limit answer.
BAN_STATUSES: dict[tuple[str, int], int] = {("binanceusdm", 418): 120_000, ("binance", 418): 120_000, ("bybit", 403): 600_000}

#: ccxt's HTTP error messages: "<id> <status> <reason> <body>" (Binance's own handler) or
#: "<id> <METHOD> <url> <status> <reason> <body>" (``handle_http_status_code``).
_HTTP_STATUS = re.compile(r"^(\w+) (?:(?:GET|POST|PUT|DELETE|PATCH) \S+ )?([1-5]\d\d) ")

_SUCCESS = ("0", "200")
_CODE_PATTERNS = (
    re.compile(r'"code"\s*:\s*"?(-?\d+)'),
    re.compile(r'"retCode"\s*:\s*"?(-?\d+)'),
)


def venue_code(exc: BaseException) -> str | None:
    """The exchange's own error code from a ccxt exception message, if any."""
    text = str(exc)
    brace = text.find("{")
    if brace >= 0:
        try:
            body: Any = json.loads(text[brace:])
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("code", "retCode"):
                if key in body and str(body[key]) not in _SUCCESS:
                    return str(body[key])
            return None
    for pattern in _CODE_PATTERNS:
        if (m := pattern.search(text)) and m.group(1) not in _SUCCESS:
            return m.group(1)
    return None


#: Words of a maintenance answer where the class or code alone does not say it: an HTTP 503
#: with a maintenance body arrives as ExchangeNotAvailable (a bare 503 is only "busy": RETRYABLE);
#: Bybit's generic 10016 says "service unavailable" while it is down.
_MAINTENANCE_WORDS = re.compile(r"maintenance|system upgrad", re.IGNORECASE)
_MAINTENANCE_CODES = {"10016": re.compile(r"maintenance|service unavailable|upgrad", re.IGNORECASE)}

#: OS errors of a socket or a resolver (other OSErrors, e.g. FileNotFoundError, are bugs).
_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ENETUNREACH", "ENETDOWN", "EHOSTUNREACH", "EHOSTDOWN", "ETIMEDOUT", "ENOTCONN", "EADDRNOTAVAIL", "ESHUTDOWN")
    if hasattr(errno, name)
)


def is_network_error(exc: BaseException) -> bool:
    """A failure of the way to the venue, not of our code: aiohttp client errors, socket errors."""
    if isinstance(exc, (aiohttp.ClientError, ConnectionError, socket.gaierror, socket.herror, ssl.SSLError)):
        return True
    return type(exc) is OSError and exc.errno in _NETWORK_ERRNOS


def translate(exc: BaseException) -> VenueError | None:
    """The :class:`VenueError` for a failure of the exchange or of the way to it; None for a bug.

    Translated: :class:`VenueError` itself, ccxt's exceptions, network errors
    (:func:`is_network_error`) and timeouts. Anything else is not the venue's
    answer but our own bug: the caller must re-raise ``exc`` untouched, e.g.
    ``err = translate(msg.exception); if err is None: raise msg.exception``."""
    if isinstance(exc, VenueError):
        return exc
    if isinstance(exc, ccxt.BaseError):
        return _from_ccxt(exc)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return VenueError(Outcome.UNKNOWN, _short(exc), transport=True)
    if is_network_error(exc):
        return VenueError(Outcome.RETRYABLE, _short(exc), transport=True)
    return None


def classify(exc: BaseException) -> VenueError:
    """Like :func:`translate`, for callers that only ever see exchange failures: a bug is re-raised."""
    err = translate(exc)
    if err is None:
        raise exc
    return err


def http_status(exc: BaseException) -> tuple[str, int] | None:
    """(ccxt exchange id, HTTP status) from a ccxt HTTP error message, if it carries them."""
    m = _HTTP_STATUS.match(str(exc))
    return (m.group(1), int(m.group(2))) if m else None


def _from_ccxt(exc: ccxt.BaseError) -> VenueError:
    code = venue_code(exc)
    outcome, skip_ms = CODE_OUTCOMES.get(code or "", (None, 0))
    answer = http_status(exc)
    ban_ms = BAN_STATUSES.get(answer) if answer is not None else None
    if ban_ms is not None and outcome in (None, Outcome.RATE_LIMITED):
        return VenueError(Outcome.RATE_LIMITED, _short(exc), code=code, status=answer[1] if answer else None, ban_ms=ban_ms)
    if outcome is None:
        outcome = next((o for klass, o in _BY_CLASS if isinstance(exc, klass)), Outcome.REJECTED)  # NotSupported, ...
        skip_ms = _DAY_MS if outcome is Outcome.SYMBOL_UNAVAILABLE else 0
    words = _MAINTENANCE_CODES.get(code or "", _MAINTENANCE_WORDS)
    if outcome in (Outcome.RETRYABLE, Outcome.REJECTED) and isinstance(exc, (ccxt.ExchangeNotAvailable, ccxt.ExchangeError)) and words.search(str(exc)):
        outcome = Outcome.MAINTENANCE  # an HTTP 503 with a maintenance body, Bybit 10016 "service unavailable"
    transport = code is None and outcome in (Outcome.RETRYABLE, Outcome.UNKNOWN) and isinstance(exc, ccxt.NetworkError) and not isinstance(exc, ccxt.InvalidNonce)
    return VenueError(
        outcome, _short(exc), code=code, skip_symbol_ms=skip_ms, transport=transport,
        current_price=_current_price(code, str(exc)),
        status=answer[1] if answer else None,
    )


def _current_price(code: str | None, text: str) -> Decimal | None:
    """The venue's current price in a would-trigger answer (:data:`_CURRENT_PRICE`), if it is there and usable."""
    pattern = _CURRENT_PRICE.get(code or "")
    m = pattern.search(text) if pattern is not None else None
    if m is None:
        return None
    price = Decimal(m.group(1))
    return price if price.is_finite() and price > 0 else None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ccxt.BaseError) else f"{type(exc).__name__} {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
