"""Keeping an exchange's credentials out of everything ccxt and ccxt.pro can emit.

Installed on every real exchange by :func:`adapters.ccxt_exchange.build_ccxt_exchange`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any


class SecretGuard:
    """Keeps an exchange's credentials out of everything ccxt can emit.

    ccxt puts response bodies (and for some errors the URL) into exception
    messages, prints request headers (with the API key) in ``verbose`` mode and
    logs them at DEBUG on its ``ccxt.base.exchange`` logger. ``install`` wraps
    the exchange so that all three are redacted, whatever the options say.

    ccxt.pro adds two more carriers: errors of a ``watch_*`` call (a Bybit
    ``auth`` refusal quotes the request, API key included; a Binance
    connection error or ping time-out quotes the URL, which holds the
    listenKey: with it anyone can read the account's orders and positions)
    and the websocket client's ``verbose`` prints. Both go through the wrapped
    ``watch_*`` methods and ``log``; a listenKey (it changes) is masked by pattern.
    """

    MASK = "***"
    #: A Binance user-data listenKey in a URL (``?listenKey=...``), JSON or a dict repr.
    PATTERNS = (re.compile(r"""(listenKey["']?\s*[=:]\s*["']?)(?!\*\*\*)[A-Za-z0-9]{8,}"""),)
    #: ccxt.pro methods whose errors are scrubbed (wherever the exchange has them).
    WATCH_METHODS = ("watch_orders", "watch_positions", "watch_mark_prices", "watch_mark_price", "watch_tickers", "watch_ticker", "watch_balance", "watch_my_trades", "un_watch_mark_prices", "un_watch_tickers")

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: Any) -> str:
        out = text if isinstance(text, str) else str(text)
        for s in self.secrets:
            out = out.replace(s, self.MASK)
        for pattern in self.PATTERNS:
            out = pattern.sub(lambda m: m.group(1) + self.MASK, out)
        return out

    def leaks(self, text: Any) -> bool:
        out = text if isinstance(text, str) else str(text)
        return any(s in out for s in self.secrets) or any(p.search(out) for p in self.PATTERNS)

    def scrub(self, exc: BaseException) -> BaseException:
        """Redact ``exc`` and its causes in place (class and traceback kept)."""
        seen: set[int] = set()
        node: BaseException | None = exc
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            if any(self.leaks(a) for a in node.args):
                node.args = tuple(self.redact(a) if isinstance(a, str) or self.leaks(a) else a for a in node.args)
            node = node.__cause__ or node.__context__
        return exc

    def install(self, exchange: Any) -> Any:
        guard = self
        fetch2 = exchange.fetch2

        async def guarded_fetch2(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fetch2(*args, **kwargs)
            except BaseException as exc:
                guard.scrub(exc)  # in place: the same exception goes on
                raise

        exchange.fetch2 = guarded_fetch2
        for name in self.WATCH_METHODS:
            if callable(getattr(exchange, name, None)):
                setattr(exchange, name, self._guarded(getattr(exchange, name)))
        log_fn = exchange.log
        exchange.log = lambda *args: log_fn(*(guard.redact(a) for a in args))
        logger = exchange.logger if isinstance(getattr(exchange, "logger", None), logging.Logger) else logging.getLogger("ccxt.base.exchange")
        _redacting_filter(logger).add(self)
        exchange.secret_guard = self
        return exchange

    def _guarded(self, method: Callable[..., Any]) -> Callable[..., Any]:
        guard = self

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except BaseException as exc:
                guard.scrub(exc)  # in place: the same exception goes on
                raise

        return guarded


class _RedactingFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.guards: list[SecretGuard] = []

    def add(self, guard: SecretGuard) -> None:
        self.guards.append(guard)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if any(g.leaks(text) for g in self.guards):
            for g in self.guards:
                text = g.redact(text)
            record.msg, record.args = text, None
        return True


def _redacting_filter(logger: logging.Logger) -> _RedactingFilter:
    for f in logger.filters:
        if isinstance(f, _RedactingFilter):
            return f
    f = _RedactingFilter()
    logger.addFilter(f)
    return f
