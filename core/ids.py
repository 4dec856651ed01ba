"""Identities, each written once: sides, client order ids, actor names.

Our orders carry client order ids that name their owner
(``tb-<position id>-<kind><n>``), so ownership is read off the order itself
and a just-placed order is never taken for a zombie. Actor names of position
owners are ``position:<symbol>:<position id>``. Format and parse live here and
nowhere else.
"""

from __future__ import annotations

import contextlib
import enum
import random
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import NamedTuple


class Side(enum.StrEnum):
    """A position's direction. A ``StrEnum``: it compares equal to ``"long"`` / ``"short"``."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1

    @property
    def entry_side(self) -> str:
        """The order side that opens (or adds to) this position."""
        return "buy" if self is Side.LONG else "sell"

    @property
    def closing_side(self) -> str:
        """The order side that reduces or closes this position."""
        return "sell" if self is Side.LONG else "buy"

    @property
    def opposite(self) -> Side:
        return Side.SHORT if self is Side.LONG else Side.LONG

    def better(self, a: Decimal | None, b: Decimal | None) -> bool:
        """True if stop level ``a`` is strictly tighter (more protective) than ``b``.

        Long: higher is better; short: lower is better. ``None`` is the worst.
        """
        if a is None:
            return False
        if b is None:
            return True
        return a > b if self is Side.LONG else a < b

    def tighter(self, a: Decimal, b: Decimal) -> Decimal:
        """The tighter of two stop levels."""
        return a if self.better(a, b) else b

    def through(self, mark: Decimal, level: Decimal) -> bool:
        """True if ``mark`` has reached or passed a stop at ``level`` (it would trigger)."""
        return mark <= level if self is Side.LONG else mark >= level

    def pnl(self, entry: Decimal, exit_: Decimal, qty: Decimal) -> Decimal:
        return (exit_ - entry) * qty * self.sign

    @classmethod
    def of_order_side(cls, order_side: str, *, closing: bool) -> Side:
        """The position side an order of ``order_side`` opens (or, when ``closing``, reduces)."""
        opens_long = order_side == "buy"
        long = not opens_long if closing else opens_long
        return cls.LONG if long else cls.SHORT


CLIENT_PREFIX = "tb"


class ClientOrderId(NamedTuple):
    """``tb-<position id>-<kind><n>``: kind ``e`` entry, ``s`` stop, ``c`` close, ``t`` take-profit, ``x`` aged exit."""

    position_id: str
    kind: str
    n: int

    def __str__(self) -> str:
        return f"{CLIENT_PREFIX}-{self.position_id}-{self.kind}{self.n}"

    @classmethod
    def parse(cls, text: str | None) -> ClientOrderId | None:
        """The id's parts, or None when it is not one of ours (another bot's, a human's)."""
        parts = (text or "").split("-")
        if len(parts) != 3 or parts[0] != CLIENT_PREFIX or not parts[1]:
            return None
        tail = parts[2]
        kind = tail.rstrip("0123456789")
        digits = tail[len(kind) :]
        if not kind or not digits:
            return None
        return cls(parts[1], kind, int(digits))


def client_order_id(position_id: str, kind: str, n: int) -> str:
    return str(ClientOrderId(position_id, kind, n))


def owner_of(client_id: str | None) -> str | None:
    """The position id an order of ours names as its owner, or None for anyone else's order."""
    parsed = ClientOrderId.parse(client_id)
    return parsed.position_id if parsed else None


POSITION_PREFIX = "position:"


def position_actor_name(symbol: str, position_id: str) -> str:
    return f"{POSITION_PREFIX}{symbol}:{position_id}"


class PositionName(NamedTuple):
    symbol: str
    position_id: str

    @classmethod
    def parse(cls, name: str) -> PositionName | None:
        if not name.startswith(POSITION_PREFIX):
            return None
        symbol, sep, pid = name[len(POSITION_PREFIX) :].rpartition(":")
        return cls(symbol, pid) if sep and symbol and pid else None


def _random_position_id() -> str:
    return uuid.uuid4().hex[:10]


#: Where position ids come from: random, except in a replay (:func:`seeded_position_ids`).
_position_id_source: Callable[[], str] = _random_position_id


def new_position_id() -> str:
    """A new position's id: 10 hex digits."""
    return _position_id_source()


@contextlib.contextmanager
def seeded_position_ids(seed: int) -> Iterator[None]:
    """Position ids from a seeded generator while inside (a replay: the same inputs name the same
    positions, so actor names, and everything ordered by them, repeat run after run)."""
    global _position_id_source
    rng = random.Random(seed)
    previous = _position_id_source
    _position_id_source = lambda: f"{rng.getrandbits(40):010x}"  # noqa: E731
    try:
        yield
    finally:
        _position_id_source = previous
