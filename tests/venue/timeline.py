"""What the venue saw, over time: the request log and the timeline of positions and live stops.

The server appends; tests compute from it what matters for a protection bot:
unprotected intervals (a position open with less than its size covered by
live reduce-only stops), two-stop overlaps, orphan stops (live with no
position), duplicate entries, requests per position-hour and weight per minute.
Times are the server's wall clock in ms.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

D0 = Decimal(0)


@dataclasses.dataclass(frozen=True)
class Request:
    """One HTTP request as the venue received and answered it."""

    t_ms: int  # received
    done_ms: int  # answered (a late answer: long after the client gave up)
    method: str
    path: str
    params: dict[str, str]
    status: int
    code: int | None  # the venue's error code of a refusal (Binance code, Bybit retCode)
    weight: int  # IP weight charged
    orders: int  # order-count charged
    fault: str | None = None  # "fail", "late", "limit", "ban" when a hook or the limiter answered

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


@dataclasses.dataclass(frozen=True)
class Stop:
    order_id: str  # algo id as the wire names it
    side: str  # buy / sell (the closing side)
    qty: Decimal  # 0 with closePosition
    trigger: Decimal
    close_position: bool = False


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """State after a change: open positions {(symbol, side): size} and live stops per symbol."""

    t_ms: int
    positions: dict[tuple[str, str], Decimal]
    stops: dict[str, tuple[Stop, ...]]

    def covering(self, key: tuple[str, str]) -> tuple[Stop, ...]:
        """The live stops that reduce the position ``key`` (a long's stops sell)."""
        symbol, side = key
        closing = "sell" if side == "long" else "buy"
        return tuple(s for s in self.stops.get(symbol, ()) if s.side == closing)

    def protected(self, key: tuple[str, str]) -> bool:
        size = self.positions.get(key, D0)
        stops = self.covering(key)
        return any(s.close_position for s in stops) or sum((s.qty for s in stops), D0) >= size


@dataclasses.dataclass(frozen=True)
class Interval:
    key: tuple[str, str]
    start_ms: int
    end_ms: int | None  # None: still going at the end of the timeline

    def length_ms(self, now_ms: int) -> int:
        return (self.end_ms if self.end_ms is not None else now_ms) - self.start_ms


class Timeline:
    """Append-only, thread-safe: the server writes, tests read copies."""

    def __init__(self, *, entry_route: str = "POST /fapi/v1/order", client_id_key: str = "newClientOrderId") -> None:
        #: The venue's order route and client id parameter (Binance by default; Bybit: /v5/order/create, orderLinkId).
        self.entry_route, self.client_id_key = entry_route, client_id_key
        self._lock = threading.Lock()
        self._snapshots: list[Snapshot] = []
        self._requests: list[Request] = []

    # -------------------------------------------------------------- writes
    def record_state(self, snap: Snapshot) -> None:
        with self._lock:
            if self._snapshots and self._snapshots[-1].positions == snap.positions and self._snapshots[-1].stops == snap.stops:
                return
            self._snapshots.append(snap)

    def record_request(self, req: Request) -> None:
        with self._lock:
            self._requests.append(req)

    # --------------------------------------------------------------- reads
    @property
    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            return list(self._snapshots)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def routes(self) -> list[str]:
        return [r.route for r in self.requests]

    def _intervals(self, bad: Any) -> list[Interval]:
        """Per position key, the stretches where ``bad(snapshot, key)`` holds while it is open."""
        out: list[Interval] = []
        started: dict[tuple[str, str], int] = {}
        for snap in self.snapshots:
            for key in set(started) | set(snap.positions):
                is_bad = key in snap.positions and bad(snap, key)
                if is_bad and key not in started:
                    started[key] = snap.t_ms
                elif not is_bad and key in started:
                    out.append(Interval(key, started.pop(key), snap.t_ms))
        out.extend(Interval(key, t, None) for key, t in started.items())
        return sorted(out, key=lambda i: i.start_ms)

    def unprotected(self) -> list[Interval]:
        """Stretches with a position open and its size not covered by live stops."""
        return self._intervals(lambda snap, key: not snap.protected(key))

    def overlaps(self) -> list[Interval]:
        """Stretches with two or more live stops on one position (a move's new stop before the old is gone)."""
        return self._intervals(lambda snap, key: len(snap.covering(key)) >= 2)

    def orphans(self) -> list[Stop]:
        """Stops live now with no position on their symbol to reduce."""
        snaps = self.snapshots
        if not snaps:
            return []
        last = snaps[-1]
        out = []
        for symbol, stops in last.stops.items():
            for s in stops:
                side = "long" if s.side == "sell" else "short"
                if (symbol, side) not in last.positions:
                    out.append(s)
        return out

    def live_stops(self, symbol: str | None = None) -> list[Stop]:
        snaps = self.snapshots
        if not snaps:
            return []
        return [s for sym, stops in snaps[-1].stops.items() if symbol in (None, sym) for s in stops]

    def positions(self) -> dict[tuple[str, str], Decimal]:
        snaps = self.snapshots
        return dict(snaps[-1].positions) if snaps else {}

    def position_ms(self, now_ms: int) -> int:
        """Total time positions were open (summed over positions)."""
        total = 0
        snaps = self.snapshots
        for a, b in zip(snaps, [*snaps[1:], None], strict=True):
            end = b.t_ms if b is not None else now_ms
            total += len(a.positions) * max(0, end - a.t_ms)
        return total

    def max_positions(self) -> dict[tuple[str, str], Decimal]:
        """The largest size each position key ever had (a duplicate entry doubles it)."""
        out: dict[tuple[str, str], Decimal] = {}
        for snap in self.snapshots:
            for key, size in snap.positions.items():
                out[key] = max(out.get(key, D0), size)
        return out

    def entries(self) -> list[Request]:
        """Accepted opening market orders (not reduce-only, not conditional)."""
        return [r for r in self.requests if r.route == self.entry_route and r.status == 200 and r.code is None and r.params.get("reduceOnly") != "true" and r.params.get("type", r.params.get("orderType", "")).upper() == "MARKET" and not r.params.get("triggerPrice")]

    def duplicate_entries(self) -> dict[str, int]:
        """Client ids (ignoring the attempt suffix) of entries executed more than once."""
        counts: dict[str, int] = {}
        for r in self.entries():
            owner = r.params.get(self.client_id_key, "").rsplit("-", 1)[0]
            counts[owner] = counts.get(owner, 0) + 1
        return {k: n for k, n in counts.items() if n > 1}

    def requests_per_position_hour(self, since_ms: int, now_ms: int) -> float:
        n = sum(1 for r in self.requests if since_ms <= r.t_ms <= now_ms)
        hours = self._position_ms_between(since_ms, now_ms) / 3_600_000
        return n / hours if hours else float("inf")

    def _position_ms_between(self, since_ms: int, now_ms: int) -> int:
        total = 0
        snaps = self.snapshots
        for a, b in zip(snaps, [*snaps[1:], None], strict=True):
            start, end = max(a.t_ms, since_ms), min(b.t_ms if b is not None else now_ms, now_ms)
            total += len(a.positions) * max(0, end - start)
        return total

    def max_weight_per_minute(self) -> int:
        """The largest IP weight in any rolling 60 s (what Binance compares with 2400)."""
        reqs = sorted(self.requests, key=lambda r: r.t_ms)
        best = total = 0
        j = 0
        for r in reqs:
            total += r.weight
            while reqs[j].t_ms <= r.t_ms - 60_000:
                total -= reqs[j].weight
                j += 1
            best = max(best, total)
        return best

    def first(self, route: str, *, after_ms: int = 0, where: Any = None) -> Request | None:
        return next((r for r in self.requests if r.route == route and r.t_ms >= after_ms and (where is None or where(r))), None)

    def count(self, route: str, *, since_ms: int = 0, statuses: Iterable[int] | None = None) -> int:
        wanted = set(statuses) if statuses is not None else None
        return sum(1 for r in self.requests if r.route == route and r.t_ms >= since_ms and (wanted is None or r.status in wanted))
