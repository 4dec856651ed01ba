"""The base class of every actor in the tree.

A :class:`ManagedActor` is a pykka ThreadingActor that

* dispatches messages by type to methods marked ``@handles(MsgType)``;
* reports its own death to the supervisor (``ChildFailed``), including a
  failure in start-up, where pykka runs no hook at all;
* schedules timers through the injected clock (a timer only *tells* a
  message; nothing sleeps in a handler) and cancels them when it stops;
* writes events to the store with its name and a bound logger.

Inside an actor, only ``tell``. Work on the I/O loop comes back as a message
(:meth:`ManagedActor.io_call`).
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import pykka
from loguru import logger

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core.clock import Clock, TimerHandle
from core.config import Config
from core.events import Event, Severity
from core.messages import ChildFailed, ChildStopped, ConfigChanged, Drain, IOCompleted, Tick

_HANDLES_ATTR = "__handles__"


def handles(*message_types: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of the given message types."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _HANDLES_ATTR, getattr(fn, _HANDLES_ATTR, ()) + message_types)
        return fn

    return mark


@dataclasses.dataclass(frozen=True)
class ActorContext:
    """What every actor is given: time, I/O, the event store, its supervisor."""

    clock: Clock
    io: IOLoop
    store: EventStore
    config: Config
    supervisor: Any = None  # ActorRef of the supervisor (None for the supervisor itself)
    directory: Any = None  # supervision.directory.Directory: current refs by name
    wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000


class ManagedActor(pykka.ThreadingActor):
    """Base of all our actors; subclasses implement ``started()`` and handlers."""

    # A stuck actor must not keep the process alive after the bounded shutdown.
    use_daemon_thread = True
    _dispatch: ClassVar[dict[type, Callable[..., Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[type, Callable[..., Any]] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for msg_type in getattr(attr, _HANDLES_ATTR, ()):
                    table[msg_type] = attr
        cls._dispatch = table

    def __init__(self, *, name: str, ctx: ActorContext) -> None:
        super().__init__()
        self.name = name
        self.ctx = ctx
        self.log = logger.bind(actor=name)
        self._timers: list[TimerHandle] = []

    # --------------------------------------------------------- lifecycle
    def started(self) -> None:
        """Start-up work (runs in the actor's thread). Rebuild state here."""

    def stopping(self) -> None:
        """Clean-up on a normal stop (not called after a failure)."""

    def on_start(self) -> None:
        try:
            self.started()
        except Exception as exc:
            self._report_failure(exc, during_start=True)
            raise

    def on_stop(self) -> None:
        self._cancel_timers()
        try:
            self.stopping()
        finally:
            if self.ctx.supervisor is not None:
                try:
                    self.ctx.supervisor.tell(ChildStopped(name=self.name, actor_urn=self.actor_urn))
                except pykka.ActorDeadError:
                    pass

    def busy(self) -> bool:
        """True while an operation is in flight that a drain should wait for."""
        return False

    @handles(ConfigChanged)
    def _on_config_changed(self, msg: ConfigChanged) -> None:
        self.ctx = dataclasses.replace(self.ctx, config=msg.config)
        self.config_changed(msg.applied)

    def config_changed(self, applied: tuple[str, ...]) -> None:
        """Hook: react to settings changed live (``applied`` names them)."""

    @handles(Drain)
    def _on_drain(self, msg: Drain) -> None:
        self._draining = True
        self.finish_drain_if_idle()

    def finish_drain_if_idle(self) -> None:
        """Call after an in-flight operation ends: stops the actor if draining."""
        if getattr(self, "_draining", False) and not self.busy():
            self.stop()

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._cancel_timers()
        self._report_failure(exc, during_start=False)

    def _report_failure(self, exc: BaseException | None, *, during_start: bool) -> None:
        self._cancel_timers()
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip() if exc else "unknown"
        self.log.opt(exception=exc).error("actor failed{}: {}", " during start" if during_start else "", error)
        if self.ctx.supervisor is not None:
            try:
                self.ctx.supervisor.tell(ChildFailed(name=self.name, actor_urn=self.actor_urn, error=error, during_start=during_start))
            except pykka.ActorDeadError:
                pass

    # ---------------------------------------------------------- dispatch
    def on_receive(self, message: Any) -> Any:
        handler = self._dispatch.get(type(message))
        if handler is None:
            self.log.warning("ignored unexpected message {}", type(message).__name__)
            return None
        return handler(self, message)

    # ------------------------------------------------------------ timers
    def after(self, delay_ms: int, message: Any) -> TimerHandle:
        """Tell ourselves ``message`` after ``delay_ms`` (on the injected clock)."""
        handle = self.ctx.clock.call_later(delay_ms, self._teller(message))
        self._timers.append(handle)
        if len(self._timers) > 64:
            self._timers = [h for h in self._timers if not h.cancelled and (h.interval_ms or h.due_ms > self.ctx.clock.now_ms())]
        return handle

    def every(self, interval_ms: int, name: str, first_delay_ms: int | None = None) -> TimerHandle:
        """Tell ourselves ``Tick(name=...)`` every ``interval_ms``."""
        ref, clock = self.actor_ref, self.ctx.clock

        def fire() -> None:
            try:
                ref.tell(Tick(name=name, ts_ms=clock.now_ms()))
            except pykka.ActorDeadError:
                handle.cancel()

        handle = clock.call_every(interval_ms, fire, first_delay_ms)
        self._timers.append(handle)
        return handle

    def _teller(self, message: Any) -> Callable[[], None]:
        ref = self.actor_ref

        def fire() -> None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                pass

        return fire

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    # ---------------------------------------------------------------- I/O
    def io_call(self, purpose: str, coro: Coroutine[Any, Any, Any], *, correlation_id: str = "") -> None:
        """Run ``coro`` on the I/O loop; its outcome comes back as ``IOCompleted``."""
        self.ctx.io.call_and_tell(
            coro,
            self.actor_ref,
            lambda result: IOCompleted(purpose=purpose, result=result, correlation_id=correlation_id),
            lambda exc: IOCompleted(purpose=purpose, error=f"{type(exc).__name__}: {exc}", exception=exc, correlation_id=correlation_id),
        )

    def load_events(self, timeout_s: float = 10.0, **filters: Any) -> list[Event]:
        """Read events (for rebuilding state in ``started()``); sees every prior append."""
        return self.ctx.io.run(self.ctx.store.query(**filters), timeout_s)

    # ------------------------------------------------------------- events
    def emit(
        self,
        type_: str,
        data: dict[str, Any] | None = None,
        *,
        severity: Severity = Severity.INFO,
        position_id: str | None = None,
        correlation_id: str | None = None,
        symbol: str | None = None,
        exchange: str | None = None,
        projection: dict[str, Any] | None = None,
        durable: bool = False,
    ) -> Event:
        """Record an event; with ``durable=True`` wait until it is committed.

        Durable emits are for write-ahead intents (record, then act on the
        exchange), so a crash never leaves an action without its record.
        """
        event = Event(
            type=type_,
            ts_ms=self.ctx.clock.now_ms(),
            actor=self.name,
            severity=severity,
            position_id=position_id,
            correlation_id=correlation_id,
            symbol=symbol,
            exchange=exchange,
            data=data or {},
            projection=projection,
        )
        if durable:
            self.ctx.store.append_durable(event).result(timeout=30)
        else:
            self.ctx.store.append(event)
        return event
