"""Clocks: virtual time moved by advance(), and real time with a timer thread."""

from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest

from core.clock import RealClock, VirtualClock

T0 = 1_700_000_000_000


# -------------------------------------------------------------- VirtualClock
def test_periodic_timer_fires_once_per_interval_at_its_due_time(vclock: VirtualClock):
    """call_every(30 s) fires exactly twice in advance(60 s), each time with now_ms() equal to its due time."""
    seen: list[int] = []
    vclock.call_every(30_000, lambda: seen.append(vclock.now_ms()))
    assert vclock.advance(59_999) == 1
    assert vclock.advance(1) == 1
    assert seen == [T0 + 30_000, T0 + 60_000]
    assert vclock.now_ms() == T0 + 60_000


def test_periodic_timer_in_one_big_advance(vclock: VirtualClock):
    """A single advance(60 s) fires a 30 s periodic timer exactly twice, and ends at the target time."""
    seen: list[int] = []
    vclock.call_every(30_000, lambda: seen.append(vclock.now_ms()))
    assert vclock.advance(60_000) == 2
    assert seen == [T0 + 30_000, T0 + 60_000]
    assert vclock.now_ms() == T0 + 60_000


def test_one_shot_timers_fire_in_due_order_then_scheduling_order(vclock: VirtualClock):
    """One-shot timers fire by due time; timers with the same due time fire in the order they were scheduled."""
    order: list[str] = []
    vclock.call_later(300, lambda: order.append("c@300"))
    vclock.call_later(100, lambda: order.append("a@100"))
    vclock.call_later(200, lambda: order.append("b1@200"))
    vclock.call_later(200, lambda: order.append("b2@200"))
    vclock.call_later(200, lambda: order.append("b3@200"))
    assert vclock.advance(1_000) == 5
    assert order == ["a@100", "b1@200", "b2@200", "b3@200", "c@300"]
    assert vclock.advance(1_000) == 0  # one-shot: never again
    assert vclock.pending() == 0


def test_cancelled_timers_never_fire(vclock: VirtualClock):
    """cancel() stops a one-shot before it is due and a periodic timer between firings."""
    fired: list[str] = []
    once = vclock.call_later(100, lambda: fired.append("once"))
    every = vclock.call_every(100, lambda: fired.append("every"))
    once.cancel()
    vclock.advance(100)
    assert fired == ["every"]
    every.cancel()
    vclock.advance(1_000)
    assert fired == ["every"]
    assert vclock.pending() == 0


def test_timer_scheduled_by_a_callback_fires_in_the_same_advance(vclock: VirtualClock):
    """A callback that schedules a timer due inside the current advance window sees it fire in that advance."""
    seen: list[tuple[str, int]] = []

    def first() -> None:
        seen.append(("first", vclock.now_ms()))
        vclock.call_later(250, lambda: seen.append(("follow-up", vclock.now_ms())))
        vclock.call_later(10_000, lambda: seen.append(("too-late", vclock.now_ms())))

    vclock.call_later(500, first)
    assert vclock.advance(1_000) == 2
    assert seen == [("first", T0 + 500), ("follow-up", T0 + 750)]
    assert vclock.now_ms() == T0 + 1_000
    assert vclock.pending() == 1


def test_advance_backwards_raises(vclock: VirtualClock):
    """Virtual time never goes backwards: advance(-1) raises and leaves time unchanged."""
    with pytest.raises(ValueError):
        vclock.advance(-1)
    assert vclock.now_ms() == T0


def test_a_raising_callback_does_not_stop_other_timers(vclock: VirtualClock):
    """A timer whose callback raises is contained; timers after it (and its own next period) still fire."""
    fired: list[str] = []

    def bad() -> None:
        fired.append("bad")
        raise RuntimeError("callback failure")

    vclock.call_every(100, bad)
    vclock.call_later(100, lambda: fired.append("after-bad"))
    vclock.call_later(150, lambda: fired.append("later"))
    assert vclock.advance(200) == 4
    assert fired == ["bad", "after-bad", "later", "bad"]


# ----------------------------------------------------------------- RealClock
@pytest.fixture
def rclock() -> Iterator[RealClock]:
    clock = RealClock()
    yield clock
    clock.close()


def test_real_now_ms_tracks_wall_time(rclock: RealClock):
    """now_ms() is epoch milliseconds, within a few ms of time.time()."""
    assert abs(rclock.now_ms() - time.time() * 1000) < 50


def test_real_call_later_fires(rclock: RealClock):
    """call_later(20, cb) runs cb on the timer thread, not before its delay."""
    fired = threading.Event()
    when: list[int] = []
    start = time.monotonic_ns()  # timers are due on the monotonic clock; wall time may step

    def cb() -> None:
        when.append(time.monotonic_ns())
        fired.set()

    rclock.call_later(20, cb)
    assert fired.wait(2), "call_later(20) never fired"
    assert when[0] - start >= 20_000_000


def test_real_call_every_repeats_until_cancelled(rclock: RealClock):
    """call_every fires repeatedly; after cancel() it fires no more (a later timer fires with no periodic firings before it)."""
    count = 0
    three = threading.Event()

    def tick() -> None:
        nonlocal count
        count += 1
        if count >= 3:
            three.set()

    handle = rclock.call_every(10, tick)
    assert three.wait(2), "call_every(10) did not fire 3 times"
    handle.cancel()
    at_cancel = count
    # Timers fire in due order from one thread: had the 10 ms timer survived, it would fire ~5 times before this one.
    marker = threading.Event()
    rclock.call_later(60, marker.set)
    assert marker.wait(2)
    assert count <= at_cancel + 1  # at most one firing already in flight when cancel() ran


def test_real_close_stops_the_timer_thread(rclock: RealClock):
    """close() ends the timer thread: no periodic or newly scheduled timer fires afterwards."""
    count = 0
    two = threading.Event()

    def tick() -> None:
        nonlocal count
        count += 1
        if count >= 2:
            two.set()

    rclock.call_every(5, tick)
    assert two.wait(2)
    rclock.close()
    rclock._thread.join(2)  # no public handle on the timer thread
    assert not rclock._thread.is_alive()
    after_close = count
    late = threading.Event()
    rclock.call_later(0, late.set)
    assert not late.wait(0.05)
    assert count == after_close


def test_real_timers_survive_a_wall_clock_step_back(rclock: RealClock, monkeypatch: pytest.MonkeyPatch):
    """Timers are due on the monotonic clock: the wall clock stepping an hour back (NTP, a resumed
    VM) does not hold a 50 ms timer for an hour; ``now_ms`` still reports the wall time."""
    import core.clock as clock_module

    fired = threading.Event()
    rclock.call_later(50, fired.set)
    wall = time.time_ns
    monkeypatch.setattr(clock_module.time, "time_ns", lambda: wall() - 3_600_000_000_000)
    assert fired.wait(10)
    assert abs(rclock.now_ms() - (wall() // 1_000_000 - 3_600_000)) < 5_000
