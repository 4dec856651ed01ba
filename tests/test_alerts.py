"""Alerts: pure rules (dedup, cool-down, resolved), sinks against loopback fakes (retries, timeouts,
drops, no secrets), and the alert actor end to end on the store's fan-out."""

from __future__ import annotations

import io as _io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from actors.alert_rules import AlertState, due, evaluate, index
from actors.alerts import AlertActor, AlertDelivered, EventsCommitted, interesting
from adapters.alert_sinks import Delivery, Sink, SinkSetupError
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core.config import AlertSink, parse_config
from core.events import Event, Severity
from supervision.actor import ActorContext
from supervision.directory import Directory
from tests.alert_fakes import FakeReceiver
from tests.conftest import eventually, make_config

T0 = 1_700_000_000_000
RULES = parse_config("").alerts.rules
TOKEN = "123456:SECRET-telegram-token-abc"
CHAT = "987654321"


def ev(type_: str, ts: int, **kw: Any) -> Event:
    return Event(type=type_, ts_ms=ts, actor="tester", **kw)


def unprotected(ts: int, pos: str = "BTCUSDT:long") -> Event:
    return ev("alert.position_unprotected", ts, severity=Severity.CRITICAL, symbol="BTCUSDT", data={"position": pos, "for_ms": 61_000})


def protected(ts: int, pos: str = "BTCUSDT:long") -> Event:
    return ev("guard.protected_again", ts, data={"position": pos})


# ------------------------------------------------------------ pure rules
def test_flapping_inside_the_cooldown_sends_one_alert_and_one_resolved():
    state, by_type = AlertState(), index(RULES)
    out = []
    for i in range(5):  # raised and cleared five times in five minutes
        out += evaluate(state, by_type, unprotected(T0 + i * 60_000), 300_000)
        out += evaluate(state, by_type, protected(T0 + i * 60_000 + 30_000), 300_000)
    assert [(a.rule, a.subject, a.resolved) for a in out] == [("unprotected", "BTCUSDT:long", False), ("unprotected", "BTCUSDT:long", True)]
    again = evaluate(state, by_type, unprotected(T0 + 10 * 60_000), 300_000)  # after the cool-down: told again
    assert [(a.rule, a.resolved) for a in again] == [("unprotected", False)]


def test_a_condition_still_raised_is_not_repeated_and_subjects_are_separate():
    state, by_type = AlertState(), index(RULES)
    out = evaluate(state, by_type, unprotected(T0), 0) + evaluate(state, by_type, unprotected(T0 + 1000), 0)
    out += evaluate(state, by_type, unprotected(T0 + 2000, "ETHUSDT:short"), 0)
    assert [a.subject for a in out] == ["BTCUSDT:long", "ETHUSDT:short"]
    assert evaluate(state, by_type, protected(T0 + 3000, "SOLUSDT:long"), 0) == []  # nothing raised: no resolved
    assert not evaluate(state, by_type, ev("exchange.request", T0), 0)


def stream(type_: str, ts: int) -> Event:
    return ev(type_, ts, exchange="binance", severity=Severity.WARNING, data={"stream": "marks"})


def test_a_rule_with_after_secs_sends_only_when_still_raised_that_long():
    state, by_type = AlertState(), index(RULES)
    assert [r.after_secs for r in RULES if r.name == "stream_down"] == [60]
    # down for 30 s, back: nothing at all, not even when the minute would have passed
    assert evaluate(state, by_type, stream("feed.stream_down", T0), 0) == []
    assert due(state, T0 + 59_999, 0) == []
    assert evaluate(state, by_type, stream("feed.stream_up", T0 + 30_000), 0) == []
    assert due(state, T0 + 120_000, 0) == []
    # down again, still down after a minute: one alert; a repeat of the event adds nothing; back: resolved
    assert evaluate(state, by_type, stream("feed.stream_down", T0 + 200_000), 0) == []
    assert evaluate(state, by_type, stream("feed.stream_down", T0 + 210_000), 0) == []
    assert due(state, T0 + 259_999, 0) == []
    sent = due(state, T0 + 260_000, 0)
    assert [(a.rule, a.resolved, a.ts_ms) for a in sent] == [("stream_down", False, T0 + 200_000)]
    assert due(state, T0 + 400_000, 0) == []
    back = evaluate(state, by_type, stream("feed.stream_up", T0 + 500_000), 0)
    assert [(a.rule, a.resolved) for a in back] == [("stream_down", True)]


