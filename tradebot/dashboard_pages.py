"""The dashboard's HTML (pure: data in, markup out). Everything shown is escaped here.

Numbers go through :mod:`tradebot.numbers` (prices on the market's tick,
quantities on its step, money with two decimals, percentages with two), the
same printer the CLI uses. Cells carry ``data-field`` and rows
``data-position-id`` so a browser test (or a script) can read them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import Any
from urllib.parse import quote

from tradebot import numbers as num

Increments = Callable[[str | None], tuple[Any, Any]]

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fff}
nav{background:#241f31;padding:8px 16px}nav a{color:#fff;margin-right:16px;text-decoration:none}
main{padding:12px 16px}table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:right;white-space:nowrap}th{background:#f6f5f4}
td.t,th.t{text-align:left}.banner{padding:8px 12px;border-radius:4px;margin-bottom:8px}
.ok{background:#e6f4ea;color:#1e4620}.bad{background:#fce8e6;color:#7a1c12}.neg{color:#c01c28}.pos{color:#26a269}
.muted{color:#777}.chart text{font-size:11px;fill:#555}form input,form select{margin-right:8px}
"""

LIVE_JS = """
(function(){
  var src = new EventSource('/events');
  src.addEventListener('positions', function(ev){
    var d = JSON.parse(ev.data);
    document.getElementById('positions-body').innerHTML = d.rows;
    document.getElementById('banner').outerHTML = d.banner;
    document.getElementById('alerts').innerHTML = d.alerts;
    document.body.setAttribute('data-updates', String(Number(document.body.getAttribute('data-updates') || 0) + 1));
  });
  src.onopen = function(){ document.body.setAttribute('data-live', 'open'); };
})();
"""


def page(title: str, body: str, script: str = "") -> str:
    js = f"<script>{script}</script>" if script else ""
    return (
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)} · tradebot</title><style>{CSS}</style></head>"
        f"<body><nav><a href=\"/\">Positions</a><a href=\"/history\">History</a><a href=\"/health\">/health</a></nav><main>{body}</main>{js}</body></html>"
    )


def banner(status: dict[str, Any]) -> str:
    if status.get("healthy"):
        intake = status.get("intake") or {}
        note = "intake open" if intake.get("open") else "intake closed"
        return f'<div id="banner" class="banner ok" data-healthy="true">healthy · {escape(note)} · up {escape(num.duration(int((status.get("uptime_s") or 0) * 1000)))}</div>'
    problems = "".join(f"<li>{escape(str(p))}</li>" for p in status.get("problems") or ())
    return f'<div id="banner" class="banner bad" data-healthy="false">NOT HEALTHY<ul>{problems}</ul></div>'


def _signed(value: Any, text: str) -> str:
    d = num.to_decimal(value)
    cls = "" if d is None or d == 0 else ("pos" if d > 0 else "neg")
    return f'<span class="{cls}">{escape(text)}</span>'


def _muted(missing: int) -> str:
    return ' class="muted"' if missing else ""


def _quote_ccy(row: dict[str, Any]) -> str:
    symbol = str(row.get("symbol") or "")
    return "USDT" if not symbol.endswith("USDC") else "USDC"


ACTIONS_JS = """
(function(){
  function say(text, ok){ var el = document.getElementById('action-result'); el.textContent = text; el.className = ok ? 'ok banner' : 'bad banner'; }
  document.addEventListener('click', function(ev){
    var b = ev.target.closest('button[data-action]');
    if (!b) return;
    var what = b.getAttribute('data-confirm');
    if (what && !window.confirm(what)) return;
    b.disabled = true;
    fetch(b.getAttribute('data-action'), {method: 'POST', headers: {'X-Tradebot-Action': '1'}, credentials: 'same-origin'})
      .then(function(r){ return r.json().then(function(d){ return [r.ok, d]; }); })
      .then(function(x){
        var d = x[1];
        say(x[0] ? (d.command + ': ' + JSON.stringify(d.result)) : ('refused: ' + d.error), x[0]);
        document.body.setAttribute('data-last-action', JSON.stringify(d));
      })
      .catch(function(e){ say('failed: ' + e, false); })
      .finally(function(){ b.disabled = false; });
  });
})();
"""


