"""The I/O loop: one asyncio loop in a real thread, driven from other threads."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from typing import Any

import pytest

from adapters.io_loop import IOLoop, IOLoopClosed


class Inbox:
    """A minimal teller: records what it is told and signals each arrival."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.got = threading.Event()

    def tell(self, message: Any) -> None:
        self.messages.append(message)
        self.got.set()


async def never_finishes(cancelled: threading.Event, started: threading.Event | None = None) -> None:
    if started is not None:
        started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        cancelled.set()
        raise


def test_run_returns_the_coroutine_value(io_loop: IOLoop):
    """run() hands back what the coroutine returned, having run it on the loop thread."""

    async def work() -> tuple[int, str]:
        await asyncio.sleep(0)
        return 42, threading.current_thread().name

    assert io_loop.run(work(), 5) == (42, "test-io")


def test_run_raises_the_coroutine_exception(io_loop: IOLoop):
    """run() re-raises the coroutine's own exception in the caller."""

    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        io_loop.run(fail(), 5)


def test_run_keeps_a_timeout_error_raised_by_the_coroutine(io_loop: IOLoop):
    """A coroutine that fails fast with its own TimeoutError must surface that error, not a fake run() timeout."""

    async def upstream_times_out() -> None:
        raise TimeoutError("exchange did not answer")

    with pytest.raises(TimeoutError, match="exchange did not answer"):
        io_loop.run(upstream_times_out(), 5)


def test_run_times_out_and_cancels_the_coroutine(io_loop: IOLoop):
    """run(..., timeout) raises TimeoutError for a coroutine that never finishes, and cancels it on the loop."""
    cancelled = threading.Event()
    with pytest.raises(TimeoutError, match="did not finish within 0.1 s"):
        io_loop.run(never_finishes(cancelled), 0.1)
    assert cancelled.wait(2), "the abandoned coroutine was not cancelled"


def test_call_and_tell_delivers_the_result(io_loop: IOLoop):
    """call_and_tell tells the receiver on_result(value)."""
    inbox = Inbox()

    async def work() -> int:
        return 7

    io_loop.call_and_tell(work(), inbox, on_result=lambda v: ("ok", v), on_error=lambda e: ("err", e))
    assert inbox.got.wait(2)
    assert inbox.messages == [("ok", 7)]


def test_call_and_tell_delivers_the_error(io_loop: IOLoop):
    """call_and_tell tells the receiver on_error(exc) with the coroutine's exception."""
    inbox = Inbox()
    error = ValueError("bad symbol")

    async def fail() -> int:
        raise error

    io_loop.call_and_tell(fail(), inbox, on_result=lambda v: ("ok", v), on_error=lambda e: ("err", e))
    assert inbox.got.wait(2)
    assert inbox.messages == [("err", error)]


def test_run_from_the_loop_thread_raises_instead_of_deadlocking(io_loop: IOLoop):
    """run() called on the loop thread raises RuntimeError at once, and closes the coroutine it was given."""

    async def inner() -> None:
        await asyncio.sleep(0)

    async def outer() -> tuple[BaseException | None, Any]:
        coro = inner()
        try:
            io_loop.run(coro, 1)
        except RuntimeError as exc:
            return exc, coro
        return None, coro

    exc, coro = io_loop.run(outer(), 5)  # a deadlock would surface here as TimeoutError
    assert isinstance(exc, RuntimeError) and "deadlock" in str(exc)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_stop_joins_the_thread_cancels_tasks_and_refuses_new_work():
    """stop() cancels pending work and joins the thread; submit/run/call_soon afterwards raise IOLoopClosed."""
    name = f"io-stop-{uuid.uuid4().hex[:8]}"
    io = IOLoop(name).start()
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    cancelled, started = threading.Event(), threading.Event()
    io.submit(never_finishes(cancelled, started))
    assert started.wait(2)

    io.stop()
    assert not thread.is_alive()
    assert cancelled.is_set(), "pending task was not cancelled on stop"

    async def late() -> None:
        pass

    coro = late()
    with pytest.raises(IOLoopClosed):
        io.submit(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" leak
    with pytest.raises(IOLoopClosed):
        io.run(late(), 1)
    with pytest.raises(IOLoopClosed):
        io.call_soon(print)
    io.stop()  # idempotent


# ------------------------------------------------------------ fencing (bug 5)
def test_a_fenced_call_is_decided_when_it_starts_on_the_loop(io_loop: IOLoop, store):
    """The check runs on the loop when the coroutine starts, not when the actor made it: a call
    made while its incarnation was current, started after a newer one began, never runs."""
    from adapters.event_store import FENCED_EVENT, Fenced

    ran: list[str] = []

    async def body(tag: str) -> str:
        ran.append(tag)
        return tag

    old = store.begin_incarnation("sync", "urn:old", 1)
    store.flush()
    made = store.fenced(old, body("old"), "io_call read", 1)
    assert store.admits(old)
    new = store.begin_incarnation("sync", "urn:new", 2)
    store.flush()
    with pytest.raises(Fenced, match="refused io_call read"):
        io_loop.run(made, 5)
    assert io_loop.run(store.fenced(new, body("new"), "io_call read", 3), 5) == "new"
    assert ran == ["new"]
    store.flush()
    refused = io_loop.run(store.query(types=(FENCED_EVENT,)), 5)
    assert [(e.actor, e.data["refused"], e.data["epoch"], e.data["current_epoch"]) for e in refused] == [("sync", "io_call read", old.epoch, new.epoch)]


def test_a_newer_incarnations_first_call_fences_the_old_one_at_once(io_loop: IOLoop, store):
    """While the writer has not reached the new epoch's record, the new incarnation's first call
    puts it in effect on the loop: the old incarnation's next call is refused."""
    from adapters.event_store import Fenced
    from tests.test_fencing import held_writer

    old = store.begin_incarnation("guard", "urn:old", 1)
    store.flush()
    gate = held_writer(store)
    try:
        new = store.begin_incarnation("guard", "urn:new", 2)
        assert store.admits(old)  # nothing has put the new epoch in effect yet

        async def act() -> str:
            return "acted"

        assert io_loop.run(store.fenced(new, act(), "io_call place", 3), 5) == "acted"
        with pytest.raises(Fenced):
            io_loop.run(store.fenced(old, act(), "io_call place", 4), 5)
    finally:
        gate.set()
    store.flush()
    assert store.current_epoch("guard") == new.epoch
