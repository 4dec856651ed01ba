"""tradebot replay: the real tree on the virtual clock, a hand-computed scenario, determinism, the sweep and the HTML report."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tradebot.replay import history_window, load_signal_frames, run_all, run_one, variants
from tradebot.replay_report import to_json

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC, on a 15-minute wave
MIN = 60_000


def write_history(path: Path, closes: list[tuple[str, str, str, str]]) -> Path:
    """A CSV in the documented user format: one 1-minute candle a line, UTC open time."""
    lines = ["timestamp,open,high,low,close,volume"]
    for i, (o, h, low, c) in enumerate(closes):
        minute = i
        lines.append(f"2024-01-01 {minute // 60:02d}:{minute % 60:02d}:00,{o},{h},{low},{c},1")
    path.write_text("\n".join(lines) + "\n")
    return path


def one_long_btc(path: Path) -> Path:
    path.write_text('{"wave_offset_min": 0, "signals": [{"symbol": "BTCUSDT", "action": "buy", "score_week": 0.9, "score_month": 0.9}]}\n')
    return path


FLAT, UP = ("40000", "40000", "40000", "40000"), ("41000", "41000", "41000", "41000")
#: 10 flat minutes at 40000, a jump to 41000 held for 5 minutes, one falling candle to 40500, then flat.
SCENARIO = [FLAT] * 10 + [("40000", "41000", "40000", "41000")] + [UP] * 5 + [("41000", "41000", "40500", "40500")] + [("40500",) * 4] * 13


def test_a_hand_computed_long_exits_on_its_trailing_stop_to_the_last_decimal(tmp_path):
    """One long BTC, 100 USDT margin x 10 leverage, fee 0.05 % (taker), no slippage, trailing 1.5 % / 0.5 %.

    Ticks: each 1-minute candle is four marks 15 s apart (open, low, high, close when it rises; open,
    high, low, close when it falls), engine time = the candle's own time.

    - The signal (wave 2024-01-01 00:00) reaches the intake at 00:00:01; the entry is sized on the mark
      40000: qty = 100 x 10 / 40000 = 0.025 (step 0.001), bought at the mark 40000 (slippage 0).
      Entry fee = 0.025 x 40000 x 0.0005 = 0.5.
    - Initial stop 2 % below: 39200.0. Minute 10 rises to 41000: profit 2.5 % >= 1.5 %, trailing
      active with best 41000; wanted stop 41000 x (1 - 0.005) = 40795 (tick 0.1: 40795.0), 4.07 % over
      the live stop (past the 1 % emergency distance): moved at once. Nothing beats 41000 afterwards.
    - Minute 16 falls 41000 -> 41000 -> 40500: the mark 40500 crosses the stop 40795.0 and the stop
      fills as a market order at that mark (a gap: the mark-price stop of the venue, no order book):
      exit price 40500. Realised = (40500 - 40000) x 0.025 = 12.5; exit fee = 0.025 x 40500 x 0.0005
      = 0.50625. Net = 12.5 - 0.5 - 0.50625 = 11.49375; fees 1.00625.
    """
    history = write_history(tmp_path / "btc.csv", SCENARIO)
    frames = load_signal_frames(one_long_btc(tmp_path / "sig.jsonl"), T0)
    v = variants([], ["trailing.activation_percent=1.5", "trailing.callback_percent=0.5"])[0]
    r = run_one(v, frames, T0, T0 + 30 * MIN, base_dir=ROOT, history=str(history)).report
    assert r["positions_opened"] == 1 and r["positions_open_at_end"] == 0
    (p,) = r["positions"]
    assert (p["symbol"], p["side"], p["entry_price"], p["exit_price"]) == ("BTCUSDT", "long", "40000.0", "40500.0")
    assert r["exits_by_reason"] == {"trailing": 1}
    assert [Decimal(px) for _ts, px in p["stops"]] == [Decimal("39200.0"), Decimal("40795.0")]
    assert Decimal(r["fees"]) == Decimal("1.00625")
    assert Decimal(p["net_pnl"]) == Decimal(r["realised_pnl_net"]) == Decimal("11.49375")
    assert r["win_rate_percent"] == "100.0" and r["liquidations"] == 0 and r["unprotected_ms"] == 0
    assert [Decimal(eq) for _ts, eq in r["equity_curve"]] == [Decimal(10000), Decimal("9999.5"), Decimal("10011.49375")]
    assert Decimal(r["max_drawdown"]) == Decimal("0.5")  # the entry fee, before the exit


def test_a_sweep_gives_one_column_per_value_and_the_values_act(tmp_path):
    """callback 0.3 % stops at 41000 x 0.997 = 40877.0, 0.8 % at 40672.0: both still cross at 40500, same PnL;
    a 3 % callback (stop 39770.0, under 40500) is still open at the end: the settings reach the bot."""
    history = write_history(tmp_path / "btc.csv", SCENARIO)
    frames = load_signal_frames(one_long_btc(tmp_path / "sig.jsonl"), T0)
    runs = variants([], ["trailing.callback_percent=0.3,0.8,3"])
    assert [v.label for v in runs] == ["trailing.callback_percent=0.3", "trailing.callback_percent=0.8", "trailing.callback_percent=3"]
    results = run_all(runs, frames, T0, T0 + 30 * MIN, base_dir=ROOT, history=str(history), jobs=2)
    stops = [[px for _ts, px in r.report["positions"][0]["stops"]] for r in results]
    assert stops == [["39200.0", "40877.0"], ["39200.0", "40672.0"], ["39200.0", "39770.0"]]
    assert [r.report["positions_open_at_end"] for r in results] == [0, 0, 1]
    body = json.loads(to_json(results))
    assert [run["label"] for run in body["runs"]] == [v.label for v in runs]
    assert body["best"] == "trailing.callback_percent=0.3"  # the first of the two that gained, by PnL


class _Svg(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_command_prints_the_same_bytes_twice_and_writes_a_self_contained_html_report(tmp_path):
    history = write_history(tmp_path / "btc.csv", SCENARIO)
    signals = one_long_btc(tmp_path / "sig.jsonl")
    html_file = tmp_path / "report.html"
    cmd = [sys.executable, "-m", "tradebot", "replay", "--signals", str(signals), "--history", str(history), "--from", str(T0), "--to", str(T0 + 30 * MIN),
           "--set", "trailing.callback_percent=0.3,3", "--json", "--html", str(html_file)]
    raw = [subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT, timeout=300).stdout for _ in range(2)]
    assert raw[0] == raw[1]  # two processes, the same bytes (request counts included)
    body = json.loads(raw[0])
    assert [r["report"]["positions_open_at_end"] for r in body["runs"]] == [0, 1]
    page = html_file.read_text()
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page
    parser = _Svg()
    parser.feed(page)
    curves = [a["data-label"] for t, a in parser.tags if t == "polyline" and a.get("class") == "equity"]
    assert curves == ["trailing.callback_percent=0.3", "trailing.callback_percent=3"]
    assert sum(1 for t, a in parser.tags if t == "polyline" and a.get("class") == "price") == 2  # one position per run
    assert sum(1 for t, a in parser.tags if t == "circle" and a.get("class") == "exit") == 1  # only the first closed


def test_two_replays_of_the_demo_waves_print_byte_identical_reports():
    """Seven positions opened at the same instant on one hour of BTC-month history, replayed twice in this
    process: the JSON and the printed table are the same bytes, requests per position-hour included
    (timers due together fire by owner, position ids are seeded; before, the order the actors' threads
    happened to set their timers in decided which read came first, and the request count moved)."""
    from tradebot.replay_report import table

    t0, _ = history_window()
    frames = load_signal_frames(ROOT / "demo" / "waves.jsonl", t0)
    v = variants([], ["trailing.callback_percent=0.5"])[0]
    a = run_one(v, frames, t0, t0 + 3_600_000, base_dir=ROOT)
    b = run_one(v, frames, t0, t0 + 3_600_000, base_dir=ROOT)
    assert a.report["positions_opened"] > 1 and Decimal(a.report["requests_per_position_hour"]) > 0
    assert to_json([a]).encode() == to_json([b]).encode()
    assert table([a]).encode() == table([b]).encode()
    assert a.marks == b.marks


def _outcomes(report: dict) -> dict:
    """What the bot did, without the request figures: positions (entries, stops, exits, PnL), exits, equity."""
    keep = ("positions_opened", "positions_open_at_end", "exits_by_reason", "take_profit_fills", "realised_pnl_net", "fees", "positions", "equity_curve", "liquidations")
    return {k: report[k] for k in keep}


def test_transient_faults_change_only_the_requests_and_a_faulted_replay_repeats_itself():
    """The demo waves over three hours of the BTC month, faults off and with the transient profile (network
    errors, 503s and timeouts raised before the call runs: retried, never executed). Retries happen at the same
    virtual instant (the executor's backoff is a wall-clock wait), so the bot opens the same positions at the
    same marks, moves the same stops and exits the same way; only the requests differ. The faulted replay
    twice: the same bytes (the draws are keyed by method, symbol and virtual instant)."""
    from tradebot.replay_report import table

    t0, _ = history_window()
    frames = load_signal_frames(ROOT / "demo" / "waves.jsonl", t0)
    off, on = variants([], [], ["off", "transient"])
    with pytest.raises(ValueError, match="not a profile"):
        variants([], [], ["sometimes"])
    assert (off.label, on.label, off.faults, on.faults) == ("faults=off", "faults=transient", "off", "transient")
    a = run_one(off, frames, t0, t0 + 3 * 3_600_000, base_dir=ROOT)
    b = run_one(on, frames, t0, t0 + 3 * 3_600_000, base_dir=ROOT)
    b2 = run_one(on, frames, t0, t0 + 3 * 3_600_000, base_dir=ROOT)
    assert a.report["positions_opened"] > 1 and sum(a.report["exits_by_reason"].values()) > 0
    assert a.report["requests_failed"] == 0 and b.report["requests_failed"] > 0
    assert b.report["requests"] > a.report["requests"]  # each failed request was retried
    assert _outcomes(b.report) == _outcomes(a.report)
    assert to_json([b]).encode() == to_json([b2]).encode()
    shown = table([a, b])
    assert shown.splitlines()[2].split() == ["faults", "off", "transient"]


TRADES_FILE = ROOT.parent / "shared" / "data" / "more-prices" / "btcusdt-trades-2021-01-08.csv"


def test_trade_ticks_become_one_second_candles_and_the_paper_exchange_replays_their_marks(tmp_path):
    """Hand-written trades: second 0 has three (two in the same ms), second 1 none, second 2 one.
    Second 0 is the candle 100.05 / 100.30 / 99.90 / 100.10 (first, highest, lowest, last), closed up:
    marks open, low, high, close 250 ms apart; second 1 is flat at the close; second 2 a single trade."""
    from adapters.markets import Markets
    from adapters.paper.engine import PaperEngine
    from adapters.paper.exchange import MARKET_FILES, PaperExchange
    from adapters.paper.prices import DATA_DIR, PriceReplay, load_candles
    from core.clock import VirtualClock

    f = tmp_path / "trades.csv"
    f.write_text("timestamp_ms,trade_id,price,quantity,buyer_maker\n"
                 f"{T0 + 10},1,100.05,0.1,true\n{T0 + 400},2,100.30,0.2,false\n{T0 + 400},3,99.90,0.1,true\n{T0 + 990},4,100.10,0.5,false\n"
                 f"{T0 + 2500},5,101.00,0.1,false\n")
    assert load_candles(f) == (T0, 1000, (("100.05", "100.30", "99.90", "100.10"), ("100.10",) * 4, ("101.00",) * 4))
    markets = Markets.from_file(DATA_DIR.parent / "markets" / MARKET_FILES["binance"])
    replay = PriceReplay(markets, start_ms=T0, symbols=["BTC/USDT:USDT"], real_histories={"BTC": str(f)})
    assert [(ts - T0, str(px)) for ts, _s, px in replay.ticks_between(T0 - 1, T0 + 2750)] == [
        (0, "100.0"), (250, "99.9"), (500, "100.3"), (750, "100.1"),  # BTC's tick is 0.1: 100.05 -> 100.0 (half to even)
        (1000, "100.1"), (1250, "100.1"), (1500, "100.1"), (1750, "100.1"), (2000, "101.0"), (2250, "101.0"), (2500, "101.0"), (2750, "101.0")]
    clock = VirtualClock(start_ms=T0)
    engine = PaperEngine(markets, flavour="binance", initial_balance=Decimal(10_000))
    seen: list[tuple[int, str]] = []
    on_mark = engine.on_mark
    engine.on_mark = lambda sym, px, ts: (seen.append((ts - T0, str(px))), on_mark(sym, px, ts))[1]  # type: ignore[method-assign]
    PaperExchange(engine, clock, price_replay=replay, tick_interval_ms=1000).start()
    clock.step_to(T0 + 2000)
    assert seen == [(0, "100.0"), (250, "99.9"), (500, "100.3"), (750, "100.1"), (1000, "100.1"), (1250, "100.1"), (1500, "100.1"), (1750, "100.1"), (2000, "101.0")]
    assert engine.marks["BTC/USDT:USDT"] == Decimal("101.0")
    clock.close()


def test_an_unknown_csv_header_is_refused_naming_the_expected_columns(tmp_path):
    from adapters.paper.prices import load_candles

    f = tmp_path / "ticks.csv"
    f.write_text("time,last,size\n1,2,3\n")
    with pytest.raises(ValueError, match=r"expected candles \(timestamp or timestamp_ms, open, high, low, close.*or trades \(timestamp_ms, price"):
        load_candles(f)
    out = subprocess.run([sys.executable, "-m", "tradebot", "replay", "--signals", str(ROOT / "demo" / "waves.jsonl"), "--history", str(f)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "unknown CSV header" in out.stderr and "timestamp_ms, price" in out.stderr


def test_a_replay_over_the_real_trade_ticks(tmp_path):
    """The 46 s of Binance BTCUSDT trades (2021-01-08 00:00:00.278 on): one long BTC at the first wave
    (00:00, the file's first second), told to the intake at 00:00:01 and bought at the mark then: the
    first second's open, the first trade 39432.48 on BTC's 0.1 tick (39432.5). Its initial stop 2 % below
    (38643.8) is never reached (the trades stay within 39430.30-39550.00): open at the end."""
    from tradebot.replay import history_window

    h0, h1 = history_window(str(TRADES_FILE))
    assert (h0, h1) == (1_610_064_000_000, 1_610_064_047_000)
    frames = load_signal_frames(one_long_btc(tmp_path / "sig.jsonl"), h0)
    r = run_one(variants([], [])[0], frames, h0, h1, base_dir=ROOT, history=str(TRADES_FILE))
    rep = r.report
    assert rep["positions_opened"] == 1 and rep["positions_open_at_end"] == 1
    (p,) = rep["positions"]
    assert (p["symbol"], p["side"], p["entry_price"]) == ("BTCUSDT", "long", "39432.5")
    assert [px for _ts, px in p["stops"]] == ["38643.8"]
    marks = [Decimal(px) for _ts, px in r.marks[0]]  # the path charted: four marks a second from the entry on
    assert len(marks) > 150 and Decimal("39430.3") <= min(marks) and max(marks) <= Decimal("39550.0") and len(set(marks)) > 20
