"""Real venues' streams through REAL ccxt.pro, offline, against a local websocket server.

:class:`WsVenue` is an ``aiohttp`` websocket server on 127.0.0.1 that speaks
each venue's wire format, with message shapes from the venues' API
documentation:

* Binance USDⓈ-M: user data on ``/private/ws?listenKey=...`` (the key comes
  from ``POST /fapi/v1/listenKey``, intercepted like every REST call here);
  events ``ORDER_TRADE_UPDATE`` (regular book), ``ALGO_UPDATE`` (conditional
  book: our stops), ``ACCOUNT_UPDATE`` (positions), ``listenKeyExpired``;
  market streams on ``/market/ws/<n>`` with ``SUBSCRIBE`` / ``UNSUBSCRIBE``
  (``{"result": null, "id": n}``) and ``markPriceUpdate`` frames.
* Bybit v5: ``/v5/private`` with the ``auth`` op, topics ``order`` and
  ``position``; ``/v5/public/linear`` with topic ``tickers.<symbol>``
  (snapshot, then deltas); ``subscribe`` / ``unsubscribe`` / ``ping`` acks.

ccxt is pointed at the server through ``[exchange.ccxt_options] urls`` in the
config, with ``testnet = true`` (so the override has to survive the testnet
switch), exactly as a user would point it at another base URL. REST goes to the
scripted fakes of ``test_ccxt_flow.py`` through ``intercept_http``.

Nothing sleeps to wait: async steps await with timeouts, thread-side steps use
``eventually``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pykka
import pytest
from aiohttp import WSMsgType, web

from actors.messages import MarkPrice, SubscribeMarks, UnsubscribeMarks
from actors.price_feed import STALE_AFTER_INTERVALS as STALE, PriceFeed
from adapters.ccxt_exchange import build_ccxt_exchange, build_ccxt_venue, intercept_http, wants_streams
from adapters.io_loop import IOLoop
from adapters.streams import StreamPump
from adapters.venue import OrderReport, OrderStatus, Venue
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from core.messages import Shutdown
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import eventually, make_config
from tests.test_ccxt_flow import ENV, MARKETS, FakeBinanceFutures, FakeBybitLinear, exchange_toml

D = Decimal
T0 = 1_700_000_000_000


# ================================================================ the server
@dataclasses.dataclass
class Conn:
    path: str
    query: dict[str, str]
    ws: web.WebSocketResponse
    transport: Any
    received: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    closed: bool = False

    def sent(self, key: str, value: str) -> list[dict[str, Any]]:
        """Frames the client sent with ``key == value`` (Binance "method", Bybit "op")."""
        return [f for f in self.received if f.get(key) == value]


class WsVenue:
    """A local websocket server speaking Binance USDⓈ-M or Bybit v5 stream protocol."""

    def __init__(self, io: IOLoop, venue: str) -> None:
        self.io, self.venue = io, venue
        self.conns: list[Conn] = []
        #: Paths (prefixes) whose handshakes are refused with this HTTP status, e.g. {"/market": 503}.
        self.refuse: dict[str, int] = {}

    # ------------------------------------------------------------- lifecycle
    def start(self) -> WsVenue:
        self.io.run(self._start(), 5)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        async def stop() -> None:
            for c in self.live(""):
                await c.ws.close()
            await self._runner.cleanup()

        self.io.run(stop(), 10)

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def config_toml(self) -> str:
        """``[exchange.ccxt_options]`` pointing ccxt's websocket URLs here (REST stays as configured)."""
        if self.venue == "binanceusdm":  # ccxt derives /market/ws/<n> and /private/ws?listenKey= from it
            return f'[exchange.ccxt_options.urls.api.ws]\nlinear = "{self.base}/ws"\n'
        return f'[exchange.ccxt_options.urls.api.ws.public]\nlinear = "{self.base}/v5/public/linear"\n[exchange.ccxt_options.urls.api.ws.private]\ncontract = "{self.base}/v5/private"\n'

    # ------------------------------------------------------------- protocol
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        for prefix, status in self.refuse.items():
            if request.path.startswith(prefix):
                return web.Response(status=status, text="refused")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Conn(request.path, dict(request.query), ws, request.transport)
        self.conns.append(conn)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                conn.received.append(frame)
                for reply in self._replies(frame, len(self.conns)):
                    await ws.send_str(json.dumps(reply))
        finally:
            conn.closed = True
        return ws

    def _replies(self, frame: dict[str, Any], conn_no: int) -> list[dict[str, Any]]:
        if self.venue == "binanceusdm":
            if frame.get("method") in ("SUBSCRIBE", "UNSUBSCRIBE"):
                return [{"result": None, "id": frame["id"]}]
            return []
        conn_id = f"cejreaspqfh3sjdnldmg-{conn_no}"
        op = frame.get("op")
        if op == "auth":
            return [{"success": True, "ret_msg": "", "op": "auth", "conn_id": conn_id}]
        if op in ("subscribe", "unsubscribe"):
            return [{"success": True, "ret_msg": "", "conn_id": conn_id, "req_id": frame.get("req_id"), "op": op}]
        if op == "ping":
            return [{"success": True, "ret_msg": "pong", "conn_id": conn_id, "req_id": frame.get("req_id"), "op": "ping"}]
        return []

    # ---------------------------------------------------------- test's side
    def live(self, prefix: str) -> list[Conn]:
        return [c for c in self.conns if not c.closed and c.path.startswith(prefix)]

    async def apush(self, prefix: str, *frames: dict[str, Any]) -> int:
        conns = self.live(prefix)
        for c in conns:
            for f in frames:
                await c.ws.send_str(json.dumps(f))
        return len(conns)

    def push(self, prefix: str, *frames: dict[str, Any]) -> int:
        return self.io.run(self.apush(prefix, *frames), 5)

    async def adrop(self, prefix: str) -> int:
        """Cut the connections under ``prefix`` without a closing handshake (a lost network)."""
        conns = self.live(prefix)
        for c in conns:
            c.transport.close()
        return len(conns)

    def drop(self, prefix: str) -> int:
        return self.io.run(self.adrop(prefix), 5)


