"""Offline HTTP for ccxt: :func:`intercept_http` replaces an exchange's HTTP layer with a function.

The way ccxt's own static tests do it: the exact requests are recorded and
canned responses go through ccxt's real error handling. Tests use it; so can a
dry run.
"""

from __future__ import annotations

import dataclasses
import http
import inspect
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclasses.dataclass
class HttpRequest:
    """One request as ccxt sent it (after signing)."""

    method: str
    url: str
    headers: dict[str, Any]
    body: str | None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def host(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def params(self) -> dict[str, Any]:
        """Query and body parameters together (urlencoded or JSON body)."""
        out: dict[str, Any] = dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))
        if self.body:
            text = self.body.strip()
            if text.startswith("{"):
                out.update(json.loads(text))
            else:
                out.update(parse_qsl(text, keep_blank_values=True))
        return out


Responder = Callable[[HttpRequest], Any]


def intercept_http(exchange: Any, responder: Responder) -> list[HttpRequest]:
    """Replace ``exchange.fetch`` (its HTTP layer): every request is recorded and answered by ``responder``.

    ``responder(request)`` returns a JSON-able body (HTTP 200), a ``(status,
    body)`` pair, or raises (e.g. ``ccxt.RequestTimeout``); it may be async.
    The answer goes through ccxt's own ``handle_errors`` and
    ``handle_http_status_code`` exactly as a real response would, and is
    printed like one when ``verbose`` is on.
    """
    requests: list[HttpRequest] = []

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        req = HttpRequest(method=method, url=url, headers=dict(headers or {}), body=body)
        requests.append(req)
        if exchange.verbose:
            exchange.log("\nfetch Request:", exchange.id, method, url, "RequestHeaders:", req.headers, "RequestBody:", body)
        answer = responder(req)
        if inspect.isawaitable(answer):
            answer = await answer
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        text = payload if isinstance(payload, str) else json.dumps(payload)
        reason = http.HTTPStatus(status).phrase
        if exchange.verbose:
            exchange.log("\nfetch Response:", exchange.id, method, url, status, "ResponseHeaders:", {}, "ResponseBody:", text)
        parsed = exchange.parse_json(text)
        exchange.handle_errors(status, reason, url, method, {}, text, parsed, req.headers, body)
        exchange.handle_http_status_code(status, reason, url, method, text)
        return parsed

    exchange.fetch = fetch
    return requests
