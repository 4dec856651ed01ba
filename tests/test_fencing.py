"""Fencing: a replaced incarnation that wakes up can neither write events nor reach the exchange.

Real parts: the SQLite store, the I/O loop, the supervisor and real actors; a
handler blocked on a threading.Event stands in for a durable write that hangs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pykka
import pytest
from loguru import logger

from adapters.event_store import FENCED_EVENT, EventStore, Fenced, _Incarnate, _Prepared
from adapters.io_loop import IOLoop
from core.config import ConfigError, merge_live, parse_config
from core.events import Event, Severity
from core.messages import IOCompleted, Message, RestartChild, Shutdown
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import eventually, make_config

T0 = 1_700_000_000_000


class Act(Message, frozen=True, kw_only=True):
    """Wait for ``release``, then try to write an event and to call the exchange."""

    release: Any
    ran: Any  # threading.Event: set if the I/O coroutine body ever runs
    refused: Any  # list: the Fenced exceptions this incarnation saw
    io_first: bool = True


class Write(Message, frozen=True, kw_only=True):
    """Wait for ``release``, then write one event, not durable (nothing else)."""

    release: Any


class Call(Message, frozen=True, kw_only=True):
    ran: Any


class DurableWrite(Message, frozen=True, kw_only=True):
    pass


class Worker(ManagedActor):
    def started(self) -> None:
        self.completed: list[IOCompleted] = []

    @handles(Act)
    def _act(self, msg: Act) -> None:
        msg.release.wait(10)
        steps = [self._call, self._write] if msg.io_first else [self._write, self._call]
        for i, step in enumerate(steps):
            try:
                step(msg.ran)
            except Fenced as exc:
                msg.refused.append(exc)
                if i == len(steps) - 1:
                    raise  # the last refusal goes to the base class: the actor stops quietly

    def _call(self, ran: threading.Event) -> None:
        async def touch_the_exchange() -> str:
            ran.set()
            return "done"

        self.io_call("touch", touch_the_exchange())

    def _write(self, ran: threading.Event) -> None:
        self.emit("test.woke", {"n": 1})

    @handles(Write)
    def _write_once(self, msg: Write) -> None:
        msg.release.wait(10)
        self.emit("test.woke", {"n": 2})

    @handles(Call)
    def _call_now(self, msg: Call) -> None:
        self._call(msg.ran)

    @handles(DurableWrite)
    def _durable(self, msg: DurableWrite) -> None:
        self.emit("test.durable", durable=True)

    @handles(IOCompleted)
    def _done(self, msg: IOCompleted) -> None:
        self.completed.append(msg)
        self.emit("test.io_done", {"result": msg.result})


def spec(name: str) -> ChildSpec:
    return ChildSpec(name=name, factory=lambda n, c: Worker.start(name=n, ctx=c))


@pytest.fixture
def sup_ctx(tmp_path: Path, ctx: ActorContext) -> ActorContext:
    cfg = make_config(tmp_path, "[supervisor]\nrestart_backoff_ms = 100\nchild_check_interval_ms = 500\nshutdown_timeout_secs = 5\n")
    return dataclasses.replace(ctx, config=cfg)


@pytest.fixture
def sup(sup_ctx: ActorContext):
    ref = Supervisor.start(ctx=sup_ctx, children=[spec("worker")])
    yield ref
    ref.tell(Shutdown(reason="test end"))
    if not ref.actor_stopped.wait(3):
        sup_ctx.clock.advance(10_000)
        ref.actor_stopped.wait(5)


@pytest.fixture
def warnings() -> Any:
    lines: list[str] = []
    hid = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{extra[actor]} | {message}", filter=lambda r: "actor" in r["extra"])
    yield lines
    logger.remove(hid)


def child(sup: pykka.ActorRef, name: str = "worker") -> pykka.ActorRef | None:
    return sup.proxy().refs.get().get(name)


def replaced(sup: pykka.ActorRef, old: pykka.ActorRef, ctx: ActorContext) -> pykka.ActorRef | None:
    ctx.clock.advance(50)
    ref = child(sup)
    return ref if ref is not None and ref.actor_urn != old.actor_urn and ref.is_alive() else None


def stored(ctx: ActorContext, *types: str) -> list[Event]:
    return ctx.io.run(ctx.store.query(types=types), 5)


def held_writer(store: EventStore) -> threading.Event:
    """Park the store's writer task on a job until the returned event is set."""
    gate = threading.Event()
    entered = threading.Event()

    async def hold(db: Any) -> None:
        entered.set()
        while not gate.is_set():
            await asyncio.sleep(0.005)

    store.run_job(hold)
    assert entered.wait(5), "writer never reached the holding job"
    return gate


