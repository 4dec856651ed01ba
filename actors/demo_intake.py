"""The demo's signal intake: a bundled file of signals replayed on the clock.

Small but not a toy. Each signal is validated (known symbol, side), recorded,
and either skipped with a reason or turned into a position actor started by
the supervisor. The per-wave limit counts *confirmed* positions (the position
actor's ``PositionOpened``) plus opens still in flight; a failure frees its
slot; one position per symbol. Its counts are a fold over its own events, so
a restarted intake neither re-opens a signal nor forgets a wave's count.
(The real intake, with the WebSocket client and ranking, is a later piece.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actors.messages import OpenRequest, PositionClosed, PositionOpened, PositionOpenFailed
from adapters.read_only import READ_ONLY_REASON
from core.events import Severity
from core.messages import IntakeChanged, Message, StartChild
from supervision.actor import ActorContext, ManagedActor, handles


class SignalDue(Message, frozen=True, kw_only=True):
    index: int


def load_signals(path: Path) -> list[dict[str, Any]]:
    """JSON lines: {"id", "wave", "symbol", "side", "after_secs"}; a bad line is kept as a rejection."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            sig = json.loads(line)
            if not isinstance(sig, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            sig = {"id": f"line-{n}", "_error": f"line {n}: not valid JSON ({exc})"}
        out.append(sig)
    return out


class DemoIntake(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, signals: list[dict[str, Any]], exchange: str, markets: Any, position_spec: Callable[[OpenRequest], Any]) -> None:
        super().__init__(name=name, ctx=ctx)
        self.signals = signals
        self.exchange = exchange
        self.markets = markets
        self.position_spec = position_spec
        self.intake_open = False
        self.done: set[str] = set()  # signal ids already decided
        self.confirmed: dict[str, int] = {}  # wave -> confirmed positions
        self.in_flight: dict[str, tuple[str, str]] = {}  # position id -> (wave, symbol)
        self.held: set[str] = set()

    def started(self) -> None:
        for ev in self.load_events(actor=self.name):
            d = ev.data
            if ev.type in ("intake.signal_selected", "intake.signal_skipped", "intake.signal_rejected"):
                self.done.add(d["signal_id"])
            if ev.type == "intake.signal_selected":
                self.in_flight[d["position_id"]] = (d["wave"], d["symbol"])
            elif ev.type in ("intake.position_opened", "intake.position_failed"):
                wave, _ = self.in_flight.pop(d["position_id"], (d.get("wave", ""), ""))
                if ev.type == "intake.position_opened":
                    self.confirmed[wave] = self.confirmed.get(wave, 0) + 1
        # What is held comes from the exchange-facing truth we have: open positions.
        self.held = {p["symbol"] for p in self.ctx.io.run(self.ctx.store.positions(open_only=True), 10) if p.get("exchange") == self.exchange}
        for i, sig in enumerate(self.signals):
            if str(sig.get("id")) not in self.done:
                self.after(int(float(sig.get("after_secs", 0)) * 1000), SignalDue(index=i))

    @handles(IntakeChanged)
    def _on_intake(self, msg: IntakeChanged) -> None:
        self.intake_open = msg.open

    @handles(SignalDue)
    def _on_signal(self, msg: SignalDue) -> None:
        sig = self.signals[msg.index]
        sid = str(sig.get("id"))
        if sid in self.done:
            return
        self.emit("intake.signal_received", {"signal_id": sid, "signal": {k: v for k, v in sig.items() if not k.startswith("_")}}, correlation_id=sid)
        problem = sig.get("_error") or self._invalid(sig)
        if problem:
            return self._decide("intake.signal_rejected", sid, {"reason": problem}, Severity.WARNING)
        symbol = self.markets.resolve(sig["symbol"]).id
        wave = str(sig["wave"])
        reason = None
        if self.ctx.config.exchange.read_only:
            reason = READ_ONLY_REASON
        elif not self.intake_open:
            reason = "intake closed (paused or blocked)"
        elif symbol in self.held:
            reason = f"a position on {symbol} is already open"
        elif self.confirmed.get(wave, 0) + sum(1 for w, _ in self.in_flight.values() if w == wave) >= self.ctx.config.demo.wave_limit:
            reason = f"wave {wave} is at its limit of {self.ctx.config.demo.wave_limit}"
        if reason:
            return self._decide("intake.signal_skipped", sid, {"reason": reason, "wave": wave, "symbol": symbol})
        pid = uuid.uuid4().hex[:10]
        cfg = self.ctx.config.position
        request = OpenRequest(position_id=pid, exchange=self.exchange, symbol=symbol, side=_side(sig["side"]), quote_amount=cfg.quote_amount, leverage=cfg.leverage_for(symbol), correlation_id=sid, requested_by=self.actor_ref)
        self._decide("intake.signal_selected", sid, {"wave": wave, "symbol": symbol, "position_id": pid, "side": request.side}, durable=True)
        self.in_flight[pid] = (wave, symbol)
        self.held.add(symbol)
        self.ctx.supervisor.tell(StartChild(spec=self.position_spec(request)))

    def _decide(self, type_: str, sid: str, data: dict[str, Any], severity: Severity = Severity.INFO, durable: bool = False) -> None:
        self.done.add(sid)
        self.emit(type_, {"signal_id": sid, **data}, severity=severity, correlation_id=sid, durable=durable)

    def _invalid(self, sig: dict[str, Any]) -> str | None:
        for key in ("id", "wave", "symbol", "side"):
            if key not in sig:
                return f"missing {key}"
        if sig["symbol"] not in self.markets:
            return f"unknown symbol {sig['symbol']!r}"
        if str(sig["side"]).lower() not in ("long", "short", "buy", "sell"):
            return f"side must be long/short/buy/sell, got {sig['side']!r}"
        return None

    @handles(PositionOpened)
    def _on_opened(self, msg: PositionOpened) -> None:
        wave, _ = self.in_flight.pop(msg.position_id, ("?", msg.symbol))
        self.confirmed[wave] = self.confirmed.get(wave, 0) + 1
        self.emit("intake.position_opened", {"position_id": msg.position_id, "wave": wave, "symbol": msg.symbol, "stop_price": msg.stop_price, "confirmed_in_wave": self.confirmed[wave]})

    @handles(PositionOpenFailed)
    def _on_failed(self, msg: PositionOpenFailed) -> None:
        wave, symbol = self.in_flight.pop(msg.position_id, ("?", msg.symbol))
        self.held.discard(symbol)
        self.emit("intake.position_failed", {"position_id": msg.position_id, "wave": wave, "symbol": symbol, "reason": msg.reason}, severity=Severity.WARNING)

    @handles(PositionClosed)
    def _on_closed(self, msg: PositionClosed) -> None:
        self.held.discard(msg.symbol)


def _side(text: str) -> str:
    return "long" if str(text).lower() in ("long", "buy") else "short"
