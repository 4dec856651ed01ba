"""A human on the exchange's UI, the paper exchange and the bot each in its own process.

What ``test_reconcile`` shows on a virtual clock, here with real processes,
real sockets and the real store file: a human closes a position, cancels our
stop, opens a position of their own, leaves an order behind after a close,
the market liquidates a naked position, and (hedge mode) an order closes the
side that holds no position. Each is done through the paper server's admin
methods on a connection of its own, and the time from the action to the bot
handling it is read from the bot's own event store (``ts_ms`` of the event
that records it; both processes use the system clock).

Three bot + exchange pairs start together, each with its own site:
``stream`` (the exchange pushes order/position updates; defaults otherwise:
with both streams live the full read is only a backstop every
``sync.interval_secs_streaming``, 600 s), ``polling`` (no streams,
``sync.interval_secs = 2`` to keep this fast; the default is 30 s, which
bounds polling detection at ~30 s, ~15 s on average) and ``hedge``
(``exchange.hedge_mode = true``, which the paper process reads too, so the
account is in hedge mode and the bot's orders carry positionSide; streams,
with a backstop read every 2 s so the zombie rules, which only a full read
applies, are seen quickly). Every scenario has its own symbol, so they share
a pair without meddling. The figures are printed (``-s``) and written to
``detection.json`` under pytest's temp dir.

Each scenario asserts what a user expects, and every figure is bounded.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from adapters.markets import Markets
from tests.conftest import SHARED, eventually
from tests.test_crash_recovery import paper_call, tradebot

pytestmark = pytest.mark.slow

STREAM_BOUND_MS = 5_000  # generous: real processes on a loaded machine
POLL_INTERVAL_SECS = 2
POLL_BOUND_MS = POLL_INTERVAL_SECS * 1000 + 5_000

# One symbol per scenario. Signals open the bot's positions; LTC is the human's.
CLOSE, CANCEL, LIQUIDATE, LEFTOVER, ADOPT = "BTCUSDT", "ETHUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT"
SIGNALS = {
    "stream": [(CLOSE, "long"), (CANCEL, "short"), (LIQUIDATE, "long"), (LEFTOVER, "long")],
    "polling": [(CLOSE, "long"), (CANCEL, "short"), (LIQUIDATE, "long"), (LEFTOVER, "long")],
    "hedge": [(CANCEL, "short")],
}
SYNC = {
    "stream": "[sync]\nuse_streams = true\n",
    "polling": f"[sync]\nuse_streams = false\ninterval_secs = {POLL_INTERVAL_SECS}\n",
    "hedge": f"[sync]\nuse_streams = true\ninterval_secs = {POLL_INTERVAL_SECS}\ninterval_secs_streaming = 1\n[exchange]\nhedge_mode = true\n",
}
BOUND = {"stream": STREAM_BOUND_MS, "polling": POLL_BOUND_MS}
MARKETS = Markets.from_file(SHARED / "data" / "markets" / "binanceusdm-linear.json")


def price(symbol: str, value: Decimal) -> str:
    """``value`` on the market's tick, as text."""
    return str(MARKETS.resolve(symbol).round_price(value))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def within(predicate: Any, timeout: float) -> Any:
    """``predicate()``'s first truthy value within ``timeout`` s, else None (for outcomes that may not come)."""
    try:
        return eventually(predicate, timeout=timeout)
    except AssertionError:
        return None


