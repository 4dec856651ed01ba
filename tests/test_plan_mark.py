"""The calm band (actors/plan_mark.py): marks inside it provably change nothing.

The position actor skips the rules for a mark inside the band of its unchanged
state, so the band must never swallow a mark the rules would act on. The
property below checks that against :func:`plan_mark.decide` itself, over
random positions (either side, real tick grids, take-profits, an aged exit,
a move in flight, paused moves, trailing memory persisted or not) and random
rule settings, at marks drawn around every threshold and at later times.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings, strategies as st

from actors import plan_mark, plan_moves
from actors import position_commands as pc
from actors import position_events as pe
from actors.position_state import P, PositionState
from actors.trailing import TrailState, on_grid
from adapters.markets import Markets
from adapters.paper.exchange import MARKET_FILES
from core.ids import Side
from tests.conftest import SHARED, make_config

D = Decimal
MARKETS = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
BASE = make_config(Path("."), "")
SCALES = [("BTCUSDT", D(40000)), ("XRPUSDT", D("0.8312")), ("DOGEUSDT", D("0.17123"))]
NOW = 1_700_000_000_000


def config(**trailing: object) -> object:
    return msgspec.structs.replace(BASE, trailing=msgspec.structs.replace(BASE.trailing, **trailing))


def env(cfg: object, symbol: str, now_ms: int, mark: Decimal | None = None) -> pc.Env:
    return pc.Env(config=cfg, market=MARKETS.resolve(symbol), now_ms=now_ms, mark=mark)


pct = st.decimals(min_value=D("0.05"), max_value=D("5"), places=2)


@st.composite
def cases(draw: st.DrawFn) -> tuple:
    symbol, entry = draw(st.sampled_from(SCALES))
    tick = MARKETS.resolve(symbol).tick_size
    side = draw(st.sampled_from([Side.LONG, Side.SHORT]))
    sign = 1 if side is Side.LONG else -1
    entry = on_grid("long", entry * (1 + draw(st.decimals(min_value=D("-0.01"), max_value=D("0.01"), places=4))), tick)

    def at(percent: Decimal) -> Decimal:  # a price ``percent`` in profit (negative: in loss), on the grid
        return max(tick, on_grid("long", entry * (1 + sign * percent / 100), tick))

    cfg = config(
        enabled=draw(st.booleans()) or draw(st.booleans()),
        activation_percent=draw(pct), callback_percent=draw(pct), min_improvement_percent=draw(st.sampled_from([D(0), D("0.1"), D("0.5")])),
        emergency_percent=draw(pct), breakeven_at_percent=draw(st.sampled_from([D(0), D("0.3"), D(1)])),
        time_activation_minutes=draw(st.sampled_from([0, 5])), min_move_interval_secs=draw(st.sampled_from([0, 60])),
        best_persist_interval_secs=draw(st.sampled_from([1, 30])),
    )
    active = draw(st.booleans())
    best = at(draw(st.decimals(min_value=D("-1"), max_value=D("4"), places=2))) if active else None
    trail = TrailState(active=active, best=best, activated_ms=NOW - 10_000 if active else None, breakeven_reached=draw(st.booleans()))
    persisted = draw(st.sampled_from([True, True, True, False]))
    tps = tuple(
        pe.TpLevel(level=i + 1, price=at(draw(st.decimals(min_value=D("0.1"), max_value=D("5"), places=2))), qty=D(1),
                   order_id=draw(st.sampled_from([None, f"t{i}"])), filled=draw(st.booleans()))
        for i in range(draw(st.integers(0, 2)))
    )
    aged = draw(st.booleans())
    stop = at(draw(st.decimals(min_value=D("-3"), max_value=D("3"), places=2)))
    if best is not None and draw(st.booleans()):  # just short of where the trailing rule wants it: moves held, due, emergencies
        cb = cfg.trailing.callback_percent + draw(st.decimals(min_value=D("0.05"), max_value=D("1.5"), places=2))
        stop = max(tick, on_grid("long", best * (1 - sign * cb / 100), tick))
    s = PositionState(
        position_id="p1", exchange="paper", symbol=symbol, side=side, state=P.PROTECTED, qty=D(1), entry_price=entry,
        stop_price=stop, stop_order_id="s1", stop_qty=D(1),
        opened_ts_ms=NOW - draw(st.sampled_from([60_000, 600_000])),
        last_move_ms=draw(st.sampled_from([None, None, NOW - 1_000, NOW - 59_000, NOW - 120_000])),
        moves_disabled_until_ms=draw(st.sampled_from([None, None, None, NOW + 5_000, NOW - 5_000])),
        move_client_id=draw(st.sampled_from([None, None, None, "tb-p1-s9"])), close_requested=draw(st.sampled_from([None, None, None, "user"])),
        trail_active=active if persisted else False, trail_best=best if persisted else None,
        breakeven_reached=trail.breakeven_reached if persisted else False, tps=tps,
        aged_order_id="x1" if aged else None, aged_price=at(draw(pct)) if aged else None,
        aged_pending_client_id=draw(st.sampled_from([None, None, "tb-p1-x3"])) if aged else None,
    )
    thresholds = [s.stop_price, entry, *(tp.price for tp in tps), *([best] if best else []), *([s.aged_price] if s.aged_price else [])]
    thresholds += [at(cfg.trailing.activation_percent), at(cfg.trailing.breakeven_at_percent)]
    probes = [p + k * tick for p in thresholds for k in (-1, 0, 1)]
    probes += [at(draw(st.decimals(min_value=D("-4"), max_value=D("6"), places=3))) for _ in range(6)]
    ref = draw(st.sampled_from(probes))
    saved_ms = NOW - draw(st.sampled_from([0, 10_000, 40_000]))
    return s, trail, cfg, ref, saved_ms, [p for p in probes if p > 0]


LATER = (0, 1, 999, 1_000, 4_999, 5_000, 29_999, 30_000, 59_999, 60_000, 300_000, 600_000)  # around every clock of the rules


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_no_mark_inside_the_calm_band_changes_anything(case: tuple) -> None:
    s, trail, cfg, ref, saved_ms, probes = case
    first = plan_mark.decide(s, trail, ref, env(cfg, s.symbol, NOW, ref), saved_ms)
    if not plan_mark.changes_nothing(first):
        return
    after = first.trail or trail
    band = plan_mark.calm_band(s, after, ref, env(cfg, s.symbol, NOW, ref), saved_ms)
    if band is None:
        return
    for dt in LATER:
        for m in probes:
            if band.holds(m, NOW + dt):
                plan = plan_mark.decide(s, after, m, env(cfg, s.symbol, NOW + dt, m), saved_ms)
                assert plan_mark.changes_nothing(plan), f"{m} at +{dt} ms is inside {band} but {plan}"
                assert plan.trail is None or plan.trail == after, f"{m} at +{dt} ms changed the trailing memory {after} -> {plan.trail}"


def trailing_position(side: Side = Side.LONG) -> tuple[PositionState, TrailState]:
    best = D(40700) if side is Side.LONG else D(39300)
    stop = D("40496.5") if side is Side.LONG else D("39496.5")
    s = PositionState(
        position_id="p1", exchange="paper", symbol="BTCUSDT", side=side, state=P.PROTECTED, qty=D(1), entry_price=D(40000),
        stop_price=stop, stop_order_id="s1", stop_qty=D(1), opened_ts_ms=NOW - 600_000, last_move_ms=NOW - 1_000,
        trail_active=True, trail_best=best, trail_activated_ms=NOW - 5_000,
    )
    return s, TrailState(active=True, best=best, activated_ms=NOW - 5_000)


def test_a_trailing_position_is_calm_between_its_stop_and_its_best_until_its_held_move_may_come_due() -> None:
    s, trail = trailing_position()
    band = plan_mark.calm_band(s, trail, D(40600), env(BASE, "BTCUSDT", NOW), 0)
    assert band is not None and band.lo == D("40496.5") and band.best == D(40700) and band.until_ms == NOW - 1_000 + 60_000
    assert band.holds(D(40700), NOW) and band.holds(D("40496.6"), NOW)
    assert not band.holds(D("40700.1"), NOW)  # a new best: the rules decide
    assert not band.holds(D("40496.5"), NOW)  # through the stop
    assert not band.holds(D(40600), NOW + 59_000)  # the move interval ends: a held move may be due
    later = plan_mark.calm_band(s, trail, D(40600), env(BASE, "BTCUSDT", NOW + 59_000), 0)
    assert later is not None and later.holds(D(40600), NOW + 3_600_000)  # past it, nothing is held: no clock left


def test_a_short_position_is_calm_above_its_best_and_below_its_stop() -> None:
    s, trail = trailing_position(Side.SHORT)
    band = plan_mark.calm_band(s, trail, D(39400), env(BASE, "BTCUSDT", NOW), 0)
    assert band is not None and band.hi == D("39496.5") and band.best == D(39300)
    assert band.holds(D(39300), NOW) and not band.holds(D("39299.9"), NOW) and not band.holds(D("39496.5"), NOW)


def test_an_inactive_position_is_calm_below_its_activation_price() -> None:
    s, _ = trailing_position()
    s = msgspec.structs.replace(s, trail_active=False, trail_best=None, trail_activated_ms=None, last_move_ms=None, stop_price=D(39200))
    band = plan_mark.calm_band(s, TrailState(), D(40100), env(BASE, "BTCUSDT", NOW), 0)
    assert band is not None and band.best is None and band.lo == D(39200)
    assert band.hi is not None and D(40599) < band.hi < D(40600)  # +1.5 % is 40600: activation decided by the rules
    assert not band.holds(D(40600), NOW)


def test_each_clock_of_the_rules_ends_the_band_when_it_could_change_their_answer() -> None:
    s, trail = trailing_position()
    s = msgspec.structs.replace(s, stop_price=D("40397.0"))  # a move to 40496.5 is wanted, held by the 60 s interval
    e = env(BASE, "BTCUSDT", NOW)
    band = plan_mark.calm_band(s, trail, D(40600), e, NOW)
    assert band is not None and band.until_ms == s.last_move_ms + 60_000
    assert plan_mark.changes_nothing(plan_mark.decide(s, trail, D(40600), env(BASE, "BTCUSDT", band.until_ms - 1), NOW))
    assert plan_mark.decide(s, trail, D(40600), env(BASE, "BTCUSDT", band.until_ms), NOW).next is not None  # the held move

    unsaved = TrailState(active=True, best=D(40800), activated_ms=trail.activated_ms)  # a better best, not yet persisted
    fresh = msgspec.structs.replace(s, last_move_ms=None, stop_price=D("40597.0"))
    band = plan_mark.calm_band(fresh, unsaved, D(40650), e, NOW - 10_000)
    assert band is not None and band.until_ms == NOW - 10_000 + plan_moves.persist_ms(BASE.trailing, "p1")
    assert plan_mark.decide(fresh, unsaved, D(40650), env(BASE, "BTCUSDT", band.until_ms), NOW - 10_000).events  # persisted then

    paused = msgspec.structs.replace(s, moves_disabled_until_ms=NOW + 5_000, last_move_ms=None)
    band = plan_mark.calm_band(paused, trail, D(40600), e, NOW)
    assert band is not None and band.until_ms == NOW + 5_000
    assert plan_mark.decide(paused, trail, D(40600), env(BASE, "BTCUSDT", NOW + 5_000), NOW).next is not None  # the pause ends

    timed = config(time_activation_minutes=5)
    young = msgspec.structs.replace(s, trail_active=False, trail_best=None, last_move_ms=None, stop_price=D(39200), opened_ts_ms=NOW - 60_000)
    band = plan_mark.calm_band(young, TrailState(), D(40100), env(timed, "BTCUSDT", NOW), 0)
    assert band is not None and band.until_ms == NOW + 240_000
    assert plan_mark.decide(young, TrailState(), D(40100), env(timed, "BTCUSDT", NOW + 240_000), 0).events  # activated by age
    old = plan_mark.calm_band(young, TrailState(), D(39900), env(timed, "BTCUSDT", NOW + 240_000), 0)
    assert old is not None and old.hi == D(40000) and not old.holds(D("40000.1"), NOW + 240_000)  # any profit activates now


def test_owners_that_activated_together_record_their_bests_spread_over_half_an_interval() -> None:
    waits = [plan_moves.persist_ms(BASE.trailing, f"b{i}") for i in range(1_000)]
    full = BASE.trailing.best_persist_interval_secs * 1000
    assert all(full // 2 <= w <= full for w in waits)  # never later than the interval
    assert max(waits) - min(waits) > full * 0.45 and len(set(waits)) > 900  # and spread, not in one batch
    assert waits == [plan_moves.persist_ms(BASE.trailing, f"b{i}") for i in range(1_000)]  # the same across a replay
