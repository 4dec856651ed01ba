"""Knowing when the actor tree has nothing left to do, so a replay can move virtual time on.

The replay (:mod:`tradebot.replay`) runs the real actors, each in its own
thread, on a :class:`~core.clock.VirtualClock`. Determinism needs one rule:
time moves only when every piece of work caused by the last step is done.
Work lives in three places, each counted here:

* **mailboxes**: a :class:`CountingInbox` counts a message from its ``put``
  until the actor asks for the next one (pykka's loop is get -> handle -> get,
  so the next ``get`` means the last message was handled), and the actor's
  start-up (``on_start``) until its first ``get``; an actor whose thread has
  ended no longer counts;
* **the I/O loop**: :class:`CountingIOLoop` counts an ``io_call`` from its
  submission until its answer has been told;
* **the event store**: queued or being written (:meth:`EventStore.idle`); a
  durable record's commit tells its actor before the writer is idle.

Every hand-over between them raises the destination's count before the
source's falls, and every change bumps a generation number. :meth:`Tracker.quiet`
reads the generation, then every count, then the generation again: all zero
with no change in between means nothing is running and nothing is on its way.

Only the replay installs this (:func:`instrumented`); a normal run is untouched.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from adapters.io_loop import IOLoop, Teller
from supervision.actor import ManagedActor

T = TypeVar("T")


class Tracker:
    """Counts of outstanding work and a generation bumped on every change."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.gen = 0
        self.io_in_flight = 0
        self.inboxes: list[CountingInbox] = []
        self.stores: list[Any] = []

    def bump(self) -> None:
        with self.cond:
            self.gen += 1
            self.cond.notify_all()

    def more(self) -> None:
        """Work was added: a change, but nobody waits for more work, so no notify."""
        with self.cond:
            self.gen += 1

    def io_started(self) -> None:
        with self.cond:
            self.io_in_flight += 1
            self.gen += 1

    def io_done(self) -> None:
        with self.cond:
            self.io_in_flight -= 1
            self.gen += 1
            self.cond.notify_all()

    def quiet(self) -> bool:
        g1 = self.gen
        if self.io_in_flight or any(inbox.busy() for inbox in list(self.inboxes)) or not all(s.idle() for s in self.stores):
            return False
        return self.gen == g1

    def settle(self, timeout_s: float = 120.0) -> int:
        """Wait until :meth:`quiet` holds twice in a row; returns the rounds waited. A tree busy for
        ``timeout_s`` of real time is a bug (a handler looping, a real sleep): raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        rounds = 0
        while True:
            if self.quiet() and self.quiet():
                self.inboxes = [i for i in self.inboxes if not i.retired]
                return rounds
            rounds += 1
            with self.cond:
                self.cond.wait(0.0005)
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay: the actor tree stayed busy for {timeout_s:.0f} s of real time")


class CountingInbox(queue.Queue):
    """An actor's mailbox that knows whether a message is waiting or being handled."""

    def __init__(self, tracker: Tracker) -> None:
        super().__init__()
        self.tracker = tracker
        # Born busy: the actor's on_start runs before its first get (counted as one message being handled).
        self.pending = 1  # put and not yet handled
        self.holding = True  # the actor took a message (or is starting) and has not asked for the next
        self.retired = False
        self._lock = threading.Lock()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            self.pending += 1
        self.tracker.more()
        super().put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._lock:
            if self.holding:
                self.holding = False
                self.pending -= 1
        self.tracker.bump()
        item = super().get(block, timeout)
        with self._lock:
            self.holding = True
        return item

    def busy(self) -> bool:
        return not self.retired and self.pending > 0

    def retire(self) -> None:
        self.retired = True
        self.tracker.bump()


class CountingIOLoop(IOLoop):
    """The I/O loop, counting every ``call_and_tell`` until its answer is told."""

    def __init__(self, tracker: Tracker, name: str = "replay-io") -> None:
        super().__init__(name)
        self.tracker = tracker

    def call_and_tell(self, coro: Coroutine[Any, Any, T], reply_to: Teller, on_result: Callable[[T], Any], on_error: Callable[[BaseException], Any]) -> concurrent.futures.Future[T]:
        self.tracker.io_started()
        try:
            future = super().call_and_tell(coro, reply_to, on_result, on_error)
        except BaseException:
            self.tracker.io_done()
            raise
        future.add_done_callback(lambda _f: self.tracker.io_done())  # after the teller added first
        return future


@contextlib.contextmanager
def instrumented(tracker: Tracker) -> Iterator[Tracker]:
    """Every ManagedActor started inside gets a counting mailbox, retired when its thread ends."""
    original_inbox = ManagedActor.__dict__.get("_create_actor_inbox")
    original_loop = ManagedActor.__dict__.get("_actor_loop")

    def make_inbox() -> CountingInbox:
        inbox = CountingInbox(tracker)
        tracker.inboxes.append(inbox)
        return inbox

    def actor_loop(self: ManagedActor) -> None:
        try:
            super(ManagedActor, self)._actor_loop()
        finally:
            inbox = self.actor_inbox
            if isinstance(inbox, CountingInbox):
                inbox.retire()

    ManagedActor._create_actor_inbox = staticmethod(make_inbox)  # type: ignore[method-assign]
    ManagedActor._actor_loop = actor_loop  # type: ignore[method-assign,assignment]
    try:
        yield tracker
    finally:
        for attr, value in (("_create_actor_inbox", original_inbox), ("_actor_loop", original_loop)):
            if value is None:
                delattr(ManagedActor, attr)
            else:
                setattr(ManagedActor, attr, value)
