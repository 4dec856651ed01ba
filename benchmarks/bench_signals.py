"""Signals: decoding throughput; a wave from arrival to all positions protected."""

from __future__ import annotations

import json
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import msgspec

from actors.signal_intake import SignalFrame, SignalIntake
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.markets import Markets
from adapters.paper import FaultPlan, PaperEngine, PaperExchange
from adapters.venue import STYLES, Venue
from benchmarks._util import pct, row
from supervision.actor import ActorContext
from supervision.directory import Directory
from core.messages import Shutdown
from supervision.supervisor import ChildSpec, Supervisor
from core.clock import RealClock
from core.config import parse_config
from core.signal_protocol import RecentIds, decode, wave_of
from tradebot.wiring import build_executor, position_spec

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _markets(n: int) -> Markets:
    btc = Markets.from_file(SHARED / "markets" / "binanceusdm-linear.json").resolve("BTCUSDT")
    return Markets([msgspec.structs.replace(btc, symbol=f"B{i:03d}/USDT:USDT", id=f"B{i:03d}USDT", base=f"B{i:03d}") for i in range(n)])


def _batch(rng: random.Random, wave: int, now: int, n: int = 85, tag: str = "") -> bytes:
    sigs = [{"id": f"{tag}{wave}-{i}", "exchange": "paper", "symbol": f"B{rng.randrange(100):03d}USDT", "action": rng.choice(["buy", "sell"]), "score_week": str(round(rng.random(), 4)), "score_month": str(round(rng.random(), 4)), "wave_ts_ms": wave, "created_ms": now} for i in range(n)]
    return json.dumps({"type": "batch", "wave_ts_ms": wave, "signals": sigs}).encode()


def run() -> None:
    print("signals")
    markets = _markets(100)
    rng = random.Random(3)
    now = int(time.time() * 1000)
    frames = [_batch(rng, wave_of(now), now, tag=f"d{k}-") for k in range(200)]
    seen = RecentIds()
    t0 = time.perf_counter()
    accepted = sum(len(decode(f, markets_by_exchange={"paper": markets}, now_ms=now, seen_ids=seen).accepted) for f in frames)
    elapsed = time.perf_counter() - t0
    row("decode + validate (200 batches x 85 signals)", f"{accepted / elapsed:,.0f} signals/s ({accepted} accepted)")

    took = [_one_wave(markets, rng, k) for k in range(3)]
    row("wave (85 signals, limit 5): processing -> all 5 protected", f"p50 {pct(took, 50):.0f} ms  max {max(took):.0f} ms (paper latency 5-15 ms per request; fresh harness per wave)")


def _one_wave(markets: Markets, rng: random.Random, k: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("bench-io").start()
        store = EventStore(Path(tmp) / "s.db", io).open()
        clock = RealClock()
        cfg = parse_config('[signals]\nsource = "bundled"\nprocess_after_secs = 1\nmin_free_balance = 0\n[feeds]\nmark_interval_ms = 60000\n[demo]\nsignals_file = ""\n', base_dir=Path(tmp))
        ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=Directory())
        engine = PaperEngine(markets, flavour="binance", initial_balance=Decimal(10**9), slippage_bps=Decimal(0))
        exchange = PaperExchange(engine, clock, flavour="binance", faults=FaultPlan(latency_ms_min=5, latency_ms_max=15, seed=k), markets_path=SHARED / "markets" / "binanceusdm-linear.json")
        for m in markets:
            exchange.set_mark(m.symbol, Decimal(40000))
        venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), STYLES["binance"])
        spec_for = lambda req: position_spec(venue, ctx.directory, req.position_id, req.symbol, req)  # noqa: E731
        sup = Supervisor.start(ctx=ctx, children=[ChildSpec(name="intake", factory=lambda n, c: SignalIntake.start(name=n, ctx=c, venue=venue, markets_by_exchange={"paper": markets}, position_spec=spec_for), kind="intake")])
        try:
            while ctx.directory.lookup("intake") is None:
                time.sleep(0.01)  # benchmark driver: start-up
            now = clock.now_ms()
            wave = wave_of(now)
            ctx.directory.tell("intake", SignalFrame(raw=_batch(rng, wave, now, tag=f"w{k}-")))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not io.run(store.query(types=("intake.wave_finished",)), 10):
                time.sleep(0.01)  # benchmark driver waiting on a condition
            processed = io.run(store.query(types=("intake.wave_processed",)), 10)[0]
            opened = io.run(store.query(types=("intake.position_opened",)), 10)
            return max(e.ts_ms for e in opened) - processed.ts_ms
        finally:
            sup.tell(Shutdown(reason="bench done"))
            sup.actor_stopped.wait(30)
            store.close()
            io.stop()
            clock.close()
