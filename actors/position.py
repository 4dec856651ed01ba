"""The position actor: one per position, the only code that touches its orders.

It holds no rules of its own: it *interprets* the plans of the pure planners
(:mod:`actors.plan_open`, :mod:`actors.plan_moves`, :mod:`actors.plan_tps`,
:mod:`actors.plan_exit`, :mod:`actors.plan_truth`, :mod:`actors.plan_aged`; which
answers which step: :mod:`actors.position_dispatch`). A plan's events are folded
and stored (write-ahead ones durably, before the exchange is asked), its
commentary emitted, its reports told, and its one command run on the I/O loop.
The command's answer comes back as ``IOCompleted`` tagged with an operation
number (a late answer to an old operation is never mistaken for the current
one) and goes to the planner its :class:`~actors.position_commands.Step` names.

Write-ahead records are queued without blocking the actor: the command they
announce is sent only once the record is committed (``_Committed`` comes
back), so a slow store slows a position down but never fails it, and nothing
reaches the exchange without its record. The wait counts as the operation
being in flight.

One exchange operation is in flight at a time. Marks, checks and close
requests that arrive meanwhile are considered afresh once it is done. Retries
are scheduled messages; nothing sleeps here. Only venue and network errors are
translated; anything else raised by a venue call is a bug: the actor crashes
and its supervisor restarts it from its events (look-ups by client id make that
safe).
"""

from __future__ import annotations

from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

import pykka

from actors import plan_aged, plan_exit, plan_mark, plan_moves, plan_open, plan_tps, plan_truth
from actors import position_commands as pc
from actors import position_events as pe
from actors.mark_gate import MarkGate
from actors.messages import EnsureProtected, ExchangeView, MarkPrice, MarkReady, OpenRequest, ProtectionReport, RetryStep, SubscribeMarks, UnsubscribeMarks
from actors.position_dispatch import AFTER, resume_plan, retry_plan
from actors.position_state import P, PositionState, apply, rebuild
from actors.price_feed import STALE_AFTER_INTERVALS
from actors.trailing import TrailState
from adapters.errors import VenueError, translate
from adapters.markets import Market
from adapters.venue import Venue
from core.events import Event
from core.ids import Side, position_actor_name
from core.messages import ClosePosition, IOCompleted, Message, OwnerRecovered, Tick
from supervision.actor import ActorContext, Fenced, ManagedActor, handles

__all__ = ["PositionActor", "position_actor_name"]

_MARKS = (MarkReady, MarkPrice)


class _Committed(Message, frozen=True, kw_only=True):
    """Internal: the write-ahead record of operation ``op`` is committed; send it now."""

    op: int


