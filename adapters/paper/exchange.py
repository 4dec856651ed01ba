"""PaperExchange: the paper engine behind ccxt's unified async API.

The bot's venue layer drives it exactly like ``ccxt.async_support.binanceusdm``
or ``bybit``: same method names, arguments, return dicts (floats, raw strings
in ``info``) and exception classes. Each REST-style call goes through the
fault plan: scripted or random faults, latency (``asyncio.sleep``) before the
engine call, and ambiguous timeouts raised *after* the engine executed it.

Prices advance on the injected clock: :meth:`PaperExchange.start` schedules
``clock.call_every(tick_interval_ms)`` to feed the replay's ticks to
``engine.on_mark``. That callback runs on the clock's thread, so every engine
call holds :attr:`PaperExchange.lock`. Code that calls the engine directly
(external actions in tests) uses :meth:`PaperExchange.with_engine`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt

from adapters.markets import Markets
from adapters.paper import shapes
from adapters.paper.engine import PaperEngine
from adapters.paper.errors import EXCHANGE_IDS, paper_error, venue_error
from adapters.paper.faults import FaultInjector, FaultPlan
from adapters.paper.model import Order
from adapters.paper.prices import PriceReplay

MARKETS_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "markets"
MARKET_FILES = {"binance": "binanceusdm-linear.json", "bybit": "bybit.json"}


#: The candle sizes ``fetch_ohlcv`` serves (ccxt's names).
_TIMEFRAMES = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class RequestLog(collections.deque[dict[str, Any]]):
    """The exchange's record of every call. Calls append from the I/O loop while tests and
    benchmarks read from their own thread, so iterating yields a snapshot taken in one C call
    (no "deque mutated during iteration" for a reader slower than the bot)."""

    def __iter__(self):
        return iter(list(collections.deque.__iter__(self)))


class PaperExchange:
    """``PaperExchange(engine, clock, *, flavour=None, faults=None, price_replay=None,
    tick_interval_ms=1000, max_requests_per_s=None, request_log_size=1000, markets_path=None)``.

    ``flavour`` defaults to the engine's; ``faults`` is a :class:`FaultPlan`
    or a :class:`FaultInjector`; ``max_requests_per_s`` (clock time) answers
    beyond it with the venue's rate-limit error.
    """

    #: Where the price replay started; set by :func:`adapters.paper.hosting.build_paper_exchange` for saving.
    replay_start_ms: int

    def __init__(
        self,
        engine: PaperEngine,
        clock: Any,
        *,
        flavour: str | None = None,
        faults: FaultPlan | FaultInjector | None = None,
        price_replay: PriceReplay | None = None,
        tick_interval_ms: int = 1000,
        max_requests_per_s: int | None = None,
        request_log_size: int = 1000,
        markets_path: Path | None = None,
    ) -> None:
        self.flavour = flavour or engine.config.flavour
        if self.flavour != engine.config.flavour:
            raise ValueError(f"flavour {self.flavour!r} differs from the engine's {engine.config.flavour!r}")
        self.engine, self.clock = engine, clock
        self.id = EXCHANGE_IDS[self.flavour]
        self.faults = faults if isinstance(faults, FaultInjector) else FaultInjector(faults, self.flavour)
        self.price_replay = price_replay
        self.tick_interval_ms = int(tick_interval_ms)
        self.max_requests_per_s = max_requests_per_s
        self.lock = threading.Lock()
        self.requests = RequestLog(maxlen=request_log_size)
        self.has = {"createOrder": True, "cancelOrder": True, "fetchOrder": True, "fetchOpenOrder": True, "fetchClosedOrder": True, "fetchOpenOrders": True, "fetchPositions": True, "fetchBalance": True, "fetchTicker": True, "fetchMarkPrice": True, "fetchMyTrades": True, "setLeverage": True, "watchOrders": True, "watchPositions": True}
        self.markets_path = Path(markets_path) if markets_path else MARKETS_DIR / MARKET_FILES[self.flavour]
        self.markets: dict[str, dict[str, Any]] | None = None
        self.symbols: list[str] = []
        self._timer: Any = None
        self._last_tick_ms: int | None = None
        self._recent: collections.deque[int] = collections.deque()
        self._seq = 0
        self._updates: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=10_000)
        self._cursors: dict[tuple, int] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._streams_down = False
        self.closed = False
        engine.add_listener(self._on_engine_event)

    @classmethod
    def paper(cls, clock: Any, flavour: str = "binance", *, replay: bool = True, faults: FaultPlan | None = None, tick_interval_ms: int = 1000, **engine_knobs: Any) -> PaperExchange:
        """Engine + markets file + price replay for ``flavour``, wired together (not started)."""
        markets = Markets.from_file(MARKETS_DIR / MARKET_FILES[flavour])
        engine = PaperEngine(markets, flavour=flavour, **engine_knobs)
        prices = PriceReplay(markets, start_ms=clock.now_ms()) if replay else None
        return cls(engine, clock, faults=faults, price_replay=prices, tick_interval_ms=tick_interval_ms)

    # ------------------------------------------------------------ plumbing
    def with_engine(self, fn: Callable[[PaperEngine, int], Any]) -> Any:
        """Run ``fn(engine, now_ms)`` under the engine lock (external actions, inspection)."""
        with self.lock:
            return fn(self.engine, self.clock.now_ms())

    def fail_next(self, method: str, error_class: Any = "network", count: int = 1, ambiguous: bool = False) -> None:
        """Script the next ``count`` calls of ``method`` to fail (see :meth:`FaultInjector.fail_next`)."""
        self.faults.fail_next(method, error_class, count, ambiguous)

    def set_streams_down(self, down: bool = True) -> None:
        """The push connection drops (every ``watch_*`` raises NetworkError) until set up again:
        what a websocket outage looks like to the bot. Updates made meanwhile are not replayed."""
        with self.lock:
            self._streams_down = down
            waiters, self._waiters = self._waiters, []
            for name in self._cursors:
                self._cursors[name] = self._seq  # a reconnected stream starts from now: pushes were lost
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    def _on_engine_event(self, kind: str, key: str) -> None:
        # Runs under self.lock on whichever thread changed the engine: record and wake, never lock.
        self._seq += 1
        self._updates.append((self._seq, kind, key))
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_wake, fut)

    def _rate_check(self, now: int) -> None:
        if not self.max_requests_per_s:
            return
        while self._recent and self._recent[0] <= now - 1000:
            self._recent.popleft()
        if len(self._recent) >= self.max_requests_per_s:
            raise venue_error(self.flavour, "rate_limit", now)
        self._recent.append(now)

    async def _call(self, method: str, args: dict[str, Any], fn: Callable[[int], Any]) -> Any:
        started = time.monotonic()
        error, ambiguous = self.faults.draw(method, args)
        latency = self.faults.latency_ms()
        outcome = ""
        try:
            if self.closed:
                raise paper_error(self.flavour, ccxt.ExchangeClosedByUser, "exchange is closed")
            if latency:
                await asyncio.sleep(latency / 1000)
            if error is not None and not ambiguous:
                raise error
            with self.lock:
                now = self.clock.now_ms()
                self._rate_check(now)
                try:
                    result = fn(now)
                except ccxt.BaseError as refusal:
                    if error is None:
                        raise
                    outcome = f"executed({type(refusal).__name__})"  # the venue answered; the answer was lost
                else:
                    outcome = "executed"
            if error is not None:
                raise error
            outcome = "ok"
            return result
        except BaseException as exc:
            outcome = f"{outcome}+{type(exc).__name__}" if outcome.startswith("executed") else type(exc).__name__
            raise
        finally:
            self.requests.append({"method": method, "args": args, "outcome": outcome, "ambiguous": ambiguous and error is not None, "latency_ms": latency, "elapsed_ms": round((time.monotonic() - started) * 1000, 3), "ts_ms": self.clock.now_ms()})

    def _market(self, symbol: str):
        try:
            return self.engine.markets.resolve(symbol)
        except KeyError:
            raise paper_error(self.flavour, ccxt.BadSymbol, f"does not have market symbol {symbol}") from None

    def _order(self, o: Order) -> dict[str, Any]:
        m = self.engine.markets.resolve(o.symbol)
        fills = self.engine.fills_by_id
        trades = [shapes.trade_dict(self.flavour, fills[t], m, self.engine.config.taker_fee_rate) for t in o.trade_ids]
        return shapes.order_dict(self.flavour, o, m, trades)

    def _position(self, p: Any) -> dict[str, Any]:
        e = self.engine
        m = e.markets.resolve(p.symbol)
        mark = e.marks.get(p.symbol, p.entry_price)
        liq = e.liquidation_price(p) if p.size else None
        upnl = e.unrealized_pnl(p) if p.size else Decimal(0)
        return shapes.position_dict(self.flavour, p, m, mark=mark, liq=liq, upnl=upnl, mmr=e.config.maintenance_margin_rate, hedged=e.config.hedge_mode)

    # -------------------------------------------------------------- prices
    def start(self) -> PaperExchange:
        """Seed marks from the replay at the clock's now and tick every ``tick_interval_ms``."""
        if self.price_replay is None or self._timer is not None:
            return self
        now = self.clock.now_ms()
        with self.lock:
            for sym, price in self.price_replay.prices_at(now).items():
                self.engine.on_mark(sym, price, now)
        self._last_tick_ms = now
        self._timer = self.clock.call_every(self.tick_interval_ms, self._on_tick)
        return self

    def _on_tick(self) -> None:
        now = self.clock.now_ms()
        replay, last = self.price_replay, self._last_tick_ms
        assert replay is not None and last is not None  # ticks run only after start() with a replay
        ticks = replay.ticks_between(last, now)
        self._last_tick_ms = now
        with self.lock:
            for ts, sym, price in ticks:
                self.engine.on_mark(sym, price, ts)

    def stop(self) -> None:
        """Stop the price ticks (orders and positions stay)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def set_mark(self, symbol: str, price: Any) -> None:
        """Drive the mark price directly (tests)."""
        with self.lock:
            self.engine.on_mark(self._market(symbol).symbol, Decimal(str(price)), self.clock.now_ms())

    # ---------------------------------------------------------- ccxt: meta
    async def load_markets(self, reload: bool = False, params: dict | None = None) -> dict[str, dict[str, Any]]:
        """The raw ccxt market dicts of the recorded markets file."""
        if self.markets is None or reload:
            raw = json.loads(self.markets_path.read_text())
            self.markets = raw
            self.symbols = sorted(raw)
        return self.markets

    def market(self, symbol: str) -> dict[str, Any]:
        m = self._market(symbol)
        if self.markets is None:
            self.markets = json.loads(self.markets_path.read_text())
            self.symbols = sorted(self.markets)
        return self.markets[m.symbol]

    def amount_to_precision(self, symbol: str, amount: Any) -> str:
        """Like ccxt: the amount truncated to the step, as text."""
        m = self._market(symbol)
        return format(m.round_qty(Decimal(str(amount))).quantize(m.step_size), "f")

    def price_to_precision(self, symbol: str, price: Any) -> str:
        """Like ccxt: the price rounded to the nearest tick, as text."""
        m = self._market(symbol)
        return format(m.round_price(Decimal(str(price))).quantize(m.tick_size), "f")

    async def close(self) -> None:
        """Like ccxt's close(): later calls fail; stops the price ticks."""
        self.stop()
        self.closed = True

    # -------------------------------------------------------- ccxt: trading
    async def create_order(self, symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None) -> dict[str, Any]:
        params = dict(params or {})
        prob = self.faults.plan.partial_fill_prob

        def run(now: int) -> dict[str, Any]:
            return self._order(self.engine.create_order(symbol, type, side, amount, price, params, now_ms=now, partial_fill_prob=prob))

        return await self._call("create_order", {"symbol": symbol, "type": type, "side": side, "amount": amount, "price": price, "params": params}, run)

    async def cancel_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        """Cancel by id or by ``params["clientOrderId"]`` (``origClientOrderId`` / ``orderLinkId``); ccxt needs the symbol."""
        if symbol is None:
            raise paper_error(self.flavour, ccxt.ArgumentsRequired, "cancelOrder() requires a symbol argument")
        params = dict(params or {})
        cid = params.get("origClientOrderId") or params.get("clientOrderId") or params.get("orderLinkId")

        def run(now: int) -> dict[str, Any]:
            return self._order(self.engine.cancel_order(id, now_ms=now, symbol=symbol, client_id=cid))

        return await self._call("cancel_order", {"id": id, "symbol": symbol, "params": params}, run)

    async def fetch_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        """An order in any state, by id or ``params["clientOrderId"]``. As in ccxt: binance needs the
        symbol; bybit (unified account) needs ``params["acknowledged"] = True`` (or use
        :meth:`fetch_open_order` / :meth:`fetch_closed_order`)."""
        params = dict(params or {})
        if self.flavour == "binance" and symbol is None:
            raise paper_error(self.flavour, ccxt.ArgumentsRequired, "fetchOrder() requires a symbol argument")
        if self.flavour == "bybit" and not params.get("acknowledged"):
            raise paper_error(self.flavour, ccxt.ArgumentsRequired, 'fetchOrder() can only access an order if it is in last 500 orders (of any status) for your account. Set params["acknowledged"] = True to hide self warning. Alternatively, we suggest to use fetchOpenOrder or fetchClosedOrder')
        return await self._lookup("fetch_order", id, symbol, params, None)

    async def fetch_open_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        """The order if it is open, else OrderNotFound."""
        return await self._lookup("fetch_open_order", id, symbol, dict(params or {}), True)

    async def fetch_closed_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        """The order if it is no longer open (filled, canceled, expired), else OrderNotFound."""
        return await self._lookup("fetch_closed_order", id, symbol, dict(params or {}), False)

    async def _lookup(self, method: str, id: str | None, symbol: str | None, params: dict, want_open: bool | None) -> dict[str, Any]:
        cid = params.get("origClientOrderId") or params.get("clientOrderId") or params.get("orderLinkId")

        def run(now: int) -> dict[str, Any]:
            o = self.engine.get_order(id, client_id=cid, symbol=symbol)
            if want_open is not None and (o.status == "open") != want_open:
                raise venue_error(self.flavour, "fetch_unknown", now)
            return self._order(o)

        return await self._call(method, {"id": id, "symbol": symbol, "params": params}, run)

    async def fetch_open_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        """Open orders, stops included, oldest first. Paging: ``limit`` and ``params["cursor"]`` (the
        last id of the previous page; each page's orders carry ``info["nextPageCursor"]``, "" at the end)."""
        params = dict(params or {})
        cursor = int(params.get("cursor") or 0)

        def run(now: int) -> list[dict[str, Any]]:
            orders = [o for o in self.engine.open_order_list(symbol) if int(o.id) > cursor and (since is None or o.created_ms >= since)]
            page = orders[:limit] if limit else orders
            nxt = page[-1].id if limit and len(orders) > len(page) else ""
            out = [self._order(o) for o in page]
            for d in out:
                d["info"]["nextPageCursor"] = nxt
            return out

        return await self._call("fetch_open_orders", {"symbol": symbol, "since": since, "limit": limit, "params": params}, run)

    async def fetch_my_trades(self, symbol: str | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        def run(now: int) -> list[dict[str, Any]]:
            sym = self._market(symbol).symbol if symbol else None
            fills = [f for f in self.engine.fills if (sym is None or f.symbol == sym) and (since is None or f.ts_ms >= since)]
            if limit:
                fills = fills[:limit] if since is not None else fills[-limit:]
            fee_rate = self.engine.config.taker_fee_rate
            return [shapes.trade_dict(self.flavour, f, self.engine.markets.resolve(f.symbol), fee_rate) for f in fills]

        return await self._call("fetch_my_trades", {"symbol": symbol, "since": since, "limit": limit}, run)

    async def set_leverage(self, leverage: int, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        if symbol is None:
            raise paper_error(self.flavour, ccxt.ArgumentsRequired, "setLeverage() requires a symbol argument")

        def run(now: int) -> dict[str, Any]:
            lev = self.engine.set_leverage(symbol, leverage, now_ms=now)
            if self.flavour == "binance":
                return {"symbol": self._market(symbol).id, "leverage": lev, "maxNotionalValue": "1000000"}
            return {"retCode": 0, "retMsg": "OK", "result": {}, "retExtInfo": {}, "time": now}

        return await self._call("set_leverage", {"leverage": leverage, "symbol": symbol}, run)

    async def set_position_mode(self, hedged: bool, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        """Accepted only if it matches the engine's mode (chosen at construction)."""
        if bool(hedged) != self.engine.config.hedge_mode:
            raise paper_error(self.flavour, ccxt.NotSupported, "paper exchange: position mode is fixed at construction (hedge_mode)")
        return await self._call("set_position_mode", {"hedged": hedged}, lambda now: {"code": 200, "msg": "success"})

    # --------------------------------------------------------- ccxt: account
    async def fetch_positions(self, symbols: Iterable[str] | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        syms = list(symbols) if symbols else None
        return await self._call("fetch_positions", {"symbols": syms}, lambda now: [self._position(p) for p in self.engine.position_list(syms)])

    async def fetch_balance(self, params: dict | None = None) -> dict[str, Any]:
        return await self._call("fetch_balance", {}, lambda now: shapes.balance_dict(self.flavour, self.engine.balance(), now))

    async def fetch_ticker(self, symbol: str, params: dict | None = None) -> dict[str, Any]:
        def run(now: int) -> dict[str, Any]:
            m = self._market(symbol)
            return shapes.ticker_dict(m, self.engine._mark(m), now)

        return await self._call("fetch_ticker", {"symbol": symbol}, run)

    async def fetch_mark_price(self, symbol: str, params: dict | None = None) -> dict[str, Any]:
        def run(now: int) -> dict[str, Any]:
            m = self._market(symbol)
            return shapes.ticker_dict(m, self.engine._mark(m), now)

        return await self._call("fetch_mark_price", {"symbol": symbol}, run)

    async def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[list[Any]]:
        """ccxt's candles (``[ts, open, high, low, close, volume]``) of the marks this exchange replayed;
        none without a price replay (marks set by hand have no history to serve)."""
        tf_ms = _TIMEFRAMES.get(timeframe)
        if tf_ms is None:
            raise paper_error(self.flavour, ccxt.BadRequest, f"unsupported timeframe {timeframe!r}; known: {', '.join(_TIMEFRAMES)}")

        def run(now: int) -> list[list[Any]]:
            m = self._market(symbol)
            replay = self.price_replay
            if replay is None or m.symbol not in replay.series:
                return []
            n = min(int(limit or 500), 1500)
            start = since if since is not None else now - n * tf_ms
            rows = replay.candles(m.symbol, tf_ms, start, min(now, start + n * tf_ms), n)
            return [[ts, float(o), float(h), float(low), float(c), v] for ts, o, h, low, c, v in rows]

        return await self._call("fetch_ohlcv", {"symbol": symbol, "timeframe": timeframe, "since": since, "limit": limit}, run)

    # ---------------------------------------------------------- ccxt pro
    async def _watch(self, name: str, kind: str, match: Callable[[str], bool], build: Callable[[list[str]], list[dict]]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        while True:
            if self._streams_down:
                raise paper_error(self.flavour, ccxt.NetworkError, "paper exchange: stream connection lost")
            with self.lock:
                cursor = self._cursors.setdefault((name,), self._seq)
                keys = list(dict.fromkeys(k for seq, kd, k in self._updates if seq > cursor and kd == kind and match(k)))
                self._cursors[(name,)] = self._seq
                if keys:
                    return build(keys)
                fut = loop.create_future()
                self._waiters.append((loop, fut))
            await fut

    async def watch_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        """Orders updated since the previous call (the first call waits for the next update)."""
        sym = self._market(symbol).symbol if symbol else None
        orders = self.engine.orders
        return await self._watch(f"orders:{sym}", "order", lambda k: sym is None or orders[k].symbol == sym, lambda ks: [self._order(orders[k]) for k in ks])

    async def watch_positions(self, symbols: Iterable[str] | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        """Positions updated since the previous call; a closed one has ``contracts`` 0."""
        wanted = {self._market(s).symbol for s in symbols} if symbols else None
        key = "positions:" + ",".join(sorted(wanted or []))

        def build(keys: list[str]) -> list[dict[str, Any]]:
            recs = [self.engine.position_record(k) for k in keys]
            return [self._position(p) for p in recs if p is not None]

        return await self._watch(key, "position", lambda k: wanted is None or k.split("|")[0] in wanted, build)