# ============================================================ frames (docs)
def bn_order(*, cid: str, oid: int, side: str, status: str, qty: str, filled: str, avg: str, otype: str = "MARKET", reduce_only: bool = False, ps: str = "BOTH", ts: int = T0) -> dict[str, Any]:
    """Binance USDⓈ-M ``ORDER_TRADE_UPDATE`` (Event: Order Update)."""
    x = "TRADE" if filled != "0" else "NEW"
    return {
        "e": "ORDER_TRADE_UPDATE", "E": ts + 2, "T": ts,
        "o": {
            "s": "BTCUSDT", "c": cid, "S": side, "o": otype, "f": "GTC", "q": qty, "p": "0", "ap": avg, "sp": "0", "x": x, "X": status,
            "i": oid, "l": filled, "z": filled, "L": avg, "N": "USDT", "n": "0.50000000", "T": ts, "t": 53215, "b": "0", "a": "0", "m": False,
            "R": reduce_only, "wt": "CONTRACT_PRICE", "ot": otype, "ps": ps, "cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0,
            "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0,
        },
    }  # fmt: skip


def bn_algo(*, cid: str, aid: int, status: str, trigger: str, qty: str, side: str = "SELL", ps: str = "BOTH", ts: int = T0) -> dict[str, Any]:
    """Binance USDⓈ-M ``ALGO_UPDATE`` (Event: Algo Order Update): a conditional order of the algo book."""
    return {
        "e": "ALGO_UPDATE", "T": ts, "E": ts + 3,
        "o": {
            "caid": cid, "aid": aid, "at": "CONDITIONAL", "o": "STOP_MARKET", "s": "BTCUSDT", "S": side, "ps": ps, "f": "GTC", "q": qty,
            "X": status, "ai": "", "ap": "0.00000", "aq": "0.00000", "act": "0", "tp": trigger, "p": "0", "V": "EXPIRE_MAKER",
            "wt": "MARK_PRICE", "pm": "NONE", "cp": False, "pP": False, "R": True, "tt": 0, "gtd": 0, "rm": "",
        },
    }  # fmt: skip


def bn_account(*, amount: str, entry: str, symbol: str = "BTCUSDT", ps: str = "BOTH", ts: int = T0) -> dict[str, Any]:
    """Binance USDⓈ-M ``ACCOUNT_UPDATE`` (Event: Balance and Position Update), reason ORDER."""
    return {
        "e": "ACCOUNT_UPDATE", "E": ts + 5, "T": ts,
        "a": {
            "m": "ORDER",
            "B": [{"a": "USDT", "wb": "9999.50000000", "cw": "9899.50000000", "bc": "0"}],
            "P": [{"s": symbol, "pa": amount, "ep": entry, "bep": entry, "cr": "0", "up": "0", "mt": "isolated", "iw": "100.00000000", "ps": ps, "ma": "USDT"}],
        },
    }  # fmt: skip


def bn_mark(price: str, symbol: str = "BTCUSDT", ts: int = T0) -> dict[str, Any]:
    """Binance USDⓈ-M ``<symbol>@markPrice@1s`` (Mark Price Stream)."""
    return {"e": "markPriceUpdate", "E": ts, "s": symbol, "p": price, "i": price, "P": price, "r": "0.00010000", "T": ts + 3_600_000}


def by_order(*, cid: str, oid: str, side: str, status: str, qty: str, filled: str, avg: str, trigger: str = "", direction: int = 0, reduce_only: bool = False, ts: int = T0) -> dict[str, Any]:
    """Bybit v5 private topic ``order`` (linear; a stop is a conditional market order)."""
    stop = bool(trigger)
    return {
        "id": f"5923240c6880ab-c59f-420b-9adb-{ts}", "topic": "order", "creationTime": ts,
        "data": [{
            "category": "linear", "symbol": "BTCUSDT", "orderId": oid, "orderLinkId": cid, "blockTradeId": "", "side": side, "positionIdx": 0,
            "orderStatus": status, "cancelType": "UNKNOWN", "rejectReason": "EC_NoError", "timeInForce": "GTC" if stop else "IOC", "isLeverage": "",
            "price": "0", "qty": qty, "avgPrice": avg, "leavesQty": "0" if filled == qty else qty, "leavesValue": "0", "cumExecQty": filled,
            "cumExecValue": "0" if not avg else str(D(avg) * D(filled)), "cumExecFee": "0", "orderType": "Market", "stopOrderType": "Stop" if stop else "",
            "orderIv": "", "triggerPrice": trigger, "takeProfit": "", "stopLoss": "", "triggerBy": "MarkPrice" if stop else "", "tpTriggerBy": "",
            "slTriggerBy": "", "triggerDirection": direction, "placeType": "", "lastPriceOnCreated": "40000.00", "closeOnTrigger": False,
            "reduceOnly": reduce_only, "smpGroup": 0, "smpType": "None", "smpOrderId": "", "slLimitPrice": "0", "tpLimitPrice": "0", "tpslMode": "",
            "createType": "CreateByUser", "marketUnit": "", "createdTime": str(ts), "updatedTime": str(ts), "feeCurrency": "", "closedPnl": "0",
        }],
    }  # fmt: skip


