"""What the venues push (ccxt.pro's ``watch_*`` results), in the venue layer's types.

:class:`~adapters.venue.Venue` keeps the calls; the pure translation lives here
so the venue module stays about requests. The stream dicts are ccxt's unified
structures, but ccxt fills them from the websocket payloads, whose raw fields
(``info``) are named differently from the REST answers the rest of the venue
layer reads; each venue's style (:mod:`adapters.venues`) says how to read
its own (``stream_order``, ``stream_position_side``, ``raw_mark``). Prices are
read from the raw strings, so a mark is the venue's exact decimal, never a
float round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ccxt.async_support.base.ws.cache import ArrayCache

from adapters.markets import Market, Markets
from adapters.venues.style import FLAT_EITHER, VenueStyle

__all__ = ["FLAT_EITHER", "StreamingVenue", "can_watch", "has_key", "mark_updates", "position_updates"]

if TYPE_CHECKING:
    from adapters.venue import OrderReport


def _d(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def has_key(method: str) -> str:
    """ccxt's capability name of a method: ``watch_mark_prices`` -> ``watchMarkPrices``."""
    head, *rest = method.split("_")
    return head + "".join(part.capitalize() for part in rest)


def can_watch(exchange: Any, method: str) -> bool:
    """Does ``exchange`` really stream through ``method``?

    ccxt's REST classes inherit ``watch_*`` stubs that raise NotSupported, so
    where the exchange publishes ``has`` (ccxt, the paper exchange) it decides."""
    has = getattr(exchange, "has", None)
    if isinstance(has, dict) and not has.get(has_key(method)):
        return False
    return callable(getattr(exchange, method, None))


def connected(exchange: Any, prefixes: tuple[str, ...]) -> bool:
    """Is a ccxt.pro connection open that carries a subscription starting with one of ``prefixes``?

    ccxt's ``watch_*`` only returns with the next update; this tells a
    stream that reconnected but has nothing to say yet from one that is down."""
    clients = getattr(exchange, "clients", None)
    if not prefixes or not isinstance(clients, dict):
        return False
    for client in list(clients.values()):
        try:
            if client.closed() or client.error is not None:
                continue
            if any(str(key).startswith(prefixes) for key in list(client.subscriptions)):
                return True
        except AttributeError:
            continue
    return False


def stream_cache(exchange: Any, kind: str) -> ArrayCache | None:
    """ccxt.pro's cache of streamed ``orders`` / ``positions`` (Binance keeps positions per account type)."""
    cache = getattr(exchange, kind, None)
    if isinstance(cache, dict):
        cache = cache.get("linear")
    return cache if isinstance(cache, ArrayCache) else None


def backlog(cache: ArrayCache | None) -> list[dict[str, Any]] | None:
    """Updates ccxt.pro cached while no ``watch_*`` was waiting, if any.

    ccxt resolves a watch only with an update that arrives while it waits;
    the rest of a burst handled in the same read (a Binance stop firing sends
    ALGO_UPDATE and two ORDER_TRADE_UPDATEs at once) only lands in the cache,
    and a plain ``watch_*`` would hand it over with the *next* update, maybe
    hours later. ccxt's own "new since the last read" bookkeeping (what its
    ``watch_orders`` uses) tells them apart; None if there are none or this
    ccxt has no such cache."""
    try:
        if cache is None or cache._clear_all_updates or not cache._all_new_updates:
            return None
    except AttributeError:
        return None
    return take(cache)


def take(cache: ArrayCache) -> list[dict[str, Any]]:
    """The rows updated since the last read of ``cache`` (and mark them read)."""
    n = cache.getLimit(None, None) or 0
    return list(cache[-n:]) if n else []


