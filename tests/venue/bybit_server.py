"""A Bybit v5-like venue (category linear, unified account) on loopback, for real ccxt ``bybit``.

The Bybit side of the venue-like server (:mod:`tests.venue.binance_server` is
the Binance one; same shape, same :class:`~tests.venue.timeline.Timeline`).
Only what ccxt 4.5.90's ``bybit.py`` sends for the bot's flows is answered:

* **Market data**: ``/v5/market/instruments-info`` (the real instrument
  records of ``markets/bybit.json``; ``status=PreLaunch`` lists none),
  ``/v5/market/tickers`` (one symbol, or every linear one in one call, each
  with ``markPrice``), ``/v5/market/time``. Marks are set by the test or
  replayed from real history (:meth:`BybitVenueServer.replay`, :func:`history_series`).
* **Orders** on ``/v5/order/create``: market orders (IOC, filled at the mark;
  the answer is ``{orderId, orderLinkId}`` only, as Bybit's), conditional
  orders (``triggerPrice``, ``triggerDirection`` 1 rises / 2 falls,
  ``triggerBy=MarkPrice`` only, ``reduceOnly``, ``closeOnTrigger``,
  ``orderLinkId``, ``positionIdx``) that fire on the mark; a trigger price
  the mark is already through answers 110092 / 110093 with the current price
  in the message. ``/v5/order/cancel`` (110001 when gone).
* **Listings**: ``/v5/order/realtime`` (open orders newest first, at most 50
  a page, ``nextPageCursor``; by ``orderId`` / ``orderLinkId`` it also shows
  recently closed orders, unless :meth:`realtime_open_only` models Bybit's
  "open orders only" state after a restart of theirs), ``/v5/order/history``
  (closed orders, visible ``history_delay_ms`` after they ended),
  ``/v5/position/list`` (a flat one-way symbol asked by name lists one row of
  size 0 with ``positionIdx`` 0; in hedge mode two rows, 1 and 2: how the
  position mode is read), ``/v5/execution/list``, ``/v5/account/wallet-balance``,
  ``/v5/asset/coin/query-info`` (load_markets' currencies), and
  ``/v5/position/switch-mode``, ``/v5/position/set-leverage``.
* **Position-attached stop** on ``/v5/position/trading-stop``: ``stopLoss`` sets the
  position's stop (the whole position, ``slTriggerBy=MarkPrice``, fires on the mark),
  another price amends that same stop in place, "0" removes it; it is listed as a
  conditional order with ``stopOrderType`` StopLoss and no ``orderLinkId``, shown on
  the position row, and removed when the position is gone (:attr:`attached_stops`).
* **Signing** as v5: ``X-BAPI-API-KEY``, ``-TIMESTAMP``, ``-RECV-WINDOW``,
  ``-SIGN`` = HMAC-SHA256(timestamp + key + recvWindow + query or body): 10003 / 10004 / 10002.
* **Limits** (:class:`BybitLimits`): per endpoint and second (order create /
  cancel 10, queries 50) over the limit: HTTP 200 ``retCode`` 10006 "Too many
  visits!" with ``X-Bapi-Limit*`` headers; the IP limit (600 requests per
  5 s) broken: HTTP 403 with a plain-text body for ``ban_ms`` (Bybit asks
  clients to stop for at least 10 minutes).
* **Faults and a human**: :meth:`fail_next` (a retCode, or an HTTP status),
  :meth:`late_next`, :meth:`ban`; :meth:`human_cancel`, :meth:`human_close`,
  :meth:`human_order` (any order a person places, e.g. conditional entries
  without reduceOnly), :meth:`set_ticker_lag` (tickers answer a mark that
  lags the one the venue triggers on), ``partial_fill_symbols`` (market
  entries there fill in part).

Matching and account are :class:`~adapters.paper.engine.PaperEngine` with the
bybit flavour (the honest shortcut: the point is the wire and the venue's
behaviour over time). Every loop is bounded; the server ends with ``stop()``.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
from aiohttp import web

from adapters.markets import Markets
from adapters.paper.engine import PaperEngine
from adapters.paper.model import CANCELED, CLOSED, EXPIRED, FALLING, OPEN, Order
from tests.venue.binance_server import SHARED, engine_snapshot, synthetic_markets
from tests.venue.timeline import Request, Timeline

D = Decimal
MARKETS_FILE = SHARED / "data" / "markets" / "bybit.json"
HISTORY_FILE = SHARED / "data" / "prices" / "btc-perp-1m-2022-01.csv"

#: Starting marks near the recorded instruments' price filters.
DEFAULT_MARKS = {"BTC/USDT:USDT": "40000", "ETH/USDT:USDT": "2000", "LTC/USDT:USDT": "70", "ADA/USDT:USDT": "0.3", "XRP/USDT:USDT": "0.6", "DOGE/USDT:USDT": "0.08", "TRX/USDT:USDT": "0.1", "ZRX/USDT:USDT": "0.3"}

#: ``urls["api"]`` keys of ccxt 4.5.90's bybit: ``public`` and ``private`` carry every v5 request.
URL_KEYS = ("spot", "futures", "v2", "public", "private")


def ccxt_urls(base_url: str) -> dict[str, Any]:
    """The ``[exchange.ccxt_options] urls`` that send every request to ``base_url`` (REST; ccxt.pro's
    v5 websocket bases too, which this server refuses: streams down)."""
    ws = base_url.replace("http://", "ws://", 1)
    return {"api": {**{k: base_url for k in URL_KEYS}, "ws": {"public": {"linear": f"{ws}/v5/public/linear"}, "private": {"contract": f"{ws}/v5/private"}}}}


def urls_toml(base_url: str) -> str:
    """:func:`ccxt_urls` as the TOML section a config would carry."""
    api = ccxt_urls(base_url)["api"]
    inner = ", ".join(f'{k} = "{api[k]}"' for k in URL_KEYS)
    ws = api["ws"]
    return f'[exchange.ccxt_options]\nurls = {{ api = {{ {inner}, ws = {{ public = {{ linear = "{ws["public"]["linear"]}" }}, private = {{ contract = "{ws["private"]["contract"]}" }} }} }} }}\n'


def history_series(symbol: str, start: Any, n: int, *, file: Path = HISTORY_FILE, offset: int = 0) -> list[tuple[str, Decimal]]:
    """``n`` marks for ``symbol`` from real 1-minute closes (FTX BTC-PERP, January 2022), scaled so the
    first is ``start`` and rounded to 0.1: the shape of a real path at the price the test wants."""
    closes: list[Decimal] = []
    with file.open() as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i < offset:
                continue
            closes.append(D(row["close"]))
            if len(closes) >= n:
                break
    scale = D(str(start)) / closes[0]
    return [(symbol, (c * scale).quantize(D("0.1"))) for c in closes]


#: Per route: (rate-limit group, requests per second per UID). Bybit v5 "rate limit" page, default tier.
ROUTES: dict[str, tuple[str, int]] = {
    "GET /v5/market/time": ("public", 0),
    "GET /v5/market/instruments-info": ("public", 0),
    "GET /v5/market/tickers": ("public", 0),
    "GET /v5/asset/coin/query-info": ("asset", 5),
    "GET /v5/account/wallet-balance": ("wallet", 50),
    "GET /v5/account/info": ("account", 50),
    "GET /v5/order/realtime": ("order-query", 50),
    "GET /v5/order/history": ("order-history", 50),
    "GET /v5/execution/list": ("execution", 50),
    "GET /v5/position/list": ("position", 50),
    "POST /v5/order/create": ("order-create", 10),
    "POST /v5/order/cancel": ("order-cancel", 10),
    "POST /v5/position/trading-stop": ("trading-stop", 10),
    "POST /v5/position/switch-mode": ("switch-mode", 10),
    "POST /v5/position/set-leverage": ("set-leverage", 10),
    "POST /v5/account/set-margin-mode": ("set-margin-mode", 5),
}
ORDER_ROUTES = frozenset({"POST /v5/order/create"})
PUBLIC_ROUTES = frozenset(r for r, (group, _) in ROUTES.items() if group == "public")
#: Bybit's realtime list holds open orders and (UTA, linear) the most recent closed ones.
RECENT_CLOSED = 500
PAGE_MAX = 50


@dataclasses.dataclass
class BybitLimits:
    """Bybit v5's limits: per UID and endpoint per second (:data:`ROUTES`), per IP per 5 s."""

    ip_5s: int = 600
    ban_ms: int = 600_000  # "stop sending requests for at least 10 minutes"
    per_second_scale: float = 1.0  # < 1 tightens every endpoint's limit (tests)


