"""The position-attached stop (``exchange.stop_mode = "position"``): one request per move.

Where the venue's style offers it (Bybit ``/v5/position/trading-stop``), the
stop is not an order of its own but the position's ``stopLoss``: setting it
again with another price amends it in place, so a trailing move is one
request and never has two stops live nor a moment without one. The default
(``stop_mode = "order"``) places the new stop and then cancels the old one.

The rest of the bot keeps speaking orders: the stop is reported as an
:class:`~adapters.venue.OrderReport` under the position's stop id
(:meth:`VenueStyle.position_stop_id`, the same for every move), so the
position actor's move sees the same id come back and has nothing to cancel
(:func:`actors.plan_moves.after_place`); cancelling that id clears the
position's stop; looking it up reads the venue's listing of the attached
order (open, else its history: filled when it fired).

Setting a stop to a price is idempotent: a timeout is simply retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.errors import Outcome, VenueError
from adapters.markets import Market
from adapters.rate_tables import Priority

if TYPE_CHECKING:
    from adapters.executor import Executor
    from adapters.venue import OrderReport
    from adapters.venues.style import VenueStyle


class PositionStopVenue:
    """Mixed into :class:`~adapters.venue.Venue`: the position-attached stop's calls."""

    exchange: Any
    executor: Executor
    style: VenueStyle
    #: Stops are the position's own (``exchange.stop_mode = "position"``), not orders.
    position_stop: bool

    if TYPE_CHECKING:  # the venue's (declared for the type checker only)

        def _order(self, raw: dict[str, Any], m: Market | None) -> OrderReport: ...
        def _acted(self, action: str, report: OrderReport | None, order_id: str) -> None: ...

    def uses_position_stop(self, order_id: str | None = None) -> bool:
        """Are stops position-attached here (and, given an id, is it such a stop)?"""
        if order_id is not None:
            return self.style.is_position_stop(order_id)
        return self.position_stop

    async def _call(self, op: str, method: str, params: dict[str, Any], ctx: dict[str, Any] | None, priority: Priority) -> Any:
        fn: Callable[[], Awaitable[Any]] = lambda: getattr(self.exchange, method)(params)  # noqa: E731
        return await self.executor.run(op, fn, idempotent=True, context=ctx, priority=priority)

    async def _set_position_stop(self, m: Market, closing_side: str, qty: Decimal, price: Decimal, client_id: str, ctx: dict[str, Any] | None) -> OrderReport:
        from adapters.venue import OrderReport, OrderStatus  # (the venue module imports this one)

        position_side = "long" if closing_side == "sell" else "short"
        method, params = self.style.position_stop_request(m.id, position_side, price)
        await self._call("set_position_stop", method, params, ctx, Priority.PROTECT)
        report = OrderReport(
            order_id=self.style.position_stop_id(m.id, position_side), client_id=client_id, symbol=m.id, side=closing_side, status=OrderStatus.OPEN,
            amount=qty, filled=Decimal(0), trigger_price=price, reduce_only=True, position_side=position_side if self.style.hedge_mode else None, attached="StopLoss",
        )
        self._acted("place", report, report.order_id)
        return report

    async def _clear_position_stop(self, m: Market, order_id: str, ctx: dict[str, Any] | None) -> OrderReport | None:
        """Remove the position's stop; None when there is none to remove (the position is gone)."""
        from adapters.venue import OrderStatus

        report = await self._fetch_position_stop(m, order_id, ctx)
        if report is None or report.status is not OrderStatus.OPEN:
            return None
        method, params = self.style.clear_position_stop_request(m.id, report.position_side or ("long" if report.side == "sell" else "short"))
        try:
            await self._call("clear_attached", method, params, ctx, Priority.PROTECT)
        except VenueError as err:
            if err.outcome in (Outcome.NOT_FOUND, Outcome.REJECTED):  # zero position: nothing attached any more
                return None
            raise
        self._acted("cancel", None, order_id)
        return msgspec.structs.replace(report, status=OrderStatus.CANCELED)

    async def _fetch_position_stop(self, m: Market, order_id: str, ctx: dict[str, Any] | None) -> OrderReport | None:
        """The position's attached stop as the venue lists it: open, else the latest in its history."""
        for method in ("fetch_open_orders", "fetch_canceled_and_closed_orders"):
            if not callable(getattr(self.exchange, method, None)):
                continue

            def listing(method: str = method) -> Awaitable[list[dict[str, Any]]]:
                return getattr(self.exchange, method)(m.symbol, None, None, {})

            rows = await self.executor.run("fetch_open_orders" if method == "fetch_open_orders" else "fetch_order", listing, idempotent=True, record=False, context=ctx)
            found = [self._order(o, m) for o in rows or ()]
            ours = sorted((r for r in found if r.order_id == order_id), key=lambda r: r.ts_ms or 0)
            if ours:
                return ours[-1]
        return None

