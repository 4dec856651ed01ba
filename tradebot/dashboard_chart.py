"""A position's price chart as inline SVG, drawn on the server (pure; no script, no library).

Series (what the position page also embeds as JSON, so a test can read them):
candles (``[ts, open, high, low, close]`` from the venue's ``fetch_ohlcv``),
marks (``[ts, price]`` the bot saw), the stop as a step line (``[ts, price,
reason]`` per level: placed, each move), the entry, take-profit levels, fills
and the exit as markers, and markers where the guard or sync acted. Nothing is
interpolated or made up: a series the bot has no data for is drawn empty.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from typing import Any

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 900, 340, 70, 20, 16, 30


def _f(v: Any) -> float:
    return float(Decimal(str(v)))


def chart_svg(series: dict[str, Any], start_ms: int, end_ms: int) -> str:
    """The SVG for ``series`` over ``[start_ms, end_ms]`` (``end_ms`` > ``start_ms``)."""
    prices: list[float] = []
    for c in series["candles"]:
        prices += [_f(c[2]), _f(c[3])]
    prices += [_f(m[1]) for m in series["marks"]]
    prices += [_f(s[1]) for s in series["stops"]]
    prices += [_f(t["price"]) for t in series["take_profits"]]
    prices += [_f(p["price"]) for p in series["markers"] if p.get("price") is not None]
    if series.get("entry") is not None:
        prices.append(_f(series["entry"]["price"]))
    if not prices:
        return f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><text x="20" y="40">no prices recorded for this position</text></svg>'
    lo, hi = min(prices), max(prices)
    span = (hi - lo) or max(abs(hi) * 0.001, 1e-9)
    lo, hi = lo - span * 0.08, hi + span * 0.08
    t0, t1 = start_ms, max(end_ms, start_ms + 1)

    def x(t: int) -> float:
        return PAD_L + (min(max(t, t0), t1) - t0) / (t1 - t0) * (W - PAD_L - PAD_R)

    def y(p: Any) -> float:
        return PAD_T + (hi - _f(p)) / (hi - lo) * (H - PAD_T - PAD_B)

    out = [f'<svg class="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="price chart">']
    out.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" fill="#fbfbfb" stroke="#ccc"/>')
    for i in range(5):  # price grid
        p = lo + (hi - lo) * i / 4
        yy = y(p)
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/><text class="axis" x="{PAD_L - 6}" y="{yy + 4:.1f}" text-anchor="end">{p:.6g}</text>')
    width = max(1.0, (W - PAD_L - PAD_R) / max(len(series["candles"]), 1) * 0.6)
    for ts, o, h, low, c in series["candles"]:
        color = "#26a269" if _f(c) >= _f(o) else "#c01c28"
        xx = x(ts)
        top, bottom = min(y(o), y(c)), max(y(o), y(c))
        out.append(f'<g class="candle"><line x1="{xx:.1f}" x2="{xx:.1f}" y1="{y(h):.1f}" y2="{y(low):.1f}" stroke="{color}"/>'
                   f'<rect x="{xx - width / 2:.1f}" y="{top:.1f}" width="{width:.1f}" height="{max(bottom - top, 1):.1f}" fill="{color}"/></g>')
    if series["marks"]:
        pts = " ".join(f"{x(t):.1f},{y(p):.1f}" for t, p in series["marks"])
        out.append(f'<polyline class="marks" points="{pts}" fill="none" stroke="#1c71d8" stroke-width="1.5"/>')
    if series["stops"]:
        path, end = [], series.get("stop_end_ms") or t1
        for i, (ts, p, _reason) in enumerate(series["stops"]):
            nxt = series["stops"][i + 1][0] if i + 1 < len(series["stops"]) else end
            path.append(f"{'M' if i == 0 else 'L'}{x(ts):.1f},{y(p):.1f} L{x(nxt):.1f},{y(p):.1f}")
        out.append(f'<path class="stop-steps" d="{" ".join(path)}" fill="none" stroke="#e66100" stroke-width="2"/>')
        for ts, p, reason in series["stops"]:
            out.append(f'<circle class="stop-level" cx="{x(ts):.1f}" cy="{y(p):.1f}" r="3" fill="#e66100"><title>stop {escape(str(p))} ({escape(str(reason))})</title></circle>')
    if series.get("entry") is not None:
        e = series["entry"]
        out.append(f'<line class="entry" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(e["price"]):.1f}" y2="{y(e["price"]):.1f}" stroke="#613583" stroke-dasharray="6 4"/>'
                   f'<text class="label" x="{W - PAD_R - 4}" y="{y(e["price"]) - 4:.1f}" text-anchor="end">entry {escape(str(e["price"]))}</text>')
    for tp in series["take_profits"]:
        out.append(f'<line class="tp" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(tp["price"]):.1f}" y2="{y(tp["price"]):.1f}" stroke="#26a269" stroke-dasharray="2 4"/>'
                   f'<text class="label" x="{PAD_L + 4}" y="{y(tp["price"]) - 4:.1f}">TP{escape(str(tp.get("level")))} {escape(str(tp["price"]))}{" filled" if tp.get("filled") else ""}</text>')
    for m in series["markers"]:
        yy = y(m["price"]) if m.get("price") is not None else PAD_T + 8
        out.append(f'<g class="marker marker-{escape(m["kind"])}"><path d="M{x(m["ts"]):.1f},{yy - 6:.1f} l5,6 l-5,6 l-5,-6 z" fill="{_COLORS.get(m["kind"], "#444")}"/>'
                   f'<title>{escape(m["label"])}</title></g>')
    out.append(f'<text class="axis" x="{PAD_L}" y="{H - 8}">{escape(_clock(t0))}</text><text class="axis" x="{W - PAD_R}" y="{H - 8}" text-anchor="end">{escape(_clock(t1))}</text>')
    out.append("</svg>")
    return "".join(out)


_COLORS = {"fill": "#613583", "exit": "#000", "tp": "#26a269", "guard": "#c01c28", "sync": "#a51d2d"}


def _clock(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def position_series(events: list[Any], row: dict[str, Any], candles: list[list[Any]], marks: list[tuple[int, Decimal]]) -> dict[str, Any]:
    """The chart's series from the position's stored events, its projection row, candles and marks."""
    own = row.get("actor_name")
    stops: list[list[Any]] = []
    markers: list[dict[str, Any]] = []
    entry = None
    stop_end = None
    for e in sorted(events, key=lambda e: (e.ts_ms, e.id or 0)):
        d = e.data
        if e.type in ("position.stop_placed", "position.stop_moved") and d.get("price") is not None:
            if not stops or str(stops[-1][1]) != str(d["price"]):
                stops.append([e.ts_ms, str(d["price"]), d.get("reason") or d.get("kind") or ""])
        elif e.type in ("position.entry_filled", "position.adopted"):
            price = d.get("price") if e.type == "position.entry_filled" else d.get("entry_price")
            if price is not None:
                entry = {"ts": e.ts_ms, "price": str(price)}
                markers.append({"ts": e.ts_ms, "price": str(price), "kind": "fill", "label": f"entry {d.get('qty')} at {price}"})
        elif e.type == "position.tp_filled":
            markers.append({"ts": e.ts_ms, "price": str(d.get("price")), "kind": "tp", "label": f"take-profit {d.get('qty')} at {d.get('price')}"})
        elif e.type in ("position.closed", "position.stop_filled", "position.aged_exit_filled") and stop_end is None:
            stop_end = e.ts_ms
            price = d.get("exit_price") or d.get("price")
            markers.append({"ts": e.ts_ms, "price": None if price is None else str(price), "kind": "exit", "label": f"exit ({d.get('reason')}) at {price}"})
        elif e.actor and e.actor.split(":")[0] in ("guard", "sync") and e.actor != own:
            markers.append({"ts": e.ts_ms, "price": None, "kind": e.actor.split(":")[0], "label": f"{e.actor}: {e.type}"})
    tps = [{"level": tp.get("level"), "price": str(tp.get("price")), "filled": bool(tp.get("filled"))} for tp in row.get("tps") or ()]
    return {
        "candles": [[int(c[0]), *(str(v) for v in c[1:5])] for c in candles],
        "marks": [[t, str(p)] for t, p in marks],
        "stops": stops,
        "stop_end_ms": stop_end,
        "entry": entry,
        "take_profits": tps,
        "markers": markers,
    }
