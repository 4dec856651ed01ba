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

from typing import Any

from actors.messages import MarkPrice, MarkSlot
from actors.plan_mark import Calm


class MarkGate:
    """The band and the objects it was made for (a band is only ever used for exactly these)."""

    __slots__ = ("band", "config", "markets", "seen", "slot", "state", "trail")

    def __init__(self) -> None:
        self.slot: MarkSlot | None = None
        self.band: Calm | None = None
        self.state: Any = None
        self.trail: Any = None
        self.config: Any = None
        self.markets: Any = None
        self.seen: MarkPrice | None = None  # the last mark the rules were asked about

    def keep(self, band: Calm | None, state: Any, trail: Any, config: Any, markets: Any) -> None:
        self.band, self.state, self.trail, self.config, self.markets = band, state, trail, config, markets

    def withdraw(self) -> None:
        """Before a message that may change the state: the feed tells every mark again."""
        if self.slot is not None and self.slot.calm is not None:  # (only this thread sets it)
            self.slot.gate(None)

    def current(self, state: Any, trail: Any, config: Any, markets: Any) -> Calm | None:
        """The band, if it was made for exactly these objects (else None: stale)."""
        if self.state is state and self.trail is trail and self.config is config and self.markets is markets:
            return self.band
        return None

    def publish(self, state: Any, trail: Any, config: Any, markets: Any) -> MarkPrice | None:
        """After a message: the band on the slot if it is still this state's; the slot's newest
        mark if the rules have not seen it (None: nothing new)."""
        slot = self.slot
        if slot is None:
            return None
        newest = slot.gate(self.current(state, trail, config, markets))
        return None if newest is None or newest is self.seen else newest
