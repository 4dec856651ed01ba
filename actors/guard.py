"""The guard: is every open position protected *right now*, per the exchange, and is every owner alive?

It never places an order and never reads the exchange itself.

**Protection.** A check is due ``guard.interval_secs`` after the last one
began: the guard asks the sync actor for the account (the stream-fed view
while the venue's order and position streams are live, no request; else a
full read); a full read sync made on its own counts as a check and moves the
next one an interval on, so the checks are never further apart than the
interval. Each position the exchange shows must be covered, over its whole
quantity, by live orders on the closing side (reduce-only; in hedge mode, of
its side) that are stop-losses (:func:`covering_stops`):

* our own orders say what they are: the owner's stop (client id kind ``s``)
  is protection wherever the mark is, and a take-profit, entry or close of
  ours never is. No mark is needed for them, so a stop trailed past a stale
  mark is still a stop;
* anyone else's trigger order (a human's, another bot's) is a stop only on
  the protective side of a *current* mark: beyond it, it is a take-profit.
  The view's position marks are those of its last full read (position pushes
  carry the quantity only), so for a position not covered by its owner's own
  stops the guard subscribes to the price feed's marks and judges with the
  freshest mark it has; without a current one, such orders do not count.

Not covered: the owner is asked (``EnsureProtected``) and must answer
(``ProtectionReport``) within ``reply_deadline_secs``; an owner that misses
it or fails ``max_failures`` times in a row is restarted by the supervisor
(the fresh actor protects on start). Unprotected beyond the emergency loss
(on the current mark): the owner is told to close. Unprotected longer than
``unprotected_alert_secs``: a critical alert event.

**Liveness.** Every ``probe_interval_secs`` every position actor, protected
or not, is sent a ``Probe``, which its base class answers from its mailbox.
An owner stuck in a handler does not answer: a missed ``reply_deadline_secs``
sends a second probe at once, and a second miss in a row restarts it
(``guard.owner_unresponsive``) -- one deadline alone proves nothing when the
clock stepped past it before the owner had its turn. An incarnation that has
never answered yet is still starting (rebuilding from its events) and gets
``max_failures`` (at least two) deadlines before it counts as stuck; an incarnation the guard
asked to replace is left alone until the supervisor has replaced it (tracked
by actor urn). Probes are messages only: they cost no exchange request.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pykka

from actors.messages import EnsureProtected, MarkPrice, ProtectionReport, SubscribeMarks, UnsubscribeMarks
from adapters.venue import OrderReport, PositionReport
from core.clock import TimerHandle
from core.events import Severity
from core.ids import POSITION_PREFIX, ClientOrderId, PositionName, Side, position_actor_name
from core.messages import ClosePosition, Message, Probe, ProbeAnswered, ReconcileFinished, ReconcileNow, RestartChild, Tick
from supervision.actor import ActorContext, ManagedActor, handles

#: The client id kind of our stop-loss orders (initial, moved, restored, emergency).
LAST_CALL = 2  # deadlines missed in a row (the second probe sent as the first passes) before an owner counts as stuck
STOP_KIND = "s"


def covering_stops(pos: PositionReport, orders: tuple[OrderReport, ...], *, owner: str | None = None, mark: Decimal | None = None) -> Decimal:
    """Quantity of ``pos`` covered by live stop-losses among ``orders``.

    A stop of ``owner`` (our client id, kind ``s``) counts wherever the mark is; any other
    order of ours does not (a take-profit is no protection). Anyone else's trigger order
    counts only on the protective side of ``mark``, which must be current: beyond it, it is
    a take-profit (or a stop already crossed), and with no mark it cannot be told apart."""
    side = Side(pos.side)
    total = Decimal(0)
    for o in orders:
        # one-way mode: reduce-only; hedge mode: the order belongs to the position's side
        # (Binance refuses reduceOnly there, positionSide says it instead)
        closes_it = o.position_side == pos.side if o.position_side is not None else o.reduce_only
        if o.symbol != pos.symbol or o.side != side.closing_side or o.trigger_price is None or not closes_it:
            continue
        ours = ClientOrderId.parse(o.client_id)
        if ours is not None and ours.position_id == owner:
            if ours.kind != STOP_KIND:
                continue  # our take-profit, entry or close
        elif mark is None or side.through(mark, o.trigger_price):
            continue
        total += o.amount - o.filled
    return total


def loss_percent(pos: PositionReport, mark: Decimal | None) -> Decimal:
    """How far ``pos`` is in loss from its entry at ``mark`` (negative: in profit)."""
    if mark is None or not pos.entry_price:
        return Decimal(0)
    return -(mark - pos.entry_price) / pos.entry_price * 100 * Side(pos.side).sign


class GuardCheck(Message, frozen=True, kw_only=True):
    """The guard's own timer: a protection check is due (``seq`` tells a rescheduled one apart)."""

    seq: int
    due_ms: int


