"""What the exchange last said about the account: a full read, plus every stream update since.

The sync actor keeps one. While the venue's order and position streams are
subscribed, this view is as current as the exchange's own pushes, so the
guard's 10-second check is made against it without a request; the full read
(``sync.interval_secs_streaming``) is the backstop against a lost push.

A read takes time: a stream update that arrives while it is in flight may be
newer than what the read returns, so updates received since the read began
are applied again on top of it (an order can only move forward from open to
done; a position update carries the whole quantity).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from actors.position_state import PositionState
from adapters.venue import OrderReport, OrderStatus, PositionReport
from adapters.venue_streams import FLAT_EITHER

LIVE = (OrderStatus.OPEN, OrderStatus.UNKNOWN)
#: Ended orders remembered, so a late answer (a placement's, after its fill was pushed) cannot revive one.
ENDED_MEMORY = 2_000


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    read_ms: int
    positions: tuple[PositionReport, ...]
    orders: tuple[OrderReport, ...]
    owned: tuple[PositionState, ...]  # open positions of the projection, typed
    source: str = "read"  # read: a full read; streams: the last read plus every push since
    #: When the positions' mark prices were read (the last full read; pushes carry no mark).
    marks_ms: int | None = None


class AccountView:
    def __init__(self) -> None:
        self.positions: dict[tuple[str, str], PositionReport] = {}
        self.orders: dict[str, OrderReport] = {}
        self.read_ms: int | None = None  # when the last full read was taken
        self.updated_ms: int | None = None  # the last change of any kind
        self._during_read: list[tuple[str, Any]] | None = None
        self._ended: dict[str, None] = {}  # ids of orders seen ending lately (insertion-ordered, bounded)

    def _end(self, order_id: str) -> None:
        self.orders.pop(order_id, None)
        self._ended[order_id] = None
        if len(self._ended) > ENDED_MEMORY:
            del self._ended[next(iter(self._ended))]

    def read_started(self) -> None:
        self._during_read = []

    def read_failed(self) -> None:
        self._during_read = None

    def apply_read(self, snap: Snapshot) -> None:
        self.positions = {(p.symbol, p.side): p for p in snap.positions}
        self.orders = {o.order_id: o for o in snap.orders}
        self.read_ms = self.updated_ms = snap.read_ms
        replay, self._during_read = self._during_read or [], None
        for kind, item in replay:
            self._apply(kind, item)

    def on_stream(self, kind: str, items: Iterable[Any], now_ms: int) -> None:
        for item in items:
            if self._during_read is not None:
                self._during_read.append((kind, item))
            self._apply(kind, item)
        self.updated_ms = now_ms

    def on_own(self, action: str, item: Any, now_ms: int) -> None:
        """Our own order action as the venue answered it (``place``: its report; ``cancel``: the
        order id): in the view before its push arrives (or if it never does)."""
        if action == "cancel":
            item = ("cancelled", item)
        kind = "orders" if action == "place" else "own_cancel"
        if self._during_read is not None:
            self._during_read.append((kind, item))
        self._apply(kind, item)
        self.updated_ms = now_ms

    def _apply(self, kind: str, item: Any) -> None:
        if kind == "own_cancel":
            self._end(item[1])
            return
        if kind == "orders":
            order: OrderReport = item
            if order.status in LIVE:
                if order.order_id not in self._ended:  # an order only moves forward: a late answer never revives it
                    self.orders[order.order_id] = order
            else:
                self._end(order.order_id)
            return
        symbol, side, qty = item
        key = (symbol, side)
        if qty == 0:
            for k in ((symbol, "long"), (symbol, "short")) if side == FLAT_EITHER else (key,):
                self.positions.pop(k, None)  # a flat one-way push closes whichever side was open
        elif (known := self.positions.get(key)) is not None:
            self.positions[key] = msgspec.structs.replace(known, qty=qty)
        else:  # opened since the read: entry and mark come with the next read
            self.positions[key] = PositionReport(symbol=symbol, side=side, qty=qty, entry_price=Decimal(0))

    def snapshot(self, now_ms: int, owned: tuple[PositionState, ...]) -> Snapshot:
        """The account now: positions and live orders as of the last push; the positions'
        marks (and entry prices) are the last full read's, at ``marks_ms``."""
        return Snapshot(read_ms=now_ms, positions=tuple(self.positions.values()), orders=tuple(self.orders.values()), owned=owned, source="streams", marks_ms=self.read_ms)
