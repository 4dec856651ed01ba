"""The guard on the paper exchange with streams live, and its rules as tables."""

from __future__ import annotations

import dataclasses
import threading
from decimal import Decimal
from typing import Any

import pytest

from actors.account_view import Snapshot
from actors.guard import GuardActor, covering_stops
from actors.messages import MarkPrice, OpenRequest, SubscribeMarks, UnsubscribeMarks
from actors.position import PositionActor
from actors.position_state import from_projection
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.events import Severity
from core.messages import Message, Probe, ProbeAnswered, ReconcileFinished, ReconcileNow, Shutdown, StartChild
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.directory import Directory
from supervision.supervisor import ChildSpec, Supervisor
from tests.conftest import eventually
from tests.world import BTC, World, advance_until, opened
from tradebot.wiring import NamedRef

D = Decimal


def guard_events(world: World) -> list[Any]:
    return world.ctx.io.run(world.ctx.store.query(type_prefixes=("guard.", "alert.")), 5)


def live_stops(world: World) -> list[Decimal]:
    return [D(str(o["triggerPrice"] or o["stopPrice"])) for o in world.open_orders() if o["reduceOnly"] and "take_profit" not in str(o["type"])]


def settle(world: World, ms: int, step_ms: int = 1_000) -> None:
    """Advance virtual time in steps, letting the sync actor finish what each step started."""
    for _ in range(ms // step_ms):
        world.ctx.clock.advance(step_ms)
        world.ctx.directory.lookup("guard").proxy().checks.get()  # the guard has asked, if it was due
        eventually(lambda: not world.ctx.directory.lookup("sync").proxy().busy().get(), what="sync idle")


def read_time_mark(world: World) -> Decimal | None:
    view = world.ctx.directory.lookup("sync").proxy().view.get()
    [pos] = view.positions.values()
    return pos.mark_price


@pytest.mark.parametrize("extra_toml", ["[sync]\nquiet_probe_secs = 3600\n"])  # no probe reads: the view's mark stays the read's
@pytest.mark.parametrize(("side", "best", "moved"), [("long", "40600", D("40397.0")), ("short", "39400", D("39597.0"))])
def test_a_stop_trailed_past_the_read_time_mark_is_protection(world: World, side: str, best: str, moved: Decimal):
    """Streams live: the view keeps the mark of its last full read (40000). A long's stop raised
    above it, a short's trailed below it, is still the position's stop, not a take-profit."""
    world.open(side=side)
    opened(world)
    assert world.ctx.directory.lookup("sync").proxy().streams_live().get()
    world.ctx.directory.tell("sync", ReconcileNow())  # a full read (as sync's backstop makes): the view takes its mark
    eventually(lambda: read_time_mark(world) == D(40000), what="the read's mark in the view")
    world.exchange.set_mark(BTC, D(best))
    advance_until(world, lambda: live_stops(world) == [moved] and world.state().stop_price == moved and world.state().move_client_id is None, "trailing move", step_ms=500)
    settle(world, 90_000)  # nine guard checks, past unprotected_alert_secs
    assert read_time_mark(world) == D(40000)  # no full read meanwhile: the checks were made against the view
    assert [e.type for e in guard_events(world)] == []
    assert live_stops(world) == [moved]


# ------------------------------------------------------------ the rules as a table
def _o(side: str, trigger: str | None, *, cid: str | None = None, reduce_only: bool = True, position_side: str | None = None, amount: str = "0.1", filled: str = "0") -> OrderReport:
    return OrderReport(order_id="x", client_id=cid, symbol="ETHUSDT", side=side, status=OrderStatus.OPEN, amount=D(amount), filled=D(filled),
                       trigger_price=D(trigger) if trigger else None, reduce_only=reduce_only, position_side=position_side)


LONG = PositionReport(symbol="ETHUSDT", side="long", qty=D("0.1"), entry_price=D(3000))
SHORT = PositionReport(symbol="ETHUSDT", side="short", qty=D("0.1"), entry_price=D(3000))

COVERING_CASES = [
    # (position, order, mark the guard judges with, covered quantity)
    (LONG, _o("sell", "2940", cid="tb-p1-s2"), None, "0.1"),  # the owner's stop: no mark needed
    (LONG, _o("sell", "3030", cid="tb-p1-s3"), D(3000), "0.1"),  # trailed above a stale mark: still its stop
    (SHORT, _o("buy", "2970", cid="tb-p1-s3"), D(3000), "0.1"),  # a short's, trailed below it
    (LONG, _o("sell", "3030", cid="tb-p1-t1"), D(3000), "0"),  # our take-profit: never protection ...
    (LONG, _o("sell", "2970", cid="tb-p1-t1"), D(3050), "0"),  # ... on whichever side of the mark
    (SHORT, _o("buy", "3030", cid="tb-p1-t1"), D(2950), "0"),
    (LONG, _o("sell", "2940", cid="tb-p1-s2", reduce_only=False), None, "0"),  # could open the other way
    (LONG, _o("buy", "2940", cid="tb-p1-s2"), None, "0"),  # the wrong side
    (LONG, _o("sell", None, cid="tb-p1-c4"), None, "0"),  # a close order, no trigger
    (LONG, _o("sell", "2940", cid="tb-p1-s2", amount="0.1", filled="0.04"), None, "0.06"),
    (LONG, _o("sell", "2940", cid="tb-p1-s2", reduce_only=False, position_side="long"), None, "0.1"),  # hedge mode
    (LONG, _o("sell", "2940", cid="tb-p1-s2", reduce_only=False, position_side="short"), None, "0"),
    # anyone else's trigger order: a stop only on the protective side of a current mark
    (LONG, _o("sell", "2940"), D(3000), "0.1"),
    (LONG, _o("sell", "3030"), D(3000), "0"),  # a take-profit
    (LONG, _o("sell", "2940"), None, "0"),  # no current mark: cannot tell
    (SHORT, _o("buy", "3060"), D(3000), "0.1"),
    (SHORT, _o("buy", "2970"), D(3000), "0"),
    (LONG, _o("sell", "2940", cid="tb-other-s2"), None, "0"),  # ours, another position's (a leftover): judged like anyone's
    (LONG, _o("sell", "2940", cid="tb-other-s2"), D(3000), "0.1"),
]


@pytest.mark.parametrize(("pos", "order", "mark", "covered"), COVERING_CASES)
def test_covering_stops(pos: PositionReport, order: OrderReport, mark: Decimal | None, covered: str):
    assert covering_stops(pos, (order,), owner="p1", mark=mark) == D(covered)


def test_covering_stops_adds_up_partial_stops():
    orders = (_o("sell", "2940", cid="tb-p1-s2", amount="0.06"), _o("sell", "2900", amount="0.04"), _o("sell", "3100", cid="tb-p1-t1"))
    assert covering_stops(LONG, orders, owner="p1") == D("0.06")
    assert covering_stops(LONG, orders, owner="p1", mark=D(3000)) == D("0.1")


# ------------------------------------------------- the guard on its own, sync held back
class Answer(Message, frozen=True, kw_only=True):
    snapshot: Any


class HeldSync(ManagedActor):
    """Stands in for the sync actor, so a read can take virtual time: asks wait for ``Answer``."""

    def started(self) -> None:
        self.asked: list[int] = []
        self.held: list[Any] = []

    @handles(ReconcileNow)
    def _ask(self, msg: ReconcileNow) -> None:
        self.asked.append(self.ctx.clock.now_ms())
        self.held.append(msg.reply_to)

    @handles(Answer)
    def _answer(self, msg: Answer) -> None:
        held, self.held = self.held, []
        for ref in held:
            ref.tell(ReconcileFinished(ok=True, findings={}, snapshot=msg.snapshot))


STOP = OrderReport(order_id="3", client_id="tb-p1-s2", symbol="BTCUSDT", side="sell", status=OrderStatus.OPEN, amount=D("0.025"), filled=D(0), trigger_price=D(40397), reduce_only=True)
TP = OrderReport(order_id="4", client_id="tb-p1-t1", symbol="BTCUSDT", side="sell", status=OrderStatus.OPEN, amount=D("0.025"), filled=D(0), trigger_price=D(39500), reduce_only=True)
OWNED = (from_projection({"position_id": "p1", "exchange": "paper", "symbol": "BTCUSDT", "side": "long", "state": "protected"}),)


def snapshot(at: int, *orders: OrderReport, mark: str = "40000", marks_ms: int | None = None) -> Snapshot:
    pos = PositionReport(symbol="BTCUSDT", side="long", qty=D("0.025"), entry_price=D(40000), mark_price=D(mark))
    return Snapshot(read_ms=at, positions=(pos,), orders=orders, owned=OWNED, marks_ms=at if marks_ms is None else marks_ms, source="streams" if marks_ms else "read")


@pytest.fixture
def alone(ctx: ActorContext):
    """The guard, a held-back sync and the supervisor; nothing else."""
    ctx = dataclasses.replace(ctx, directory=Directory())
    sup = Supervisor.start(ctx=ctx, children=[ChildSpec(name="sync", factory=lambda n, c: HeldSync.start(name=n, ctx=c)), ChildSpec(name="guard", factory=lambda n, c: GuardActor.start(name=n, ctx=c))])
    eventually(lambda: ctx.directory.lookup("guard") and ctx.directory.lookup("sync"), what="started")
    yield ctx, sup
    sup.tell(Shutdown(reason="test end"))
    if not sup.actor_stopped.wait(3):
        ctx.clock.advance(60_000)
        sup.actor_stopped.wait(5)


def settled(ctx: ActorContext) -> None:
    """Both actors have handled what they were told so far (the guard first: it tells sync)."""
    ctx.directory.lookup("guard").proxy().checks.get()
    ctx.directory.lookup("sync").proxy().held.get()


def answer(ctx: ActorContext, *orders: OrderReport) -> None:
    ctx.directory.lookup("sync").tell(Answer(snapshot=snapshot(ctx.clock.now_ms(), *orders)))
    eventually(lambda: not ctx.directory.lookup("sync").proxy().held.get(), what="answered")
    settled(ctx)


def test_checks_are_every_interval_when_a_read_takes_time(alone):
    """Issue 15: a read that ends 300 ms after the check began must not make the next check wait
    an extra interval (the guard used to compare with the read's end: checks at 10 s and 20 s in turn)."""
    ctx, _ = alone
    t0 = ctx.clock.now_ms()
    ctx.directory.lookup("guard").tell(ReconcileFinished(ok=True, findings={}, snapshot=snapshot(t0, STOP)))  # the startup reconcile
    settled(ctx)
    for k in range(1, 7):
        ctx.clock.advance(t0 + k * 10_000 - ctx.clock.now_ms())
        settled(ctx)
        ctx.clock.advance(300)  # the read is in flight
        answer(ctx, STOP)
    asked = [t - t0 for t in ctx.directory.lookup("sync").proxy().asked.get()]
    assert asked == [10_000, 20_000, 30_000, 40_000, 50_000, 60_000]


def test_a_read_sync_made_on_its_own_counts_as_a_check(alone):
    ctx, _ = alone
    t0 = ctx.clock.now_ms()
    guard = ctx.directory.lookup("guard")
    guard.tell(ReconcileFinished(ok=True, findings={}, snapshot=snapshot(t0, STOP)))
    settled(ctx)
    ctx.clock.advance(10_000)
    settled(ctx)
    answer(ctx, STOP)
    ctx.clock.advance(4_000)
    guard.tell(ReconcileFinished(ok=True, findings={}, snapshot=snapshot(ctx.clock.now_ms(), STOP)))  # sync's 30 s read
    settled(ctx)
    for _ in range(25):
        ctx.clock.advance(1_000)
        settled(ctx)
        answer(ctx, STOP)
    asked = [t - t0 for t in ctx.directory.lookup("sync").proxy().asked.get()]
    assert asked == [10_000, 24_000, 34_000]  # never more than an interval apart, no read wasted


def test_our_take_profit_is_no_protection(alone):
    """Stop gone, only our take-profit left (on the protective side of the mark): unprotected."""
    ctx, _ = alone
    ctx.directory.lookup("guard").tell(ReconcileFinished(ok=True, findings={}, snapshot=snapshot(ctx.clock.now_ms(), TP, mark="40000")))
    settled(ctx)
    [e] = [e for e in ctx.io.run(ctx.store.query(types=("guard.unprotected",)), 5)]
    assert e.type == "guard.unprotected" and e.data["covered"] == "0" and e.position_id == "p1"


# ------------------------------------------------------------------------ liveness
class Hold(Message, frozen=True, kw_only=True):
    release: Any


class Owner(ManagedActor):
    """Position-like: answers probes from its mailbox (as the base class will), and can hang in a
    handler; ``start_gate``: its start-up (rebuilding from its events) waits for that."""

    def __init__(self, *, name: str, ctx: ActorContext, start_gate: threading.Event | None = None) -> None:
        super().__init__(name=name, ctx=ctx)
        self.start_gate = start_gate

    def started(self) -> None:
        if self.start_gate is not None:
            self.start_gate.wait(30)

    @handles(Probe)
    def _probe(self, msg: Probe) -> None:
        msg.reply_to.tell(ProbeAnswered(name=self.name, probe_id=msg.probe_id, actor_urn=self.actor_urn))

    @handles(Hold)
    def _hold(self, msg: Hold) -> None:
        msg.release.wait(30)


def restart_requests(ctx: ActorContext) -> list[str]:
    return [e.data["child"] for e in ctx.io.run(ctx.store.query(types=("supervisor.child_restart_requested",)), 5)]


def test_a_hung_owner_is_restarted_a_healthy_one_never(alone):
    """Protected or not (the guard has no snapshot at all here), an owner stuck in a handler misses
    its probe's deadline and is restarted once; its replacement, slow to start, is given time."""
    ctx, sup = alone
    gate, release = threading.Event(), threading.Event()
    incarnations: list[Any] = []

    def hung_factory(name: str, c: ActorContext) -> Any:
        ref = Owner.start(name=name, ctx=c, start_gate=gate if incarnations else None)
        incarnations.append(ref)
        return ref

    sup.tell(StartChild(spec=ChildSpec(name="position:BTCUSDT:h1", factory=hung_factory, kind="position", restart="transient")))
    sup.tell(StartChild(spec=ChildSpec(name="position:ETHUSDT:ok", factory=lambda n, c: Owner.start(name=n, ctx=c), kind="position", restart="transient")))
    guard = eventually(lambda: ctx.directory.lookup("position:BTCUSDT:h1") and ctx.directory.lookup("position:ETHUSDT:ok") and ctx.directory.lookup("guard"), what="owners started")
    healthy = ctx.directory.lookup("position:ETHUSDT:ok")
    try:
        ctx.clock.advance(10_000)
        eventually(lambda: len(guard.proxy().answered.get()) == 2, what="both answered the first probe")
        incarnations[0].tell(Hold(release=release))
        t_hung = ctx.clock.now_ms()
        advance_until_ctx(ctx, lambda: restart_requests(ctx), "the hung owner restarted", step_ms=1_000)
        noticed_ms = ctx.clock.now_ms() - t_hung
        assert noticed_ms <= (ctx.config.guard.probe_interval_secs + 2 * ctx.config.guard.reply_deadline_secs) * 1000  # two deadlines in a row
        [e] = ctx.io.run(ctx.store.query(types=("guard.owner_unresponsive",)), 5)
        assert e.data["owner"] == "position:BTCUSDT:h1" and e.data["actor_urn"] == incarnations[0].actor_urn and e.severity is Severity.WARNING
        advance_until_ctx(ctx, lambda: len(incarnations) == 2 and ctx.directory.lookup("position:BTCUSDT:h1") is incarnations[1], "replacement registered", step_ms=100)
        for _ in range(40):  # the replacement rebuilds for 40 s: probed, unanswered, left alone
            ctx.clock.advance(1_000)
            settled(ctx)
        assert restart_requests(ctx) == ["position:BTCUSDT:h1"]
        gate.set()
        for _ in range(120):
            ctx.clock.advance(1_000)
            settled(ctx)
        assert incarnations[1].actor_urn in guard.proxy().answered.get()
        assert restart_requests(ctx) == ["position:BTCUSDT:h1"]  # once; the healthy owner never
        assert ctx.directory.lookup("position:ETHUSDT:ok") is healthy
    finally:
        gate.set()
        release.set()


def test_one_missed_deadline_is_not_a_hang(alone):
    """A started owner busy past its probe's deadline (or a deadline the clock stepped past before
    the owner had its turn) is not yet stuck: a second probe goes out at once, the owner answers
    it, and it is never restarted."""
    ctx, sup = alone
    release = threading.Event()
    sup.tell(StartChild(spec=ChildSpec(name="position:BTCUSDT:j1", factory=lambda n, c: Owner.start(name=n, ctx=c), kind="position", restart="transient")))
    owner = eventually(lambda: ctx.directory.lookup("position:BTCUSDT:j1"), what="registered")
    guard = ctx.directory.lookup("guard")
    try:
        ctx.clock.advance(10_000)
        eventually(lambda: owner.actor_urn in guard.proxy().answered.get(), what="answered the first probe")
        owner.tell(Hold(release=release))  # busy: what follows waits its turn
        ctx.clock.advance(ctx.config.guard.probe_interval_secs * 1000)  # a probe, queued behind the hold
        settled(ctx)
        ctx.clock.advance(ctx.config.guard.reply_deadline_secs * 1000 + 1)  # its deadline passes, the owner still busy
        eventually(lambda: guard.proxy().misses.get().get(owner.actor_urn) == 1, what="the first deadline missed")
        release.set()
        eventually(lambda: owner.actor_urn not in guard.proxy().misses.get() and not guard.proxy().probes.get(), what="the second probe answered")
        name = "position:BTCUSDT:j1"
        sent = guard.proxy().probes_sent.get()[name]  # the probe is answered at once: count them, not the one in flight
        advance_until_ctx(ctx, lambda: guard.proxy().probes_sent.get().get(name, 0) > sent, "probed again later", step_ms=1_000)
        settled(ctx)
        assert restart_requests(ctx) == []
        assert ctx.directory.lookup("position:BTCUSDT:j1") is owner
    finally:
        release.set()


def test_a_replacement_stuck_in_its_start_is_restarted_after_max_failures_deadlines(alone):
    ctx, sup = alone
    gate = threading.Event()
    sup.tell(StartChild(spec=ChildSpec(name="position:BTCUSDT:s1", factory=lambda n, c: Owner.start(name=n, ctx=c, start_gate=gate), kind="position", restart="transient")))
    try:
        eventually(lambda: ctx.directory.lookup("position:BTCUSDT:s1"), what="registered")
        t0 = ctx.clock.now_ms()
        advance_until_ctx(ctx, lambda: restart_requests(ctx), "restarted", step_ms=1_000)
        cfg = ctx.config.guard
        # probes at 10 s, 30 s, 50 s (one in flight at a time), each missing its 15 s deadline
        assert ctx.clock.now_ms() - t0 >= cfg.max_failures * cfg.reply_deadline_secs * 1000
    finally:
        gate.set()


def advance_until_ctx(ctx: ActorContext, predicate: Any, what: str, step_ms: int) -> Any:
    def step() -> Any:
        ctx.clock.advance(step_ms)
        settled(ctx)
        return predicate()

    return eventually(step, what=what, timeout=20)


@pytest.mark.parametrize("extra_toml", ["[sync]\nuse_streams = false\ninterval_secs = 600\n"])
def test_probes_cost_no_request_and_polling_checks_every_interval(world: World):
    """Streams down, sync's own reads rare: one full read per guard interval, exactly; the
    probes (answered by a position actor that handles them) add no request."""
    name = open_probed(world)
    run_for = settle
    run_for(world, 10_000)
    world.exchange.requests.clear()
    t0 = world.ctx.clock.now_ms()
    run_for(world, 60_000)
    per_read = 1 + len(world.venue.style.open_order_queries())
    reads = [r["ts_ms"] - t0 for r in world.exchange.requests if r["method"] in ("fetch_positions", "fetch_open_orders")]
    assert len(reads) == 6 * per_read
    assert sorted(set(reads)) == [reads[0] + k * 10_000 for k in range(6)]  # every 10 s
    assert {r["method"] for r in world.exchange.requests} <= {"fetch_positions", "fetch_open_orders", "fetch_order", "fetch_mark_price", "fetch_ticker", "fetch_tickers"}
    assert world.ctx.directory.lookup("guard").proxy().answered.get() == {world.ctx.directory.lookup(name).actor_urn}
    assert restart_requests(world.ctx) == []


class ProbedPosition(PositionActor):
    """The real position actor, answering probes (until the base class does it for every actor)."""

    @handles(Probe)
    def _probe(self, msg: Probe) -> None:
        msg.reply_to.tell(ProbeAnswered(name=self.name, probe_id=msg.probe_id, actor_urn=self.actor_urn))


def open_probed(world: World) -> str:
    req = OpenRequest(position_id="q1", exchange="paper", symbol="BTCUSDT", side="long", quote_amount=D(100), leverage=10, correlation_id="q1", requested_by=world.collector)
    venue, feed = world.venue, NamedRef(world.ctx.directory, "price_feed")
    world.sup.tell(StartChild(spec=ChildSpec(name="position:BTCUSDT:q1", factory=lambda n, c: ProbedPosition.start(name=n, ctx=c, venue=venue, position_id="q1", request=req, price_feed=feed), kind="position", restart="transient")))
    opened(world, "q1")
    return "position:BTCUSDT:q1"


class Feed(ManagedActor):
    """Stands in for the price feed: records subscriptions, answers with the mark it is given."""

    def started(self) -> None:
        self.subscribed: list[str] = []
        self.unsubscribed: list[str] = []

    @handles(SubscribeMarks)
    def _sub(self, msg: SubscribeMarks) -> None:
        self.subscribed.append(msg.symbol)

    @handles(UnsubscribeMarks)
    def _unsub(self, msg: UnsubscribeMarks) -> None:
        self.unsubscribed.append(msg.symbol)


def test_someone_elses_stop_is_judged_with_a_current_mark(alone):
    """Our stop gone, a human's at 40500 on a long. The view's mark (40000) is ten minutes old:
    no judgement on it; with the feed's current marks the human's order is a stop at 41000,
    a take-profit at 40200."""
    ctx, sup = alone
    sup.tell(StartChild(spec=ChildSpec(name="price_feed", factory=lambda n, c: Feed.start(name=n, ctx=c))))
    feed = eventually(lambda: ctx.directory.lookup("price_feed"), what="feed")
    guard = ctx.directory.lookup("guard")
    human = OrderReport(order_id="9", client_id=None, symbol="BTCUSDT", side="sell", status=OrderStatus.OPEN, amount=D("0.025"), filled=D(0), trigger_price=D(40500), reduce_only=True)

    def check() -> list[str]:
        now = ctx.clock.now_ms()
        guard.tell(ReconcileFinished(ok=True, findings={}, snapshot=snapshot(now, human, mark="40000", marks_ms=now - 600_000)))
        settled(ctx)
        return [e.type for e in ctx.io.run(ctx.store.query(type_prefixes=("guard.unprotected", "guard.protected_again")), 5)]

    assert check() == ["guard.unprotected"]  # no current mark: the human's order cannot be told from a take-profit
    assert feed.proxy().subscribed.get() == ["BTCUSDT"]
    guard.tell(MarkPrice(symbol="BTCUSDT", price=D(41000), ts_ms=ctx.clock.now_ms()))
    assert check() == ["guard.unprotected", "guard.protected_again"]
    guard.tell(MarkPrice(symbol="BTCUSDT", price=D(40200), ts_ms=ctx.clock.now_ms()))
    assert check()[-1] == "guard.unprotected"  # 40500 above a 40200 mark: a take-profit
    ctx.clock.advance(11_000)  # the pushed mark ages past a check interval: no judgement on it
    guard.tell(MarkPrice(symbol="ETHUSDT", price=D(1), ts_ms=ctx.clock.now_ms()))  # not subscribed: ignored
    now = ctx.clock.now_ms()
    guard.tell(ReconcileFinished(ok=True, findings={}, snapshot=snapshot(now, human, STOP, mark="40000", marks_ms=now - 600_000)))  # our stop is back
    settled(ctx)
    assert feed.proxy().unsubscribed.get() == ["BTCUSDT"] and guard.proxy().marks.get() == {}


# ------------------------------------------------------------ many unprotected at once
def many(at: int, n: int) -> Snapshot:
    """``n`` positions nobody owns, with no stop at all."""
    positions = tuple(PositionReport(symbol=f"C{i}USDT", side="long", qty=D(1), entry_price=D(10), mark_price=D(10)) for i in range(n))
    return Snapshot(read_ms=at, positions=positions, orders=(), owned=(), marks_ms=at, source="read")


def test_more_than_five_unprotected_at_two_checks_in_a_row_alert_once_and_clear(alone):
    ctx, _ = alone
    guard = ctx.directory.lookup("guard")

    def check(n: int) -> list[tuple[str, int]]:
        guard.tell(ReconcileFinished(ok=True, findings={}, snapshot=many(ctx.clock.now_ms(), n)))
        settled(ctx)
        ctx.clock.advance(10_000)
        return [(e.type, e.data["count"]) for e in ctx.io.run(ctx.store.query(types=("alert.many_unprotected", "guard.many_unprotected_cleared")), 5)]

    assert check(7) == []  # first seen: maybe only an entry's moment before its stop lands
    assert check(7) == [("alert.many_unprotected", 7)]
    assert check(8) == [("alert.many_unprotected", 7)]  # still raised: not again
    assert check(5) == [("alert.many_unprotected", 7), ("guard.many_unprotected_cleared", 5)]  # the limit (5) itself is fine
    [alert] = ctx.io.run(ctx.store.query(types=("alert.many_unprotected",)), 5)
    assert alert.severity is Severity.CRITICAL and alert.data["limit"] == 5 and len(alert.data["positions"]) == 7
