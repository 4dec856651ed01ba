"""Operations wiring: the alert actor and its sinks, metrics, and the HTTP server (/health, /metrics).

Both alerts and metrics hang off the event store's fan-out of committed
events. /health answers with the supervisor's status (the one ``ctl status``
shows), 200 when healthy and 503 when not; the HTTP server is reusable: other
pages register with :meth:`adapters.http_server.HttpServer.route`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from loguru import logger

from actors.alert_rules import index
from actors.alerts import AlertActor, AlertDelivered, EventsCommitted, interesting
from adapters.alert_sinks import Delivery, Sink
from adapters.http_server import HttpServer
from adapters.io_loop import IOLoop
from adapters.metrics import CONTENT_TYPE, Metrics
from core.config import Config
from core.messages import StatusAnswered, StatusQuery
from supervision.supervisor import ChildSpec

if TYPE_CHECKING:
    from supervision.runtime import Runtime


def build_sinks(config: Config, io: IOLoop, on_result: Callable[[Delivery, dict[str, Any]], None], env: Any = None) -> list[Sink]:
    """One sink per ``[[alerts.sinks]]`` (raises ``SinkSetupError`` naming a missing variable)."""
    return [Sink(cfg, io, on_result, env) for cfg in config.alerts.sinks]


def ops_children(runtime: Runtime) -> list[ChildSpec]:
    """The alert actor (first child: up before anything can alert), its sinks and the metrics subscriber."""
    config, io, store, directory = runtime.config, runtime.io, runtime.store, runtime.directory
    assert store is not None
    runtime.metrics = metrics = Metrics()
    store.subscribe("metrics", metrics.observe)
    if not config.alerts.enabled:
        return []
    def delivered(d: Delivery, a: dict[str, Any]) -> None:
        directory.tell("alerts", AlertDelivered(delivery=d, alert=a))

    sinks = build_sinks(config, io, delivered)
    for sink in sinks:
        io.run(sink.start(), 10)
        runtime.resources.append(_closer(io, sink))
    rules = index(config.alerts.rules)

    def forward(events: list[Any]) -> None:
        wanted = interesting(rules, events)
        if wanted:
            directory.tell("alerts", EventsCommitted(events=wanted))

    store.subscribe("alerts", forward)
    return [ChildSpec(name="alerts", factory=lambda name, ctx: AlertActor.start(name=name, ctx=ctx, sinks=sinks))]


def _closer(io: IOLoop, sink: Sink) -> Callable[[], None]:
    return lambda: io.run(sink.stop(), 10)


class _Answer:
    """Looks like an ActorRef to the supervisor; resolves an asyncio future on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[dict[str, Any]]) -> None:
        self._loop, self._future = loop, future

    def tell(self, message: StatusAnswered) -> None:
        self._loop.call_soon_threadsafe(self._resolve, message.status)

    def _resolve(self, status: dict[str, Any]) -> None:
        if not self._future.done():
            self._future.set_result(status)


async def supervisor_status(supervisor: Callable[[], Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """The supervisor's status (as ``ctl status``), or an unhealthy one saying why there is none."""
    ref = supervisor()
    if ref is None or not ref.is_alive():
        return {"healthy": False, "problems": ["the supervisor is not running"]}
    loop = asyncio.get_running_loop()
    future: asyncio.Future[dict[str, Any]] = loop.create_future()
    ref.tell(StatusQuery(reply_to=_Answer(loop, future)))
    try:
        return await asyncio.wait_for(future, timeout_s)
    except TimeoutError:
        return {"healthy": False, "problems": [f"the supervisor did not answer within {timeout_s} s"]}


def health_routes(server: HttpServer, runtime: Runtime) -> None:
    store = runtime.store
    assert store is not None

    async def health(request: web.Request) -> web.StreamResponse:
        status = await supervisor_status(lambda: runtime.supervisor)
        return web.Response(body=msgspec.json.encode(status), status=200 if status.get("healthy") else 503, content_type="application/json")

    async def metrics(request: web.Request) -> web.StreamResponse:
        m: Metrics | None = getattr(runtime, "metrics", None)
        if m is None:
            return web.Response(status=503, text="metrics are not running\n")
        status = await supervisor_status(lambda: runtime.supervisor)
        positions = await store.positions(open_only=True, consistent=False)
        m.set_now(status, positions, {s.name: s.dropped for s in store.subscriptions()})
        return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE})

    server.route("GET", "/health", health)
    server.route("GET", "/metrics", metrics)


def start_http(runtime: Runtime) -> HttpServer | None:
    """The HTTP server with /health, /metrics and the dashboard (``http.enabled``); closed with the runtime."""
    cfg = runtime.config.http
    if not cfg.enabled:
        return None
    server = HttpServer(runtime.io, cfg.host, cfg.port, token=os.environ.get(cfg.token_env, ""), port_file=runtime.config.data_dir / "http.port")
    health_routes(server, runtime)
    from tradebot.dashboard import dashboard_routes

    dashboard_routes(server, runtime)
    try:
        server.start()
    except OSError as exc:  # trading goes on without it; loud, and in status' log
        logger.error("http: could not serve on {}:{}: {}; /health, /metrics and the dashboard are off", cfg.host, cfg.port, exc)
        return None
    runtime.http = server
    from core import logs

    logs.console_logger().info("dashboard: {}/", server.url)
    runtime.resources.insert(0, server.stop)
    return server


def void(_: Any) -> None:
    """Drop a result (a hook returns nothing)."""