def position_cells(r: dict[str, Any], inc: Increments, *, actions: bool = False) -> str:
    tick, step = inc(r.get("symbol"))
    ccy = _quote_ccy(r)
    pid = str(r.get("position_id"))
    tps = ", ".join(f"TP{tp['level']} {num.price(tp['price'], tick)}{' filled' if tp['filled'] else ''}" for tp in r.get("take_profits") or ()) or "-"
    trailing = r.get("trailing") or "off"
    if trailing == "active" and r.get("trail_best"):
        trailing += f" (best {num.price(r['trail_best'], tick)})"
    age = "-" if r.get("age_ms") is None else num.duration(r["age_ms"])
    if r.get("aged_phase"):
        age += f" ({r['aged_phase']})"
    upnl = "-" if r.get("unrealised_pnl") is None else num.money(r["unrealised_pnl"], ccy)
    upnl_pct = "-" if r.get("unrealised_pnl_percent") is None else num.percent(r["unrealised_pnl_percent"])
    cells = [
        ("symbol", f'<a href="/position/{quote(pid, safe="")}">{escape(str(r.get("symbol")))}</a>', "t"),
        ("side", escape(str(r.get("side"))), "t"),
        ("quantity", escape(num.qty(r.get("quantity"), step)), ""),
        ("entry", escape(num.price(r.get("entry_price"), tick)) if r.get("entry_price") is not None else "-", ""),
        ("mark", escape(num.price(r["mark"], tick)) if r.get("mark") is not None else "-", ""),
        ("stop", escape(num.price(r["stop_price"], tick)) if r.get("stop_price") is not None else "NONE", ""),
        ("stop_kind", escape(str(r.get("stop_kind") or "-")), "t"),
        ("distance", escape(num.percent(r["stop_distance_percent"])) if r.get("stop_distance_percent") is not None else "-", ""),
        ("upnl", _signed(r.get("unrealised_pnl"), upnl), ""),
        ("upnl_percent", _signed(r.get("unrealised_pnl_percent"), upnl_pct), ""),
        ("trailing", escape(trailing), "t"),
        ("tps", escape(tps), "t"),
        ("age", escape(age), ""),
        ("verified", escape(num.when(r["last_verified_ms"])) if r.get("last_verified_ms") is not None else "-", ""),
        ("state", escape(str(r.get("state"))), "t"),
    ]
    if actions:
        what = f"Close {r.get('symbol')} {pid} at market?"
        cells.append(("action", f'<button type="button" data-action="/api/close/{escape(quote(pid, safe=""))}" data-confirm="{escape(what)}">Close</button>', "t"))
    tds = "".join(f'<td data-field="{f}" class="{c}">{v}</td>' for f, v, c in cells)
    return f'<tr data-position-id="{escape(pid)}" data-stop="{escape(str(r.get("stop_price")))}">{tds}</tr>'


POSITION_HEAD = ["symbol", "side", "qty", "entry", "mark", "stop", "stop kind", "to stop", "unrealised", "unrealised %", "trailing", "take-profits", "age", "verified", "state"]


def position_rows(rows: list[dict[str, Any]], inc: Increments, *, actions: bool = False) -> str:
    if not rows:
        return f'<tr class="empty"><td class="t muted" colspan="{len(POSITION_HEAD) + int(actions)}">no open positions</td></tr>'
    return "".join(position_cells(r, inc, actions=actions) for r in rows)


def action_bar(actions: bool) -> str:
    """Close all / pause / resume (only with ``http.actions``), and where their answers appear."""
    if not actions:
        return ""
    buttons = (
        '<button type="button" data-action="/api/close-all" data-confirm="Close EVERY open position at market?">Close all</button> '
        '<button type="button" data-action="/api/pause" data-confirm="Pause intake (no new positions)?">Pause intake</button> '
        '<button type="button" data-action="/api/resume">Resume intake</button>'
    )
    return f'<p id="actions">{buttons}</p><div id="action-result" class="muted"></div>'



