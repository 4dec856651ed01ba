"""The real-venue path on the loopback Binance USDⓈ-M venue, next to the paper exchange.

Figures (streams down: the bot polls):

* entry fill -> stop live, p50/p99, with 1, 5 and 20 entries at once, from the
  venue's own timeline (the time each position had no live stop after its
  fill); on the venue with ccxt's REST throttle bypassed (ours budgets) and with
  it restored (the "before"), and on the paper exchange;
* a stop placed right after an all-symbol order read (both books, weight 40
  each): request sent -> venue received, throttle bypassed vs restored;
* unprotected time after a rate-limit answer (HTTP 429 -1003) on a fresh
  position's first stop: the stop probing after ``protect_probe_ms`` while
  reads wait the 2 s pause, vs protective calls waiting the pause out too;
* restore time after a human cancels a stop, with the guard every 1 s and
  every 3 s (the goal: one guard interval + 2 round trips, worst case), the
  cancels spread over the guard's cycle, venue and paper;
* requests per position-hour at 5 and 50 positions with the default cadences
  (marks every 1 s, guard 10 s, sync 30 s), marks read in one request vs one
  per symbol, and the largest weight per minute; the paper exchange's
  requests per position-hour with the same cadences next to them.
"""

from __future__ import annotations

import dataclasses
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
COST_WINDOW_S = float(__import__("os").environ.get("TB_BENCH_COST_WINDOW_S", "10"))
#: Where in the guard's cycle the human cancels (fractions of the interval after a restore).
CANCEL_PHASES = (0.1, 0.5, 0.9)


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


@dataclasses.dataclass
class PaperWorld:
    """The same trading tree on the in-process paper exchange (real clock), with the venue's timeline."""

    sup: Any
    venue: Venue
    engine: PaperEngine
    exchange: PaperExchange
    tl: Timeline
    collector: Any
    ctx: ActorContext

    def open(self, symbol: str, pid: str, quote: str = "20") -> None:
        req = OpenRequest(position_id=pid, exchange="paper", symbol=symbol, side="long", quote_amount=Decimal(quote), leverage=10, correlation_id=pid, requested_by=self.collector)
        self.sup.tell(StartChild(spec=position_spec(self.venue, self.ctx.directory, pid, symbol, req)))

    def human_cancel(self, symbol: str) -> None:
        async def cancel() -> None:  # on the I/O loop, where the paper exchange runs
            for o in self.engine.open_order_list(self.venue.market(symbol).symbol):
                if o.is_stop:
                    self.engine.external_cancel_order(o.id, int(time.time() * 1000))

        self.ctx.io.run(cancel(), 10)

    def close(self) -> None:
        self.sup.tell(Shutdown(reason="bench end"))
        self.sup.actor_stopped.wait(10)
        self.collector.stop()
        self.ctx.store.close()
        self.ctx.io.stop()
        self.ctx.clock.close()


def paper_world(toml: str = FAST, extra_symbols: int = 30) -> PaperWorld:
    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop
    from core.clock import RealClock

    tmp = Path(tempfile.mkdtemp(prefix="tb-bp-"))
    raw = json.loads(MARKETS_FILE.read_text())
    raw.update(synthetic_markets(raw, extra_symbols))
    markets = Markets.from_ccxt(raw)
    cfg = parse_config(toml, base_dir=tmp)
    io = IOLoop("paper-io").start()
    store = EventStore(tmp / "events.db", io).open()
    clock = RealClock()
    ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=Directory())
    engine = PaperEngine(markets, flavour="binance", slippage_bps=Decimal(0), initial_balance=Decimal(100000))
    exchange = PaperExchange(engine, clock, flavour="binance", request_log_size=1_000_000)
    io.run(exchange.load_markets(), 10)
    for m in markets:
        exchange.set_mark(m.symbol, Decimal("40000"))
    tl = Timeline()
    engine.add_listener(lambda kind, key: tl.record_state(engine_snapshot(engine, markets)))
    venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), paper_style(cfg))
    collector = Collector.start(name="collector", ctx=ctx)
    sup = Supervisor.start(ctx=ctx, children=trading_children(cfg, venue, ctx.directory, []))
    return PaperWorld(sup, venue, engine, exchange, tl, collector, ctx)


def paper_latency() -> dict[int, list[float]]:
    """The same actors on the in-process paper exchange (real clock)."""
    w = paper_world()
    out: dict[int, list[float]] = {}
    try:
        start = 0
        for n in SIZES:
            symbols = [f"X{i:02d}USDT" for i in range(start, start + n)]
            start += n
            for i, sym in enumerate(symbols):
                w.open(sym, f"b{n}-{i}")
            wait_for(lambda symbols=symbols: _protected(w.tl, symbols), timeout=60, what=f"paper {n} protected")
            out[n] = _gaps(w.tl, symbols)
    finally:
        w.close()
    return out


def _guard_every(toml: str, secs: int) -> str:
    """The guard every ``secs``; sync's own full reads (each also a guard check) at their default 30 s."""
    return toml.replace("[guard]\ninterval_secs = 1\n", f"[guard]\ninterval_secs = {secs}\n").replace("interval_secs = 2\ngrace_secs = 2", "interval_secs = 30\ngrace_secs = 2")