class Env:
    """One site: its config, the paper exchange and the bot, and read-only views of both."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.path = Path(tempfile.mkdtemp(prefix=f"tbh-{mode[:4]}-", dir="/tmp"))
        self.sock = self.path / "var" / "paper.sock"
        self.db = self.path / "var" / "tradebot.db"
        self.exchange: subprocess.Popen | None = None
        self.bot: subprocess.Popen | None = None
        self.ready = False
        signals = [{"id": f"h-{sym}", "wave": "w1", "symbol": sym, "side": side, "after_secs": 1} for sym, side in SIGNALS[mode]]
        (self.path / "signals.jsonl").write_text("".join(json.dumps(s) + "\n" for s in signals))
        (self.path / "config.toml").write_text(
            f'[paper]\nmode = "process"\ndata_dir = "{SHARED / "data"}"\nspeed = 1\n'
            '[demo]\nsignals_file = "signals.jsonl"\n[signals]\nsource = "file"\n[feeds]\nmark_interval_ms = 200\n' + SYNC[mode]
        )

    def start_exchange(self) -> None:
        self.exchange = tradebot(self.path, "paper", "serve", log="paper.log")

    def start_bot(self) -> None:
        eventually(self.sock.exists, timeout=20, what=f"{self.mode}: paper exchange socket")
        self.bot = tradebot(self.path, "run", log="bot.log")

    def log_tail(self, name: str = "bot.log", n: int = 3000) -> str:
        p = self.path / name
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    # ------------------------------------------------------------ the exchange, as admin
    def call(self, method: str, *args: Any) -> Any:
        return paper_call(self.sock, method, *args)

    def orders(self, symbol: str) -> list[dict[str, Any]]:
        return [o for o in self.call("fetch_open_orders") if o["info"]["symbol"] == symbol]

    def exchange_position(self, symbol: str) -> dict[str, Any] | None:
        return next((p for p in self.call("fetch_positions") if p["info"]["symbol"] == symbol), None)

    # ------------------------------------------------------------ the bot's store, read-only
    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
        finally:
            con.close()

    def events(self, *types: str, symbol: str | None = None, position_id: str | None = None, since_ms: int = 0) -> list[dict[str, Any]]:
        sql = "SELECT ts_ms, type, position_id, symbol, data FROM events WHERE ts_ms >= ?"
        params: list[Any] = [since_ms]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += types
        if symbol:
            sql += " AND symbol = ?"
            params.append(symbol)
        if position_id:
            sql += " AND position_id = ?"
            params.append(position_id)
        rows = self._query(sql + " ORDER BY id", tuple(params))
        return [{"ts_ms": ts, "type": t, "position_id": pid, "symbol": sym, "data": json.loads(data)} for ts, t, pid, sym, data in rows]

    def first(self, *types: str, since_ms: int, **kw: Any) -> dict[str, Any] | None:
        found = self.events(*types, since_ms=since_ms, **kw)
        return found[0] if found else None

    def positions(self, *, open_only: bool = True) -> dict[str, dict[str, Any]]:
        """The bot's projection: open positions by symbol."""
        rows = self._query("SELECT position_id, data FROM positions" + (" WHERE is_open = 1" if open_only else ""))
        return {d["symbol"]: {**d, "position_id": pid} for pid, raw in rows for d in [json.loads(raw)]}

    def protected(self, symbol: str) -> dict[str, Any] | None:
        p = self.positions().get(symbol)
        return p if p and p["state"] == "protected" else None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """Measured figures by mode and scenario; written to detection.json at the end."""
    figures: dict[str, dict[str, Any]] = {}
    yield figures
    out = tmp_path_factory.mktemp("detection") / "detection.json"
    out.write_text(json.dumps(figures, indent=1, default=str))
    print(f"\ndetection figures written to {out}")


@pytest.fixture(scope="module")
def sites() -> Iterator[dict[str, Env]]:
    """All three pairs start at once (start-up is the slow part); each is awaited when used."""
    envs = {mode: Env(mode) for mode in SIGNALS}
    try:
        for env in envs.values():
            env.start_exchange()
        for env in envs.values():
            env.start_bot()
        yield envs
    finally:  # the bots first (they shut down talking to their exchange), all at once
        terminate([e.bot for e in envs.values() if e.bot is not None])
        terminate([e.exchange for e in envs.values() if e.exchange is not None])
        for env in envs.values():
            shutil.rmtree(env.path, ignore_errors=True)