class ProbeDeadline(Message, frozen=True, kw_only=True):
    name: str
    probe_id: int


@dataclass
class _Probe:
    probe_id: int
    actor_urn: str


class GuardActor(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext) -> None:
        super().__init__(name=name, ctx=ctx)
        self.unprotected_since: dict[str, int] = {}  # position key -> first seen unprotected
        self.many_alerted = False  # alert.many_unprotected raised, not yet cleared
        self.alerted: set[str] = set()
        self.waiting: dict[str, tuple[int, str]] = {}  # owner name -> (deadline, position key)
        self.failures: dict[str, int] = {}
        self.has_positions = False
        # the schedule of checks
        self.checks = 0  # checks asked for (for status and tests)
        self.asked_ms: int | None = None  # our check in flight since
        self._check_seq = 0
        self._check_timer: TimerHandle | None = None
        # current marks of the positions judged by the mark
        self.marks: dict[str, MarkPrice] = {}
        self.mark_symbols: set[str] = set()
        # liveness
        self._probe_ids = itertools.count(1)
        self._probe_timer: TimerHandle | None = None
        self.probes: dict[str, _Probe] = {}  # name -> the probe in flight
        self.answered: set[str] = set()  # urns that have answered a probe (started)
        self.misses: dict[str, int] = {}  # urn -> missed deadlines while starting
        self.probes_sent: dict[str, int] = {}  # name -> probes told (for status and tests)
        self.replacing: dict[str, str] = {}  # name -> urn the supervisor was asked to replace

    def started(self) -> None:
        self._next_check(self._interval_ms())
        self._probe_every()

    def config_changed(self, applied: tuple[str, ...]) -> None:
        if "guard.interval_secs" in applied:
            self._next_check(self._interval_ms())
        if "guard.probe_interval_secs" in applied:
            self._probe_every()

    def _interval_ms(self) -> int:
        return self.ctx.config.guard.interval_secs * 1000

    # ------------------------------------------------------------ checks
    def _next_check(self, delay_ms: int, since_ms: int | None = None) -> None:
        """The next check ``delay_ms`` after ``since_ms`` (default: now); any other one is off."""
        if self._check_timer is not None:
            self._check_timer.cancel()
        self._check_seq += 1
        now = self.ctx.clock.now_ms()
        due = (now if since_ms is None else since_ms) + delay_ms
        self._check_timer = self.after(max(0, due - now), GuardCheck(seq=self._check_seq, due_ms=due))

    @handles(GuardCheck)
    def _on_check(self, msg: GuardCheck) -> None:
        if msg.seq != self._check_seq:
            return  # rescheduled meanwhile
        now, cfg = self.ctx.clock.now_ms(), self.ctx.config.guard
        late = now - msg.due_ms >= self._interval_ms()  # far behind: no burst of checks to catch up
        self._next_check(self._interval_ms(), since_ms=None if late else msg.due_ms)  # an interval after this one was due
        for owner, (deadline, _key) in list(self.waiting.items()):
            if now > deadline:
                del self.waiting[owner]
                self._failed(owner, f"no answer to EnsureProtected within {cfg.reply_deadline_secs} s")
        if self.has_positions or self.ctx.directory.names(POSITION_PREFIX):  # nothing open: sync's own reads suffice
            self.asked_ms, self.checks = now, self.checks + 1
            # live streams: the sync actor answers from its stream-fed view, no request; else a full read
            self.ctx.directory.tell("sync", ReconcileNow(reply_to=self.actor_ref, cached_ok=True))

    @handles(ReconcileFinished)
    def _on_reconcile(self, msg: ReconcileFinished) -> None:
        ours, self.asked_ms = self.asked_ms is not None, None
        if not msg.ok or msg.snapshot is None:
            return
        snap, cfg, now = msg.snapshot, self.ctx.config.guard, self.ctx.clock.now_ms()
        if not ours:
            self._next_check(self._interval_ms())  # sync's own read was a check: the next is due an interval after it
        self.has_positions = bool(snap.positions)
        marks_ms = snap.marks_ms if snap.marks_ms is not None else snap.read_ms
        owners = {(r.symbol, r.side.value): r for r in snap.owned}
        seen, by_mark = set(), set()
        for pos in snap.positions:
            key = f"{pos.symbol}:{pos.side}"
            seen.add(key)
            row = owners.get((pos.symbol, pos.side))
            pid = row.position_id if row else None
            covered = covering_stops(pos, snap.orders, owner=pid)
            mark = None
            if covered < pos.qty:  # not by its owner's stops alone: the others are judged by a current mark
                by_mark.add(pos.symbol)
                mark = self._current_mark(pos, marks_ms, now)
                covered = covering_stops(pos, snap.orders, owner=pid, mark=mark)
            if covered >= pos.qty:
                if self.unprotected_since.pop(key, None) is not None:
                    self.emit("guard.protected_again", {"position": key}, symbol=pos.symbol)
                self.alerted.discard(key)
                continue
            since = self.unprotected_since.setdefault(key, snap.read_ms)
            owner = position_actor_name(pos.symbol, pid) if pid else None
            self.emit("guard.unprotected", {"position": key, "qty": pos.qty, "covered": covered, "mark": mark, "owner": owner, "for_ms": now - since}, severity=Severity.WARNING, symbol=pos.symbol, position_id=pid)
            if now - since >= cfg.unprotected_alert_secs * 1000 and key not in self.alerted:
                self.alerted.add(key)
                self.emit("alert.position_unprotected", {"position": key, "for_ms": now - since}, severity=Severity.CRITICAL, symbol=pos.symbol)
            if owner is None or self.ctx.config.exchange.read_only:
                continue  # untracked: the sync actor adopts it; read-only: reported and alerted, nobody acts
            if (loss := loss_percent(pos, mark)) >= cfg.emergency_loss_percent:
                self.ctx.directory.tell(owner, ClosePosition(reason=f"emergency: unprotected and {loss:.2f} % in loss"))
            if owner not in self.waiting:
                self.waiting[owner] = (now + cfg.reply_deadline_secs * 1000, key)
                if not self.ctx.directory.tell(owner, EnsureProtected(reply_to=self.actor_ref)):
                    del self.waiting[owner]
                    self._failed(owner, "owner not running")
        for key in set(self.unprotected_since) - seen:
            del self.unprotected_since[key]  # flat now: nothing to protect
        self._count_unprotected(snap.read_ms)
        self._follow_marks(by_mark)

    def _count_unprotected(self, read_ms: int) -> None:
        """More than ``many_unprotected_alert`` unprotected at two checks in a row (one entry's
        moment before its stop lands is not counted): one alert, and its clearing."""
        limit = self.ctx.config.guard.many_unprotected_alert
        lasting = sorted(k for k, since in self.unprotected_since.items() if since < read_ms)
        if len(lasting) > limit and not self.many_alerted:
            self.many_alerted = True
            self.emit("alert.many_unprotected", {"count": len(lasting), "limit": limit, "positions": lasting[:50]}, severity=Severity.CRITICAL)
        elif len(lasting) <= limit and self.many_alerted:
            self.many_alerted = False
            self.emit("guard.many_unprotected_cleared", {"count": len(lasting), "limit": limit})

    @handles(ProtectionReport)
    def _on_report(self, msg: ProtectionReport) -> None:
        owner = position_actor_name(msg.symbol, msg.position_id)
        self.waiting.pop(owner, None)
        if msg.protected or msg.state in ("closed", "failed", "rolled_back"):
            self.failures.pop(owner, None)
        else:
            self._failed(owner, f"could not restore protection (state {msg.state})")

    def _failed(self, owner: str, reason: str) -> None:
        n = self.failures[owner] = self.failures.get(owner, 0) + 1
        self.emit("guard.owner_failed", {"owner": owner, "reason": reason, "failures": n}, severity=Severity.ERROR)
        if n >= self.ctx.config.guard.max_failures:
            self.failures.pop(owner, None)
            ref = self.ctx.directory.lookup(owner)
            if ref is None or self.replacing.get(owner) != ref.actor_urn:  # not already being replaced
                self.emit("guard.restart_requested", {"owner": owner, "reason": reason}, severity=Severity.CRITICAL)
                self._restart(owner, ref.actor_urn if ref is not None else None, reason)

    def _restart(self, name: str, urn: str | None, reason: str) -> None:
        if urn is not None:
            self.replacing[name] = urn
        self.ctx.supervisor.tell(RestartChild(name=name, reason=f"guard: {reason}"))

    # ------------------------------------------------------------- marks
    def _current_mark(self, pos: PositionReport, marks_ms: int, now: int) -> Decimal | None:
        """The freshest mark of ``pos``'s symbol: pushed by the price feed, or the snapshot's read;
        None when neither is younger than a check interval."""
        pushed, fresh_ms = self.marks.get(pos.symbol), now - self._interval_ms()
        if pushed is not None and pushed.ts_ms >= max(marks_ms, fresh_ms):
            return pushed.price
        return pos.mark_price if marks_ms >= fresh_ms else None

    def _follow_marks(self, wanted: set[str]) -> None:
        for symbol in wanted - self.mark_symbols:
            self.ctx.directory.tell("price_feed", SubscribeMarks(symbol=symbol, subscriber=self.actor_ref, name=self.name))
        for symbol in self.mark_symbols - wanted:
            self.ctx.directory.tell("price_feed", UnsubscribeMarks(symbol=symbol, name=self.name))
            self.marks.pop(symbol, None)
        self.mark_symbols = wanted

    @handles(MarkPrice)
    def _on_mark(self, msg: MarkPrice) -> None:
        if msg.symbol in self.mark_symbols:
            self.marks[msg.symbol] = msg

    # ---------------------------------------------------------- liveness
    def _probe_every(self) -> None:
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        self._probe_timer = self.every(self.ctx.config.guard.probe_interval_secs * 1000, "probe")

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        if msg.name != "probe":
            return
        names = set(self.ctx.directory.names(POSITION_PREFIX))
        current: set[str] = set()
        for name in names:
            ref = self.ctx.directory.lookup(name)
            if ref is None or PositionName.parse(name) is None:
                continue
            current.add(ref.actor_urn)
            if self.replacing.get(name) == ref.actor_urn:
                continue  # asked to replace it: the supervisor has not yet
            self.replacing.pop(name, None)
            if name in self.probes:
                continue  # the last one is still waiting for its deadline
            self._probe(name, ref)
        for gone in set(self.probes) - names:
            del self.probes[gone]
        self.probes_sent = {n: k for n, k in self.probes_sent.items() if n in names}
        for gone in set(self.replacing) - names:
            del self.replacing[gone]
        self.answered &= current
        self.misses = {urn: n for urn, n in self.misses.items() if urn in current}

    def _probe(self, name: str, ref: pykka.ActorRef[Any]) -> None:
        probe = self.probes[name] = _Probe(probe_id=next(self._probe_ids), actor_urn=ref.actor_urn)
        try:
            ref.tell(Probe(probe_id=probe.probe_id, reply_to=self.actor_ref))
        except pykka.ActorDeadError:
            del self.probes[name]  # stopped meanwhile: the supervisor is replacing it
            return
        self.probes_sent[name] = self.probes_sent.get(name, 0) + 1
        self.after(self.ctx.config.guard.reply_deadline_secs * 1000, ProbeDeadline(name=name, probe_id=probe.probe_id))

    @handles(ProbeAnswered)
    def _on_probe_answered(self, msg: ProbeAnswered) -> None:
        probe = self.probes.get(msg.name)
        if probe is not None and probe.probe_id == msg.probe_id:
            del self.probes[msg.name]
        self.answered.add(msg.actor_urn)
        self.misses.pop(msg.actor_urn, None)

    @handles(ProbeDeadline)
    def _on_probe_deadline(self, msg: ProbeDeadline) -> None:
        probe = self.probes.get(msg.name)
        if probe is None or probe.probe_id != msg.probe_id:
            return  # answered
        del self.probes[msg.name]
        ref = self.ctx.directory.lookup(msg.name)
        if ref is None or ref.actor_urn != probe.actor_urn:
            return  # gone, or replaced meanwhile
        cfg = self.ctx.config.guard
        started = probe.actor_urn in self.answered  # never answered: still starting (rebuilding from its events)?
        n = self.misses[probe.actor_urn] = self.misses.get(probe.actor_urn, 0) + 1
        if n < (LAST_CALL if started else max(LAST_CALL, cfg.max_failures)):
            # a second chance at once, with a fresh deadline: one deadline alone does not prove a
            # hang (the clock may have stepped past it before the owner had its turn)
            self._probe(msg.name, ref)
            return
        reason = f"no answer to a probe within {cfg.reply_deadline_secs} s"
        self.emit("guard.owner_unresponsive", {"owner": msg.name, "actor_urn": probe.actor_urn, "reason": reason, "started": probe.actor_urn in self.answered}, severity=Severity.WARNING)
        self.failures.pop(msg.name, None)
        self.waiting.pop(msg.name, None)
        self._restart(msg.name, probe.actor_urn, reason)

