"""Supervision: one-for-one restarts with state rebuilt, intensity, start failures, drain."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pykka
import pytest

from supervision.actor import ActorContext, ManagedActor, handles
from core.messages import ChildFailed, Message, RestartChild, Shutdown, StartChild
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import eventually, make_config
from core.clock import VirtualClock
from core.events import Severity


class Bump(Message, frozen=True, kw_only=True):
    pass


class Crash(Message, frozen=True, kw_only=True):
    pass


class GetCount(Message, frozen=True, kw_only=True):
    pass


class Block(Message, frozen=True, kw_only=True):
    release: Any


class StopYourself(Message, frozen=True, kw_only=True):
    pass


class Counter(ManagedActor):
    """Its state is a fold over its own events: rebuilt on every (re)start."""

    def started(self) -> None:
        self.count = sum(1 for e in self.load_events(actor=self.name) if e.type == "test.bumped")

    @handles(Bump)
    def _bump(self, msg: Bump) -> None:
        self.count += 1
        self.emit("test.bumped", {"count": self.count})

    @handles(GetCount)
    def _get(self, msg: GetCount) -> int:
        return self.count

    @handles(Crash)
    def _crash(self, msg: Crash) -> None:
        raise RuntimeError("boom")

    @handles(Block)
    def _block(self, msg: Block) -> None:
        msg.release.wait(10)

    @handles(StopYourself)
    def _stop_yourself(self, msg: StopYourself) -> None:
        self.stop()


class FailsInStart(ManagedActor):
    def started(self) -> None:
        raise ValueError("cannot start: bad state")


class DiesSilently(ManagedActor):
    """Bypasses the base class's start wrapper: a death nobody reports."""

    def on_start(self) -> None:
        raise ValueError("silent death")


class SlowToDrain(ManagedActor):
    """Busy until told Bump; drains only after that."""

    def started(self) -> None:
        self.pending = True

    def busy(self) -> bool:
        return self.pending

    @handles(Bump)
    def _done(self, msg: Bump) -> None:
        self.pending = False
        self.finish_drain_if_idle()


def spec(name: str, cls: type = Counter, **kw: Any) -> ChildSpec:
    return ChildSpec(name=name, factory=lambda n, c: cls.start(name=n, ctx=c), **kw)


@pytest.fixture
def sup_ctx(tmp_path: Path, ctx: ActorContext) -> ActorContext:
    cfg = make_config(tmp_path, "[supervisor]\nmax_restarts = 3\nrestart_window_secs = 60\nrestart_backoff_ms = 100\nchild_check_interval_ms = 500\nshutdown_timeout_secs = 5\n")
    return dataclasses.replace(ctx, config=cfg)


@pytest.fixture
def start_sup(sup_ctx: ActorContext):
    started: list[pykka.ActorRef] = []

    def _start(*children: ChildSpec) -> pykka.ActorRef:
        ref = Supervisor.start(ctx=sup_ctx, children=list(children))
        started.append(ref)
        return ref

    yield _start
    for ref in started:
        if ref.is_alive():
            ref.tell(Shutdown(reason="test end"))
            ok = ref.actor_stopped.wait(2)
            if not ok:  # draining children may wait on the virtual deadline
                sup_ctx.clock.advance(10_000)
                ref.actor_stopped.wait(5)


def child(sup: pykka.ActorRef, name: str) -> pykka.ActorRef | None:
    return sup.proxy().refs.get().get(name)


def restarted(sup: pykka.ActorRef, name: str, old: pykka.ActorRef, clock: VirtualClock) -> pykka.ActorRef | None:
    """Advance virtual time until the supervisor has a new, live incarnation of ``name``."""
    clock.advance(50)
    ref = child(sup, name)
    return ref if ref is not None and ref.actor_urn != old.actor_urn and ref.is_alive() else None


def events(ctx: ActorContext, type_: str) -> list:
    return ctx.io.run(ctx.store.query(types=(type_,)), 5)


def test_failed_child_is_replaced_with_state_rebuilt_from_events(start_sup, sup_ctx):
    """A crash loses nothing: the fresh actor folds the store's events back into its count."""
    sup = start_sup(spec("counter"))
    first = eventually(lambda: child(sup, "counter"), what="counter started")
    for _ in range(3):
        first.tell(Bump())
    assert first.ask(GetCount(), timeout=5) == 3
    first.tell(Crash())
    second = eventually(lambda: restarted(sup, "counter", first, sup_ctx.clock), what="restart")
    assert not first.is_alive()
    assert second.ask(GetCount(), timeout=5) == 3
    second.tell(Bump())
    assert second.ask(GetCount(), timeout=5) == 4
    failed = events(sup_ctx, "supervisor.child_failed")
    assert failed and failed[0].data["child"] == "counter" and "boom" in failed[0].data["error"]
    assert events(sup_ctx, "supervisor.child_restarted")


