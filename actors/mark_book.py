"""The marks the bot saw, for people: the latest per symbol and a bounded recent series.

A :class:`MarkBook` subscribes to the price feed like any actor would (it has
``tell``), for the symbols the dashboard and ``ctl positions`` show. The feed
tells it from its own thread; ``tell`` only appends under a lock and calls the
listeners (each must be cheap and never block: the dashboard's hops to its
loop). Nothing here reads the exchange; a symbol nobody follows has no mark.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from actors.messages import MarkPrice, SubscribeMarks, UnsubscribeMarks

#: Events after which the set of open symbols may have changed.
OPENS_AND_EXITS = frozenset({
    "position.entry_filled", "position.adopted", "position.closed", "position.stop_filled", "position.rolled_back", "position.aged_exit_filled",
})

#: The name the book subscribes under (one per process).
NAME = "mark_book"


class MarkBook:
    def __init__(self, directory: Any, *, keep: int = 5000, increments: Callable[[str], tuple[Any, Any]] | None = None) -> None:
        self._directory = directory
        #: ``symbol -> (tick, step)`` of its market, for printing (``(None, None)`` where unknown).
        self.increments = increments or (lambda _symbol: (None, None))
        self._keep = keep
        self._lock = threading.Lock()
        self._series: dict[str, collections.deque[tuple[int, Decimal]]] = {}
        self._following: set[str] = set()
        self._listeners: list[Callable[[str], None]] = []

    # ----------------------------------------------------- as a subscriber
    def tell(self, message: Any) -> None:
        if not isinstance(message, MarkPrice):
            return
        with self._lock:
            series = self._series.setdefault(message.symbol, collections.deque(maxlen=self._keep))
            if not series or series[-1][0] <= message.ts_ms:
                series.append((message.ts_ms, message.price))
            listeners = list(self._listeners)
        for listener in listeners:
            listener(message.symbol)

    def is_alive(self) -> bool:
        return True

    # ------------------------------------------------------------ following
    def follow(self, symbols: Iterable[str]) -> None:
        """Follow exactly ``symbols`` (venue ids, as the positions carry them): subscribe the new, drop the rest."""
        wanted = set(symbols)
        with self._lock:
            new, gone = wanted - self._following, self._following - wanted
            self._following = wanted
        for symbol in sorted(new):
            self._directory.tell("price_feed", SubscribeMarks(symbol=symbol, subscriber=self, name=NAME))
        for symbol in sorted(gone):
            self._directory.tell("price_feed", UnsubscribeMarks(symbol=symbol, name=NAME))

    def on_mark(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            self._listeners = [*self._listeners, listener]

    # -------------------------------------------------------------- reading
    def latest(self, symbol: str) -> tuple[int, Decimal] | None:
        with self._lock:
            series = self._series.get(symbol)
            return series[-1] if series else None

    def between(self, symbol: str, start_ms: int, end_ms: int | None = None) -> list[tuple[int, Decimal]]:
        with self._lock:
            series = list(self._series.get(symbol, ()))
        return [(t, p) for t, p in series if t >= start_ms and (end_ms is None or t <= end_ms)]


async def follow_open(book: MarkBook, open_positions: Callable[[], Any]) -> None:
    """Follow the symbols of the open positions (``open_positions()``: the coroutine reading the projection's open rows)."""
    rows = await open_positions()
    book.follow(str(r["symbol"]) for r in rows if r.get("symbol"))


def follower(book: MarkBook, open_positions: Callable[[], Any]) -> Callable[[list[Any]], Any]:
    """A store subscriber (on the I/O loop): after an entry or an exit, follow the symbols open now."""

    async def refollow(events: list[Any]) -> None:
        if any(e.type in OPENS_AND_EXITS for e in events):
            await follow_open(book, open_positions)

    return refollow