def _restores(tl: Timeline, cancel: Any, guard_s: int) -> list[float]:
    """Cancel the only stop at each phase of the guard's cycle after a restore; the unprotected ms each time."""
    out = []
    for phase in CANCEL_PHASES:
        time.sleep(phase * guard_s)  # where in the guard's cycle the human acts: a measurement setting, not a wait
        cancel()
        wait_for(lambda: len(tl.unprotected()) > len(out) + 1 and _protected(tl, ["BTCUSDT"]), timeout=60, what="restored")
        out.append(float(tl.unprotected()[-1].length_ms(0)))
    return out


def restore_after_cancel(guard_s: int) -> tuple[list[float], float]:
    """(restore ms per cancel, round trip ms) on the venue, streams down, the guard every ``guard_s``."""
    s = server()
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-br-")) / "bot", s, toml=_guard_every(FAST, guard_s))
    try:
        bot.open("BTCUSDT")
        wait_for(lambda: _protected(s.timeline, ["BTCUSDT"]), what="protected")
        rtts = []
        for _ in range(10):
            t0 = time.perf_counter()
            bot.ctx.io.run(bot.venue.mark_price("BTCUSDT"), 10)
            rtts.append((time.perf_counter() - t0) * 1000)
        out = _restores(s.timeline, lambda: s.human_cancel("BTCUSDT"), guard_s)
    finally:
        close_bot(bot)
        s.stop()
    return out, pct(rtts, 50)


def paper_restore_after_cancel(guard_s: int) -> list[float]:
    w = paper_world(_guard_every(FAST, guard_s), extra_symbols=0)
    try:
        w.open("BTCUSDT", "r1", quote="100")
        wait_for(lambda: _protected(w.tl, ["BTCUSDT"]), what="paper protected")
        return _restores(w.tl, lambda: w.human_cancel("BTCUSDT"), guard_s)
    finally:
        w.close()


def naked_after_rate_limit(*, probe: bool, samples: int = 3) -> list[float]:
    """Entry fill -> stop live when the first stop is answered HTTP 429 -1003 (2 s pause, the default)."""
    s = server(extra_symbols=samples)
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-bl-")) / "bot", s, rate_limit_delay_ms=2000)
    lim = bot.venue.executor.limiter
    if not probe:
        lim.protect_probe_s = lim.protect_probe_max_s = 2.0  # protective calls wait the pause out like reads
    out = []
    try:
        for i in range(samples):
            sym = f"X{i:02d}USDT"
            s.fail_next("POST /fapi/v1/algoOrder", code=-1003, status=429, msg="Too many requests; current limit of IP(127.0.0.1) is 2400 requests per minute.")
            bot.open(sym, quote="20")
            wait_for(lambda sym=sym: _protected(s.timeline, [sym]), timeout=60, what=f"{sym} protected")
            out += _gaps(s.timeline, [sym])
            time.sleep(2.5)  # let the pause end before the next sample: a measurement setting
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


def paper_polling_cost(n: int) -> float:
    """Requests per position-hour on the paper exchange, same cadences, streams off."""
    w = paper_world(DEFAULT_CADENCE, extra_symbols=max(0, n))
    try:
        symbols = [f"X{i:02d}USDT" for i in range(n)]
        for i, sym in enumerate(symbols):
            w.open(sym, f"c{i}")
        wait_for(lambda: _protected(w.tl, symbols), timeout=120, what=f"paper {n} protected")
        since = int(time.time() * 1000)
        time.sleep(COST_WINDOW_S)  # a measurement window, not a wait for a condition
        now = int(time.time() * 1000)
        count = sum(1 for r in list(w.exchange.requests) if since <= r["ts_ms"] <= now)
        return count / (n * (now - since) / 3_600_000)
    finally:
        w.close()


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
    probing, waiting = naked_after_rate_limit(probe=True), naked_after_rate_limit(probe=False)
    row("429 on the first stop: unprotected, stop probes (250 ms)", f"median {pct(probing, 50):.0f} ms  max {max(probing):.0f} ms  (n={len(probing)})")
    row("429 on the first stop: unprotected, stop waits the pause", f"median {pct(waiting, 50):.0f} ms  max {max(waiting):.0f} ms  (n={len(waiting)})")
    for guard_s in (1, 3):
        restores, rt = restore_after_cancel(guard_s)
        paper_restores = paper_restore_after_cancel(guard_s)
        goal = guard_s * 1000 + 2 * rt
        row(f"restore after a human cancel, guard {guard_s} s: venue", f"median {pct(restores, 50):.0f} ms  max {max(restores):.0f} ms  (goal <= {goal:.0f} ms = interval + 2 x {rt:.1f} ms; n={len(restores)})")
        row(f"restore after a human cancel, guard {guard_s} s: paper", f"median {pct(paper_restores, 50):.0f} ms  max {max(paper_restores):.0f} ms  (n={len(paper_restores)})")
    for n in (5, 50):
        for batch in (True, False):
            per_hour, wpm, marks = polling_cost(n, batch=batch)
            how = "marks in one read when cheaper" if batch else "one mark read per symbol"
            row(f"{n:>2} positions, {how}", f"{per_hour:,.0f} req/position-hour  {wpm:,} weight/min  premiumIndex {marks:.1f}/s")
        row(f"{n:>2} positions, paper exchange (same cadences)", f"{paper_polling_cost(n):,.0f} req/position-hour")
