"""Aged positions, properties over any sequence of marks, fills, refusals and restarts (hypothesis).

The synchronous interpreter (:mod:`benchmarks.aged_sim`) runs the real planners over a real paper
engine, so each example is a whole aged life in milliseconds: at most one live exit order per
position (two only inside one replacement step), every exit price on the grid, > 0 and at least
one tick, the accepted loss never above the cap, and a restart at any step never doubles an exit.
"""

from __future__ import annotations

from decimal import Decimal

import ccxt
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import position_events as pe
from actors.position_state import P
from adapters.markets import Markets
from adapters.paper import PaperEngine
from benchmarks.aged_sim import SimPosition
from core.config import parse_config
from tests.conftest import SHARED

D = Decimal
MARKETS = Markets.from_file(SHARED / "data" / "markets" / "binanceusdm-linear.json")
MEME = msgspec.structs.replace(MARKETS.resolve("DOGEUSDT"), tick_size=D("1E-7"), step_size=D(1000), min_qty=D(1000), min_price=D("1E-7"), max_qty=None, max_market_qty=None)
CFG = parse_config("""
[aged]
max_age_hours = 0.1
grace_hours = 0.1
loss_step_percent_per_hour = 20
recompute_interval_secs = 60
retry_delay_secs = 30
chunk_after_failures = 2
widen_after_failures = 3
max_failures = 8
[trailing]
activation_percent = 3
""")
REFUSALS = [
    ccxt.InvalidOrder('binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}'),
    ccxt.BadRequest('binanceusdm {"code":-4140,"msg":"Invalid symbol status for opening position."}'),
    ccxt.RestrictedLocation('bybit {"retCode":170209,"retMsg":"This trading pair is only available to the China region."}'),
    ccxt.BadRequest('binanceusdm {"code":-4024,"msg":"Limit price can\'t be lower than 1."}'),
    ccxt.NetworkError("binanceusdm network glitch"),
    ccxt.RequestTimeout("binanceusdm timed out"),
]

step = st.one_of(
    st.tuples(st.just("mark"), st.decimals(min_value=D("0.96"), max_value=D("1.04"), places=4)),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=40)),  # minutes
    st.tuples(st.just("refuse"), st.integers(min_value=0, max_value=len(REFUSALS) - 1)),
    st.tuples(st.just("crash"), st.sampled_from(["before", "after"])),
    st.tuples(st.just("restart"), st.just(0)),
    st.tuples(st.just("human"), st.sampled_from(["reduce", "cancel_exit"])),
)


def _market(name: str):
    return MEME if name == "MEME" else MARKETS.resolve(name)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    symbol=st.sampled_from(["BTCUSDT", "TRXUSDT", "DOGEUSDT", "MEME"]),
    side=st.sampled_from(["long", "short"]),
    steps=st.lists(step, min_size=5, max_size=60),
)
def test_one_exit_order_on_the_grid_within_the_cap_over_any_sequence(symbol, side, steps):
    market = _market(symbol)
    markets = Markets([market])
    engine = PaperEngine(markets, flavour="binance", slippage_bps=D(0), initial_balance=D(10**9))
    t = 1_700_000_000_000
    entry = {"BTCUSDT": D(40000), "TRXUSDT": D("0.08123"), "DOGEUSDT": D("0.1234"), "MEME": D("0.0000123")}[symbol]
    engine.on_mark(market.symbol, entry, t)
    quote = D(100) if symbol != "MEME" else D(1000)
    sim = SimPosition(engine, market, CFG, "p1", side, t, quote=quote)
    assert sim.state.state is P.PROTECTED
    pending_refusals: list[BaseException] = []
    sim.refuse = lambda _cmd: pending_refusals.pop(0) if pending_refusals else None
    crash_next: list[str] = []

    def crash(cmd):
        if crash_next and cmd.step.value.startswith("aged"):
            return crash_next.pop(0)
        return None

    sim.crash = crash
    mark = entry
    for kind, arg in steps:
        if not sim.state.state.is_open:
            break
        if kind == "mark":
            mark = market.round_price(entry * arg)
            t += 1000
            sim.on_mark(mark, t)
        elif kind == "wait":
            for _ in range(arg):
                t += 60_000
                sim.on_mark(mark, t)
                sim.aged_tick(t)
        elif kind == "refuse":
            pending_refusals.append(REFUSALS[arg])
        elif kind == "crash":
            crash_next.append(arg)
        elif kind == "restart":
            sim.restart()
        elif kind == "human":
            pos = engine.positions.get(f"{market.symbol}|both")
            if arg == "reduce" and pos is not None and pos.size >= 2 * market.min_qty:
                half = market.round_qty(pos.size / 2)
                if half >= market.min_qty:
                    engine.external_place_order(market.symbol, "market", "sell" if side == "long" else "buy", half, t, {"reduceOnly": True})
            elif arg == "cancel_exit":
                for o in sim.exits_live():
                    engine.external_cancel_order(o.id, t)
        live = sim.exits_live()
        assert len(live) <= 1 or (len(live) == 2 and sim.state.aged_old_order_id is not None), f"{len(live)} exits live"
        assert sim.max_exits_live <= 2
    for sent in sim.events_of(pe.AgedExitSent):
        assert sent.price > 0 and sent.price >= market.tick_size and sent.price == market.round_price(sent.price)
        assert D(0) <= sent.loss_percent <= CFG.aged.max_loss_percent
    for placed in sim.events_of(pe.AgedExitPlaced):
        assert placed.loss_percent <= CFG.aged.max_loss_percent
    client_ids = [s.client_id for s in sim.events_of(pe.AgedExitSent)]
    assert len(client_ids) == len(set(client_ids))
    if not sim.state.state.is_open:
        assert sim.exits_live() == []
