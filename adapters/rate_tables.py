"""The shape of a venue's request limits, and which class each request is.

A venue's own table (:data:`adapters.venues.binance.LIMITS`,
:data:`adapters.venues.bybit.LIMITS`) is a :class:`VenueLimits` in its unit;
:mod:`adapters.rate_limit` enforces it. Here only what holds for any venue:
the service classes, the ops that protect, and reading a venue's "stay away"
answer.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import msgspec


class Priority(enum.IntEnum):
    """Service class of a request: lower value is served first."""

    PROTECT = 0
    ENTRY = 1
    READ = 2


class Window(msgspec.Struct, frozen=True):
    """One published limit: ``limit`` units per rolling ``window_ms``."""

    name: str
    limit: int
    window_ms: int


class VenueLimits(msgspec.Struct, frozen=True):
    """A venue's windows and what each executor op costs in them (units per window).

    ``costs`` is keyed by the executor's op name (``create_order.stop``) or
    its family (``create_order``); unknown ops cost ``default_cost``.
    """

    style: str
    windows: tuple[Window, ...]
    costs: Mapping[str, Mapping[str, int]]
    default_cost: Mapping[str, int]

    def cost(self, op: str) -> Mapping[str, int]:
        found = self.costs.get(op)
        if found is None:
            found = self.costs.get(op.split(".", 1)[0], self.default_cost)
        return found


#: No windows: every request passes at once (an unknown venue, or a test that wants none).
UNLIMITED = VenueLimits(style="none", windows=(), costs={}, default_cost={})

#: Ops that keep a position protected, whoever sends them.
PROTECT_OPS = frozenset({"create_order.stop", "create_order.close"})
#: Ops that remove orders (or a position's attached TP/SL): protective when a position actor sends them.
CANCEL_OPS = frozenset({"cancel_order", "clear_attached"})
#: Other writes: entries and take-profits (``create_order.*`` not in PROTECT_OPS).
WRITE_FAMILIES = frozenset({"create_order", "edit_order"})


def priority_of(op: str, ctx: Mapping[str, Any] | None = None) -> Priority:
    """The class of an executor op.

    A cancel is protective when a position actor sends it (its context names
    the position: replacing its stop, clearing its leftovers); the sync
    actor's zombie clean-up is ENTRY. A read is protective when its context
    says so (``protective``: a position actor checking its stop, its size or the
    mark a restore is priced from); every other read is READ. Callers that know
    better pass an explicit priority to :meth:`Executor.run`.
    """
    if op in PROTECT_OPS or (ctx and ctx.get("protective")):
        return Priority.PROTECT
    if op in CANCEL_OPS:
        return Priority.PROTECT if ctx and ctx.get("position_id") else Priority.ENTRY
    if op.split(".", 1)[0] in WRITE_FAMILIES:
        return Priority.ENTRY
    return Priority.READ


_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")
_RETRY_AFTER = re.compile(r"retry[-_ ]?after\W{0,4}(\d+(?:\.\d+)?)", re.IGNORECASE)


def retry_after_ms(message: str, now_ms: int) -> int | None:
    """How long the venue asked us to stay away, if its answer says so.

    ccxt puts the response *body* in the exception, not the headers: a Binance
    418 body names the ban's end ("IP banned until 1568014514000"); a
    ``Retry-After`` header only counts if a proxy or a test put it in the text.
    """
    if m := _BANNED_UNTIL.search(message):
        return max(0, int(m.group(1)) - now_ms)
    if m := _RETRY_AFTER.search(message):
        return int(float(m.group(1)) * 1000)
    return None
