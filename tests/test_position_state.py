"""The position lifecycle table, the typed events and the fold that rebuilds a position."""

from __future__ import annotations

from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import position_events as pe
from actors.position_state import NOTES, TRANSITIONS, InvalidTransition, P, PositionState, apply, from_projection, realized_pnl, rebuild
from core.events import Event
from core.ids import Side

TERMINAL = {s for s in P if not s.is_open}
D = Decimal


def row(e: pe.PositionEvent, ts_ms: int = 1_000) -> Event:
    """The store's row for a typed event (what the actor writes)."""
    return Event(type=pe.type_of(e), ts_ms=ts_ms, actor="position:BTCUSDT:p1", position_id="p1", symbol="BTCUSDT", exchange="paper", correlation_id="sig-1", data=pe.to_record(e))


def stored(e: pe.PositionEvent, ts_ms: int = 1_000) -> Event:
    """The same row after a round trip through the store's JSON."""
    r = row(e, ts_ms)
    return msgspec.structs.replace(r, data=msgspec.json.decode(msgspec.json.encode(r.data)))


HAPPY: list[pe.PositionEvent] = [
    pe.OpenRequested(side="long", quote_amount=D(100), leverage=10),
    pe.EntrySent(client_id="tb-p1-e1", qty=D("0.021"), ref_price=D(47000), seq=1),
    pe.EntryFilled(order_id="11", qty=D("0.021"), price=D("47010.5")),
    pe.StopSent(client_id="tb-p1-s2", price=D("46070.2"), qty=D("0.021"), kind="initial", attempt=1, seq=2),
    pe.StopPlaced(order_id="12", client_id="tb-p1-s2", price=D("46070.2"), kind="initial", qty=D("0.021")),
    pe.CloseSent(client_id="tb-p1-c3", reason="user command", qty=D("0.021"), seq=3),
    pe.Closed(reason="user command", exit_price=D(47100), pnl=D("1.8795"), order_id="13"),
]


def start() -> PositionState:
    s = rebuild([row(HAPPY[0])])
    assert s is not None
    return s


def test_happy_path_folds_to_the_expected_states():
    s = start()
    states = [s.state]
    for e in HAPPY[1:]:
        s = apply(s, e, 1_000)
        states.append(s.state)
    assert states == [P.PENDING_ENTRY, P.ENTRY_PLACED, P.PENDING_STOP, P.PENDING_STOP, P.PROTECTED, P.CLOSING, P.CLOSED]
    assert s.qty == D("0.021") and s.entry_price == D("47010.5") and s.entry_ref_price == D(47000)
    assert s.stop_order_id == "12" and s.stop_price == D("46070.2")
    assert s.realized_pnl == D("1.8795") and s.seq == 3
    proj = s.projection()
    assert proj["is_open"] is False and proj["state"] == "closed" and proj["quantity"] == D("0.021")


def test_the_entry_reference_price_is_folded_for_a_restart():
    """Bug: after a restart in ENTRY_PLACED the reference price lived only in memory."""
    s = rebuild([stored(e) for e in HAPPY[:2]])
    assert s is not None and s.state is P.ENTRY_PLACED and s.entry_ref_price == D(47000)


def test_replayed_rows_fold_to_the_live_state():
    """Live: typed events applied as made. Replayed: the stored JSON rows decoded and folded."""
    live = start()
    for e in HAPPY[1:]:
        live = apply(live, e, 1_000)
    assert rebuild([stored(e) for e in HAPPY]) == live


def test_an_event_the_table_does_not_allow_is_a_bug():
    with pytest.raises(InvalidTransition, match="stop_placed is not allowed in state pending_entry"):
        apply(start(), HAPPY[4], 1_000)


def test_history_must_start_with_the_request():
    with pytest.raises(InvalidTransition, match="history starts with"):
        rebuild([row(e) for e in HAPPY[1:]])


def test_a_malformed_stored_event_is_refused_not_guessed():
    bad = msgspec.structs.replace(row(HAPPY[1]), data={"client_id": "tb-p1-e1", "qty": "lots", "ref_price": "1", "seq": 1})
    with pytest.raises(msgspec.ValidationError):
        rebuild([row(HAPPY[0]), bad])


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
    s = start()
    for e in HAPPY[1:5]:
        s = apply(s, e, 1_000)
    notes = [pe.StopCancelled(order_id="zz"), pe.CloseRequested(reason="x"), pe.TrailingActivated(best=D(48000), mark=D(48000), entry=D(47010.5)), pe.TrailBest(best=D(48100)), pe.TpPlaced(levels=())]
    assert {type(n) for n in notes} == NOTES - {pe.OpenRequested}
    for note in notes:
        assert apply(s, note, 1_000).state is P.PROTECTED


