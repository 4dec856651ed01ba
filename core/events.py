"""The event record every part of the bot writes to the event store.

An event is a fact: a signal, a decision, a state change, an exchange request
and its result, a command and its reply, an error. Numbers in ``data`` are
exact: Decimals are stored as text and come back as text.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class Severity(enum.IntEnum):
    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}; expected one of {', '.join(s.label for s in cls)}") from None


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the append-only ``events`` table.

    ``projection`` (optional) is the position's full current state after this
    event; the store upserts it into the ``positions`` table in the same
    transaction, so the projection never runs ahead of or behind the log.
    """

    type: str
    ts_ms: int
    actor: str
    severity: Severity = Severity.INFO
    position_id: str | None = None
    correlation_id: str | None = None
    symbol: str | None = None
    exchange: str | None = None
    data: dict[str, Any] = {}
    projection: dict[str, Any] | None = None
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = msgspec.to_builtins(self, builtin_types=None)
        out["severity"] = self.severity.label
        out.pop("projection", None)
        return out


PROJECTION_REQUIRED = ("exchange", "symbol", "state", "is_open")