@pytest.mark.parametrize("io_first", [True, False], ids=["io-then-event", "event-then-io"])
def test_a_replaced_incarnation_that_wakes_is_refused_and_the_new_one_acts(sup, sup_ctx, warnings, io_first):
    """Bug 5: RestartChild replaces a stuck child; when the old one wakes, its io_call and its
    event are refused (the coroutine never runs, nothing is stored), it stops without counting
    as a failure, and the new incarnation writes and calls normally."""
    old = eventually(lambda: child(sup), what="worker started")
    release, ran, refused = threading.Event(), threading.Event(), []
    old.tell(Act(release=release, ran=ran, refused=refused, io_first=io_first))
    sup.tell(RestartChild(name="worker", reason="no answer within the deadline"))
    new = eventually(lambda: replaced(sup, old, sup_ctx), what="replacement")
    new_epoch = new.proxy().epoch.get()
    eventually(lambda: sup_ctx.store.current_epoch("worker") == new_epoch, what="the new epoch in effect")

    release.set()
    assert old.actor_stopped.wait(5), "the fenced incarnation did not stop"
    assert len(refused) == 2 and {e.operation for e in refused} == {"io_call touch", "event test.woke"}
    assert all(e.current == new_epoch for e in refused)
    sup_ctx.store.flush()
    assert not ran.is_set(), "the fenced incarnation's coroutine ran"
    assert stored(sup_ctx, "test.woke") == []
    fenced = stored(sup_ctx, FENCED_EVENT)
    assert sorted(e.data["refused"] for e in fenced) == ["event test.woke", "io_call touch"]
    assert all(e.actor == "worker" and e.severity == Severity.WARNING and e.data["current_epoch"] == new_epoch for e in fenced)
    assert sum("fenced:" in line for line in warnings) == 1  # logged once
    assert stored(sup_ctx, "supervisor.child_failed") == []
    assert child(sup).actor_urn == new.actor_urn and new.is_alive()

    new_ran = threading.Event()
    new.tell(Call(ran=new_ran))
    eventually(lambda: stored(sup_ctx, "test.io_done"), what="the new incarnation's call completed")
    assert new_ran.is_set()


def test_the_writer_refuses_an_event_the_actor_thought_it_could_write(sup, sup_ctx):
    """The decision is serialised: the old incarnation's early check passes (the new epoch is
    queued, not yet recorded), the writer records the epoch first and then refuses the event."""
    store = sup_ctx.store
    old = eventually(lambda: child(sup), what="worker started")
    release = threading.Event()
    old.tell(Write(release=release))
    gate = held_writer(store)
    try:
        sup.tell(RestartChild(name="worker", reason="stuck"))
        queued = lambda kind, type_=None: any(isinstance(i, kind) and (type_ is None or i.row[1] == type_) for i in list(store._queue))  # noqa: E731
        eventually(lambda: (sup_ctx.clock.advance(50), queued(_Incarnate))[1], what="the new epoch queued")
        release.set()
        # the old incarnation's own check passed: its event is queued behind the new epoch
        eventually(lambda: queued(_Prepared, "test.woke"), what="the old write queued")
    finally:
        release.set()
        gate.set()
    assert old.actor_stopped.wait(5)
    store.flush()
    assert stored(sup_ctx, "test.woke") == []
    assert [e.data["refused"] for e in stored(sup_ctx, FENCED_EVENT)] == ["event test.woke"]
    new = eventually(lambda: replaced(sup, old, sup_ctx), what="replacement")
    assert new.proxy().epoch.get() == store.current_epoch("worker")


def test_a_durable_write_waits_out_a_slow_store_and_never_fails(tmp_path: Path, ctx: ActorContext):
    """append_event(durable=True) while the writer is held: no DurableWriteTimeout any more
    (issue 16: backpressure slows work, never kills an owner); it returns once committed."""
    cfg = make_config(tmp_path, "[store]\ndurable_wait_secs = 1\n[guard]\nreply_deadline_secs = 2\n")
    worker = Worker.start(name="w", ctx=dataclasses.replace(ctx, config=cfg))
    gate = held_writer(ctx.store)
    answer = worker.ask(DurableWrite(), block=False)
    try:
        eventually(lambda: ctx.store.health().durable_wait_ms >= 1500, timeout=10, what="the write waiting past durable_wait_secs")
        with pytest.raises(pykka.Timeout):
            answer.get(timeout=0.05)  # still waiting for its commit
    finally:
        gate.set()
    try:
        assert answer.get(timeout=10) is None  # committed, not failed
        assert [e.type for e in stored(ctx, "test.durable")] == ["test.durable"]
        assert ctx.store.health().durable_wait_ms == 0
    finally:
        worker.stop()