def test_rules_are_config_data():
    cfg = parse_config('[[alerts.rules]]\nname = "zombie"\nfire = ["sync.zombie_cancelled"]\nsubject = "symbol"\nseverity = "warning"\n')
    assert [r.name for r in cfg.alerts.rules] == ["zombie"]
    out = evaluate(AlertState(), index(cfg.alerts.rules), ev("sync.zombie_cancelled", T0, symbol="XRPUSDT"), 0)
    assert [(a.rule, a.subject, a.severity) for a in out] == [("zombie", "XRPUSDT", "warning")]


# ------------------------------------------------------------ sinks
@pytest.fixture
def receiver(io_loop: IOLoop) -> Iterator[FakeReceiver]:
    r = FakeReceiver(io_loop, token=TOKEN).start()
    yield r
    r.stop()


@pytest.fixture
def logs() -> Iterator[_io.StringIO]:
    buf = _io.StringIO()
    handle = logger.add(buf, level="DEBUG", format="{message}")
    yield buf
    logger.remove(handle)


def start_sink(io_loop: IOLoop, cfg: AlertSink, results: list[Delivery], env: dict[str, str] | None = None) -> Sink:
    sink = Sink(cfg, io_loop, lambda d, a: results.append(d), env)
    io_loop.run(sink.start(), 10)
    return sink


def test_webhook_retries_after_500_and_a_timeout_then_delivers_once(io_loop: IOLoop, receiver: FakeReceiver, logs: _io.StringIO):
    receiver.script = [500, "hang"]
    results: list[Delivery] = []
    sink = start_sink(io_loop, AlertSink(kind="webhook", url=f"{receiver.url}/alerts", timeout_secs=1, backoff_ms=10), results)  # type: ignore[arg-type]
    try:
        sink.submit("unprotected:X", {"rule": "unprotected", "severity": "critical"}, "text")
        eventually(lambda: results, what="a delivery outcome")
        assert results[0].ok and results[0].attempts == 3
        assert receiver.attempts == 3 and len(receiver.received) == 1
        assert receiver.received[0]["body"]["rule"] == "unprotected"
    finally:
        io_loop.run(sink.stop(), 10)


def test_a_sink_down_longer_than_its_queue_holds_drops_and_counts(io_loop: IOLoop, receiver: FakeReceiver):
    receiver.script = ["hang"] * 50
    results: list[Delivery] = []
    sink = start_sink(io_loop, AlertSink(kind="webhook", url=f"{receiver.url}/alerts", timeout_secs=30, max_attempts=1, queue_size=2), results)  # type: ignore[arg-type]
    try:
        for i in range(6):  # one in flight (hanging), two queued, the rest dropped
            sink.submit(f"k{i}", {"n": i}, "t")
        eventually(lambda: sink.dropped >= 3, what="drops counted")
        dropped = [d for d in results if d.dropped]
        assert len(dropped) == sink.dropped and not any(d.ok for d in results)
        assert receiver.received == []
    finally:
        io_loop.run(sink.stop(), 10)


