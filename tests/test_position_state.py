"""The position lifecycle table and the fold that rebuilds a position from its events."""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.position_state import NOTES, TRANSITIONS, InvalidTransition, P, PositionState, apply, realized_pnl, rebuild
from core.events import Event

TERMINAL = {s for s in P if not s.is_open}


def ev(type_: str, **data) -> Event:
    return Event(type=type_, ts_ms=1_000, actor="position:BTCUSDT:p1", position_id="p1", symbol="BTCUSDT", exchange="paper", correlation_id="sig-1", data=data)


HAPPY = [
    ev("position.open_requested", side="long", quote_amount="100", leverage=10),
    ev("position.entry_sent", client_id="tb-p1-e1", qty="0.021", ref_price="47000", seq=1),
    ev("position.entry_filled", order_id="11", qty="0.021", price="47010.5"),
    ev("position.stop_sent", client_id="tb-p1-s2", price="46070.2", qty="0.021", kind="initial", attempt=1, seq=2),
    ev("position.stop_placed", order_id="12", client_id="tb-p1-s2", price="46070.2", kind="initial"),
    ev("position.close_sent", client_id="tb-p1-c3", reason="user command", qty="0.021", seq=3),
    ev("position.closed", reason="user command", exit_price="47100", pnl="1.8795", order_id="13"),
]


def test_happy_path_folds_to_the_expected_states():
    states = []
    s = None
    for e in HAPPY:
        s = rebuild([e]) if s is None else apply(s, e)
        states.append(s.state)
    assert states == [P.PENDING_ENTRY, P.ENTRY_PLACED, P.PENDING_STOP, P.PENDING_STOP, P.PROTECTED, P.CLOSING, P.CLOSED]
    assert s.qty == Decimal("0.021") and s.entry_price == Decimal("47010.5")
    assert s.stop_order_id == "12" and s.stop_price == Decimal("46070.2")
    assert s.realized_pnl == Decimal("1.8795") and s.seq == 3
    proj = s.projection()
    assert proj["is_open"] is False and proj["state"] == "closed" and proj["quantity"] == Decimal("0.021")


def test_rebuild_equals_the_step_by_step_fold():
    s = rebuild(HAPPY[:1])
    for e in HAPPY[1:]:
        s = apply(s, e)
    assert rebuild(HAPPY) == s


def test_an_event_the_table_does_not_allow_is_a_bug():
    s = rebuild(HAPPY[:1])
    with pytest.raises(InvalidTransition, match="stop_placed is not allowed in state pending_entry"):
        apply(s, HAPPY[4])


def test_history_must_start_with_the_request():
    with pytest.raises(InvalidTransition, match="history starts with"):
        rebuild(HAPPY[1:])


def test_every_state_is_reachable_and_none_is_a_dead_end():
    """The table is a connected lifecycle: from pending entry you can get anywhere, and out of anywhere."""
    edges: dict[P, set[P]] = {}
    for (src, _), dst in TRANSITIONS.items():
        edges.setdefault(src, set()).add(dst)
    seen, todo = {P.PENDING_ENTRY}, [P.PENDING_ENTRY]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(P)
    for state in set(P) - TERMINAL:
        reach, todo = set(), [state]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in reach:
                    reach.add(nxt)
                    todo.append(nxt)
        assert reach & TERMINAL, f"{state} can never end"
    for state in TERMINAL:
        assert state not in edges, f"terminal state {state} has outgoing transitions"


def test_notes_do_not_change_the_state():
    s = rebuild(HAPPY[:5])
    for note in NOTES - {"position.open_requested"}:
        data = {"reason": "x", "order_id": "zz", "best": "40100", "levels": []}
        assert apply(s, ev(note, **data)).state is P.PROTECTED


def test_rollback_paths():
    s = rebuild(HAPPY[:4])
    s = apply(s, ev("position.stop_failed", attempt=1, reason="x"))
    s = apply(s, ev("position.close_sent", client_id="tb-p1-c3", reason="rollback", qty="0.021", seq=3))
    failed = apply(s, ev("position.rollback_failed", remaining="0.021"))
    assert failed.state is P.PENDING_STOP and failed.close_client_id is None
    rolled = apply(s, ev("position.rolled_back", reason="rollback", exit_price="46990", pnl="-0.4305"))
    assert rolled.state is P.ROLLED_BACK and not rolled.state.is_open


@pytest.mark.parametrize(("side", "entry", "exit_", "qty", "pnl"), [("long", "100", "110", "2", "20"), ("short", "100", "110", "2", "-20"), ("short", "0.5", "0.45", "1000", "50.00")])
def test_realized_pnl(side, entry, exit_, qty, pnl):
    assert realized_pnl(side, Decimal(entry), Decimal(exit_), Decimal(qty)) == Decimal(pnl)


def test_state_is_frozen():
    s = PositionState(position_id="p", exchange="paper", symbol="BTCUSDT", side="long")
    with pytest.raises(AttributeError):
        s.qty = Decimal(1)  # type: ignore[misc]


def test_commentary_events_are_not_folded():
    """Exchange requests and alerts share the position id but are not lifecycle events."""
    noise = [ev("exchange.request", op="create_order.entry"), ev("position.entry_unresolved", error="timeout")]
    assert rebuild(HAPPY[:3] + noise + HAPPY[3:]) == rebuild(HAPPY)
