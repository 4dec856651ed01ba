"""Loopback fakes for alert sinks: a JSON webhook receiver and Telegram's Bot API (sendMessage)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from adapters.io_loop import IOLoop


class FakeReceiver:
    """Serves POST /alerts (webhook) and POST /bot<token>/sendMessage (Telegram) on 127.0.0.1.

    ``script``: status codes to answer in turn ("hang" waits past any timeout); then 200."""

    def __init__(self, io: IOLoop, token: str = "") -> None:
        self.io = io
        self.token = token
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.script: list[int | str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        body = await request.json()
        step = self.script.pop(0) if self.script else 200
        if step == "hang":
            assert self._release is not None
            try:
                await asyncio.wait_for(self._release.wait(), 30)
            except TimeoutError:
                pass
        if step != 200:
            return web.Response(status=int(step), text="try again")
        self.received.append({"path": request.path, "body": body, "raw": json.dumps(body)})
        if request.path.startswith("/bot"):
            if request.path != f"/bot{self.token}/sendMessage":
                return web.json_response({"ok": False, "description": "Unauthorized"}, status=401)
            return web.json_response({"ok": True, "result": {"message_id": len(self.received)}})
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/alerts", self._answer)
        app.router.add_post("/bot{rest:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> FakeReceiver:
        self.io.run(self._start(), 10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            assert self._release is not None
            self.io.call_soon(self._release.set)
            self.io.run(self._runner.cleanup(), 10)
            self._runner = None
