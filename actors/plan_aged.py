"""Planner: aged positions — progressive liquidation through one exit order (pure).

A position that neither stops out nor trails into profit is *aged* once it is
``aged.max_age_hours`` old (from the entry fill; an adopted one from the
exchange's own open time where the venue reports it, else from its adoption).
It then gets one reduce-only GTC limit exit order beside its stop:

* **grace** (``grace_hours``): at breakeven including both sides' taker fees;
* **progressive**: the accepted loss grows by ``loss_step_percent_per_hour``,
  times ``acceleration`` for the hours after the position is older than
  ``accelerate_after_hours`` (counted from open, like the age), up to
  ``max_loss_percent``;
* **cap**: a critical event; the exit stays at the cap price, or with
  ``at_cap = "market"`` the position is closed at market.

The phases, the accepted loss and the exit's price on the grid are the
policy's (:mod:`actors.aged_policy`); this planner places and moves the exit.

Exactly one exit order: a move places the new order, then cancels the old one
and verifies it gone (as for stops); every placement first reads the position
and uses its real size (gone: recorded as closed elsewhere). Refusals are
counted: after ``chunk_after_failures`` the exit is split into ``chunks``
(each on the step grid and above min quantity and notional), after
``widen_after_failures`` the loss is widened by ``widen_step_percent`` per
further failure (within the cap), after ``max_failures`` the aged path stops
with a critical event (a human decides). Known refusals (symbol not trading
-4140, region-restricted 170209, reduce-only would not reduce) end the attempt
with their meaning and a retry schedule. The exit is reviewed by a timer
message (``aged.recompute_interval_secs``), never a sleep, and moved only when
its price or size changes (any change on the grid is at least one tick).

Trailing activating while aged takes the position off the aged path for good:
the exit is cancelled and the trailing stop decides (an ``aged_phase`` event
``left`` says so).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from actors import position_events as pe
from actors.aged_policy import ACTIVE, HOUR_MS, Phase, age_of, allowed_loss, chunk_qty, exit_price, fee_rate, pct, phase_at, reason_of, target_price
from actors.position_commands import NOTHING, Again, CancelOrder, Env, LookUpOrder, Note, PlaceExit, Plan, ReadPosition, Retry, Step, error_text, fold, next_client_id
from actors.position_state import P, PositionState
from adapters.errors import Outcome, VenueError
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.events import Severity
from core.ids import Side

_MAX_RETRY_MS = HOUR_MS

#: Venue codes whose refusal has a known meaning for an exit.
KNOWN_REFUSALS: dict[str, str] = {
    "-4140": "symbol not trading",
    "170209": "region-restricted symbol: no order path can close it; a human must act",
    "-2022": "reduce-only would not reduce (position smaller or gone)",
    "110017": "reduce-only would not reduce (position smaller or gone)",
    "-4016": "outside the venue's price band",
    "-4024": "outside the venue's price band",
    "110003": "outside the venue's price band",
}


# ------------------------------------------------------------------ review
def on_path(s: PositionState) -> bool:
    return s.aged_phase in ACTIVE


def review(s: PositionState, env: Env) -> Plan:
    """The timer's question: which phase, which exit; what to do about it now."""
    cfg = env.config.aged
    if not cfg.enabled or s.state is not P.PROTECTED or s.entry_price is None or s.move_client_id is not None or s.close_requested:
        return NOTHING
    if s.aged_pending_client_id is not None:
        return Plan(next=LookUpOrder(step=Step.AGED_LOOKUP, client_id=s.aged_pending_client_id))
    if s.aged_old_order_id is not None:
        return Plan(next=CancelOrder(step=Step.AGED_CANCEL_OLD, order_id=s.aged_old_order_id))
    if not on_path(s):
        return leave(s, "", env.now_ms) if s.aged_order_id and s.aged_phase == "left" else NOTHING
    age = age_of(s, env.now_ms)
    if age is None:
        return NOTHING
    phase = phase_at(cfg, age)
    if phase is None:
        return NOTHING
    if s.trail_active:
        return leave(s, "trailing activated: the trailing stop takes over", env.now_ms)
    head = _phase_events(s, phase, age, env)
    after = fold(s, head.events, env.now_ms)
    if phase is Phase.CAP and cfg.at_cap == "market":
        from actors import plan_exit

        return head.then(plan_exit.begin_close(after, f"aged: cap {pct(cfg.max_loss_percent)}% (market)", env))
    if s.aged_retry_at_ms is not None and env.now_ms < s.aged_retry_at_ms:
        return head
    wanted = _wanted(after, phase, age, env, s.qty)
    if isinstance(wanted, str):
        return head.then(_refused_locally(after, wanted, env))
    price, qty, _loss, _reason, _note = wanted
    if s.aged_order_id is not None and price == s.aged_price and qty == s.aged_qty:
        return head  # unchanged: not moved (a move is at least one tick)
    return head.then(Plan(next=ReadPosition(step=Step.AGED_READ, reason=phase.value)))


