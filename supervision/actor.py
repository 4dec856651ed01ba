"""The base class of every actor in the tree.

A :class:`ManagedActor` is a pykka ThreadingActor that

* dispatches messages by type to methods marked ``@handles(MsgType)``;
* reports its own death to the supervisor (``ChildFailed``), including a
  failure in start-up, where pykka runs no hook at all;
* schedules timers through the injected clock (a timer only *tells* a
  message; nothing sleeps in a handler) and cancels them when it stops;
* writes events to the store with its name (:meth:`ManagedActor.append_event`),
  each also logged at its severity on the actor's bound logger; a write-ahead
  record either waits for its commit (``durable=True``: slowly if the store is
  slow, never failing for it) or, without blocking, tells the actor a message
  once it is committed (:meth:`ManagedActor.append_durable_then`);
* is fenced: on start it takes a new epoch for its name from the store, and
  once a newer incarnation has started, its event appends and I/O calls are
  refused (decided by the store's writer and on the I/O loop, where epochs
  change). A fenced actor logs it once and stops itself quietly;
* answers a liveness :class:`~core.messages.Probe` from its mailbox, so an
  actor stuck in a handler does not answer.

Inside an actor, only ``tell``. Work on the I/O loop comes back as a message
(:meth:`ManagedActor.io_call`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import random
import signal
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

import msgspec
import pykka
from loguru import logger

from adapters.event_store import EventStore, Fence, Fenced
from adapters.io_loop import IOLoop
from core.clock import Clock, TimerHandle
from core.config import Config
from core.events import Event, Severity
from core.messages import ChildFailed, ChildStopped, ConfigChanged, Drain, IOCompleted, Message, Probe, ProbeAnswered, Tick

__all__ = ["ActorContext", "DurableWriteTimeout", "Fenced", "ManagedActor", "handles"]

_encode = msgspec.json.Encoder().encode

#: Crash-test hook: "before:<event type>" or "after:<event type>" makes the process
#: SIGKILL itself at that exact step, when any actor writes that event (the tests and
#: ``tradebot soak`` use it to prove recovery from a kill at every step; unset in normal runs).
CRASH_POINT = os.environ.get("TRADEBOT_CRASH_POINT", "")


def _crash_if(when: str, type_: str) -> None:
    if CRASH_POINT and CRASH_POINT == f"{when}:{type_}":
        os.kill(os.getpid(), signal.SIGKILL)


class SoakActorCrash(RuntimeError):
    """Raised on purpose by the soak's actor-crash hook (never in a normal run)."""


def _soak_crash_hook() -> tuple[float, random.Random] | None:
    """``TRADEBOT_SOAK_ACTOR_CRASHES="<probability per message>:<seed>"``, set only by ``tradebot soak``
    for the bot it runs: position owners and the intake then crash now and then as a message arrives
    (the message is lost, as in a bug), to prove the supervisor's restart from events."""
    spec = os.environ.get("TRADEBOT_SOAK_ACTOR_CRASHES", "")
    if not spec:
        return None
    rate, _, seed = spec.partition(":")
    logger.critical("soak mode: actors crash on purpose (probability {} per message)", rate)
    return float(rate), random.Random(int(seed or 0) ^ os.getpid())


_SOAK_CRASHES = _soak_crash_hook()

_HANDLES_ATTR = "__handles__"


