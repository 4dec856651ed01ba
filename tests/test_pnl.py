"""`tradebot pnl` over the scripted paper run of test_trace (long, trailed, stopped out): figures by hand
from the script's prices and the paper exchange's fee rate, then the CLI (human, --json, --by symbol, --since);
and events stored before fees were recorded (no ``fee``): still decoded, their fills counted as without a fee."""

from __future__ import annotations

import json
import subprocess
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import msgspec

from actors import position_events as pe
from actors.pnl_summary import closed_trades, grouped, summarize
from actors.position_timeline import build_timeline
from core.events import Event
from tradebot.reports import render_pnl
from tests.test_cli import ENV, TRADEBOT
from tests.test_trace import scripted_run, ts
from tests.world import World

D = Decimal
QTY = D("0.025")  # 100 USDT x 10 at 40000
ENTRY, EXIT = D("40000"), D("40300")  # the entry at the mark (no slippage); the stop's fill at the mark that gapped through it


def paper_fee(qty: Decimal, price: Decimal, rate: Decimal) -> Decimal:
    """The paper exchange's fee, by hand: the taker rate on the notional, on its 1e-8 USDT grid."""
    return (qty * price * rate).quantize(D("1E-8"), rounding=ROUND_HALF_UP)


def test_pnl_matches_the_hand_computed_figures(world: World, tmp_path: Path):
    events = scripted_run(world)
    entry = next(e for e in events if e.type == "position.entry_filled")
    exit_ev = next(e for e in events if e.type == "position.stop_filled")
    rate = world.engine(lambda e, now: e.config.taker_fee_rate)
    fills = world.engine(lambda e, now: [(f.side, f.price, f.qty) for f in e.fills])
    assert fills == [("buy", ENTRY, QTY), ("sell", EXIT, QTY)]  # what the script made the paper exchange do
    by_hand = (EXIT - ENTRY) * QTY  # 7.5
    fees_by_hand = paper_fee(QTY, ENTRY, rate) + paper_fee(QTY, EXIT, rate)  # 0.5 + 0.50375 at 0.05 %
    assert rate == D("0.0005") and fees_by_hand == D("1.00375")
    net_by_hand = by_hand - fees_by_hand
    assert D(str(entry.data["fee"])) == paper_fee(QTY, ENTRY, rate) and D(str(exit_ev.data["fee"])) == paper_fee(QTY, EXIT, rate)

    s = summarize(closed_trades([build_timeline(events)]))
    assert D(s.fees) == fees_by_hand and s.fills_without_fee == 0 and D(s.net_pnl or "nan") == net_by_hand
    assert D(s.pnl) == by_hand and s.count == 1 and s.wins == 1 and s.losses == 0 and D(s.win_rate or "0") == 100
    assert s.avg_hold_ms == ts(events, "position.stop_filled") - ts(events, "position.entry_filled")
    assert s.exits_by_reason == {exit_ev.data["reason"]: 1}
    assert closed_trades([build_timeline(events)], since_ms=exit_ev.ts_ms + 1) == []
    assert summarize([]).count == 0 and summarize([]).win_rate is None

    (tmp_path / "cli.toml").write_text('[runtime]\ndata_dir = "."\n[store]\npath = "events.db"\n')
    cfg = ["--config", str(tmp_path / "cli.toml")]
    js = subprocess.run([*TRADEBOT, "pnl", "--by", "symbol", "--json", *cfg], env=ENV, capture_output=True, text=True, timeout=60)
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert [d["key"] for d in data] == ["BTCUSDT"] and D(data[0]["pnl"]) == by_hand and data[0]["count"] == 1
    assert D(data[0]["fees"]) == fees_by_hand and D(data[0]["net_pnl"]) == net_by_hand and data[0]["fills_without_fee"] == 0
    human = subprocess.run([*TRADEBOT, "pnl", "--since", str(entry.ts_ms), *cfg], env=ENV, capture_output=True, text=True, timeout=60)
    assert human.returncode == 0, human.stderr
    assert f"{by_hand.quantize(D('0.01'))} USDT" in human.stdout and "100.00 %" in human.stdout
    assert f"{fees_by_hand.quantize(D('0.01'))} USDT" in human.stdout and f"{net_by_hand.quantize(D('0.01'))} USDT" in human.stdout
    assert "without a recorded fee" not in human.stdout and "'" not in human.stdout
    later = subprocess.run([*TRADEBOT, "pnl", "--since", str(exit_ev.ts_ms + 1), "--json", *cfg], env=ENV, capture_output=True, text=True, timeout=60)
    assert later.returncode == 0 and json.loads(later.stdout)[0]["count"] == 0
    assert grouped(closed_trades([build_timeline(events)]), "day")[0].count == 1


def test_events_stored_before_fees_still_decode_and_count_as_without_a_fee(world: World):
    """The same run's rows with ``fee`` taken out (as stored before fees were recorded): every fill event
    decodes (fee None), the fold is unchanged, and pnl counts the fills as without a fee: no net, never zero."""
    events = scripted_run(world)
    old = [Event(type=e.type, ts_ms=e.ts_ms, actor=e.actor, position_id=e.position_id, symbol=e.symbol, data={k: v for k, v in e.data.items() if k != "fee"}, id=e.id) for e in events]
    fills = [e for e in old if e.type in ("position.entry_filled", "position.stop_filled")]
    assert len(fills) == 2 and all("fee" not in e.data for e in fills)
    for e in fills:
        typed = pe.from_record(e)
        assert isinstance(typed, pe.EntryFilled | pe.StopFilled) and typed.fee is None
    # the older shapes of every event that now carries a fee, as they were stored
    for tag, data in [
        ("position.entry_filled", {"order_id": "1", "qty": "0.025", "price": "40000", "status": "filled"}),
        ("position.tp_filled", {"level": 1, "qty": "0.01", "price": "40400", "pnl": "4", "order_id": "5"}),
        ("position.aged_exit_filled", {"order_id": "6", "qty": "0.01", "price": "39900", "pnl": "-1", "reason": "aged: grace"}),
        ("position.closed", {"reason": "user command", "exit_price": "40100", "pnl": "2.5", "order_id": "7", "outside": False, "forced": None}),
        ("position.rolled_back", {"reason": "rollback", "exit_price": None, "pnl": None}),
    ]:
        typed = pe.from_record(Event(type=tag, ts_ms=1, actor="position:BTCUSDT:p9", position_id="p9", symbol="BTCUSDT", data=data))
        assert typed.fee is None and pe.to_record(typed)["fee"] is None  # type: ignore[union-attr]
    new = [pe.from_record(e) for e in events if e.type in pe.LIFECYCLE]
    assert [msgspec.structs.replace(x, fee=None) if hasattr(x, "fee") else x for x in new] == [pe.from_record(e) for e in old if e.type in pe.LIFECYCLE]

    s = summarize(closed_trades([build_timeline(old)]))
    assert s.count == 1 and D(s.pnl) == (EXIT - ENTRY) * QTY  # the gross figure is unchanged
    assert s.fills_without_fee == 2 and D(s.fees) == 0 and s.net_pnl is None
    text = render_pnl([s], None)
    assert "2 fills without a recorded fee" in text and "0.00 USDT + 2 fills" in text