def test_restart_intensity_limit_gives_up_and_blocks_intake(start_sup, sup_ctx):
    """More than max_restarts (3) failures inside the window: no restart, intake closed, critical event."""
    sup = start_sup(spec("counter"))
    ref = eventually(lambda: child(sup, "counter"))
    for _ in range(3):
        ref.tell(Crash())
        ref = eventually(lambda old=ref: restarted(sup, "counter", old, sup_ctx.clock), what="restart")
    ref.tell(Crash())
    eventually(lambda: sup.proxy().given_up.get().get("counter"), what="given up")
    sup_ctx.clock.advance(1_000)
    assert child(sup, "counter") is None
    status = sup.proxy().status().get()
    assert status["intake"]["open"] is False
    assert "counter" in " ".join(status["intake"]["blocked"].values())
    assert status["healthy"] is False
    critical = events(sup_ctx, "supervisor.restart_intensity_exceeded")
    assert len(critical) == 1 and critical[0].severity == Severity.CRITICAL


def test_failures_spread_beyond_the_window_are_all_restarted(start_sup, sup_ctx):
    """The intensity counts failures inside the sliding window only."""
    sup = start_sup(spec("counter"))
    ref = eventually(lambda: child(sup, "counter"))
    for _ in range(6):
        ref.tell(Crash())
        ref = eventually(lambda old=ref: restarted(sup, "counter", old, sup_ctx.clock), what="restart")
        sup_ctx.clock.advance(61_000)
    assert sup.proxy().given_up.get() == {}


def test_child_dying_in_start_is_noticed_and_given_up(start_sup, sup_ctx):
    """pykka runs no hook when on_start raises; the base class reports it anyway."""
    sup = start_sup(spec("broken", FailsInStart))
    eventually(lambda: (sup_ctx.clock.advance(100), sup.proxy().given_up.get().get("broken"))[1], what="given up")
    failed = events(sup_ctx, "supervisor.child_failed")
    assert len(failed) == 4  # first start + 3 restarts
    assert all(e.data["during_start"] for e in failed)
    assert "cannot start" in failed[0].data["error"]


def test_silent_death_is_caught_by_the_liveness_check(start_sup, sup_ctx):
    """An actor that dies without reporting is found by the periodic liveness check."""
    start_sup(spec("silent", DiesSilently))
    eventually(lambda: (sup_ctx.clock.advance(250), events(sup_ctx, "supervisor.child_failed"))[1], what="liveness check")
    failed = events(sup_ctx, "supervisor.child_failed")
    assert "liveness check" in failed[0].data["error"]


def test_stale_failure_report_does_not_restart_the_new_incarnation(start_sup, sup_ctx):
    """A ChildFailed naming an old actor urn is ignored."""
    sup = start_sup(spec("counter"))
    first = eventually(lambda: child(sup, "counter"))
    first.tell(Crash())
    second = eventually(lambda: restarted(sup, "counter", first, sup_ctx.clock))
    sup.tell(ChildFailed(name="counter", actor_urn=first.actor_urn, error="late report"))
    sup_ctx.clock.advance(1_000)
    assert child(sup, "counter").actor_urn == second.actor_urn
    assert second.is_alive()
    assert len(events(sup_ctx, "supervisor.child_failed")) == 1


def test_transient_child_that_stops_is_not_restarted_permanent_one_is(start_sup, sup_ctx):
    """A position that closes stays closed; a service that exits is replaced."""
    sup = start_sup(spec("service"))
    sup.tell(StartChild(spec=spec("position:BTCUSDT:1", kind="position", restart="transient")))
    pos = eventually(lambda: child(sup, "position:BTCUSDT:1"))
    pos.tell(StopYourself())
    eventually(lambda: child(sup, "position:BTCUSDT:1") is None, what="transient child removed")
    sup_ctx.clock.advance(1_000)
    assert child(sup, "position:BTCUSDT:1") is None
    svc = child(sup, "service")
    svc.tell(StopYourself())
    eventually(lambda: restarted(sup, "service", svc, sup_ctx.clock), what="permanent child restarted")


def test_restart_request_replaces_a_stuck_child(start_sup, sup_ctx):
    """A child stuck in a handler is replaced; the stuck one is fenced out (not in the registry)."""
    sup = start_sup(spec("counter"))
    stuck = eventually(lambda: child(sup, "counter"))
    release = threading.Event()
    stuck.tell(Block(release=release))
    sup.tell(RestartChild(name="counter", reason="no heartbeat"))
    fresh = eventually(lambda: restarted(sup, "counter", stuck, sup_ctx.clock), what="replacement")
    assert fresh.ask(GetCount(), timeout=5) == 0
    assert events(sup_ctx, "supervisor.child_restart_requested")[0].data["reason"] == "no heartbeat"
    release.set()
    stuck.actor_stopped.wait(5)