def test_telegram_send_message_with_env_secrets_never_in_logs_or_answers(io_loop: IOLoop, receiver: FakeReceiver, logs: _io.StringIO):
    receiver.script = [500]
    results: list[Delivery] = []
    env = {"TG_TOKEN": TOKEN, "TG_CHAT": CHAT}
    cfg = AlertSink(kind="telegram", token_env="TG_TOKEN", chat_id_env="TG_CHAT", api_base=receiver.url, backoff_ms=10)
    sink = start_sink(io_loop, cfg, results, env)
    try:
        sink.submit("close_gave_up:p1", {"rule": "close_gave_up", "severity": "critical"}, "[tradebot CRITICAL] close_gave_up p1")
        eventually(lambda: results, what="a delivery outcome")
        assert results[0].ok and results[0].attempts == 2
        body = receiver.received[0]["body"]
        assert body["chat_id"] == CHAT and "close_gave_up" in body["text"]
        assert TOKEN not in logs.getvalue() and TOKEN not in repr(results)
    finally:
        io_loop.run(sink.stop(), 10)
    with pytest.raises(SinkSetupError, match="TG_TOKEN") as err:
        Sink(cfg, io_loop, lambda d, a: None, {"TG_CHAT": CHAT})
    assert TOKEN not in str(err.value)


def test_a_wrong_telegram_token_fails_and_the_answer_hides_it(io_loop: IOLoop, receiver: FakeReceiver):
    results: list[Delivery] = []
    cfg = AlertSink(kind="telegram", token_env="T", chat_id_env="C", api_base=receiver.url, max_attempts=2, backoff_ms=10)
    sink = start_sink(io_loop, cfg, results, {"T": "999:WRONG-token", "C": CHAT})
    try:
        sink.submit("k", {"severity": "critical"}, "t")
        eventually(lambda: results)
        assert not results[0].ok and results[0].attempts == 2 and "WRONG-token" not in results[0].answer
    finally:
        io_loop.run(sink.stop(), 10)


# ------------------------------------------------------------ the actor on the store's fan-out
def test_alert_actor_sends_one_alert_and_one_resolved_and_records_each_attempt(tmp_path: Path, io_loop: IOLoop, store: EventStore, receiver: FakeReceiver, vclock: Any, logs: _io.StringIO):
    toml = f'[alerts]\ncooldown_secs = 300\n[[alerts.sinks]]\nkind = "webhook"\nurl = "{receiver.url}/alerts"\nbackoff_ms = 10\n[[alerts.sinks]]\nkind = "telegram"\nmin_severity = "critical"\ntoken_env = "TG_T"\nchat_id_env = "TG_C"\napi_base = "{receiver.url}"\n'
    config = make_config(tmp_path, toml)
    directory = Directory()
    sinks = [Sink(c, io_loop, lambda d, a: directory.tell("alerts", AlertDelivered(delivery=d, alert=a)), {"TG_T": TOKEN, "TG_C": CHAT}) for c in config.alerts.sinks]
    for s in sinks:
        io_loop.run(s.start(), 10)
    by_type = index(config.alerts.rules)
    store.subscribe("alerts", lambda evs: (w := interesting(by_type, evs)) and directory.tell("alerts", EventsCommitted(events=w)))
    ref = AlertActor.start(name="alerts", ctx=ActorContext(clock=vclock, io=io_loop, store=store, config=config, directory=directory), sinks=sinks)
    directory.register("alerts", ref)
    try:
        for i in range(3):  # flapping inside the cool-down
            store.append(unprotected(T0 + i * 1000))
            store.append(protected(T0 + i * 1000 + 500))
        store.append(ev("exchange.unreachable", T0 + 5000, exchange="paper", severity=Severity.ERROR))  # error: webhook only
        eventually(lambda: len(receiver.received) >= 5, what="5 messages")
        hooks = [r["body"] for r in receiver.received if r["path"] == "/alerts"]
        tg = [r["body"] for r in receiver.received if r["path"] != "/alerts"]
        assert [(b["rule"], b["resolved"]) for b in hooks] == [("unprotected", False), ("unprotected", True), ("exchange_unreachable", False)]
        assert [("RESOLVED" in b["text"]) for b in tg] == [False, True]
        sent = eventually(lambda: [e for e in io_loop.run(store.query(type_prefixes=("alert.",)), 10) if e.type == "alert.sent"] if len([e for e in io_loop.run(store.query(types=("alert.sent",)), 10)]) >= 5 else None)
        assert sorted((e.data["sink"], e.data["rule"], e.data["resolved"]) for e in sent) == sorted(
            [("webhook", "unprotected", False), ("webhook", "unprotected", True), ("webhook", "exchange_unreachable", False), ("telegram", "unprotected", False), ("telegram", "unprotected", True)]
        )
        everything = "".join(r["raw"] for r in receiver.received if r["path"] == "/alerts") + logs.getvalue()
        everything += "".join(str(e.data) for e in io_loop.run(store.query(), 10))
        assert TOKEN not in everything and CHAT not in logs.getvalue()
    finally:
        ref.stop()
        for s in sinks:
            io_loop.run(s.stop(), 10)


