"""The bot's HTTP server (aiohttp) on the I/O loop: /health, /metrics, and whatever else registers.

Routes are registered before :meth:`HttpServer.start` with
:meth:`HttpServer.route` (a dashboard adds its pages the same way). It binds
``127.0.0.1`` by default; any other address needs a bearer token, and then
every request must carry ``Authorization: Bearer <token>`` (checked in constant
time). The port actually bound (``port = 0``: any free one) is written to
``port_file`` so tests and scripts can find it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from loguru import logger

from adapters.io_loop import IOLoop

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpSetupError(ValueError):
    """The server must not start as configured (the message says why)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HttpServer:
    def __init__(self, io: IOLoop, host: str, port: int, *, token: str = "", port_file: Path | None = None) -> None:
        if not is_loopback(host) and not token:
            raise HttpSetupError(f"http.host = {host!r} is not loopback: set a bearer token in the environment variable named by http.token_env")
        self._io = io
        self.host = host
        self.port = port
        self._token = token
        self._port_file = port_file
        self._routes: list[tuple[str, str, Handler]] = []
        self._runner: web.AppRunner | None = None

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Register ``handler`` for ``method path`` (before :meth:`start`); it runs on the I/O loop."""
        if self._runner is not None:
            raise RuntimeError("routes are registered before the server starts")
        self._routes.append((method, path, handler))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._io.run(self._start(), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._runner is not None:
            self._io.run(self._runner.cleanup(), timeout)
            self._runner = None
        if self._port_file is not None:
            self._port_file.unlink(missing_ok=True)

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._auth] if self._token else [])
        for method, path, handler in self._routes:
            app.router.add_route(method, path, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        if self._port_file is not None:
            self._port_file.write_text(f"{self.port}\n")
        logger.info("http: serving {} on {}", ", ".join(sorted({p for _, p, _ in self._routes})), self.url)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            return web.json_response({"error": "unauthorised: Authorization: Bearer <token> required"}, status=401)
        return await handler(request)
