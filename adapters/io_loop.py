"""One asyncio loop in its own thread that owns every async client.

Actors never run coroutines themselves: they hand them to :class:`IOLoop` and
get the result back either as a :class:`concurrent.futures.Future` (for
start-up code, the CLI and tests, always with a timeout) or as a message told
to them when the coroutine finishes (:meth:`IOLoop.call_and_tell`). The loop
never blocks on an actor: it only ever ``tell``s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from loguru import logger

T = TypeVar("T")


class Teller(Protocol):
    """Anything with pykka's ``tell``: an ActorRef or a reply adapter."""

    def tell(self, message: Any) -> None: ...


class IOLoopClosed(RuntimeError):
    """Work was submitted after the I/O loop was stopped."""


class IOLoop:
    """An asyncio event loop running in a dedicated (daemon) thread."""

    def __init__(self, name: str = "io-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise IOLoopClosed("I/O loop not started")
        return self._loop

    def start(self) -> IOLoop:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        if not self._started.wait(5):
            raise RuntimeError("I/O loop failed to start within 5 s")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(_log_loop_exception)
        self._started.set()
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a thread-safe future."""
        if self._closed or self._loop is None:
            coro.close()
            raise IOLoopClosed(f"{self._name} is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` and wait for it, at most ``timeout`` seconds.

        For start-up code, the CLI and tests; never from inside the loop thread.
        """
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("IOLoop.run() called from the loop thread would deadlock")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.done():
                raise  # the coroutine's own TimeoutError, not ours
            future.cancel()
            raise TimeoutError(f"I/O work did not finish within {timeout} s") from None

    def call_and_tell(
        self,
        coro: Coroutine[Any, Any, T],
        reply_to: Teller,
        on_result: Callable[[T], Any],
        on_error: Callable[[BaseException], Any],
    ) -> concurrent.futures.Future[T]:
        """Run ``coro``; tell ``reply_to`` ``on_result(value)`` or ``on_error(exc)``."""

        def _done(fut: concurrent.futures.Future[T]) -> None:
            if fut.cancelled():
                msg = on_error(asyncio.CancelledError("I/O work cancelled"))
            elif (exc := fut.exception()) is not None:
                msg = on_error(exc)
            else:
                msg = on_result(fut.result())
            if msg is not None:
                try:
                    reply_to.tell(msg)
                except Exception:
                    logger.debug("reply receiver is gone: {}", type(msg).__name__)

        future = self.submit(coro)
        future.add_done_callback(_done)
        return future

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run a plain non-blocking callable on the loop thread."""
        if self._closed or self._loop is None:
            raise IOLoopClosed(f"{self._name} is closed")
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop: pending tasks are cancelled; joins the thread."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    logger.opt(exception=exc).error("asyncio: {}", context.get("message", "unhandled error"))