def test_alert_actor_sends_a_delayed_alert_when_its_time_comes_on_the_clock(tmp_path: Path, io_loop: IOLoop, store: EventStore, receiver: FakeReceiver, vclock: Any):
    config = make_config(tmp_path, f'[alerts]\ncheck_ms = 1000\n[[alerts.sinks]]\nkind = "webhook"\nurl = "{receiver.url}/alerts"\nbackoff_ms = 10\n')
    directory = Directory()
    sinks = [Sink(c, io_loop, lambda d, a: directory.tell("alerts", AlertDelivered(delivery=d, alert=a))) for c in config.alerts.sinks]
    for s in sinks:
        io_loop.run(s.start(), 10)
    by_type = index(config.alerts.rules)
    store.subscribe("alerts", lambda evs: (w := interesting(by_type, evs)) and directory.tell("alerts", EventsCommitted(events=w)))
    ref = AlertActor.start(name="alerts", ctx=ActorContext(clock=vclock, io=io_loop, store=store, config=config, directory=directory), sinks=sinks)
    directory.register("alerts", ref)
    try:
        store.append(stream("feed.stream_down", vclock.now_ms()))
        key = ("stream_down", "")
        entry = eventually(lambda: ref.proxy().state.get().entries.get(key), what="the raise reached the actor")
        assert entry.pending is not None
        rules = lambda: [(r["body"]["rule"], r["body"]["resolved"]) for r in receiver.received]  # noqa: E731
        for _ in range(59):  # 59 s of ticks: not due yet
            vclock.advance(1000)
        assert ref.proxy().store_down.get() is False  # through the mailbox: every tick so far is handled
        assert entry.pending is not None and not entry.sent and rules() == []
        vclock.advance(1000)
        eventually(rules, what="the stream alert once a minute has passed")
        assert rules() == [("stream_down", False)]
    finally:
        ref.stop()
        for s in sinks:
            io_loop.run(s.stop(), 10)


def test_a_threshold_rule_raises_above_its_count_and_clears_at_or_below_it():
    state, by_type = AlertState(), index(RULES)
    [zombies] = [r for r in RULES if r.name == "zombies"]
    assert (zombies.count, zombies.above) == ("zombies", 3)

    def reconciled(ts: int, n: int) -> list[tuple[str, bool, int]]:
        e = ev("sync.reconciled", ts, data={"zombies": [{"order_id": str(i)} for i in range(n)], "ok": True})
        return [(a.rule, a.resolved, a.details["zombies"]) for a in evaluate(state, by_type, e, 0)]

    assert reconciled(T0, 3) == []
    assert reconciled(T0 + 30_000, 4) == [("zombies", False, 4)]
    assert reconciled(T0 + 60_000, 9) == []  # still raised
    assert reconciled(T0 + 90_000, 3) == [("zombies", True, 3)]
    assert reconciled(T0 + 120_000, 0) == []