def by_position(*, side: str, size: str, entry: str, mark: str = "40000.00", idx: int = 0, ts: int = T0) -> dict[str, Any]:
    """Bybit v5 private topic ``position`` (UTA: a flat position has side "")."""
    return {
        "id": f"1003076014fb7eedb-c7e6-45d6-a8c1-{ts}", "topic": "position", "creationTime": ts,
        "data": [{
            "positionIdx": idx, "tradeMode": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": "BTCUSDT", "side": side, "size": size,
            "entryPrice": entry, "sessionAvgPrice": "", "leverage": "10", "positionValue": str(D(size) * D(entry)), "positionBalance": "0",
            "markPrice": mark, "positionIM": "0", "positionMM": "0", "takeProfit": "0", "stopLoss": "0", "trailingStop": "0",
            "unrealisedPnl": "0", "curRealisedPnl": "0", "cumRealisedPnl": "0", "createdTime": str(ts), "updatedTime": str(ts),
            "tpslMode": "Full", "liqPrice": "", "bustPrice": "", "category": "linear", "positionStatus": "Normal", "adlRankIndicator": 2,
            "autoAddMargin": 0, "leverageSysUpdatedTime": "", "mmrSysUpdatedTime": "", "seq": 8172241024, "isReduceOnly": False,
        }],
    }  # fmt: skip


def by_ticker(mark: str, symbol: str = "BTCUSDT", ts: int = T0, *, delta: bool = False) -> dict[str, Any]:
    """Bybit v5 public topic ``tickers.<symbol>`` (linear): a snapshot, or a delta with the changed fields only."""
    if delta:
        data = {"symbol": symbol, "markPrice": mark} if mark else {"symbol": symbol, "bid1Price": "40000.10", "bid1Size": "2.12"}
        return {"topic": f"tickers.{symbol}", "type": "delta", "data": data, "cs": 78039939929, "ts": ts}
    data = {
        "symbol": symbol, "tickDirection": "PlusTick", "price24hPcnt": "0.017103", "lastPrice": mark, "prevPrice24h": mark, "highPrice24h": mark,
        "lowPrice24h": mark, "prevPrice1h": mark, "markPrice": mark, "indexPrice": mark, "openInterest": "68744.761", "openInterestValue": "1183601235.91",
        "turnover24h": "1570383121.943499", "volume24h": "91705.276", "nextFundingTime": str(ts + 3_600_000), "fundingRate": "-0.000212",
        "bid1Price": mark, "bid1Size": "84.489", "ask1Price": mark, "ask1Size": "83.020",
    }  # fmt: skip
    return {"topic": f"tickers.{symbol}", "type": "snapshot", "data": data, "cs": 24987956059, "ts": ts}


# ============================================================ venues + REST
class StreamingBinance(FakeBinanceFutures):
    """The Binance REST fake plus the user-data listenKey endpoints."""

    def __init__(self) -> None:
        super().__init__()
        self.marks["ETHUSDT"] = D("3000")
        self.listen_keys: list[str] = []

    def routes(self):
        return {**super().routes(), "POST /fapi/v1/listenKey": self.new_listen_key, "PUT /fapi/v1/listenKey": lambda p: {}}

    def new_listen_key(self, p: dict[str, Any]) -> dict[str, Any]:
        key = f"pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a{len(self.listen_keys):04d}"
        self.listen_keys.append(key)
        return {"listenKey": key}


class StreamingBybit(FakeBybitLinear):
    def __init__(self) -> None:
        super().__init__()
        self.marks["ETHUSDT"] = D("3000")


class Venues:
    """Per venue: the REST fake, where its streams live on the server, and its frames."""

    def __init__(self, name: str) -> None:
        self.name = name
        binance = name == "binanceusdm"
        self.private = "/private/ws" if binance else "/v5/private"
        self.public = "/market/ws" if binance else "/v5/public/linear"

    def fake(self) -> Any:
        return StreamingBinance() if self.name == "binanceusdm" else StreamingBybit()

    def mark(self, price: str, symbol: str = "BTCUSDT", ts: int = T0) -> dict[str, Any]:
        return bn_mark(price, symbol, ts) if self.name == "binanceusdm" else by_ticker(price, symbol, ts)

    def mark_topic(self, symbol: str) -> str:
        return f"{symbol.lower()}@markPrice@1s" if self.name == "binanceusdm" else f"tickers.{symbol}"

    def subscribed(self, conn: Conn, topic: str) -> bool:
        key, value, field = ("method", "SUBSCRIBE", "params") if self.name == "binanceusdm" else ("op", "subscribe", "args")
        return any(topic in f.get(field, ()) for f in conn.sent(key, value))

    def unsubscribed(self, conn: Conn, topic: str) -> bool:
        key, value, field = ("method", "UNSUBSCRIBE", "params") if self.name == "binanceusdm" else ("op", "unsubscribe", "args")
        return any(topic in f.get(field, ()) for f in conn.sent(key, value))

    def private_ready(self, server: WsVenue, topic: str) -> bool:
        """Binance: the user-data connection is open (the listenKey is the subscription). Bybit: authed and subscribed."""
        conns = server.live(self.private)
        if self.name == "binanceusdm":
            return bool(conns)
        return any(c.sent("op", "auth") and self.subscribed(c, topic) for c in conns)

    def public_ready(self, server: WsVenue, symbol: str = "BTCUSDT") -> bool:
        return any(self.subscribed(c, self.mark_topic(symbol)) for c in server.live(self.public))


