"""Exchange errors translated once, at the adapter edge, into outcome classes.

Everything above the venue layer sees only :class:`VenueError` with an
:class:`Outcome`; nobody else looks at ccxt exceptions or venue codes. The
table is data: ccxt's class decides unless the venue code says more (the
code table wins, e.g. Binance -4140 arrives as a plain BadRequest but means
"this symbol cannot be opened now"). The code tables, ban statuses and
maintenance codes are each venue's, in its unit (:mod:`adapters.venues`); the
venue is the exchange id ccxt puts first in every message (when a message
names none, every unit's codes are read: they do not collide).

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
from typing import TYPE_CHECKING, Any

import aiohttp
import ccxt

if TYPE_CHECKING:
    from adapters.venues.unit import VenueUnit


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


_DAY_MS = 86_400_000

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

#: ccxt's HTTP error messages: "<id> <status> <reason> <body>" (Binance's own handler) or
#: "<id> <METHOD> <url> <status> <reason> <body>" (``handle_http_status_code``).
_HTTP_STATUS = re.compile(r"^(\w+) (?:(?:GET|POST|PUT|DELETE|PATCH) \S+ )?([1-5]\d\d) ")
#: ccxt starts every message of an exchange's answer with the exchange's id (the paper exchange too).
_EXCHANGE_ID = re.compile(r"^(\w+)[ :]")

_SUCCESS = ("0", "200")


def _unit_of(exc: BaseException) -> VenueUnit | None:
    """The venue unit whose answer this is, by the exchange id ccxt put first in the message."""
    from adapters import venues  # the units import Outcome from here

    m = _EXCHANGE_ID.match(str(exc))
    return venues.find(m.group(1)) if m else None


def _code_keys(unit: VenueUnit | None) -> tuple[str, ...]:
    from adapters import venues

    if unit is not None:
        return unit.code_keys
    return tuple(dict.fromkeys(k for u in venues.UNITS for k in u.code_keys))


def venue_code(exc: BaseException) -> str | None:
    """The exchange's own error code from a ccxt exception message, if any (the keys each venue
    unit names: Binance ``code``, Bybit ``retCode``; every unit's when the message names no venue)."""
    text = str(exc)
    keys = _code_keys(_unit_of(exc))
    brace = text.find("{")
    if brace >= 0:
        try:
            body: Any = json.loads(text[brace:])
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in keys:
                if key in body and str(body[key]) not in _SUCCESS:
                    return str(body[key])
            return None
    for key in keys:
        if (m := re.search(rf'"{key}"\s*:\s*"?(-?\d+)', text)) and m.group(1) not in _SUCCESS:
            return m.group(1)
    return None


#: Words of a maintenance answer where the class or code alone does not say it: an HTTP 503
#: with a maintenance body arrives as ExchangeNotAvailable (a bare 503 is only "busy": RETRYABLE).
#: A venue's own maintenance codes are in its unit (``maintenance_codes``).
_MAINTENANCE_WORDS = re.compile(r"maintenance|system upgrad", re.IGNORECASE)

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
    from adapters import venues

    unit = _unit_of(exc)
    code = venue_code(exc)
    codes = unit.codes if unit is not None else venues.all_codes()
    outcome, skip_ms = codes.get(code or "", (None, 0))
    answer = http_status(exc)
    ban_unit = venues.find(answer[0]) if answer is not None else None
    ban_ms = ban_unit.ban_statuses.get(answer[1]) if ban_unit is not None and answer is not None else None
    if ban_ms is not None and outcome in (None, Outcome.RATE_LIMITED):
        return VenueError(Outcome.RATE_LIMITED, _short(exc), code=code, status=answer[1] if answer else None, ban_ms=ban_ms)
    if outcome is None:
        outcome = next((o for klass, o in _BY_CLASS if isinstance(exc, klass)), Outcome.REJECTED)  # NotSupported, ...
        skip_ms = _DAY_MS if outcome is Outcome.SYMBOL_UNAVAILABLE else 0
    units = (unit,) if unit is not None else venues.UNITS
    words = next((w for u in units if (w := u.maintenance_codes.get(code or "")) is not None), _MAINTENANCE_WORDS)
    if outcome in (Outcome.RETRYABLE, Outcome.REJECTED) and isinstance(exc, (ccxt.ExchangeNotAvailable, ccxt.ExchangeError)) and words.search(str(exc)):
        outcome = Outcome.MAINTENANCE  # an HTTP 503 with a maintenance body, a venue's maintenance code
    transport = code is None and outcome in (Outcome.RETRYABLE, Outcome.UNKNOWN) and isinstance(exc, ccxt.NetworkError) and not isinstance(exc, ccxt.InvalidNonce)
    return VenueError(
        outcome, _short(exc), code=code, skip_symbol_ms=skip_ms, transport=transport,
        current_price=_current_price(units, code, str(exc)),
        status=answer[1] if answer else None,
    )


def _current_price(units: tuple[VenueUnit, ...], code: str | None, text: str) -> Decimal | None:
    """The venue's current price in a would-trigger answer (the unit's ``current_price_codes``), if it is there and usable."""
    pattern = next((p for u in units if (p := u.current_price_codes.get(code or "")) is not None), None)
    m = pattern.search(text) if pattern is not None else None
    if m is None:
        return None
    price = Decimal(m.group(1))
    return price if price.is_finite() and price > 0 else None


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ccxt.BaseError) else f"{type(exc).__name__} {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
