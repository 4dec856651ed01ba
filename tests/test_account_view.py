"""The sync actor's stream-fed view of the account: a full read plus every push since."""

from __future__ import annotations

from decimal import Decimal

from actors.account_view import AccountView, Snapshot
from adapters.venue import OrderReport, OrderStatus, PositionReport

D = Decimal


def order(oid: str, status: OrderStatus = OrderStatus.OPEN) -> OrderReport:
    return OrderReport(order_id=oid, client_id=None, symbol="BTCUSDT", side="sell", status=status, amount=D("0.1"), filled=D(0), trigger_price=D(39000), reduce_only=True)


def read(*orders: OrderReport, qty: str = "0.1", at: int = 1_000) -> Snapshot:
    return Snapshot(read_ms=at, positions=(PositionReport(symbol="BTCUSDT", side="long", qty=D(qty), entry_price=D(40000), mark_price=D(40100)),), orders=orders, owned=())


def test_pushes_update_the_last_read():
    v = AccountView()
    v.read_started()
    v.apply_read(read(order("1")))
    v.on_stream("orders", [order("1", OrderStatus.CANCELED), order("2")], 2_000)
    v.on_stream("positions", [("BTCUSDT", "long", D("0.05")), ("ETHUSDT", "short", D(1))], 2_000)
    snap = v.snapshot(3_000, ())
    assert [o.order_id for o in snap.orders] == ["2"]
    pos = {p.symbol: p for p in snap.positions}
    assert pos["BTCUSDT"].qty == D("0.05") and pos["BTCUSDT"].mark_price == D(40100)  # the rest of the read stays
    assert pos["ETHUSDT"].entry_price == 0 and snap.source == "streams" and snap.read_ms == 3_000
    v.on_stream("positions", [("BTCUSDT", "long", D(0))], 4_000)
    assert [p.symbol for p in v.snapshot(4_000, ()).positions] == ["ETHUSDT"]


def test_a_push_during_a_read_wins_over_the_older_read():
    """The read was taken before the stop was cancelled; the cancel's push arrived while it was in flight."""
    v = AccountView()
    v.read_started()
    v.on_stream("orders", [order("1", OrderStatus.CANCELED)], 1_500)
    v.on_stream("positions", [("BTCUSDT", "long", D(0))], 1_500)
    v.apply_read(read(order("1")))
    snap = v.snapshot(2_000, ())
    assert snap.orders == () and snap.positions == ()
    v.read_started()
    v.apply_read(read(order("1")))  # the next read is newer than those pushes: it stands
    assert [o.order_id for o in v.snapshot(3_000, ()).orders] == ["1"]


def test_a_failed_read_forgets_the_replay():
    v = AccountView()
    v.read_started()
    v.on_stream("orders", [order("9")], 1_500)
    v.read_failed()
    v.read_started()
    v.apply_read(read())
    assert v.snapshot(2_000, ()).orders == ()  # order 9 was neither in the read nor pushed since it began
