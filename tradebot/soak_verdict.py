"""The soak's verdict: protection invariants computed from two records, independently.

The **exchange's own record** is the paper exchange's saved state (every
order and fill it ever had, and its measurements of unprotected time per
position episode); the **event store** is what the bot wrote. Each row is
computed from one of them (its ``source``); where both can say it, both do.
A row is a violation when its value is over its limit; the verdict fails if
any row does.
"""

from __future__ import annotations

import itertools
import typing
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from actors import position_events as pe
from core.events import Event
from core.ids import ClientOrderId

#: Event types whose record must exist before their order is sent (and the client id it names).
WRITE_AHEAD_TYPES = frozenset(str(c.__struct_config__.tag) for c in typing.get_args(pe.AnyPositionEvent) if c.WRITE_AHEAD)
STOP_EVENTS = ("position.stop_placed", "position.stop_moved")
DECIDED = ("intake.signal_selected", "intake.signal_skipped", "intake.signal_rejected")
_ENDS = ("position.stop_filled", "position.closed", "position.rolled_back", "position.entry_failed", "position.aged_exit_filled")


class Row(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: float
    limit: float
    source: str  # exchange | store | both
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.value <= self.limit


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    rows: list[Row]
    figures: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": [{**msgspec.to_builtins(r), "ok": r.ok} for r in self.rows], "figures": self.figures}

    def table(self) -> str:
        width = max(len(r.name) for r in self.rows)
        lines = [f"{'invariant':<{width}}  {'value':>9}  {'limit':>9}  {'source':<8}  verdict"]
        for r in self.rows:
            lines.append(f"{r.name:<{width}}  {_num(r.value):>9}  {_num(r.limit):>9}  {r.source:<8}  {'ok' if r.ok else 'VIOLATION'}{'  ' + r.detail if r.detail else ''}")
        lines.append(f"verdict: {'PASS (all invariants held)' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def _ours(client_id: str | None) -> ClientOrderId | None:
    return ClientOrderId.parse(client_id)


def compute(
    exchange_state: dict[str, Any],
    events: list[Event],
    *,
    downtimes: list[tuple[int, int]],
    wave_limit: int,
    budget_ms: int,
    recovery_budget_ms: int,
    final_open_orders: list[dict[str, Any]],
    final_metrics: dict[str, Any],
    open_positions: list[dict[str, Any]],
) -> Verdict:
    """The verdict of one soak (``downtimes``: (killed, restarted) wall ms of every kill)."""
    engine = exchange_state["engine"]
    orders = engine["orders"]
    fills = engine["fills"]
    m = engine["metrics"]
    episodes = list(m["episodes"].values()) + list(m["closed_episodes"])
    by_type: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by_type[e.type].append(e)
    rows: list[Row] = []

    # 1. unprotected stretches (exchange): while the bot ran vs one round trip; across a kill, ended soon after the restart
    up, across, worst_up, worst_across = 0, 0, 0, 0
    for ep in episodes:
        length, start = int(ep["max_unprotected_stretch_ms"]), ep.get("max_stretch_started_ms")
        if not length or start is None:
            continue
        end = start + length
        hit = [(k, r) for k, r in downtimes if start <= r and end >= k]
        if hit:
            after = end - max(r for _, r in hit)
            worst_across = max(worst_across, after)
            across += after > recovery_budget_ms
        else:
            worst_up = max(worst_up, length)
            up += length > budget_ms
    rows.append(Row(name="longest unprotected stretch, bot running (ms)", value=worst_up, limit=budget_ms, source="exchange", detail=f"{up} position(s) over; limit: one protective round trip with its retries"))
    rows.append(Row(name="unprotected after a restart (ms)", value=worst_across, limit=recovery_budget_ms, source="exchange", detail=f"{across} position(s) over"))
    rows.append(Row(name="positions unprotected at the end", value=int(final_metrics.get("unprotected_now", 0)), limit=0, source="exchange"))

    # 2. stop loosenings: on the exchange (each position's stop orders in order) and in the store (its stop levels)
    stops: dict[str, list[tuple[int, Decimal, str]]] = defaultdict(list)
    for o in orders:
        cid = _ours(o.get("client_id"))
        if cid and o.get("trigger_price") is not None and (o.get("reduce_only") or o.get("close_position")):
            side = "long" if o["side"] == "sell" else "short"
            stops[cid.position_id].append((int(o["created_ms"]), Decimal(str(o["trigger_price"])), side))
    ex_loose = sum(_loosenings((p, s) for _, p, s in sorted(seq)) for seq in stops.values())
    st_loose = 0
    by_pos: dict[str, list[Event]] = defaultdict(list)
    for t in STOP_EVENTS:
        for e in by_type[t]:
            by_pos[e.position_id or ""].append(e)
    sides = {e.position_id: e.data.get("side") for e in by_type["position.open_requested"]}
    for pid, evs in by_pos.items():
        side = sides.get(pid) or next((s for _, _, s in stops.get(pid, [])), "long")
        st_loose += _loosenings((Decimal(str(e.data["price"])), side) for e in sorted(evs, key=lambda e: e.id or 0) if e.data.get("reason") not in ("restore", "emergency"))
    rows.append(Row(name="stop loosenings (exchange orders)", value=ex_loose, limit=0, source="exchange"))
    rows.append(Row(name="stop loosenings (store)", value=st_loose, limit=0, source="store"))

    # 3. duplicate positions per symbol: two entries of ours filled within one episode of a symbol
    entries = [f for f in fills if (c := _ours(f.get("client_id"))) and c.kind == "e" and not f.get("liquidation")]
    dup = 0
    for ep in episodes:
        inside = {(_ours(f["client_id"]) or ClientOrderId("", "", 0)).position_id for f in entries
                  if f["symbol"] == ep["symbol"] and int(f["ts_ms"]) >= int(ep["opened_ms"]) and (ep.get("closed_ms") is None or int(f["ts_ms"]) <= int(ep["closed_ms"]))}
        dup += max(0, len(inside) - 1)
    open_at_once = _overlapping_store_positions(by_type)
    rows.append(Row(name="duplicate positions per symbol (exchange)", value=dup, limit=0, source="exchange"))
    rows.append(Row(name="duplicate positions per symbol (store)", value=open_at_once, limit=0, source="store"))

    # 4. waves over the limit: confirmed in the store; entries filled on the exchange, per wave
    wave_of_pid = {e.data["position_id"]: int(e.data["wave_ts_ms"]) for e in by_type["intake.signal_selected"]}
    confirmed: dict[int, int] = defaultdict(int)
    for e in by_type["intake.position_opened"]:
        confirmed[int(e.data["wave_ts_ms"])] += 1
    filled: dict[int, set[str]] = defaultdict(set)
    for f in entries:
        pid = (_ours(f["client_id"]) or ClientOrderId("", "", 0)).position_id
        if pid in wave_of_pid:
            filled[wave_of_pid[pid]].add(pid)
    rows.append(Row(name="waves over the limit (store, confirmed)", value=sum(1 for n in confirmed.values() if n > wave_limit), limit=0, source="store", detail=f"most in one wave: {max(confirmed.values(), default=0)} of {wave_limit}"))
    rows.append(Row(name="waves over the limit (exchange, entries)", value=sum(1 for s in filled.values() if len(s) > wave_limit), limit=0, source="exchange"))

    # 5. orphan orders after the final reconcile
    open_pids = {p["position_id"] for p in open_positions}
    orphans = [o for o in final_open_orders if (c := _ours(o.get("clientOrderId"))) is not None and c.position_id not in open_pids]
    rows.append(Row(name="orphan orders after the final reconcile", value=int(final_metrics.get("orphan_orders", 0)) + len(orphans), limit=0, source="both"))

    # 6. orders without their write-ahead event
    recorded = {e.data.get("client_id") for t in WRITE_AHEAD_TYPES for e in by_type[t]}
    unrecorded = sorted({o["client_id"] for o in orders if _ours(o.get("client_id")) and o["client_id"] not in recorded})
    rows.append(Row(name="orders without their write-ahead event", value=len(unrecorded), limit=0, source="both", detail=", ".join(unrecorded[:5])))

    # 7. positions recovered with their trailing state: trailing before a kill, open after it, never activated again
    recovered, lost = _trailing_recovery(by_type, downtimes)
    rows.append(Row(name="recovered positions that lost their trailing state", value=lost, limit=0, source="store", detail=f"{recovered} trailing position(s) recovered across a kill"))

    # 8. signals received but never processed
    decided = {e.data.get("signal_id") for t in DECIDED for e in by_type[t]}
    unprocessed = [e.data["signal_id"] for e in by_type["intake.signal_received"] if e.data["signal_id"] not in decided]
    rows.append(Row(name="signals received but never processed", value=len(unprocessed), limit=0, source="store", detail=", ".join(unprocessed[:5])))

    figures = {
        "orders": len(orders), "fills": len(fills), "episodes": len(episodes), "positions_opened": m.get("positions_opened", 0),
        "stop_moves": len(by_type["position.stop_moved"]), "waves_processed": len(by_type["intake.wave_processed"]),
        "signals_received": len(by_type["intake.signal_received"]), "actor_crashes": sum(1 for e in by_type["supervisor.child_failed"] if "soak:" in str(e.data.get("error"))),
        "restarts": len(by_type["supervisor.child_restarted"]), "kills": len(downtimes), "fenced": len(by_type["actor.fenced"]),
        "unprotected_ms_total": m.get("unprotected_ms", 0),
    }
    return Verdict(rows=rows, figures=figures)


def _loosenings(levels: Iterable[tuple[Decimal, str]]) -> int:
    n, best = 0, None
    for price, side in levels:
        if best is not None and (price < best if side == "long" else price > best):
            n += 1
        best = price if best is None else (max(best, price) if side == "long" else min(best, price))
    return n


def _overlapping_store_positions(by_type: dict[str, list[Event]]) -> int:
    """Two of our positions on one symbol open at the same time, by the store's entry fills and ends."""
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    ends = {e.position_id: e.ts_ms for t in _ENDS for e in by_type.get(t, [])}
    for e in by_type.get("position.entry_filled", []):
        spans[e.symbol or ""].append((e.ts_ms, ends.get(e.position_id, 2**62)))
    n = 0
    for s in spans.values():
        s.sort()
        for (_, a_end), (b_start, _) in itertools.pairwise(s):
            n += b_start < a_end
    return n


def _trailing_recovery(by_type: dict[str, list[Event]], downtimes: list[tuple[int, int]]) -> tuple[int, int]:
    activated: dict[str, list[int]] = defaultdict(list)
    for e in by_type.get("position.trailing_activated", []):
        activated[e.position_id or ""].append(e.ts_ms)
    ended = {e.position_id: e.ts_ms for t in _ENDS for e in by_type.get(t, [])}
    recovered = lost = 0
    for pid, times in activated.items():
        first = min(times)
        for killed, restarted in downtimes:
            if first < killed and ended.get(pid, 2**62) > restarted:
                recovered += 1
                lost += any(t > restarted for t in times)
                break
    return recovered, lost