@dataclasses.dataclass
class Env:
    v: Venues
    server: WsVenue
    fake: Any
    venue: Venue
    cfg: Any
    ctx: ActorContext

    @property
    def io(self) -> IOLoop:
        return self.ctx.io

    def run(self, coro: Any, timeout: float = 20) -> Any:
        return self.io.run(coro, timeout)

    def rest(self, route: str) -> int:
        return sum(1 for r in self.fake.requests if f"{r.method} {r.path}" == route)

    @property
    def mark_route(self) -> str:
        return "GET /fapi/v1/premiumIndex" if self.v.name == "binanceusdm" else "GET /v5/market/tickers"


async def open_venue(cfg: Any, fake: Any, ctx: ActorContext) -> Venue:
    """The production build path (config -> ccxt.pro exchange -> Venue), REST answered by ``fake``."""
    ex = build_ccxt_exchange(cfg, env=ENV, streams=wants_streams(cfg))
    ex.enableRateLimit = False  # the throttle is real time; the tests would only wait
    ex.set_markets(json.loads(MARKETS[cfg.exchange.name].read_text()))
    fake.requests = intercept_http(ex, fake.handle)
    venue = await build_ccxt_venue(cfg, ctx.clock, ctx.store, exchange=ex)
    del fake.requests[:]  # start-up reads (markets, the position mode) are not what these tests count
    return venue


@pytest.fixture(params=["binanceusdm", "bybit"])
def env(request, tmp_path: Path, ctx: ActorContext):
    name = request.param
    server = WsVenue(ctx.io, name).start()
    cfg = make_config(tmp_path, exchange_toml(name) + server.config_toml() + '[demo]\nsignals_file = ""\n')
    ctx = dataclasses.replace(ctx, config=cfg, directory=Directory())
    v = Venues(name)
    fake = v.fake()
    venue = ctx.io.run(open_venue(cfg, fake, ctx), 10)
    yield Env(v, server, fake, venue, cfg, ctx)
    ctx.io.run(venue.exchange.close(), 10)
    server.stop()


async def until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Await a condition on the loop (the server and ccxt run there too), bounded."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)
    return value


async def pushed(env: Env, watch: Callable[[], Any], ready: Callable[[], bool], prefix: str, *frames: dict[str, Any]) -> Any:
    """Start ``watch()``, wait until the server sees the subscription, push ``frames``, return the watch's result."""
    task = asyncio.ensure_future(watch())
    await until(ready, what="subscribed")
    assert await env.server.apush(prefix, *frames) >= 1
    return await asyncio.wait_for(task, 5)


# ================================================================== (a) orders
def test_order_updates_arrive_as_order_reports_with_decimals(env: Env):
    """Entry fill, then our stop (Binance: the algo book's ALGO_UPDATE) new and cancelled."""
    v, s = env.v, env.server

    async def go() -> list[list[OrderReport]]:
        ready = lambda: v.private_ready(s, "order")  # noqa: E731
        if v.name == "binanceusdm":
            frames = [
                bn_order(cid="tb-p1-e1", oid=8389765001, side="BUY", status="FILLED", qty="0.025", filled="0.025", avg="40000.10"),
                bn_algo(cid="tb-p1-s2", aid=1000002, status="NEW", trigger="39200.00", qty="0.025"),
                bn_algo(cid="tb-p1-s2", aid=1000002, status="CANCELED", trigger="39200.00", qty="0.025", ts=T0 + 60_000),
            ]
        else:
            frames = [
                by_order(cid="tb-p1-e1", oid="5f3ad2c1-0001", side="Buy", status="Filled", qty="0.025", filled="0.025", avg="40000.10"),
                by_order(cid="tb-p1-s2", oid="5f3ad2c1-0002", side="Sell", status="Untriggered", qty="0.025", filled="0", avg="", trigger="39200.00", direction=2, reduce_only=True),
                by_order(cid="tb-p1-s2", oid="5f3ad2c1-0002", side="Sell", status="Deactivated", qty="0.025", filled="0", avg="", trigger="39200.00", direction=2, reduce_only=True, ts=T0 + 60_000),
            ]
        return [await pushed(env, env.venue.watch_orders, ready, v.private, f) for f in frames]

    entry_batch, stop_batch, cancel_batch = env.run(go())
    [entry], [stop], [cancelled] = entry_batch, stop_batch, cancel_batch
    assert entry.client_id == "tb-p1-e1" and entry.symbol == "BTCUSDT" and entry.side == "buy"
    assert entry.status is OrderStatus.FILLED and entry.filled == D("0.025") and entry.average == D("40000.10")
    assert all(isinstance(x, Decimal) for x in (entry.amount, entry.filled, entry.average))
    assert not entry.is_stop
    assert stop.client_id == "tb-p1-s2" and stop.status is OrderStatus.OPEN and stop.side == "sell"
    assert stop.is_stop and stop.trigger_price == D("39200") and isinstance(stop.trigger_price, Decimal)
    assert stop.amount == D("0.025") and stop.filled == 0 and stop.reduce_only
    assert cancelled.status is OrderStatus.CANCELED and cancelled.order_id == stop.order_id
    if v.name == "binanceusdm":
        assert stop.order_id == "algo:1000002"  # the id a cancel or look-up routes to the algo book
        conn = s.conns[0]
        assert conn.path == "/private/ws" and conn.query == {"listenKey": env.fake.listen_keys[0]}
        assert env.rest("POST /fapi/v1/listenKey") == 1
        assert {r.host for r in env.fake.requests} == {"demo-fapi.binance.com"}  # REST still on the testnet (demo) host
    else:
        assert stop.order_id == "5f3ad2c1-0002"
        auth = s.conns[0].sent("op", "auth")[0]
        assert auth["args"][0] == ENV["TB_TEST_KEY"] and len(auth["args"][2]) == 64  # key, expiry, HMAC-SHA256 hex
        assert env.fake.requests == []  # Bybit logs in on the socket: no REST call at all


