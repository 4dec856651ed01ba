"""Read-only mode (``exchange.read_only = true``): the bot connects, reconciles, reports and alerts,
and never sends an order, a cancel or a setting.

Enforced at the one seam every REST request of a ccxt exchange passes:
:func:`install_read_only` replaces the instance's ``fetch2`` (ccxt's REST
door: ``request`` -> ``fetch2`` -> ``sign`` -> ``fetch``) with one that lets
only reads through. Whatever code path asks (the executor, a look-up, a
zombie clean-up, a leverage setting, a bug calling ccxt directly), a request
that is not a GET is refused before it is signed, with a
:class:`~adapters.errors.VenueError` REJECTED, code ``read_only``. The only
writes let through are the venue's own stream housekeeping, which changes
nothing on the account (the venue unit's ``read_only_writes``: Binance's
user-data ``listenKey``). ccxt.pro's websockets carry no orders in this bot (streams
are subscriptions only).

Above the seam, the rest of the bot knows the mode so that it does not try:
the supervisor keeps intake blocked ("read-only"), the intakes refuse signals
with that reason, the sync actor reports untracked positions and zombie
orders without adopting or cancelling, the guard reports and alerts on
unprotected positions without asking an owner to act, and no position actor
is started for positions recovered from the store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from adapters import venues
from adapters.errors import Outcome, VenueError

#: The code of a refusal by read-only mode (never the venue's).
READ_ONLY_CODE = "read_only"

#: The reason given for refused signals and in ``ctl status``.
READ_ONLY_REASON = "read-only mode (exchange.read_only = true): no orders are sent"


def install_read_only(exchange: Any) -> Any:
    """Make ``exchange`` refuse every REST request but reads (idempotent); returns it."""
    if getattr(exchange, "_tb_read_only", False):
        return exchange
    fetch2: Callable[..., Awaitable[Any]] = exchange.fetch2
    unit = venues.find(getattr(exchange, "id", None))
    allowed = unit.read_only_writes if unit is not None else frozenset()

    async def read_only_fetch2(path: str, api: Any = "public", method: str = "GET", params: Any = None, config: Any = None) -> Any:
        verb = str(method).upper()
        if verb != "GET" and (verb, path) not in allowed:
            raise VenueError(Outcome.REJECTED, f"{READ_ONLY_REASON}: {verb} {path} refused", code=READ_ONLY_CODE)
        return await fetch2(path, api, method, {} if params is None else params, {} if config is None else config)

    exchange.fetch2 = read_only_fetch2
    exchange._tb_read_only = True
    return exchange
