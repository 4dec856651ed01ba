"""The real-venue path on the loopback Binance USDⓈ-M venue, next to the paper exchange.

Figures (streams down: the bot polls):

* entry fill -> stop live, p50/p99, with 1, 5 and 20 entries at once, from the
  venue's own timeline (the time each position had no live stop after its
  fill); on the venue with ccxt's REST throttle bypassed (ours budgets) and with
  it restored (the "before"), and on the paper exchange;
* a stop placed right after an all-symbol order read (both books, weight 40
  each): request sent -> venue received, throttle bypassed vs restored;
* restore time after a human cancels a stop (guard every second here);
* requests per position-hour at 5 and 50 positions with the default cadences
  (marks every 1 s, guard 10 s, sync 30 s), marks read in one request vs one
  per symbol, and the largest weight per minute.
"""

from __future__ import annotations

import json
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.messages import OpenRequest
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.venue import Venue
from benchmarks._util import pct, row
from core.config import parse_config
from core.messages import Shutdown, StartChild
from supervision.actor import ActorContext
from supervision.directory import Directory
from supervision.supervisor import Supervisor
from tests.venue.binance_server import MARKETS_FILE, engine_snapshot, synthetic_markets
from tests.venue.bot import FAST, Collector, close_bot, server, start_bot, wait_for
from tests.venue.timeline import Timeline
from tradebot.wiring import build_executor, paper_style, position_spec, trading_children

SIZES = (1, 5, 20)
#: Default cadences (marks 1 s, guard 10 s, sync 30 s), streams off: what "streams down" costs.
DEFAULT_CADENCE = FAST.replace("interval_secs = 2\ngrace_secs = 2", "interval_secs = 30\ngrace_secs = 30").replace("interval_secs = 1\n", "interval_secs = 10\n").replace("mark_interval_ms = 200", "mark_interval_ms = 1000")
COST_WINDOW_S = float(__import__("os").environ.get("TB_BENCH_COST_WINDOW_S", "20"))


def _gaps(tl: Timeline, symbols: list[str]) -> list[float]:
    wanted = set(symbols)
    return [float(iv.length_ms(0)) for iv in tl.unprotected() if iv.key[0] in wanted and iv.end_ms is not None]


def _protected(tl: Timeline, symbols: list[str]) -> bool:
    snaps = tl.snapshots
    if not snaps:
        return False
    last = snaps[-1]
    keys = [(s, "long") for s in symbols]
    return all(k in last.positions and last.protected(k) for k in keys)


def _fmt(gaps: list[float]) -> str:
    return f"p50 {pct(gaps, 50):7.1f} ms  p99 {pct(gaps, 99):7.1f} ms  (n={len(gaps)})" if gaps else "n/a"


def _open_all(open_fn: Any, symbols: list[str]) -> None:
    for s in symbols:
        open_fn(s)


def venue_latency(throttle: bool) -> tuple[dict[int, list[float]], float, float]:
    """Entry -> stop live per size; stop after an all-symbol read; round trip (ms)."""
    s = server(extra_symbols=30)
    tmp = Path(tempfile.mkdtemp(prefix="tb-bv-"))
    bot = start_bot(tmp / "bot", s)
    if throttle:
        del bot.venue.exchange.throttle  # ccxt's own FIFO bucket again (the "before")
    out: dict[int, list[float]] = {}
    try:
        start = 0
        for n in SIZES:
            symbols = [f"X{i:02d}USDT" for i in range(start, start + n)]
            start += n
            _open_all(lambda sym: bot.open(sym, quote="20"), symbols)
            wait_for(lambda symbols=symbols: _protected(s.timeline, symbols), timeout=60, what=f"{n} protected")
            out[n] = _gaps(s.timeline, symbols)
        io, v = bot.ctx.io, bot.venue
        rtts = []
        for _ in range(20):
            t0 = time.perf_counter()
            io.run(v.mark_price("BTCUSDT"), 10)
            rtts.append((time.perf_counter() - t0) * 1000)
        # a stop right after the sync actor's kind of read: both books, all symbols (weight 40 each)
        io.run(v.open_market("ETHUSDT", "buy", Decimal("0.01"), "tb-bench-e1", ref_price=Decimal("2000")), 10)
        io.run(v.open_orders(), 30)
        sent_ms = time.time() * 1000
        io.run(v.place_stop("ETHUSDT", "sell", Decimal("0.01"), Decimal("1900"), "tb-bench-s1"), 30)
        got = s.timeline.first("POST /fapi/v1/algoOrder", where=lambda r: r.params.get("clientAlgoId") == "tb-bench-s1")
        after_read = (got.t_ms - sent_ms) if got is not None else float("nan")
    finally:
        close_bot(bot)
        s.stop()
    return out, after_read, pct(rtts, 50)