def _phase_events(s: PositionState, phase: Phase, age: int, env: Env) -> Plan:
    cfg = env.config.aged
    if s.aged_phase == phase.value:
        return NOTHING
    loss = allowed_loss(cfg, age, s.aged_widen)
    events: list[pe.PositionEvent] = []
    notes: list[Note] = []
    if s.aged_phase is None:
        events.append(pe.AgedPhase(phase="aged", age_ms=age, loss_percent=loss, since=s.aged_since or "entry fill", from_ms=s.aged_from_ms or s.opened_ts_ms, reason=f"older than {pct(cfg.max_age_hours)} h"))
    why = {
        Phase.GRACE: "exit at breakeven including fees",
        Phase.PROGRESSIVE: f"grace over: accepted loss {pct(loss)}% and growing",
        Phase.CAP: f"accepted loss at the cap {pct(cfg.max_loss_percent)}%; " + ("closing at market" if cfg.at_cap == "market" else "the exit holds at the cap price"),
    }[phase]
    events.append(pe.AgedPhase(phase=phase.value, age_ms=age, loss_percent=loss, reason=why))
    if phase is Phase.CAP:
        notes.append(Note(type="alert.aged_cap", data={"age_ms": age, "loss_percent": loss, "at_cap": cfg.at_cap, "entry": s.entry_price}, severity=Severity.CRITICAL))
    return Plan(events=tuple(events), notes=tuple(notes))


def _wanted(s: PositionState, phase: Phase, age: int, env: Env, qty: Decimal) -> tuple[Decimal, Decimal, Decimal, str, str] | str:
    """(price, qty, loss, reason, note) of the exit this position should have, or why there can be none."""
    cfg = env.config.aged
    assert s.entry_price is not None
    loss = allowed_loss(cfg, age, s.aged_widen)
    target = target_price(s.side, s.entry_price, fee_rate(env.market, cfg), loss)
    price, note = exit_price(env.market, s.side, target, env.mark)
    if price is None:
        return note
    size = qty
    if s.aged_chunk_qty is not None and s.aged_chunk_qty < qty:
        rest = qty - s.aged_chunk_qty
        m = env.market
        if rest >= s.aged_chunk_qty and rest * price * m.contract_size >= m.min_notional:  # else the last takes the rest
            size = s.aged_chunk_qty
    return price, size, loss, reason_of(phase, loss), note


def _refused_locally(s: PositionState, why: str, env: Env) -> Plan:
    return failure(s, f"exit not placed: {why}", "refused_locally", env, known="outside the venue's price limits")


