"""The bot with its streams live on the loopback Binance venue (REST + websocket side).

Figures:

* each scenario's timing (p50/max over a few runs), fast cadences (guard 1 s):
  a human cancel -> the stop restored (naked time on the venue's timeline); a
  human close -> the leftover stop cancelled; a stop trigger -> the close
  recorded; a dropped connection (close frame / TCP abort) -> streams live
  again, and then a human cancel restored (the stop latency after a reconnect:
  ccxt's REST throttle is bypassed, so the reconnect's full read no longer
  holds the next requests); listenKey expired -> a new user connection; a
  silent mark connection -> redialled; a change of mark symbols -> frames sent;
* requests per position-hour with streams live at 5 and 50 positions, default
  cadences (marks 1 s, guard 10 s, quiet probe 15 s);
* the time to detect a silent user stream with default settings
  (``sync.quiet_probe_secs`` 15 + ``push_deadline_secs`` 5: goal under 30 s),
  with a stop cancelled during the silence, and the false alarms meanwhile.

A scenario that does not complete is printed as a miss (not an exception). The
one still seen: with the guard every second and the streams down after a drop,
each check is a full read (all-symbol open orders, weight 40, plus positions,
5), which spends Binance's read share of the weight window; a *new entry* (its
sizing mark read and the order itself, READ and ENTRY class) then waits for the
budget longer than the scenario's 20 s. That is the budget working as designed
under this bench's aggressive cadence (the shipped guard interval is 10 s).
Protective calls never wait behind those reads: a lost stop's restore and a
flat position's leftover cancel, including the reads that decide them
(``actors.position_commands.PROTECTIVE_READS``), go first; before that fix a
human close here left its stop live for more than 20 s.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from actors.messages import PositionClosed
from benchmarks._util import pct, row
from tests.test_venue_streams import STREAMS, false_alarms, protected, streams_live
from tests.venue.binance_server import BinanceVenueServer
from tests.venue.bot import Bot, close_bot, server, start_bot, wait_for

RUNS = int(os.environ.get("TB_BENCH_STREAM_RUNS", "3"))
COST_WINDOW_S = float(os.environ.get("TB_BENCH_STREAM_COST_WINDOW_S", "20"))
#: Streams live with the default cadences (the shipped config.toml's sync / guard / feeds values).
DEFAULTS = (
    STREAMS.replace("interval_secs = 2\ngrace_secs = 2\npush_deadline_secs = 2\nquiet_probe_secs = 4", "interval_secs = 30\ngrace_secs = 30\npush_deadline_secs = 5\nquiet_probe_secs = 15")
    .replace("mark_interval_ms = 500", "mark_interval_ms = 1000")
    .replace("[guard]\ninterval_secs = 1", "[guard]\ninterval_secs = 10")
)


def _now() -> int:
    return time.time_ns() // 1_000_000


def _fmt(ms: list[float]) -> str:
    return f"p50 {pct(ms, 50):8.1f} ms  max {max(ms):8.1f} ms  (n={len(ms)})" if ms else "n/a"


def _ws(s: BinanceVenueServer) -> Any:
    assert s.ws is not None
    return s.ws


def _naked_after(s: BinanceVenueServer, t0: int) -> float:
    iv = [i for i in s.timeline.unprotected() if i.start_ms >= t0 - 5 and i.end_ms is not None]
    return float(iv[-1].length_ms(0)) if iv else float("nan")


def _cancel_restored(b: Bot, s: BinanceVenueServer, n: int = 1, symbol: str = "BTCUSDT") -> float:
    t0 = _now()
    s.human_cancel(symbol)
    wait_for(lambda: protected(s, n) and s.timeline.unprotected()[-1].start_ms >= t0 - 5, timeout=40, what="restored", poll_s=0.002)
    return _naked_after(s, t0)


def _fresh_bot(tag: str, toml: str = STREAMS, **kw: Any) -> tuple[BinanceVenueServer, Bot]:
    s = server(streams=True, mark_push_ms=250, **kw)
    b = start_bot(Path(tempfile.mkdtemp(prefix=f"tb-bs-{tag}-")) / "bot", s, toml=toml)
    wait_for(lambda: streams_live(b), timeout=20, what="streams live")
    return s, b


def scenarios() -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("cancel", "close", "trigger", "drop_close_up", "drop_close_restore", "drop_abort_up", "drop_abort_restore", "listen_key", "silent_marks")}
    s, b = _fresh_bot("sc")
    misses: list[str] = []
    try:
        for i in range(RUNS):
            try:
                b.open("BTCUSDT", pid=f"c{i}")
                wait_for(lambda: protected(s, 1), timeout=20, what="protected")
                out["cancel"].append(_cancel_restored(b, s))
                for how in ("close", "abort"):
                    first = wait_for(lambda: _ws(s).live("user"), timeout=20, what="user connection")[0]
                    t0 = _now()
                    _ws(s).drop(None, how=how)
                    wait_for(lambda first=first: [c for c in _ws(s).live("user") if c is not first] and streams_live(b), timeout=30, what="reconnected", poll_s=0.002)
                    out[f"drop_{how}_up"].append(float(_now() - t0))
                    out[f"drop_{how}_restore"].append(_cancel_restored(b, s))
                first = wait_for(lambda: _ws(s).live("user"), timeout=20, what="user connection")[0]
                t0 = _now()
                _ws(s).expire_listen_key()
                wait_for(lambda first=first: [c for c in _ws(s).live("user") if c is not first] and streams_live(b), timeout=30, what="new key", poll_s=0.002)
                out["listen_key"].append(float(_now() - t0))
                wait_for(lambda: any(c.subscribed for c in _ws(s).live("market")), timeout=20, what="marks subscribed")
                silent = wait_for(lambda: _ws(s).live("market"), timeout=20, what="market connection")[0]
                t0 = _now()
                _ws(s).silence("market")
                wait_for(lambda silent=silent: [c for c in _ws(s).live("market") if c is not silent and c.subscribed], timeout=30, what="marks redialled", poll_s=0.005)
                out["silent_marks"].append(float(_now() - t0))
                closes = len([r for r in b.reports() if isinstance(r, PositionClosed)])
                t0 = _now()
                s.human_close("BTCUSDT")
                try:
                    wait_for(lambda: not s.live_algos(), timeout=20, what="leftover cancelled", poll_s=0.002)
                except AssertionError:  # reported, not hidden: see the module docstring
                    misses.append(f"run {i}: leftover stop still live 20 s after a human close")
                    break
                out["close"].append(float(_now() - t0))
                wait_for(lambda closes=closes: len([r for r in b.reports() if isinstance(r, PositionClosed)]) > closes, timeout=20, what="closed")
                s.set_mark("BTCUSDT", "40000")
                b.open("BTCUSDT", pid=f"t{i}")
                wait_for(lambda: protected(s, 1), timeout=20, what="protected")
                closes = len([r for r in b.reports() if isinstance(r, PositionClosed)])
                t0 = _now()
                s.set_mark("BTCUSDT", "39000")
                wait_for(lambda closes=closes: len([r for r in b.reports() if isinstance(r, PositionClosed)]) > closes, timeout=20, what="trigger recorded", poll_s=0.002)
                out["trigger"].append(float(_now() - t0))
                s.set_mark("BTCUSDT", "40000")
            except AssertionError as exc:  # a scenario that did not complete: a miss, reported
                misses.append(f"run {i}: {exc}")
                break
        # a change of the mark symbols: what went over the wire
        if not misses:
            b.open("BTCUSDT", pid="m1")
            b.open("ETHUSDT", pid="m2")
            wait_for(lambda: protected(s, 2), timeout=20, what="2 protected")
            wait_for(lambda: any("ethusdt@markPrice@1s" in c.subscribed for c in _ws(s).live("market")), timeout=20, what="ETH subscribed")
            [conn] = _ws(s).live("market")
            row("mark set change BTC -> BTC+ETH: frames sent", f"{[f['params'] for f in conn.frames('SUBSCRIBE')]}, unsubscribes {[f['params'] for f in conn.frames('UNSUBSCRIBE')]}")
        row("silent-stream verdicts during these scenarios", str(len(b.events(type_prefixes=("sync.stream_silent",)))))
        row("scenario misses", "; ".join(misses) or "none")
    finally:
        close_bot(b)
        s.stop()
    return out


def cost_and_silence(n: int, *, silence: bool) -> tuple[float, int, float | None, float | None, int]:
    """(requests per position-hour, probes in the window, silence detected after (ms), restored after (ms), false alarms)."""
    s, b = _fresh_bot(f"cost{n}", DEFAULTS, extra_symbols=n if n > 5 else 0)
    symbols = ["BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT", "ADAUSDT"] if n == 5 else [f"X{i:02d}USDT" for i in range(n)]
    try:
        for sym in symbols:
            b.open(sym, quote="20" if n > 5 else "100")
        wait_for(lambda: protected(s, n), timeout=60, what=f"{n} protected", poll_s=0.05)
        time.sleep(1.0)  # let the entries' own traffic settle before the window
        sync = b.ctx.directory.lookup("sync")
        probes0 = sync.proxy().probes.get()
        t0 = _now()
        time.sleep(COST_WINDOW_S)
        t1 = _now()
        rate = s.timeline.requests_per_position_hour(t0, t1)
        probes = sync.proxy().probes.get() - probes0
        if not silence:
            return rate, probes, None, None, 0
        _ws(s).silence("user")
        t2 = _now()
        s.human_cancel(symbols[0])
        wait_for(lambda: b.events(type_prefixes=("sync.stream_silent",)), timeout=60, what="silence detected", poll_s=0.02)
        detected = b.events(type_prefixes=("sync.stream_silent",))[0].ts_ms - t2
        wait_for(lambda: protected(s, n), timeout=60, what="restored", poll_s=0.02)
        restored = _naked_after(s, t2)
        time.sleep(2.0)
        return rate, probes, float(detected), restored, len(false_alarms(b, s))
    finally:
        close_bot(b)
        s.stop()


def run() -> None:
    print("== streams live (Binance venue-like server, websocket side) ==")
    sc = scenarios()
    row("human cancel -> stop restored (naked)", _fmt(sc["cancel"]))
    row("human close -> leftover stop cancelled", _fmt(sc["close"]))
    row("stop trigger -> close recorded", _fmt(sc["trigger"]))
    for how in ("close", "abort"):
        row(f"drop ({how}) -> streams live again", _fmt(sc[f"drop_{how}_up"]))
        row(f"drop ({how}) -> then a cancel restored (naked)", _fmt(sc[f"drop_{how}_restore"]))
    row("listenKey expired -> new user connection", _fmt(sc["listen_key"]))
    row("silent mark stream -> redialled", _fmt(sc["silent_marks"]))
    for n, silence in ((5, True), (50, False)):
        rate, probes, detected, restored, false = cost_and_silence(n, silence=silence)
        row(f"requests per position-hour, {n} positions", f"{rate:8.1f}  ({probes} quiet probes in {COST_WINDOW_S:.0f} s)")
        if detected is not None:
            row("silent user stream: detected after (defaults)", f"{detected:8.0f} ms  (goal < 30000)")
            row("silent user stream: cancelled stop restored after", f"{restored:8.0f} ms;  false guard.unprotected: {false}")