def test_rollback_paths():
    s = start()
    for e in HAPPY[1:4]:
        s = apply(s, e, 1_000)
    s = apply(s, pe.StopFailed(attempt=1, reason="x"), 1_000)
    s = apply(s, pe.CloseSent(client_id="tb-p1-c3", reason="rollback", qty=D("0.021"), seq=3), 1_000)
    failed = apply(s, pe.RollbackFailed(remaining=D("0.021")), 1_000)
    assert failed.state is P.PENDING_STOP and failed.close_client_id is None
    rolled = apply(s, pe.RolledBack(reason="rollback", exit_price=D(46990), pnl=D("-0.4305")), 1_000)
    assert rolled.state is P.ROLLED_BACK and not rolled.state.is_open


def test_a_lost_stop_keeps_its_level_for_the_restore():
    s = start()
    for e in HAPPY[1:5]:
        s = apply(s, e, 1_000)
    s = apply(s, pe.StopLost(order_id="12", status="canceled"), 2_000)
    assert s.state is P.PENDING_STOP and s.stop_order_id is None and s.stop_price == D("46070.2")


@pytest.mark.parametrize(("side", "entry", "exit_", "qty", "pnl"), [("long", "100", "110", "2", "20"), ("short", "100", "110", "2", "-20"), ("short", "0.5", "0.45", "1000", "50.00")])
def test_realized_pnl(side, entry, exit_, qty, pnl):
    assert realized_pnl(side, D(entry), D(exit_), D(qty)) == D(pnl)


def test_state_is_frozen():
    s = PositionState(position_id="p", exchange="paper", symbol="BTCUSDT", side=Side.LONG)
    with pytest.raises(AttributeError):
        s.qty = D(1)  # type: ignore[misc]


def test_commentary_events_are_not_folded():
    """Exchange requests and alerts share the position id but are not lifecycle events."""
    noise = [Event(type="exchange.request", ts_ms=1, actor="x", position_id="p1", data={"op": "create_order.entry"}), Event(type="position.entry_unresolved", ts_ms=1, actor="x", position_id="p1", data={"error": "timeout"})]
    rows = [row(e) for e in HAPPY]
    assert rebuild(rows[:3] + noise + rows[3:]) == rebuild(rows)


def test_the_projection_decodes_into_the_typed_read_model():
    s = start()
    for e in HAPPY[1:5]:
        s = apply(s, e, 1_000)
    s = apply(s, pe.TpPlaced(levels=(pe.TpLevel(level=1, price=D(47500), qty=D("0.01"), order_id="20", client_id="tb-p1-t1"),)), 1_000)
    projected = msgspec.json.decode(msgspec.json.encode(s.projection()))  # as the store keeps it
    view = from_projection(projected)
    assert view == s
    assert view.is_protected and view.order_refs() == {"12", "20"}


# ------------------------------------------------------------------ property
_dec = st.decimals(min_value=D("0.0001"), max_value=D(100000), places=4, allow_nan=False, allow_infinity=False)
_cid = st.from_regex(r"tb-p1-[sect][0-9]{1,3}", fullmatch=True)


