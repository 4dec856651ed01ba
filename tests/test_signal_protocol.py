"""The signal protocol's decoder: every rejection, normalisation, batches, fuzzing."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.markets import Markets
from tests.conftest import SHARED
from core.signal_protocol import (
    WAVE_MS,
    BatchMsg,
    DecodeKind,
    Heartbeat,
    Hello,
    RecentIds,
    Signal,
    Subscribe,
    Subscribed,
    decode,
    decode_subscribe,
    encode,
    processing_times,
    wave_of,
)

BINANCE = Markets.from_file(SHARED / "data/markets/binanceusdm-linear.json")
BYBIT = Markets.from_file(SHARED / "data/markets/bybit.json")
MARKETS = {"binanceusdm": BINANCE, "bybit": BYBIT, "paper": BINANCE}
WAVE = 1_767_225_600_000  # 2026-01-01T00:00Z, on the grid
NOW = WAVE + 7 * 60_000
SYMBOLS = ["BTCUSDT", "ETHUSDT", "LTCUSDT", "ADAUSDT", "XRPUSDT", "DOGEUSDT", "TRXUSDT"]


_DROP = object()  # sig(field=_DROP) leaves the field out


def sig(**over: Any) -> dict[str, Any]:
    base = {
        "id": "s1",
        "exchange": "binanceusdm",
        "symbol": "BTCUSDT",
        "action": "buy",
        "score_week": 0.82,
        "score_month": "0.61",
        "wave_ts_ms": WAVE,
        "created_ms": NOW - 1000,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


def frame(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def run(raw: Any, **kw: Any):
    kw.setdefault("markets_by_exchange", MARKETS)
    kw.setdefault("now_ms", NOW)
    return decode(raw, **kw)


def one_signal(**over: Any):
    return run(frame({"type": "signal", "signal": sig(**over)}))


# --------------------------------------------------------------------------- acceptance and normalisation


def test_a_valid_signal_is_normalised_once() -> None:
    r = one_signal(symbol="BTC/USDT:USDT", action="buy")
    assert r.kind == DecodeKind.SIGNAL and not r.rejected
    (a,) = r.accepted
    assert (a.symbol, a.unified_symbol, a.side, a.action) == ("BTCUSDT", "BTC/USDT:USDT", "long", "buy")
    assert a.score_week == Decimal("0.82") and a.score_month == Decimal("0.61")  # exact, not float
    assert r.wave_ts_ms == WAVE


@pytest.mark.parametrize(("action", "side"), [("buy", "long"), ("long", "long"), ("sell", "short"), ("short", "short")])
def test_actions_map_to_sides(action: str, side: str) -> None:
    assert one_signal(action=action).accepted[0].side == side


def test_symbols_resolve_per_exchange() -> None:
    assert one_signal(exchange="bybit", symbol="eth/usdt:usdt").accepted[0].symbol == "ETHUSDT"
    assert one_signal(exchange="paper", symbol=" xrpusdt ").accepted[0].symbol == "XRPUSDT"


def test_control_messages_decode() -> None:
    hello = run(encode(Hello(protocol=1, server="x", server_time_ms=NOW)))
    assert hello.kind == DecodeKind.HELLO and hello.message == Hello(protocol=1, server="x", server_time_ms=NOW)
    sub = run(encode(Subscribed(since_wave_ts_ms=None, replay_waves=0)).decode())  # str frames too
    assert sub.kind == DecodeKind.SUBSCRIBED and not sub.rejected
    assert run(encode(Heartbeat(ts_ms=NOW))).message == Heartbeat(ts_ms=NOW)


def test_encoded_batches_round_trip() -> None:
    s = Signal(id="a", exchange="paper", symbol="ETHUSDT", action="short", score_week=Decimal("0.5"), score_month=Decimal("0.25"), wave_ts_ms=WAVE, created_ms=NOW)
    r = run(encode(BatchMsg(wave_ts_ms=WAVE, signals=(s,))))
    assert [a.id for a in r.accepted] == ["a"] and r.accepted[0].score_month == Decimal("0.25")


def test_minus_zero_score_is_zero() -> None:
    assert str(one_signal(score_week="-0").accepted[0].score_week) == "0"


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
        (b"[1, 2]", "not a JSON object (got list)"),
        (b'"hello"', "not a JSON object (got str)"),
        (b'{"signal": {}}', "missing field 'type'"),
        (b'{"type": 7}', "field 'type' must be a string"),
        (b'{"type": "trade"}', "unknown message type 'trade'"),
        (b'{"type": "subscribe", "since_wave_ts_ms": null}', "unexpected message type 'subscribe'"),
        (b'{"type": "hello", "protocol": 1}', "invalid hello message: Object missing required field `server`"),
        (b'{"type": "heartbeat", "ts_ms": 1, "x": 2}', "unknown field `x`"),
        (b'{"type": "signal"}', "invalid signal message: Object missing required field `signal`"),
        (b'{"type": "batch", "wave_ts_ms": 1767225600000, "signals": {}}', "invalid batch message: Expected `array`"),
        (b'{"type": "batch", "wave_ts_ms": 1767225600001, "signals": []}', "not on a 15-minute boundary"),
        (b'{"type": "batch", "signals": []}', "missing required field `wave_ts_ms`"),
    ],
)
def test_frame_rejections(raw: bytes, reason: str) -> None:
    r = run(raw)
    assert r.kind == DecodeKind.INVALID and not r.accepted
    (rej,) = r.rejected
    assert reason in rej.reason, rej.reason
    assert len(rej.raw) <= 200


def test_a_frame_that_is_not_text_or_bytes() -> None:
    assert "frame must be text or bytes" in run(12345).rejected[0].reason  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"score_week": _DROP}, "missing required field `score_week`"),
        ({"extra": 1}, "unknown field `extra`"),
        ({"wave_ts_ms": "1767225600000"}, "Expected `int`, got `str` - at `$.wave_ts_ms`"),
        ({"created_ms": True}, "Expected `int`, got `bool`"),
        ({"created_ms": 1.5}, "Expected `int`, got `decimal`"),
        ({"id": 5}, "Expected `str`, got `int` - at `$.id`"),
        ({"score_week": True}, "Expected `decimal`, got `bool`"),
        ({"score_month": "lots"}, "Invalid decimal string"),
        ({"action": "hold"}, "Invalid enum value 'hold'"),
        ({"id": "  "}, "id is empty"),
        ({"id": "x" * 129}, "id is longer than 128"),
        ({"exchange": "kraken"}, "unknown exchange 'kraken'"),
        ({"symbol": "FOOUSDT"}, "unknown symbol 'FOOUSDT' on binanceusdm"),
        ({"score_week": "NaN"}, "score_week is NaN"),
        ({"score_month": "sNaN"}, "score_month is NaN"),
        ({"score_week": "Infinity"}, "score_week is infinite"),
        ({"score_week": "1e999"}, "score_week is infinite or too large"),
        ({"score_month": -0.01}, "score_month is negative (-0.01)"),
        ({"created_ms": NOW + 61_000}, "created_ms 1767226081000 is 61000 ms in the future"),
        ({"wave_ts_ms": WAVE + WAVE_MS}, "wave_ts_ms 1767226500000 is 480000 ms in the future"),
        ({"created_ms": NOW - 2 * 3_600_000 - 1}, "created_ms 1767218819999 is stale: 7200001 ms old"),
        ({"wave_ts_ms": WAVE - 9 * WAVE_MS}, "wave_ts_ms 1767217500000 is stale"),
        ({"wave_ts_ms": WAVE + 60_000}, "wave_ts_ms 1767225660000 is not on a 15-minute boundary"),
    ],
)
def test_signal_rejections(over: dict[str, Any], reason: str) -> None:
    r = one_signal(**over)
    assert r.kind == DecodeKind.SIGNAL and not r.accepted
    (rej,) = r.rejected
    assert reason in rej.reason, rej.reason
    assert rej.reason.startswith("signal: ")


def test_a_JSON_number_too_large_for_a_float_is_infinite() -> None:
    raw = frame({"type": "signal", "signal": sig()}).replace(b"0.82", b"1e999")
    assert "score_week is infinite or too large" in run(raw).rejected[0].reason


def test_an_exchange_not_configured_is_rejected() -> None:
    r = decode(frame({"type": "signal", "signal": sig(exchange="bybit")}), markets_by_exchange={"paper": BINANCE}, now_ms=NOW)
    assert "exchange 'bybit' is not configured" in r.rejected[0].reason


def test_time_limits_are_parameters() -> None:
    assert not run(frame({"type": "signal", "signal": sig(created_ms=NOW + 5000)}), max_future_ms=1000).accepted
    assert run(frame({"type": "signal", "signal": sig(wave_ts_ms=WAVE - 9 * WAVE_MS)}), max_age_ms=3 * 3_600_000).accepted


def test_duplicate_ids_across_calls_and_within_a_batch() -> None:
    seen: set[str] = set()
    first = run(frame({"type": "signal", "signal": sig(id="dup")}), seen_ids=seen)
    again = run(frame({"type": "signal", "signal": sig(id="dup", symbol="ETHUSDT")}), seen_ids=seen)
    assert first.accepted and not again.accepted
    assert again.rejected[0].reason == "signal: duplicate signal id 'dup'" and again.rejected[0].signal_id == "dup"
    batch = run(frame({"type": "batch", "wave_ts_ms": WAVE, "signals": [sig(id="b"), sig(id="b")]}))
    assert [a.id for a in batch.accepted] == ["b"] and "duplicate signal id 'b'" in batch.rejected[0].reason


def test_a_rejected_signal_does_not_claim_its_id() -> None:
    seen: set[str] = set()
    run(frame({"type": "signal", "signal": sig(id="x", symbol="FOOUSDT")}), seen_ids=seen)
    assert run(frame({"type": "signal", "signal": sig(id="x")}), seen_ids=seen).accepted and seen == {"x"}


def test_recent_ids_is_bounded() -> None:
    seen = RecentIds(max_size=2)
    for sid in ("a", "b", "c"):
        run(frame({"type": "signal", "signal": sig(id=sid)}), seen_ids=seen)
    assert "a" not in seen and "b" in seen and "c" in seen and len(seen) == 2


def test_a_batch_with_good_and_bad_signals() -> None:
    signals = [
        sig(id="ok1"),
        sig(id="bad-symbol", symbol="NOPEUSDT"),
        "not a signal",
        sig(id="ok2", symbol="ETH/USDT:USDT", action="sell"),
        sig(id="bad-wave", wave_ts_ms=WAVE - WAVE_MS),
        sig(id="bad-score", score_week=-1),
    ]
    r = run(frame({"type": "batch", "wave_ts_ms": WAVE, "signals": signals}))
    assert r.kind == DecodeKind.BATCH and r.wave_ts_ms == WAVE
    assert [(a.id, a.symbol, a.side) for a in r.accepted] == [("ok1", "BTCUSDT", "long"), ("ok2", "ETHUSDT", "short")]
    assert [(x.index, x.signal_id) for x in r.rejected] == [(1, "bad-symbol"), (2, None), (4, "bad-wave"), (5, "bad-score")]
    reasons = [x.reason for x in r.rejected]
    assert "signals[1]: unknown symbol" in reasons[0]
    assert "signals[2]: not a JSON object (got str)" in reasons[1]
    assert "differs from its batch's" in reasons[2]
    assert "signals[5]: score_week is negative" in reasons[3]


def test_decode_subscribe() -> None:
    assert decode_subscribe(encode(Subscribe(since_wave_ts_ms=WAVE))) == Subscribe(since_wave_ts_ms=WAVE)
    assert decode_subscribe(b'{"type": "subscribe"}') == Subscribe(since_wave_ts_ms=None)
    assert "expected a subscribe message" in decode_subscribe(b"[]")  # type: ignore[operator]
    assert "invalid subscribe message" in decode_subscribe(b'{"type": "subscribe", "since_wave_ts_ms": "x"}')  # type: ignore[operator]
    assert "invalid subscribe message" in decode_subscribe(b"{")  # type: ignore[operator]


# --------------------------------------------------------------------------- waves


def test_wave_of_and_the_processing_schedule() -> None:
    assert wave_of(WAVE) == WAVE and wave_of(WAVE + WAVE_MS - 1) == WAVE and wave_of(WAVE - 1) == WAVE - WAVE_MS
    sched = processing_times()
    assert sched.minutes == (5, 20, 35, 50)
    assert sched.next_after(WAVE) == WAVE + 5 * 60_000
    assert sched.next_after(WAVE + 5 * 60_000) == WAVE + 20 * 60_000
    assert sched.next_after(WAVE + 50 * 60_000) == WAVE + 65 * 60_000  # next hour
    assert sched.wave_for(WAVE + 20 * 60_000) == WAVE + WAVE_MS
    assert len(sched.times_between(WAVE, WAVE + 24 * 3_600_000)) == 96
    with pytest.raises(ValueError):
        processing_times((5, 60))
    with pytest.raises(ValueError):
        processing_times(())


# --------------------------------------------------------------------------- fuzzing

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5), max_leaves=30)

field_values = {
    "id": st.text(max_size=6) | json_values,
    "exchange": st.sampled_from(["binanceusdm", "bybit", "paper", "kraken", ""]) | json_values,
    "symbol": st.sampled_from(SYMBOLS + ["BTC/USDT:USDT", "eth/usdt:usdt", "FOOUSDT", ""]) | json_values,
    "action": st.sampled_from(["buy", "sell", "long", "short", "hold"]) | json_values,
    "score_week": st.decimals(allow_nan=True, allow_infinity=True).map(str) | st.floats(-2, 2) | st.sampled_from(["NaN", "-Infinity", "1e999", "-0"]) | json_values,
    "score_month": st.decimals(allow_nan=True, allow_infinity=True).map(str) | st.floats(-2, 2) | json_values,
    "wave_ts_ms": st.sampled_from([WAVE, WAVE - WAVE_MS, WAVE + WAVE_MS, WAVE + 1, 0, -WAVE]) | st.integers(-(2**65), 2**65) | json_values,
    "created_ms": st.sampled_from([NOW, NOW - 1, NOW + 60_000, NOW + 60_001, NOW - 7_200_000]) | st.integers(-(2**65), 2**65) | json_values,
}


@st.composite
def signal_like(draw: st.DrawFn) -> dict[str, Any]:
    out = {}
    for name, values in field_values.items():
        roll = draw(st.integers(0, 99))
        if roll < 2:
            continue  # missing
        default = f"id-{draw(st.integers(0, 50))}" if name == "id" else sig()[name]  # some ids repeat
        out[name] = draw(values) if roll < 12 else default  # mostly valid, so many get accepted
    if draw(st.integers(0, 19)) == 0:
        out[draw(st.text(max_size=8))] = draw(json_values)  # maybe extra
    return out


def check_invariants(raw: Any, seen: set[str] | None = None) -> Any:
    r = decode(raw, markets_by_exchange=MARKETS, now_ms=NOW, seen_ids=seen)
    assert all(isinstance(x.reason, str) and x.reason.strip() for x in r.rejected)
    assert len({a.id for a in r.accepted}) == len(r.accepted)
    for a in r.accepted:
        assert a.symbol in MARKETS[a.exchange].by_id and a.unified_symbol in MARKETS[a.exchange].by_symbol
        assert a.side in ("long", "short") and a.id.strip()
        for score in (a.score_week, a.score_month):
            assert score.is_finite() and score >= 0 and math.isfinite(float(score))
        assert a.wave_ts_ms % WAVE_MS == 0 and NOW - 7_200_000 <= a.wave_ts_ms <= NOW + 60_000
        assert NOW - 7_200_000 <= a.created_ms <= NOW + 60_000
    if r.kind == DecodeKind.INVALID:
        assert len(r.rejected) == 1 and not r.accepted
    return r


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    check_invariants(raw)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json(value: Any) -> None:
    check_invariants(json.dumps(value))


@FUZZ
@given(st.lists(signal_like(), max_size=6), st.booleans(), st.sampled_from([WAVE, WAVE, WAVE, WAVE + 1, WAVE - WAVE_MS]))
def test_fuzz_signal_shaped_messages(signals: list[dict[str, Any]], as_batch: bool, batch_wave: int) -> None:
    seen: set[str] = set()
    if as_batch:
        r = check_invariants(json.dumps({"type": "batch", "wave_ts_ms": batch_wave, "signals": signals}), seen)
        if r.kind == DecodeKind.BATCH:
            assert len(r.accepted) + len(r.rejected) == len(signals)  # each judged on its own
            assert sorted(x.index for x in r.rejected) == [x.index for x in r.rejected]
            assert all(a.wave_ts_ms == batch_wave for a in r.accepted)
    for s in signals:
        r = check_invariants(json.dumps({"type": "signal", "signal": s}), seen)
        assert len(r.accepted) + len(r.rejected) == 1
