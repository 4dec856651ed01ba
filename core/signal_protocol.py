"""The signal protocol: JSON messages over one WebSocket (``/ws``), version 1.

This docstring is the protocol document. The bundled server
(``adapters/signal_server.py``) and the client (``adapters/signal_client.py``)
speak it; :func:`decode` is the single place where a frame from the wire
becomes trusted data.

Frames and messages
-------------------
Every frame is one JSON object (a text frame; binary frames holding the same
UTF-8 JSON are accepted) with a string field ``"type"``. Unknown fields are
an error, not ignored: a producer that adds a field must bump the version.

Server -> client::

    {"type": "hello", "protocol": 1, "server": "<name>", "server_time_ms": <int>}
    {"type": "subscribed", "since_wave_ts_ms": <int|null>, "replay_waves": <int>}
    {"type": "batch", "wave_ts_ms": <int>, "signals": [<signal>, ...]}
    {"type": "signal", "signal": <signal>}
    {"type": "heartbeat", "ts_ms": <int>}

Client -> server::

    {"type": "subscribe", "since_wave_ts_ms": <int|null>}

A signal::

    {"id": "sig-1767225600000-03",      non-empty string, unique forever
     "exchange": "binanceusdm",         "binanceusdm" | "bybit" | "paper"
     "symbol": "BTCUSDT",               venue id or ccxt unified "BTC/USDT:USDT"
     "action": "buy",                   "buy" | "sell" | "long" | "short"
     "score_week": 0.83,                JSON number or decimal string, finite, >= 0
     "score_month": "0.61",
     "wave_ts_ms": 1767225600000,       start of its 15-minute wave (UTC grid)
     "created_ms": 1767225712345}       when the producer made it

Session
-------
1. The client connects; the server sends ``hello``.
2. The client sends ``subscribe``. ``since_wave_ts_ms`` is the newest wave the
   client has already received (``null``: live only). The server answers
   ``subscribed`` (how many waves it will replay), then every wave it
   published with ``wave_ts_ms > since_wave_ts_ms`` (oldest first), then live
   batches as it publishes them. The backlog and the live stream are joined
   without a gap or an overlap.
3. The server sends ``heartbeat`` every ~20 s; the client pings every ~20 s
   and declares a connection that was silent (no frame, no pong) for ~60 s
   dead, closes it and reconnects with backoff, resubscribing from its newest
   wave. Signal ids make redelivery harmless: the consumer drops ids it has
   seen.

Waves
-----
A wave is a 15-minute bucket, ``wave_ts_ms`` its start (``wave_of``). Waves
are processed at minutes 5, 20, 35 and 50 of the hour (``processing_times``):
the wave that began at :00 is processed at :05.

Validation (:func:`decode`)
---------------------------
``decode`` never raises. It returns the accepted signals, normalised once
(symbol -> the venue's market id, e.g. ``BTCUSDT``; action -> side
``long``/``short``; scores -> ``Decimal``), and one :class:`Rejection` per
refused message or signal, each with a reason. A batch whose envelope is
valid is judged signal by signal: the good ones are accepted, each bad one is
rejected on its own. A signal is refused when a field is missing, extra or of
the wrong type; the exchange is unknown or not configured; the symbol is not
a market of that exchange; a score is NaN, infinite (also: too large for a
float) or negative; ``wave_ts_ms`` is not on the 15-minute grid or differs
from its batch's; ``created_ms`` or ``wave_ts_ms`` lies more than
``max_future_ms`` in the future or more than ``max_age_ms`` in the past; or
its id was seen before (``seen_ids``, which ``decode`` updates with each
accepted id).
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol

import msgspec

PROTOCOL_VERSION = 1
WAVE_MS = 15 * 60 * 1000
HOUR_MS = 60 * 60 * 1000
DEFAULT_MAX_AGE_MS = 2 * HOUR_MS
DEFAULT_MAX_FUTURE_MS = 60_000
EXCHANGES = ("binanceusdm", "bybit", "paper")
MAX_ID_CHARS = 128
_RAW_EXCERPT_CHARS = 200

Action = Literal["buy", "sell", "long", "short"]
Side = Literal["long", "short"]
_SIDE_OF: dict[str, Side] = {"buy": "long", "long": "long", "sell": "short", "short": "short"}


# --------------------------------------------------------------------------- wire types


class Signal(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A signal as it travels (scores: a JSON number or a decimal string)."""

    id: str
    exchange: str
    symbol: str
    action: Action
    score_week: Decimal
    score_month: Decimal
    wave_ts_ms: int
    created_ms: int