def handles(*message_types: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method as the handler of the given message types."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _HANDLES_ATTR, getattr(fn, _HANDLES_ATTR, ()) + message_types)
        return fn

    return mark


class DurableWriteTimeout(TimeoutError):
    """Kept for callers that name it: a slow durable write no longer raises (it waits)."""


class _FencedOut(Message, frozen=True, kw_only=True):
    """Internal: the writer or the I/O loop refused one of our operations after the fact."""

    error: Any  # the Fenced exception


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
        self._fence: Fence | None = None
        self._fenced = False
        self._refused_teller: Callable[[Fenced], None] | None = None
        self._drain_requested = False  # (the supervisor keeps its own _draining: the children it waits for)

    # --------------------------------------------------------- lifecycle
    def started(self) -> None:
        """Start-up work (runs in the actor's thread). Rebuild state here."""

    def stopping(self) -> None:
        """Clean-up on a normal stop (not called after a failure, nor once fenced)."""

    def on_start(self) -> None:
        try:
            self._fence = self._begin_incarnation()
            self.log.info("started (epoch {})", self._fence.epoch)
            self.started()
        except Fenced as exc:
            self._fence_out(exc)
        except Exception as exc:
            self._report_failure(exc, during_start=True)
            raise

    def _begin_incarnation(self) -> Fence:
        """Take this incarnation's epoch from the store (no wait), before ``started()`` reads or writes.

        Its record is queued ahead of everything ``started()`` appends or reads,
        so a rebuild sees every write of the older incarnations that was admitted.
        """
        return self.ctx.store.begin_incarnation(self.name, self.actor_urn, self.ctx.clock.now_ms())

    @property
    def epoch(self) -> int | None:
        """This incarnation's epoch (None before ``on_start``)."""
        return self._fence.epoch if self._fence else None

    def on_stop(self) -> None:
        self._cancel_timers()
        if self._fenced:
            return  # a newer incarnation owns the name: no clean-up, no report
        try:
            self.stopping()
        finally:
            if self._fence is not None:
                self.ctx.store.retire(self._fence)
            if self.ctx.supervisor is not None:
                try:
                    self.ctx.supervisor.tell(ChildStopped(name=self.name, actor_urn=self.actor_urn))
                except pykka.ActorDeadError:
                    pass

    def _fence_out(self, exc: Fenced) -> None:
        """A newer incarnation owns our name: log it once, drop what is queued, stop."""
        if self._fenced:
            return
        self._fenced = True
        self._cancel_timers()
        self.log.warning("fenced: {}; a newer incarnation owns {}, this one stops", exc, self.name)
        self.stop()

    @handles(_FencedOut)
    def _on_fenced_out(self, msg: _FencedOut) -> None:
        self._fence_out(msg.error)

    @handles(Probe)
    def _on_probe(self, msg: Probe) -> None:
        try:
            msg.reply_to.tell(ProbeAnswered(name=self.name, probe_id=msg.probe_id, actor_urn=self.actor_urn, correlation_id=msg.correlation_id))
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
        self._drain_requested = True
        self.finish_drain_if_idle()

    def finish_drain_if_idle(self) -> None:
        """Call after an in-flight operation ends: stops the actor if draining."""
        if self._drain_requested and not self.busy():
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
        if self._fenced:
            return None  # superseded: what is still queued is the new incarnation's business
        if _SOAK_CRASHES is not None and (self.name.startswith("position:") or self.name == "intake") and not isinstance(message, (Probe, Drain, _FencedOut)):
            rate, rng = _SOAK_CRASHES
            if rng.random() < rate:
                raise SoakActorCrash(f"soak: {self.name} crashes on purpose at {type(message).__name__}")
        handler = self._dispatch.get(type(message))
        if handler is None:
            self.log.warning("ignored unexpected message {}", type(message).__name__)
            return None
        try:
            return handler(self, message)
        except Fenced as exc:
            self._fence_out(exc)
            return None

    # ------------------------------------------------------------ timers
    def after(self, delay_ms: int, message: Any) -> TimerHandle:
        """Tell ourselves ``message`` after ``delay_ms`` (on the injected clock)."""
        handle = self.ctx.clock.call_later(delay_ms, self._teller(message), owner=self.name)
        self._timers.append(handle)
        if len(self._timers) > 64:
            self._timers = [h for h in self._timers if h.pending]
        return handle

    def every(self, interval_ms: int, name: str, first_delay_ms: int | None = None) -> TimerHandle:
        """Tell ourselves ``Tick(name=...)`` every ``interval_ms``."""
        ref, clock = self.actor_ref, self.ctx.clock

        def fire() -> None:
            try:
                ref.tell(Tick(name=name, ts_ms=clock.now_ms()))
            except pykka.ActorDeadError:
                handle.cancel()

        handle = clock.call_every(interval_ms, fire, first_delay_ms, owner=self.name)
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
        """Run ``coro`` on the I/O loop; its outcome comes back as ``IOCompleted``.

        Fenced: raises :class:`Fenced` at once if a newer incarnation is known,
        and the I/O loop refuses to start ``coro`` if one has begun meanwhile
        (then no ``IOCompleted`` comes back; this actor stops).
        """
        fence, store = self._current_fence(), self.ctx.store
        operation = f"io_call {purpose}"
        if not store.admits(fence):
            coro.close()
            raise store.refuse(fence, operation, self.ctx.clock.now_ms())

        def on_error(exc: BaseException) -> Message:
            if isinstance(exc, Fenced):
                return _FencedOut(error=exc)
            return IOCompleted(purpose=purpose, error=f"{type(exc).__name__}: {exc}", exception=exc, correlation_id=correlation_id)

        self.ctx.io.call_and_tell(
            store.fenced(fence, coro, operation, self.ctx.clock.now_ms()),
            self.actor_ref,
            lambda result: IOCompleted(purpose=purpose, result=result, correlation_id=correlation_id),
            on_error,
        )

    def _current_fence(self) -> Fence:
        if self._fence is None:
            raise RuntimeError(f"{self.name}: no incarnation yet (events and I/O start in on_start)")
        return self._fence

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
        """Build an event from the actor's name and clock and :meth:`append_event` it."""
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
        self.append_event(event, durable=durable)
        return event

    def append_event(self, event: Event, *, durable: bool = False) -> None:
        """Write ``event`` to the store (fenced) and log it at its severity.

        ``durable=True`` waits until it is committed: for write-ahead intents
        (record, then act on the exchange), so a crash never leaves an action
        without its record. A slow store slows the actor, never fails it: after
        each ``store.durable_wait_secs`` still waiting it logs a warning and
        waits on (the supervisor reports the slow store as a health problem).
        Actors that must stay responsive meanwhile use
        :meth:`append_durable_then`. Raises :class:`Fenced` if a newer
        incarnation owns the name (let it propagate: the actor stops quietly).
        """
        fence, store = self._current_fence(), self.ctx.store
        if not store.admits(fence):
            raise store.refuse(fence, f"event {event.type}", event.ts_ms)
        _crash_if("before", event.type)
        if durable:
            wait_s = self.ctx.config.store.durable_wait_secs
            future = store.append_durable(event, fence=fence)
            waited = 0
            while True:
                try:
                    future.result(timeout=wait_s)
                    break
                except concurrent.futures.TimeoutError:
                    waited += wait_s
                    self.log.warning("event {} not committed after {} s: the store is slow; waiting (nothing is done without it)", event.type, waited)
        else:
            store.append(event, fence=fence, on_refused=self._refused_teller or self._teller_of_refusal())
        if CRASH_POINT:
            store.flush()
            _crash_if("after", event.type)
        self.log.log(event.severity.name, "{}", _describe(event))

    def append_durable_then(self, event: Event, message: Any | None) -> concurrent.futures.Future[int]:
        """Queue a write-ahead record without waiting; tell ourselves ``message`` once it is committed.

        The actor stays responsive meanwhile (probes, marks); it must not act on
        what the record announces before it is committed (``message``, or
        :meth:`tell_when_committed` on the returned future). If the writer refuses
        it (a newer incarnation), the actor is fenced out instead.
        """
        fence, store = self._current_fence(), self.ctx.store
        if not store.admits(fence):
            raise store.refuse(fence, f"event {event.type}", event.ts_ms)
        _crash_if("before", event.type)
        future = store.append_durable(event, fence=fence)
        if CRASH_POINT:
            store.flush()
            _crash_if("after", event.type)
        self.log.log(event.severity.name, "{}", _describe(event))
        self.tell_when_committed(future, message, event.type)
        return future

    def tell_when_committed(self, future: concurrent.futures.Future[int], message: Any | None, what: str = "a durable write") -> None:
        """Tell ourselves ``message`` (None: nothing) once ``future`` (a durable append) is committed;
        a refusal fences this incarnation out."""
        ref = self.actor_ref

        def committed(fut: concurrent.futures.Future[int]) -> None:  # on the I/O loop: only tells
            exc = fut.exception()
            if exc is not None and not isinstance(exc, Fenced):
                logger.critical("{} was not written ({}); what it announces is not done", what, exc)
                return
            reply = _FencedOut(error=exc) if isinstance(exc, Fenced) else message
            if reply is None:
                return
            try:
                ref.tell(reply)
            except pykka.ActorDeadError:
                pass

        future.add_done_callback(committed)

    def _teller_of_refusal(self) -> Callable[[Fenced], None]:
        """Called by the writer (on the I/O loop) when it refused one of our appends: only tells."""
        ref = self.actor_ref

        def refused(exc: Fenced) -> None:
            try:
                ref.tell(_FencedOut(error=exc))
            except pykka.ActorDeadError:
                pass

        self._refused_teller = refused
        return refused


def _describe(event: Event) -> str:
    """One log line for an event: its type, whose it is, its data as JSON."""
    parts = [event.type]
    if event.symbol:
        parts.append(event.symbol)
    if event.position_id:
        parts.append(f"position={event.position_id}")
    if event.correlation_id:
        parts.append(f"corr={event.correlation_id}")
    if event.data:
        parts.append(_encode(event.data).decode())
    return " ".join(parts)
