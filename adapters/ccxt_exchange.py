"""Real exchanges through ccxt's async client: Binance USDⓈ-M and Bybit linear.

``build_ccxt_venue(config, clock, store)`` is the one call the composition
root needs (it is a coroutine: run it on the I/O loop, where every later
exchange call runs too)::

    venue = runtime.io.run(build_ccxt_venue(config, runtime.clock, runtime.store), 60)
    runtime.resources.append(lambda: runtime.io.run(venue.exchange.close(), 5))

What is decided here, once:

* **Credentials** come only from the environment variables *named* in
  ``exchange.api_key_env`` / ``exchange.api_secret_env``; a missing one is a
  clear error naming the variable. Values are never logged, and
  :class:`SecretGuard` makes sure no ccxt exception message, ``verbose``
  print or ccxt debug log line can carry them.
* **Testnet**: Bybit's testnet through ``set_sandbox_mode(True)``
  (api-testnet.bybit.com). ccxt 4.5.90 refuses Binance's futures sandbox
  (``NotSupported: testnet/sandbox mode is not supported for futures
  anymore``), so for ``binanceusdm`` testnet means Binance *demo trading*
  (``enable_demo_trading(True)``, demo-fapi.binance.com; keys from
  demo.binance.com).
* ``exchange.ccxt_options`` is merged (deeply) into the constructor dict;
  it may not carry credentials, switch off the rate limiter or turn on
  ``verbose`` (which prints request headers, i.e. the API key).
* Per venue, the constructor defaults, the testnet switch and the class come
  from its unit (:mod:`adapters.venues`: ``ccxt_defaults``, ``enable_testnet``,
  ``exchange_name``); nothing here names a venue. Bybit: linear swaps only
  (``defaultType`` swap, markets of type linear), unified trading account
  assumed (``enableUnifiedAccount``: no start-up call to
  ``/v5/user/query-api``, which needs wallet permissions).
* **Streams**: with ``sync.use_streams`` or ``feeds.use_streams`` the
  exchange is ccxt.pro's class (``ccxt.pro.binanceusdm`` / ``ccxt.pro.bybit``):
  the REST class plus ``watch_*``, so every REST call, our HTTP interception
  and the guard below work unchanged. What ccxt.pro does itself: the
  connections, Binance's listenKey (``POST /fapi/v1/listenKey`` on the first
  private watch, ``PUT`` every 20 min), Bybit's ``auth`` op, pings, and a new
  connection with a new subscription on the next ``watch_*`` after a drop.
  What we add (:func:`install_stream_hooks`): Binance's ``listenKeyExpired``
  (ccxt 4.5.90 ignores it, and the stream would go silent) drops the
  connection and the key, so the next watch logs in again; no positions
  snapshot on the first watch (sync's full reads are the snapshot); all mark
  subscriptions on one Binance connection.
* **ccxt's REST throttle is off; ours budgets.** ccxt's bucket is one FIFO
  queue at ``rateLimit`` (50 ms) per cost unit: after an all-symbol
  ``openOrders`` / ``openAlgoOrders`` read (cost 40) every later request,
  stops included, waited ~2 s behind it. Every venue call the bot makes goes
  through the executor's :class:`~adapters.rate_limit.RateLimiter`, which
  charges the venue's own weights by class (protective calls first, with a
  reserve), so :func:`bypass_rest_throttle` makes ccxt's REST throttle pass
  at once. ``enableRateLimit`` stays true: ccxt.pro still paces its websocket
  messages with it. The few REST calls outside the executor (load_markets'
  exchangeInfo, the position-mode read, ccxt.pro's listenKey keep-alive) are
  unbudgeted and fit in the share left to others (``rate_limit_share``).
* **One host**: ``fetchCurrencies`` is off for Binance (load_markets would read
  the spot wallet on api.binance.com). The futures traffic goes to the
  ``urls["api"]`` keys ``fapiPublic``, ``fapiPublicV2``, ``fapiPublicV3``,
  ``fapiPrivate``, ``fapiPrivateV2``, ``fapiPrivateV3`` (and ``fapiData``);
  ``public`` / ``private`` are the spot API and redirect nothing a futures bot
  sends. Streams: ``urls["api"]["ws"]`` (ccxt.pro). Bybit: ``urls["api"]``
  ``public`` and ``private`` (one host for everything). ccxt picks Binance's
  per-market error tables by host name, so behind another host (a proxy, the
  test venue) its exception classes are coarser; our classification reads the
  venue's code from the answer and does not depend on them.
* ``exchange.ccxt_options.urls`` wins over the testnet switch (which replaces
  ``urls["api"]`` wholesale), so another base URL, REST or websocket, can be
  set for either mode.

:class:`~adapters.secret_guard.SecretGuard` and
:func:`~adapters.http_intercept.intercept_http` live in their own modules and
are re-exported here.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import ccxt.pro as ccxt_pro

from adapters.errors import classify
from adapters.executor import executor_for
from adapters.http_intercept import HttpRequest, intercept_http
from adapters.markets import Markets, market_from_ccxt
from adapters.read_only import install_read_only
from adapters.secret_guard import SecretGuard
from adapters.venue import Venue
from adapters.venue_setup import setup_for
from adapters.venues import real_venues, style_for

#: ``exchange.name`` -> ccxt class name (async_support): the registry's real venues.
CCXT_IDS = {name: unit.exchange_name for name, unit in real_venues().items()}

#: Closes of dropped ccxt.pro clients still running (the loop keeps only weak references to tasks).
_closing: set[asyncio.Future[Any]] = set()

#: Constructor keys that are credentials: never accepted from config.toml.
_CREDENTIAL_KEYS = frozenset({"apiKey", "secret", "password", "uid", "login", "twofa", "privateKey", "walletAddress", "token", "accountId"})

log = logging.getLogger("tradebot.ccxt")


class ExchangeSetupError(RuntimeError):
    """The real exchange cannot be set up; ``str()`` is one line naming what to fix."""


# --------------------------------------------------------------- credentials
def read_credentials(config: Any, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(api key, secret) from the environment variables named in the config."""
    env = os.environ if env is None else env
    e = config.exchange
    values = []
    for setting, var, what in (("exchange.api_key_env", e.api_key_env, "API key"), ("exchange.api_secret_env", e.api_secret_env, "API secret")):
        value = (env.get(var) or "").strip()
        if not value:
            raise ExchangeSetupError(f"{setting}: environment variable {var} is not set or empty; it must hold the {e.name} {what} (keys are read from the environment only, never from config.toml)")
        values.append(value)
    return values[0], values[1]


