"""Messages between trading actors (commands imperative, events past tense)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import msgspec

from core.messages import Message


class OpenRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a new position actor is asked to open (passed at construction)."""

    position_id: str
    exchange: str
    symbol: str  # venue id, e.g. BTCUSDT
    side: str  # long / short
    quote_amount: Decimal  # margin in the quote currency
    leverage: int
    correlation_id: str  # the signal's flow id
    requested_by: Any = None  # ActorRef that gets PositionOpened / PositionOpenFailed
    adopt: Any = None  # a PositionReport: adopt this untracked position instead of opening one


class MarkPrice(Message, frozen=True, kw_only=True):
    """A mark price reading, told by the price feed to subscribers."""

    symbol: str
    price: Decimal
    ts_ms: int


class MarkSlot:
    """Conflation: the newest mark for one subscriber, overwritten by the feed.

    The feed puts every mark; only a put into an empty slot tells the
    subscriber (``MarkReady``), which takes whatever is newest by the
    time it gets there. A subscriber that falls behind so handles one mark per
    turn, the newest, never a backlog of stale ones; one that keeps up sees
    every mark.

    The calm gate: the subscriber may publish ``calm``, an object whose
    ``holds(price, now_ms)`` says a mark would change nothing for it (a
    position's :class:`~actors.plan_mark.Calm` band). A mark it holds for is
    stored (the newest, for :meth:`peek`) without telling: a thousand owners
    are not woken for marks inside their bands. Only the subscriber sets it,
    and it clears it before anything else it handles may change what its band
    was made for; a mark kept back in between is in the slot, and the
    subscriber looks at the newest after each message (see the position
    actor)."""

    __slots__ = ("_lock", "_mark", "_pending", "calm")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mark: MarkPrice | None = None
        self._pending = False
        self.calm: Any = None

    def put(self, mark: MarkPrice, now_ms: int | None = None) -> bool:
        """Store ``mark``; True when the subscriber must be told (the slot was empty and
        the mark is not inside the published calm band)."""
        with self._lock:  # judged and stored at once: never against a band withdrawn meanwhile (see gate)
            self._mark, was_pending = mark, self._pending
            calm = self.calm
            if calm is not None and now_ms is not None and calm.holds(mark.price, now_ms):
                return False
            self._pending = True
        return not was_pending

    def take(self) -> MarkPrice | None:
        with self._lock:
            self._pending = False
            return self._mark

    def peek(self) -> MarkPrice | None:
        """The newest mark, told or kept back, without taking it."""
        return self._mark

    def gate(self, calm: Any) -> MarkPrice | None:
        """Publish ``calm`` (None: withdraw it) and return the newest mark, atomically with
        :meth:`put`: a mark kept back by the band before is in the answer, one put after is
        judged by the new band."""
        with self._lock:
            self.calm = calm
            return self._mark


class MarkReady(Message, frozen=True, kw_only=True):
    """The subscriber's slot holds a new mark: take it (told once per empty -> full)."""

    symbol: str
    slot: Any  # MarkSlot


class SubscribeMarks(Message, frozen=True, kw_only=True):
    symbol: str
    subscriber: Any  # ActorRef
    name: str
    conflate: bool = False  # told MarkReady with a slot holding the newest mark, instead of every MarkPrice


class UnsubscribeMarks(Message, frozen=True, kw_only=True):
    symbol: str
    name: str


class PositionOpened(Message, frozen=True, kw_only=True):
    """The position is open AND protected by a live stop (the only thing intake counts)."""

    position_id: str
    symbol: str
    side: str
    qty: Decimal
    entry_price: Decimal
    stop_price: Decimal
    stop_order_id: str
    emergency_stop: bool = False


class PositionOpenFailed(Message, frozen=True, kw_only=True):
    """No position remains (entry refused, or opened and rolled back)."""

    position_id: str
    symbol: str
    reason: str
    outcome: str
    skip_symbol_ms: int = 0


class PositionClosed(Message, frozen=True, kw_only=True):
    position_id: str
    symbol: str
    reason: str
    exit_price: Decimal | None
    pnl: Decimal | None


class RetryStep(Message, frozen=True, kw_only=True):
    """Internal to the position actor: run a step again (scheduled, never slept)."""

    retry: Any  # actors.position_commands.Retry


class EnsureProtected(Message, frozen=True, kw_only=True):
    """From the guard: check with the exchange that the stop is live; restore it if not."""

    reply_to: Any = None


class ProtectionReport(Message, frozen=True, kw_only=True):
    """The position actor's answer to EnsureProtected (after asking the exchange)."""

    position_id: str
    symbol: str
    state: str
    protected: bool
    stop_order_id: str | None
    stop_price: Decimal | None


class ExchangeView(Message, frozen=True, kw_only=True):
    """From the sync actor to an owner: what the exchange says about its position right now."""

    position: Any  # adapters.venue.PositionReport, or None when the exchange is flat
    stray_orders: tuple[str, ...] = ()  # orders with our client id that the owner no longer references
    read_ms: int = 0