def test_a_burst_of_order_updates_is_delivered_whole(env: Env):
    """ccxt.pro resolves a watch with the first update of a burst only; the rest (a stop firing)
    must come with the next call at once, not with some later update."""
    v, s = env.v, env.server

    async def go() -> list[OrderReport]:
        if v.name == "binanceusdm":
            burst = [bn_algo(cid="tb-p1-s2", aid=1000002, status="TRIGGERING", trigger="39200.00", qty="0.025"),
                     bn_algo(cid="tb-p1-s2", aid=1000002, status="FINISHED", trigger="39200.00", qty="0.025", ts=T0 + 5),
                     bn_order(cid="tb-p1-x9", oid=8389765009, side="SELL", status="FILLED", qty="0.025", filled="0.025", avg="39190.00", reduce_only=True, ts=T0 + 6)]  # fmt: skip
            final = {"tb-p1-s2": "closed", "tb-p1-x9": "closed"}
        else:
            burst = [by_order(cid="tb-p1-s2", oid="5f3ad2c1-0002", side="Sell", status="Triggered", qty="0.025", filled="0", avg="", trigger="39200.00", direction=2, reduce_only=True),
                     by_order(cid="tb-p1-s2", oid="5f3ad2c1-0002", side="Sell", status="Filled", qty="0.025", filled="0.025", avg="39190.00", trigger="39200.00", direction=2, reduce_only=True, ts=T0 + 6),
                     by_order(cid="tb-p1-c3", oid="5f3ad2c1-0003", side="Sell", status="Cancelled", qty="0.010", filled="0", avg="", reduce_only=True, ts=T0 + 7)]  # fmt: skip
            final = {"tb-p1-s2": "closed", "tb-p1-c3": "canceled"}
        task = asyncio.ensure_future(env.venue.watch_orders())
        await until(lambda: v.private_ready(s, "order"), what="subscribed")
        conn = s.live(v.private)[0]
        for f in burst:  # back to back, nothing after them
            await conn.ws.send_str(json.dumps(f))
        got = await asyncio.wait_for(task, 5)
        cached = lambda: {o["clientOrderId"]: o["status"] for o in env.venue.exchange.orders or ()}  # noqa: E731
        await until(lambda: cached() == final, what="the whole burst handled by ccxt")
        while {o.client_id: o.status.value.replace("filled", "closed") for o in got} != final:
            got += await asyncio.wait_for(env.venue.watch_orders(), 2)  # a plain ccxt watch would wait for the next update here
        return got

    got = env.run(go())
    last = {o.client_id: o for o in got}
    assert last["tb-p1-s2"].status is OrderStatus.FILLED  # the stop's last word arrived, not only "triggering"
    assert len(got) <= 4


# =============================================================== (b) positions
def test_position_updates_arrive_as_symbol_side_quantity(env: Env):
    v, s = env.v, env.server

    async def go() -> list[list[tuple[str, str, Decimal]]]:
        ready = lambda: v.private_ready(s, "position")  # noqa: E731
        if v.name == "binanceusdm":
            frames = [bn_account(amount="0.025", entry="40000.1"), bn_account(amount="-0.010", entry="41000", ts=T0 + 10), bn_account(amount="0", entry="0.0", ts=T0 + 20)]
        else:
            frames = [by_position(side="Buy", size="0.025", entry="40000.1"), by_position(side="Sell", size="0.010", entry="41000", ts=T0 + 10), by_position(side="", size="0", entry="0", ts=T0 + 20)]
        return [await pushed(env, env.venue.watch_positions, ready, v.private, f) for f in frames]

    opened, flipped, flat = env.run(go())
    assert opened == [("BTCUSDT", "long", D("0.025"))] and isinstance(opened[0][2], Decimal)
    assert flipped == [("BTCUSDT", "short", D("0.010"))]
    assert flat and all(sym == "BTCUSDT" and qty == 0 for sym, _side, qty in flat)  # flat: quantity 0, whatever the side
    assert env.rest("GET /fapi/v3/positionRisk") == 0 and env.rest("GET /v5/position/list") == 0  # no REST snapshot (sync's reads are)


# ============================================================= (c) mark prices
def test_mark_prices_arrive_exact(env: Env):
    v, s = env.v, env.server

    async def go() -> list[dict[str, Decimal]]:
        watch = lambda: env.venue.watch_mark_prices(["BTCUSDT"])  # noqa: E731
        ready = lambda: v.public_ready(s)  # noqa: E731
        got = [await pushed(env, watch, ready, v.public, v.mark("40123.45"))]
        got.append(await pushed(env, watch, ready, v.public, v.mark("40124.10", ts=T0 + 1000)))
        if v.name == "bybit":  # deltas carry changed fields only; ccxt merges them into the snapshot
            got.append(await pushed(env, watch, ready, v.public, by_ticker("", ts=T0 + 1100, delta=True)))
            got.append(await pushed(env, watch, ready, v.public, by_ticker("40130.00", ts=T0 + 1200, delta=True)))
        return got

    got = env.run(go())
    prices = [{s: p for s, (p, _ts) in g.items()} for g in got]
    assert prices[0] == {"BTCUSDT": D("40123.45")} and isinstance(prices[0]["BTCUSDT"], Decimal)
    assert prices[1] == {"BTCUSDT": D("40124.10")}
    assert got[0]["BTCUSDT"][1] == T0 and got[1]["BTCUSDT"][1] == T0 + 1000  # the venue's time of each mark
    if v.name == "bybit":
        assert prices[2:] == [{"BTCUSDT": D("40124.10")}, {"BTCUSDT": D("40130.00")}]
    [conn] = s.conns
    assert conn.path.startswith(v.public) and v.subscribed(conn, v.mark_topic("BTCUSDT"))
    assert env.venue.mark_streams_supported() and env.venue.streams_supported()