def alerts_list(alerts: list[Any]) -> str:
    if not alerts:
        return '<li class="muted">no alerts sent</li>'
    out = []
    for e in alerts:
        d = e.data
        what = "resolved" if d.get("resolved") else ("FAILED to send" if e.type == "alert.failed" else "alert")
        out.append(f'<li data-alert-rule="{escape(str(d.get("rule")))}">{escape(num.when(e.ts_ms))} · {escape(what)} · {escape(str(d.get("rule")))} {escape(str(d.get("subject") or ""))} → {escape(str(d.get("sink")))}</li>')
    return "".join(out)


def positions_page(rows: list[dict[str, Any]], status: dict[str, Any], alerts: list[Any], inc: Increments, *, actions: bool = False) -> str:
    heads = POSITION_HEAD + (["action"] if actions else [])
    head = "".join(f'<th class="{"t" if h in ("symbol", "side", "stop kind", "trailing", "take-profits", "state", "action") else ""}">{escape(h)}</th>' for h in heads)
    body = (
        f"{banner(status)}<h1>Open positions</h1>{action_bar(actions)}"
        f'<table id="positions"><thead><tr>{head}</tr></thead><tbody id="positions-body">{position_rows(rows, inc, actions=actions)}</tbody></table>'
        '<p class="muted">distance to stop: from the mark, as a share of it; unrealised: at the mark, before fees; verified: the last reconcile that found '
        'the exchange agreeing with every position. Live: updates arrive as the bot records them.</p>'
        f'<h2>Recent alerts</h2><ul id="alerts">{alerts_list(alerts)}</ul>'
    )
    return page("Positions", body, LIVE_JS + (ACTIONS_JS if actions else ""))


def live_payload(rows: list[dict[str, Any]], status: dict[str, Any], alerts: list[Any], inc: Increments, *, actions: bool = False) -> str:
    return json.dumps({"rows": position_rows(rows, inc, actions=actions), "banner": banner(status), "alerts": alerts_list(alerts)})


# ------------------------------------------------------------------ history
def history_page(trades: list[Any], totals: Any, day: str, symbol: str, days: list[str], symbols: list[str], inc: Increments) -> str:
    def options(values: list[str], chosen: str) -> str:
        return '<option value="">all</option>' + "".join(f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values)

    rows = []
    for t in trades:
        tick, _ = inc(t.symbol)
        pnl = num.money(t.pnl, "USDT") if t.pnl is not None else "-"
        net = num.money(t.net_pnl, "USDT") if t.net_pnl is not None else "-"
        hold = num.duration(t.closed_ms - t.opened_ms) if t.opened_ms is not None and t.closed_ms is not None else "-"
        rows.append(
            f'<tr data-position-id="{escape(str(t.position_id))}"><td class="t"><a href="/position/{quote(str(t.position_id), safe="")}">{escape(str(t.position_id))}</a></td>'
            f'<td class="t" data-field="symbol">{escape(str(t.symbol))}</td><td class="t">{escape(str(t.side))}</td>'
            f'<td data-field="closed">{escape(num.when(t.closed_ms))}</td><td class="t" data-field="exit_reason">{escape(str(t.exit_reason))}</td>'
            f'<td data-field="exit_price">{escape(num.price(t.exit_price, tick)) if t.exit_price else "-"}</td><td data-field="pnl">{_signed(t.pnl, pnl)}</td>'
            f'<td data-field="fees"{_muted(t.fills_without_fee)}>{escape(num.fees(t.fees, t.fills_without_fee))}</td><td data-field="net_pnl">{_signed(t.net_pnl, net)}</td><td>{escape(hold)}</td></tr>'
        )
    empty = '<tr><td class="t muted" colspan="10">no closed positions match</td></tr>'
    total_net = _signed(totals.net_pnl, num.money(totals.net_pnl, "USDT")) if totals.net_pnl is not None else "-"
    win = num.percent(totals.win_rate) if totals.win_rate is not None else "-"
    body = (
        '<h1>History</h1><form method="get" action="/history">'
        f'<label>day <select name="day">{options(days, day)}</select></label><label>symbol <select name="symbol">{options(symbols, symbol)}</select></label><button>filter</button></form>'
        '<table id="history"><thead><tr><th class="t">position</th><th class="t">symbol</th><th class="t">side</th><th>closed</th><th class="t">exit reason</th>'
        f'<th>exit</th><th>realised pnl (gross)</th><th>fees</th><th>net pnl</th><th>held</th></tr></thead><tbody>{"".join(rows) or empty}</tbody>'
        f'<tfoot><tr id="totals"><td class="t" colspan="3">total: <span data-field="count">{totals.count}</span> closed, {totals.wins} won, {totals.losses} lost, win rate {escape(win)}</td>'
        f'<td colspan="3"></td><td data-field="total_pnl">{_signed(totals.pnl, num.money(totals.pnl, "USDT"))}</td>'
        f'<td data-field="total_fees"{_muted(totals.fills_without_fee)}>{escape(num.fees(totals.fees, totals.fills_without_fee))}</td><td data-field="total_net_pnl">{total_net}</td><td></td></tr></tfoot></table>'
        '<p class="muted">realised pnl (gross): the figure stored with each exit, before fees; fees: what the exchange reported on each fill (entry and exits); '
        'net: gross minus fees, shown only where every fill has its fee: a fill without one (the exchange reported none, or recorded before fees were) is counted, never taken as zero.</p>'
    )
    return page("History", body)