@dataclasses.dataclass
class _Fault:
    when: Callable[[dict[str, str]], bool]
    code: int | None = None
    msg: str = ""
    status: int = 200
    delay_s: float = 0.0


class VenueError(Exception):
    """A refusal in Bybit's words: HTTP status, retCode, retMsg."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _num(value: Decimal | None) -> str:
    return "0" if value is None else format(value, "f")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


class BybitVenueServer:
    """The venue: engine, wire, limits, faults, records. Thread-safe admin methods."""

    exchange_name = "bybit"

    def __init__(
        self,
        *,
        markets_file: Path = MARKETS_FILE,
        marks: dict[str, str] | None = None,
        api_key: str | None = None,
        secret: str | None = None,
        limits: BybitLimits | None = None,
        latency_ms: int = 0,
        balance: str = "100000",
        hedge_mode: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_symbols: int = 0,
        history_delay_ms: int = 0,
        partial_fill_symbols: Iterable[str] = (),
    ) -> None:
        raw = json.loads(markets_file.read_text())
        self.raw_markets: dict[str, dict[str, Any]] = {s: m for s, m in raw.items() if m.get("linear") and m.get("type") == "swap" and m.get("settle") == "USDT"}
        self.raw_markets.update(synthetic_markets(self.raw_markets, extra_symbols))
        for m in self.raw_markets.values():  # synthetic clones carry the template's raw symbol
            m["info"]["symbol"], m["info"]["baseCoin"] = m["id"], m["base"]
        self.markets = Markets.from_ccxt(self.raw_markets)
        self.engine = PaperEngine(self.markets, flavour="bybit", initial_balance=D(balance), slippage_bps=D(0), hedge_mode=hedge_mode, max_stop_orders_per_symbol=1000)
        self.api_key, self.secret = api_key, secret
        self.limits = limits or BybitLimits()
        self.latency_ms = latency_ms
        self.hedge_mode = hedge_mode
        self.history_delay_ms = history_delay_ms
        #: Market entries on these symbols fill only in part (the IOC remainder is cancelled).
        self.partial_fill_symbols = {self.markets.resolve(x).symbol for x in partial_fill_symbols}
        self.host, self.port = host, port
        self.timeline = Timeline(entry_route="POST /v5/order/create", client_id_key="orderLinkId")
        self._lock = threading.RLock()
        self._faults: dict[str, list[_Fault]] = {}
        self._ip_hits: list[int] = []
        self._route_hits: dict[str, list[int]] = {}
        self._banned_until_ms = 0
        self._close_on_trigger: set[str] = set()
        #: Position-attached stops (trading-stop ``stopLoss``): (symbol, positionIdx) -> engine order id.
        self.attached_stops: dict[tuple[str, int], str] = {}
        self._last_created = 0
        self._realtime_open_only = False
        self._ticker_lag: dict[str, Decimal] = {}
        self._exec_ids = itertools.count(1)
        self._exec_id_of: dict[str, str] = {}
        self.leverage: dict[str, str] = {}
        #: The unified account's one margin mode (a new account is cross: REGULAR_MARGIN).
        self.margin_mode = "REGULAR_MARGIN"
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopped = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        now = _now_ms()
        start_marks = dict(marks or DEFAULT_MARKS)
        for symbol in self.raw_markets:
            start_marks.setdefault(symbol, DEFAULT_MARKS["BTC/USDT:USDT"])
        for symbol, price in start_marks.items():
            if symbol in self.raw_markets or symbol in {m["id"] for m in self.raw_markets.values()}:
                self.engine.on_mark(symbol, D(price), now)
        self.engine.add_listener(lambda kind, key: self._snapshot())
        self._snapshot()

    # ================================================================ life
    def start(self) -> BybitVenueServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                failure.append(exc)
            finally:
                ready.set()
            try:
                loop.run_until_complete(self._until_stopped())
            finally:
                loop.run_until_complete(self._shutdown())
                loop.close()

        self._thread = threading.Thread(target=run, name="bybit-venue", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"venue server did not start: {failure}")
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/admin/{name}", self._admin)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://{self.host}:{self.port}"

    async def _until_stopped(self) -> None:
        while not self._stopped.is_set():
            await asyncio.sleep(0.02)

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> BybitVenueServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def urls_toml(self) -> str:
        return urls_toml(self.url)

    # =============================================================== admin
    def set_mark(self, symbol: str, price: Any) -> None:
        """A new mark: conditional orders crossed by it fire (and fill at the mark)."""
        with self._lock:
            self.engine.on_mark(symbol, D(str(price)), _now_ms())
            self._drop_orphan_stops(_now_ms())

    def mark(self, symbol: str) -> Decimal:
        with self._lock:
            return self.engine.marks[self.markets.resolve(symbol).symbol]

    def replay(self, series: Iterable[tuple[str, Any]], every_ms: int) -> threading.Event:
        """Marks from ``series`` ((symbol, price) pairs, e.g. :func:`history_series`), one every
        ``every_ms`` on the server's loop; the returned event is set when the series has ended."""
        done = threading.Event()
        items = list(series)

        async def run() -> None:
            try:
                for symbol, price in items:
                    if self._stopped.is_set():
                        return
                    self.set_mark(symbol, price)
                    await asyncio.sleep(every_ms / 1000)
            finally:
                done.set()

        self._submit(run())
        return done

    def set_ticker_lag(self, symbol: str, price: Any | None) -> None:
        """Tickers show ``price`` as ``symbol``'s mark (None: the live mark again) while orders are
        checked and triggered against the live one: a snapshot that lags the venue's own price."""
        with self._lock:
            sym = self.markets.resolve(symbol).symbol
            if price is None:
                self._ticker_lag.pop(sym, None)
            else:
                self._ticker_lag[sym] = D(str(price))

    def realtime_open_only(self, on: bool = True) -> None:
        """``/v5/order/realtime`` lists open orders only, also when asked by id (Bybit documents
        this state after a restart of theirs): a filled order is then only in the history."""
        with self._lock:
            self._realtime_open_only = on

    def human_close(self, symbol: str) -> list[Order]:
        """A human closes the position on ``symbol`` at market (its conditional orders stay)."""
        with self._lock:
            closed = self.engine.external_close_position(symbol, self._created_ms())
            self._drop_orphan_stops(_now_ms())
            return closed

    def human_cancel(self, symbol: str | None = None, *, order_id: str | None = None) -> list[str]:
        """A human cancels one order (wire id) or every conditional order on ``symbol``; their wire ids."""
        with self._lock:
            ids = [self._eid(order_id)] if order_id else [o.id for o in self.engine.open_order_list(symbol) if o.is_stop]
            for eid in ids:
                self.engine.external_cancel_order(eid, _now_ms())
            return [self._wid(e) for e in ids]

    def human_order(self, symbol: str, side: str, qty: Any, *, trigger: Any = None, direction: int | None = None, reduce_only: bool = False, close_on_trigger: bool = False, link_id: str = "", limit: Any = None) -> str:
        """A person places an order on the venue's UI: a conditional one (``trigger``, ``direction``
        1 rises / 2 falls), a limit one, or a market one; its wire id."""
        params: dict[str, Any] = {"reduceOnly": reduce_only or close_on_trigger}
        if link_id:
            params["orderLinkId"] = link_id
        if trigger is not None:
            params.update(triggerPrice=str(trigger), triggerDirection=direction or (2 if side == "sell" else 1))
        if self.hedge_mode:
            params["positionIdx"] = 1 if (side == "buy") != (reduce_only or close_on_trigger) else 2
        with self._lock:
            o = self.engine.create_order(symbol, "limit" if limit is not None else "market", side, D(str(qty)), D(str(limit)) if limit is not None else None, params, now_ms=self._created_ms(), origin="external")
            if close_on_trigger:
                self._close_on_trigger.add(o.id)
            return self._wid(o.id)

    def fail_next(self, route: str, n: int = 1, *, code: int, msg: str = "", status: int = 200, when: Callable[[dict[str, str]], bool] | None = None) -> None:
        """The next ``n`` requests on ``route`` (``"POST /v5/order/create"``) matching ``when`` are
        refused with ``retCode`` ``code`` (HTTP 200, as Bybit) or with HTTP ``status`` (a plain-text
        body for 403), and nothing is executed."""
        with self._lock:
            self._faults.setdefault(route, []).extend(_Fault(when or (lambda p: True), code=code, msg=msg or f"injected {code}", status=status) for _ in range(n))

    def late_next(self, route: str, n: int = 1, *, delay_s: float, when: Callable[[dict[str, str]], bool] | None = None) -> None:
        """The next ``n`` requests on ``route`` are executed at once and answered ``delay_s`` later."""
        with self._lock:
            self._faults.setdefault(route, []).extend(_Fault(when or (lambda p: True), delay_s=delay_s) for _ in range(n))

    def ban(self, ms: int | None = None) -> None:
        """The IP limit broken: HTTP 403 to everything for ``ms`` (default the limits' ``ban_ms``)."""
        with self._lock:
            self._banned_until_ms = _now_ms() + (self.limits.ban_ms if ms is None else ms)

    def live_stops(self, symbol: str | None = None) -> list[Order]:
        """Live conditional orders (all of them, anyone's)."""
        with self._lock:
            return [o for o in self.engine.open_order_list(symbol) if o.is_stop]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        with self._lock:
            return list(self.engine.open_order_list(symbol))

    def positions(self) -> dict[tuple[str, str], Decimal]:
        with self._lock:
            return {(self.markets.resolve(p.symbol).id, p.side): p.size for p in self.engine.positions.values()}

    def _submit(self, coro: Any) -> None:
        assert self._loop is not None, "start() the server first"

        def spawn() -> None:
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._loop.call_soon_threadsafe(spawn)

    def _created_ms(self) -> int:
        """A creation time after every earlier one (Bybit's list order is its creation order)."""
        self._last_created = max(_now_ms(), self._last_created + 1)
        return self._last_created

    # ============================================================ timeline
    def _snapshot(self) -> None:
        self.timeline.record_state(engine_snapshot(self.engine, self.markets, hedge_mode=self.hedge_mode))

    # ============================================================= the wire
    async def _handle(self, request: web.Request) -> web.Response:
        t0 = _now_ms()
        body = await request.text() if request.can_read_body else ""
        raw_query = request.rel_url.raw_query_string
        params: dict[str, Any] = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        if body:
            try:
                params.update(json.loads(body))
            except ValueError:
                pass
        signed_payload = body if request.method == "POST" else raw_query
        route = f"{request.method} {request.path}"
        text_params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}
        fault: str | None = None
        late = 0.0
        status, code = 200, 0
        payload: Any
        try:
            with self._lock:
                self._charge_limits(t0, route)
                if route not in ROUTES:
                    raise VenueError(404, 10000, f"route not found: {route}")
                self._authenticate(route, request.headers, signed_payload, t0)
                item = self._take_fault(route, text_params)
                if item is not None and item.code is not None:
                    fault = "fail"
                    raise VenueError(item.status, item.code, item.msg)
                if item is not None:
                    fault, late = "late", item.delay_s
                payload = self._envelope(self._route(route, params, t0), t0)
        except VenueError as err:
            status, code = err.status, err.code
            if err.code == 10006 or err.status == 403:
                fault = fault or ("ban" if err.status == 403 else "limit")
            payload = None if err.status in (403, 404) else self._envelope({}, t0, code=err.code, msg=err.msg)
        delay = self.latency_ms / 1000 + late
        if delay:
            await asyncio.sleep(delay)
        self.timeline.record_request(Request(t0, _now_ms(), request.method, request.path, text_params, status, code or None, 1, 1 if route in ORDER_ROUTES else 0, fault))
        headers = self._limit_headers(route, t0)
        if payload is None:  # Bybit's 403 (and an unknown path) is no JSON envelope
            text = "403 Forbidden: access too frequent" if status == 403 else "404 page not found"
            return web.Response(status=status, text=text, headers=headers)
        return web.Response(status=status, text=json.dumps(payload, default=str, separators=(",", ":")), content_type="application/json", headers=headers)

    @staticmethod
    def _envelope(result: Any, now: int, *, code: int = 0, msg: str = "OK") -> dict[str, Any]:
        return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}

    def _charge_limits(self, now: int, route: str) -> None:
        """The IP limit (every request counts; broken: 403 and a ban) and the per-endpoint one (10006)."""
        if now < self._banned_until_ms:
            raise VenueError(403, 403, "access too frequent")
        self._ip_hits = [t for t in self._ip_hits if t > now - 5_000]
        self._ip_hits.append(now)
        if len(self._ip_hits) > self.limits.ip_5s:
            self._banned_until_ms = now + self.limits.ban_ms
            raise VenueError(403, 403, "access too frequent")
        group, per_second = ROUTES.get(route, ("public", 0))
        if not per_second:
            return
        hits = [t for t in self._route_hits.get(group, []) if t > now - 1_000]
        hits.append(now)
        self._route_hits[group] = hits
        if len(hits) > max(1, int(per_second * self.limits.per_second_scale)):
            raise VenueError(200, 10006, "Too many visits!")

    def _limit_headers(self, route: str, now: int) -> dict[str, str]:
        group, per_second = ROUTES.get(route, ("public", 0))
        if not per_second:
            return {}
        with self._lock:
            used = sum(1 for t in self._route_hits.get(group, []) if t > now - 1_000)
        limit = max(1, int(per_second * self.limits.per_second_scale))
        return {"X-Bapi-Limit": str(limit), "X-Bapi-Limit-Status": str(max(0, limit - used)), "X-Bapi-Limit-Reset-Timestamp": str(now + 1_000)}

    def _authenticate(self, route: str, headers: Any, payload: str, now: int) -> None:
        if route in PUBLIC_ROUTES:
            return
        key = headers.get("X-BAPI-API-KEY")
        if not key or (self.api_key is not None and key != self.api_key):
            raise VenueError(401, 10003, "API key is invalid.")
        ts, window, sign = headers.get("X-BAPI-TIMESTAMP", ""), headers.get("X-BAPI-RECV-WINDOW", "5000"), headers.get("X-BAPI-SIGN", "")
        if self.secret is not None:
            expected = hmac.new(self.secret.encode(), f"{ts}{key}{window}{payload}".encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, sign):
                raise VenueError(401, 10004, "error sign! origin_string[...]")
        if not ts.isdigit() or int(ts) > now + 1000 or now - int(ts) > int(window or 5000):
            raise VenueError(200, 10002, f"invalid request, please check your server timestamp or recv_window param. req_timestamp[{ts}],server_timestamp[{now}],recv_window[{window}]")

    def _take_fault(self, route: str, params: dict[str, str]) -> _Fault | None:
        queue = self._faults.get(route) or []
        for i, item in enumerate(queue):
            if item.when(params):
                return queue.pop(i)
        return None

    # ---------------------------------------------------------- routing
    def _route(self, route: str, p: dict[str, Any], now: int) -> Any:
        if route not in ("GET /v5/market/time", "GET /v5/market/instruments-info", "GET /v5/asset/coin/query-info", "GET /v5/account/wallet-balance", "GET /v5/account/info") and p.get("category", "linear") != "linear":
            raise VenueError(200, 10001, f"params error: category {p.get('category')} not served by this venue")
        handler: Callable[[], Any] = {
            "GET /v5/market/time": lambda: {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)},
            "GET /v5/market/instruments-info": lambda: self._instruments(p),
            "GET /v5/market/tickers": lambda: self._tickers(p, now),
            "GET /v5/asset/coin/query-info": lambda: {"rows": [{"name": c, "coin": c, "remainAmount": "0", "chains": []} for c in sorted({"USDT", *(m["base"] for m in self.raw_markets.values())})]},
            "GET /v5/account/wallet-balance": lambda: self._wallet(now),
            "GET /v5/account/info": lambda: {"unifiedMarginStatus": 6, "marginMode": self.margin_mode, "isMasterTrader": False, "spotHedgingStatus": "OFF", "updatedTime": str(now), "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0},
            "GET /v5/order/realtime": lambda: self._realtime(p),
            "GET /v5/order/history": lambda: self._history(p, now),
            "GET /v5/execution/list": lambda: self._executions(p),
            "GET /v5/position/list": lambda: self._position_list(p),
            "POST /v5/order/create": lambda: self._create(p),
            "POST /v5/order/cancel": lambda: self._cancel(p, now),
            "POST /v5/position/trading-stop": lambda: self._trading_stop(p, now),
            "POST /v5/position/switch-mode": lambda: self._switch_mode(p),
            "POST /v5/position/set-leverage": lambda: self._set_leverage(p, now),
            "POST /v5/account/set-margin-mode": lambda: self._set_margin_mode(p),
        }[route]
        try:
            return handler()
        except ccxt.BaseError as exc:  # the engine's refusals carry Bybit's body after the exchange id
            raise _wire_error(exc) from None
        finally:
            self._drop_orphan_stops(now)

    def _symbol(self, p: dict[str, Any], required: bool = True) -> str | None:
        sid = p.get("symbol")
        if not sid:
            if required:
                raise VenueError(200, 10001, "params error: symbol is required")
            return None
        try:
            return self.markets.resolve(str(sid)).symbol
        except KeyError:
            raise VenueError(200, 10001, "params error: symbol invalid") from None

    def _id(self, unified: str) -> str:
        return self.markets.resolve(unified).id

    @staticmethod
    def _wid(eid: str) -> str:
        """The wire id of an engine order (Bybit's linear ids are UUIDs)."""
        return f"b7a4c0de-0000-4000-8000-{int(eid):012d}"

    @staticmethod
    def _eid(wid: str) -> str:
        try:
            return str(int(str(wid).rsplit("-", 1)[-1]))
        except ValueError:
            return "0"

    # ------------------------------------------------------- market data
    def _instruments(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("status") == "PreLaunch":
            return {"category": "linear", "list": [], "nextPageCursor": ""}
        return {"category": "linear", "list": [m["info"] for m in self.raw_markets.values()], "nextPageCursor": ""}

    def _ticker(self, unified: str, now: int) -> dict[str, Any]:
        mark = _num(self._ticker_lag.get(unified, self.engine.marks.get(unified)))
        return {
            "symbol": self._id(unified), "lastPrice": mark, "indexPrice": mark, "markPrice": mark, "prevPrice24h": mark, "price24hPcnt": "0", "highPrice24h": mark,
            "lowPrice24h": mark, "prevPrice1h": mark, "openInterest": "1000", "openInterestValue": "1000", "turnover24h": "1", "volume24h": "1", "fundingRate": "0.0001",
            "nextFundingTime": str(now + 3_600_000), "predictedDeliveryPrice": "", "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0", "ask1Size": "1",
            "bid1Price": mark, "ask1Price": mark, "bid1Size": "1", "basis": "",
        }  # fmt: skip

    def _tickers(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        unified = self._symbol(p, required=False)
        return {"category": "linear", "list": [self._ticker(s, now) for s in ([unified] if unified else self.engine.marks)]}

    # ----------------------------------------------------------- account
    def _wallet(self, now: int) -> dict[str, Any]:
        b = self.engine.balance()
        coin = {"coin": "USDT", "equity": _num(b["wallet"] + b["unrealized"]), "walletBalance": _num(b["wallet"]), "unrealisedPnl": _num(b["unrealized"]), "totalPositionIM": _num(b["used"]), "totalOrderIM": "0", "locked": "0", "availableToWithdraw": _num(b["free"]), "borrowAmount": "0", "accruedInterest": "0"}
        return {"list": [{"accountType": "UNIFIED", "totalEquity": coin["equity"], "totalWalletBalance": coin["walletBalance"], "totalAvailableBalance": coin["availableToWithdraw"], "coin": [coin]}]}

    def _position_list(self, p: dict[str, Any]) -> dict[str, Any]:
        wanted = self._symbol(p, required=False)
        rows = []
        for pos in self.engine.positions.values():
            if wanted and pos.symbol != wanted:
                continue
            rows.append(self._position_row(pos.symbol, pos.pos_side, pos))
        if wanted:  # asked by name, Bybit lists the flat slots too: one (0) one-way, two (1, 2) in hedge mode
            held = {r["positionIdx"] for r in rows}
            for idx, side in ((1, "long"), (2, "short")) if self.hedge_mode else ((0, "both"),):
                if idx not in held:
                    rows.append(self._position_row(wanted, side, None))
        return {"category": "linear", "list": rows, "nextPageCursor": ""}

    def _position_row(self, unified: str, pos_side: str, pos: Any) -> dict[str, Any]:
        mark = self.engine.marks.get(unified, D(0))
        idx = {"both": 0, "long": 1, "short": 2}[pos_side]
        size = pos.size if pos is not None else D(0)
        side = ("Buy" if pos.side == "long" else "Sell") if pos is not None else ""
        upnl = self.engine.unrealized_pnl(pos) if pos is not None else D(0)
        liq = _num(self.engine.liquidation_price(pos)) if pos is not None else ""
        return {
            "positionIdx": idx, "riskId": 1, "riskLimitValue": "2000000", "symbol": self._id(unified), "side": side, "size": _num(size), "avgPrice": _num(pos.entry_price) if pos is not None else "0",
            "positionValue": _num(size * (pos.entry_price if pos is not None else D(0))), "tradeMode": 0, "positionStatus": "Normal", "autoAddMargin": 0, "adlRankIndicator": 2 if size else 0,
            "leverage": self.leverage.get(self._id(unified), "10"), "positionBalance": _num(pos.margin) if pos is not None else "0", "markPrice": _num(mark), "liqPrice": liq, "bustPrice": "",
            "positionMM": "0", "positionIM": _num(pos.margin) if pos is not None else "0", "tpslMode": "Full", "takeProfit": "", "stopLoss": self._attached_price(unified, idx), "trailingStop": "0",
            "unrealisedPnl": _num(upnl), "curRealisedPnl": "0", "cumRealisedPnl": _num(pos.realized_pnl) if pos is not None else "0", "seq": 1, "isReduceOnly": False,
            "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "", "sessionAvgPrice": "", "createdTime": str(pos.opened_ms if pos is not None else 0), "updatedTime": str(pos.updated_ms if pos is not None else 0),
        }  # fmt: skip

    def _switch_mode(self, p: dict[str, Any]) -> dict[str, Any]:
        hedge = str(p.get("mode")) == "3"
        if hedge == self.hedge_mode:
            raise VenueError(200, 110025, "Position mode is not modified")
        if self.engine.positions or self.engine.open_orders:
            raise VenueError(200, 110024, "You have an existing position, so the position mode cannot be switched.")
        self.hedge_mode = hedge
        self.engine.config.hedge_mode = hedge
        return {}

    def _set_margin_mode(self, p: dict[str, Any]) -> dict[str, Any]:
        mode = str(p.get("setMarginMode") or "")
        if mode not in ("ISOLATED_MARGIN", "REGULAR_MARGIN", "PORTFOLIO_MARGIN"):
            raise VenueError(200, 10001, "params error: setMarginMode invalid")
        if mode != self.margin_mode and any(pos.size != 0 for pos in self.engine.positions.values()):
            raise VenueError(200, 3400045, "Set margin mode failed: positions are open")
        self.margin_mode = mode
        return {"reasons": []}

    def _set_leverage(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        unified = self._symbol(p) or ""
        lev = str(p.get("buyLeverage") or "")
        if self.leverage.get(self._id(unified), "10") == lev:
            raise VenueError(200, 110043, "leverage not modified")
        self.engine.set_leverage(unified, int(D(lev)), now_ms=now)
        self.leverage[self._id(unified)] = lev
        return {}

    # ------------------------------------------------------------ orders
    def _create(self, p: dict[str, Any]) -> dict[str, Any]:
        unified = self._symbol(p) or ""
        kind = str(p.get("orderType", ""))
        if kind not in ("Market", "Limit"):
            raise VenueError(200, 10001, "params error: orderType invalid")
        link = str(p.get("orderLinkId") or "")
        if link and link in self.engine.client_ids:
            raise VenueError(200, 110072, "OrderLinkedID is duplicate")
        close_on_trigger = _flag(p.get("closeOnTrigger"))
        params: dict[str, Any] = {"reduceOnly": _flag(p.get("reduceOnly")) or close_on_trigger, "orderLinkId": link}
        if "positionIdx" in p:
            params["positionIdx"] = str(p["positionIdx"])
        if p.get("triggerPrice") not in (None, ""):
            if str(p.get("triggerBy") or "LastPrice") != "MarkPrice":
                raise VenueError(200, 10001, "test venue: only triggerBy=MarkPrice is modelled")
            if str(p.get("triggerDirection")) not in ("1", "2"):
                raise VenueError(200, 10001, "params error: triggerDirection invalid")
            params.update(triggerPrice=str(p["triggerPrice"]), triggerDirection=str(p["triggerDirection"]))
        side = str(p.get("side", "")).lower()
        price = D(str(p["price"])) if kind == "Limit" else None
        partial = 1.0 if unified in self.partial_fill_symbols and not params["reduceOnly"] and "triggerPrice" not in params else 0.0
        o = self.engine.create_order(unified, kind.lower(), side, D(str(p.get("qty") or "0")), price, params, now_ms=self._created_ms(), partial_fill_prob=partial)
        if close_on_trigger:
            self._close_on_trigger.add(o.id)
        return {"orderId": self._wid(o.id), "orderLinkId": o.client_id}

    # ------------------------------------------------------------ position-attached stop
    def _trading_stop(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        """``/v5/position/trading-stop``: ``stopLoss`` sets the position's stop (Full mode: the whole
        position, closed at market when the *mark* reaches it, ``slTriggerBy=MarkPrice``), a new price
        amends that same stop in place, "0" removes it. ``takeProfit`` "0" (clear) is accepted; a take-profit
        price is not modelled."""
        unified = self._symbol(p) or ""
        idx = int(str(p.get("positionIdx") or 0))
        side = {0: None, 1: "long", 2: "short"}.get(idx, "?")
        if side == "?" or (self.hedge_mode != (idx != 0)):
            raise VenueError(200, 10001, "params error: position idx not match position mode")
        if str(p.get("takeProfit") or "0") not in ("0", ""):
            raise VenueError(200, 10001, "test venue: a take-profit on the position is not modelled")
        sl = p.get("stopLoss")
        if sl in (None, ""):
            return {}
        pos = next((q for q in self.engine.positions.values() if q.symbol == unified and q.size != 0 and (side is None or q.pos_side == side)), None)
        key = (unified, idx)
        live = self.engine.orders.get(self.attached_stops.get(key, ""))
        live = live if live is not None and live.status == OPEN else None
        if str(sl) == "0":
            if live is not None:
                self.engine.cancel_order(live.id, now_ms=now)
            self.attached_stops.pop(key, None)
            return {}
        if pos is None:
            raise VenueError(200, 10001, "can not set tp/sl/ts for zero position")
        if str(p.get("slTriggerBy") or "LastPrice") != "MarkPrice":
            raise VenueError(200, 10001, "test venue: only slTriggerBy=MarkPrice is modelled")
        price, mark = D(str(sl)), self.engine.marks[unified]
        if (pos.side == "long" and price >= mark) or (pos.side == "short" and price <= mark):
            relation = "lower" if pos.side == "long" else "higher"
            raise VenueError(200, 10001, f"StopLoss:{_num(price)} set for {'Buy' if pos.side == 'long' else 'Sell'} position should {relation} than base_price:{_num(mark)}??LastPrice")
        if live is not None:  # amended in place: the same order, a new trigger
            live.trigger_price = price
            live.updated_ms = now
            self._snapshot()
            return {}
        params: dict[str, Any] = {"reduceOnly": True, "orderLinkId": "", "triggerPrice": _num(price), "triggerDirection": "2" if pos.side == "long" else "1"}
        if self.hedge_mode:
            params["positionIdx"] = str(idx)
        o = self.engine.create_order(unified, "market", "sell" if pos.side == "long" else "buy", pos.size, None, params, now_ms=now, origin="tpsl")
        self._close_on_trigger.add(o.id)
        self.attached_stops[key] = o.id
        return {}

    def _drop_orphan_stops(self, now: int) -> None:
        """Bybit removes a position's attached stop when the position is gone (closed, by anyone)."""
        for key, eid in list(self.attached_stops.items()):
            o = self.engine.orders.get(eid)
            if o is None or o.status != OPEN:
                del self.attached_stops[key]
                continue
            unified, idx = key
            side = {0: None, 1: "long", 2: "short"}[idx]
            if not any(q.symbol == unified and q.size != 0 and (side is None or q.pos_side == side) for q in self.engine.positions.values()):
                self.engine.cancel_order(eid, now_ms=now)
                del self.attached_stops[key]

    def _attached_price(self, unified: str, idx: int) -> str:
        o = self.engine.orders.get(self.attached_stops.get((unified, idx), ""))
        return _num(o.trigger_price) if o is not None and o.status == OPEN and o.trigger_price is not None else ""

    def attached_stop(self, symbol: str) -> Order | None:
        """The live position-attached stop of ``symbol`` (one-way), if any."""
        with self._lock:
            o = self.engine.orders.get(self.attached_stops.get((self.markets.resolve(symbol).symbol, 0), ""))
            return o if o is not None and o.status == OPEN else None

    def _find(self, p: dict[str, Any]) -> Order | None:
        if p.get("orderId"):
            return self.engine.orders.get(self._eid(str(p["orderId"])))
        if p.get("orderLinkId"):
            eid = self.engine.client_ids.get(str(p["orderLinkId"]))
            return self.engine.orders.get(eid) if eid else None
        return None

    def _cancel(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        o = self._find(p)
        if o is None or o.status != OPEN:
            raise VenueError(200, 110001, "order not exists or too late to cancel")
        self.engine.cancel_order(o.id, now_ms=now)
        return {"orderId": self._wid(o.id), "orderLinkId": o.client_id}

    def _listing(self, orders: list[Order], p: dict[str, Any]) -> dict[str, Any]:
        """Newest first, ``limit`` (at most 50) a page; the cursor names the last order of the page."""
        wanted = self._symbol(p, required=False)
        rows = sorted((o for o in orders if wanted in (None, o.symbol)), key=lambda o: (o.created_ms, int(o.id)), reverse=True)
        if p.get("orderFilter") == "StopOrder":
            rows = [o for o in rows if o.is_stop]
        elif p.get("orderFilter") == "Order":
            rows = [o for o in rows if not o.is_stop]
        if p.get("cursor"):
            after = urllib.parse.unquote(str(p["cursor"])).split(":")
            key = (int(after[1]), int(self._eid(after[0])))
            rows = [o for o in rows if (o.created_ms, int(o.id)) < key]
        limit = max(1, min(PAGE_MAX, int(p.get("limit") or 20)))
        page = rows[:limit]
        cursor = f"{self._wid(page[-1].id)}%3A{page[-1].created_ms}" if len(rows) > limit else ""
        return {"category": "linear", "nextPageCursor": cursor, "list": [self._wire_order(o) for o in page]}

    def _realtime(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("orderId") or p.get("orderLinkId"):
            o = self._find(p)
            visible = o is not None and (o.status == OPEN or (not self._realtime_open_only and o.id in self._recent_closed()))
            return {"category": "linear", "nextPageCursor": "", "list": [self._wire_order(o)] if visible and o is not None else []}
        return self._listing(list(self.engine.open_orders.values()), p)

    def _recent_closed(self) -> set[str]:
        closed = sorted((o for o in self.engine.orders.values() if o.status != OPEN), key=lambda o: o.updated_ms, reverse=True)
        return {o.id for o in closed[:RECENT_CLOSED]}

    def _history(self, p: dict[str, Any], now: int) -> dict[str, Any]:
        done = [o for o in self.engine.orders.values() if o.status != OPEN and o.kind != "liquidation" and o.updated_ms <= now - self.history_delay_ms]
        if p.get("orderId") or p.get("orderLinkId"):
            o = self._find(p)
            return {"category": "linear", "nextPageCursor": "", "list": [self._wire_order(o)] if o is not None and o in done else []}
        return self._listing(done, p)

    def _executions(self, p: dict[str, Any]) -> dict[str, Any]:
        unified = self._symbol(p, required=False)
        since = int(p.get("startTime") or 0)
        rows = []
        for f in reversed(self.engine.fills):
            if (unified and f.symbol != unified) or f.ts_ms < since:
                continue
            o = self.engine.orders.get(f.order_id)
            rows.append({
                "symbol": self._id(f.symbol), "orderId": self._wid(f.order_id), "orderLinkId": f.client_id, "side": f.side.capitalize(), "orderPrice": _num(f.price),
                "orderQty": _num(o.requested_amount if o else f.qty), "leavesQty": "0", "createType": "CreateByUser", "orderType": "Market", "stopOrderType": "Stop" if o is not None and o.is_stop else "",
                "execFee": _num(f.fee), "execId": self._exec_id_of.setdefault(f.id, f"e0e0e0e0-0000-4000-8000-{next(self._exec_ids):012d}"), "execPrice": _num(f.price), "execQty": _num(f.qty),
                "execType": "BustTrade" if f.liquidation else "Trade", "execValue": _num(f.price * f.qty), "execTime": str(f.ts_ms), "feeCurrency": "USDT", "isMaker": False,
                "feeRate": "0.0005", "tradeIv": "", "markIv": "", "markPrice": _num(f.price), "indexPrice": "", "underlyingPrice": "", "blockTradeId": "",
                "closedSize": _num(f.qty) if f.realized_pnl else "0", "seq": 1, "execPnl": _num(f.realized_pnl),
            })  # fmt: skip
        limit = max(1, min(100, int(p.get("limit") or 50)))
        return {"category": "linear", "nextPageCursor": "", "list": rows[:limit]}

    # ------------------------------------------------------------ wire shapes
    @staticmethod
    def _status(o: Order) -> str:
        if o.status == OPEN:
            return "Untriggered" if o.is_stop and not o.triggered else "New"
        if o.status == CLOSED:
            return "Filled"
        if o.is_stop and not o.triggered:
            return "Deactivated"
        if o.status in (CANCELED, EXPIRED) and o.filled:
            return "PartiallyFilledCanceled"
        return "Cancelled" if o.status in (CANCELED, EXPIRED) else "Rejected"

    def _wire_order(self, o: Order) -> dict[str, Any]:
        m = self.markets.resolve(o.symbol)
        trig = o.trigger_price
        avg = o.average
        limit = o.limit_price
        return {
            "orderId": self._wid(o.id), "orderLinkId": o.client_id, "blockTradeId": "", "symbol": m.id, "price": _num(limit) if limit is not None else "0",
            "qty": _num(o.requested_amount or o.amount), "side": o.side.capitalize(), "isLeverage": "", "positionIdx": {"both": 0, "long": 1, "short": 2}[o.pos_side],
            "orderStatus": self._status(o), "createType": "CreateByUser" if o.origin != "liquidation" else "CreateByLiq", "cancelType": "CancelByUser" if o.status == CANCELED else "UNKNOWN",
            "rejectReason": "EC_NoError", "avgPrice": _num(avg) if avg else "", "leavesQty": _num(o.remaining) if o.status == OPEN else "0", "leavesValue": "0",
            "cumExecQty": _num(o.filled), "cumExecValue": _num(o.cost), "cumExecFee": _num(o.fee), "cumFeeDetail": {"USDT": _num(o.fee)} if o.filled else {},
            "timeInForce": "GTC" if trig is not None or limit is not None else "IOC", "orderType": "Limit" if limit is not None else "Market",
            "stopOrderType": ("StopLoss" if o.origin == "tpsl" else "Stop") if trig is not None else "", "orderIv": "", "marketUnit": "", "triggerPrice": _num(trig) if trig is not None else "",
            "takeProfit": "", "stopLoss": "", "tpslMode": "", "ocoTriggerBy": "", "tpLimitPrice": "", "slLimitPrice": "", "tpTriggerBy": "", "slTriggerBy": "",
            "triggerDirection": 0 if trig is None else (2 if o.trigger_direction == FALLING else 1), "triggerBy": "MarkPrice" if trig is not None else "",
            "lastPriceOnCreated": _num(self.engine.marks.get(o.symbol)), "basePrice": _num(self.engine.marks.get(o.symbol)) if trig is not None else "",
            "reduceOnly": o.reduce_only and o.id not in self._close_on_trigger, "closeOnTrigger": o.id in self._close_on_trigger, "placeType": "",
            "smpType": "None", "smpGroup": 0, "smpOrderId": "", "createdTime": str(o.created_ms), "updatedTime": str(o.updated_ms),
        }  # fmt: skip

    # ------------------------------------------------------------ admin over HTTP
    def _admin_routes(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """For a server in its own process: the same hooks as JSON over ``/admin/<name>``."""
        return {
            "mark": lambda a: self.set_mark(a["symbol"], a["price"]),
            "close": lambda a: [o.id for o in self.human_close(a["symbol"])],
            "cancel": lambda a: self.human_cancel(a.get("symbol"), order_id=a.get("order_id")),
            "order": lambda a: self.human_order(a["symbol"], a["side"], a["qty"], trigger=a.get("trigger"), direction=a.get("direction"), reduce_only=bool(a.get("reduce_only")), close_on_trigger=bool(a.get("close_on_trigger")), link_id=a.get("link_id", "")),
            "fail": lambda a: self.fail_next(a["route"], int(a.get("n", 1)), code=int(a["code"]), msg=a.get("msg", ""), status=int(a.get("status", 200))),
            "late": lambda a: self.late_next(a["route"], int(a.get("n", 1)), delay_s=float(a["delay_s"])),
            "ban": lambda a: self.ban(int(a["ms"]) if "ms" in a else None),
            "ticker_lag": lambda a: self.set_ticker_lag(a["symbol"], a.get("price")),
            "realtime_open_only": lambda a: self.realtime_open_only(bool(a.get("on", True))),
            "requests": lambda a: [dataclasses.asdict(r) for r in self.timeline.requests],
            "state": lambda a: {"positions": {f"{k[0]}|{k[1]}": str(v) for k, v in self.positions().items()}, "stops": [dataclasses.asdict(s) for s in self.timeline.live_stops()], "unprotected": [dataclasses.asdict(i) for i in self.timeline.unprotected()]},
        }

    async def _admin(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        args = await request.json() if request.can_read_body else {}
        handler = self._admin_routes().get(name)
        if handler is None:
            return web.json_response({"error": f"unknown admin hook {name}"}, status=404)
        try:
            return web.json_response({"ok": True, "result": handler(args)}, dumps=lambda o: json.dumps(o, default=str, separators=(",", ":")))
        except (KeyError, ValueError, ccxt.BaseError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)


def _wire_error(exc: ccxt.BaseError) -> VenueError:
    """The engine raises what ccxt would (``bybit {"retCode":110093,...}``): back to the wire."""
    text = str(exc)
    brace = text.find("{")
    if brace >= 0:
        try:
            body = json.loads(text[brace:])
            return VenueError(200, int(body["retCode"]), str(body["retMsg"]))
        except (ValueError, KeyError):
            pass
    return VenueError(200, 10016, text)