def _plain(value: Any, path: str) -> Any:
    """TOML values as ccxt wants them: Decimals (our TOML floats) become int / float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, path) for v in value]
    return value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, Mapping) else value
    return out


def constructor_options(config: Any, api_key: str, secret: str) -> dict[str, Any]:
    """The dict given to the ccxt constructor: defaults, then ``exchange.ccxt_options``, then ours."""
    e = config.exchange
    extra = _plain(dict(e.ccxt_options), "exchange.ccxt_options")
    for key in sorted(set(extra) & _CREDENTIAL_KEYS):
        raise ExchangeSetupError(f"exchange.ccxt_options.{key}: refused: credentials come from the environment variables named in exchange.api_key_env / api_secret_env only")
    if extra.get("verbose"):
        raise ExchangeSetupError("exchange.ccxt_options.verbose: refused: ccxt's verbose mode prints every request's headers, which carry the API key")
    if extra.get("enableRateLimit") is False:
        raise ExchangeSetupError("exchange.ccxt_options.enableRateLimit: refused: ccxt.pro paces websocket messages with it (REST is budgeted by the bot's own limiter either way)")
    unit = real_venues().get(e.name)
    merged = _deep_merge(copy.deepcopy(dict(unit.ccxt_defaults)) if unit is not None else {}, extra)
    merged.update(apiKey=api_key, secret=secret, enableRateLimit=True, verbose=False)
    return merged


def wants_streams(config: Any) -> bool:
    """Does the config ask for any venue stream (then the exchange is ccxt.pro's class)?"""
    return bool(config.sync.use_streams or config.feeds.use_streams)


def build_ccxt_exchange(config: Any, *, env: Mapping[str, str] | None = None, streams: bool = False) -> Any:
    """A ccxt exchange for ``exchange.name`` (binanceusdm or bybit), guarded against leaking its keys.

    ``streams``: ccxt.pro's class instead of ``ccxt.async_support``'s. :func:`build_ccxt_venue`
    passes :func:`wants_streams`; a caller that builds the exchange itself (tests, a dry run)
    gets REST only unless it asks, so nothing dials a venue's websocket unasked."""
    e = config.exchange
    if e.name not in CCXT_IDS:
        raise ExchangeSetupError(f"exchange.name: expected one of {', '.join(repr(n) for n in CCXT_IDS)} for a real exchange, got {e.name!r}")
    api_key, secret = read_credentials(config, env)
    options = constructor_options(config, api_key, secret)
    exchange = getattr(ccxt_pro if streams else ccxt_async, CCXT_IDS[e.name])(options)
    if e.testnet:
        real_venues()[e.name].enable_testnet(exchange)  # Binance: demo trading; Bybit: the sandbox
        if isinstance(options.get("urls"), dict):  # the switch replaced urls["api"]: the config's URLs win
            exchange.urls = _deep_merge(exchange.urls, options["urls"])
    SecretGuard((api_key, secret)).install(exchange)
    bypass_rest_throttle(exchange)
    if streams:
        install_stream_hooks(exchange)
    log.info("%s exchange set up (%s; %s; keys from $%s / $%s)", e.name, "testnet" if e.testnet else "LIVE", "REST and streams" if streams else "REST only", e.api_key_env, e.api_secret_env)
    return exchange


async def _no_throttle(cost: Any = None) -> None:
    """ccxt's REST throttle, passed at once: the executor's limiter has already charged the call."""
    return None


def bypass_rest_throttle(exchange: Any) -> Any:
    """Let ccxt's REST requests through without its FIFO bucket (see the module docstring).

    ccxt calls ``self.throttle(cost)`` in ``fetch2`` before every REST request when
    ``enableRateLimit`` is set; the instance attribute replaces that method only.
    ccxt.pro's websocket clients have their own throttlers and keep them.
    ``del exchange.throttle`` restores ccxt's bucket (the benchmark's "before")."""
    exchange.throttle = _no_throttle
    return exchange


def install_stream_hooks(exchange: Any) -> Any:
    """What ccxt.pro 4.5.90 leaves to us, installed before the first connection exists.

    Binance pushes ``listenKeyExpired`` when the user-data key lapses (a missed
    keep-alive, a suspended host) and then sends nothing more on that
    connection, which stays open: ccxt does not handle the event, so the order
    and position streams would go silent while looking healthy. Here the event
    fails the stream's pending watches, closes the connection and forgets the
    key, so the pump's next ``watch_*`` fetches a new listenKey and connects with it.
    """
    handle_message = exchange.handle_message

    def handle(client: Any, message: Any) -> Any:
        if isinstance(message, dict) and message.get("e") == "listenKeyExpired":
            return _drop_user_stream(exchange, client)
        return handle_message(client, message)

    exchange.handle_message = handle
    return exchange


def _drop_user_stream(exchange: Any, client: Any) -> None:
    for bucket in exchange.options.values():
        if isinstance(bucket, dict) and bucket.get("listenKey") and bucket["listenKey"] in client.url:
            bucket.update(listenKey=None, lastAuthenticatedTime=0)
    error = ccxt.NetworkError(f"{exchange.id} user data stream: listenKeyExpired; reconnecting with a new listenKey")
    client.error = error  # a closing we asked for: ccxt must not take it for a server disconnect
    client.reset(error)
    if exchange.clients.get(client.url) is client:
        del exchange.clients[client.url]
    task = asyncio.ensure_future(client.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _usable_markets(raw: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The markets our :class:`Markets` can read (one odd instrument must not stop the bot)."""
    out = {}
    for symbol, m in raw.items():
        try:
            market_from_ccxt(m)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            log.warning("market %s skipped: %s", symbol, exc)
            continue
        out[symbol] = m
    return out


async def build_ccxt_venue(config: Any, clock: Any, store: Any, *, exchange: Any = None, env: Mapping[str, str] | None = None) -> Venue:
    """The :class:`Venue` over a real exchange: markets loaded, position mode checked.

    A coroutine: run it on the I/O loop (``runtime.io.run(build_ccxt_venue(...), 60)``).
    ``exchange`` replaces the one built from the config (tests pass one with
    :func:`intercept_http` installed). On failure the exchange is closed and
    :class:`ExchangeSetupError` says why.
    """
    e = config.exchange
    exchange = exchange if exchange is not None else build_ccxt_exchange(config, env=env, streams=wants_streams(config))
    if e.read_only:
        install_read_only(exchange)  # before any request: nothing but reads ever leaves
    try:
        raw = await exchange.load_markets()
        markets = Markets.from_ccxt(_usable_markets(raw))
        if not len(markets):
            raise ExchangeSetupError(f"{e.name}: no linear USDT perpetual markets found")
        await _check_position_mode(exchange, e.name, e.hedge_mode, markets)
        try:
            setup = None if e.read_only else setup_for(config, e.name, markets)
        except ValueError as exc:
            raise ExchangeSetupError(str(exc)) from None
    except ExchangeSetupError:
        await exchange.close()
        raise
    except Exception as exc:
        await exchange.close()
        raise ExchangeSetupError(f"{e.name}: start-up failed: {classify(exc)}") from None
    return Venue(e.name, exchange, markets, executor_for(config, e.name, clock, store), style_for(e.name, hedge_mode=e.hedge_mode), setup=setup, position_stop=e.stop_mode == "position")


async def _check_position_mode(exchange: Any, name: str, hedge_mode: bool, markets: Markets | None = None) -> None:
    """The account's position mode must match ``exchange.hedge_mode``: read with ccxt's
    ``fetch_position_mode`` where it has one (Binance), else through the venue's own endpoint as
    the style names it (Bybit: ``/v5/position/list`` for one symbol, by its ``positionIdx`` slots)."""
    style = style_for(name)
    request = style.position_mode_request(next(iter(markets)).id) if markets is not None and len(markets) else None
    if request is not None and callable(getattr(exchange, request[0], None)):
        hedged = style.hedged_from(await getattr(exchange, request[0])(request[1]))
        if hedged is None:
            raise ExchangeSetupError(f"exchange.hedge_mode: the {name} account's position mode could not be read ({request[0]} answered no position slots); check the key's permissions")
    elif (getattr(exchange, "has", None) or {}).get("fetchPositionMode") is True:
        hedged = bool((await exchange.fetch_position_mode()).get("hedged"))
    else:
        return
    if hedged != hedge_mode:
        raise ExchangeSetupError(
            f"exchange.hedge_mode: the {name} account is in {'hedge' if hedged else 'one-way'} mode but exchange.hedge_mode = {str(hedge_mode).lower()}; "
            "change one of them (orders would be refused or hit the wrong position side)"
        )


__all__ = [
    "CCXT_IDS",
    "ExchangeSetupError",
    "HttpRequest",
    "SecretGuard",
    "build_ccxt_exchange",
    "build_ccxt_venue",
    "bypass_rest_throttle",
    "constructor_options",
    "intercept_http",
    "read_credentials",
    "style_for",
]
