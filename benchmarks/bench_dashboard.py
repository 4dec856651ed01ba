"""The dashboard's rendering cost, in one run: the live positions table (trader figures + markup, what
each push costs) for 10, 100 and 1,000 open positions, and one position page's SVG chart (500 candles,
2,000 marks, 20 stop steps). Compare per-position cost across sizes (it should stay flat)."""

from __future__ import annotations

import time
from decimal import Decimal

from actors.position_view import trader_row
from benchmarks._util import row
from tradebot import dashboard_pages as pages
from tradebot.dashboard_chart import chart_svg


def _rows(n: int) -> list[dict]:
    return [
        {"position_id": f"{i:010x}", "symbol": f"C{i}USDT", "side": "long" if i % 2 else "short", "state": "protected", "is_open": True,
         "entry_price": "40000.0", "quantity": "0.025", "stop_price": "39200.0" if i % 2 else "40800.0", "stop_reason": "trailing" if i % 3 else "initial",
         "opened_ts_ms": 0, "tps": [{"level": 1, "price": "40400.0", "qty": "0.012", "order_id": "1", "filled": False}]}
        for i in range(n)
    ]


def _table_ms(n: int, repeat: int) -> float:
    rows = _rows(n)
    inc = lambda _s: (Decimal("0.1"), Decimal("0.001"))  # noqa: E731
    started = time.perf_counter()
    for _ in range(repeat):
        pages.position_rows([trader_row(r, (1, Decimal("40100.0")), 3_600_000) for r in rows], inc)
    return (time.perf_counter() - started) * 1000 / repeat


def run() -> None:
    print("dashboard: rendering (pure: trader figures, markup, chart)")
    base = None
    for n, repeat in ((10, 200), (100, 50), (1000, 5)):
        ms = _table_ms(n, repeat)
        per = ms * 1000 / n
        base = base or per
        row(f"live positions table, {n:,} positions", f"{ms:,.2f} ms per push, {per:,.1f} us per position ({per / base:.2f}x the 10-position cost)")
    candles = [[i * 60_000, "40000", "40100", "39900", "40050"] for i in range(500)]
    marks = [[i * 15_000, "40010"] for i in range(2000)]
    stops = [[i * 1_500_000, str(39200 + i * 10), "trailing"] for i in range(20)]
    series = {"candles": candles, "marks": marks, "stops": stops, "stop_end_ms": None, "entry": {"ts": 0, "price": "40000"}, "take_profits": [], "markers": []}
    started = time.perf_counter()
    for _ in range(10):
        svg = chart_svg(series, 0, 30_000_000)
    row("position chart (500 candles, 2,000 marks, 20 steps)", f"{(time.perf_counter() - started) * 100:,.1f} ms, {len(svg) / 1024:,.0f} KiB of SVG")
