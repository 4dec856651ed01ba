"""The web dashboard on the bot's HTTP server: positions (live), history, one position's chart and timeline.

Read-only pages (actions only with ``http.actions``: :meth:`Dashboard.action`), served where ``/health`` is (``http.host``, loopback by
default; beyond it the server's bearer token guards every page). Sources, the
same as the CLI's:

- positions: the store's projection (what ``ctl positions`` reads) with the
  marks the bot saw (:class:`actors.mark_book.MarkBook`, fed by the price feed)
  through :func:`actors.position_view.trader_row`;
- the health banner: the supervisor's status, as ``/health`` answers it;
- alerts: the stored ``alert.sent`` / ``alert.failed`` events;
- history: :func:`actors.position_timeline.build_timeline` and
  :mod:`actors.pnl_summary` over the closed positions;
- the chart: the venue's candles (``fetch_ohlcv`` through the venue's executor,
  so under its request budget) where the venue serves them, the marks seen, and
  the position's events.

Live updates: ``/events`` is a server-sent-event stream. The page gets a fresh
rendering of the positions table when the store commits a position or alert
event (a subscriber on the store's fan-out: bounded, never slowing the writer)
or a new mark arrives; renderings are coalesced (at most one per
:data:`MIN_PUSH_S`), and each browser has a small queue whose oldest entry is
dropped when it lags, so a slow browser costs nothing but its own staleness.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import TYPE_CHECKING, Any

from aiohttp import web
from loguru import logger

from actors.mark_book import MarkBook
from actors.pnl_summary import closed_trades, summarize
from actors.position_timeline import build_timeline
from actors.position_view import stop_kind, trader_row
from adapters.errors import VenueError
from adapters.http_server import HttpServer
from supervision.commands import with_age
from tradebot import dashboard_pages as pages
from tradebot.dashboard_chart import chart_svg, position_series

if TYPE_CHECKING:
    from supervision.runtime import Runtime

#: The least time between two pushes of the positions table.
MIN_PUSH_S = 0.2
#: Pushes one browser may have waiting before the oldest is dropped.
CLIENT_QUEUE = 4
_HTML = "text/html"


class LiveHub:
    """SSE clients and the coalescing pusher (on the I/O loop)."""

    def __init__(self, render: Any) -> None:
        self._render = render
        self.clients: set[asyncio.Queue[str | None]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pushed = 0
        self.closed = False

    def attach(self, q: asyncio.Queue[str | None]) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="dashboard-live")
        self.clients.add(q)
        self.poke()

    def poke(self) -> None:
        """On the loop: something changed."""
        if self._wake is not None and self.clients:
            self._wake.set()

    def poke_threadsafe(self) -> None:
        """From any thread (the price feed's): cheap, and nothing when nobody watches."""
        loop = self._loop
        if loop is not None and self.clients:
            loop.call_soon_threadsafe(self.poke)

    async def _run(self) -> None:
        assert self._wake is not None and self._loop is not None
        last = 0.0
        while True:
            await self._wake.wait()
            delay = last + MIN_PUSH_S - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # coalesce: whatever changes meanwhile goes in this push
            self._wake.clear()
            last = self._loop.time()
            try:
                payload = await self._render()
            except Exception as exc:
                logger.opt(exception=exc).warning("dashboard: could not render the live table")
                continue
            for q in list(self.clients):
                offer(q, payload)
            self.pushed += 1

    async def close(self) -> None:
        self.closed = True  # a browser reconnecting from now on is answered at once, so the server stops without waiting
        for q in list(self.clients):
            offer(q, None)
        if self._task is not None:
            self._task.cancel()


def offer(q: asyncio.Queue[Any], item: Any) -> None:
    """Put without waiting; a full queue drops its oldest."""
    while True:
        try:
            q.put_nowait(item)
            return
        except asyncio.QueueFull:
            q.get_nowait()


class Dashboard:
    def __init__(self, runtime: Runtime) -> None:
        assert runtime.store is not None
        self.runtime = runtime
        self.store = runtime.store
        book = runtime.directory.lookup("mark_book")  # the wiring's (tradebot.wiring.start_mark_book): ctl positions reads the same
        if book is None:
            book = MarkBook(runtime.directory, increments=self.increments)
            runtime.directory.register("mark_book", book)
        self.book: MarkBook = book
        self.hub = LiveHub(self._live_payload)
        self.book.on_mark(lambda _symbol: self.hub.poke_threadsafe())

    # -------------------------------------------------------------- data
    def increments(self, symbol: str | None) -> tuple[Any, Any]:
        venue = self.runtime.venue
        if venue is None or not symbol:
            return None, None
        try:
            m = venue.markets.resolve(symbol)
        except (KeyError, ValueError):
            return None, None
        return m.tick_size, m.step_size

    async def open_rows(self, status: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows = await self.store.positions(open_only=True, consistent=False)
        verified = ((status or await self.status()).get("last_verified") or {}).get("ts_ms")
        self.book.follow(str(r["symbol"]) for r in rows if r.get("symbol"))
        now = self.runtime.clock.now_ms()
        enabled = self.runtime.live_config().trailing.enabled
        return [trader_row(r, self.book.latest(str(r.get("symbol"))), now, trailing_enabled=enabled, verified_ms=verified) for r in with_age(rows, now)]  # as ctl positions

    async def status(self) -> dict[str, Any]:
        from tradebot.ops import supervisor_status

        return await supervisor_status(lambda: self.runtime.supervisor)

    async def alerts(self) -> list[Any]:
        return await self.store.query(types=("alert.sent", "alert.failed"), limit=10, newest_first=True, consistent=False)

    async def _live_payload(self) -> str:
        status = await self.status()
        rows, alerts = await asyncio.gather(self.open_rows(status), self.alerts())
        return pages.live_payload(rows, status, alerts[::-1], self.increments, actions=self.runtime.config.http.actions)

    def on_committed(self, events: list[Any]) -> None:
        """Store subscriber (on the I/O loop): a position or alert event re-renders the live table."""
        if any(e.type.startswith(("position.", "alert.")) for e in events):
            self.hub.poke()


    async def candles(self, symbol: str, start_ms: int, end_ms: int) -> tuple[list[list[Any]], str]:
        venue = self.runtime.venue
        fetch = getattr(getattr(venue, "exchange", None), "fetch_ohlcv", None)
        if venue is None or not callable(fetch):
            return [], "no candles: this venue serves none"
        m = venue.markets.resolve(symbol)
        span = max(end_ms - start_ms, 60_000)
        timeframe, step = next(((tf, ms) for tf, ms in (("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("4h", 14_400_000), ("1d", 86_400_000)) if span / ms <= 500), ("1d", 86_400_000))
        since = start_ms - start_ms % step
        try:
            raw = await venue.executor.run("fetch_ohlcv", lambda: fetch(m.symbol, timeframe, since, min(int(span // step) + 2, 500)), idempotent=True, record=False)
        except VenueError as exc:  # the page still shows marks and events
            return [], f"no candles: the venue did not answer ({exc})"
        rows = [c for c in raw or [] if start_ms - step <= int(c[0]) <= end_ms]
        return rows, f"{len(rows)} {timeframe} candles from the venue"

    # ------------------------------------------------------------ routes
    async def positions(self, request: web.Request) -> web.StreamResponse:
        status = await self.status()
        rows, alerts = await asyncio.gather(self.open_rows(status), self.alerts())
        return web.Response(text=pages.positions_page(rows, status, alerts[::-1], self.increments, actions=self.runtime.config.http.actions), content_type=_HTML)

    async def positions_json(self, request: web.Request) -> web.StreamResponse:
        """The rows ``ctl positions --json`` answers (with the market's tick and step for printing)."""
        rows = [{**r, **dict(zip(("tick_size", "step_size"), (None if v is None else str(v) for v in self.increments(r.get("symbol"))), strict=True))} for r in await self.open_rows()]
        return web.json_response(rows, dumps=_dumps)

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        if self.hub.closed:
            return resp
        q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self.hub.attach(q)
        try:
            await resp.write(b"retry: 1000\n\n")
            while True:
                try:
                    payload = await asyncio.wait_for(q.get(), 15)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if payload is None:
                    break
                await resp.write(f"event: positions\ndata: {payload}\n\n".encode())
        except ConnectionResetError:  # the browser went away
            pass
        finally:
            self.hub.clients.discard(q)
        return resp

    async def history(self, request: web.Request) -> web.StreamResponse:
        day, symbol = request.query.get("day", ""), request.query.get("symbol", "")
        rows = await self.store.positions(open_only=False, consistent=False)
        timelines = []
        for r in rows:
            if not r.get("is_open"):
                timelines.append(build_timeline(await self.store.query(position_id=r["position_id"], consistent=False)))
        closed = sorted(closed_trades(timelines), key=lambda t: t.closed_ms or 0, reverse=True)
        days = sorted({_day(t.closed_ms or 0) for t in closed}, reverse=True)
        symbols = sorted({str(t.symbol) for t in closed})
        chosen = [t for t in closed if (not day or _day(t.closed_ms or 0) == day) and (not symbol or t.symbol == symbol)]
        return web.Response(text=pages.history_page(chosen, summarize(chosen), day, symbol, days, symbols, self.increments), content_type=_HTML)

    async def position(self, request: web.Request) -> web.StreamResponse:
        pid = request.match_info["pid"]
        rows = [r for r in await self.store.positions(open_only=False, consistent=False) if r.get("position_id") == pid]
        if not rows:
            return web.Response(status=404, text=pages.page("Not found", f"<h1>No position {pages.escape(pid)}</h1>"), content_type=_HTML)
        row = rows[0]
        events = await self.store.query(position_id=pid, consistent=False)
        timeline = build_timeline(events)
        now = self.runtime.clock.now_ms()
        start = timeline.steps[0].ts_ms if timeline.steps else now
        end = timeline.closed_ms if timeline.closed_ms is not None else now
        symbol = str(row.get("symbol"))
        if row.get("is_open"):
            verified = ((await self.status()).get("last_verified") or {}).get("ts_ms")
            row = trader_row(row, self.book.latest(symbol), now, trailing_enabled=self.runtime.live_config().trailing.enabled, verified_ms=verified)
        else:
            row = {**row, "stop_kind": stop_kind(row)}
        candles, note = await self.candles(symbol, start, end)
        series = position_series(events, row, candles, self.book.between(symbol, start, end))
        svg = chart_svg(series, start, max(end, start + 1_000))
        return web.Response(text=pages.position_page(row, timeline, series, svg, self.increments, note), content_type=_HTML)


    # ----------------------------------------------------------- actions
    async def action(self, request: web.Request) -> web.StreamResponse:
        """POST /api/close/{target}, /api/close-all, /api/pause, /api/resume: a control command, sent
        through the control mailbox like ``tradebot ctl`` (the same checks, the same control.* records).

        Off unless ``http.actions``: 403 and nothing sent. Beyond loopback the server's bearer token
        guards it (as every request); a request without the ``X-Tradebot-Action`` header is refused,
        so another site's page cannot make the browser post here (a cross-site form cannot set it)."""
        from adapters.http_server import is_loopback
        from tradebot.control_client import BotNotRunning, send_command_async

        cfg = self.runtime.config
        if not cfg.http.actions:
            return _refused(403, "dashboard actions are off (http.actions = false): the dashboard is read-only; use `tradebot ctl`, or set http.actions = true and restart")
        if not is_loopback(cfg.http.host) and not os.environ.get(cfg.http.token_env):
            return _refused(403, f"dashboard actions beyond loopback need the bearer token ({cfg.http.token_env})")
        if request.headers.get(ACTION_HEADER) != "1":
            return _refused(403, f"missing header {ACTION_HEADER}: 1 (the dashboard's buttons send it; cross-site requests cannot)")
        command = request.match_info.get("command") or "close"
        args = {"symbol": request.match_info["target"]} if "target" in request.match_info else {}
        try:
            reply = await send_command_async(cfg.control_socket, command, args, ttl_ms=cfg.control.command_ttl_secs * 1000, timeout_s=15)
        except BotNotRunning as exc:
            return _refused(503, str(exc))
        except (TimeoutError, ConnectionError, OSError) as exc:
            return _refused(503, f"the control mailbox did not answer: {exc}")
        self.hub.poke()
        body = {"ok": reply.ok, "command": command, "result": reply.result, "error": reply.error, "id": reply.id}
        return web.json_response(body, status=200 if reply.ok else 409, dumps=_dumps)


#: The header every dashboard action must carry (a cross-site form cannot add it; a fetch with it needs CORS we never grant).
ACTION_HEADER = "X-Tradebot-Action"


def _refused(status: int, error: str) -> web.StreamResponse:
    return web.json_response({"ok": False, "error": error}, status=status)


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def dashboard_routes(server: HttpServer, runtime: Runtime) -> Dashboard:
    """Register the pages on ``server`` and the live feed on the store; closed with the runtime."""
    dash = Dashboard(runtime)
    server.route("GET", "/", dash.positions)
    server.route("GET", "/api/positions", dash.positions_json)
    server.route("GET", "/events", dash.events)
    server.route("GET", "/history", dash.history)
    server.route("GET", "/position/{pid}", dash.position)
    server.route("POST", "/api/close/{target}", dash.action)
    for command in ("close-all", "pause", "resume"):
        server.route("POST", f"/api/{{command:{command}}}", dash.action)
    sub = dash.store.subscribe("dashboard", dash.on_committed, maxlen=1000)
    io = runtime.io

    def close() -> None:
        dash.store.unsubscribe(sub)
        io.run(dash.hub.close(), 5)

    runtime.resources.append(close)
    return dash
