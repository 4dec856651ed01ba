"""A position actor's calm band and its conflation slot: which marks need the rules at all.

One :class:`MarkGate` per position actor, used only from its thread. It keeps
the band :func:`actors.plan_mark.calm_band` gave for the actor's current state
(keyed by the very objects it was made for: the state, the trailing memory,
the config, the venue's markets; any of them replaced and the band is stale),
and publishes it on the actor's :class:`~actors.messages.MarkSlot`, so the
price feed does not even wake the actor for a mark inside it.

The order that keeps this safe: before the actor handles anything but a mark,
the published band is withdrawn (that message may change the state); after
each message, the band is published again if it is still the state's, and
the newest mark in the slot, if the rules have not seen it (kept back by the
feed meanwhile, or ignored while an operation was in flight), is handed to the
actor to consider afresh.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from actors.messages import MarkPrice, MarkSlot
from actors.plan_mark import Calm


class MarkGate:
    __slots__ = ("_key", "band", "seen", "slot")

    def __init__(self) -> None:
        self.slot: MarkSlot | None = None
        self.band: Calm | None = None
        self._key: tuple[Any, ...] = ()
        self.seen: MarkPrice | None = None  # the last mark the rules were asked about

    def calm(self, state: Any, trail: Any, config: Any, markets: Any, price: Decimal, now_ms: int) -> bool:
        """Is ``price`` inside the band of exactly this state (the rules would change nothing)?"""
        band, key = self.band, self._key
        return band is not None and key[0] is state and key[1] is trail and key[2] is config and key[3] is markets and band.holds(price, now_ms)

    def keep(self, band: Calm | None, state: Any, trail: Any, config: Any, markets: Any) -> None:
        self.band, self._key = band, (state, trail, config, markets)

    def withdraw(self) -> None:
        """Before a message that may change the state: the feed tells every mark again."""
        if self.slot is not None and self.slot.calm is not None:  # (only this thread sets it)
            self.slot.gate(None)

    def publish(self, state: Any, trail: Any, config: Any, markets: Any, now_ms: int, fresh_ms: int) -> MarkPrice | None:
        """After a message: the band on the slot if it is still this state's; the slot's newest
        mark if the rules have not seen it and it is fresh (None: nothing to consider)."""
        slot = self.slot
        if slot is None:
            return None
        key = self._key
        current = self.band if self.band is not None and key[0] is state and key[1] is trail and key[2] is config and key[3] is markets else None
        newest = slot.gate(current)
        if newest is None or newest is self.seen or now_ms - newest.ts_ms > fresh_ms:
            return None  # (a mark older than the feed would tell as current is not acted on late)
        return newest