def test_epochs_come_from_the_store_and_grow_across_a_restart(tmp_path: Path, io_loop: IOLoop):
    """Epochs are recorded in ``incarnations``; a new process continues above every earlier one
    and refuses a fence of the previous process."""
    path = tmp_path / "events.db"
    store = EventStore(path, io_loop).open()
    first = store.begin_incarnation("sync", "urn:1", T0)
    second = store.begin_incarnation("sync", "urn:2", T0 + 1)
    other = store.begin_incarnation("guard", "urn:3", T0 + 2)
    assert first.epoch < second.epoch < other.epoch
    store.flush()
    assert not store.admits(first) and store.admits(second) and store.admits(other)
    store.close()

    store = EventStore(path, io_loop).open()
    try:
        again = store.begin_incarnation("sync", "urn:4", T0 + 3)
        assert again.epoch > other.epoch
        assert not store.admits(second), "a fence of the previous process"
        with pytest.raises(Fenced):
            store.append_durable(Event(type="late", ts_ms=T0, actor="sync"), fence=second).result(5)
    finally:
        store.close()
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT epoch, name, urn FROM incarnations ORDER BY epoch").fetchall()
    assert rows == [(first.epoch, "sync", "urn:1"), (second.epoch, "sync", "urn:2"), (other.epoch, "guard", "urn:3"), (again.epoch, "sync", "urn:4")]


def test_the_writer_orders_fenced_appends_against_the_new_epoch(store: EventStore, io_loop: IOLoop):
    """What the old incarnation appended before the new epoch was queued is committed; what it
    appended after is refused (durable: the future raises; not durable: on_refused is called)."""
    old = store.begin_incarnation("position:BTCUSDT:p1", "urn:old", T0)
    gate = held_writer(store)
    try:
        store.append(Event(type="before", ts_ms=T0, actor=old.name), fence=old)
        new = store.begin_incarnation(old.name, "urn:new", T0 + 1)
        told: list[Fenced] = []
        store.append(Event(type="after", ts_ms=T0 + 2, actor=old.name), fence=old, on_refused=told.append)
        durable = store.append_durable(Event(type="after_durable", ts_ms=T0 + 3, actor=old.name), fence=old)
        assert store.admits(old)  # the actor thread's early check would still pass here
    finally:
        gate.set()
    mine = store.append_durable(Event(type="new", ts_ms=T0 + 4, actor=old.name), fence=new).result(5)
    with pytest.raises(Fenced, match="refused event after_durable"):
        durable.result(5)
    assert [e.operation for e in told] == ["event after"]
    kept = io_loop.run(store.query(actor=old.name), 5)
    assert [e.type for e in kept] == ["before", FENCED_EVENT, FENCED_EVENT, "new"]
    assert kept[-1].id == mine
    assert [e.data["refused"] for e in kept if e.type == FENCED_EVENT] == ["event after", "event after_durable"]
    assert store.health().backlog == 0


def test_a_retired_incarnation_is_refused(store: EventStore):
    """An actor that stopped on purpose retires its epoch: a late write of it is refused."""
    fence = store.begin_incarnation("position:ETHUSDT:p2", "urn:1", T0)
    store.retire(fence)
    with pytest.raises(Fenced):
        store.append_durable(Event(type="late", ts_ms=T0, actor=fence.name), fence=fence).result(5)
    assert store.current_epoch(fence.name) is None


def test_reply_deadline_must_exceed_the_durable_wait():
    """The guard must never restart an owner that is only waiting on a durable write."""
    with pytest.raises(ConfigError, match=r"guard.reply_deadline_secs \(10\) must be greater than store.durable_wait_secs \(10\)"):
        parse_config("[guard]\nreply_deadline_secs = 10\n")
    assert parse_config("[guard]\nreply_deadline_secs = 6\n[store]\ndurable_wait_secs = 5\n").store.durable_wait_secs == 5
    current = parse_config("")
    lowered = parse_config("[guard]\nreply_deadline_secs = 6\n[store]\ndurable_wait_secs = 5\n")
    with pytest.raises(ConfigError, match="not applied live"):  # only the deadline is live-safe
        merge_live(current, lowered, ["guard.reply_deadline_secs"])