@st.composite
def histories(draw) -> list[tuple[pe.PositionEvent, int]]:
    """Histories the table allows, of any length: generated by walking the lifecycle."""
    side = draw(st.sampled_from(["long", "short"]))
    s = PositionState(position_id="p1", exchange="paper", symbol="BTCUSDT", side=Side(side))
    events: list[tuple[pe.PositionEvent, int]] = [(pe.OpenRequested(side=side, quote_amount=draw(_dec), leverage=draw(st.integers(1, 125))), 0)]
    s = apply(s, events[0][0], 0)
    seq, ts = 0, 0
    candidates = {
        pe.EntrySent: lambda: pe.EntrySent(client_id=draw(_cid), qty=draw(_dec), ref_price=draw(_dec), seq=seq + 1),
        pe.EntryFilled: lambda: pe.EntryFilled(order_id=str(draw(st.integers(1, 10**6))), qty=draw(_dec), price=draw(_dec)),
        pe.StopSent: lambda: pe.StopSent(client_id=draw(_cid), price=draw(_dec), qty=draw(_dec), kind=draw(st.sampled_from(["initial", "restore", "emergency"])), attempt=draw(st.integers(1, 5)), seq=seq + 1),
        pe.StopFailed: lambda: pe.StopFailed(attempt=1, reason=draw(st.text(max_size=20))),
        pe.StopPlaced: lambda: pe.StopPlaced(order_id=str(draw(st.integers(1, 10**6))), client_id=draw(_cid), price=draw(_dec), kind="initial", qty=draw(_dec), reason=draw(st.sampled_from([None, "trailing"]))),
        pe.StopMoveSent: lambda: pe.StopMoveSent(client_id=draw(_cid), price=draw(_dec), qty=draw(_dec), reason="trailing", old_order_id="1", old_price=draw(_dec), seq=seq + 1),
        pe.StopMovePlaced: lambda: pe.StopMovePlaced(order_id=str(draw(st.integers(1, 10**6)))),
        pe.StopMoved: lambda: pe.StopMoved(order_id="9", client_id=draw(_cid), price=draw(_dec), qty=draw(_dec), reason="trailing", old_order_id="1", old_price=None, best=draw(st.none() | _dec)),
        pe.StopMoveFailed: lambda: pe.StopMoveFailed(reason="x", outcome="rejected", attempt=1),
        pe.TrailingActivated: lambda: pe.TrailingActivated(best=draw(_dec), mark=draw(_dec), entry=draw(_dec)),
        pe.TrailBest: lambda: pe.TrailBest(best=draw(_dec), breakeven_reached=draw(st.booleans())),
        pe.TpPlaced: lambda: pe.TpPlaced(levels=tuple(pe.TpLevel(level=i, price=draw(_dec), qty=draw(_dec), order_id=str(i), client_id=f"tb-p1-t{i}") for i in (1, 2))),
        pe.TpFilled: lambda: pe.TpFilled(level=draw(st.sampled_from([1, 2])), qty=draw(_dec), price=draw(st.none() | _dec), pnl=draw(st.none() | _dec), order_id="1"),
        pe.QtyCorrected: lambda: pe.QtyCorrected(qty=draw(_dec), was=draw(_dec)),
        pe.StopLost: lambda: pe.StopLost(order_id=draw(st.none() | st.just("1")), status="canceled"),
        pe.CloseRequested: lambda: pe.CloseRequested(reason="user"),
        pe.CloseSent: lambda: pe.CloseSent(client_id=draw(_cid), reason=draw(st.sampled_from(["rollback", "user"])), qty=draw(_dec), seq=seq + 1),
        pe.CloseFailed: lambda: pe.CloseFailed(remaining=draw(_dec)),
        pe.RollbackFailed: lambda: pe.RollbackFailed(remaining=draw(_dec)),
        pe.StopCancelled: lambda: pe.StopCancelled(order_id="1"),
        pe.Closed: lambda: pe.Closed(reason="x", exit_price=draw(st.none() | _dec), pnl=draw(st.none() | _dec), outside=draw(st.booleans())),
        pe.StopFilled: lambda: pe.StopFilled(reason="stop filled", exit_price=draw(_dec)),
        pe.RolledBack: lambda: pe.RolledBack(reason="rollback"),
        pe.MovesDisabled: lambda: pe.MovesDisabled(until_ms=draw(st.integers(0, 10**12)), attempts=5, last_error="x"),
    }
    for _ in range(draw(st.integers(0, 25))):
        allowed = [cls for cls in candidates if cls in NOTES or (s.state, cls) in TRANSITIONS]
        if not allowed:
            break
        e = candidates[draw(st.sampled_from(sorted(allowed, key=lambda c: c.__name__)))]()
        ts += draw(st.integers(0, 60_000))
        s = apply(s, e, ts)
        seq = s.seq
        events.append((e, ts))
    return events


@settings(max_examples=80, deadline=None)
@given(histories())
def test_fold_of_events_equals_fold_of_their_stored_rows(history):
    """fold(events) == fold(decode(encode(events))): live and replayed state are the same."""
    first = history[0][0]
    assert isinstance(first, pe.OpenRequested)
    live = PositionState(position_id="p1", exchange="paper", symbol="BTCUSDT", side=Side(first.side), correlation_id="sig-1")
    for e, ts in history:
        live = apply(live, e, ts)
    replayed = rebuild([stored(e, ts) for e, ts in history])
    assert replayed == live
    assert from_projection(msgspec.json.decode(msgspec.json.encode(live.projection()))) == live
