"""The control mailbox protocol shared by ``tradebot ctl`` and the running bot.

One request per connection on a local Unix socket: a JSON line in, a JSON
line back. Every request carries the bot's token (a 0600 file only the local
user can read), when it was sent and how long it stays valid, so a command
that arrives late is refused instead of being executed at the wrong time.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024

_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}(/[A-Z0-9]{2,12}(:[A-Z0-9]{2,12})?)?$")


class ControlRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    v: int
    id: str
    token: str
    command: str
    args: dict[str, Any] = {}
    sent_at_ms: int
    ttl_ms: int


class ControlReply(msgspec.Struct, frozen=True, kw_only=True):
    v: int = PROTOCOL_VERSION
    id: str
    ok: bool
    result: Any = None
    error: str | None = None


#: command -> {argument: description}; every argument listed is required.
COMMANDS: dict[str, dict[str, str]] = {
    "status": {},
    "positions": {},
    "close": {"symbol": "a market symbol such as BTCUSDT or BTC/USDT:USDT"},  # or a position id (ctl close ID)
    "close-all": {},
    "pause": {},
    "resume": {},
    "reload": {},
    "shutdown": {},
    "sync": {},
    "zombies": {"?dry_run": "true to only report"},
    "aged": {},
}

HELP = {
    "status": "health, intake, children, uptime",
    "positions": "open positions: entry, mark, stop (kind, distance), unrealised PnL, trailing state, age",
    "close": "close one position at market, by its id (as positions lists it) or its symbol (its stop is cancelled only after the close is confirmed)",
    "close-all": "close every open position",
    "pause": "stop opening new positions (open positions stay protected)",
    "resume": "start opening new positions again",
    "reload": "re-read the config file; apply the settings that are safe to change live",
    "shutdown": "graceful shutdown; stop orders stay on the exchange",
    "sync": "reconcile with the exchange now and print the findings",
    "zombies": "find orders nobody owns and cancel them (--dry-run: only report)",
    "aged": "aged positions: phase, age, allowed loss, exit price and its distance to the mark",
}


def validate_command(command: str, args: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Check a command and its arguments; returns (normalised args, error)."""
    spec = COMMANDS.get(command)
    if spec is None:
        return None, f"unknown command {command!r}; known: {', '.join(COMMANDS)}"
    names = {a.lstrip("?"): a for a in spec}
    extra = sorted(set(args) - set(names))
    if extra:
        return None, f"{command}: unexpected argument(s) {', '.join(extra)}"
    missing = [a for a in spec if not a.startswith("?") and a not in args]
    if missing:
        return None, f"{command}: missing {', '.join(f'{a} ({spec[a]})' for a in missing)}"
    clean = dict(args)
    if "symbol" in spec:
        symbol = args["symbol"]
        if not isinstance(symbol, str) or not _SYMBOL.match(symbol.strip().upper()):
            return None, f"{command}: symbol: expected {spec['symbol']}, got {symbol!r}"
        clean["symbol"] = symbol.strip().upper()
    if "dry_run" in args and not isinstance(args["dry_run"], bool):
        return None, f"{command}: dry_run: expected true or false, got {args['dry_run']!r}"
    return clean, None


encode = msgspec.json.Encoder().encode
decode_request = msgspec.json.Decoder(ControlRequest).decode
decode_reply = msgspec.json.Decoder(ControlReply).decode
