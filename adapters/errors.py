"""Exchange errors translated once, at the adapter edge, into outcome classes.

Everything above the venue layer sees only :class:`VenueError` with an
:class:`Outcome`; nobody else looks at ccxt exceptions or venue codes. The
table is data: ccxt's class decides unless the venue code says more (the
code table wins, e.g. Binance -4140 arrives as a plain BadRequest but means
"this symbol cannot be opened now").
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any

import ccxt


class Outcome(enum.Enum):
    RETRYABLE = "retryable"  # network trouble, venue busy: safe to retry reads and cancels
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

    def __init__(self, outcome: Outcome, message: str, *, code: str | None = None, skip_symbol_ms: int = 0) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.code = code
        self.skip_symbol_ms = skip_symbol_ms

    @property
    def retryable(self) -> bool:
        return self.outcome in (Outcome.RETRYABLE, Outcome.RATE_LIMITED)

    def __str__(self) -> str:
        code = f" [{self.code}]" if self.code else ""
        return f"{self.outcome.value}{code}: {self.args[0]}"


# Most specific first: the first isinstance match wins.
_BY_CLASS: list[tuple[type[BaseException], Outcome]] = [
    (ccxt.RequestTimeout, Outcome.UNKNOWN),
    (ccxt.RateLimitExceeded, Outcome.RATE_LIMITED),
    (ccxt.DDoSProtection, Outcome.RATE_LIMITED),
    (ccxt.NetworkError, Outcome.RETRYABLE),  # ExchangeNotAvailable, OnMaintenance, InvalidNonce
    (ccxt.OrderImmediatelyFillable, Outcome.WOULD_TRIGGER),
    (ccxt.OrderNotFound, Outcome.NOT_FOUND),
    (ccxt.InsufficientFunds, Outcome.INSUFFICIENT_FUNDS),
    (ccxt.RestrictedLocation, Outcome.SYMBOL_UNAVAILABLE),
    (ccxt.AuthenticationError, Outcome.FATAL),  # PermissionDenied, AccountSuspended
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
    "-1003": (Outcome.RATE_LIMITED, 0),  # too many requests
    "-1013": (Outcome.REJECTED, 0),  # filter failure (precision, min notional)
    "-2010": (Outcome.INSUFFICIENT_FUNDS, 0),  # new order rejected: balance (seed 000: old stop still reserves)
    "-2011": (Outcome.NOT_FOUND, 0),  # unknown order sent (cancel)
    "-2013": (Outcome.NOT_FOUND, 0),  # order does not exist (query)
    "-2019": (Outcome.INSUFFICIENT_FUNDS, 0),  # margin is insufficient
    "-2021": (Outcome.WOULD_TRIGGER, 0),  # order would immediately trigger
    "-2022": (Outcome.REJECTED, 0),  # reduce-only order rejected
    "-4140": (Outcome.SYMBOL_UNAVAILABLE, _DAY_MS),  # invalid symbol status for opening
    "-4164": (Outcome.REJECTED, 0),  # notional below minimum
    # Bybit v5
    "10001": (Outcome.REJECTED, 0),  # parameter error (incl. below minimum)
    "10006": (Outcome.RATE_LIMITED, 0),  # too many visits
    "110001": (Outcome.NOT_FOUND, 0),  # order does not exist
    "110007": (Outcome.INSUFFICIENT_FUNDS, 0),  # available balance not enough
    "110017": (Outcome.REJECTED, 0),  # reduce-only would increase position
    "110092": (Outcome.WOULD_TRIGGER, 0),  # trigger price vs current price (rising)
    "110093": (Outcome.WOULD_TRIGGER, 0),  # trigger price vs current price (falling)
    "170193": (Outcome.REJECTED, 0),  # price rounded to zero
    "170209": (Outcome.SYMBOL_UNAVAILABLE, _DAY_MS),  # region-restricted: skip 24 h
}

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


def classify(exc: BaseException) -> VenueError:
    """Translate any exception from an exchange call into a :class:`VenueError`."""
    if isinstance(exc, VenueError):
        return exc
    code = venue_code(exc)
    if code in CODE_OUTCOMES:
        outcome, skip_ms = CODE_OUTCOMES[code]
        return VenueError(outcome, _short(exc), code=code, skip_symbol_ms=skip_ms)
    for klass, outcome in _BY_CLASS:
        if isinstance(exc, klass):
            skip = _DAY_MS if outcome is Outcome.SYMBOL_UNAVAILABLE else 0
            return VenueError(outcome, _short(exc), code=code, skip_symbol_ms=skip)
    if isinstance(exc, (TimeoutError, ConnectionError, OSError)):
        return VenueError(Outcome.UNKNOWN if isinstance(exc, TimeoutError) else Outcome.RETRYABLE, _short(exc))
    return VenueError(Outcome.REJECTED, f"{type(exc).__name__}: {_short(exc)}", code=code)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ccxt.BaseError) else f"{type(exc).__name__} {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
