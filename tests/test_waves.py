"""Waves under faults: the limit is never exceeded, a symbol is never opened twice, a wave is processed once."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.signal_intake import SignalFrame, SignalIntake
from adapters.markets import Markets
from adapters.paper import FaultPlan, PaperEngine, PaperExchange
from adapters.venue import STYLES, Venue
from supervision.actor import ActorContext
from supervision.directory import Directory
from core.messages import ClosePosition, Shutdown
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import SHARED, eventually, make_config
from core.signal_protocol import WAVE_MS, wave_of
from tradebot.wiring import build_executor, position_spec

D = Decimal
N_SYMBOLS = 120
CONFIG = """
[exchange]
max_attempts = 1
retry_base_delay_ms = 1
[position]
retry_delay_ms = 10
entry_lookups = 2
verify_interval_secs = 3600
[feeds]
mark_interval_ms = 600000
[signals]
source = "bundled"
process_after_secs = 3
wave_limit = 5
max_open_positions = 1000
min_free_balance = 0
[demo]
signals_file = ""
"""


def markets() -> Markets:
    btc = Markets.from_file(SHARED / "data" / "markets" / "binanceusdm-linear.json").resolve("BTCUSDT")
    return Markets([msgspec.structs.replace(btc, symbol=f"W{i:03d}/USDT:USDT", id=f"W{i:03d}USDT", base=f"W{i:03d}") for i in range(N_SYMBOLS)])


@pytest.fixture
def waves(tmp_path: Path, ctx: ActorContext):
    cfg = make_config(tmp_path, CONFIG)
    ctx = ActorContext(clock=ctx.clock, io=ctx.io, store=ctx.store, config=cfg, directory=Directory())
    ms = markets()
    refused = [m.id for m in list(ms)[:24]]  # 20 % of the symbols refuse new positions (-4140)
    engine = PaperEngine(ms, flavour="binance", initial_balance=D(10**9), slippage_bps=D(0), not_trading=refused, seed=5)
    faults = FaultPlan(error_rates={"create_order": {"network": 0.3}}, ambiguous_timeout_rate={"create_order": 0.1}, seed=9)
    exchange = PaperExchange(engine, ctx.clock, flavour="binance", faults=faults, markets_path=SHARED / "data" / "markets" / "binanceusdm-linear.json")
    for m in ms:
        exchange.set_mark(m.symbol, D(40000))
    venue = Venue("paper", exchange, ms, build_executor(cfg, "paper", ctx.clock, ctx.store), STYLES["binance"])
    spec_for = lambda req: position_spec(venue, ctx.directory, req.position_id, req.symbol, req)  # noqa: E731
    intake = ChildSpec(name="intake", factory=lambda n, c: SignalIntake.start(name=n, ctx=c, venue=venue, markets_by_exchange={"paper": ms}, position_spec=spec_for), kind="intake")
    sup = Supervisor.start(ctx=ctx, children=[intake])
    eventually(lambda: ctx.directory.lookup("intake"), what="intake started")
    yield ctx, exchange, sup
    sup.tell(Shutdown(reason="test end"))
    if not sup.actor_stopped.wait(5):
        ctx.clock.advance(60_000)
        sup.actor_stopped.wait(10)


def batch(rng: random.Random, wave_ts: int, now: int, n: int = 85) -> bytes:
    signals = []
    for i in range(n):
        sym = f"W{rng.randrange(N_SYMBOLS):03d}USDT"
        signals.append({"id": f"s-{wave_ts}-{i}", "exchange": "paper", "symbol": sym, "action": rng.choice(["buy", "sell"]), "score_week": str(round(rng.random(), 4)), "score_month": str(round(rng.random(), 4)), "wave_ts_ms": wave_ts, "created_ms": now})
    return json.dumps({"type": "batch", "wave_ts_ms": wave_ts, "signals": signals}).encode()


def query(ctx: ActorContext, *types: str) -> list:
    return ctx.io.run(ctx.store.query(types=types), 30)


def advance_until(ctx: ActorContext, predicate, what: str, step_ms: int = 50, timeout: float = 30.0) -> Any:
    return eventually(lambda: (ctx.clock.advance(step_ms), predicate())[1], timeout=timeout, what=what)


@pytest.mark.slow
def test_200_waves_with_a_third_of_opens_failing_never_exceed_the_limit(waves):
    ctx, exchange, sup = waves
    rng = random.Random(42)
    ctx.clock.advance(WAVE_MS - ctx.clock.now_ms() % WAVE_MS + 60_000)  # a minute into a fresh wave
    n_waves = 200
    for _ in range(n_waves):
        now = ctx.clock.now_ms()
        wave = wave_of(now)
        ctx.directory.tell("intake", SignalFrame(raw=batch(rng, wave, now)))
        advance_until(ctx, lambda: any(e.data["wave_ts_ms"] == wave for e in query(ctx, "intake.wave_finished")[-3:]), f"wave {wave} finished")
        def close_all() -> bool:  # like a user repeating `ctl close-all` until it is done
            for name in ctx.directory.names("position:"):
                ctx.directory.tell(name, ClosePosition(reason="end of wave"))
            return not ctx.directory.names("position:")

        advance_until(ctx, close_all, "positions closed", step_ms=500)
        ctx.clock.advance(WAVE_MS)

    opened = query(ctx, "intake.position_opened")
    selected = query(ctx, "intake.signal_selected")
    failed = query(ctx, "intake.position_failed")
    per_wave: dict[int, int] = {}
    for e in opened:
        per_wave[e.data["wave_ts_ms"]] = per_wave.get(e.data["wave_ts_ms"], 0) + 1
    assert len(query(ctx, "intake.wave_finished")) == n_waves
    assert max(per_wave.values()) <= 5, "a wave went over its limit"
    assert sum(per_wave.values()) == len(opened)
    fail_ratio = len(failed) / len(selected)
    assert fail_ratio >= 0.3, f"the faults must bite: {fail_ratio:.0%} of opens failed"
    # Protected positions per wave, as the position actors recorded them (not the intake's count).
    wave_of_pid = {e.data["position_id"]: e.data["wave_ts_ms"] for e in selected}
    protected: dict[int, set[str]] = {}
    for e in query(ctx, "position.stop_placed"):
        protected.setdefault(wave_of_pid[e.position_id], set()).add(e.position_id)
    assert max(len(v) for v in protected.values()) <= 5
    # Never two positions on one symbol at once: at most one entry fill per symbol per wave.
    fills = exchange.with_engine(lambda e, now: [f for f in e.fills if not f.liquidation])
    entries: dict[tuple[str, int], int] = {}
    for f in fills:
        if f.client_id and f.client_id.split("-")[2].startswith("e"):
            key = (f.symbol, wave_of(f.ts_ms))
            entries[key] = entries.get(key, 0) + 1
    assert max(entries.values()) == 1, "a symbol was entered twice in one wave"
    m = exchange.with_engine(lambda e, now: e.metrics(now))
    assert m["positions_open"] == 0 and m["orphan_orders"] == 0
    print(f"\n{n_waves} waves x 85 signals: {len(selected)} opens started, {len(failed)} failed ({fail_ratio:.0%}), {len(opened)} confirmed, max {max(per_wave.values())} per wave")


def test_a_wave_delivered_twice_is_processed_once(waves):
    ctx, exchange, sup = waves
    rng = random.Random(1)
    ctx.clock.advance(WAVE_MS - ctx.clock.now_ms() % WAVE_MS + 60_000)
    now = ctx.clock.now_ms()
    frame = batch(rng, wave_of(now), now, n=20)
    ctx.directory.tell("intake", SignalFrame(raw=frame))
    ctx.directory.tell("intake", SignalFrame(raw=frame))  # redelivered after a reconnect
    advance_until(ctx, lambda: query(ctx, "intake.wave_finished"), "wave finished")
    ctx.clock.advance(60_000)
    assert len(query(ctx, "intake.wave_processed")) == 1
    rejected = query(ctx, "intake.signal_rejected")
    assert len(rejected) == 20 and all("duplicate" in e.data["reason"] for e in rejected)
    assert len(query(ctx, "intake.signal_received")) == 20