def paper_latency() -> dict[int, list[float]]:
    """The same actors on the in-process paper exchange (real clock)."""
    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop
    from core.clock import RealClock

    tmp = Path(tempfile.mkdtemp(prefix="tb-bp-"))
    raw = json.loads(MARKETS_FILE.read_text())
    raw.update(synthetic_markets(raw, 30))
    markets = Markets.from_ccxt(raw)
    cfg = parse_config(FAST, base_dir=tmp)
    io = IOLoop("paper-io").start()
    store = EventStore(tmp / "events.db", io).open()
    clock = RealClock()
    ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=Directory())
    engine = PaperEngine(markets, flavour="binance", slippage_bps=Decimal(0), initial_balance=Decimal(100000))
    exchange = PaperExchange(engine, clock, flavour="binance")
    io.run(exchange.load_markets(), 10)
    for m in markets:
        exchange.set_mark(m.symbol, Decimal("40000"))
    tl = Timeline()
    engine.add_listener(lambda kind, key: tl.record_state(engine_snapshot(engine, markets)))
    venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), paper_style(cfg))
    collector = Collector.start(name="collector", ctx=ctx)
    sup = Supervisor.start(ctx=ctx, children=trading_children(cfg, venue, ctx.directory, []))
    out: dict[int, list[float]] = {}
    try:
        start = 0
        for n in SIZES:
            symbols = [f"X{i:02d}USDT" for i in range(start, start + n)]
            start += n
            for i, sym in enumerate(symbols):
                req = OpenRequest(position_id=f"b{n}-{i}", exchange="paper", symbol=sym, side="long", quote_amount=Decimal(20), leverage=10, correlation_id=f"b{n}-{i}", requested_by=collector)
                sup.tell(StartChild(spec=position_spec(venue, ctx.directory, f"b{n}-{i}", sym, req)))
            wait_for(lambda symbols=symbols: _protected(tl, symbols), timeout=60, what=f"paper {n} protected")
            out[n] = _gaps(tl, symbols)
    finally:
        sup.tell(Shutdown(reason="bench end"))
        sup.actor_stopped.wait(10)
        collector.stop()
        store.close()
        io.stop()
        clock.close()
    return out


def restore_after_cancel(samples: int = 3) -> list[float]:
    s = server()
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-br-")) / "bot", s)
    out = []
    try:
        bot.open("BTCUSDT")
        wait_for(lambda: _protected(s.timeline, ["BTCUSDT"]), what="protected")
        for _ in range(samples):
            s.human_cancel("BTCUSDT")
            wait_for(lambda: _protected(s.timeline, ["BTCUSDT"]), timeout=60, what="restored")
            out.append(float(s.timeline.unprotected()[-1].length_ms(0)))
    finally:
        close_bot(bot)
        s.stop()
    return out


def polling_cost(n: int, *, batch: bool) -> tuple[float, int, float]:
    """(requests per position-hour, max weight per minute, premiumIndex requests per second) over a window."""
    s = server(extra_symbols=max(0, n))
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-bc-")) / "bot", s, toml=DEFAULT_CADENCE)
    if not batch:
        bot.venue.style.mark_batch_min_symbols = 10**9  # the old way: one premiumIndex?symbol= per position
    try:
        symbols = [f"X{i:02d}USDT" for i in range(n)]
        _open_all(lambda sym: bot.open(sym, quote="20"), symbols)
        wait_for(lambda: _protected(s.timeline, symbols), timeout=120, what=f"{n} protected")
        since = int(time.time() * 1000)
        time.sleep(COST_WINDOW_S)  # a measurement window, not a wait for a condition
        now = int(time.time() * 1000)
        per_hour = s.timeline.requests_per_position_hour(since, now)
        marks = sum(1 for r in s.timeline.requests if since <= r.t_ms <= now and r.path == "/fapi/v1/premiumIndex") / ((now - since) / 1000)
        window = [r for r in s.timeline.requests if since <= r.t_ms <= now]
        weight_per_min = sum(r.weight for r in window) * 60_000 // max(1, now - since)
    finally:
        close_bot(bot)
        s.stop()
    return per_hour, weight_per_min, marks


def run() -> None:
    print("venue: the real ccxt path on the loopback Binance USDⓈ-M venue (streams down) vs the paper exchange")
    after, after_read, rtt = venue_latency(throttle=False)
    before, before_read, _ = venue_latency(throttle=True)
    paper = paper_latency()
    row("round trip (fetch_mark_price via the executor), p50", f"{rtt:.1f} ms")
    for n in SIZES:
        row(f"entry fill -> stop live, {n:>2} at once: venue, ours only", _fmt(after[n]))
        row(f"entry fill -> stop live, {n:>2} at once: venue, + ccxt throttle", _fmt(before[n]))
        row(f"entry fill -> stop live, {n:>2} at once: paper", _fmt(paper[n]))
    row("stop right after an all-symbol order read: ours only", f"{after_read:.1f} ms to the venue")
    row("stop right after an all-symbol order read: + ccxt throttle", f"{before_read:.1f} ms to the venue")
    restores = restore_after_cancel()
    row("restore after a human cancel (guard every 1 s)", f"median {pct(restores, 50):.0f} ms  max {max(restores):.0f} ms  (n={len(restores)})")
    for n in (5, 50):
        for batch in (True, False):
            per_hour, wpm, marks = polling_cost(n, batch=batch)
            how = "marks in one read when cheaper" if batch else "one mark read per symbol"
            row(f"{n:>2} positions, {how}", f"{per_hour:,.0f} req/position-hour  {wpm:,} weight/min  premiumIndex {marks:.1f}/s")