def fresh_tickers(exchange: Any, symbols: list[str], seen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cached tickers of ``symbols`` that are new since the last call (``seen`` remembers them).

    ccxt.pro keeps the latest ticker of every symbol (``exchange.tickers``, a new
    dict per update) but resolves a watch with the first of a burst only."""
    tickers = getattr(exchange, "tickers", None)
    if not isinstance(tickers, dict):
        return {}
    fresh = {s: t for s in symbols if isinstance(t := tickers.get(s), dict) and seen.get(s) is not t}
    seen.update(fresh)
    return fresh


def position_updates(raw: list[dict[str, Any]], markets: Markets, style: VenueStyle) -> list[tuple[str, str, Decimal]]:
    """(symbol id, side, quantity; 0 = flat) for each streamed position of a known market.

    The side is long / short, or :data:`FLAT_EITHER` for a flat one-way push (the style reads the raw fields)."""
    out = []
    for p in raw or ():
        m = markets.by_symbol.get(p.get("symbol", ""))
        if m is None:
            continue
        qty = abs(_d(p.get("contracts")) or Decimal(0)) * m.contract_size
        out.append((m.id, style.stream_position_side(p, qty == 0), qty))
    return out


def mark_of(ticker: dict[str, Any], style: VenueStyle) -> Decimal | None:
    """The mark price of a streamed ticker, from the raw string where the venue sent one."""
    raw = style.raw_mark(ticker.get("info") or {})
    price = _d(raw) if raw not in (None, "") else _d(ticker.get("markPrice"))
    return price if price is not None and price.is_finite() and price > 0 else None


def mark_updates(raw: dict[str, Any], markets: Markets, style: VenueStyle) -> dict[str, tuple[Decimal, int | None]]:
    """{symbol id: (mark, the venue's time of it in ms, if it gave one)} from a
    ``watch_mark_prices`` / ``watch_tickers`` result."""
    out = {}
    for symbol, ticker in (raw or {}).items():
        if not isinstance(ticker, dict):
            continue
        m = markets.by_symbol.get(ticker.get("symbol") or symbol)
        price = mark_of(ticker, style)
        ts = ticker.get("timestamp")
        if m is not None and price is not None:
            out[m.id] = (price, int(ts) if isinstance(ts, int | float) and ts > 0 else None)
    return out


def subscribed_symbols(exchange: Any, prefixes: tuple[str, ...]) -> set[str]:
    """The unified symbols ccxt.pro holds a subscription for, on any open client, under
    ``prefixes`` (Binance ``markPrice:markPrice@<symbol>``, Bybit ``ticker:<symbol>``)."""
    clients = getattr(exchange, "clients", None)
    out: set[str] = set()
    if not prefixes or not isinstance(clients, dict):
        return out
    for client in list(clients.values()):
        for key in list(getattr(client, "subscriptions", None) or ()):
            key = str(key)
            for prefix in prefixes:
                if key.startswith(prefix):
                    out.add(key.rsplit("@", 1)[-1] if "@" in key else key[len(prefix):])
    return out


#: Side watches (:meth:`StreamingVenue.watch_mark_prices`) still waiting for their first update.
_side_watches: set[asyncio.Future[Any]] = set()


def _spawn_side_watch(awaitable: Any) -> None:
    task = asyncio.ensure_future(awaitable)
    _side_watches.add(task)

    def done(t: asyncio.Future[Any]) -> None:
        _side_watches.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved: a closed connection rejects it, and nobody waits for it

    task.add_done_callback(done)


def drop_clients(exchange: Any, prefixes: tuple[str, ...], reason: str) -> int:
    """Close every ccxt.pro client carrying a subscription under ``prefixes``, failing its
    pending watches with ``reason`` (a NetworkError), so the next ``watch_*`` dials anew.

    For a stream that stays open but says nothing (a venue-side stall, a half-dead TCP
    path): ccxt cannot tell it from a quiet one. A user-data URL's listenKey is forgotten
    too, so the new connection logs in with a fresh key. The number of clients dropped."""
    import ccxt  # the venue layer's dependency; imported here to keep this module's import light

    clients = getattr(exchange, "clients", None)
    if not prefixes or not isinstance(clients, dict):
        return 0
    dropped = 0
    for url, client in list(clients.items()):
        if not any(str(k).startswith(prefixes) for k in list(getattr(client, "subscriptions", None) or ())):
            continue
        for bucket in getattr(exchange, "options", {}).values():
            if isinstance(bucket, dict) and bucket.get("listenKey") and bucket["listenKey"] in str(url):
                bucket.update(listenKey=None, lastAuthenticatedTime=0)
        error = ccxt.NetworkError(f"{getattr(exchange, 'id', 'exchange')} stream dropped: {reason}")
        client.error = error  # a closing we asked for: not a server disconnect
        client.reset(error)
        if clients.get(url) is client:
            del clients[url]
        _spawn_side_watch(client.close())
        dropped += 1
    return dropped


async def bounded(awaitable: Any, timeout_s: float) -> Any:
    """Await with a bound; None if it did not finish (an unsubscribe whose reply never came)."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        return None


class StreamingVenue:
    """The streaming half of :class:`~adapters.venue.Venue` (mixed in): the ``watch_*`` calls.

    Expects the venue's ``exchange``, ``markets``, ``style``, ``market()`` and ``_order()``."""

    exchange: Any
    markets: Markets
    style: VenueStyle
    _marks_seen: dict[str, Any]  # ccxt.pro tickers already handed out, per symbol
    _order_listeners: list[Callable[[str, OrderReport | None, str], None]]

    if TYPE_CHECKING:  # the venue's (declared for the type checker only)

        def market(self, symbol: str) -> Market: ...
        def _order(self, raw: dict[str, Any], m: Market | None) -> OrderReport: ...

    def streams_supported(self) -> bool:
        """Can this exchange object push order and position updates (the paper exchange, ccxt.pro)?

        False for ccxt's REST classes: they only inherit ``watch_*`` stubs, so those venues poll."""
        return can_watch(self.exchange, "watch_orders") and can_watch(self.exchange, "watch_positions")

    def mark_streams_supported(self) -> bool:
        """Can this exchange object push mark prices (ccxt.pro; the paper exchange cannot)?"""
        return can_watch(self.exchange, self.style.mark_watch_method)

    def stream_connected(self, kind: str) -> bool:
        """Is the ``orders`` / ``positions`` / ``marks`` stream's connection open (ccxt.pro only)?

        Lets a stream be reported up again after a reconnect before its next update arrives."""
        own = getattr(self.exchange, "watch_connected", None)  # the paper exchange's client
        if callable(own):
            return bool(own(kind))
        return connected(self.exchange, self.style.stream_subscriptions.get(kind, ()))

    async def watch_orders(self) -> list[OrderReport]:
        """The next batch of order updates from the venue's stream (first any ccxt.pro cached unseen)."""
        raw = backlog(stream_cache(self.exchange, "orders"))
        if raw is None:
            raw = await self.exchange.watch_orders()
        return [self._order(self.style.stream_order(o), self.markets.by_symbol[o["symbol"]]) for o in raw if o.get("symbol") in self.markets.by_symbol]

    async def watch_positions(self) -> list[tuple[str, str, Decimal]]:
        """The next batch of position updates: (symbol id, side, quantity; 0 = closed).

        On ccxt.pro: every row its cache took since the last batch (ccxt's answer only
        covers the one message that woke the watch)."""
        raw = backlog(stream_cache(self.exchange, "positions"))
        if raw is None:
            raw = await self.exchange.watch_positions()
            if (cache := stream_cache(self.exchange, "positions")) is not None:
                raw = take(cache) or raw
        return position_updates(raw, self.markets, self.style)

    async def watch_mark_prices(self, symbols: list[str]) -> dict[str, tuple[Decimal, int | None]]:
        """The next mark price updates of ``symbols``: {symbol id: (mark, venue time ms)}.

        Every symbol whose ticker ccxt.pro cached since the last call, not only the one
        that woke the watch (Binance pushes all ``@markPrice@1s`` streams at once).

        When ``symbols`` adds to what is subscribed, only the new ones are subscribed:
        ccxt.pro would send the whole set again (the symbols already streaming get a
        needless SUBSCRIBE); a side watch of just the new symbols subscribes them first,
        so the watch of the whole set finds every subscription in place and sends nothing."""
        unified = [self.market(s).symbol for s in symbols]
        method = getattr(self.exchange, self.style.mark_watch_method)
        prefixes = self.style.stream_subscriptions.get("marks", ())
        have = subscribed_symbols(self.exchange, prefixes)
        missing = [s for s in unified if s not in have]
        if have and missing and len(missing) < len(unified):
            _spawn_side_watch(method(missing))
            for _ in range(50):  # until ccxt has registered them (its first step, no I/O)
                await asyncio.sleep(0)
                if set(missing) <= subscribed_symbols(self.exchange, prefixes):
                    break
        seen = self._marks_seen
        fresh = fresh_tickers(self.exchange, unified, seen)
        if not fresh:
            fresh = await method(unified)
            fresh = {**fresh, **fresh_tickers(self.exchange, unified, seen)}
        return mark_updates(fresh, self.markets, self.style)

    def redial_streams(self, kinds: tuple[str, ...], reason: str) -> int:
        """Drop the connections of the ``orders`` / ``positions`` / ``marks`` streams (ccxt.pro):
        their pumps see the failure and dial anew. The number of connections dropped."""
        prefixes = tuple(p for k in kinds for p in self.style.stream_subscriptions.get(k, ()))
        return drop_clients(self.exchange, prefixes, reason)

    def add_order_listener(self, fn: Callable[[str, OrderReport | None, str], None]) -> None:
        """``fn(action, report, order_id)`` after each order action of ours the venue accepted:
        ``place`` (with the venue's answer) or ``cancel``. Called on the I/O loop: it must only tell."""
        self._order_listeners.append(fn)

    def remove_order_listener(self, fn: Callable[[str, OrderReport | None, str], None]) -> None:
        if fn in self._order_listeners:
            self._order_listeners.remove(fn)

    def _acted(self, action: str, report: OrderReport | None, order_id: str) -> None:
        for fn in list(self._order_listeners):
            try:
                fn(action, report, order_id)
            except Exception:  # a listener's failure is not the order's
                pass

    async def unwatch_mark_prices(self, symbols: list[str], timeout_s: float = 5.0) -> None:
        """End the mark subscription of exactly ``symbols`` (as watched), so the connection stops
        carrying them. Best effort and bounded: skipped when the stream is not connected (its
        subscriptions went with the connection), never raises."""
        method = getattr(self.exchange, self.style.mark_unwatch_method, None)
        if not symbols or method is None or not self.stream_connected("marks"):
            return
        try:
            await bounded(method([self.market(s).symbol for s in symbols]), timeout_s)
        except Exception:
            pass