# ----------------------------------------------------------------- position
def position_page(row: dict[str, Any], timeline: Any, series: dict[str, Any], svg: str, inc: Increments, candle_note: str) -> str:
    from actors.position_timeline import describe

    tick, step = inc(row.get("symbol"))
    head = f'{escape(str(row.get("symbol")))} {escape(str(row.get("side")))} · {escape(str(row.get("position_id")))} · {escape(str(row.get("state")))}'
    facts = [
        ("entry", f'{num.qty(row.get("quantity"), step)} at {num.price(row.get("entry_price"), tick)}' if row.get("entry_price") is not None else "-"),
        ("stop", f'{num.price(row.get("stop_price"), tick)} ({row.get("stop_kind") or "-"})' if row.get("stop_price") is not None else "none"),
        ("entry fill -> stop live", num.duration(timeline.entry_to_stop_ms) if timeline.entry_to_stop_ms is not None else "no stop seen"),
        ("unprotected after the first stop", num.duration(timeline.unprotected_ms) if timeline.unprotected else "never"),
    ]
    if timeline.closed_ms is not None:
        facts.append(("exit", f'{timeline.exit_reason} at {num.price(timeline.exit_price, tick) if timeline.exit_price else "?"}, pnl {num.money(timeline.pnl, "USDT") if timeline.pnl else "?"}'))
    for o in timeline.overlaps:
        facts.append(("stop move", f"{num.price(o.old_price, tick)} -> {num.price(o.new_price, tick)} ({o.reason}): two stops for {num.duration(o.duration_ms)}"))
    for i in timeline.unprotected:
        facts.append(("UNPROTECTED", f"{num.duration(i.duration_ms) if i.duration_ms is not None else 'still'} from {num.when(i.start_ms)} ({i.began})"))
    dl = "".join(f"<tr><th class=\"t\">{escape(k)}</th><td class=\"t\">{escape(v)}</td></tr>" for k, v in facts)
    steps = "".join(
        f'<tr><td>{escape(num.when(s.ts_ms))}</td><td>+{escape(num.duration(s.since_prev_ms))}</td><td>{escape(num.duration(s.since_open_ms))}</td><td class="t">{escape(describe(s))}</td></tr>'
        for s in timeline.steps
    )
    data = json.dumps(series).replace("<", "\\u003c")
    body = (
        f"<h1>{head}</h1><table class=\"facts\">{dl}</table>"
        f'<div id="chart">{svg}</div><p class="muted">{escape(candle_note)}; blue: marks the bot saw; orange steps: the stop; dashed: entry and take-profits; diamonds: fills, exit, guard/sync actions.</p>'
        f'<script type="application/json" id="chart-data">{data}</script>'
        f'<h2>Timeline</h2><table id="timeline"><thead><tr><th>time</th><th>since previous</th><th>since first</th><th class="t">event</th></tr></thead><tbody>{steps}</tbody></table>'
    )
    return page(f"{row.get('symbol')} {row.get('position_id')}", body)
