"""Trailing: how often stops move on real history, and what moves cost in protection."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from actors.trailing import TrailingParams, TrailState, evaluate, on_grid
from adapters.paper.prices import candle_ticks, load_candles
from benchmarks._util import row
from benchmarks.trailing_replay import run_replay

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TICK = Decimal("0.1")


def _ticks() -> list[tuple[int, Decimal]]:
    t0, interval, candles = load_candles(SHARED / "prices" / "btc-perp-1m-2022-01.csv")
    out = []
    for i, (o, h, low, c) in enumerate(candles):  # a candle = 4 ticks, as the paper exchange replays it
        for j, price in enumerate(candle_ticks(Decimal(o), Decimal(h), Decimal(low), Decimal(c))):
            out.append((t0 + i * interval + j * interval // 4, price))
    return out


def moves_on_history(params: TrailingParams, hold_hours: int = 24, positions: int = 40) -> tuple[float, float]:
    """(stop moves, ticks) per position-hour for longs and shorts opened across the history."""
    ticks = _ticks()
    span = len(ticks) - hold_hours * 240
    moves = 0
    seen = 0
    for k in range(positions):
        side = "long" if k % 2 == 0 else "short"
        start = k * span // positions
        window = ticks[start : start + hold_hours * 240]
        entry = window[0][1]
        stop = on_grid(side, entry * (Decimal("0.98") if side == "long" else Decimal("1.02")), TICK)
        state, last = TrailState(), None
        for now, mark in window:
            seen += 1
            if (side == "long" and mark <= stop) or (side == "short" and mark >= stop):
                break  # stopped out
            state, decision = evaluate(params, side=side, entry=entry, opened_ms=window[0][0], stop=stop, last_move_ms=last, state=state, mark=mark, now_ms=now, tick=TICK)
            if decision is not None:
                stop, last = decision.price, now
                moves += 1
    hours = seen / 240
    return moves / hours, seen / hours


def run() -> None:
    print("trailing")
    limited, ticks = moves_on_history(TrailingParams())
    unlimited, _ = moves_on_history(TrailingParams(min_move_interval_secs=0, min_improvement_percent=Decimal(0)))
    row("stop moves per position-hour, real BTC history", f"{limited:.2f} (rate-limited) vs {unlimited:.2f} (every improving tick) vs {ticks:.0f} ticks")
    r = run_replay(n_positions=50, seconds=15)
    per_k = 1000 / r["moves"] if r["moves"] else float("nan")
    row(f"faulty replay: {r['positions']} positions x {r['history_hours']:.1f} h, {r['moves']} moves", f"{r['failed_requests']} failed request attempts of {r['requests']}")
    row("  unprotected ms per 1,000 moves (outside entry)", f"{r['unprotected_ms_outside_entry'] * per_k:.0f} ms")
    row("  two-stops ms per 1,000 moves", f"{r['overlap_ms'] * per_k:,.0f} ms (longest single replacement {r['max_overlap_step_ms']} ms)")
    row("  entry fill -> first stop, all positions", f"{r['initial_gap_ms']} ms total")
