"""Issue 16: a slow store slows an owner down, never kills it, and never lets it act without its record.

Real position actor, supervisor, store and paper exchange; the store's writer
is parked on a job (as a disk that stalls would), while the owner is asked to
close its position (a write-ahead ``position.close_sent`` first).
"""

from __future__ import annotations

import pytest

from core.messages import ClosePosition
from tests.conftest import eventually
from tests.test_fencing import held_writer
from tests.world import World, advance_until, is_close, opened


def close_orders(world: World) -> list:
    return [r for r in list(world.exchange.requests) if r["method"] == "create_order" and is_close(r["args"])]


@pytest.mark.parametrize("extra_toml", ["[store]\ndurable_wait_secs = 1\n"])
def test_an_owner_waits_for_its_write_ahead_record_and_stays_responsive(world: World):
    name = world.open()
    opened(world)
    ref = world.ctx.directory.lookup(name)
    gate = held_writer(world.ctx.store)
    try:
        ref.tell(ClosePosition(reason="user"))
        eventually(lambda: world.ctx.store.health().durable_wait_ms >= 1_500, timeout=10, what="the close's record waiting past durable_wait_secs")
        assert ref.proxy().busy().get(timeout=5) is True  # answers from its mailbox while it waits (not blocked)
        assert close_orders(world) == [], "the close must not reach the exchange before its record is committed"
        advance_until(world, lambda: "store" in world.sup.proxy().degraded.get(), "the slow store reported as a health problem", step_ms=1_000)
        assert ref.is_alive() and world.ctx.directory.lookup(name) is ref, "no failure, no restart"
    finally:
        gate.set()
    advance_until(world, lambda: world.positions() == [], "closed once the record is committed")
    assert len(close_orders(world)) == 1
    close_sent = [e for e in world.events() if e.type == "position.close_sent"]
    assert len(close_sent) == 1 and close_sent[0].id < max(e.id for e in world.events() if e.type.startswith("position."))
    advance_until(world, lambda: "store" not in world.sup.proxy().degraded.get(), "the store healthy again", step_ms=1_000)
    types = [e.type for e in world.ctx.io.run(world.ctx.store.query(type_prefixes=("store.", "supervisor.child_failed")), 5)]
    assert types == ["store.slow", "store.recovered"]