class PositionActor(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, venue: Venue, position_id: str, request: OpenRequest | None = None, price_feed: Any = None, report_to: Any = None) -> None:
        super().__init__(name=name, ctx=ctx)
        self.report_to = report_to  # who hears about a recovered position (no requester after a restart)
        self.venue = venue
        self.pid = position_id
        self.request = request
        self.price_feed = price_feed
        self.state: PositionState | None = None
        self.last_mark: Decimal | None = None
        self.last_mark_ms: int | None = None
        self._op: tuple[int, pc.Command] | None = None  # (number, command) of the operation in flight
        self._op_seq = 0
        self._trail: TrailState | None = None  # trailing memory (the best mark is persisted only now and then)
        self._market: tuple[Any, Market] | None = None  # (the venue's markets, this symbol's market), looked up once
        self._trail_saved_ms = 0
        self._gate = MarkGate()  # the calm band of this state, published on the conflation slot
        self._ensure_waiters: list[Any] = []
        self._ensure_check_due = False
        self._verify_round = 0
        self._aged_due = False  # the aged timer fired while an operation was in flight
        self._view_due: ExchangeView | None = None  # the newest reconcile view that came while busy
        self._recovering = False  # rebuilt from events: tells the supervisor once its recovery plan is done
        self._checked_ok = False  # the last exchange operation was answered (not a venue error)
        self._durable: Any = None  # the future of the newest write-ahead record not yet known committed

    @property
    def cfg(self) -> Any:
        return self.ctx.config.position

    @property
    def s(self) -> PositionState:
        assert self.state is not None, "the state exists from started() on"
        return self.state

    # ------------------------------------------------------------- start
    def started(self) -> None:
        history = self.load_events(position_id=self.pid)
        recovered = rebuild(history)  # None while the history holds no lifecycle event yet
        r = self.request
        if recovered is not None:
            self.state = recovered
            self.log.info("recovered from {} events in state {}", len(history), recovered.state.value)
            self._recovering = r is None  # started by the supervisor at start-up (not adopted, not a new open)
            self._run(resume_plan(self.s, self._env()) if recovered.state.is_open else pc.Plan(stop=True))  # a closed one needs no market
            self._report_recovered()
        elif r is not None and r.adopt is not None:
            self.state = PositionState(position_id=self.pid, exchange=r.exchange, symbol=r.symbol, side=Side(r.adopt.side), correlation_id=r.correlation_id)
            self._run(plan_open.begin_adoption(self.s, r.adopt))
        elif r is not None:
            self.state = PositionState(position_id=self.pid, exchange=r.exchange, symbol=r.symbol, side=Side(r.side), correlation_id=r.correlation_id)
            opened = pe.OpenRequested(side=r.side, quote_amount=r.quote_amount, leverage=r.leverage)
            self._run(pc.Plan(events=(opened,), next=pc.ReadMark(step=pc.Step.SIZE)))
        else:
            raise RuntimeError(f"position {self.pid}: no events and nothing to open")
        self.every(self.cfg.verify_interval_secs * 1000, "verify")
        if self.ctx.config.aged.enabled:
            self.every(self.ctx.config.aged.recompute_interval_secs * 1000, "aged")

    # ----------------------------------------------------- interpreting
    def _env(self) -> pc.Env:
        s = self.s
        newest = self._gate.slot.peek() if self._gate.slot is not None else None
        if newest is not None and (self.last_mark_ms is None or newest.ts_ms >= self.last_mark_ms):
            self.last_mark, self.last_mark_ms = newest.price, newest.ts_ms  # kept back by the feed inside the band: still the newest
        trail_best = self._trail.best if self._trail is not None else None
        markets = self.venue.markets
        if self._market is None or self._market[0] is not markets:  # looked up again once the venue's markets are reloaded
            self._market = (markets, self.venue.market(s.symbol))
        return pc.Env(
            config=self.ctx.config, market=self._market[1], now_ms=self.ctx.clock.now_ms(), mark=self.last_mark,
            mark_ms=self.last_mark_ms, trail_best=trail_best, forced_close_kind=self.venue.style.forced_close_kind,
        )

    def _run(self, plan: pc.Plan) -> None:
        if not plan.events and plan.next is None and not (plan.notes or plan.tell or plan.retry or plan.subscribe or plan.stop):
            if plan.trail is not None:  # most marks: only the trailing memory changes
                self._trail = plan.trail
            return
        for event in plan.events:
            self._record(event)
        s = self.s
        for note in plan.notes:
            self.emit(note.type, note.data, severity=note.severity, position_id=self.pid, symbol=s.symbol, correlation_id=s.correlation_id)
        for report in plan.tell:
            self._tell_requester(report)
        if plan.trail is not None:
            self._trail = plan.trail
        if any(isinstance(e, pe.TrailingActivated | pe.TrailBest) for e in plan.events):
            self._trail_saved_ms = self.ctx.clock.now_ms()
        if any(isinstance(e, pe.StopMoved) for e in plan.events) and self._trail is not None and s.trail_best is not None:
            self._trail = TrailState(active=self._trail.active or s.trail_active, best=s.trail_best, activated_ms=self._trail.activated_ms, breakeven_reached=self._trail.breakeven_reached)
        if plan.subscribe:
            self._subscribe()
        if plan.next is not None:
            self._start(plan.next)
        if plan.retry is not None:
            self.after(plan.retry.delay_ms, RetryStep(retry=plan.retry))
        if plan.stop:
            self.stop()

    def _record(self, event: pe.PositionEvent) -> None:
        """Fold an event into the state and store it (with the new projection)."""
        s = self.s
        now = self.ctx.clock.now_ms()
        new = apply(s, event, now)
        type_ = pe.type_of(event)
        ev = Event(
            type=type_, ts_ms=now, actor=self.name, severity=event.severity, position_id=self.pid, correlation_id=s.correlation_id,
            symbol=s.symbol, exchange=s.exchange, data=pe.to_record(event), projection=new.projection(),
        )
        if event.WRITE_AHEAD:  # committed before its command is sent (see _start); the actor does not block
            self._durable = self.append_durable_then(ev, None)
        else:
            self.append_event(ev)  # (crash points: TRADEBOT_CRASH_POINT, see supervision.actor)
        self.state = new

    def _start(self, cmd: pc.Command) -> None:
        assert self._op is None, f"{self.pid}: {cmd.step.value} started while {self._op[1].step.value if self._op else ''} is in flight"
        self._op_seq += 1
        self._op = (self._op_seq, cmd)
        durable, self._durable = self._durable, None
        if durable is not None and not durable.done():
            self.tell_when_committed(durable, _Committed(op=self._op_seq))
            return  # sent on _Committed: its write-ahead record first
        if durable is not None and isinstance(durable.exception(), Fenced):
            raise durable.exception()
        self._send(cmd)

    def _send(self, cmd: pc.Command) -> None:
        assert self._op is not None
        self.io_call(cmd.step.value, self._coroutine(cmd), correlation_id=str(self._op[0]))

    @handles(_Committed)
    def _on_committed(self, msg: _Committed) -> None:
        if self._op is not None and self._op[0] == msg.op:
            self._send(self._op[1])

    def _coroutine(self, cmd: pc.Command) -> Coroutine[Any, Any, Any]:
        s, v, ctx = self.s, self.venue, self._ctx()
        read_ctx = {**ctx, "protective": True} if cmd.step in pc.PROTECTIVE_READS else None
        match cmd:
            case pc.ReadMark():
                return v.mark_price(s.symbol, ctx=read_ctx)
            case pc.ReadPosition():
                return v.position(s.symbol, s.side, ctx=read_ctx)
            case pc.LookUpOrder(order_id=oid, client_id=cid):
                return v.fetch_order(s.symbol, order_id=oid, client_id=cid if oid is None else None, ctx=read_ctx)
            case pc.PlaceEntry():
                return v.open_market(s.symbol, s.entry_side, cmd.qty, cmd.client_id, ref_price=cmd.ref_price, leverage=s.leverage, ctx=ctx)
            case pc.PlaceStop():
                return v.place_stop(s.symbol, s.closing_side, cmd.qty, cmd.price, cmd.client_id, ctx=ctx)
            case pc.PlaceTakeProfit():
                return v.place_take_profit(s.symbol, s.closing_side, cmd.qty, cmd.price, cmd.client_id, ctx=ctx)
            case pc.PlaceExit():
                return v.place_exit_limit(s.symbol, s.closing_side, cmd.qty, cmd.price, cmd.client_id, ctx=ctx)
            case pc.SendClose():
                return v.close_market(s.symbol, s.closing_side, cmd.qty, cmd.client_id, ctx=ctx)
            case pc.CancelOrder():
                return v.cancel(s.symbol, cmd.order_id, ctx=ctx)
            case pc.ReadFills():
                return v.fills(s.symbol, since_ms=cmd.since_ms, ctx=read_ctx)
            case pc.ReadOpenTps():
                return self._open_tps()
        raise TypeError(f"no coroutine for {cmd!r}")

    async def _open_tps(self) -> list[tuple[int, Any]]:
        s = self.s
        return [(tp.level, await self.venue.fetch_order(s.symbol, order_id=tp.order_id)) for tp in s.open_tps]

    @handles(IOCompleted)
    def _on_io(self, msg: IOCompleted) -> None:
        if self._op is None or msg.correlation_id != str(self._op[0]):
            self.log.debug("ignored a late result of {}", msg.purpose)
            return
        cmd = self._op[1]
        self._op = None
        error: VenueError | None = None
        if msg.exception is not None:
            error = translate(msg.exception)
            if error is None:
                raise msg.exception  # our bug, not a venue refusal: crash, restart, rebuild from events
        plan = AFTER[cmd.step](self.s, cmd, None if error else msg.result, error, self._env())
        self._run(plan)
        self._continue()
        self._checked_ok = error is None
        if error is not None and self._recovering and self._op is None:
            self.after(self.cfg.retry_delay_ms, RetryStep(retry=pc.Retry(step=pc.Again.VERIFY, delay_ms=self.cfg.retry_delay_ms)))  # the recovery check again, soon
        else:
            self._report_recovered()
        self.finish_drain_if_idle()

    def _continue(self) -> None:
        """Between operations: a close asked for while busy, a guard's check, its answer."""
        s = self.state
        if self._op is not None or s is None:
            return
        if s.state is P.PROTECTED and s.close_requested and s.move_client_id is None:
            return self._run(plan_exit.begin_close(s, s.close_requested, self._env()))
        if plan_aged.wants_leave(s) and s.move_client_id is None:
            return self._run(plan_aged.review(s, self._env()))  # trailing took over: the exit goes
        if self._aged_due and s.state is P.PROTECTED:
            self._aged_due = False
            plan = plan_aged.review(s, self._env())
            if plan.next is not None or plan.events or plan.retry is not None:
                return self._run(plan)
        if self._view_due is not None and s.move_client_id is None:
            view, self._view_due = self._view_due, None
            plan = plan_truth.on_view(s, view)  # (anything it finds is read afresh first)
            if plan.next is not None or plan.events:
                return self._run(plan)
        if self._ensure_check_due and s.state is P.PROTECTED:
            self._ensure_check_due = False
            return self._run(plan_truth.check_stop(s))
        if self._ensure_waiters and not self._ensure_check_due and (s.state is P.PROTECTED or not s.state.is_open):
            report = ProtectionReport(position_id=self.pid, symbol=s.symbol, state=s.state.value, protected=s.is_protected, stop_order_id=s.stop_order_id, stop_price=s.stop_price)
            waiters, self._ensure_waiters = self._ensure_waiters, []
            for ref in waiters:
                try:
                    ref.tell(report)
                except pykka.ActorDeadError:
                    pass

    def _report_recovered(self) -> None:
        """Rebuilt at start-up: once its orders are checked (no operation in flight, protected), say so;
        the intake opens when every recovered owner has (a closed one reports by stopping)."""
        s = self.state
        if not self._recovering or not self._checked_ok or self._op is not None or s is None or s.state is not P.PROTECTED:
            return
        self._recovering = False
        if self.ctx.supervisor is not None:
            try:
                self.ctx.supervisor.tell(OwnerRecovered(name=self.name, state=s.state.value, protected=s.is_protected))
            except pykka.ActorDeadError:
                pass

    def busy(self) -> bool:
        return self._op is not None or (self.state is not None and self.state.state in (P.PENDING_ENTRY, P.ENTRY_PLACED, P.PENDING_STOP, P.CLOSING))

    # ---------------------------------------------------------- messages
    @handles(EnsureProtected)
    def _on_ensure(self, msg: EnsureProtected) -> None:
        """Verify with the exchange (never from memory), restore if needed, then answer."""
        if msg.reply_to is not None:
            self._ensure_waiters.append(msg.reply_to)
        self._ensure_check_due = self.state is not None and self.state.state is P.PROTECTED
        self._continue()

    @handles(ClosePosition)
    def _on_close(self, msg: ClosePosition) -> None:
        self._run(plan_exit.close_on_request(self.s, msg.reason, self._env(), busy=self._op is not None))

    @handles(ExchangeView)
    def _on_exchange_view(self, msg: ExchangeView) -> None:
        if self.state is None:
            return
        if self._op is not None or self.state.move_client_id is not None:
            self._view_due = msg  # judged once the operation is done (with streams live the next may be minutes away)
            return
        self._run(plan_truth.on_view(self.state, msg))

    @handles(RetryStep)
    def _on_retry(self, msg: RetryStep) -> None:
        if self._op is not None:
            self.after(self.cfg.retry_delay_ms, msg)
            return
        self._run(retry_plan(self.s, msg.retry, self._env()))
        self._report_recovered()

    @handles(MarkReady)
    def _on_mark_ready(self, msg: MarkReady) -> None:
        self._gate.slot = msg.slot
        mark = msg.slot.take()  # the newest by now: marks that arrived while we were busy are skipped
        if mark is not None:
            self._on_mark(mark)

    @handles(MarkPrice)
    def _on_mark(self, msg: MarkPrice) -> None:
        self.last_mark, self.last_mark_ms = msg.price, msg.ts_ms
        s = self.state
        if s is None or s.state is not P.PROTECTED or self._op is not None or s.stop_price is None:
            return  # one operation at a time; the newest mark is considered once it is done
        gate = self._gate
        gate.seen = msg
        config, markets = self.ctx.config, self.venue.markets
        band = gate.current(s, self._trail, config, markets)
        if band is not None and band.holds(msg.price, self.ctx.clock.now_ms()):
            return  # inside the calm band of this very state: the rules would change nothing
        env = self._env()
        trail = self._trail if self._trail is not None else plan_moves.trail_of(s)
        plan = plan_mark.decide(s, trail, msg.price, env, self._trail_saved_ms)
        self._run(plan)
        quiet = plan_mark.changes_nothing(plan) and self.state is s
        kept = self._trail if self._trail is not None else trail
        gate.keep(plan_mark.calm_band(s, kept, msg.price, env, self._trail_saved_ms) if quiet else None, s, self._trail, config, markets)

    def on_receive(self, message: Any) -> Any:
        gate = self._gate
        if gate.slot is not None and type(message) not in _MARKS:
            gate.withdraw()  # this message may change what the band was made for
        out = super().on_receive(message)
        if gate.slot is None or self.state is None or self._fenced:
            return out
        config, markets = self.ctx.config, self.venue.markets
        newest = gate.publish(self.state, self._trail, config, markets)
        if newest is None or self._drain_requested:
            return out
        if self.ctx.clock.now_ms() - newest.ts_ms > STALE_AFTER_INTERVALS * config.feeds.mark_interval_ms:
            return out  # older than the feed would tell as current: not acted on late
        try:  # kept back by the feed meanwhile, or ignored while busy
            self._on_mark(newest)
        except Fenced as exc:  # (outside the base class's dispatch: fenced out here as there)
            self._fence_out(exc)
            return out
        gate.publish(self.state, self._trail, config, markets)
        return out

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        s = self.state
        if msg.name == "aged":
            self._aged_due = True  # reviewed as soon as no operation is in flight (never dropped)
            return self._continue()
        if msg.name != "verify" or s is None or s.state is not P.PROTECTED or self._op is not None:
            return
        self._verify_round += 1
        open_tps = s.open_tps
        if open_tps and self._verify_round % 2 == 0:  # every other check: the take-profits
            return self._run(pc.Plan(next=plan_tps.check(open_tps[0])))
        adjusted = plan_moves.adjust(s, self._env())
        self._run(adjusted if adjusted.next is not None else plan_truth.check_stop(s))

    # ------------------------------------------------------------ helpers
    def _subscribe(self) -> None:
        if self.price_feed is not None:
            self.price_feed.tell(SubscribeMarks(symbol=self.s.symbol, subscriber=self.actor_ref, name=self.name, conflate=True))

    def stopping(self) -> None:
        if self.price_feed is not None and self.state is not None:
            try:
                self.price_feed.tell(UnsubscribeMarks(symbol=self.state.symbol, name=self.name))
            except pykka.ActorDeadError:
                pass

    def _tell_requester(self, msg: Any) -> None:
        ref = self.request.requested_by if self.request and self.request.requested_by is not None else self.report_to
        if ref is not None:
            try:
                ref.tell(msg)
            except pykka.ActorDeadError:
                self.log.warning("requester gone; {} not delivered", type(msg).__name__)

    def _ctx(self) -> dict[str, Any]:
        s = self.s
        return {"actor": self.name, "position_id": self.pid, "symbol": s.symbol, "correlation_id": s.correlation_id}
