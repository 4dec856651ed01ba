"""``tradebot replay --html FILE``: one self-contained page, the equity curves and a chart per position.

Drawn here as inline SVG (no script, no external file or font), from the
replay's own figures: per configuration its equity curve (starting balance
plus realised net PnL, stepped at each fill), and per position the replayed
price over its life with the entry, the stop's levels and the exit. The
comparison table is the same one ``tradebot replay`` prints.
"""

from __future__ import annotations

import datetime as dt
import html
from decimal import Decimal
from typing import Any

from tradebot.replay_report import WARNING, best, table

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
W, H, PAD = 760, 220, 44


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%m-%d %H:%M")


class _Scale:
    def __init__(self, xs: list[int], ys: list[Decimal]) -> None:
        self.x0, self.x1 = min(xs), max(xs)
        self.y0, self.y1 = min(ys), max(ys)
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y0, self.y1 = self.y0 - 1, self.y1 + 1

    def x(self, v: int) -> str:
        return f"{PAD + (v - self.x0) * (W - 2 * PAD) / (self.x1 - self.x0):.1f}"

    def y(self, v: Decimal) -> str:
        return f"{H - PAD + float(self.y0 - v) * (H - 2 * PAD) / float(self.y1 - self.y0):.1f}"


def _axes(sc: _Scale) -> list[str]:
    return [
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<text x="{PAD}" y="{H - PAD + 16}" font-size="11">{_when(sc.x0)}</text>',
        f'<text x="{W - PAD}" y="{H - PAD + 16}" font-size="11" text-anchor="end">{_when(sc.x1)}</text>',
        f'<text x="{PAD - 4}" y="{PAD + 4}" font-size="11" text-anchor="end">{sc.y1.normalize():f}</text>',
        f'<text x="{PAD - 4}" y="{H - PAD}" font-size="11" text-anchor="end">{sc.y0.normalize():f}</text>',
    ]


def _steps(sc: _Scale, points: list[tuple[int, Decimal]], end_ms: int) -> str:
    """A stepped line: the value holds until the next point (and to ``end_ms`` after the last)."""
    out: list[str] = []
    for i, (ts, v) in enumerate(points):
        nxt = points[i + 1][0] if i + 1 < len(points) else end_ms
        out.append(f"{sc.x(ts)},{sc.y(v)} {sc.x(nxt)},{sc.y(v)}")
    return " ".join(out)


def equity_svg(results: list[Any]) -> str:
    """One stepped polyline per configuration (class ``equity``, ``data-label`` its label)."""
    curves = [[(int(ts), Decimal(v)) for ts, v in r.report["equity_curve"]] for r in results]
    end_ms = max(r.report["window"]["to_ms"] for r in results)
    sc = _Scale([ts for c in curves for ts, _ in c] + [end_ms], [v for c in curves for _, v in c])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="equity curves">', *_axes(sc)]
    for i, (r, c) in enumerate(zip(results, curves, strict=True)):
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline class="equity" data-label="{html.escape(r.label)}" fill="none" stroke="{colour}" stroke-width="1.5" points="{_steps(sc, c, end_ms)}"/>')
        parts.append(f'<text x="{W - PAD + 4}" y="{PAD + 14 * i}" font-size="11" fill="{colour}">{html.escape(r.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def position_svg(position: dict[str, Any], marks: list[list[Any]], end_ms: int) -> str:
    """The price over the position's life (``price``), its stop levels (``stop``, stepped) and entry/exit marks."""
    path = [(int(ts), Decimal(px)) for ts, px in marks]
    stops = [(int(ts), Decimal(px)) for ts, px in position["stops"] if px not in (None, "None")]
    t1 = position["exit_ms"] or end_ms
    ys = [v for _, v in path] + [v for _, v in stops] + [Decimal(x) for x in (position["entry_price"], position["exit_price"]) if x]
    xs = [position["entry_ms"], t1] + [ts for ts, _ in path]
    if not ys:
        return "<p>(no prices)</p>"
    sc = _Scale(xs, ys)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="position chart">', *_axes(sc)]
    if path:
        parts.append(f'<polyline class="price" fill="none" stroke="#444" stroke-width="1" points="{" ".join(f"{sc.x(ts)},{sc.y(v)}" for ts, v in path)}"/>')
    if stops:
        parts.append(f'<polyline class="stop" fill="none" stroke="#d62728" stroke-dasharray="4 2" points="{_steps(sc, stops, t1)}"/>')
    if position["entry_price"]:
        parts.append(f'<circle class="entry" cx="{sc.x(position["entry_ms"])}" cy="{sc.y(Decimal(position["entry_price"]))}" r="4" fill="#2ca02c"/>')
    if position["exit_price"] and position["exit_ms"]:
        parts.append(f'<circle class="exit" cx="{sc.x(position["exit_ms"])}" cy="{sc.y(Decimal(position["exit_price"]))}" r="4" fill="#d62728"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def page(results: list[Any], objective: str = "pnl") -> str:
    """The whole report: the table, the equity curves, then per configuration a chart per position."""
    top = best(results, objective)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>tradebot replay</title>',
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em} pre{background:#f6f6f6;padding:1em;overflow-x:auto} h3{margin-bottom:.2em}</style>",
        "</head><body>",
        "<h1>tradebot replay</h1>",
        f"<p>{html.escape(WARNING)}.</p>" if top is not None else "",
        f"<pre>{html.escape(table(results, objective))}</pre>",
        "<h2>Equity (starting balance + realised net PnL)</h2>",
        equity_svg(results),
    ]
    for r in results:
        end_ms = r.report["window"]["to_ms"]
        out.append(f'<section class="run" data-label="{html.escape(r.label)}"><h2>{html.escape(r.label)}: positions</h2>')
        for p, marks in zip(r.report["positions"], r.marks or [[] for _ in r.report["positions"]], strict=True):
            out.append(f"<h3>{html.escape(str(p['symbol']))} {html.escape(str(p['side']))}: {html.escape(p['exit'])}, net {html.escape(p['net_pnl'])}</h3>")
            out.append(position_svg(p, marks, end_ms))
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(x for x in out if x) + "\n"
