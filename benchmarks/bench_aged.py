"""Aged positions replayed on real price history: how many leave via their aged exit, at what loss,
and never more than one exit order each (two only inside one replacement step).

50 positions (longs and shorts alternating), each opened at its own point of the BTC perpetual's
January 2022 1-minute history and followed for 24 virtual hours, four ticks per candle as the paper
exchange replays them. Each runs the real planners (:mod:`benchmarks.aged_sim`) with the shipped
defaults (trailing, the 2 % initial stop and ``[aged]`` as in config.toml) on its own paper engine.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors import position_events as pe
from adapters.markets import Markets
from adapters.paper import PaperEngine
from adapters.paper.prices import candle_ticks, load_candles
from benchmarks._util import row
from benchmarks.aged_sim import SimPosition
from core.config import parse_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HOUR_MS = 3_600_000


def _ticks() -> list[tuple[int, Decimal]]:
    t0, interval, candles = load_candles(SHARED / "prices" / "btc-perp-1m-2022-01.csv")
    out = []
    for i, (o, h, low, c) in enumerate(candles):
        for j, price in enumerate(candle_ticks(Decimal(o), Decimal(h), Decimal(low), Decimal(c))):
            out.append((t0 + i * interval + j * interval // 4, price))
    return out


def replay(positions: int = 50, hold_hours: int = 24, toml: str = "") -> dict[str, Any]:
    cfg = parse_config(toml)
    markets = Markets.from_file(SHARED / "markets" / "binanceusdm-linear.json")
    market = markets.resolve("BTCUSDT")
    ticks = _ticks()
    per_position = hold_hours * 240
    span = len(ticks) - per_position
    review_ms, verify_ms = cfg.aged.recompute_interval_secs * 1000, cfg.position.verify_interval_secs * 1000
    outcomes: Counter[str] = Counter()
    aged_losses: list[float] = []
    max_live, max_live_settled, exits_placed, refusals = 0, 0, 0, 0
    for k in range(positions):
        window = ticks[k * span // positions : k * span // positions + per_position]
        engine = PaperEngine(Markets([market]), flavour="binance", slippage_bps=Decimal(0), initial_balance=Decimal(10**7))
        t, price = window[0]
        engine.on_mark(market.symbol, price, t)
        sim = SimPosition(engine, market, cfg, f"b{k}", "long" if k % 2 == 0 else "short", t)
        next_review, next_verify = t + review_ms, t + verify_ms
        for t, price in window[1:]:
            if not sim.state.state.is_open:
                break
            sim.on_mark(price, t)
            if t >= next_review:
                sim.aged_tick(t)
                next_review += review_ms
            if t >= next_verify:
                sim.verify_tick(t)
                next_verify += verify_ms
            max_live_settled = max(max_live_settled, len(sim.exits_live()))
        max_live = max(max_live, sim.max_exits_live)
        exits_placed += len(sim.events_of(pe.AgedExitPlaced))
        refusals += len(sim.events_of(pe.AgedExitFailed))
        s = sim.state
        if s.state.is_open:
            outcomes["open after 24 h, aged" if s.aged_phase else "open after 24 h"] += 1
            continue
        reason = s.close_reason or ""
        if reason.startswith("aged"):
            outcomes["aged exit"] += 1
            assert s.entry_price is not None and s.exit_price is not None
            fee = market.taker_fee or Decimal(0)
            gross = s.side.pnl(s.entry_price, s.exit_price, Decimal(1))
            net = gross - (s.entry_price + s.exit_price) * fee
            aged_losses.append(float(-net / s.entry_price * 100))
        elif s.trail_active:
            outcomes["trailing stop"] += 1
        else:
            outcomes["stop"] += 1
    return {
        "positions": positions, "outcomes": dict(outcomes), "aged_losses": aged_losses, "max_live": max_live, "max_live_settled": max_live_settled,
        "exits_placed": exits_placed, "refusals": refusals,
    }


def run() -> None:
    print("aged positions (50 positions x 24 virtual hours on BTC 1m history, shipped defaults)")
    started = time.perf_counter()
    r = replay()
    took = time.perf_counter() - started
    row("replay wall time", f"{took:.1f} s")
    for name, n in sorted(r["outcomes"].items()):
        row(f"  {name}", f"{n} / {r['positions']}")
    losses = r["aged_losses"]
    if losses:
        row("aged exit: net loss incl. fees", f"mean {statistics.mean(losses):.2f} %, min {min(losses):.2f} %, max {max(losses):.2f} %")
    row("aged exit orders placed (incl. moves)", str(r["exits_placed"]))
    row("aged exit refusals", str(r["refusals"]))
    row("max live exits per position (after each step)", str(r["max_live_settled"]))
    row("max live exits (inside a replacement step)", str(r["max_live"]))
    fast = replay(toml="[aged]\nmax_age_hours = 1\ngrace_hours = 2\nloss_step_percent_per_hour = 1\naccelerate_after_hours = 6\n")
    row("faster policy (1 h / 2 h grace / 1 %/h):", ", ".join(f"{k} {v}" for k, v in sorted(fast["outcomes"].items())))
    if fast["aged_losses"]:
        row("  aged exit: net loss incl. fees", f"mean {statistics.mean(fast['aged_losses']):.2f} %, max {max(fast['aged_losses']):.2f} %")
    row("  max live exits (after each step / inside a replacement)", f"{fast['max_live_settled']} / {fast['max_live']}")


if __name__ == "__main__":
    run()