class _Msg(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    # Each message repeats frozen=True: msgspec inherits it, mypy does not.
    pass


class Hello(_Msg, frozen=True, tag="hello"):
    protocol: int
    server: str
    server_time_ms: int


class Subscribed(_Msg, frozen=True, tag="subscribed"):
    since_wave_ts_ms: int | None
    replay_waves: int


class SignalMsg(_Msg, frozen=True, tag="signal"):
    signal: Signal


class BatchMsg(_Msg, frozen=True, tag="batch"):
    wave_ts_ms: int
    signals: tuple[Signal, ...]


class Heartbeat(_Msg, frozen=True, tag="heartbeat"):
    ts_ms: int


class Subscribe(_Msg, frozen=True, tag="subscribe"):
    since_wave_ts_ms: int | None = None


ServerMessage = Hello | Subscribed | SignalMsg | BatchMsg | Heartbeat

_encoder = msgspec.json.Encoder(decimal_format="number")
_json = msgspec.json.Decoder(float_hook=Decimal)  # exact decimals, never float rounding


def encode(message: ServerMessage | Subscribe | dict[str, Any]) -> bytes:
    """One frame (UTF-8 JSON); Decimals go out as JSON numbers."""
    return _encoder.encode(message)


# --------------------------------------------------------------------------- results


class AcceptedSignal(msgspec.Struct, frozen=True, kw_only=True):
    """A validated signal: symbol is the venue's market id, scores exact."""

    id: str
    exchange: str
    symbol: str  # venue id, e.g. BTCUSDT
    unified_symbol: str  # ccxt, e.g. BTC/USDT:USDT
    side: Side
    action: Action
    score_week: Decimal
    score_month: Decimal
    wave_ts_ms: int
    created_ms: int


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """Why a frame or one signal of it was refused."""

    reason: str
    signal_id: str | None = None
    index: int | None = None  # position in its batch
    raw: str = ""  # a short excerpt, for the record


class DecodeKind(enum.StrEnum):
    HELLO = "hello"
    SUBSCRIBED = "subscribed"
    SIGNAL = "signal"
    BATCH = "batch"
    HEARTBEAT = "heartbeat"
    INVALID = "invalid"


class DecodeResult(msgspec.Struct, frozen=True, kw_only=True):
    kind: DecodeKind
    accepted: tuple[AcceptedSignal, ...] = ()
    rejected: tuple[Rejection, ...] = ()
    message: Hello | Subscribed | Heartbeat | None = None  # control messages
    wave_ts_ms: int | None = None  # of a batch (or a single signal)


class MarketsLike(Protocol):
    def resolve(self, symbol: str) -> Any: ...


class SeenIds(Protocol):
    def __contains__(self, item: object) -> bool: ...
    def add(self, item: str) -> None: ...


class RecentIds:
    """A bounded set of the most recently added ids (oldest forgotten first)."""

    def __init__(self, max_size: int = 100_000, initial: Iterable[str] = ()) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._ids: OrderedDict[str, None] = OrderedDict()
        for item in initial:
            self.add(item)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def add(self, item: str) -> None:
        self._ids[item] = None
        self._ids.move_to_end(item)
        while len(self._ids) > self.max_size:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


# --------------------------------------------------------------------------- waves


def wave_of(ts_ms: int) -> int:
    """Start of the 15-minute wave that contains ``ts_ms`` (UTC grid)."""
    return ts_ms - ts_ms % WAVE_MS


class ProcessingSchedule(msgspec.Struct, frozen=True):
    """When waves are processed: ``minutes`` past each hour."""

    minutes: tuple[int, ...]

    def times_between(self, start_ms: int, end_ms: int) -> list[int]:
        """Processing instants ``t`` with ``start_ms <= t < end_ms``."""
        out: list[int] = []
        hour = start_ms - start_ms % HOUR_MS
        while hour < end_ms:
            out.extend(t for m in self.minutes if start_ms <= (t := hour + m * 60_000) < end_ms)
            hour += HOUR_MS
        return out

    def next_after(self, now_ms: int) -> int:
        """The first processing instant strictly after ``now_ms``."""
        return self.times_between(now_ms + 1, now_ms + 1 + HOUR_MS)[0]

    @staticmethod
    def wave_for(at_ms: int) -> int:
        """The wave processed at ``at_ms``: the one that contains it (:05 -> :00)."""
        return wave_of(at_ms)


def processing_times(minutes: Iterable[int] = (5, 20, 35, 50)) -> ProcessingSchedule:
    """The processing schedule; raises ValueError for minutes outside 0..59 or none."""
    ms = tuple(sorted(set(minutes)))
    if not ms or any(not isinstance(m, int) or isinstance(m, bool) or not 0 <= m < 60 for m in ms):
        raise ValueError(f"processing minutes must be integers in 0..59: {minutes!r}")
    return ProcessingSchedule(ms)


# --------------------------------------------------------------------------- decoding


class _SignalEnvelope(_Msg, frozen=True, tag="signal"):
    signal: Any


class _BatchEnvelope(_Msg, frozen=True, tag="batch"):
    wave_ts_ms: int
    signals: list[Any]


_CONTROL: dict[str, type[Hello | Subscribed | Heartbeat]] = {"hello": Hello, "subscribed": Subscribed, "heartbeat": Heartbeat}


def _excerpt(value: Any) -> str:
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            text = bytes(value[: _RAW_EXCERPT_CHARS * 4]).decode("utf-8", "replace")
        elif isinstance(value, str):
            text = value[: _RAW_EXCERPT_CHARS * 4]
        else:
            text = _encoder.encode(value).decode("utf-8", "replace")
    except Exception:
        text = "<unprintable>"
    return text if len(text) <= _RAW_EXCERPT_CHARS else text[: _RAW_EXCERPT_CHARS - 3] + "..."


def _invalid(reason: str, raw: Any) -> DecodeResult:
    return DecodeResult(kind=DecodeKind.INVALID, rejected=(Rejection(reason=reason, raw=_excerpt(raw)),))


class _Checker:
    def __init__(self, markets: Mapping[str, MarketsLike], now_ms: int, max_age_ms: int, max_future_ms: int, seen: SeenIds) -> None:
        self.markets, self.now_ms, self.seen = markets, now_ms, seen
        self.oldest_ms, self.newest_ms = now_ms - max_age_ms, now_ms + max_future_ms

    def time_problem(self, name: str, ts_ms: int) -> str | None:
        if ts_ms > self.newest_ms:
            return f"{name} {ts_ms} is {ts_ms - self.now_ms} ms in the future"
        if ts_ms < self.oldest_ms:
            return f"{name} {ts_ms} is stale: {self.now_ms - ts_ms} ms old (max age {self.now_ms - self.oldest_ms} ms)"
        return None

    def wave_problem(self, wave_ts_ms: int) -> str | None:
        if wave_ts_ms % WAVE_MS:
            return f"wave_ts_ms {wave_ts_ms} is not on a 15-minute boundary"
        return self.time_problem("wave_ts_ms", wave_ts_ms)

    def signal(self, obj: Any, index: int | None, batch_wave: int | None) -> AcceptedSignal | Rejection:
        sid = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
        where = "signal" if index is None else f"signals[{index}]"

        def reject(reason: str) -> Rejection:
            return Rejection(reason=f"{where}: {reason}", signal_id=sid, index=index, raw=_excerpt(obj))

        try:
            if not isinstance(obj, dict):
                return reject(f"not a JSON object (got {type(obj).__name__})")
            try:
                sig = msgspec.convert(obj, Signal)
            except msgspec.ValidationError as exc:
                return reject(f"invalid field: {exc}")
            if not sig.id.strip():
                return reject("id is empty")
            if len(sig.id) > MAX_ID_CHARS:
                return reject(f"id is longer than {MAX_ID_CHARS} characters")
            if sig.exchange not in EXCHANGES:
                return reject(f"unknown exchange {sig.exchange!r} (known: {', '.join(EXCHANGES)})")
            markets = self.markets.get(sig.exchange)
            if markets is None:
                return reject(f"exchange {sig.exchange!r} is not configured")
            try:
                market = markets.resolve(sig.symbol)
            except KeyError:
                return reject(f"unknown symbol {sig.symbol!r} on {sig.exchange}")
            scores = {}
            for name in ("score_week", "score_month"):
                value: Decimal = getattr(sig, name)
                if value.is_nan():
                    return reject(f"{name} is NaN")
                if value.is_infinite() or not math.isfinite(float(value)):
                    return reject(f"{name} is infinite or too large ({_excerpt(str(value))})")
                if value < 0:
                    return reject(f"{name} is negative ({value})")
                scores[name] = value + 0  # -0 -> 0
            if problem := self.wave_problem(sig.wave_ts_ms):
                return reject(problem)
            if batch_wave is not None and sig.wave_ts_ms != batch_wave:
                return reject(f"wave_ts_ms {sig.wave_ts_ms} differs from its batch's {batch_wave}")
            if problem := self.time_problem("created_ms", sig.created_ms):
                return reject(problem)
            if sig.id in self.seen:
                return reject(f"duplicate signal id {sig.id!r}")
            self.seen.add(sig.id)
            return AcceptedSignal(
                id=sig.id,
                exchange=sig.exchange,
                symbol=market.id,
                unified_symbol=market.symbol,
                side=_SIDE_OF[sig.action],
                action=sig.action,
                score_week=scores["score_week"],
                score_month=scores["score_month"],
                wave_ts_ms=sig.wave_ts_ms,
                created_ms=sig.created_ms,
            )
        except Exception as exc:
            return reject(f"could not be validated ({type(exc).__name__}: {exc})")


def decode(
    raw: bytes | str,
    *,
    markets_by_exchange: Mapping[str, MarketsLike],
    now_ms: int,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
    seen_ids: SeenIds | None = None,
) -> DecodeResult:
    """Validate one server frame; never raises (see the module docstring).

    ``markets_by_exchange`` maps an exchange name to its ``Markets``;
    ``seen_ids`` (any set, or a :class:`RecentIds`) gets each accepted id.
    """
    try:
        return _decode(raw, markets_by_exchange, now_ms, max_age_ms, max_future_ms, set() if seen_ids is None else seen_ids)
    except Exception as exc:
        return _invalid(f"internal error while decoding ({type(exc).__name__}: {exc})", raw)


def _decode(raw: Any, markets: Mapping[str, MarketsLike], now_ms: int, max_age_ms: int, max_future_ms: int, seen: SeenIds) -> DecodeResult:
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if not isinstance(raw, (bytes, str)):
        return _invalid(f"frame must be text or bytes, got {type(raw).__name__}", raw)
    try:
        obj = _json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeError, ValueError) as exc:
        return _invalid(f"malformed JSON: {exc}", raw)
    if not isinstance(obj, dict):
        return _invalid(f"not a JSON object (got {type(obj).__name__})", raw)
    kind = obj.get("type")
    if "type" not in obj:
        return _invalid("missing field 'type'", raw)
    if not isinstance(kind, str):
        return _invalid(f"field 'type' must be a string, got {type(kind).__name__}", raw)
    check = _Checker(markets, now_ms, max_age_ms, max_future_ms, seen)
    if kind in _CONTROL:
        try:
            message = msgspec.convert(obj, _CONTROL[kind])
        except msgspec.ValidationError as exc:
            return _invalid(f"invalid {kind} message: {exc}", raw)
        return DecodeResult(kind=DecodeKind(kind), message=message)
    if kind == "signal":
        try:
            env = msgspec.convert(obj, _SignalEnvelope)
        except msgspec.ValidationError as exc:
            return _invalid(f"invalid signal message: {exc}", raw)
        out = check.signal(env.signal, None, None)
        wave = env.signal.get("wave_ts_ms") if isinstance(env.signal, dict) else None
        return _result(DecodeKind.SIGNAL, [out], wave if isinstance(wave, int) and not isinstance(wave, bool) else None)
    if kind == "batch":
        try:
            env2 = msgspec.convert(obj, _BatchEnvelope)
        except msgspec.ValidationError as exc:
            return _invalid(f"invalid batch message: {exc}", raw)
        if problem := check.wave_problem(env2.wave_ts_ms):
            return _invalid(f"invalid batch message: {problem}", raw)
        outs = [check.signal(s, i, env2.wave_ts_ms) for i, s in enumerate(env2.signals)]
        return _result(DecodeKind.BATCH, outs, env2.wave_ts_ms)
    if kind == "subscribe":
        return _invalid("unexpected message type 'subscribe' (client -> server only)", raw)
    return _invalid(f"unknown message type {_excerpt(kind)!r}", raw)


def _result(kind: DecodeKind, outs: list[AcceptedSignal | Rejection], wave_ts_ms: int | None) -> DecodeResult:
    return DecodeResult(
        kind=kind,
        accepted=tuple(o for o in outs if isinstance(o, AcceptedSignal)),
        rejected=tuple(o for o in outs if isinstance(o, Rejection)),
        wave_ts_ms=wave_ts_ms,
    )


def decode_subscribe(raw: bytes | str) -> Subscribe | str:
    """The server's side: a client frame as :class:`Subscribe`, or why not (never raises)."""
    try:
        obj = _json.decode(raw)
        if not isinstance(obj, dict) or obj.get("type") != "subscribe":
            return f"expected a subscribe message: {_excerpt(raw)}"
        return msgspec.convert(obj, Subscribe)
    except Exception as exc:
        return f"invalid subscribe message: {exc}"
