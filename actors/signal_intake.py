"""The signal actor: waves of signals in, a limited number of protected positions out.

Frames arrive from the WebSocket client (adapters/signal_client.py) and are
decoded here (core/signal_protocol.py: never trusted, never raising);
accepted signals wait in their 15-minute wave. A wave is processed once, at
the configured minutes (default :05, :20, :35, :50) on the injected clock,
or ``signals.process_after_secs`` after its first signal (demo mode):

* filters: intake closed (paused, blocked), stop-list, symbol already held on
  any account, symbol refused recently (e.g. region-restricted: 24 h), minimum
  scores, one signal per symbol;
* rank by score (week, then month), keep ``buffer_factor`` x the limit;
* open until ``wave_limit`` positions are **confirmed** (``PositionOpened``
  from the position actor). Opens in flight count against the limit; a
  failure frees its slot for the next candidate; a late success still counts.
  The global cap and the free-balance reserve are checked before each open.

An entry refused for **insufficient margin** pauses new entries: the rest of
that wave's candidates are dropped (``intake.candidates_dropped``), the
supervisor blocks intake ("insufficient margin: ...") and the free balance is
read every ``venue_health.margin_recheck_secs`` until it covers one entry's
margin plus ``signals.min_free_balance`` (``intake.margin_recovered``). The
pause is in the actor's events, so a restart resumes it.

An exchange failure of an I/O call is the venue's (:func:`adapters.errors.translate`);
anything else is our bug and crashes the actor (its supervisor restarts it).

Every decision is an event with the wave and the signal's correlation id; the
actor's state is a fold over its own events, so a restart in the middle of a
wave resumes its count (positions that finished while it was down are read
from the projection). Waves received but not yet processed are part of that
fold too (``intake.signal_received`` carries the whole signal): after a kill
they are processed once, at their time, or, if that passed while the bot was
down, as soon as the intake opens (at most :data:`RECOVERED_WAVE_WAIT_MS`
after the start; then with the intake's reasons for skipping). A processed
wave's ranked buffer is rebuilt too (``intake.wave_processed`` names it), so
candidates not yet decided at a kill are opened or skipped after the restart,
when the intake opens. A re-sent signal is still a duplicate: its id was seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from actors.messages import OpenRequest, PositionClosed, PositionOpened, PositionOpenFailed
from actors.position_state import from_projection
from adapters.errors import Outcome, translate
from adapters.read_only import READ_ONLY_REASON
from core.events import Event, Severity
from core.ids import new_position_id, position_actor_name
from core.messages import FeedStatus, IntakeChanged, IOCompleted, Message, StartChild
from core.signal_protocol import AcceptedSignal, RecentIds, decode, processing_times, wave_of
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.commands import IntakeBlock

#: The supervisor's intake block while entries pause for margin.
MARGIN_BLOCK = "intake:insufficient-margin"

#: A wave recovered after a restart whose processing time has passed waits for the intake to
#: open (the startup reconcile and the recovered positions come first), at most this long.
RECOVERED_WAVE_WAIT_MS = 60_000


class SignalFrame(Message, frozen=True, kw_only=True):
    """A raw frame from the WebSocket client (told from the I/O loop)."""

    raw: Any


class FeedStateChanged(Message, frozen=True, kw_only=True):
    state: str
    info: dict[str, Any] = msgspec.field(default_factory=dict)


class ProcessWave(Message, frozen=True, kw_only=True):
    wave_ts_ms: int | None = None  # None: the scheduled one (the wave containing now)


class _ResumeWave(Message, frozen=True, kw_only=True):
    """Internal: resume filling a wave rebuilt after a restart (the intake opened, or the wait ran out)."""

    wave_ts_ms: int


class _StartOpen(Message, frozen=True, kw_only=True):
    """Internal: the selection of ``position_id`` is committed; its position actor may start."""

    position_id: str


class CheckMargin(Message, frozen=True, kw_only=True):
    """Timer: read the free balance, to see whether entries may resume after a margin refusal."""


class SignalIntake(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, venue: Any, markets_by_exchange: dict[str, Any], position_spec: Callable[[OpenRequest], Any]) -> None:
        super().__init__(name=name, ctx=ctx)
        self.venue = venue
        self.markets_by_exchange = markets_by_exchange
        self.position_spec = position_spec
        self.intake_open = False
        self.seen = RecentIds()
        self.pending: dict[int, dict[str, AcceptedSignal]] = {}
        self.processed: set[int] = set()
        self.queue: dict[int, list[AcceptedSignal]] = {}
        self.confirmed: dict[int, int] = {}
        self.in_flight: dict[str, tuple[int, str]] = {}  # position id -> (wave, symbol)
        self.held: set[str] = set()
        self.skip_until: dict[str, int] = {}
        self.feed_state = "not connected"
        self._balance: Decimal | None = None
        #: Set while entries pause after an insufficient-margin refusal: the reason (from the events).
        self.margin_pause: str | None = None
        self._first_seen_ms: dict[int, int] = {}  # wave -> when its first signal arrived
        self._overdue: set[int] = set()  # recovered waves whose time passed: processed when the intake opens
        self._starting: dict[str, Any] = {}  # position id -> its child spec, until its selection is committed
        self._resuming: set[int] = set()  # processed waves rebuilt with candidates undecided: filled once the intake opens

    @property
    def scfg(self):
        return self.ctx.config.signals

    # ------------------------------------------------------------ start
    def started(self) -> None:
        for ev in self.load_events(actor=self.name):
            self._fold(ev.type, ev.data, ev.ts_ms)
        self._resuming = {w for w, q in self.queue.items() if q}  # no decisions on these before the intake opens
        owned = [from_projection(row) for row in self.ctx.io.run(self.ctx.store.positions(open_only=False), 10)]
        states = {p.position_id: p for p in owned}
        self.held = {p.symbol for p in owned if p.state.is_open}
        for pid, (_wave, symbol) in list(self.in_flight.items()):  # decided while we were down
            row = states.get(pid)
            if row is not None and row.is_protected and row.entry_price is not None and row.stop_price is not None and row.stop_order_id is not None:
                self._on_opened(PositionOpened(position_id=pid, symbol=symbol, side=row.side, qty=row.qty, entry_price=row.entry_price, stop_price=row.stop_price, stop_order_id=row.stop_order_id))
            elif row is not None and not row.state.is_open and row.entry_price is not None and self._was_protected(pid):
                self._confirm(pid, f"protected, then {row.state.value} while the intake was down")  # it took its slot
            elif row is not None and not row.state.is_open:
                self._on_failed(PositionOpenFailed(position_id=pid, symbol=symbol, reason=f"ended as {row.state.value} while the intake was down", outcome=row.state.value))
            elif row is None and (self.ctx.directory is None or self.ctx.directory.lookup(position_actor_name(symbol, pid)) is None):
                # selected, but its owner never started (the intake went down between the record and the start):
                # nothing was sent for it (its first write-ahead record is missing), so its slot is free again
                self._on_failed(PositionOpenFailed(position_id=pid, symbol=symbol, reason="its position actor never started (the intake restarted first)", outcome=Outcome.REJECTED.value))
        if self.margin_pause is not None:  # paused before a restart: still paused, still checking
            self.ctx.supervisor.tell(IntakeBlock(key=MARGIN_BLOCK, reason=self.margin_pause))
            self.after(self._recheck_ms, CheckMargin())
        self._schedule_next()
        self._resume_pending()

    def _unqueue(self, wave: int, signal_id: str) -> None:
        queue = self.queue.get(wave)
        if queue:
            self.queue[wave] = [sig for sig in queue if sig.id != signal_id]

    def _resume_pending(self) -> None:
        """Waves received before a restart and not processed: each once, at its time or when the intake opens.
        Waves processed with candidates still undecided: their filling resumes when the intake opens."""
        now = self.ctx.clock.now_ms()
        max_age_ms = self.scfg.max_signal_age_secs * 1000
        for wave, queue in sorted(self.queue.items()):
            if queue and now - wave > max_age_ms:  # too old to act on now: decided as skipped
                for sig in queue:
                    self._skip(sig, f"wave {wave} is older than signals.max_signal_age_secs after the restart")
                queue.clear()
                self._resuming.discard(wave)
            if not queue and not any(w == wave for w, _ in self.in_flight.values()):
                del self.queue[wave]  # everything decided; only its wave_finished was missing
                self.emit("intake.wave_finished", {"wave_ts_ms": wave, "confirmed": self.confirmed.get(wave, 0), "limit": self.scfg.wave_limit})
                continue
            self._resuming.add(wave)
            self.emit("intake.wave_resumed", {"wave_ts_ms": wave, "candidates": [sig.id for sig in queue], "in_flight": sum(1 for w, _ in self.in_flight.values() if w == wave)})
            self.after(RECOVERED_WAVE_WAIT_MS, _ResumeWave(wave_ts_ms=wave))  # if the intake never opens
        for wave, signals in sorted(self.pending.items()):
            if now - wave > max_age_ms:  # too old to act on now: recorded as processed, every signal skipped
                del self.pending[wave]
                self.processed.add(wave)
                self.emit("intake.wave_processed", {"wave_ts_ms": wave, "signals": len(signals), "candidates": 0, "buffer": [], "limit": self.scfg.wave_limit, "stale": True})
                for sig in signals.values():
                    self._skip(sig, f"wave {wave} is older than signals.max_signal_age_secs after the restart")
                continue
            due = self._due_ms(wave)
            self.emit("intake.wave_recovered", {"wave_ts_ms": wave, "signals": len(signals), "due_ms": due, "overdue": due <= now})
            if due <= now:
                self._overdue.add(wave)
                self.after(RECOVERED_WAVE_WAIT_MS, ProcessWave(wave_ts_ms=wave))  # if the intake never opens
            elif self.process_after_secs:
                self.after(due - now, ProcessWave(wave_ts_ms=wave))
            # else: the schedule's next processing instant is this wave's own

    def _due_ms(self, wave: int) -> int:
        """When a wave is processed: after its first signal (arrival mode), else at its processing minute."""
        if self.process_after_secs:
            return self._first_seen_ms.get(wave, wave) + self.process_after_secs * 1000
        sched = processing_times(self.scfg.processing_minutes)
        due = sched.next_after(wave - 1)
        return due if wave_of(due) == wave else wave  # no processing minute inside the wave: at once

    def _fold(self, type_: str, d: dict[str, Any], ts_ms: int = 0) -> None:
        if type_ == "intake.signal_received":
            self.seen.add(d["signal_id"])
            wave = int(d["wave_ts_ms"])
            if wave not in self.processed and (sig := _signal_of(d)) is not None:
                self.pending.setdefault(wave, {})[sig.id] = sig
                self._first_seen_ms.setdefault(wave, ts_ms)
        elif type_ == "intake.wave_processed":
            wave = int(d["wave_ts_ms"])
            self.processed.add(wave)
            signals = self.pending.pop(wave, {})
            self.queue[wave] = [signals[i] for i in d.get("buffer", ()) if i in signals]  # its ranked candidates, in order
        elif type_ == "intake.signal_selected":
            self.in_flight[d["position_id"]] = (int(d["wave_ts_ms"]), d["symbol"])
            self._unqueue(int(d["wave_ts_ms"]), d["signal_id"])
        elif type_ == "intake.signal_skipped" and "wave_ts_ms" in d:
            self._unqueue(int(d["wave_ts_ms"]), d["signal_id"])
        elif type_ == "intake.wave_finished":
            self.queue.pop(int(d["wave_ts_ms"]), None)
        elif type_ == "intake.position_opened":
            wave, _ = self.in_flight.pop(d["position_id"], (int(d["wave_ts_ms"]), ""))
            self.confirmed[wave] = self.confirmed.get(wave, 0) + 1
        elif type_ == "intake.position_failed":
            self.in_flight.pop(d["position_id"], None)
        elif type_ == "intake.symbol_skipped_until":
            self.skip_until[d["symbol"]] = int(d["until_ms"])
        elif type_ == "intake.margin_paused":
            self.margin_pause = d["reason"]
        elif type_ == "intake.margin_recovered":
            self.margin_pause = None

    @property
    def process_after_secs(self) -> int:
        """Demo mode (the bundled server replays past waves) or ``signals.process_on_arrival``:
        process a wave soon after it arrives."""
        return self.scfg.process_after_secs if self.scfg.source == "bundled" or self.scfg.process_on_arrival else 0

    def _schedule_next(self) -> None:
        if self.process_after_secs:
            return  # demo mode: waves are scheduled as they arrive
        now = self.ctx.clock.now_ms()
        at = processing_times(self.scfg.processing_minutes).next_after(now)
        self.after(at - now, ProcessWave())

    # ------------------------------------------------------------ input
    @handles(IntakeChanged)
    def _on_intake(self, msg: IntakeChanged) -> None:
        self.intake_open = msg.open
        if msg.open and self._overdue:
            for wave in sorted(self._overdue):
                self.actor_ref.tell(ProcessWave(wave_ts_ms=wave))
            self._overdue.clear()
        if msg.open and self._resuming:
            for wave in sorted(self._resuming):
                self.actor_ref.tell(_ResumeWave(wave_ts_ms=wave))

    @handles(_ResumeWave)
    def _on_resume_wave(self, msg: _ResumeWave) -> None:
        if msg.wave_ts_ms in self._resuming:
            self._resuming.discard(msg.wave_ts_ms)
            self.io_call("balance", self.venue.free_balance(), correlation_id=str(msg.wave_ts_ms))  # then _fill, as after processing

    @handles(FeedStateChanged)
    def _on_feed_state(self, msg: FeedStateChanged) -> None:
        self.feed_state = msg.state
        self.ctx.supervisor.tell(FeedStatus(state=msg.state, info={k: v for k, v in msg.info.items() if isinstance(v, (str, int, float, bool, type(None)))}))
        if msg.state in ("connected", "disconnected", "dead", "overflow", "connect_failed"):
            self.emit(f"feed.{msg.state}", msg.info, severity=Severity.INFO if msg.state == "connected" else Severity.WARNING)

    @handles(SignalFrame)
    def _on_frame(self, msg: SignalFrame) -> None:
        now = self.ctx.clock.now_ms()
        result = decode(msg.raw, markets_by_exchange=self.markets_by_exchange, now_ms=now, max_age_ms=self.scfg.max_signal_age_secs * 1000, seen_ids=self.seen)
        for r in result.rejected:
            self.emit("intake.signal_rejected", {"signal_id": r.signal_id, "reason": r.reason, "raw": r.raw}, severity=Severity.WARNING, correlation_id=r.signal_id)
        for sig in result.accepted:
            self.emit("intake.signal_received", _record_of(sig), correlation_id=sig.id, symbol=sig.symbol, exchange=sig.exchange)
            if sig.wave_ts_ms in self.processed:
                self.emit("intake.signal_skipped", {"signal_id": sig.id, "reason": f"wave {sig.wave_ts_ms} was already processed (late signal)"}, correlation_id=sig.id)
                continue
            first = sig.wave_ts_ms not in self.pending
            self.pending.setdefault(sig.wave_ts_ms, {})[sig.id] = sig
            self._first_seen_ms.setdefault(sig.wave_ts_ms, now)
            if first and self.process_after_secs:
                self.after(self.process_after_secs * 1000, ProcessWave(wave_ts_ms=sig.wave_ts_ms))

    # ------------------------------------------------------------ waves
    @handles(ProcessWave)
    def _on_process(self, msg: ProcessWave) -> None:
        if msg.wave_ts_ms is None:
            self._schedule_next()
        wave = msg.wave_ts_ms if msg.wave_ts_ms is not None else wave_of(self.ctx.clock.now_ms())
        if wave in self.processed:
            return
        self.processed.add(wave)
        self._overdue.discard(wave)
        signals = list(self.pending.pop(wave, {}).values())
        candidates = self._select(wave, signals)
        limit = self.scfg.wave_limit
        buffer = candidates[: math.ceil(limit * self.scfg.buffer_factor)]
        for sig in candidates[len(buffer):]:
            self._skip(sig, "outside the ranked buffer")
        self.queue[wave] = buffer
        self.emit("intake.wave_processed", {"wave_ts_ms": wave, "signals": len(signals), "candidates": len(candidates), "buffer": [s.id for s in buffer], "limit": limit})
        self.io_call("balance", self.venue.free_balance(), correlation_id=str(wave))

    def _select(self, wave: int, signals: list[AcceptedSignal]) -> list[AcceptedSignal]:
        cfg, now = self.scfg, self.ctx.clock.now_ms()
        best: dict[str, AcceptedSignal] = {}
        for sig in sorted(signals, key=lambda s: (s.score_week, s.score_month), reverse=True):
            reason = None
            if self.ctx.config.exchange.read_only:
                reason = READ_ONLY_REASON
            elif not self.intake_open:
                reason = "intake closed (paused or blocked)"
            elif self.margin_pause is not None:
                reason = self.margin_pause
            elif sig.symbol in cfg.stop_list:
                reason = "symbol is on the stop-list"
            elif sig.symbol in self.held:
                reason = f"a position on {sig.symbol} is already open"
            elif self.skip_until.get(sig.symbol, 0) > now:
                reason = f"{sig.symbol} was refused recently; skipped until {self.skip_until[sig.symbol]}"
            elif sig.score_week < cfg.min_score_week or sig.score_month < cfg.min_score_month:
                reason = "score below the minimum"
            elif sig.symbol in best:
                reason = f"a better signal for {sig.symbol} in this wave"
            if reason:
                self._skip(sig, reason)
            else:
                best[sig.symbol] = sig
        return list(best.values())

    def _skip(self, sig: AcceptedSignal, reason: str) -> None:
        self.emit("intake.signal_skipped", {"signal_id": sig.id, "wave_ts_ms": sig.wave_ts_ms, "symbol": sig.symbol, "reason": reason}, correlation_id=sig.id, symbol=sig.symbol)

    @handles(IOCompleted)
    def _on_io(self, msg: IOCompleted) -> None:
        if msg.exception is not None and translate(msg.exception) is None:
            raise msg.exception  # our bug, not the venue's answer: crash, be restarted
        if msg.purpose == "balance":
            self._balance = None if msg.error else msg.result
            self._fill(int(msg.correlation_id))
        elif msg.purpose == "margin_check":
            self._on_margin_check(msg)

    def _fill(self, wave: int) -> None:
        """Open the next candidates while confirmed + in flight stays under the limit."""
        if wave in self._resuming and not self.intake_open:
            return  # rebuilt after a restart: its candidates wait for the intake to open (or the bounded wait)
        cfg = self.scfg
        queue = self.queue.get(wave, [])
        while queue and self.confirmed.get(wave, 0) + sum(1 for w, _ in self.in_flight.values() if w == wave) < cfg.wave_limit:
            sig = queue.pop(0)
            if sig.symbol in self.held:
                self._skip(sig, f"a position on {sig.symbol} is already open")
                continue
            if len(self.held) >= cfg.max_open_positions:
                self._skip(sig, f"{len(self.held)} positions open: the global cap of {cfg.max_open_positions}")
                continue
            if not self.intake_open:
                self._skip(sig, READ_ONLY_REASON if self.ctx.config.exchange.read_only else "intake closed (paused or blocked)")
                continue
            if self.margin_pause is not None:
                self._skip(sig, self.margin_pause)
                continue
            if self._balance is not None and self._balance < cfg.min_free_balance:
                self._skip(sig, f"free balance {self._balance} is below the reserve {cfg.min_free_balance}")
                continue
            self._open(wave, sig)
        if queue and self.confirmed.get(wave, 0) >= cfg.wave_limit:
            for sig in queue:
                self._skip(sig, f"wave limit of {cfg.wave_limit} confirmed positions reached")
            queue.clear()
        if wave in self.queue and not queue and not any(w == wave for w, _ in self.in_flight.values()):
            del self.queue[wave]
            self.emit("intake.wave_finished", {"wave_ts_ms": wave, "confirmed": self.confirmed.get(wave, 0), "limit": cfg.wave_limit})

    def _open(self, wave: int, sig: AcceptedSignal) -> None:
        pos_cfg = self.ctx.config.position
        quote = pos_cfg.quote_amount
        if self.scfg.size_percent_of_free and self._balance is not None:
            quote = (self._balance * self.scfg.size_percent_of_free / 100).quantize(Decimal("0.01"))
        pid = new_position_id()
        req = OpenRequest(position_id=pid, exchange=sig.exchange if sig.exchange != "paper" else self.venue.name, symbol=sig.symbol, side=sig.side, quote_amount=quote, leverage=pos_cfg.leverage_for(sig.symbol), correlation_id=sig.id, requested_by=self.actor_ref)
        event = Event(type="intake.signal_selected", ts_ms=self.ctx.clock.now_ms(), actor=self.name, correlation_id=sig.id, symbol=sig.symbol, position_id=pid,
                      data={"signal_id": sig.id, "wave_ts_ms": wave, "symbol": sig.symbol, "side": sig.side, "position_id": pid, "quote_amount": quote})
        self._starting[pid] = self.position_spec(req)
        self.append_durable_then(event, _StartOpen(position_id=pid))  # started once recorded; a wave's opens share one commit
        self.in_flight[pid] = (wave, sig.symbol)
        self.held.add(sig.symbol)

    @handles(_StartOpen)
    def _on_start_open(self, msg: _StartOpen) -> None:
        spec = self._starting.pop(msg.position_id, None)
        if spec is not None:
            self.ctx.supervisor.tell(StartChild(spec=spec))

    # ------------------------------------------------------------ outcomes
    @handles(PositionOpened)
    def _on_opened(self, msg: PositionOpened) -> None:
        self._confirm(msg.position_id)

    def _confirm(self, position_id: str, note: str | None = None) -> None:
        """The position counts for its wave: it was open and protected (it may have ended since)."""
        if position_id not in self.in_flight:
            return
        wave, symbol = self.in_flight.pop(position_id)
        self.confirmed[wave] = self.confirmed.get(wave, 0) + 1
        data: dict[str, Any] = {"position_id": position_id, "wave_ts_ms": wave, "symbol": symbol, "confirmed_in_wave": self.confirmed[wave]}
        if note:
            data["note"] = note
        self.emit("intake.position_opened", data, position_id=position_id, symbol=symbol)
        self._fill(wave)

    #: A position that has had a stop live on the exchange (placed, moved, or filled).
    PROTECTED_EVENTS = ("position.stop_placed", "position.stop_moved", "position.stop_filled")

    def _was_protected(self, position_id: str) -> bool:
        """Whether a position that ended while the intake was down had been protected: then it was
        one of its wave's positions (a stop that filled was live, even if its placement was never
        recorded because of a kill), not a failed open whose slot is free again."""
        return bool(self.load_events(position_id=position_id, types=self.PROTECTED_EVENTS, limit=1))

    @handles(PositionOpenFailed)
    def _on_failed(self, msg: PositionOpenFailed) -> None:
        if msg.position_id not in self.in_flight:
            return
        wave, symbol = self.in_flight.pop(msg.position_id)
        self.held.discard(symbol)
        self.emit("intake.position_failed", {"position_id": msg.position_id, "wave_ts_ms": wave, "symbol": symbol, "reason": msg.reason}, severity=Severity.WARNING, position_id=msg.position_id, symbol=symbol)
        if msg.skip_symbol_ms:
            until = self.ctx.clock.now_ms() + msg.skip_symbol_ms
            self.skip_until[symbol] = until
            self.emit("intake.symbol_skipped_until", {"symbol": symbol, "until_ms": until, "reason": msg.reason}, severity=Severity.WARNING, symbol=symbol)
        if msg.outcome == Outcome.INSUFFICIENT_FUNDS.value:
            self._pause_for_margin(wave, msg)
        self._fill(wave)  # the slot is free: the next candidate of the buffer (none while paused for margin)

    # ------------------------------------------------------------ margin
    @property
    def _recheck_ms(self) -> int:
        return int(self.ctx.config.venue_health.margin_recheck_secs * 1000)

    #: Fees and slippage of an entry, as a share of its notional, on top of its margin.
    ENTRY_COST_SHARE = Decimal("0.001")

    def _needed_free(self, free: Decimal) -> Decimal:
        """Free balance at which entries resume: one entry's margin (``quote_amount``, as it would be
        sized now) and its fees, plus the reserve ``min_free_balance``."""
        pos = self.ctx.config.position
        margin = free * self.scfg.size_percent_of_free / 100 if self.scfg.size_percent_of_free else pos.quote_amount
        return self.scfg.min_free_balance + margin + margin * pos.leverage * self.ENTRY_COST_SHARE

    def _pause_for_margin(self, wave: int, msg: PositionOpenFailed) -> None:
        """The venue refused an entry for margin: no more entries until the balance says so."""
        queue = self.queue.get(wave, [])
        if queue:
            dropped, reason = [s.id for s in queue], f"entry {msg.position_id} on {msg.symbol} refused for insufficient margin"
            for sig in queue:
                self._skip(sig, reason)
            queue.clear()
            self.emit("intake.candidates_dropped", {"wave_ts_ms": wave, "dropped": dropped, "reason": reason}, severity=Severity.WARNING)
        if self.margin_pause is not None:
            return
        self.margin_pause = f"insufficient margin: the entry on {msg.symbol} was refused ({msg.reason}); entries wait until the free balance covers one more"
        self.emit("intake.margin_paused", {"reason": self.margin_pause, "position_id": msg.position_id, "symbol": msg.symbol, "recheck_secs": self._recheck_ms // 1000}, severity=Severity.WARNING, symbol=msg.symbol)
        self.ctx.supervisor.tell(IntakeBlock(key=MARGIN_BLOCK, reason=self.margin_pause))
        self.after(self._recheck_ms, CheckMargin())

    @handles(CheckMargin)
    def _on_check_margin(self, msg: CheckMargin) -> None:
        if self.margin_pause is not None:
            self.io_call("margin_check", self.venue.free_balance())

    def _on_margin_check(self, msg: IOCompleted) -> None:
        if self.margin_pause is None:
            return
        if msg.error is None:
            free = Decimal(msg.result)
            needed = self._needed_free(free)
            if free >= needed:
                self.margin_pause = None
                self.emit("intake.margin_recovered", {"free": free, "needed": needed})
                self.ctx.supervisor.tell(IntakeBlock(key=MARGIN_BLOCK, reason=None))
                return
            self.emit("intake.margin_still_short", {"free": free, "needed": needed}, severity=Severity.DEBUG)
        else:
            self.emit("intake.margin_check_failed", {"error": msg.error}, severity=Severity.WARNING)
        self.after(self._recheck_ms, CheckMargin())

    @handles(PositionClosed)
    def _on_closed(self, msg: PositionClosed) -> None:
        self.held.discard(msg.symbol)


def _record_of(sig: AcceptedSignal) -> dict[str, Any]:
    """``intake.signal_received``: the whole accepted signal, so a restart can rebuild its wave."""
    return {
        "signal_id": sig.id, "wave_ts_ms": sig.wave_ts_ms, "symbol": sig.symbol, "side": sig.side, "score_week": sig.score_week,
        "score_month": sig.score_month, "exchange": sig.exchange, "unified_symbol": sig.unified_symbol, "action": sig.action, "created_ms": sig.created_ms,
    }


def _signal_of(d: dict[str, Any]) -> AcceptedSignal | None:
    """The signal of an ``intake.signal_received`` record (None for a record from before it carried one)."""
    if "unified_symbol" not in d:
        return None
    return AcceptedSignal(
        id=d["signal_id"], exchange=d["exchange"], symbol=d["symbol"], unified_symbol=d["unified_symbol"], side=d["side"], action=d["action"],
        score_week=Decimal(str(d["score_week"])), score_month=Decimal(str(d["score_month"])), wave_ts_ms=int(d["wave_ts_ms"]), created_ms=int(d["created_ms"]),
    )