def test_shutdown_waits_for_in_flight_work(start_sup, sup_ctx):
    """Drain: the supervisor stops only after a busy child has finished its operation."""
    sup = start_sup(spec("busy", SlowToDrain))
    busy = eventually(lambda: child(sup, "busy"))
    sup.tell(Shutdown(reason="test"))
    assert not sup.actor_stopped.wait(0.3)
    assert busy.is_alive()
    busy.tell(Bump())
    assert sup.actor_stopped.wait(5)
    assert not busy.is_alive()
    assert not events(sup_ctx, "supervisor.drain_timeout")
    assert events(sup_ctx, "supervisor.stopped")


def test_shutdown_is_bounded_when_a_child_never_finishes(start_sup, sup_ctx):
    """A child that never drains delays shutdown by at most shutdown_timeout_secs."""
    sup = start_sup(spec("busy", SlowToDrain))
    busy = eventually(lambda: child(sup, "busy"))
    sup.tell(Shutdown(reason="test"))
    eventually(lambda: sup.proxy().shutting_down.get(), what="shutdown started")
    sup_ctx.clock.advance(5_000)
    assert sup.actor_stopped.wait(5)
    timeout = events(sup_ctx, "supervisor.drain_timeout")
    assert timeout and timeout[0].data["still_running"] == ["busy"]
    busy.stop()


def test_no_restarts_during_shutdown(start_sup, sup_ctx):
    """A child failing while the tree drains is not brought back."""
    sup = start_sup(spec("busy", SlowToDrain), spec("counter"))
    counter = eventually(lambda: child(sup, "counter"))
    busy = child(sup, "busy")
    sup.tell(Shutdown(reason="test"))
    eventually(lambda: not counter.is_alive(), what="counter drained")
    busy.tell(Crash())  # unknown message to SlowToDrain: ignored; make it finish instead
    busy.tell(Bump())
    assert sup.actor_stopped.wait(5)
    assert not events(sup_ctx, "supervisor.child_restarted")


class SlowStopper(ManagedActor):
    """Its normal-stop report is delayed (pykka marks it dead before on_stop runs)."""

    gate = threading.Event()

    def stopping(self) -> None:
        self.gate.wait(5)


def test_liveness_check_does_not_mistake_a_normal_stop_for_a_death(start_sup, sup_ctx):
    """Regression: a tick between 'marked stopped' and 'ChildStopped sent' must not restart a closed position."""
    sup = start_sup()
    SlowStopper.gate.clear()
    sup.tell(StartChild(spec=spec("position:ETHUSDT:9", SlowStopper, kind="position", restart="transient")))
    pos = eventually(lambda: child(sup, "position:ETHUSDT:9"))
    pos.stop(block=False)
    eventually(lambda: not pos.is_alive(), what="marked stopped")
    sup_ctx.clock.advance(500)  # liveness tick while the report is still on its way
    sup.proxy().refs.get()  # the tick has been handled
    SlowStopper.gate.set()
    eventually(lambda: child(sup, "position:ETHUSDT:9") is None, what="normal stop processed")
    sup_ctx.clock.advance(2_000)
    assert not events(sup_ctx, "supervisor.child_failed")
    assert not events(sup_ctx, "supervisor.child_restarted")


class Answers:
    """A reply_to for probes: collects what it is told."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def tell(self, message: Any) -> None:
        self.got.append(message)


def test_every_managed_actor_answers_a_probe_from_its_mailbox(sup_ctx):
    """Bug 6: the base class answers Probe itself (subclasses inherit it); an actor stuck in a
    handler answers only once it is back at its mailbox."""
    from core.messages import Probe, ProbeAnswered

    assert Probe in Counter._dispatch and Probe in SlowToDrain._dispatch
    ref = Counter.start(name="position:BTCUSDT:p9", ctx=sup_ctx)
    try:
        answers = Answers()
        ref.tell(Probe(probe_id=1, reply_to=answers, correlation_id="probe-1"))
        eventually(lambda: answers.got, what="probe answered")
        assert answers.got == [ProbeAnswered(name="position:BTCUSDT:p9", probe_id=1, actor_urn=ref.actor_urn, correlation_id="probe-1", msg_id=answers.got[0].msg_id)]
        release = threading.Event()
        ref.tell(Block(release=release))
        ref.tell(Probe(probe_id=2, reply_to=answers))
        ref.tell(Bump())
        assert [a.probe_id for a in answers.got] == [1], "a stuck actor answered"
        release.set()
        assert ref.ask(GetCount(), timeout=5) == 1  # the probe was handled before the Bump and this ask
        assert [a.probe_id for a in answers.got] == [1, 2]
    finally:
        ref.stop()
