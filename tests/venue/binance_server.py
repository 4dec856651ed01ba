"""A Binance USDⓈ-M-like venue on loopback, for real ccxt ``binanceusdm`` to talk to.

Why: the paper exchange answers in ccxt's dicts, so nothing between our venue
layer and the wire (ccxt's request building, signing, routing to the algo
book, its throttle, parsing and error mapping) is exercised over time. This
server speaks the venue's HTTP: the bot points ccxt at it through
``[exchange.ccxt_options] urls`` (:func:`ccxt_urls`) and runs unchanged.

What it is:

* **Matching and account**: :class:`~adapters.paper.engine.PaperEngine` (market
  fills at the mark, reduce-only, mark-price stop triggers, isolated margin):
  the honest shortcut, since the point here is the wire format and the venue's
  behaviour over time. Marks are set by the test or replayed
  (:meth:`BinanceVenueServer.replay`).
* **Wire format** as Binance answers (and as ``tests/test_ccxt_flow.py``'s fake,
  checked against ccxt's recorded responses): ``/fapi/v1/exchangeInfo`` from
  the real market records, ``premiumIndex`` with and without a symbol,
  ``/fapi/v2|v3/positionRisk``, ``/fapi/v2|v3/account`` and ``balance``,
  ``/fapi/v1/order`` (MARKET only: conditional types answer -4120, as Binance
  does since the algo migration), ``/fapi/v1/algoOrder`` (``algoType=CONDITIONAL``,
  fired stops get a child market order named by ``actualOrderId``),
  ``openOrders``, ``openAlgoOrders``, ``userTrades``, ``leverage``,
  ``marginType``, ``symbolConfig``, ``leverageBracket`` (refusals -4028 above the
  bracket, -4048 / -4047 changing the margin type with a position / orders
  open), ``positionSide/dual``, ``listenKey``. Requests are signed:
  the key header and HMAC-SHA256 signature are checked (-2014 / -1022).
* **Limits**: each request is charged the venue's published IP weight
  (:data:`WEIGHTS`; orders count 0 on the IP weight and 1 on the order
  counts); over 2400 per rolling minute answers HTTP 429 ``-1003``, over the
  order counts 429 ``-1015``; ``ban_after`` 429s within a minute earn HTTP 418
  "banned until ..." for ``ban_ms``. All configurable (:class:`Limits`).
* **Faults**: :meth:`fail_next` (the next N requests of a route answer a code),
  :meth:`late_next` (executed, answered after a delay: the client times out),
  ``latency_ms`` on every answer.
* **A human**: :meth:`human_close`, :meth:`human_cancel`.
* **Records**: every request (:class:`~tests.venue.timeline.Request`) and, after
  every change, the positions and live stops (:class:`~tests.venue.timeline.Timeline`).

In-process: ``BinanceVenueServer(...).start()`` runs aiohttp on its own thread
and loop on a free loopback port (``.url``); ``.stop()``. In its own process:
``python -m tests.venue.binance_server --port 0`` prints the URL on its first
line; the admin hooks are then HTTP (``POST /admin/mark`` ... see
:meth:`_admin_routes`). Every loop here is bounded (the replay ends with its
series; the server ends with ``stop()``, or with ``--max-secs`` in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
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
from adapters.paper.model import CANCELED, CLOSED, EXPIRED, OPEN, Order
from tests.venue.binance_ws import BinanceStreams
from tests.venue.timeline import Request, Snapshot, Stop, Timeline

D = Decimal
SHARED = Path(__file__).resolve().parents[3] / "shared"
MARKETS_FILE = SHARED / "data" / "markets" / "binanceusdm-linear.json"

#: Starting marks (unified symbol -> price) near the recorded markets' price filters.
#: A fresh Binance futures account's leverage per symbol (cross margin).
DEFAULT_LEVERAGE = 20
DEFAULT_MARKS = {"BTC/USDT:USDT": "40000", "ETH/USDT:USDT": "2000", "LTC/USDT:USDT": "70", "ADA/USDT:USDT": "0.3", "XRP/USDT:USDT": "0.6", "DOGE/USDT:USDT": "0.08", "TRX/USDT:USDT": "0.1"}

#: ``urls["api"]`` keys of ccxt 4.5.90's binanceusdm that carry USDⓈ-M futures traffic (REST).
#: ``public``/``private`` are the SPOT API (api.binance.com/api/v3) and redirect nothing here;
#: ``sapi*`` is the spot wallet (load_markets' currencies, off with ``fetchCurrencies = false``).
FUTURES_URL_KEYS = {
    "fapiPublic": "/fapi/v1",
    "fapiPublicV2": "/fapi/v2",
    "fapiPublicV3": "/fapi/v3",
    "fapiPrivate": "/fapi/v1",
    "fapiPrivateV2": "/fapi/v2",
    "fapiPrivateV3": "/fapi/v3",
    "fapiData": "/futures/data",
}


def ccxt_urls(base_url: str) -> dict[str, Any]:
    """The ``[exchange.ccxt_options] urls`` that send every futures request to ``base_url``
    (REST, and ccxt.pro's USDⓈ-M websocket base ``ws.linear``: served with ``streams=True``, else refused)."""
    ws = base_url.replace("http://", "ws://", 1)
    return {"api": {**{key: f"{base_url}{path}" for key, path in FUTURES_URL_KEYS.items()}, "ws": {"linear": f"{ws}/ws"}}}


def urls_toml(base_url: str) -> str:
    """:func:`ccxt_urls` as the TOML section a config would carry."""
    api = ccxt_urls(base_url)["api"]
    inner = ", ".join(f'{k} = "{v}"' for k, v in api.items() if isinstance(v, str))
    return f'[exchange.ccxt_options]\nurls = {{ api = {{ {inner}, ws = {{ linear = "{api["ws"]["linear"]}" }} }} }}\n'


def synthetic_markets(raw: dict[str, dict[str, Any]], n: int, template: str = "BTC/USDT:USDT") -> dict[str, dict[str, Any]]:
    """``n`` more linear markets cloned from ``template`` (ids ``X00USDT``...): the recorded data has
    7 USDT perpetuals, a measurement at 50 positions needs 50 symbols."""
    out = {}
    for i in range(n):
        base = f"X{i:02d}"
        m = json.loads(json.dumps(raw[template]))
        m.update(id=f"{base}USDT", symbol=f"{base}/USDT:USDT", base=base, baseId=base)
        m["info"].update(symbol=f"{base}USDT", pair=f"{base}USDT", baseAsset=base)
        out[m["symbol"]] = m
    return out


#: IP weight per route: (with ``symbol``, without). Binance USDⓈ-M docs, each endpoint's "Request Weight".
WEIGHTS: dict[str, tuple[int, int]] = {
    "GET /fapi/v1/ping": (1, 1),
    "GET /fapi/v1/time": (1, 1),
    "GET /fapi/v1/exchangeInfo": (1, 1),
    "GET /fapi/v1/premiumIndex": (1, 10),
    "GET /fapi/v1/ticker/price": (1, 2),
    "GET /fapi/v2/positionRisk": (5, 5),
    "GET /fapi/v3/positionRisk": (5, 5),
    "GET /fapi/v2/account": (5, 5),
    "GET /fapi/v3/account": (5, 5),
    "GET /fapi/v2/balance": (5, 5),
    "GET /fapi/v3/balance": (5, 5),
    "POST /fapi/v1/order": (0, 0),  # 1 on the order counts
    "POST /fapi/v1/algoOrder": (0, 0),  # 1 on the order counts
    "GET /fapi/v1/order": (1, 1),
    "DELETE /fapi/v1/order": (1, 1),
    "GET /fapi/v1/algoOrder": (1, 1),
    "DELETE /fapi/v1/algoOrder": (1, 1),
    "GET /fapi/v1/openOrders": (1, 40),
    "GET /fapi/v1/openAlgoOrders": (1, 40),
    "GET /fapi/v1/userTrades": (5, 5),
    "POST /fapi/v1/leverage": (1, 1),
    "POST /fapi/v1/marginType": (1, 1),
    "GET /fapi/v1/positionSide/dual": (30, 30),
    "GET /fapi/v1/leverageBracket": (1, 1),
    "GET /fapi/v1/symbolConfig": (5, 5),
    "POST /fapi/v1/listenKey": (1, 1),
    "PUT /fapi/v1/listenKey": (1, 1),
    "DELETE /fapi/v1/listenKey": (1, 1),
}
ORDER_ROUTES = frozenset({"POST /fapi/v1/order", "POST /fapi/v1/algoOrder"})
PUBLIC_ROUTES = frozenset({"GET /fapi/v1/ping", "GET /fapi/v1/time", "GET /fapi/v1/exchangeInfo", "GET /fapi/v1/premiumIndex", "GET /fapi/v1/ticker/price"})
KEY_ONLY_ROUTES = frozenset({"POST /fapi/v1/listenKey", "PUT /fapi/v1/listenKey", "DELETE /fapi/v1/listenKey"})


@dataclasses.dataclass
class Limits:
    """The venue's limits (Binance USDⓈ-M defaults) and its ban policy."""

    weight_1m: int = 2400
    orders_10s: int = 300
    orders_1m: int = 1200
    ban_after: int = 3  # this many 429s within a minute: 418
    ban_ms: int = 120_000


@dataclasses.dataclass
class _Fault:
    when: Callable[[dict[str, str]], bool]
    code: int | None = None  # fail with this code (nothing executed)
    msg: str = ""
    status: int = 400
    delay_s: float = 0.0  # late: executed, answered this much later


class VenueError(Exception):
    """A refusal in the venue's words: HTTP status, Binance code, message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _num(value: Decimal | None) -> str:
    return "0" if value is None else format(value, "f")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BinanceVenueServer:
    """The venue: engine, wire, limits, faults, records. Thread-safe admin methods."""

    exchange_name = "binanceusdm"

    def __init__(
        self,
        *,
        markets_file: Path = MARKETS_FILE,
        marks: dict[str, str] | None = None,
        api_key: str | None = None,
        secret: str | None = None,
        limits: Limits | None = None,
        latency_ms: int = 0,
        balance: str = "100000",
        hedge_mode: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_symbols: int = 0,
        streams: bool = False,
        mark_push_ms: int = 1000,
    ) -> None:
        """``streams``: also serve the websocket side (:mod:`tests.venue.binance_ws`, :attr:`ws`);
        without it the websocket handshakes are refused (HTTP 404) and a streaming bot polls."""
        self.raw_markets: dict[str, dict[str, Any]] = json.loads(markets_file.read_text())
        self.raw_markets.update(synthetic_markets(self.raw_markets, extra_symbols))
        self.markets = Markets.from_ccxt(self.raw_markets)
        self.engine = PaperEngine(self.markets, flavour="binance", initial_balance=D(balance), slippage_bps=D(0), hedge_mode=hedge_mode)
        self.api_key, self.secret = api_key, secret
        self.limits = limits or Limits()
        self.latency_ms = latency_ms
        self.hedge_mode = hedge_mode
        self.host, self.port = host, port
        self.timeline = Timeline()
        self._lock = threading.RLock()  # engine, ids, windows: handlers (server thread) and admin calls (test thread)
        self._faults: dict[str, list[_Fault]] = {}
        self._hits: list[tuple[int, int, int]] = []  # (t_ms, weight, orders) within the last minute
        self._limited: list[int] = []  # times of 429 answers within the last minute
        self._banned_until_ms = 0
        self._children: dict[str, int] = {}  # engine id of a fired algo order -> its child orderId
        self._child_ids = itertools.count(9_000_000_001)
        self._listen_key: str | None = None
        self.leverage: dict[str, int] = {}  # venue id -> leverage set (else DEFAULT_LEVERAGE, as on a fresh account)
        self.margin_type: dict[str, str] = {}  # venue id -> ISOLATED / CROSSED (else CROSSED)
        self.max_leverage: dict[str, int] = {}  # venue id -> the first bracket's initialLeverage (else 125)
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
            self.engine.on_mark(symbol, D(price), now)
        self.engine.add_listener(lambda kind, key: self._snapshot())
        self._snapshot()
        self.ws: BinanceStreams | None = BinanceStreams(self, mark_push_ms=mark_push_ms) if streams else None

    # ================================================================ life
    def start(self) -> BinanceVenueServer:
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

        self._thread = threading.Thread(target=run, name="binance-venue", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"venue server did not start: {failure}")
        return self

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/admin/{name}", self._admin)
        if self.ws is not None:
            self.ws.add_routes(app)
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

    def __enter__(self) -> BinanceVenueServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # =============================================================== admin
    def set_mark(self, symbol: str, price: Any) -> None:
        """A new mark: stops crossed by it fire (their child market orders fill at the mark)."""
        with self._lock:
            self.engine.on_mark(symbol, D(str(price)), _now_ms())

    def mark(self, symbol: str) -> Decimal:
        with self._lock:
            return self.engine.marks[self.markets.resolve(symbol).symbol]

    def replay(self, series: Iterable[tuple[str, Any]], every_ms: int) -> threading.Event:
        """Marks from ``series`` ((symbol, price) pairs), one every ``every_ms``, on the server's loop.

        Ends with the series (or the server); the returned event is set when it has."""
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

    def human_close(self, symbol: str) -> list[Order]:
        """A human closes the position on ``symbol`` at market (its stops stay, as on Binance)."""
        with self._lock:
            return self.engine.external_close_position(symbol, _now_ms())

    def human_cancel(self, symbol: str | None = None, *, algo_id: str | None = None) -> list[str]:
        """A human cancels a conditional order (by ``algo_id``) or every one on ``symbol``; their ids."""
        with self._lock:
            ids = [algo_id] if algo_id else [o.id for o in self.engine.open_order_list(symbol) if o.is_stop]
            for oid in ids:
                self.engine.external_cancel_order(oid, _now_ms())
            return ids

    def fail_next(self, route: str, n: int = 1, *, code: int, msg: str = "", status: int = 400, when: Callable[[dict[str, str]], bool] | None = None) -> None:
        """The next ``n`` requests on ``route`` (``"POST /fapi/v1/algoOrder"``) matching ``when`` are
        refused with ``code`` and nothing is executed."""
        with self._lock:
            self._faults.setdefault(route, []).extend(_Fault(when or (lambda p: True), code=code, msg=msg or f"injected {code}", status=status) for _ in range(n))

    def late_next(self, route: str, n: int = 1, *, delay_s: float, when: Callable[[dict[str, str]], bool] | None = None) -> None:
        """The next ``n`` requests on ``route`` are executed at once and answered ``delay_s`` later
        (the client's timeout fires first: the venue did it, the client does not know)."""
        with self._lock:
            self._faults.setdefault(route, []).extend(_Fault(when or (lambda p: True), delay_s=delay_s) for _ in range(n))

    def ban(self, ms: int) -> None:
        """An IP ban starting now (HTTP 418 to everything for ``ms``)."""
        with self._lock:
            self._banned_until_ms = _now_ms() + ms

    def live_algos(self, symbol: str | None = None) -> list[Order]:
        with self._lock:
            return [o for o in self.engine.open_order_list(symbol) if o.is_stop]

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

    # ============================================================ timeline
    def _snapshot(self) -> None:
        self.timeline.record_state(engine_snapshot(self.engine, self.markets, hedge_mode=self.hedge_mode))

    # ============================================================= the wire
    async def _handle(self, request: web.Request) -> web.Response:
        t0 = _now_ms()
        body = await request.text() if request.can_read_body else ""
        raw_query = request.rel_url.raw_query_string
        signed_payload = raw_query if request.method in ("GET", "DELETE") else body
        params = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
        route = f"{request.method} {request.path}"
        weight, orders = self._weight(route, params)
        fault: str | None = None
        late = 0.0
        try:
            with self._lock:
                self._charge_limits(t0, route, weight, orders)
                if route not in WEIGHTS:
                    raise VenueError(404, -5000, f"Path {request.path}, Method {request.method} is invalid")
                self._authenticate(route, request.headers, signed_payload, params, t0)
                item = self._take_fault(route, params)
                if item is not None and item.code is not None:
                    fault = "fail"
                    raise VenueError(item.status, item.code, item.msg)
                if item is not None:
                    fault, late = "late", item.delay_s
                status, payload = 200, self._route(route, params, t0)
        except VenueError as err:
            status, payload = err.status, {"code": err.code, "msg": err.msg}
            if err.code in (-1003, -1015) or err.status == 418:
                fault = fault or ("ban" if err.status == 418 else "limit")
        delay = self.latency_ms / 1000 + late
        if delay:
            await asyncio.sleep(delay)
        code = payload.get("code") if isinstance(payload, dict) and status != 200 else None
        self.timeline.record_request(Request(t0, _now_ms(), request.method, request.path, params, status, code, weight, orders, fault))
        headers = self._limit_headers(t0)
        if status in (429, 418):
            headers["Retry-After"] = str(max(1, (self._banned_until_ms - t0) // 1000) if status == 418 else 1)
        return web.json_response(payload, status=status, headers=headers, dumps=lambda o: json.dumps(o, default=str, separators=(",", ":")))

    def _weight(self, route: str, params: dict[str, str]) -> tuple[int, int]:
        with_symbol, without = WEIGHTS.get(route, (1, 1))
        return (with_symbol if params.get("symbol") else without), (1 if route in ORDER_ROUTES else 0)

    def _charge_limits(self, now: int, route: str, weight: int, orders: int) -> None:
        """Binance counts every request it receives, refused ones included; over a limit: 429, then 418."""
        lim = self.limits
        if now < self._banned_until_ms:
            raise VenueError(418, -1003, f"Way too many requests; IP(127.0.0.1) banned until {self._banned_until_ms}. Please use the websocket for live updates to avoid bans.")
        self._hits = [h for h in self._hits if h[0] > now - 60_000]
        self._limited = [t for t in self._limited if t > now - 60_000]
        self._hits.append((now, weight, orders))
        used = sum(h[1] for h in self._hits)
        orders_10s = sum(h[2] for h in self._hits if h[0] > now - 10_000)
        orders_1m = sum(h[2] for h in self._hits)
        refusal: VenueError | None = None
        if used > lim.weight_1m:
            refusal = VenueError(429, -1003, f"Too many requests; current limit of IP(127.0.0.1) is {lim.weight_1m} requests per minute. Please use the websocket for live updates to avoid polling the API.")
        elif orders and orders_10s > lim.orders_10s:
            refusal = VenueError(429, -1015, f"Too many new orders; current limit is {lim.orders_10s} orders per 10 SECOND.")
        elif orders and orders_1m > lim.orders_1m:
            refusal = VenueError(429, -1015, f"Too many new orders; current limit is {lim.orders_1m} orders per MINUTE.")
        if refusal is None:
            return
        self._limited.append(now)
        if len(self._limited) >= lim.ban_after:
            self._banned_until_ms = now + lim.ban_ms
            raise VenueError(418, -1003, f"Way too many requests; IP(127.0.0.1) banned until {self._banned_until_ms}. Please use the websocket for live updates to avoid bans.")
        raise refusal

    def _limit_headers(self, now: int) -> dict[str, str]:
        with self._lock:
            hits = [h for h in self._hits if h[0] > now - 60_000]
            return {
                "X-MBX-USED-WEIGHT-1M": str(sum(h[1] for h in hits)),
                "X-MBX-ORDER-COUNT-10S": str(sum(h[2] for h in hits if h[0] > now - 10_000)),
                "X-MBX-ORDER-COUNT-1M": str(sum(h[2] for h in hits)),
            }

    def _authenticate(self, route: str, headers: Any, payload: str, params: dict[str, str], now: int) -> None:
        if route in PUBLIC_ROUTES:
            return
        key = headers.get("X-MBX-APIKEY")
        if not key or (self.api_key is not None and key != self.api_key):
            raise VenueError(401, -2014, "API-key format invalid.")
        if route in KEY_ONLY_ROUTES:
            return
        unsigned, _, signature = payload.rpartition("&signature=")
        if not signature:
            raise VenueError(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        if self.secret is not None:
            expected = hmac.new(self.secret.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                raise VenueError(400, -1022, "Signature for this request is not valid.")
        ts = int(params.get("timestamp") or 0)
        window = int(params.get("recvWindow") or 5000)
        if ts > now + 1000 or now - ts > window:
            raise VenueError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _take_fault(self, route: str, params: dict[str, str]) -> _Fault | None:
        queue = self._faults.get(route) or []
        for i, item in enumerate(queue):
            if item.when(params):
                return queue.pop(i)
        return None

    # ---------------------------------------------------------- routing
    def _route(self, route: str, p: dict[str, str], now: int) -> Any:
        handler = {
            "GET /fapi/v1/ping": lambda: {},
            "GET /fapi/v1/time": lambda: {"serverTime": now},
            "GET /fapi/v1/exchangeInfo": lambda: self._exchange_info(now),
            "GET /fapi/v1/premiumIndex": lambda: self._premium_index(p, now),
            "GET /fapi/v1/ticker/price": lambda: self._ticker_price(p, now),
            "GET /fapi/v2/positionRisk": lambda: self._position_risk(p, now),
            "GET /fapi/v3/positionRisk": lambda: self._position_risk(p, now),
            "GET /fapi/v2/account": lambda: self._account(now),
            "GET /fapi/v3/account": lambda: self._account(now),
            "GET /fapi/v2/balance": lambda: self._balance(now),
            "GET /fapi/v3/balance": lambda: self._balance(now),
            "POST /fapi/v1/order": lambda: self._new_order(p, now),
            "GET /fapi/v1/order": lambda: self._wire_order(self._find_regular(p)),
            "DELETE /fapi/v1/order": lambda: self._cancel_regular(p, now),
            "POST /fapi/v1/algoOrder": lambda: self._new_algo(p, now),
            "GET /fapi/v1/algoOrder": lambda: self._wire_algo(self._find_algo(p)),
            "DELETE /fapi/v1/algoOrder": lambda: self._cancel_algo(p, now),
            "GET /fapi/v1/openOrders": lambda: [self._wire_order(o) for o in self._open(p, stops=False)],
            "GET /fapi/v1/openAlgoOrders": lambda: [self._wire_algo(o) for o in self._open(p, stops=True)],
            "GET /fapi/v1/userTrades": lambda: self._user_trades(p),
            "POST /fapi/v1/leverage": lambda: self._set_leverage(p, now),
            "POST /fapi/v1/marginType": lambda: self._set_margin_type(p),
            "GET /fapi/v1/positionSide/dual": lambda: {"dualSidePosition": self.hedge_mode},
            "GET /fapi/v1/leverageBracket": lambda: self._brackets(p),
            "GET /fapi/v1/symbolConfig": lambda: self._symbol_config(p),
            "POST /fapi/v1/listenKey": lambda: self._new_listen_key(),
            "PUT /fapi/v1/listenKey": self._keep_alive,
            "DELETE /fapi/v1/listenKey": lambda: {},
        }[route]
        try:
            return handler()
        except ccxt.BaseError as exc:  # the engine's refusals carry Binance's body after the exchange id
            raise _wire_error(exc) from None

    def _symbol(self, p: dict[str, str], required: bool = True) -> str | None:
        sid = p.get("symbol")
        if not sid:
            if required:
                raise VenueError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
            return None
        try:
            return self.markets.resolve(sid).symbol
        except KeyError:
            raise VenueError(400, -1121, "Invalid symbol.") from None

    def _id(self, unified: str) -> str:
        return self.markets.resolve(unified).id

    # ------------------------------------------------------- market data
    def _exchange_info(self, now: int) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": now,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.limits.weight_1m},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": self.limits.orders_1m},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.limits.orders_10s},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [m["info"] for m in self.raw_markets.values()],
        }

    def _premium_one(self, unified: str, now: int) -> dict[str, Any]:
        mark = _num(self.engine.marks.get(unified))
        return {"symbol": self._id(unified), "markPrice": mark, "indexPrice": mark, "estimatedSettlePrice": mark, "lastFundingRate": "0.00010000", "interestRate": "0.00010000", "nextFundingTime": now + 3_600_000, "time": now}

    def _premium_index(self, p: dict[str, str], now: int) -> Any:
        unified = self._symbol(p, required=False)
        if unified is not None:
            return self._premium_one(unified, now)
        return [self._premium_one(s, now) for s in self.engine.marks]

    def _ticker_price(self, p: dict[str, str], now: int) -> Any:
        unified = self._symbol(p, required=False)
        rows = [{"symbol": self._id(s), "price": _num(self.engine.marks[s]), "time": now} for s in ([unified] if unified else self.engine.marks)]
        return rows[0] if unified else rows

    def _brackets(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbols = [self._symbol(p)] if p.get("symbol") else list(self.engine.marks)
        return [{"symbol": self._id(s or ""), "notionalCoef": 1.0, "brackets": [{"bracket": 1, "initialLeverage": self.max_leverage.get(self._id(s or ""), 125), "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0}]} for s in symbols]

    def _symbol_config(self, p: dict[str, str]) -> list[dict[str, Any]]:
        """GET /fapi/v1/symbolConfig: margin type and leverage per symbol (one, or every one)."""
        symbols = [self._symbol(p) or ""] if p.get("symbol") else list(self.engine.marks)
        out = []
        for s in symbols:
            sid = self._id(s)
            out.append({"symbol": sid, "marginType": self.margin_type.get(sid, "CROSSED"), "isAutoAddMargin": "false", "leverage": self.leverage.get(sid, DEFAULT_LEVERAGE), "maxNotionalValue": "1000000"})
        return out

    # ----------------------------------------------------------- account
    def _position_risk(self, p: dict[str, str], now: int) -> list[dict[str, Any]]:
        wanted = self._symbol(p, required=False)
        out = []
        for pos in self.engine.positions.values():
            if wanted and pos.symbol != wanted:
                continue
            mark = self.engine.marks.get(pos.symbol, pos.entry_price)
            amt = pos.size if pos.side == "long" else -pos.size
            out.append({
                "symbol": self._id(pos.symbol), "positionSide": "BOTH" if pos.pos_side == "both" else pos.pos_side.upper(), "positionAmt": _num(amt),
                "entryPrice": _num(pos.entry_price), "breakEvenPrice": _num(pos.entry_price), "markPrice": _num(mark),
                "unRealizedProfit": _num(self.engine.unrealized_pnl(pos)), "liquidationPrice": _num(self.engine.liquidation_price(pos)),
                "isolatedMargin": _num(pos.margin), "notional": _num(mark * amt), "marginAsset": "USDT", "isolatedWallet": _num(pos.margin),
                "initialMargin": _num(pos.margin), "maintMargin": "0", "positionInitialMargin": _num(pos.margin), "openOrderInitialMargin": "0",
                "adl": "1", "bidNotional": "0", "askNotional": "0", "updateTime": pos.updated_ms,
                "leverage": str(self.leverage.get(self._id(pos.symbol), DEFAULT_LEVERAGE)), "marginType": self.margin_type.get(self._id(pos.symbol), "CROSSED").lower().replace("crossed", "cross"),
            })  # fmt: skip
        return out

    def _balance_row(self, now: int) -> dict[str, Any]:
        b = self.engine.balance()
        return {
            "asset": "USDT", "walletBalance": _num(b["wallet"]), "unrealizedProfit": _num(b["unrealized"]), "marginBalance": _num(b["wallet"] + b["unrealized"]),
            "maintMargin": "0", "initialMargin": _num(b["used"]), "positionInitialMargin": _num(b["used"]), "openOrderInitialMargin": "0",
            "maxWithdrawAmount": _num(b["free"]), "crossWalletBalance": _num(b["wallet"]), "crossUnPnl": "0", "availableBalance": _num(b["free"]),
            "marginAvailable": True, "updateTime": now,
        }  # fmt: skip

    def _account(self, now: int) -> dict[str, Any]:
        b = self.engine.balance()
        row = self._balance_row(now)
        return {
            "totalInitialMargin": _num(b["used"]), "totalMaintMargin": "0", "totalWalletBalance": _num(b["wallet"]), "totalUnrealizedProfit": _num(b["unrealized"]),
            "totalMarginBalance": row["marginBalance"], "totalPositionInitialMargin": _num(b["used"]), "totalOpenOrderInitialMargin": "0",
            "totalCrossWalletBalance": _num(b["wallet"]), "totalCrossUnPnl": "0", "availableBalance": _num(b["free"]), "maxWithdrawAmount": _num(b["free"]),
            "assets": [row], "positions": [],
        }  # fmt: skip

    def _balance(self, now: int) -> list[dict[str, Any]]:
        row = self._balance_row(now)
        return [{"accountAlias": "SgsR", "asset": "USDT", "balance": row["walletBalance"], "crossWalletBalance": row["crossWalletBalance"], "crossUnPnl": "0", "availableBalance": row["availableBalance"], "maxWithdrawAmount": row["maxWithdrawAmount"], "marginAvailable": True, "updateTime": now}]

    def _set_leverage(self, p: dict[str, str], now: int) -> dict[str, Any]:
        unified = self._symbol(p) or ""
        lev = int(p.get("leverage") or 0)
        if not 1 <= lev <= self.max_leverage.get(self._id(unified), 125):
            raise VenueError(400, -4028, f"Leverage {lev} is not valid")
        self.engine.set_leverage(unified, lev, now_ms=now)
        self.leverage[self._id(unified)] = lev
        return {"leverage": lev, "maxNotionalValue": "1000000", "symbol": self._id(unified)}

    def _set_margin_type(self, p: dict[str, str]) -> dict[str, Any]:
        sid = self._id(self._symbol(p) or "")
        wanted = str(p.get("marginType", "")).upper()
        if self.margin_type.get(sid, "CROSSED") == wanted:
            raise VenueError(400, -4046, "No need to change margin type.")
        if any(pos.symbol == self.markets.resolve(sid).symbol and pos.size > 0 for pos in self.engine.positions.values()):
            raise VenueError(400, -4048, "Margin type cannot be changed if there exists position.")
        if self.engine.open_order_list(self.markets.resolve(sid).symbol):
            raise VenueError(400, -4047, "Margin type cannot be changed if there exists open orders.")
        self.margin_type[sid] = wanted
        return {"code": 200, "msg": "success"}

    def _new_listen_key(self) -> dict[str, str]:
        if self._listen_key is not None and (self.ws is None or self._listen_key in self.ws.keys):
            return {"listenKey": self._listen_key}  # Binance: the active key again
        self._listen_key = hashlib.sha256(f"{_now_ms()}-{next(self._child_ids)}".encode()).hexdigest()
        if self.ws is not None:
            self.ws.issue_key(self._listen_key)
        return {"listenKey": self._listen_key}

    def _keep_alive(self) -> dict[str, str]:
        if self._listen_key is None or (self.ws is not None and self._listen_key not in self.ws.keys):
            raise VenueError(400, -1125, "This listenKey does not exist.")
        return {"listenKey": self._listen_key}

    # ------------------------------------------------------------ orders
    def _engine_params(self, p: dict[str, str], client_id: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"reduceOnly": p.get("reduceOnly") == "true", "closePosition": p.get("closePosition") == "true"}
        if client_id:
            out["newClientOrderId"] = client_id
        if p.get("positionSide"):
            out["positionSide"] = p["positionSide"]
        return out

    def _new_order(self, p: dict[str, str], now: int) -> dict[str, Any]:
        unified = self._symbol(p) or ""
        kind = p.get("type", "")
        if kind != "MARKET":
            raise VenueError(400, -4120, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.")
        cid = p.get("newClientOrderId")
        if cid and cid in self.engine.client_ids:
            raise VenueError(400, -4116, "ClientOrderId is duplicated.")
        o = self.engine.create_order(unified, "market", p.get("side", "").lower(), D(p.get("quantity") or "0"), None, self._engine_params(p, cid), now_ms=now)
        return self._wire_order(o)

    def _new_algo(self, p: dict[str, str], now: int) -> dict[str, Any]:
        unified = self._symbol(p) or ""
        if p.get("algoType") != "CONDITIONAL":
            raise VenueError(400, -1102, "Mandatory parameter 'algoType' was not sent, was empty/null, or malformed.")
        kind = p.get("type", "")
        if kind not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
            raise VenueError(400, -1116, "Invalid orderType.")
        if p.get("workingType") != "MARK_PRICE":
            raise VenueError(400, -1102, "test venue: only workingType=MARK_PRICE is modelled")
        cid = p.get("clientAlgoId")
        if cid and cid in self.engine.client_ids:
            raise VenueError(400, -4116, "ClientOrderId is duplicated.")
        params = {**self._engine_params(p, cid), "stopPrice": p.get("triggerPrice")}
        o = self.engine.create_order(unified, kind, p.get("side", "").lower(), D(p.get("quantity") or "0"), None, params, now_ms=now)
        return self._wire_algo(o)

    def _find(self, order_id: str | None, client_id: str | None, *, stop: bool) -> Order:
        o: Order | None = None
        if order_id:
            o = self.engine.orders.get(order_id)
            if o is None and not stop:  # a fired algo order's child
                parent = next((eid for eid, cid in self._children.items() if str(cid) == order_id), None)
                if parent is not None:
                    return self._child(self.engine.orders[parent])
        elif client_id:
            eid = self.engine.client_ids.get(client_id)
            o = self.engine.orders.get(eid) if eid else None
        if o is None or o.is_stop != stop:
            raise VenueError(400, -2013, "Order does not exist.")
        return o

    def _find_regular(self, p: dict[str, str]) -> Order:
        return self._find(p.get("orderId"), p.get("origClientOrderId"), stop=False)

    def _find_algo(self, p: dict[str, str]) -> Order:
        return self._find(p.get("algoId"), p.get("clientAlgoId"), stop=True)

    def _cancel_regular(self, p: dict[str, str], now: int) -> dict[str, Any]:
        try:
            o = self._find_regular(p)
        except VenueError:
            raise VenueError(400, -2011, "Unknown order sent.") from None
        if o.status != OPEN:
            raise VenueError(400, -2011, "Unknown order sent.")
        return self._wire_order(self.engine.cancel_order(o.id, now_ms=now))

    def _cancel_algo(self, p: dict[str, str], now: int) -> dict[str, Any]:
        try:
            o = self._find_algo(p)
        except VenueError:
            raise VenueError(400, -2011, "Unknown order sent.") from None
        if o.status != OPEN:
            raise VenueError(400, -2011, "Unknown order sent.")
        self.engine.cancel_order(o.id, now_ms=now)
        return {"algoId": int(o.id), "clientAlgoId": o.client_id, "code": "200", "msg": "success"}

    def _open(self, p: dict[str, str], *, stops: bool) -> list[Order]:
        unified = self._symbol(p, required=False)
        return [o for o in self.engine.open_order_list(unified) if o.is_stop == stops]

    def _child(self, algo: Order) -> Order:
        """The market order a fired conditional order became (Binance gives it its own orderId)."""
        cid = self._children.setdefault(algo.id, next(self._child_ids))
        return Order(id=str(cid), symbol=algo.symbol, side=algo.side, kind="market", amount=algo.amount, pos_side=algo.pos_side, created_ms=algo.updated_ms, updated_ms=algo.updated_ms, requested_amount=algo.amount, client_id="", reduce_only=True, status=CLOSED, filled=algo.filled, cost=algo.cost, fee=algo.fee, trade_ids=algo.trade_ids)

    @staticmethod
    def _status(o: Order) -> str:
        return {OPEN: "NEW", CLOSED: "FILLED", CANCELED: "CANCELED", EXPIRED: "EXPIRED"}.get(o.status, "REJECTED")

    def _pos_side(self, o: Order) -> str:
        return "BOTH" if o.pos_side == "both" else o.pos_side.upper()

    def _wire_order(self, o: Order) -> dict[str, Any]:
        avg = o.average
        return {
            "orderId": int(o.id), "symbol": self._id(o.symbol), "status": self._status(o) if o.filled >= o.amount or o.status != CLOSED else "PARTIALLY_FILLED",
            "clientOrderId": o.client_id or f"web_{o.id}", "price": "0.00", "avgPrice": _num(avg) if avg is not None else "0.00",
            "origQty": _num(o.requested_amount or o.amount), "executedQty": _num(o.filled), "cumQty": _num(o.filled), "cumQuote": _num(o.cost),
            "timeInForce": "GTC", "type": "MARKET", "reduceOnly": o.reduce_only, "closePosition": o.close_position, "side": o.side.upper(),
            "positionSide": self._pos_side(o), "stopPrice": "0.00", "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": "MARKET",
            "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0, "time": o.created_ms, "updateTime": o.updated_ms,
        }  # fmt: skip

    def _wire_algo(self, o: Order) -> dict[str, Any]:
        fired = o.triggered and o.status == CLOSED
        status = "FINISHED" if fired else {OPEN: "NEW", CANCELED: "CANCELED", EXPIRED: "EXPIRED"}.get(o.status, "FINISHED")
        return {
            "algoId": int(o.id), "clientAlgoId": o.client_id, "algoType": "CONDITIONAL", "orderType": "STOP_MARKET" if o.kind == "stop_market" else "TAKE_PROFIT_MARKET",
            "symbol": self._id(o.symbol), "side": o.side.upper(), "positionSide": self._pos_side(o), "timeInForce": "GTC", "quantity": _num(o.requested_amount or o.amount),
            "algoStatus": status, "triggerPrice": _num(o.trigger_price), "price": "0.00", "icebergQuantity": None, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "MARK_PRICE", "priceMatch": "NONE", "closePosition": o.close_position, "priceProtect": False, "reduceOnly": o.reduce_only,
            "createTime": o.created_ms, "updateTime": o.updated_ms, "triggerTime": o.updated_ms if fired else 0, "goodTillDate": 0,
            "actualOrderId": str(self._child(o).id) if fired else "",
        }  # fmt: skip

    def _user_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        unified = self._symbol(p) or ""
        since = int(p.get("startTime") or 0)
        out = []
        for f in self.engine.fills:
            if f.symbol != unified or f.ts_ms < since:
                continue
            parent = self.engine.orders.get(f.order_id)
            order_id = self._child(parent).id if parent is not None and parent.is_stop else f.order_id
            out.append({
                "symbol": self._id(f.symbol), "id": int(f.id), "orderId": int(order_id), "side": f.side.upper(), "price": _num(f.price), "qty": _num(f.qty),
                "realizedPnl": _num(f.realized_pnl), "marginAsset": "USDT", "quoteQty": _num(f.price * f.qty), "commission": _num(f.fee), "commissionAsset": "USDT",
                "time": f.ts_ms, "positionSide": "BOTH" if f.pos_side == "both" else f.pos_side.upper(), "maker": False, "buyer": f.side == "buy",
            })  # fmt: skip
        limit = int(p.get("limit") or 500)
        return out[-limit:]

    # ------------------------------------------------------------ admin over HTTP
    def _admin_routes(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """For a server in its own process: the same hooks as JSON over ``/admin/<name>``."""
        return {
            **(self.ws.admin_routes() if self.ws is not None else {}),
            "mark": lambda a: self.set_mark(a["symbol"], a["price"]),
            "close": lambda a: [o.id for o in self.human_close(a["symbol"])],
            "cancel": lambda a: self.human_cancel(a.get("symbol"), algo_id=a.get("algo_id")),
            "fail": lambda a: self.fail_next(a["route"], int(a.get("n", 1)), code=int(a["code"]), msg=a.get("msg", ""), status=int(a.get("status", 400))),
            "late": lambda a: self.late_next(a["route"], int(a.get("n", 1)), delay_s=float(a["delay_s"])),
            "ban": lambda a: self.ban(int(a["ms"])),
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


def engine_snapshot(eng: PaperEngine, markets: Markets, *, hedge_mode: bool = False) -> Snapshot:
    """A paper engine's positions and live protective stops now (also used for the paper side of the benchmark)."""
    positions = {(markets.resolve(p.symbol).id, p.side): p.size for p in eng.positions.values()}
    stops: dict[str, list[Stop]] = {}
    for o in eng.open_orders.values():
        if o.kind == "stop_market" and o.trigger_price is not None and (o.reduce_only or o.close_position or hedge_mode):
            stops.setdefault(markets.resolve(o.symbol).id, []).append(Stop(order_id=o.id, side=o.side, qty=o.amount, trigger=o.trigger_price, close_position=o.close_position))
    return Snapshot(t_ms=eng.now_ms or _now_ms(), positions=positions, stops={k: tuple(v) for k, v in stops.items()})


def _wire_error(exc: ccxt.BaseError) -> VenueError:
    """The engine raises what ccxt would (``binanceusdm {"code":-2021,...}``): back to the wire."""
    text = str(exc)
    brace = text.find("{")
    if brace >= 0:
        try:
            body = json.loads(text[brace:])
            return VenueError(400, int(body["code"]), str(body["msg"]))
        except (ValueError, KeyError):
            pass
    return VenueError(400, -1000, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A Binance USDⓈ-M-like venue on loopback (for tests).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key")
    parser.add_argument("--secret")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--max-secs", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args(argv)
    server = BinanceVenueServer(api_key=args.api_key, secret=args.secret, latency_ms=args.latency_ms, port=args.port).start()
    print(server.url, flush=True)
    try:
        server._stopped.wait(args.max_secs)
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
