"""Where alerts go: a JSON webhook, Telegram's Bot API, the log. On the I/O loop.

Each sink has a bounded queue and one worker task. :meth:`Sink.submit` is
thread-safe and never blocks: when the queue is full the alert is dropped and
counted. The worker tries each alert up to ``max_attempts`` times, each with
a timeout, with doubling backoff after a failure (an HTTP error status, a
timeout, a refused connection). Every outcome (sent, failed, dropped) is
handed to ``on_result`` on the loop thread; it may only ``tell``.

Secrets: the Telegram token and chat id are read from the environment
variables the config names, when the sink starts; they are never logged, and
every error text is scrubbed of them before it leaves this module.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec
from loguru import logger

from adapters.io_loop import IOLoop
from core.config import AlertSink

_LEVEL = {"info": "INFO", "warning": "WARNING", "error": "ERROR", "critical": "CRITICAL"}


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one alert at one sink."""

    sink: str
    kind: str
    key: str
    ok: bool
    attempts: int
    answer: str  # what the sink answered (status and a short body), or why it failed
    dropped: bool = False
    test: bool = False


class SinkSetupError(ValueError):
    """A sink that cannot run (a missing environment variable); the message names it."""


class Sink:
    def __init__(self, cfg: AlertSink, io: IOLoop, on_result: Callable[[Delivery, dict[str, Any]], None], env: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        self.label = cfg.label
        self._io = io
        self._on_result = on_result
        self._queue: asyncio.Queue[tuple[str, dict[str, Any], str, bool]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._secrets: list[str] = []
        self._token = self._chat_id = ""
        env = os.environ if env is None else env
        if cfg.kind == "telegram":
            self._token, self._chat_id = env.get(cfg.token_env, ""), env.get(cfg.chat_id_env, "")
            missing = [n for n, v in ((cfg.token_env, self._token), (cfg.chat_id_env, self._chat_id)) if not v]
            if missing:
                raise SinkSetupError(f"alerts sink {self.label}: environment variable {' and '.join(missing)} not set")
            self._secrets = [s for s in (self._token, self._chat_id) if s]

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self._queue = asyncio.Queue(self.cfg.queue_size)
        if self.cfg.kind != "console":
            self._session = aiohttp.ClientSession()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"alert-sink-{self.label}")

    async def stop(self) -> None:
        task = self._task
        for _ in range(20):  # re-cancel: a cancel landing as wait_for's inner call finishes can be swallowed
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=0.25)
        if self._session is not None:
            await self._session.close()

    # -------------------------------------------------------------- submit
    def submit(self, key: str, payload: dict[str, Any], text: str, *, test: bool = False) -> None:
        """Queue one alert (any thread; never blocks; a full queue drops it, counted)."""
        self._io.call_soon(self._put, key, payload, text, test)

    def _put(self, key: str, payload: dict[str, Any], text: str, test: bool) -> None:
        assert self._queue is not None, "sink not started"
        try:
            self._queue.put_nowait((key, payload, text, test))
        except asyncio.QueueFull:
            self.dropped += 1
            logger.warning("alerts: sink {} queue full ({}): dropped {} ({} dropped so far)", self.label, self.cfg.queue_size, key, self.dropped)
            self._report(Delivery(sink=self.label, kind=self.cfg.kind, key=key, ok=False, attempts=0, answer="dropped: queue full", dropped=True, test=test), payload)

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            key, payload, text, test = await self._queue.get()
            self._report(await self.deliver(key, payload, text, test=test), payload)

    async def deliver(self, key: str, payload: dict[str, Any], text: str, *, test: bool = False) -> Delivery:
        """Send one alert with retries (on the loop); the outcome."""
        delay_s = self.cfg.backoff_ms / 1000
        answer = ""
        for attempt in range(1, self.cfg.max_attempts + 1):
            try:
                ok, answer = await asyncio.wait_for(self._once(payload, text), float(self.cfg.timeout_secs))
            except TimeoutError:
                ok, answer = False, f"timed out after {self.cfg.timeout_secs} s"
            except (aiohttp.ClientError, OSError) as exc:
                ok, answer = False, f"{type(exc).__name__}: {exc}"
            answer = self.scrub(answer)
            if ok:
                self.sent += 1
                return Delivery(sink=self.label, kind=self.cfg.kind, key=key, ok=True, attempts=attempt, answer=answer, test=test)
            if attempt < self.cfg.max_attempts:
                logger.debug("alerts: sink {} attempt {} for {} failed ({}); retrying in {:.0f} ms", self.label, attempt, key, answer, delay_s * 1000)
                await asyncio.sleep(delay_s)
                delay_s *= 2
        self.failed += 1
        return Delivery(sink=self.label, kind=self.cfg.kind, key=key, ok=False, attempts=self.cfg.max_attempts, answer=answer, test=test)

    async def _once(self, payload: dict[str, Any], text: str) -> tuple[bool, str]:
        kind = self.cfg.kind
        if kind == "console":
            level = _LEVEL.get(str(payload.get("severity")), "WARNING")
            logger.bind(actor="alerts").log("INFO" if payload.get("resolved") else level, "ALERT {}", text)
            return True, "logged"
        assert self._session is not None
        if kind == "webhook":
            url, body = self.cfg.url, payload
        else:
            url, body = f"{self.cfg.api_base.rstrip('/')}/bot{self._token}/sendMessage", {"chat_id": self._chat_id, "text": text, "disable_web_page_preview": True}
        async with self._session.post(url, json=body) as resp:
            reply = (await resp.text())[:200]
            if kind == "telegram" and resp.status == 200:
                try:
                    answered = msgspec.json.decode(reply.encode()) if reply else {}
                except msgspec.DecodeError:
                    answered = {}
                ok = isinstance(answered, dict) and answered.get("ok") is True
                return ok, f"HTTP {resp.status} ok={ok}"
            return 200 <= resp.status < 300, f"HTTP {resp.status} {reply}".strip()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _report(self, delivery: Delivery, payload: dict[str, Any]) -> None:
        try:
            self._on_result(delivery, payload)
        except Exception as exc:
            logger.error("alerts: result callback failed: {}", exc)
