"""`tradebot trace`: a scripted paper run (entry, trailing move, stop fill), its timeline checked against the
durations read by hand off the stored events and the fees by hand from the paper exchange's rate and the
script's prices, and the CLI printing it (human and --json)."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

from actors.messages import PositionClosed
from actors.position_timeline import build_timeline
from core.events import Event
from tests.conftest import eventually
from tests.test_cli import ENV, TRADEBOT
from tests.test_stop_moves import mark, moved_to
from tests.world import World, advance_until, opened

D = Decimal


def scripted_run(world: World) -> list[Event]:
    """Open long BTC at 40000, trail the stop to 40397.0, then let the mark fall through it."""
    world.open()
    opened(world)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "trailing move")
    world.ctx.clock.advance(5_000)
    mark(world, "40300")
    eventually(lambda: [r for r in world.reports() if isinstance(r, PositionClosed)], what="stop fill closes the position")
    world.ctx.store.flush()
    return world.events()


def ts(events: list[Event], kind: str, nth: int = 0) -> int:
    return [e.ts_ms for e in events if e.type == kind][nth]


def test_timeline_durations_match_the_events(world: World, tmp_path: Path):
    events = scripted_run(world)
    tl = build_timeline(events)
    assert tl.position_id == "p1" and tl.side == "long"
    # by hand, off the stored events
    assert tl.entry_to_stop_ms == ts(events, "position.stop_placed") - ts(events, "position.entry_filled")
    assert len(tl.overlaps) == 1
    o = tl.overlaps[0]
    assert o.duration_ms == ts(events, "position.stop_moved") - ts(events, "position.stop_move_placed")
    assert (D(o.old_price), D(o.new_price), o.reason) == (D("39200.0"), D("40397.0"), "trailing")
    assert tl.unprotected == [] and tl.unprotected_ms == 0
    exit_ev = next(e for e in events if e.type == "position.stop_filled")
    assert tl.closed_ms == exit_ev.ts_ms and tl.exit_reason == exit_ev.data["reason"]
    assert D(tl.exit_price) == D(str(exit_ev.data["exit_price"])) and D(tl.pnl) == D(str(exit_ev.data["pnl"]))
    # fees by hand: the paper exchange's taker rate on each fill (entry 0.025 at 40000, the stop's fill at the 40300 mark)
    rate = world.engine(lambda e, now: e.config.taker_fee_rate)
    fees = D("0.025") * D("40000") * rate + D("0.025") * D("40300") * rate
    assert D(tl.fees or "nan") == fees == D("1.00375") and tl.fills_without_fee == 0
    assert D(tl.net_pnl or "nan") == D(tl.pnl) - fees == D("7.5") - D("1.00375")
    assert [s.type for s in tl.steps] == [e.type for e in sorted(events, key=lambda e: (e.ts_ms, e.id or 0))]
    assert sum(s.since_prev_ms for s in tl.steps) == tl.steps[-1].ts_ms - tl.steps[0].ts_ms

    # the CLI over the same store (read-only, while the bot's store is still open)
    (tmp_path / "cli.toml").write_text('[runtime]\ndata_dir = "."\n[store]\npath = "events.db"\n')
    human = subprocess.run([*TRADEBOT, "trace", "BTCUSDT", "--config", str(tmp_path / "cli.toml")], env=ENV, capture_output=True, text=True, timeout=60)
    assert human.returncode == 0, human.stderr
    out = human.stdout
    assert "position p1" in out and "closed" in out
    assert "stop move 39200.0 -> 40397.0 (trailing): two stops for" in out
    assert "unprotected after the first stop: never" in out
    assert f"pnl {D(tl.pnl).quantize(D('0.01'))} USDT" in out
    assert "fees:       1.00 USDT, net pnl 6.50 USDT" in out and "entry filled: 0.025 at 40000, fee 0.5" in out and ", fee 0.50375" in out
    assert "'" not in out and "Decimal(" not in out  # no Python reprs
    as_json = subprocess.run([*TRADEBOT, "trace", "p1", "--json", "--config", str(tmp_path / "cli.toml")], env=ENV, capture_output=True, text=True, timeout=60)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["entry_to_stop_ms"] == tl.entry_to_stop_ms and data["pnl"] == tl.pnl and data["overlaps"][0]["new_price"] == "40397.0"
    assert D(data["fees"]) == fees and D(data["net_pnl"]) == D("6.49625") and data["fills_without_fee"] == 0
    missing = subprocess.run([*TRADEBOT, "trace", "NOPE", "--config", str(tmp_path / "cli.toml")], env=ENV, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no position with id or symbol 'NOPE'" in missing.stderr


def test_a_lost_stop_is_an_unprotected_interval():
    """Pure: a stop lost and replaced 1.5 s later is one unprotected interval of 1500 ms."""
    def ev(i: int, t: int, etype: str, **data: object) -> Event:
        return Event(type=etype, ts_ms=t, actor="position:BTCUSDT:p9", position_id="p9", symbol="BTCUSDT", data=data, id=i)

    tl = build_timeline([
        ev(1, 1000, "position.open_requested", side="short"),
        ev(2, 1200, "position.entry_filled", qty="0.01", price="40000", order_id="e"),
        ev(3, 1450, "position.stop_placed", order_id="s1", client_id="c1", price="40800", kind="initial", qty="0.01"),
        ev(4, 9000, "position.stop_lost", order_id="s1", status="canceled"),
        ev(5, 10500, "position.stop_placed", order_id="s2", client_id="c2", price="40800", kind="restore", qty="0.01"),
    ])
    assert tl.entry_to_stop_ms == 250 and tl.side == "short" and tl.closed_ms is None
    assert [(i.start_ms, i.end_ms, i.duration_ms, i.began, i.ended) for i in tl.unprotected] == [(9000, 10500, 1500, "position.stop_lost", "position.stop_placed")]