# ======================================================= (d) drop, reconnect
class PumpProbe:
    """A StreamPump's callbacks, recorded (they run on the loop, like the real ones that tell actors)."""

    def __init__(self) -> None:
        self.states: list[tuple[str, str | None]] = []
        self.batches: list[Any] = []

    def state(self) -> str | None:
        return self.states[-1][0] if self.states else None


@pytest.mark.parametrize("kind", ["marks", "orders"])
def test_dropped_connection_is_reported_redialled_and_resubscribed(env: Env, kind: str):
    """The server cuts the connection: the pump reports down, ccxt dials a new connection on the
    next watch and subscribes again (Bybit: auth again; Binance: the same listenKey), the pump
    reports up as soon as that connection is open (orders may be silent for hours), and later
    updates flow."""
    v, s = env.v, env.server
    p = PumpProbe()
    if kind == "marks":
        watch, prefix, ready = (lambda: env.venue.watch_mark_prices(["BTCUSDT"])), v.public, (lambda: v.public_ready(s))
        frame = lambda n: v.mark(f"4010{n}.5", ts=T0 + n)  # noqa: E731
    else:
        watch, prefix, ready = env.venue.watch_orders, v.private, (lambda: v.private_ready(s, "order"))
        frame = lambda n: (bn_order if v.name == "binanceusdm" else by_order)(cid=f"tb-p1-e{n}", oid=8389765000 + n if v.name == "binanceusdm" else f"5f3ad2c1-{n:04d}", side="BUY" if v.name == "binanceusdm" else "Buy", status="FILLED" if v.name == "binanceusdm" else "Filled", qty="0.025", filled="0.025", avg="40000.10", ts=T0 + n)  # noqa: E731
    pump = StreamPump(kind, watch, p.batches.append, lambda st, err: p.states.append((st, err)), backoff_initial_s=0.05, connected=lambda: env.venue.stream_connected(kind), probe_interval_s=0.02)

    async def go() -> None:
        pump.start(asyncio.get_running_loop())
        await until(ready, what="first subscription")
        await until(lambda: p.state() == "up", what="up (connection open)")
        await s.apush(prefix, frame(1))
        await until(lambda: len(p.batches) == 1, what="first update")
        first = s.live(prefix)[0]
        assert await s.adrop(prefix) == 1
        await until(lambda: any(st == "down" for st, _ in p.states), what="down")
        await until(lambda: [c for c in s.live(prefix) if c is not first] and ready(), what="a new connection, subscribed")
        await until(lambda: p.state() == "up", what="up again before any update")
        await s.apush(prefix, frame(2))
        await until(lambda: len(p.batches) == 2, what="an update after the reconnect")
        await pump.stop()

    env.run(go())
    assert [st for st, _ in p.states] == ["connecting", "up", "down", "up"]
    down_error = next(err for st, err in p.states if st == "down")
    assert "NetworkError" in down_error
    second = [c for c in s.conns if c.path.startswith(prefix)][-1]
    if v.name == "bybit" and kind == "orders":
        assert len(second.sent("op", "auth")) == 1 and v.subscribed(second, "order")
    if v.name == "binanceusdm" and kind == "orders":
        assert second.query == {"listenKey": env.fake.listen_keys[0]} and env.rest("POST /fapi/v1/listenKey") == 1
    if kind == "marks":
        assert v.subscribed(second, v.mark_topic("BTCUSDT"))
        assert p.batches[-1] == {"BTCUSDT": (D("40102.5"), T0 + 2)}
    else:
        assert [o.client_id for o in p.batches[-1]] == ["tb-p1-e2"]


@pytest.mark.parametrize("env", ["binanceusdm"], indirect=True)
def test_binance_listen_key_expired_logs_in_again(env: Env):
    """ccxt 4.5.90 ignores ``listenKeyExpired`` (and Binance then sends nothing more on that connection):
    our hook fails the watch, closes the connection and forgets the key; the next watch gets a new key."""
    v, s = env.v, env.server
    old_key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a0000"

    async def go() -> str:
        task = asyncio.ensure_future(env.venue.watch_orders())
        await until(lambda: v.private_ready(s, "order"))
        await s.apush(v.private, {"e": "listenKeyExpired", "E": str(T0), "listenKey": old_key})
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(task, 5)
        await until(lambda: not s.live(v.private), what="the expired connection closed")
        again = await pushed(env, env.venue.watch_orders, lambda: v.private_ready(s, "order"), v.private, bn_order(cid="tb-p1-e1", oid=8389765001, side="BUY", status="FILLED", qty="0.025", filled="0.025", avg="40000.10"))
        assert [o.client_id for o in again] == ["tb-p1-e1"]
        return str(info.value)

    error = env.run(go())
    assert "listenKeyExpired" in error and old_key not in error
    assert env.fake.listen_keys[0] == old_key and len(env.fake.listen_keys) == 2
    assert [c.query["listenKey"] for c in s.conns] == env.fake.listen_keys


