"""The real-venue path on the loopback Bybit v5 venue, printed right after Binance's (``bench_venue``).

Figures (streams down: the bot polls; ccxt's REST throttle bypassed, ours budgets):

* entry fill -> stop live, p50/p99, with 1, 5 and 20 entries at once, from the
  venue's own timeline. Bybit acknowledges an order with its ids only, so the
  fill is read back (``/v5/order/realtime`` by id) before the stop can go: two
  round trips from the fill, against Binance's one. Also with realtime listing
  open orders only (as Bybit documents after a restart of theirs): the history
  by id (after), and the old path, realtime only then a retry and a look-up by
  client id (before, ``position.retry_delay_ms`` 50 here, 250 by default);
* restore time after a human cancels a stop (guard every second here);
* a trailing move, default (``exchange.stop_mode = "order"``: place the new stop, then
  cancel the old) next to the position-attached stop (``"position"``: one trading-stop
  request amending it in place): write requests per move, time per move at the venue
  (first write received -> last answered) and two-stop overlap per move;
* one round trip (a ticker read through the executor), for scale.
"""

from __future__ import annotations

import tempfile
import time
from decimal import Decimal
from pathlib import Path

from benchmarks._util import pct, row
from benchmarks.bench_venue import SIZES, _fmt, _gaps, _protected
from tests.venue.bot import bybit_server, close_bot, start_bot, wait_for

WRITES = ("POST /v5/order/create", "POST /v5/order/cancel", "POST /v5/position/trading-stop")


def entry_latency(*, open_only: bool, old_read_back: bool = False) -> tuple[dict[int, list[float]], float]:
    """Entry fill -> stop live per size (ms); a round trip (ms, p50)."""
    s = bybit_server(extra_symbols=30)
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-bbv-")) / "bot", s)
    if open_only:
        s.realtime_open_only(True)
    if old_read_back:  # before: realtime by id only; not found -> the bare acknowledgement -> retry by client id
        style = bot.venue.style
        style.read_back_queries = lambda order_id: [("fetch_order", style.fetch_params())]  # type: ignore[method-assign]
    out: dict[int, list[float]] = {}
    try:
        start = 0
        for n in SIZES:
            symbols = [f"X{i:02d}USDT" for i in range(start, start + n)]
            start += n
            for sym in symbols:
                bot.open(sym, quote="20")
            wait_for(lambda symbols=symbols: _protected(s.timeline, symbols), timeout=60, what=f"{n} protected")
            out[n] = _gaps(s.timeline, symbols)
        rtts = []
        for _ in range(20):
            t0 = time.perf_counter()
            bot.ctx.io.run(bot.venue.mark_price("BTCUSDT"), 10)
            rtts.append((time.perf_counter() - t0) * 1000)
    finally:
        close_bot(bot)
        s.stop()
    return out, pct(rtts, 50)


def restore_after_cancel(samples: int = 3) -> list[float]:
    s = bybit_server()
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-bbr-")) / "bot", s)
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


def move_cost(stop_mode: str, moves: int = 8) -> tuple[list[int], list[float], list[float]]:
    """Per trailing move on BTCUSDT: (write requests, ms first write -> last answered, ms of two stops live)."""
    s = bybit_server()
    bot = start_bot(Path(tempfile.mkdtemp(prefix="tb-bbm-")) / "bot", s, exchange_extra=f'stop_mode = "{stop_mode}"\n')
    counts: list[int] = []
    times: list[float] = []
    overlaps: list[float] = []
    try:
        bot.open("BTCUSDT")
        wait_for(lambda: _protected(s.timeline, ["BTCUSDT"]), what="protected")
        tl = s.timeline
        for i in range(moves):
            mark = Decimal(40700 + 300 * i)
            want = (mark * Decimal("0.995")).quantize(Decimal("0.1"))
            seen = len(tl.requests)
            before_overlap = sum(iv.length_ms(0) for iv in tl.overlaps())
            s.set_mark("BTCUSDT", mark)
            wait_for(lambda want=want: [st.trigger for st in tl.live_stops("BTCUSDT")] == [want], timeout=30, what=f"stop at {want}")
            writes = [r for r in tl.requests[seen:] if r.route in WRITES]
            counts.append(len(writes))
            times.append(float(max(r.done_ms for r in writes) - min(r.t_ms for r in writes)) if writes else 0.0)
            overlaps.append(float(sum(iv.length_ms(0) for iv in tl.overlaps()) - before_overlap))
    finally:
        close_bot(bot)
        s.stop()
    return counts, times, overlaps


def run() -> None:
    print("venue (Bybit): the real ccxt path on the loopback Bybit v5 venue (streams down), next to Binance's above")
    normal, rtt = entry_latency(open_only=False)
    after, _ = entry_latency(open_only=True)
    before, _ = entry_latency(open_only=True, old_read_back=True)
    row("round trip (ticker via the executor), p50", f"{rtt:.1f} ms")
    for n in SIZES:
        row(f"entry fill -> stop live, {n:>2} at once: Bybit", _fmt(normal[n]))
        row("  realtime open orders only: history read-back", _fmt(after[n]))
        row("  realtime open orders only: before (retry, by client id)", _fmt(before[n]))
    for mode in ("order", "position"):
        counts, times, overlaps = move_cost(mode)
        label = "default: new stop, then cancel the old" if mode == "order" else "position-attached stop, amended in place"
        row(f"trailing move, stop_mode = {mode!r} ({label})", f"{sum(counts) / len(counts):.1f} requests/move  median {pct(times, 50):.1f} ms  max {max(times):.1f} ms  two stops live {pct(overlaps, 50):.0f} ms median  (n={len(counts)})")
    restores = restore_after_cancel()
    row("restore after a human cancel (guard every 1 s): Bybit", f"median {pct(restores, 50):.0f} ms  max {max(restores):.0f} ms  (n={len(restores)})")
