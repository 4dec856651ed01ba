"""Detection: how long after a human closes a position on the exchange does the bot know?

Measured with real processes, as in production: ``tradebot paper serve`` and
``tradebot run`` in a temp site each, seven positions opened by file signals,
then closed one by one "by hand" through the paper server's admin socket.
The time runs from just before the admin call to the ``ts_ms`` of the
owner's ``position.closed`` event in the bot's store (and of its
``position.stop_cancelled``: the left-over stop gone), both processes on the
system clock.

Two pairs run side by side: the exchange's order/position **streams** (the
default), and **polling** only (``use_streams = false``). Polling is bounded
by ``sync.interval_secs``: a close waits for the next full read, on average
half an interval, plus the read itself. The default 30 s interval would make
this run minutes long, so it is measured at 2 s and the default's figure is
derived from the measured read time (``duration_ms`` of ``sync.reconciled``:
positions, open orders and the store, compared). Each polling close is made
at a random moment of the read cycle, so the phases are sampled evenly.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from adapters.paper.client import PaperClient
from benchmarks._util import pct, row

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
SYMBOLS = ["BTCUSDT", "ETHUSDT", "LTCUSDT", "ADAUSDT", "XRPUSDT", "DOGEUSDT", "TRXUSDT"]
POLL_SECS = 2
DEFAULT_POLL_SECS = 30


def _until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        time.sleep(0.005)
    return value


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Pair:
    """A paper exchange and a bot, each its own process, in a temp site."""

    def __init__(self, name: str, sync_toml: str) -> None:
        self.name = name
        self.path = Path(tempfile.mkdtemp(prefix=f"tbd-{name[:4]}-", dir="/tmp"))
        self.sock, self.db = self.path / "var" / "paper.sock", self.path / "var" / "tradebot.db"
        signals = [{"id": f"d-{s}", "wave": "w1", "symbol": s, "side": "long", "after_secs": 1} for s in SYMBOLS]
        (self.path / "signals.jsonl").write_text("".join(json.dumps(s) + "\n" for s in signals))
        (self.path / "config.toml").write_text(
            f'[paper]\nmode = "process"\ndata_dir = "{SHARED}"\nspeed = 1\n[demo]\nsignals_file = "signals.jsonl"\nwave_limit = {len(SYMBOLS)}\n'
            f'[signals]\nsource = "file"\n[logging]\nconsole_level = "WARNING"\n{sync_toml}'
        )
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, *args: str, log: str) -> None:
        out = open(self.path / log, "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "tradebot", *args], cwd=self.path, env=ENV, stdout=out, stderr=subprocess.STDOUT))

    def start_exchange(self) -> None:
        self._spawn("paper", "serve", log="paper.log")

    def start_bot(self) -> None:
        _until(self.sock.exists, 20, f"{self.name} paper exchange socket")
        self._spawn("run", log="bot.log")

    def stop(self) -> None:
        for p in reversed(self.procs):  # the bot first
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.path, ignore_errors=True)

    def call(self, method: str, *args: Any) -> Any:
        async def go() -> Any:
            client = PaperClient(self.sock)
            try:
                return await client.call(method, *args)
            finally:
                await client.close()

        return asyncio.run(go())

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def protected(self) -> dict[str, str]:
        """symbol -> position id of the bot's protected positions."""
        rows = self.query("SELECT position_id, data FROM positions WHERE is_open = 1")
        return {d["symbol"]: pid for pid, raw in rows for d in [json.loads(raw)] if d["state"] == "protected"}

    def event_ts(self, type_: str, position_id: str, since_ms: int) -> int | None:
        rows = self.query("SELECT ts_ms FROM events WHERE type = ? AND position_id = ? AND ts_ms >= ? ORDER BY id LIMIT 1", (type_, position_id, since_ms))
        return rows[0][0] if rows else None

    def read_times_ms(self) -> list[float]:
        return [json.loads(d).get("duration_ms", 0.0) for (d,) in self.query("SELECT data FROM events WHERE type = 'sync.reconciled'")]

    def close_all(self, phase_s: float = 0.0) -> tuple[list[int], list[int]]:
        """Close each position by hand, one at a time; (ms to recorded, ms to stop cancelled) per close."""
        owned = _until(lambda: (p := self.protected()) and len(p) == len(SYMBOLS) and p, 40, f"{self.name}: {len(SYMBOLS)} protected positions")
        recorded, cleaned = [], []
        rng = random.Random(7)
        for symbol, pid in owned.items():
            if phase_s:  # sample the read cycle's phase evenly: the close lands anywhere in it
                time.sleep(rng.uniform(0, phase_s))
            t0 = _now_ms()
            self.call("external_close_position", symbol)
            recorded.append(_until(lambda: self.event_ts("position.closed", pid, t0), 60, f"{symbol} close recorded") - t0)
            cleaned.append(_until(lambda: self.event_ts("position.stop_cancelled", pid, t0), 30, f"{symbol} stop cancelled") - t0)
        return recorded, cleaned


def _fmt(samples: list[float], unit: str = "ms") -> str:
    return f"p50 {pct(samples, 50):,.0f} {unit}  max {max(samples):,.0f} {unit}  mean {statistics.fmean(samples):,.0f} {unit}  (n={len(samples)})"


def run() -> None:
    print("detection of a human's close (paper exchange and bot in their own processes)")
    stream = Pair("stream", "[sync]\nuse_streams = true\n")
    polling = Pair("polling", f"[sync]\nuse_streams = false\ninterval_secs = {POLL_SECS}\n")
    pairs = (stream, polling)
    try:
        for p in pairs:
            p.start_exchange()
        for p in pairs:
            p.start_bot()
        s_rec, s_clean = stream.close_all()
        p_rec, p_clean = polling.close_all(phase_s=POLL_SECS)
        reads = polling.read_times_ms()
    finally:
        for p in pairs:
            p.stop()
    row("streams: close -> recorded by the owner", _fmt(s_rec))
    row("streams: close -> our left-over stop cancelled", _fmt(s_clean))
    row(f"polling every {POLL_SECS} s: close -> recorded", _fmt(p_rec))
    row(f"polling every {POLL_SECS} s: -> left-over stop cancelled", _fmt(p_clean))
    read = pct(reads, 50)
    row("  full read (positions, orders, store) + compare", f"p50 {read:.1f} ms  max {max(reads):.1f} ms  (n={len(reads)})")
    row(f"  expected at {POLL_SECS} s: interval/2 + read", f"mean {POLL_SECS * 500 + read:,.0f} ms, max {POLL_SECS * 1000 + read:,.0f} ms (measured mean {statistics.fmean(p_rec):,.0f} ms)")
    row(f"polling at the default {DEFAULT_POLL_SECS} s (interval-bound)", f"mean ~ {DEFAULT_POLL_SECS / 2:.0f} s + {read:.0f} ms read, max ~ {DEFAULT_POLL_SECS} s + read; streams: {pct(s_rec, 50):.0f} ms")