def terminate(procs: list[subprocess.Popen], timeout_s: float = 20) -> None:
    """SIGTERM to all, then wait for each (bounded); SIGKILL what has not stopped."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def ready(sites: dict[str, Env], mode: str) -> Env:
    """The pair of ``mode`` once every position of its signals has been open and protected."""
    env = sites[mode]
    if env.ready:
        return env
    want = {sym for sym, _ in SIGNALS[mode]}
    try:
        eventually(lambda: all(env.protected(s) for s in want), timeout=40, what=f"{mode}: {sorted(want)} open and protected")
    except AssertionError:
        raise AssertionError(f"{env.positions(open_only=False)}\n--- bot log ---\n{env.log_tail()}") from None
    env.ready = True
    return env


def record(report: dict, mode: str, scenario: str, **figures: Any) -> None:
    report.setdefault(mode, {})[scenario] = figures
    shown = "  ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[{mode}] {scenario}: {shown}")


MODES = ["stream", "polling"]


# ---------------------------------------------------------------------------- scenarios
@pytest.mark.parametrize("mode", MODES)
def test_human_closes_a_position(sites: dict[str, Env], report: dict, mode: str):
    """The owner records the close (reason: outside the bot) and cancels its own stop, now an orphan."""
    env = ready(sites, mode)
    ours = env.protected(CLOSE)
    t0 = now_ms()
    [close_id] = env.call("external_close_position", CLOSE)
    closed = eventually(lambda: env.first("position.closed", "position.stop_filled", position_id=ours["position_id"], since_ms=t0), timeout=30, what=f"{mode}: close recorded")
    cleaned = eventually(lambda: env.first("position.stop_cancelled", position_id=ours["position_id"], since_ms=t0), timeout=30, what=f"{mode}: our stop cancelled")
    assert closed["type"] == "position.closed" and "outside the bot" in closed["data"]["reason"], closed
    assert env.orders(CLOSE) == [] and env.exchange_position(CLOSE) is None
    assert env.call("position_metrics", CLOSE)["orphan_orders"] == 0
    fill = next(t for t in env.call("fetch_my_trades", "BTC/USDT:USDT") if t["order"] == close_id)
    detected, handled = closed["ts_ms"] - t0, cleaned["ts_ms"] - t0
    record(report, mode, "human_close", detected_ms=detected, stop_cancelled_ms=handled, reason=closed["data"]["reason"], exit_price=closed["data"]["exit_price"], exchange_fill_price=fill["price"])
    assert detected < BOUND[mode] and handled < BOUND[mode] + 2_000
    assert closed["data"]["exit_price"] is not None, "the close must carry the exchange's fill price"
    assert Decimal(str(closed["data"]["exit_price"])) == Decimal(str(fill["price"]))


@pytest.mark.parametrize("mode", MODES)
def test_human_cancels_our_stop(sites: dict[str, Env], report: dict, mode: str):
    """The owner notices the stop is gone and places a new one; the unprotected time is the exchange's measure."""
    env = ready(sites, mode)
    ours = env.protected(CANCEL)
    before = env.call("position_metrics", CANCEL)
    t0 = now_ms()
    env.call("external_cancel_order", ours["stop_order_id"])
    lost = eventually(lambda: env.first("position.stop_lost", position_id=ours["position_id"], since_ms=t0), timeout=30, what=f"{mode}: lost stop noticed")
    placed = eventually(lambda: env.first("position.stop_placed", position_id=ours["position_id"], since_ms=t0), timeout=30, what=f"{mode}: new stop placed")
    after = env.call("position_metrics", CANCEL)
    stops = [o for o in env.orders(CANCEL) if o["reduceOnly"]]
    assert [o["id"] for o in stops] == [placed["data"]["order_id"]] and stops[0]["id"] != ours["stop_order_id"]
    assert after["open"] and env.protected(CANCEL)
    unprotected = after["unprotected_ms"] - before["unprotected_ms"]
    record(report, mode, "human_cancels_stop", detected_ms=lost["ts_ms"] - t0, restored_ms=placed["ts_ms"] - t0, unprotected_ms=unprotected, new_stop_price=placed["data"]["price"])
    assert lost["ts_ms"] - t0 < BOUND[mode] and placed["ts_ms"] - t0 < BOUND[mode] + 2_000
    assert 0 < unprotected < BOUND[mode] + 2_000


