"""`tradebot pnl` over the scripted paper run of test_trace (long, trailed, stopped out): figures by hand
from the stored entry and exit prices, then the CLI (human, --json, --by symbol, --since)."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal
from pathlib import Path

from actors.pnl_summary import closed_trades, grouped, summarize
from actors.position_timeline import build_timeline
from tests.test_cli import ENV, TRADEBOT
from tests.test_trace import scripted_run, ts
from tests.world import World

D = Decimal


def test_pnl_matches_the_hand_computed_figures(world: World, tmp_path: Path):
    events = scripted_run(world)
    entry = next(e for e in events if e.type == "position.entry_filled")
    exit_ev = next(e for e in events if e.type == "position.stop_filled")
    by_hand = (D(str(exit_ev.data["exit_price"])) - D(str(entry.data["price"]))) * D(str(entry.data["qty"]))
    assert by_hand > 0  # the stop was trailed above the entry

    s = summarize(closed_trades([build_timeline(events)]))
    assert D(s.pnl) == by_hand and s.count == 1 and s.wins == 1 and s.losses == 0 and D(s.win_rate or "0") == 100
    assert s.avg_hold_ms == ts(events, "position.stop_filled") - ts(events, "position.entry_filled")
    assert s.exits_by_reason == {exit_ev.data["reason"]: 1} and s.fees is None
    assert closed_trades([build_timeline(events)], since_ms=exit_ev.ts_ms + 1) == []
    assert summarize([]).count == 0 and summarize([]).win_rate is None

    (tmp_path / "cli.toml").write_text('[runtime]\ndata_dir = "."\n[store]\npath = "events.db"\n')
    cfg = ["--config", str(tmp_path / "cli.toml")]
    js = subprocess.run([*TRADEBOT, "pnl", "--by", "symbol", "--json", *cfg], env=ENV, capture_output=True, text=True, timeout=60)
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert [d["key"] for d in data] == ["BTCUSDT"] and D(data[0]["pnl"]) == by_hand and data[0]["count"] == 1
    human = subprocess.run([*TRADEBOT, "pnl", "--since", str(entry.ts_ms), *cfg], env=ENV, capture_output=True, text=True, timeout=60)
    assert human.returncode == 0, human.stderr
    assert f"{by_hand.quantize(D('0.01'))} USDT" in human.stdout and "100.00 %" in human.stdout
    assert "fees: not recorded" in human.stdout and "'" not in human.stdout
    later = subprocess.run([*TRADEBOT, "pnl", "--since", str(exit_ev.ts_ms + 1), "--json", *cfg], env=ENV, capture_output=True, text=True, timeout=60)
    assert later.returncode == 0 and json.loads(later.stdout)[0]["count"] == 0
    assert grouped(closed_trades([build_timeline(events)]), "day")[0].count == 1
