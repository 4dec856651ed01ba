"""The bot's side of a paper exchange running in its own process.

:class:`PaperClient` has the ccxt-unified async methods of an exchange object
and raises ccxt's own exception classes, so the venue layer cannot tell it
from :class:`~adapters.paper.exchange.PaperExchange` in-process, or from a
real ccxt exchange. Transport failures look like a real venue's: no server
-> ``ccxt.NetworkError`` (retryable); no answer in time ->
``ccxt.RequestTimeout`` (the request may have been executed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import ccxt


class PaperClient:
    def __init__(self, socket_path: Path, *, timeout_s: float = 10.0, watch_timeout_s: float = 3600.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.markets: dict[str, Any] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._connecting: asyncio.Lock | None = None
        self._reader_task: asyncio.Task[None] | None = None

    def watch_connected(self, kind: str) -> bool:
        """Is the connection a ``watch_*`` call waits on open (a stream back after a restart of the
        exchange, before its next update)?"""
        return self._writer is not None and not self._writer.is_closing() and bool(self._pending)

    async def _ensure(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None or self._writer.is_closing():
                try:
                    self._reader, self._writer = await asyncio.open_unix_connection(str(self.socket_path), limit=16 * 1024 * 1024)
                except OSError as exc:
                    raise ccxt.NetworkError(f"paper exchange unreachable at {self.socket_path}: {exc}") from None
                self._reader_task = asyncio.create_task(self._read_loop(self._reader))
            return self._writer

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                reply = json.loads(line)
                fut = self._pending.pop(reply.get("id"), None)
                if fut is None or fut.done():
                    continue
                if reply.get("ok"):
                    fut.set_result(reply.get("result"))
                else:
                    err = reply.get("error") or {}
                    klass = getattr(ccxt, str(err.get("class")), None)
                    if not (isinstance(klass, type) and issubclass(klass, ccxt.BaseError)):
                        klass = ccxt.ExchangeError
                    fut.set_exception(klass(err.get("message", "paper exchange error")))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            lost, self._pending = self._pending, {}
            for fut in lost.values():
                if not fut.done():
                    fut.set_exception(ccxt.RequestTimeout("paper exchange connection lost before the answer (the request may have been executed)"))
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    async def call(self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        writer = await self._ensure()
        request_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            writer.write(json.dumps({"id": request_id, "method": method, "args": list(args), "kwargs": kwargs}).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            self._pending.pop(request_id, None)
            raise ccxt.NetworkError(f"paper exchange connection failed: {exc}") from None
        try:
            return await asyncio.wait_for(fut, timeout_s or self.timeout_s)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise ccxt.RequestTimeout(f"paper exchange {method}: no answer within {timeout_s or self.timeout_s:.0f} s") from None

    # ------------------------------------------------------- ccxt methods
    async def load_markets(self, reload: bool = False, params: dict | None = None) -> dict[str, Any]:
        if self.markets is None or reload:
            self.markets = await self.call("load_markets")
        return self.markets

    async def create_order(self, symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None) -> dict[str, Any]:
        return await self.call("create_order", symbol, type, side, amount, price, params or {})

    async def cancel_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        return await self.call("cancel_order", id, symbol, params or {})

    async def fetch_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        return await self.call("fetch_order", id, symbol, params or {})

    async def fetch_open_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        return await self.call("fetch_open_orders", symbol, since, limit, params or {})

    async def fetch_positions(self, symbols: list[str] | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        return await self.call("fetch_positions", list(symbols) if symbols else None, params or {})

    async def fetch_balance(self, params: dict | None = None) -> dict[str, Any]:
        return await self.call("fetch_balance", params or {})

    async def fetch_ticker(self, symbol: str, params: dict | None = None) -> dict[str, Any]:
        return await self.call("fetch_ticker", symbol, params or {})

    async def fetch_mark_price(self, symbol: str, params: dict | None = None) -> dict[str, Any]:
        return await self.call("fetch_mark_price", symbol, params or {})

    async def fetch_my_trades(self, symbol: str | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        return await self.call("fetch_my_trades", symbol, since, limit, params or {})

    async def fetch_ohlcv(self, symbol: str, timeframe: str = "1m", since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[list[Any]]:
        return await self.call("fetch_ohlcv", symbol, timeframe, since, limit, params or {})

    async def set_leverage(self, leverage: int, symbol: str | None = None, params: dict | None = None) -> dict[str, Any]:
        return await self.call("set_leverage", leverage, symbol, params or {})

    async def watch_orders(self, symbol: str | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        return await self.call("watch_orders", symbol, since, limit, params or {}, timeout_s=self.watch_timeout_s)

    async def watch_positions(self, symbols: list[str] | None = None, since: int | None = None, limit: int | None = None, params: dict | None = None) -> list[dict[str, Any]]:
        return await self.call("watch_positions", list(symbols) if symbols else None, since, limit, params or {}, timeout_s=self.watch_timeout_s)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