@pytest.mark.parametrize("mode", MODES)
def test_human_opens_a_position_it_is_adopted_and_protected(sites: dict[str, Env], report: dict, mode: str):
    env = ready(sites, mode)
    t0 = now_ms()
    env.call("external_open_position", ADOPT, "buy", "1")
    adopted = eventually(lambda: env.first("sync.untracked_adopted", symbol=ADOPT, since_ms=t0), timeout=30, what=f"{mode}: adopted")
    placed = eventually(lambda: env.first("position.stop_placed", position_id=adopted["position_id"], since_ms=t0), timeout=30, what=f"{mode}: adopted position protected")
    stops = env.orders(ADOPT)
    assert len(stops) == 1 and stops[0]["side"] == "sell" and stops[0]["clientOrderId"].startswith(f"tb-{adopted['position_id']}-")
    assert Decimal(str(stops[0]["amount"])) == Decimal(1)
    assert env.protected(ADOPT)["position_id"] == adopted["position_id"]
    assert len(env.events("sync.untracked_adopted", symbol=ADOPT)) == 1  # adopted once
    unprotected = env.call("position_metrics", ADOPT)["unprotected_ms"]
    record(report, mode, "human_opens_position", detected_ms=adopted["ts_ms"] - t0, protected_ms=placed["ts_ms"] - t0, unprotected_ms=unprotected)
    assert adopted["ts_ms"] - t0 < BOUND[mode] and placed["ts_ms"] - t0 < BOUND[mode] + 2_000


@pytest.mark.parametrize("mode", MODES)
def test_order_left_behind_after_a_close_is_cancelled(sites: dict[str, Env], report: dict, mode: str):
    """The human had put a reduce-only stop of their own on our position, then closed the position by
    hand: our owner cleans up its own stop; the human's stop is left on a flat symbol, a zombie."""
    env = ready(sites, mode)
    ours = env.protected(LEFTOVER)
    mark = Decimal(str(env.call("fetch_mark_price", "ADA/USDT:USDT")["markPrice"]))
    theirs = env.call("external_place_order", LEFTOVER, "STOP_MARKET", "sell", ours["quantity"], {"stopPrice": price(LEFTOVER, mark * Decimal("0.9")), "reduceOnly": True})
    t0 = now_ms()
    env.call("external_close_position", LEFTOVER)
    closed = eventually(lambda: env.first("position.closed", position_id=ours["position_id"], since_ms=t0), timeout=30, what=f"{mode}: close recorded")

    def zombie_gone() -> dict[str, Any] | None:
        return next((e for e in env.events("sync.zombie_cancelled", symbol=LEFTOVER, since_ms=t0) if e["data"]["order_id"] == theirs), None)

    cancelled = within(zombie_gone, BOUND[mode] / 1000)
    assert cancelled is not None, f"the human's stop on flat {LEFTOVER} was not cancelled within {BOUND[mode]} ms: {env.orders(LEFTOVER)}"
    assert env.orders(LEFTOVER) == []
    record(report, mode, "order_left_behind", close_detected_ms=closed["ts_ms"] - t0, zombie_cancelled_ms=cancelled["ts_ms"] - t0, why=cancelled["data"]["why"])
    assert cancelled["ts_ms"] - t0 < BOUND[mode]