@pytest.mark.parametrize("env", ["binanceusdm"], indirect=True)
def test_stream_errors_do_not_carry_the_listen_key(env: Env):
    """A refused user-data handshake: aiohttp's error quotes the URL, whose query is the listenKey
    (it gives read access to the account's orders and positions). The watch's error is redacted."""
    env.server.refuse["/private"] = 400

    async def go() -> str:
        with pytest.raises(Exception) as info:
            await asyncio.wait_for(env.venue.watch_orders(), 5)
        return f"{type(info.value).__name__}: {info.value}"

    error = env.run(go())
    key = env.fake.listen_keys[0]
    assert "400" in error and "listenKey=***" in error and key not in error


# ====================================================== (e) the price feed
class MarkCollector(ManagedActor):
    """Stands in for a position actor: records the marks it is told."""

    def started(self) -> None:
        self.got: list[MarkPrice] = []

    @handles(MarkPrice)
    def _got(self, msg: MarkPrice) -> None:
        self.got.append(msg)


@dataclasses.dataclass
class FeedWorld:
    env: Env
    sup: pykka.ActorRef
    marks: pykka.ActorRef

    @property
    def feed(self) -> Any:
        return eventually(lambda: self.env.ctx.directory.lookup("price_feed"), what="price feed")

    def got(self, symbol: str = "BTCUSDT") -> list[Decimal]:
        return [m.price for m in self.marks.proxy().got.get() if m.symbol == symbol]

    def tick(self, n: int = 1) -> None:
        """Advance the virtual clock by ``n`` mark intervals; wait until the feed handled them."""
        for _ in range(n):
            self.env.ctx.clock.advance(self.env.cfg.feeds.mark_interval_ms)
            eventually(lambda: not self.feed.proxy().reading.get(), what="read finished")

    def problems(self) -> list[str]:
        return [p for p in self.sup.proxy().status().get()["problems"] if p.startswith("stream:marks")]

    def stream_state(self) -> str:
        return self.feed.proxy().stream_state.get()


@pytest.fixture
def feed_world(env: Env):
    ctx = env.ctx
    spec = ChildSpec(name="price_feed", factory=lambda name, c: PriceFeed.start(name=name, ctx=c, venue=env.venue))
    sup = Supervisor.start(ctx=ctx, children=[spec])
    marks = MarkCollector.start(name="pos", ctx=ctx)
    world = FeedWorld(env, sup, marks)
    world.feed.tell(SubscribeMarks(symbol="BTCUSDT", subscriber=marks, name="pos"))
    # Subscribed (so started: its mark timer is armed) before the first tick advances the clock;
    # on a loaded machine a tick could otherwise pass before the timer exists, and nothing fires.
    eventually(lambda: "BTCUSDT" in world.feed.proxy().subscribers.get(), what="feed subscribed")
    yield world
    sup.tell(Shutdown(reason="test end"))
    if not sup.actor_stopped.wait(3):
        ctx.clock.advance(60_000)
        sup.actor_stopped.wait(5)
    marks.stop()


