"""Leverage and margin mode from the config, set on a real venue before the first entry on a symbol.

Why: the bot sizes a position as ``quote_amount x leverage / mark`` and its
emergency stop assumes isolated margin at that leverage. If the venue's
symbol is at another leverage or in cross margin, entries need another margin
or liquidation sits elsewhere than the bot believes. So before the first
entry on a symbol (:meth:`TradingSetup.ensure`, called by
:meth:`~adapters.venue.Venue.open_market` before the order goes):

1. read what the venue has (Binance ``GET /fapi/v1/symbolConfig``: margin type
   and leverage in one read; Bybit ``GET /v5/account/info`` for the margin
   mode, which on a unified account is account-wide, and
   ``GET /v5/position/list?symbol=`` for the leverage);
2. set only what differs (Binance ``POST /fapi/v1/marginType``,
   ``POST /fapi/v1/leverage``; Bybit ``POST /v5/account/set-margin-mode``,
   ``POST /v5/position/set-leverage``), through the executor (ENTRY class:
   these are writes, and refused in read-only mode);
3. read it back; only a verified setup is cached (per symbol, per process:
   later entries cost nothing).

Anything that goes wrong refuses the *entry* before it is sent (a
:class:`~adapters.errors.VenueError` REJECTED whose message says what and
why: a position or orders open in another margin mode, leverage above the
symbol's bracket, the venue reporting something else after the change), so an
entry is never half set up. The venue's codes for these refusals, and which
venue has one margin mode per account, are in its unit (:mod:`adapters.venues`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.errors import Outcome, VenueError
from adapters.markets import Market
from adapters.rate_tables import Priority
from adapters.venues import unit_for

if TYPE_CHECKING:
    from adapters.venue import Venue

class Wanted(msgspec.Struct, frozen=True):
    """What the config asks for one symbol."""

    leverage: int
    margin_mode: str  # isolated / cross


class Found(msgspec.Struct, frozen=True):
    leverage: int | None
    margin_mode: str | None


class TradingSetup:
    """Per venue account: what was set and verified, per symbol, in this process.

    ``wanted(symbol_id)`` gives the config's leverage and margin mode;
    ``account_wide_margin``: the venue has one margin mode for the account (the
    unit says: Bybit unified), so it is read and set once, not per symbol."""

    def __init__(self, venue_name: str, wanted: Callable[[str], Wanted], *, account_wide_margin: bool) -> None:
        self.venue_name = venue_name
        self.unit = unit_for(venue_name)
        self.wanted = wanted
        self.account_wide_margin = account_wide_margin
        self.done: dict[str, Wanted] = {}
        self._account_margin: str | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    def is_done(self, symbol_id: str, leverage: int | None = None) -> bool:
        want = self._want(symbol_id, leverage)
        return self.done.get(symbol_id) == want

    def _want(self, symbol_id: str, leverage: int | None) -> Wanted:
        want = self.wanted(symbol_id)
        return want if leverage is None or leverage == want.leverage else msgspec.structs.replace(want, leverage=leverage)

    async def ensure(self, venue: Venue, m: Market, *, leverage: int | None = None, ctx: dict[str, Any] | None = None) -> None:
        """Set and verify ``m``'s leverage (``leverage``, else the config's) and margin mode, once; raise
        REJECTED with the reason when the venue will not take them (the entry must not go)."""
        want = self._want(m.id, leverage)
        if self.done.get(m.id) == want:
            return
        lock = self._locks.setdefault(m.id, asyncio.Lock())
        async with lock:
            if self.done.get(m.id) == want:
                return
            if m.max_leverage is not None and want.leverage > m.max_leverage:
                raise self._refused(m, f"leverage {want.leverage} is above the symbol's maximum of {m.max_leverage}")
            try:
                found = await self._read(venue, m, ctx)
                changed = False
                if found.margin_mode != want.margin_mode:
                    await self._write(venue, "set_margin_mode", lambda: venue.exchange.set_margin_mode(want.margin_mode, m.symbol), ctx)
                    changed = True
                if found.leverage != want.leverage:
                    await self._write(venue, "set_leverage", lambda: venue.exchange.set_leverage(want.leverage, m.symbol), ctx)
                    changed = True
                if changed:
                    found = await self._read(venue, m, ctx, fresh=True)  # the read-back
            except VenueError as err:
                if err.outcome is Outcome.FATAL:
                    raise  # the key: the executor has said so; the entry fails with it
                raise self._refused(m, self._words(err)) from None
            if found.leverage != want.leverage:
                raise self._refused(m, f"the venue reports leverage {found.leverage} after setting {want.leverage}")
            if found.margin_mode != want.margin_mode:
                raise self._refused(m, f"the venue reports {found.margin_mode} margin after setting {want.margin_mode}")
            self.done[m.id] = want

    # ------------------------------------------------------------ steps
    async def _write(self, venue: Venue, op: str, call: Callable[[], Any], ctx: dict[str, Any] | None) -> None:
        try:
            await venue.executor.run(op, call, idempotent=True, context=ctx, priority=Priority.ENTRY)
        except VenueError as err:
            if err.code not in self.unit.setup_already:
                raise

    async def _read(self, venue: Venue, m: Market, ctx: dict[str, Any] | None, *, fresh: bool = False) -> Found:
        """What the venue has for ``m`` (parsed from the venue's own fields; the read-back of a change too)."""
        ex = venue.exchange
        if fresh or not self.account_wide_margin or self._account_margin is None:  # account-wide (Bybit unified): read once
            raw = await venue.executor.run("fetch_margin_mode", lambda: ex.fetch_margin_mode(m.symbol), idempotent=True, record=False, context=ctx)
            margin = raw.get("marginMode")
            if self.account_wide_margin:
                self._account_margin = margin
            both = venue.style.margin_mode_leverage(raw.get("info") or {})
            if both not in (None, ""):  # the venue gave the leverage with it (Binance symbolConfig)
                return Found(leverage=_int(both), margin_mode=margin)
        else:
            margin = self._account_margin
        lev = await venue.executor.run("fetch_leverage", lambda: ex.fetch_leverage(m.symbol), idempotent=True, record=False, context=ctx)
        return Found(leverage=_int(lev.get("longLeverage")), margin_mode=margin)

    # ------------------------------------------------------------ refusals
    def _refused(self, m: Market, why: str) -> VenueError:
        want = self.wanted(m.id)
        return VenueError(Outcome.REJECTED, f"{m.id}: trading setup refused, entry not sent: {why} (wanted leverage {want.leverage}, {want.margin_mode} margin)", code="setup")

    def _words(self, err: VenueError) -> str:
        meaning = self.unit.setup_refusals.get(err.code or "")
        return f"{meaning}: {err}" if meaning else str(err)


def _int(value: Any) -> int | None:
    if value in (None, ""):
        return None
    return int(float(value))  # Bybit sends "10" or "10.00"


def setup_for(config: Any, venue_name: str, markets: Any) -> TradingSetup | None:
    """The config's setup for a real venue (None with ``position.set_leverage = false``).

    Refuses (ValueError, one line) symbols the venue does not list, and on Bybit
    per-symbol margin modes that differ (its unified account has one)."""
    p = config.position
    if not p.set_leverage:
        return None
    for table in ("leverage_by_symbol", "margin_mode_by_symbol"):
        for symbol in getattr(p, table):
            try:
                markets.resolve(symbol)
            except KeyError:
                raise ValueError(f"position.{table}.{symbol}: {venue_name} has no such linear market") from None
    account_wide = unit_for(venue_name).account_wide_margin
    if account_wide and set(p.margin_mode_by_symbol.values()) - {p.margin_mode}:
        raise ValueError(f"position.margin_mode_by_symbol: the {venue_name} account (unified) has one margin mode for the whole account; every symbol must use position.margin_mode ({p.margin_mode!r})")

    def wanted(symbol_id: str) -> Wanted:
        return Wanted(leverage=p.leverage_for(symbol_id), margin_mode=p.margin_mode_for(symbol_id))

    return TradingSetup(venue_name, wanted, account_wide_margin=account_wide)