@pytest.mark.parametrize("mode", MODES)
def test_liquidation_is_recorded(sites: dict[str, Env], report: dict, mode: str):
    """A stop normally closes the position long before its liquidation price. To reach it, the stop is
    cancelled and the mark gaps through the liquidation price *at the same instant* (one atomic step on
    the exchange): a flash crash while the stop was away, which no bot could have prevented."""
    env = ready(sites, mode)
    ours = env.protected(LIQUIDATE)
    pos = env.exchange_position(LIQUIDATE)
    liq = Decimal(str(pos["liquidationPrice"]))
    t0 = now_ms()
    env.call("external_actions", [["external_cancel_order", [ours["stop_order_id"]]], ["set_mark", [LIQUIDATE, price(LIQUIDATE, liq * Decimal("0.98"))]]])
    assert env.exchange_position(LIQUIDATE) is None and env.call("metrics")["liquidations"] >= 1
    closed = eventually(lambda: env.first("position.closed", "position.stop_filled", position_id=ours["position_id"], since_ms=t0), timeout=30, what=f"{mode}: liquidation recorded")
    eventually(lambda: env.positions().get(LIQUIDATE) is None, timeout=10, what=f"{mode}: position no longer open in the bot")
    assert closed["type"] == "position.closed"
    assert env.orders(LIQUIDATE) == []
    trades = [t for t in env.call("fetch_my_trades", "XRP/USDT:USDT") if t["timestamp"] >= t0 - 1000]
    record(report, mode, "liquidation", detected_ms=closed["ts_ms"] - t0, reason=closed["data"]["reason"], exit_price=closed["data"]["exit_price"], liquidation_price=str(liq), exchange_fills=[(t["price"], t["info"].get("clientOrderId")) for t in trades])
    assert closed["ts_ms"] - t0 < BOUND[mode]
    assert closed["data"]["reason"] == "liquidated", closed["data"]
    assert closed["data"]["exit_price"] is not None


def test_hedge_mode_order_on_the_side_without_a_position_is_a_zombie(sites: dict[str, Env], report: dict):
    """Hedge mode: our short is opened and protected with positionSide orders; a human's stop that closes
    the LONG side (where nothing is open) is cancelled as a zombie (wrong position side / index)."""
    env = sites["hedge"]
    try:
        ours = eventually(lambda: env.protected(CANCEL), timeout=40, what="hedge: the short open and protected")
    except AssertionError:
        failed = env.events("position.entry_failed", "position.stop_failed", symbol=CANCEL)
        raise AssertionError(f"the bot cannot trade a hedge-mode paper account: {[e['data'] for e in failed]}") from None
    entry, stop = env.call("fetch_order", ours["entry_order_id"], "ETH/USDT:USDT"), env.call("fetch_order", ours["stop_order_id"], "ETH/USDT:USDT")
    assert (entry["info"]["positionSide"], entry["side"], stop["info"]["positionSide"], stop["side"], stop["status"]) == ("SHORT", "sell", "SHORT", "buy", "open")
    mark = Decimal(str(env.call("fetch_mark_price", "ETH/USDT:USDT")["markPrice"]))
    t0 = now_ms()
    theirs = env.call("external_place_order", CANCEL, "STOP_MARKET", "sell", ours["quantity"], {"stopPrice": price(CANCEL, mark * Decimal("0.9")), "positionSide": "LONG"})

    def cancelled() -> dict[str, Any] | None:
        return next((e for e in env.events("sync.zombie_cancelled", symbol=CANCEL, since_ms=t0) if e["data"]["order_id"] == theirs), None)

    found = eventually(cancelled, timeout=POLL_BOUND_MS / 1000 + 5, what="hedge: the wrong-side order cancelled as a zombie")
    record(report, "hedge", "wrong_position_side", zombie_cancelled_ms=found["ts_ms"] - t0, why=found["data"]["why"], backstop_read_secs=POLL_INTERVAL_SECS)
    assert "position index" in found["data"]["why"] and "long" in found["data"]["why"]
    assert [o["id"] for o in env.orders(CANCEL)] == [ours["stop_order_id"]]  # ours untouched
    assert env.protected(CANCEL)
    assert found["ts_ms"] - t0 < POLL_BOUND_MS

    # The guard checks every read: a hedge-mode stop (positionSide, no reduceOnly flag) is protection.
    t1 = now_ms()
    eventually(lambda: len(env.events("sync.reconciled", since_ms=t1)) >= 2, timeout=POLL_BOUND_MS / 1000 + 5, what="hedge: two more reads checked by the guard")
    complaints = env.events("guard.unprotected", symbol=CANCEL, since_ms=ours["opened_ts_ms"] + 1000)
    assert not complaints, f"the guard took our hedge-mode stop for no protection: {[c['data'] for c in complaints]}"
