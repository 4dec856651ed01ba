"""``tradebot paper serve``: the paper exchange in its own process.

Killing the bot, even with SIGKILL, leaves this "exchange" running: prices
keep moving and stops keep triggering, exactly as in life. It serves the
ccxt-unified methods (and a few admin methods for tests and the demo: set a
mark, act as a human on the UI -- one action, or several at one instant
with ``external_actions`` --, read the measurements, script faults or
replace the fault plan started with ``--faults``) as
JSON lines over a Unix socket (0600, in a 0700 directory). State is saved
after every change (at most every 200 ms) and on shutdown, and restored at
start.

Protocol, one JSON object per line: request ``{"id", "method", "args",
"kwargs"}``, answer ``{"id", "ok": true, "result"}`` or ``{"id", "ok":
false, "error": {"class": <ccxt exception class>, "message"}}``. Requests on
one connection run concurrently (a long-poll ``watch_orders`` blocks
nothing).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from loguru import logger

from adapters.paper.faults import FaultInjector, FaultPlan
from adapters.paper.hosting import StateSaver, build_paper_exchange
from adapters.pid_lock import take_lock
from core.clock import RealClock

CCXT_METHODS = frozenset(
    {
        "load_markets", "create_order", "cancel_order", "fetch_order", "fetch_open_orders", "fetch_positions",
        "fetch_balance", "fetch_ticker", "fetch_mark_price", "fetch_my_trades", "fetch_ohlcv", "set_leverage",
        "set_position_mode", "watch_orders", "watch_positions",
    }
)
ADMIN_METHODS = frozenset({"set_mark", "external_close_position", "external_cancel_order", "external_open_position", "external_place_order", "external_actions", "metrics", "position_metrics", "fail_next", "set_faults", "ping"})
#: What ``external_actions`` may do in one step (a human on the UI, or the market moving).
ATOMIC_ACTIONS = frozenset({"set_mark", "external_close_position", "external_cancel_order", "external_open_position", "external_place_order"})


class PaperServer:
    def __init__(self, config: Any, *, socket_path: Path, state_path: Path, faults: FaultPlan | None = None) -> None:
        self.config = config
        self.socket_path = Path(socket_path)
        self.state_path = Path(state_path)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        # A second server on the same data folder would take over the socket and write the same state file.
        self._lock_fd = take_lock(self.state_path.with_name(self.state_path.name + ".lock"), f"the paper exchange in {self.state_path.parent}")
        self.clock = RealClock()
        self.exchange = build_paper_exchange(config, self.clock, self.state_path, faults=faults)
        self._stop = asyncio.Event()

    # ------------------------------------------------------------ serving
    def run(self) -> int:
        return asyncio.run(self._serve())

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_path.parent, 0o700)
        self.socket_path.unlink(missing_ok=True)
        await self.exchange.load_markets()
        self.exchange.start()
        saver = StateSaver(self.exchange, self.state_path, self.clock)
        old = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._client, path=str(self.socket_path), limit=4 * 1024 * 1024)
        finally:
            os.umask(old)
        logger.info("paper exchange serving on {} (flavour {}, state {})", self.socket_path, self.exchange.flavour, self.state_path)
        try:
            await self._stop.wait()
        finally:
            server.close()
            await server.wait_closed()
            self.exchange.stop()
            saver.close()
            self.clock.close()
            self.socket_path.unlink(missing_ok=True)
            logger.info("paper exchange stopped; state saved to {}", self.state_path)
        return 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()
        try:
            while line := await reader.readline():
                task = asyncio.create_task(self._answer(line, writer, lock))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            writer.close()

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter, lock: asyncio.Lock) -> None:
        request_id = None
        try:
            req = json.loads(line)
            request_id = req.get("id")
            result = await self.call(req["method"], req.get("args") or [], req.get("kwargs") or {})
            reply = {"id": request_id, "ok": True, "result": result}
        except Exception as exc:
            reply = {"id": request_id, "ok": False, "error": {"class": type(exc).__name__, "message": str(exc)}}
        data = json.dumps(reply, default=_default).encode() + b"\n"
        async with lock:
            try:
                writer.write(data)
                await writer.drain()
            except ConnectionError:
                pass

    async def call(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if method in CCXT_METHODS:
            return await getattr(self.exchange, method)(*args, **kwargs)
        if method not in ADMIN_METHODS:
            raise ValueError(f"unknown method {method!r}")
        if method == "ping":
            return {"flavour": self.exchange.flavour, "now_ms": self.clock.now_ms()}
        if method == "set_mark":
            return self.exchange.set_mark(args[0], Decimal(str(args[1])))
        if method == "fail_next":
            return self.exchange.faults.fail_next(*args, **kwargs)
        if method == "set_faults":  # a new fault plan (JSON of a FaultPlan; {} = none), e.g. for a soak's final reconcile
            self.exchange.faults = FaultInjector(msgspec.convert(args[0] if args else {}, FaultPlan), self.exchange.flavour)
            return msgspec.to_builtins(self.exchange.faults.plan)
        if method in ("metrics", "position_metrics"):
            return self.exchange.with_engine(lambda e, now: getattr(e, method)(*args, now_ms=now, **kwargs))
        if method == "external_actions":
            return self.exchange.with_engine(lambda e, now: [_external(e, now, *step) for step in args[0]])
        return self.exchange.with_engine(lambda e, now: _external(e, now, method, args, kwargs))


def _external(engine: Any, now_ms: int, method: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
    """One admin action on the engine (under its lock); ``external_actions`` runs several at one instant,
    so a test can make things happen together that no bot could see apart (a stop cancelled as the
    market gaps through the liquidation price)."""
    kwargs = kwargs or {}
    if method not in ATOMIC_ACTIONS:
        raise ValueError(f"unknown action {method!r}")
    if method == "set_mark":
        return engine.on_mark(engine.markets.resolve(args[0]).symbol, Decimal(str(args[1])), now_ms)
    if method == "external_open_position":
        symbol, side, qty = args
        return _order_id(engine.external_open_position(symbol, side, Decimal(str(qty)), now_ms))
    if method == "external_place_order":  # symbol, type, side, amount[, params]
        symbol, type_, side, amount, *rest = args
        return _order_id(engine.external_place_order(symbol, type_, side, Decimal(str(amount)), now_ms, kwargs.get("params", rest[0] if rest else None)))
    return _order_id(getattr(engine, method)(*args, now_ms=now_ms, **kwargs))


def _order_id(result: Any) -> Any:
    if isinstance(result, list):
        return [_order_id(r) for r in result]
    return getattr(result, "id", result)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
