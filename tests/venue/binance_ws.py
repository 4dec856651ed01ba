"""The websocket side of the Binance USDⓈ-M-like venue: user data and mark price streams.

Served by :class:`~tests.venue.binance_server.BinanceVenueServer`'s own aiohttp
app (``BinanceVenueServer(streams=True)``), on the paths ccxt.pro derives from
the ``ws.linear`` URL of :func:`~tests.venue.binance_server.ccxt_urls`:

* ``/private/ws?listenKey=<key>``: the user-data stream. The key must be one
  ``POST /fapi/v1/listenKey`` issued and not expired (else the handshake is
  refused, HTTP 400). Every change of the REST server's engine is pushed as
  Binance does: ``ORDER_TRADE_UPDATE`` for the regular book (NEW, then TRADE
  for a fill), ``ALGO_UPDATE`` for conditional orders (NEW / CANCELED /
  EXPIRED; a fired stop: TRIGGERED with ``ai`` = its child order, the child's
  ORDER_TRADE_UPDATEs, then FINISHED), ``ACCOUNT_UPDATE`` with the signed
  ``pa`` of the position that changed (0 when flat, ``ps`` BOTH in one-way
  mode). The pushes come from the engine's listener, so they follow the venue's
  real state changes (our orders, a human's, stop triggers), in order.
* ``/market/ws/<n>``: mark streams. ``SUBSCRIBE`` / ``UNSUBSCRIBE`` with
  ``<symbol>@markPrice[@1s]`` params, answered ``{"result": null, "id": n}``;
  every ``mark_push_ms`` each subscribed symbol gets a ``markPriceUpdate`` with
  the engine's mark and the event time ``E``.
* Ping/pong: the server pings every ``ping_s`` (aiohttp heartbeat); the client's
  pings are answered (aiohttp autoping), silent connections included.

Admin hooks (thread-safe; over HTTP as ``/admin/ws_drop`` ...):
:meth:`drop` (``how="close"``: a close frame; ``"abort"``: the TCP connection is
cut with no closing handshake), :meth:`silence` (the connections open now stay
open and answer pings, but nothing more is pushed on them: a venue-side stall;
a new connection is served normally), :meth:`expire_listen_key`
(``listenKeyExpired`` pushed, the key refused from then on).
Every control frame a client sent is kept (:attr:`Conn.received`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from adapters.paper.model import CANCELED, CLOSED, EXPIRED, OPEN, Order

if TYPE_CHECKING:
    from tests.venue.binance_server import BinanceVenueServer

USER, MARKET = "user", "market"


def _num(value: Decimal | None) -> str:
    return "0" if value is None else format(value, "f")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass
class Conn:
    """One websocket connection as the venue sees it."""

    kind: str  # user / market
    path: str
    query: dict[str, str]
    ws: web.WebSocketResponse
    transport: Any
    opened_ms: int
    queue: asyncio.Queue[dict[str, Any]] = dataclasses.field(default_factory=asyncio.Queue)
    received: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    subscribed: set[str] = dataclasses.field(default_factory=set)  # market: stream names
    sent: int = 0  # frames pushed
    silent: bool = False
    closed: bool = False

    def frames(self, method: str) -> list[dict[str, Any]]:
        """Control frames the client sent with ``method`` (SUBSCRIBE / UNSUBSCRIBE)."""
        return [f for f in self.received if f.get("method") == method]


class BinanceStreams:
    """The streams of one :class:`BinanceVenueServer` (its engine, lock and loop)."""

    def __init__(self, server: BinanceVenueServer, *, mark_push_ms: int = 1000, ping_s: float = 180.0) -> None:
        self.server = server
        self.mark_push_ms = mark_push_ms
        self.ping_s = ping_s
        self.conns: list[Conn] = []
        self._lock = threading.Lock()  # conns (server loop) read from the test thread
        self.keys: set[str] = set()  # listenKeys issued and not expired
        self.expired: set[str] = set()
        self._seen: set[str] = set()  # engine order ids already announced (NEW pushed)
        self._pushed_children: set[str] = set()
        self.pushes: list[tuple[int, str, dict[str, Any]]] = []  # (t_ms, event type, frame) in push order
        self._closing: set[asyncio.Future[Any]] = set()
        server.engine.add_listener(self._on_engine)

    # ------------------------------------------------------------- routes
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/private/ws", self._user)
        app.router.add_get("/market/ws", self._market)
        app.router.add_get("/market/ws/{n}", self._market)

    def issue_key(self, key: str) -> None:
        self.keys.add(key)

    async def _user(self, request: web.Request) -> web.StreamResponse:
        key = request.query.get("listenKey", "")
        if key not in self.keys:
            self._record(request, 400)
            return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        return await self._serve(request, USER)

    async def _market(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, MARKET)

    def _record(self, request: web.Request, status: int) -> None:
        from tests.venue.timeline import Request

        now = _now_ms()
        params = {k: ("***" if k == "listenKey" else v) for k, v in request.query.items()}
        self.server.timeline.record_request(Request(now, now, "GET", request.path, params, status, None, 0, 0))

    async def _serve(self, request: web.Request, kind: str) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=self.ping_s, autoping=True)
        await ws.prepare(request)
        self._record(request, 101)
        conn = Conn(kind, request.path, dict(request.query), ws, request.transport, _now_ms())
        with self._lock:
            self.conns.append(conn)
        writer = asyncio.ensure_future(self._write(conn))
        ticker = asyncio.ensure_future(self._tick_marks(conn)) if kind == MARKET else None
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                try:
                    frame = json.loads(msg.data)
                except ValueError:
                    continue
                conn.received.append(frame)
                if conn.silent:
                    continue
                reply = self._control(conn, frame)
                if reply is not None:
                    conn.queue.put_nowait(reply)
        finally:
            conn.closed = True
            writer.cancel()
            if ticker is not None:
                ticker.cancel()
        return ws

    def _control(self, conn: Conn, frame: dict[str, Any]) -> dict[str, Any] | None:
        method, params = frame.get("method"), frame.get("params") or []
        if method == "SUBSCRIBE":
            conn.subscribed.update(str(p) for p in params)
        elif method == "UNSUBSCRIBE":
            conn.subscribed.difference_update(str(p) for p in params)
        elif method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.subscribed), "id": frame.get("id")}
        else:
            return None
        return {"result": None, "id": frame.get("id")}

    async def _write(self, conn: Conn) -> None:
        while True:
            frame = await conn.queue.get()
            if frame.get("__silence__"):
                conn.silent = True
            if conn.silent or conn.closed:
                continue
            try:
                await conn.ws.send_str(json.dumps(frame, separators=(",", ":")))
                conn.sent += 1
            except (ConnectionError, RuntimeError):
                return

    async def _tick_marks(self, conn: Conn) -> None:
        while not conn.closed:
            await asyncio.sleep(self.mark_push_ms / 1000)
            if conn.silent or not conn.subscribed:
                continue
            now = _now_ms()
            with self.server._lock:
                marks = dict(self.server.engine.marks)
            for unified, price in marks.items():
                sid = self.server.markets.resolve(unified).id
                if not any(s.startswith(f"{sid.lower()}@markprice") for s in (x.lower() for x in conn.subscribed)):
                    continue
                p = _num(price)
                conn.queue.put_nowait({"e": "markPriceUpdate", "E": now, "s": sid, "p": p, "i": p, "P": p, "r": "0.00010000", "T": now + 3_600_000})

    # -------------------------------------------------------- engine -> pushes
    def _on_engine(self, kind: str, key: str) -> None:
        """Called by the engine (under the server's lock) after each change."""
        now = _now_ms()
        eng = self.server.engine
        if kind == "order":
            o = eng.orders.get(key)
            frames = [] if o is None else (self._algo_frames(o, now) if o.is_stop else self._order_frames(o, now))
        elif kind == "position":
            frames = [self._account_frame(key, now)]
        else:
            frames = []
        if frames:
            self._fanout(frames)

    def _order_frames(self, o: Order, now: int, *, client_id: str | None = None, oid: str | None = None) -> list[dict[str, Any]]:
        oid = oid or o.id
        out = []
        if oid not in self._seen:
            self._seen.add(oid)
            out.append(self._order_update(o, now, "NEW", "NEW", client_id=client_id, oid=oid, filled=False))
        if o.status == OPEN:
            return out if out else [self._order_update(o, now, "NEW", "NEW", client_id=client_id, oid=oid, filled=False)]
        if o.status == CLOSED or (o.status == EXPIRED and o.filled):
            status = "FILLED" if o.filled >= o.amount else "PARTIALLY_FILLED"
            out.append(self._order_update(o, now, "TRADE", status, client_id=client_id, oid=oid, filled=True))
        if o.status in (CANCELED, EXPIRED) and not (o.status == EXPIRED and o.filled >= o.amount):
            x = "CANCELED" if o.status == CANCELED else "EXPIRED"
            out.append(self._order_update(o, now, x, x, client_id=client_id, oid=oid, filled=False))
        return out

    def _order_update(self, o: Order, now: int, x: str, status: str, *, client_id: str | None, oid: str, filled: bool) -> dict[str, Any]:
        avg = o.average if filled else None
        sid = self.server.markets.resolve(o.symbol).id
        return {
            "e": "ORDER_TRADE_UPDATE", "E": now, "T": now,
            "o": {
                "s": sid, "c": client_id if client_id is not None else (o.client_id or f"web_{oid}"), "S": o.side.upper(), "o": "MARKET", "f": "GTC",
                "q": _num(o.requested_amount or o.amount), "p": "0", "ap": _num(avg) if avg is not None else "0", "sp": "0", "x": x, "X": status,
                "i": int(oid), "l": _num(o.filled) if filled else "0", "z": _num(o.filled), "L": _num(avg) if avg is not None else "0",
                "N": "USDT", "n": _num(o.fee) if filled else "0", "T": now, "t": int(o.trade_ids[-1]) if filled and o.trade_ids else 0,
                "b": "0", "a": "0", "m": False, "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": "MARKET", "ps": self.server._pos_side(o),
                "cp": o.close_position, "rp": "0", "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": 0,
            },
        }  # fmt: skip

    def _algo_update(self, o: Order, now: int, status: str, actual: str = "") -> dict[str, Any]:
        sid = self.server.markets.resolve(o.symbol).id
        return {
            "e": "ALGO_UPDATE", "T": now, "E": now,
            "o": {
                "caid": o.client_id, "aid": int(o.id), "at": "CONDITIONAL", "o": "STOP_MARKET" if o.kind == "stop_market" else "TAKE_PROFIT_MARKET",
                "s": sid, "S": o.side.upper(), "ps": self.server._pos_side(o), "f": "GTC", "q": _num(o.requested_amount or o.amount), "X": status,
                "ai": actual, "ap": _num(o.average) if actual and o.average is not None else "0.00000", "aq": _num(o.filled) if actual else "0.00000",
                "act": "MARKET" if actual else "0", "tp": _num(o.trigger_price), "p": "0", "V": "EXPIRE_MAKER", "wt": "MARK_PRICE", "pm": "NONE",
                "cp": o.close_position, "pP": False, "R": o.reduce_only, "tt": now if actual else 0, "gtd": 0, "rm": o.reason if status == "EXPIRED" else "",
            },
        }  # fmt: skip

    def _algo_frames(self, o: Order, now: int) -> list[dict[str, Any]]:
        if o.status == OPEN:
            return [self._algo_update(o, now, "NEW")]
        if o.status == CANCELED:
            return [self._algo_update(o, now, "CANCELED")]
        if o.triggered and o.status == CLOSED:
            child = self.server._child(o)
            if child.id in self._pushed_children:
                return []
            self._pushed_children.add(child.id)
            frames = [self._algo_update(o, now, "TRIGGERED", child.id)]
            frames += self._order_frames(child, now, oid=child.id, client_id=f"web_{child.id}")
            return [*frames, self._algo_update(o, now, "FINISHED", child.id)]
        return [self._algo_update(o, now, "EXPIRED")]

    def _account_frame(self, key: str, now: int) -> dict[str, Any]:
        eng = self.server.engine
        pos = eng.positions.get(key)
        unified, pos_side = key.split("|", 1)
        sid = self.server.markets.resolve(unified).id
        if pos is not None:
            amt = pos.size if pos.side == "long" else -pos.size
            row = {"s": sid, "pa": _num(amt), "ep": _num(pos.entry_price), "bep": _num(pos.entry_price), "cr": "0", "up": _num(eng.unrealized_pnl(pos)), "mt": "isolated", "iw": _num(pos.margin)}
        else:
            row = {"s": sid, "pa": "0", "ep": "0.0", "bep": "0", "cr": "0", "up": "0", "mt": "isolated", "iw": "0"}
        row.update(ps="BOTH" if pos_side == "both" else pos_side.upper(), ma="USDT")
        wallet = _num(eng.wallet)
        return {"e": "ACCOUNT_UPDATE", "E": now, "T": now, "a": {"m": "ORDER", "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}], "P": [row]}}

    def _fanout(self, frames: list[dict[str, Any]]) -> None:
        now = _now_ms()
        self.pushes.extend((now, str(f.get("e")), f) for f in frames)
        loop = self.server._loop
        if loop is None:
            return

        def put() -> None:
            for c in self.live(USER):
                for f in frames:
                    c.queue.put_nowait(f)

        loop.call_soon_threadsafe(put)

    # ----------------------------------------------------------------- admin
    def live(self, kind: str | None = None) -> list[Conn]:
        with self._lock:
            return [c for c in self.conns if not c.closed and kind in (None, c.kind)]

    def _on_loop(self, fn: Any) -> None:
        loop = self.server._loop
        assert loop is not None, "start() the server first"
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        if threading.current_thread() is getattr(self.server, "_thread", None):
            run()
        else:
            loop.call_soon_threadsafe(run)
            done.wait(5)

    def drop(self, kind: str | None = None, *, how: str = "close") -> int:
        """End the open connections of ``kind``: ``close`` sends a close frame, ``abort`` cuts TCP."""
        conns = self.live(kind)

        def run() -> None:
            for c in conns:
                if how == "abort":
                    c.transport.abort() if hasattr(c.transport, "abort") else c.transport.close()
                else:
                    task = asyncio.ensure_future(c.ws.close(code=1001, message=b"going away"))
                    self._closing.add(task)
                    task.add_done_callback(self._closing.discard)

        self._on_loop(run)
        return len(conns)

    def silence(self, kind: str | None = None) -> int:
        """The open connections of ``kind`` stay open (and answer pings) but push nothing more."""
        conns = self.live(kind)
        for c in conns:
            c.silent = True
        return len(conns)

    def expire_listen_key(self) -> list[str]:
        """Binance's ``listenKeyExpired``: pushed on the user connections, the keys refused from now on."""
        keys = sorted(self.keys)
        self.expired.update(keys)
        self.keys.clear()
        now = _now_ms()
        conns = self.live(USER)

        def run() -> None:
            for c in conns:
                key = c.query.get("listenKey", "")
                c.queue.put_nowait({"e": "listenKeyExpired", "E": str(now), "listenKey": key})
                c.queue.put_nowait({"__silence__": True})  # Binance sends nothing more on it

        self._on_loop(run)
        return keys

    def admin_routes(self) -> dict[str, Any]:
        return {
            "ws_drop": lambda a: self.drop(a.get("kind"), how=a.get("how", "close")),
            "ws_silence": lambda a: self.silence(a.get("kind")),
            "ws_expire": lambda a: self.expire_listen_key(),
            "ws_conns": lambda a: [{"kind": c.kind, "path": c.path, "closed": c.closed, "silent": c.silent, "sent": c.sent, "subscribed": sorted(c.subscribed)} for c in self.conns],
        }
