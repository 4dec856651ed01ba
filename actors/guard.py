"""The guard: is every open position protected *right now*, per the exchange?

It never places an order. Every ``guard.interval_secs`` it asks the sync
actor for the account as the exchange shows it: the stream-fed view while
the venue's order and position streams are live (no request), else a fresh
full read; it uses the last one if it is recent. On every answer it checks each position the exchange shows: a live reduce-only stop
on the closing side, on the protective side of the mark, covering the whole
quantity. If not, it asks the owner (``EnsureProtected``) and waits for its
``ProtectionReport``: an owner that misses ``reply_deadline_secs`` (stuck) or
keeps failing ``max_failures`` times is restarted by the supervisor (the
fresh actor protects on start). Unprotected beyond the emergency loss: the
owner is told to close. Unprotected longer than ``unprotected_alert_secs``:
a critical alert event.
"""

from __future__ import annotations

from decimal import Decimal

from actors.messages import EnsureProtected, ProtectionReport
from adapters.venue import OrderReport, PositionReport
from core.events import Severity
from core.messages import ClosePosition, ReconcileFinished, ReconcileNow, RestartChild, Tick
from supervision.actor import ActorContext, ManagedActor, handles


def covering_stops(pos: PositionReport, orders: tuple[OrderReport, ...]) -> Decimal:
    """Quantity covered by live stops that would close ``pos`` (on the protective side of the mark)."""
    closing = "sell" if pos.side == "long" else "buy"
    total = Decimal(0)
    for o in orders:
        # one-way mode: reduce-only; hedge mode: the order belongs to the position's side
        # (Binance refuses reduceOnly there, positionSide says it instead)
        closes_it = o.position_side == pos.side if o.position_side is not None else o.reduce_only
        if o.symbol != pos.symbol or o.side != closing or not o.is_stop or not closes_it:
            continue
        if pos.mark_price is not None and ((pos.side == "long" and o.trigger_price > pos.mark_price) or (pos.side == "short" and o.trigger_price < pos.mark_price)):
            continue  # a take-profit (or a stop already crossed): not protection
        total += o.amount - o.filled
    return total


class GuardActor(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext) -> None:
        super().__init__(name=name, ctx=ctx)
        self.unprotected_since: dict[str, int] = {}  # position key -> first seen unprotected
        self.alerted: set[str] = set()
        self.waiting: dict[str, tuple[int, str]] = {}  # owner name -> (deadline, position key)
        self.failures: dict[str, int] = {}
        self.last_read_ms: int | None = None
        self.has_positions = False

    def started(self) -> None:
        self.every(self.ctx.config.guard.interval_secs * 1000, "guard")

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        now, cfg = self.ctx.clock.now_ms(), self.ctx.config.guard
        for owner, (deadline, key) in list(self.waiting.items()):
            if now > deadline:
                del self.waiting[owner]
                self._failed(owner, f"no answer to EnsureProtected within {cfg.reply_deadline_secs} s")
        has_positions = self.has_positions or bool(self.ctx.directory.names("position:"))
        if has_positions and (self.last_read_ms is None or now - self.last_read_ms >= cfg.interval_secs * 1000):
            # live streams: the sync actor answers from its stream-fed view, no request; else a full read
            self.ctx.directory.tell("sync", ReconcileNow(reply_to=self.actor_ref, cached_ok=True))  # nothing open: sync's own reads suffice

    @handles(ReconcileFinished)
    def _on_reconcile(self, msg: ReconcileFinished) -> None:
        if not msg.ok or msg.snapshot is None:
            return
        snap, cfg, now = msg.snapshot, self.ctx.config.guard, self.ctx.clock.now_ms()
        self.last_read_ms = snap.read_ms
        self.has_positions = bool(snap.positions)
        owners = {(r["symbol"], r["side"]): r for r in snap.owned}
        seen = set()
        for pos in snap.positions:
            key = f"{pos.symbol}:{pos.side}"
            seen.add(key)
            if covering_stops(pos, snap.orders) >= pos.qty:
                if self.unprotected_since.pop(key, None) is not None:
                    self.emit("guard.protected_again", {"position": key}, symbol=pos.symbol)
                self.alerted.discard(key)
                continue
            since = self.unprotected_since.setdefault(key, snap.read_ms)
            row = owners.get((pos.symbol, pos.side))
            owner = f"position:{pos.symbol}:{row['position_id']}" if row else None
            self.emit("guard.unprotected", {"position": key, "qty": pos.qty, "covered": covering_stops(pos, snap.orders), "owner": owner, "for_ms": now - since}, severity=Severity.WARNING, symbol=pos.symbol, position_id=row["position_id"] if row else None)
            if now - since >= cfg.unprotected_alert_secs * 1000 and key not in self.alerted:
                self.alerted.add(key)
                self.emit("alert.position_unprotected", {"position": key, "for_ms": now - since}, severity=Severity.CRITICAL, symbol=pos.symbol)
            if owner is None:
                continue  # untracked: the sync actor adopts it
            if _loss_percent(pos) >= cfg.emergency_loss_percent:
                self.ctx.directory.tell(owner, ClosePosition(reason=f"emergency: unprotected and {_loss_percent(pos):.2f} % in loss"))
            if owner not in self.waiting:
                self.waiting[owner] = (now + cfg.reply_deadline_secs * 1000, key)
                if not self.ctx.directory.tell(owner, EnsureProtected(reply_to=self.actor_ref)):
                    del self.waiting[owner]
                    self._failed(owner, "owner not running")
        for key in set(self.unprotected_since) - seen:
            del self.unprotected_since[key]  # flat now: nothing to protect

    @handles(ProtectionReport)
    def _on_report(self, msg: ProtectionReport) -> None:
        owner = f"position:{msg.symbol}:{msg.position_id}"
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
            self.emit("guard.restart_requested", {"owner": owner, "reason": reason}, severity=Severity.CRITICAL)
            self.ctx.supervisor.tell(RestartChild(name=owner, reason=f"guard: {reason}"))


def _loss_percent(pos: PositionReport) -> Decimal:
    if pos.mark_price is None or not pos.entry_price:
        return Decimal(0)
    move = (pos.mark_price - pos.entry_price) / pos.entry_price * 100
    return -move if pos.side == "long" else move