# -------------------------------------------------------------- placement
def after_read(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    """The position as the exchange has it; then the exit for its real size."""
    from actors import plan_moves

    if error is not None:
        return Plan(retry=Retry(step=Again.AGED, delay_ms=_retry_ms(env, 1)))
    if pos is None:
        return _found_flat(s, "aged: found flat before the exit")
    events: tuple[pe.PositionEvent, ...] = ()
    if pos.qty != s.qty:
        events = (pe.QtyCorrected(qty=pos.qty, was=s.qty, source="exchange"),)
    after = fold(s, events, env.now_ms)
    adjusted = plan_moves.adjust(after, env)
    if adjusted.next is not None:  # the stop covers the real size first; the exit follows on the next review
        return Plan(events=events).then(adjusted)
    age = age_of(after, env.now_ms)
    phase = phase_at(env.config.aged, age) if age is not None else None
    if phase is None or not on_path(after):
        return Plan(events=events)
    wanted = _wanted(after, phase, age or 0, env, pos.qty)
    if isinstance(wanted, str):
        return Plan(events=events).then(_refused_locally(after, wanted, env))
    price, qty, loss, reason, note = wanted
    if after.aged_order_id is not None and price == after.aged_price and qty == after.aged_qty:
        return Plan(events=events)
    cid, seq = next_client_id(after, "x")
    sent = pe.AgedExitSent(client_id=cid, price=price, qty=qty, loss_percent=loss, reason=reason, mark=env.mark, replaces=after.aged_order_id, seq=seq)
    notes = (Note(type="position.aged_exit_adjusted", data={"note": note, "price": price}),) if note else ()
    return Plan(events=(*events, sent), notes=notes, next=PlaceExit(step=Step.AGED_PLACE, client_id=cid, price=price, qty=qty))


def after_place(s: PositionState, cmd: PlaceExit, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN, OrderStatus.FILLED):
        return _placed(s, order, cmd.price, cmd.qty, env)
    if error is not None and error.outcome in (Outcome.UNKNOWN, Outcome.RETRYABLE):
        # It may have landed: looked up by its client id before anything else is sent.
        note = Note(type="position.aged_exit_unresolved", data={"client_id": cmd.client_id, "error": str(error)}, severity=Severity.WARNING)
        return Plan(notes=(note,), retry=Retry(step=Again.AGED_LOOKUP, delay_ms=_retry_ms(env, 1)))
    code = error.code if error is not None else None
    known = KNOWN_REFUSALS.get(code or "")
    if known is None and error is not None and error.outcome is Outcome.SYMBOL_UNAVAILABLE:
        known = "symbol unavailable"
    outcome = error.outcome.value if error is not None else "not_live"
    return failure(s, error_text(error, f"exit {order.status.value if order else 'not found'}"), outcome, env, known=known, price=cmd.price)


def _placed(s: PositionState, order: OrderReport, price: Decimal, qty: Decimal, env: Env) -> Plan:
    assert s.aged_pending_client_id is not None and s.aged_pending_reason is not None and s.aged_pending_loss is not None
    placed = pe.AgedExitPlaced(
        order_id=order.order_id, client_id=s.aged_pending_client_id, price=order.limit_price or price, qty=order.amount or qty, loss_percent=s.aged_pending_loss,
        reason=s.aged_pending_reason, replaces=s.aged_order_id,
    )
    after = fold(s, (placed,), env.now_ms)
    if after.aged_old_order_id is not None:  # two exits live for this one step: the old one goes now
        return Plan(events=(placed,), next=CancelOrder(step=Step.AGED_CANCEL_OLD, order_id=after.aged_old_order_id))
    if order.status is OrderStatus.FILLED:
        return Plan(events=(placed,), next=ReadPosition(step=Step.AGED_FILL_READ, fill=order))
    return Plan(events=(placed,))


def failure(s: PositionState, reason: str, outcome: str, env: Env, *, known: str | None = None, price: Decimal | None = None) -> Plan:
    """A refused exit: counted, retried on a schedule; chunks, then a wider loss, then a critical stop."""
    cfg = env.config.aged
    n = s.aged_failures + 1
    delay = _retry_ms(env, n)
    failed = pe.AgedExitFailed(reason=reason, outcome=outcome, attempt=n, retry_at_ms=env.now_ms + delay, known=known, price=price)
    events: list[pe.PositionEvent] = [failed]
    notes: list[Note] = []
    if known and "region" in known:
        notes.append(Note(type="alert.aged_unclosable", data={"reason": reason, "note": known}, severity=Severity.CRITICAL))
    if n >= cfg.max_failures:
        age = age_of(s, env.now_ms) or 0
        events.append(pe.AgedPhase(phase="gave_up", age_ms=age, loss_percent=s.aged_loss or Decimal(0), reason=f"{n} exit attempts failed; last: {reason}. The stop stays; a human decides"))
        notes.append(Note(type="alert.aged_gave_up", data={"attempts": n, "last_error": reason}, severity=Severity.CRITICAL))
        return Plan(events=tuple(events), notes=tuple(notes))
    if n >= cfg.chunk_after_failures and not s.aged_chunks and cfg.chunks > 1:
        part = chunk_qty(env.market, s.qty, cfg.chunks, price or s.entry_price or Decimal(0))
        if part < s.qty:
            events.append(pe.AgedFallback(kind="chunks", failures=n, chunks=cfg.chunks, chunk_qty=part, widen_percent=s.aged_widen))
        else:
            notes.append(Note(type="position.aged_no_chunks", data={"qty": s.qty, "note": "chunks would fall below the minimum quantity or notional"}, severity=Severity.WARNING))
    if n >= cfg.widen_after_failures:
        widened = s.aged_widen + cfg.widen_step_percent
        age = age_of(s, env.now_ms) or 0
        if allowed_loss(cfg, age, s.aged_widen) < cfg.max_loss_percent:
            events.append(pe.AgedFallback(kind="widen", failures=n, widen_percent=widened))
    return Plan(events=tuple(events), notes=tuple(notes), retry=Retry(step=Again.AGED, delay_ms=delay))


def _retry_ms(env: Env, n: int) -> int:
    return int(min(_MAX_RETRY_MS, env.config.aged.retry_delay_secs * 1000 * 2 ** min(max(n - 1, 0), 12)))


def after_lookup(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    """An exit sent before a restart (or a timeout): live -> it is the exit; unknown -> not placed."""
    if error is not None:
        return Plan(retry=Retry(step=Again.AGED_LOOKUP, delay_ms=_retry_ms(env, cmd.attempt + 1), attempt=cmd.attempt + 1))
    if order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN, OrderStatus.FILLED):
        assert s.aged_pending_price is not None and s.aged_pending_qty is not None
        return _placed(s, order, s.aged_pending_price, s.aged_pending_qty, env)
    if order is None and cmd.attempt < env.config.position.entry_lookups:
        return Plan(retry=Retry(step=Again.AGED_LOOKUP, delay_ms=env.config.position.retry_delay_ms * 2 ** min(cmd.attempt + 1, 6), attempt=cmd.attempt + 1))
    status = order.status.value if order is not None else "not found"
    failed = pe.AgedExitFailed(reason=f"the exit sent before a restart or timeout is {status}", outcome="not_live", attempt=s.aged_failures, retry_at_ms=None)
    return Plan(events=(failed,))


# ---------------------------------------------------- replacing the old exit
def after_cancel_old(s: PositionState, cmd: CancelOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None:
        return _cancel_again(s, cmd.attempt, str(error), env)
    if order is not None and order.status is not OrderStatus.FILLED and order.filled <= 0:
        gone = pe.AgedExitCancelled(order_id=cmd.order_id, reason="replaced")
        return Plan(events=(gone,)).then(check(fold(s, (gone,), env.now_ms)))
    return Plan(next=LookUpOrder(step=Step.AGED_CHECK_OLD, order_id=cmd.order_id, attempt=cmd.attempt))


def _cancel_again(s: PositionState, attempt: int, error: str, env: Env) -> Plan:
    attempt += 1
    if attempt >= env.config.position.cancel_attempts and s.aged_old_order_id is not None:
        left = pe.AgedExitCancelled(order_id=s.aged_old_order_id, reason=f"could not be cancelled: {error}", left=True)
        note = Note(type="position.aged_old_exit_left", data={"order_id": s.aged_old_order_id, "attempts": attempt, "error": error}, severity=Severity.CRITICAL)
        return Plan(events=(left,), notes=(note,))
    return Plan(retry=Retry(step=Again.AGED_CANCEL, delay_ms=env.config.position.retry_delay_ms * 2 ** min(attempt, 6), attempt=attempt))


def after_check_old(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None or (order is not None and order.status is OrderStatus.OPEN and order.filled <= 0):
        return _cancel_again(s, cmd.attempt, error_text(error, "the old exit is still open"), env)
    if order is not None and order.filled > 0:  # the old exit filled while we were moving it
        return Plan(next=ReadPosition(step=Step.AGED_FILL_READ, fill=order))
    assert cmd.order_id is not None
    gone = pe.AgedExitCancelled(order_id=cmd.order_id, reason="replaced (gone)")
    return Plan(events=(gone,)).then(check(fold(s, (gone,), env.now_ms)))


# ------------------------------------------------------------- the live exit
def check(s: PositionState, reason: str = "") -> Plan:
    """Ask the exchange about the live exit (filled? gone?)."""
    if s.aged_order_id is None:
        return NOTHING
    return Plan(next=LookUpOrder(step=Step.AGED_CHECK, order_id=s.aged_order_id, reason=reason))


_FLAT = "flat: "


def check_flat(s: PositionState, reason: str) -> Plan:
    """The position was found flat: did the live exit fill? (filled -> the aged close with its
    fill; gone -> the next of our orders is asked, then ``reason``: closed outside the bot)."""
    return check(s, _FLAT + reason)


def due(s: PositionState, mark: Decimal) -> bool:
    """The mark has reached the live exit's price: worth asking whether it filled."""
    if s.aged_order_id is None or s.aged_price is None:
        return False
    return mark >= s.aged_price if s.side is Side.LONG else mark <= s.aged_price


def after_check(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None:
        return NOTHING  # asked again on the next review
    if order is not None and order.filled > 0 and order.status is not OrderStatus.OPEN:
        return Plan(next=ReadPosition(step=Step.AGED_FILL_READ, fill=order))
    if order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
        return NOTHING
    if cmd.order_id is None or cmd.order_id != s.aged_order_id:
        return NOTHING
    status = order.status.value if order is not None else "not found"
    gone = pe.AgedExitCancelled(order_id=cmd.order_id, reason=f"gone on the exchange ({status})")
    if cmd.reason.startswith(_FLAT):
        return Plan(events=(gone,)).then(_found_flat(fold(s, (gone,), env.now_ms), cmd.reason.removeprefix(_FLAT)))
    return Plan(events=(gone,))  # the next review places a new one (reading the position first)


def after_fill_read(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    """An exit filled: flat -> the position is closed with the exit's reason; else a chunk is recorded."""
    from actors import plan_exit, plan_moves

    fill = cmd.fill
    assert fill is not None
    if error is not None:
        return Plan(retry=Retry(step=Again.AGED, delay_ms=_retry_ms(env, 1)))
    reason = (s.aged_reason if fill.order_id in (s.aged_order_id, None) else None) or s.aged_reason or "aged"
    if pos is None:
        return plan_exit.record_exit(s, pe.Closed, fill, reason, env)
    pnl = s.side.pnl(s.entry_price, fill.average, fill.filled) if fill.average is not None and s.entry_price is not None else None
    filled = pe.AgedExitFilled(order_id=fill.order_id, qty=fill.filled, price=fill.average, pnl=pnl, reason=reason, fee=fill.fee)
    events: tuple[pe.PositionEvent, ...] = (filled,)
    after = fold(s, events, env.now_ms)
    if pos.qty != after.qty:
        corrected = pe.QtyCorrected(qty=pos.qty, was=after.qty, source="exchange")
        events += (corrected,)
        after = fold(after, (corrected,), env.now_ms)
    adjusted = plan_moves.adjust(after, env)  # the stop follows the smaller position
    return Plan(events=events).then(adjusted if adjusted.next is not None else review(after, env))


def _found_flat(s: PositionState, reason: str) -> Plan:
    from actors import plan_exit

    return plan_exit.found_flat(s, reason)


# ----------------------------------------------------------------- leaving
def leave(s: PositionState, reason: str, now_ms: int) -> Plan:
    """Off the aged path (trailing took over): the exit is cancelled, and it says so."""
    events: tuple[pe.PositionEvent, ...] = ()
    if s.aged_phase != "left":
        events = (pe.AgedPhase(phase="left", age_ms=age_of(s, now_ms) or 0, loss_percent=s.aged_loss or Decimal(0), reason=reason),)
    head = Plan(events=events)
    if s.aged_order_id is None:
        return head
    return head.then(Plan(next=CancelOrder(step=Step.AGED_LEAVE, order_id=s.aged_order_id)))


def after_leave(s: PositionState, cmd: CancelOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None:
        note = Note(type="position.aged_exit_cancel_retry", data={"order_id": cmd.order_id, "error": str(error)}, severity=Severity.WARNING)
        return Plan(notes=(note,), retry=Retry(step=Again.AGED, delay_ms=_retry_ms(env, 1)))
    if order is not None and order.status is not OrderStatus.FILLED and order.filled <= 0:
        return Plan(events=(pe.AgedExitCancelled(order_id=cmd.order_id, reason="left the aged path"),))
    return Plan(next=LookUpOrder(step=Step.AGED_CHECK, order_id=cmd.order_id))


def wants_leave(s: PositionState) -> bool:
    """Trailing has activated while the position is on the aged path."""
    return s.state is P.PROTECTED and s.trail_active and s.aged_phase in (Phase.GRACE.value, Phase.PROGRESSIVE.value, Phase.CAP.value)


# ----------------------------------------------------------- read model
def view(s: PositionState, now_ms: int, mark: Decimal | None) -> dict[str, Any]:
    """What ``ctl positions`` / ``ctl aged`` show of a position's aged path."""
    age = age_of(s, now_ms)
    dist = None
    if mark is not None and s.aged_price is not None and mark > 0:
        dist = ((s.aged_price - mark) / mark * 100).quantize(Decimal("0.01"))
    return {
        "age_h": (Decimal(age) / HOUR_MS).quantize(Decimal("0.01")) if age is not None else None, "phase": s.aged_phase, "since": s.aged_since,
        "loss_percent": s.aged_loss, "exit_price": s.aged_price, "exit_qty": s.aged_qty, "exit_order_id": s.aged_order_id, "distance_percent": dist,
        "failures": s.aged_failures,
    }