def test_price_feed_streams_falls_back_to_reads_while_down_and_reports_it(feed_world: FeedWorld):
    w, env = feed_world, feed_world.env
    v, s = env.v, env.server
    route = env.mark_route

    # Start: the first tick subscribes and reads once (the stream has nothing yet).
    w.tick()
    eventually(lambda: v.public_ready(s) and w.stream_state() == "up", what="stream up")
    assert env.rest(route) == 1 and w.got() == [D("40000")]

    # Up: every mark comes from the stream; no reads, however many ticks.
    for n in range(1, 6):
        price = f"4010{n}.25"
        s.push(v.public, v.mark(price, ts=T0 + n * 1000))
        eventually(lambda: w.got()[-1] == D(price), what=f"streamed mark {price}")
        w.tick()
    assert env.rest(route) == 1 and w.problems() == []

    # Stale guard: the stream stays up but says nothing about BTC for more than 3 intervals: read.
    w.tick(STALE)  # the last update came one interval before: now it is STALE + 1 intervals old
    assert env.rest(route) == 2

    # Down: the server cuts the connection and refuses new ones. Health problem; reads every tick.
    s.refuse[v.public] = 503
    s.drop(v.public)
    problems = eventually(w.problems, what="health problem")
    since = datetime.datetime.fromtimestamp(env.ctx.clock.now_ms() / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert problems == [f"stream:marks: down since {since}: polling every 1000 ms"]
    env.fake.marks["BTCUSDT"] = D("40500")
    reads = env.rest(route)
    w.tick(3)
    assert env.rest(route) == reads + 3 and w.got()[-1] == D("40500")

    # Up again: problem cleared, the stream delivers, reads stop.
    s.refuse.clear()
    eventually(lambda: w.problems() == [] and v.public_ready(s), timeout=15, what="reconnected, problem cleared")
    s.push(v.public, v.mark("40600.75", ts=T0 + 60_000))
    eventually(lambda: w.got()[-1] == D("40600.75"), what="streamed after the outage")
    reads = env.rest(route)
    w.tick(2)
    assert env.rest(route) == reads
    events = [e.type for e in env.ctx.io.run(env.ctx.store.query(type_prefixes=("feed.",)), 5)]
    assert events.count("feed.stream_down") == 1 and events.count("feed.stream_up") == 1 and "feed.mark_stale" in events


def test_price_feed_resubscribes_when_the_symbols_change(feed_world: FeedWorld):
    w, env = feed_world, feed_world.env
    v, s = env.v, env.server
    w.tick()
    eventually(lambda: v.public_ready(s) and w.stream_state() == "up", what="stream up")
    w.feed.tell(SubscribeMarks(symbol="ETHUSDT", subscriber=w.marks, name="pos"))
    w.tick()
    eventually(lambda: v.public_ready(s, "ETHUSDT"), what="ETH subscribed")
    [conn] = s.live(v.public)  # the same connection carries the new set
    key, value, field = ("method", "SUBSCRIBE", "params") if v.name == "binanceusdm" else ("op", "subscribe", "args")
    subs = [list(f.get(field, ())) for f in conn.sent(key, value)]
    assert subs == [[v.mark_topic("BTCUSDT")], [v.mark_topic("ETHUSDT")]], subs  # only the difference is sent
    assert not v.unsubscribed(conn, v.mark_topic("BTCUSDT"))  # BTC streams throughout: no gap
    s.push(v.public, v.mark("3001.5", "ETHUSDT"), v.mark("40100.5"))
    eventually(lambda: w.got("ETHUSDT")[-1:] == [D("3001.5")] and w.got()[-1:] == [D("40100.5")], what="both symbols streamed")
    # BTC's subscriber leaves: only BTC is unsubscribed; ETH keeps streaming on the same watch
    w.feed.tell(UnsubscribeMarks(symbol="BTCUSDT", name="pos"))
    w.tick()
    eventually(lambda: v.unsubscribed(conn, v.mark_topic("BTCUSDT")), what="BTC unsubscribed")
    key, value, field = ("method", "UNSUBSCRIBE", "params") if v.name == "binanceusdm" else ("op", "unsubscribe", "args")
    assert [list(f.get(field, ())) for f in conn.sent(key, value)] == [[v.mark_topic("BTCUSDT")]]
    s.push(v.public, v.mark("3002.5", "ETHUSDT", ts=T0 + 3000))
    eventually(lambda: w.got("ETHUSDT")[-1:] == [D("3002.5")], what="ETH streams after BTC left")
    assert w.stream_state() == "up" and s.live(v.public) == [conn]





def test_price_feed_never_hands_out_a_stale_mark_as_fresh(feed_world: FeedWorld):
    """Bug 2: a symbol's last streamed mark must not reach a new subscriber later, stamped now
    (a re-entry trailed from the pre-trigger mark). Marks carry the venue's time; a push older
    than the feed's freshness bound is dropped; an unsubscribed symbol's mark is forgotten."""
    w, env = feed_world, feed_world.env
    v, s = env.v, env.server
    w.tick()
    eventually(lambda: v.public_ready(s) and w.stream_state() == "up", what="stream up")
    now = env.ctx.clock.now_ms()
    s.push(v.public, v.mark("40100.5", ts=now - 200))
    eventually(lambda: w.got()[-1:] == [D("40100.5")], what="streamed mark")
    first = w.marks.proxy().got.get()[-1]
    assert first.ts_ms == now - 200  # the venue's time, not the arrival's
    w.feed.tell(UnsubscribeMarks(symbol="BTCUSDT", name="pos"))
    w.tick()
    env.ctx.clock.advance(10_000)  # the market moves on; nobody follows BTC
    env.fake.marks["BTCUSDT"] = D("39000")
    late = MarkCollector.start(name="pos2", ctx=env.ctx)
    try:
        w.feed.tell(SubscribeMarks(symbol="BTCUSDT", subscriber=late, name="pos2"))
        w.tick()
        got = eventually(lambda: late.proxy().got.get(), what="a mark for the new subscriber")
        assert got[0].price == D("39000") and got[0].ts_ms >= env.ctx.clock.now_ms() - w.feed.proxy().fresh_ms.get()
        # a push whose venue time is far behind is no current mark
        stale_ts = env.ctx.clock.now_ms() - 60_000
        s.push(v.public, v.mark("41111.5", ts=stale_ts), v.mark("39001.5", ts=env.ctx.clock.now_ms()))
        eventually(lambda: late.proxy().got.get()[-1].price == D("39001.5"), what="the fresh push")
        assert D("41111.5") not in [m.price for m in late.proxy().got.get()]
    finally:
        late.stop()


# ========================================================== small pieces
def test_rest_only_exchange_keeps_polling(tmp_path: Path, ctx: ActorContext):
    """Without streams in the config the exchange is ccxt's REST class: no watch_*, the venue polls."""
    cfg = make_config(tmp_path, exchange_toml("bybit") + "[sync]\nuse_streams = false\n[feeds]\nuse_streams = false\n")
    assert not wants_streams(cfg)
    venue = ctx.io.run(open_venue(cfg, StreamingBybit(), ctx), 10)
    try:
        assert type(venue.exchange).__module__.startswith("ccxt.async_support")
        assert not venue.streams_supported() and not venue.mark_streams_supported() and not venue.stream_connected("marks")
    finally:
        ctx.io.run(venue.exchange.close(), 5)


def test_pump_backs_off_exponentially_capped_and_resets_after_an_update():
    """Injected sleep and jitter: the delays double up to the cap; an update resets them."""
    outcomes = [OSError("a"), OSError("b"), OSError("c"), OSError("d"), ["x"], OSError("e"), ["y"]]
    slept: list[float] = []
    batches: list[Any] = []

    async def watch() -> Any:
        if not outcomes:
            await asyncio.Event().wait()
        item = outcomes.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    async def sleep(s: float) -> None:
        slept.append(s)

    async def go() -> None:
        pump = StreamPump("t", watch, batches.append, lambda st, err: None, backoff_initial_s=1.0, backoff_max_s=4.0, sleep=sleep, jitter=lambda: 1.0)
        pump.start(asyncio.get_running_loop())
        await until(lambda: len(batches) == 2)
        await pump.stop()

    asyncio.run(go())
    assert slept == [1.0, 2.0, 4.0, 4.0, 1.0] and batches == [["x"], ["y"]]
