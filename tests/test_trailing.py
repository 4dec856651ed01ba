"""Trailing-stop rules (actors/trailing.py): unit tests, property tests on random
price paths, and a replay of real BTC/XRP history through a small harness.

The harness (:func:`simulate`) is a position (side, entry, initial stop 2 %
away on the protective side, on the tick grid) fed (time_ms, mark) ticks; each
decision is applied at once (live stop := decision.price, last_move_ms := now).
The oracles below recompute what they check (best mark, activation, exact
trailing price) instead of trusting the module's own helpers.

``python -m pytest tests/test_trailing.py -s -k real_history`` prints the
real-history figures (stop moves per position-hour vs ticks per position-hour).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal as D
from pathlib import Path
from typing import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from actors.trailing import StopDecision, TrailingParams, TrailState, evaluate, on_grid
from adapters.markets import Markets
from adapters.paper.prices import DATA_DIR, candle_ticks, load_candles

SHARED = Path(__file__).resolve().parents[2] / "shared"
MARKETS = Markets.from_file(SHARED / "data/markets/binanceusdm-linear.json")
T0 = 1_700_000_000_000
SIDES = ("long", "short")
HUNDRED = D(100)

# (tick size from the real market, typical price level)
MARKET_SCALES = [
    (MARKETS.resolve("BTCUSDT").tick_size, 46_300.0),
    (MARKETS.resolve("XRPUSDT").tick_size, 0.83),
    (MARKETS.resolve("DOGEUSDT").tick_size, 0.17),
    (MARKETS.resolve("TRXUSDT").tick_size, 0.076),
]


# ------------------------------------------------------------------ harness
def protective(side: str, a: D, b: D) -> bool:
    """Oracle: stop ``a`` strictly tighter than ``b`` (long higher, short lower)."""
    return a > b if side == "long" else a < b


def grid(price: D, tick: D, rounding: str) -> D:
    return max((price / tick).to_integral_value(rounding=rounding), D(1)) * tick


def initial_stop(side: str, entry: D, tick: D) -> D:
    """2 % from entry on the protective side, rounded away from the market."""
    return grid(entry * D("0.98"), tick, ROUND_FLOOR) if side == "long" else grid(entry * D("1.02"), tick, ROUND_CEILING)


def profit(side: str, entry: D, mark: D) -> D:
    move = (mark - entry) / entry * HUNDRED
    return move if side == "long" else -move


@dataclass(frozen=True)
class Move:
    t: int
    mark: D
    old: D
    price: D
    reason: str
    emergency: bool
    external: bool = False  # set by another rule (e.g. TP1 -> breakeven), not by evaluate()


@dataclass(frozen=True)
class Step:
    """What the harness saw after one tick (decision already applied)."""

    t: int
    mark: D
    state: TrailState
    decision: StopDecision | None
    stop: D  # live stop after the tick


@dataclass
class Run:
    params: TrailingParams
    side: str
    entry: D
    tick: D
    opened_ms: int
    initial: D
    steps: list[Step] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    stopped_ms: int | None = None  # the mark traded through the live stop (close_on_stop)
    activated_ms: int | None = None

    @property
    def stop(self) -> D:
        return self.moves[-1].price if self.moves else self.initial


def simulate(
    params: TrailingParams,
    side: str,
    entry: D,
    tick: D,
    ticks: Iterable[tuple[int, D]],
    *,
    opened_ms: int | None = None,
    keep_steps: bool = True,
    close_on_stop: bool = False,
    external: Sequence[tuple[int, D]] = (),
) -> Run:
    """``external``: (tick index, gap %): before that tick another rule moves the live stop to
    ``gap`` % from the mark, if that is tighter (it resets the rate-limit window, as a stop_moved event does)."""
    outside = dict(external)
    ticks = iter(ticks)
    first = next(ticks, None)
    if first is None:
        raise ValueError("no ticks")
    opened = first[0] if opened_ms is None else opened_ms
    run = Run(params, side, entry, tick, opened, initial_stop(side, entry, tick))
    stop, last_move, state = run.initial, None, TrailState()
    for i, (t, mark) in enumerate([first, *ticks]):
        if i in outside:
            f = outside[i] / HUNDRED
            tight = grid(mark * (1 - f), tick, ROUND_FLOOR) if side == "long" else grid(mark * (1 + f), tick, ROUND_CEILING)
            if protective(side, tight, stop):
                run.moves.append(Move(t, mark, stop, tight, "external", False, external=True))
                stop, last_move = tight, t
        if close_on_stop and (mark <= stop if side == "long" else mark >= stop):
            run.stopped_ms = t
            break
        state, decision = evaluate(params, side=side, entry=entry, opened_ms=opened, stop=stop, last_move_ms=last_move, state=state, mark=mark, now_ms=t, tick=tick)
        if state.active and run.activated_ms is None:
            run.activated_ms = t
        if decision is not None:
            run.moves.append(Move(t, mark, stop, decision.price, decision.reason, decision.emergency))
            stop, last_move = decision.price, t
        if keep_steps:
            run.steps.append(Step(t, mark, state, decision, stop))
    return run


# ------------------------------------------------------------ path strategy
DT = st.one_of(st.integers(100, 300_000), st.integers(100, 5_000), st.sampled_from([0, 59_999, 60_000, 60_001]))
OPS = st.one_of(
    st.tuples(st.just("walk"), st.floats(-0.006, 0.006), DT),
    st.tuples(st.just("walk"), st.floats(-0.015, 0.015), DT),
    st.tuples(st.just("gap"), st.floats(0.02, 0.08).flatmap(lambda m: st.sampled_from([m, -m])), DT),
    st.tuples(st.just("flat"), st.integers(1, 5), DT),  # n more ticks at the current price
    st.tuples(st.just("stale"), st.integers(1, 30), DT),  # an older price re-sent
)


@dataclass(frozen=True)
class PricePath:
    side: str
    entry: D
    tick: D
    ticks: tuple[tuple[int, D], ...]


@st.composite
def paths(draw, side: str, max_ops: int = 80) -> PricePath:
    tick, level = draw(st.sampled_from(MARKET_SCALES))
    start = level * draw(st.floats(0.5, 2.0))
    drift = draw(st.floats(-0.002, 0.004)) * (1 if side == "long" else -1)  # per walk step, toward profit
    ops = draw(st.lists(OPS, min_size=20, max_size=max_ops))
    tick_f = float(tick)

    def on_tick(p: float) -> D:
        return max(round(p / tick_f), 1) * tick

    entry = on_tick(start)
    lp, t = math.log(float(entry)), T0
    sent: list[D] = [entry]
    out = [(t, entry)]
    for kind, x, dt in ops:
        t += dt
        if kind == "walk":
            lp += x + drift
            sent.append(on_tick(math.exp(lp)))
            out.append((t, sent[-1]))
        elif kind == "gap":
            lp += x
            sent.append(on_tick(math.exp(lp)))
            out.append((t, sent[-1]))
        elif kind == "flat":
            for i in range(x):
                out.append((t + i * dt, sent[-1]))
            t += (x - 1) * dt
        else:  # stale: re-send an older price (the walk goes on from the current one)
            out.append((t, sent[max(len(sent) - 1 - x, 0)]))
    return PricePath(side, entry, tick, tuple(out))


def pct(lo: str, hi: str) -> st.SearchStrategy[D]:
    return st.integers(int(D(lo) * 100), int(D(hi) * 100)).map(lambda n: D(n) / 100)


@st.composite
def trailing_params(draw, breakeven: bool | None = None, time_activation: bool | None = None) -> TrailingParams:
    """Defaults half the time, else random but sane (min improvement <= emergency)."""
    if draw(st.booleans()):
        p = TrailingParams()
    else:
        min_imp = draw(pct("0", "0.5"))
        p = TrailingParams(
            activation_percent=draw(st.one_of(pct("0.1", "1"), pct("1", "5"))),
            callback_percent=draw(st.one_of(pct("0.1", "1"), pct("2", "5"))),  # wide: trails under the initial stop
            min_move_interval_secs=draw(st.sampled_from([0, 1, 5, 60, 60, 300])),
            min_improvement_percent=min_imp,
            emergency_percent=min_imp + draw(pct("0.01", "4")),
            breakeven_fee_percent=draw(pct("0", "0.2")),
        )
    if breakeven is None:
        breakeven = draw(st.booleans())
    if breakeven:
        p = TrailingParams(**{**_fields(p), "breakeven_at_percent": draw(pct("0.1", "3"))})
    if time_activation is None:
        time_activation = draw(st.booleans())
    if time_activation:
        p = TrailingParams(**{**_fields(p), "time_activation_minutes": draw(st.integers(1, 30))})
    return p


def _fields(p: TrailingParams) -> dict:
    return {f: getattr(p, f) for f in TrailingParams.__struct_fields__}


PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_of(p: TrailingParams, path: PricePath) -> Run:
    return simulate(p, path.side, path.entry, path.tick, path.ticks)


def activation_index(run: Run) -> int | None:
    return next((i for i, s in enumerate(run.steps) if s.state.active), None)


# -------------------------------------------------------------- checkers
def check_never_loosens(run: Run) -> None:
    stop = run.initial
    for m in run.moves:
        assert m.old == stop, "moves are applied at once"
        assert protective(run.side, m.price, stop), f"loosened or no-op: {stop} -> {m.price} at {m.t}"
        stop = m.price


def breakeven_floor(run: Run) -> D:
    """Entry + fees (short: minus) on the grid, rounded away from the market."""
    f = run.params.breakeven_fee_percent / HUNDRED
    if run.side == "long":
        return grid(run.entry * (1 + f), run.tick, ROUND_FLOOR)
    return grid(run.entry * (1 - f), run.tick, ROUND_CEILING)


def check_rate_limit_and_improvement(run: Run) -> None:
    """At most one move per interval unless flagged emergency; >= min improvement.

    Exempt (module docstring): a move while breakeven is reached and the live stop is
    still worse than the breakeven floor goes at once (flagged emergency if it
    overrides the rate limit), whatever the improvement."""
    p, interval = run.params, run.params.min_move_interval_secs * 1000
    prev_t, reached = None, False
    marks = iter(run.steps) if run.steps else None
    for m in run.moves:
        if m.external:
            prev_t = m.t
            continue
        if marks is not None:  # breakeven reached at or before this move?
            for s in marks:
                reached = reached or (p.breakeven_at_percent > 0 and profit(run.side, run.entry, s.mark) >= p.breakeven_at_percent)
                if s.t == m.t and s.decision is not None:
                    break
        floor_move = reached and protective(run.side, breakeven_floor(run), m.old)
        improvement = abs(m.price - m.old) / m.old * HUNDRED
        within = prev_t is not None and m.t - prev_t < interval
        assert m.emergency == within, f"emergency flag {m.emergency} but within window={within}: {m}"
        if not floor_move:
            assert improvement >= p.min_improvement_percent, f"move {m} improves only {improvement} %"
            if m.emergency:
                assert improvement >= p.emergency_percent, f"emergency move {m} improves only {improvement} %"
        prev_t = m.t


# ------------------------------------------------------- property tests
@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop1_stop_never_loosens(side, data):
    run = run_of(data.draw(trailing_params()), data.draw(paths(side)))
    check_never_loosens(run)


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop1_stop_never_loosens_after_another_rule_tightened_it(side, data):
    """Another rule (TP1 -> breakeven, a manual move) may set the live stop tighter than the
    trail wants: the trail never moves it back."""
    p, path = data.draw(trailing_params()), data.draw(paths(side))
    external = data.draw(st.lists(st.tuples(st.integers(0, len(path.ticks) - 1), pct("0.05", "1")), min_size=1, max_size=5))
    run = simulate(p, side, path.entry, path.tick, path.ticks, external=external)
    check_never_loosens(run)
    check_rate_limit_and_improvement(run)


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop2_decided_prices_on_grid_positive_and_rounded_away_from_market(side, data):
    p, path = data.draw(trailing_params()), data.draw(paths(side))
    run = run_of(p, path)
    best = None
    for s in run.steps:
        if s.state.active:
            best = s.mark if best is None or protective(side, s.mark, best) else best
            assert s.state.best == best, "best = best mark since activation (stale ticks never lower it)"
        d = s.decision
        if d is None:
            continue
        assert d.price > 0 and d.price >= run.tick
        assert (d.price / run.tick) == (d.price / run.tick).to_integral_value(), f"{d.price} off the {run.tick} grid"
        cb, fee = p.callback_percent / HUNDRED, p.breakeven_fee_percent / HUNDRED
        if d.reason == "trailing":
            exact = best * (1 - cb) if side == "long" else best * (1 + cb)
        else:
            assert d.reason == "breakeven" and s.state.breakeven_reached
            exact = run.entry * (1 + fee) if side == "long" else run.entry * (1 - fee)
        if side == "long":
            assert exact - run.tick < d.price <= exact, f"long {d.reason} stop {d.price} vs exact {exact}"
        else:
            assert exact <= d.price < exact + run.tick, f"short {d.reason} stop {d.price} vs exact {exact}"


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop3_active_stop_never_lags_past_callback_plus_emergency(side, data):
    """After each tick, once active: live stop within cb % + emergency % (+ one tick) of the best mark.

    The emergency threshold is measured against the live stop (the docstring:
    "the wanted stop is emergency_percent or more past the live one"), so for a
    short, whose live stop sits above the market, the bound in terms of the best
    mark is cb + e / (1 - e); for a long cb + e holds as stated.
    """
    p, path = data.draw(trailing_params()), data.draw(paths(side))
    run = run_of(p, path)
    cb, e = p.callback_percent / HUNDRED, p.emergency_percent / HUNDRED
    best = None
    for s in run.steps:
        if not s.state.active:
            continue
        best = s.mark if best is None or protective(side, s.mark, best) else best
        if side == "long":
            assert s.stop >= best * (1 - cb - e) - run.tick, f"long stop {s.stop} lags best {best} at {s.t}"
        else:
            assert s.stop <= (best * (1 + cb) + run.tick) / (1 - e), f"short stop {s.stop} lags best {best} at {s.t}"


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop4_one_move_per_interval_unless_emergency_and_min_improvement(side, data):
    run = run_of(data.draw(trailing_params()), data.draw(paths(side)))
    check_rate_limit_and_improvement(run)


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop5_activation_only_at_profit_or_after_time_in_profit(side, data):
    p, path = data.draw(trailing_params()), data.draw(paths(side))
    run = run_of(p, path)
    i = activation_index(run)

    def due(s: Step) -> bool:
        gain = profit(side, run.entry, s.mark)
        if gain >= p.activation_percent:
            return True
        return bool(p.time_activation_minutes) and s.t - run.opened_ms >= p.time_activation_minutes * 60_000 and gain > 0

    first_due = next((k for k, s in enumerate(run.steps) if due(s)), None)
    assert i == first_due, f"activated at step {i}, first due at {first_due}"
    if i is not None:
        s = run.steps[i]
        assert s.state.activated_ms == s.t and s.state.best == s.mark
        if profit(side, run.entry, s.mark) < p.activation_percent:
            assert p.time_activation_minutes and s.t - run.opened_ms >= p.time_activation_minutes * 60_000
            assert profit(side, run.entry, s.mark) > 0
        assert all(s.state.active for s in run.steps[i:]), "activation is sticky"
    # nothing trails before activation (a breakeven step may)
    before = run.steps[:i] if i is not None else run.steps
    assert all(s.decision is None or s.decision.reason == "breakeven" for s in before)


def check_breakeven_floor(run: Run) -> None:
    p = run.params
    fee = p.breakeven_fee_percent / HUNDRED
    exact = run.entry * (1 + fee) if run.side == "long" else run.entry * (1 - fee)
    reached = False
    for s in run.steps:
        reached = reached or profit(run.side, run.entry, s.mark) >= p.breakeven_at_percent
        assert s.state.breakeven_reached == reached
        if reached:  # rounded away from the market: at most one tick short of entry ± fees
            if run.side == "long":
                assert s.stop > exact - run.tick, f"long stop {s.stop} under breakeven {exact} at {s.t}"
            else:
                assert s.stop < exact + run.tick, f"short stop {s.stop} over breakeven {exact} at {s.t}"


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop6_breakeven_floor_holds_once_reached(side, data):
    """Any params (price or time activation, any callback, throttled or not)."""
    p = data.draw(trailing_params(breakeven=True))
    check_breakeven_floor(run_of(p, data.draw(paths(side))))


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop6_breakeven_floor_holds_with_time_activation(side, data):
    """Time activation trails from a small profit, so the stop is under entry + fees when
    breakeven comes soon after that trailing move: the rate limit must not hold it.
    Path: a small profit at N minutes, breakeven within the interval, then a random path."""
    p = data.draw(trailing_params(breakeven=True, time_activation=True))
    interval = data.draw(st.sampled_from([60, 300]))
    p = TrailingParams(**{**_fields(p), "activation_percent": D(50), "callback_percent": data.draw(pct("0.1", "1")), "breakeven_at_percent": data.draw(pct("0.2", "0.8")),
                          "min_move_interval_secs": interval, "emergency_percent": max(p.emergency_percent, D(1))})
    rest = data.draw(paths(side, max_ops=40))
    sign = 1 if side == "long" else -1
    at = T0 + p.time_activation_minutes * 60_000 + data.draw(st.integers(0, 5_000))
    small = rest.entry * (1 + sign * data.draw(pct("0.01", "0.1")) / HUNDRED)
    big = rest.entry * (1 + sign * (p.breakeven_at_percent + data.draw(pct("0", "0.5"))) / HUNDRED)
    t_be = at + data.draw(st.integers(100, interval * 1000 - 1))
    head = [(T0, rest.entry), (at, grid(small, rest.tick, ROUND_HALF_EVEN)), (t_be, grid(big, rest.tick, ROUND_HALF_EVEN))]
    ticks = head + [(t_be + t - T0, m) for t, m in rest.ticks[1:]]
    check_breakeven_floor(simulate(p, side, rest.entry, rest.tick, ticks))


@pytest.mark.parametrize("side", SIDES)
@PROPS
@given(data=st.data())
def test_prop7_same_path_same_moves(side, data):
    p, path = data.draw(trailing_params()), data.draw(paths(side))
    a = run_of(p, path)
    copy = PricePath(side, D(str(path.entry)), path.tick, tuple((t, D(str(m))) for t, m in path.ticks))
    b = run_of(TrailingParams(**_fields(p)), copy)
    assert a.moves == b.moves and a.steps == b.steps


# ------------------------------------------------------------ unit tests
P = TrailingParams()
C = D("0.01")


def ev(p: TrailingParams = P, *, side: str = "long", entry: str = "100", stop: str | None = None, last_move_ms: int | None = None,
       state: TrailState = TrailState(), mark: str | D = "100", now_ms: int = T0, tick: D = C, opened_ms: int = T0):
    if stop is None:
        stop = str(initial_stop(side, D(entry), tick))
    return evaluate(p, side=side, entry=D(entry), opened_ms=opened_ms, stop=D(stop), last_move_ms=last_move_ms, state=state, mark=D(mark) if isinstance(mark, str) else mark, now_ms=now_ms, tick=tick)


def active(best: str) -> TrailState:
    return TrailState(active=True, best=D(best), activated_ms=T0)


@pytest.mark.parametrize("side,at,below,stop", [("long", "101.5", "101.49", "100.99"), ("short", "98.5", "98.51", "99.00")])
def test_activation_exactly_at_the_threshold(side, at, below, stop):
    s, d = ev(side=side, mark=below)
    assert not s.active and d is None
    s, d = ev(side=side, mark=at)
    assert s.active and s.best == D(at) and s.activated_ms == T0
    # 101.5 * 0.995 = 100.9925 -> down to 100.99; 98.5 * 1.005 = 98.9925 -> up to 99.00
    assert d == StopDecision(price=D(stop), reason="trailing", emergency=False)


def test_callback_distance_after_activation_long():
    s, d = ev(state=active("101.5"), stop="100.99", last_move_ms=T0, mark="102", now_ms=T0 + 60_000)
    assert s.best == D("102")
    assert d == StopDecision(price=D("101.49"), reason="trailing", emergency=False)  # 102 * 0.995


def test_callback_distance_after_activation_short_mirror():
    s, d = ev(side="short", state=active("98.5"), stop="98.99", last_move_ms=T0, mark="97.99", now_ms=T0 + 60_000)
    assert s.best == D("97.99")
    assert d == StopDecision(price=D("98.48"), reason="trailing", emergency=False)  # 97.99 * 1.005 = 98.47995 -> up


def test_worse_or_stale_mark_never_lowers_the_best():
    s, d = ev(state=active("102"), stop="101.49", last_move_ms=T0, mark="101.6", now_ms=T0 + 120_000)
    assert s.best == D("102") and d is None
    s, d = ev(side="short", state=active("98"), stop="98.49", last_move_ms=T0, mark="98.3", now_ms=T0 + 120_000)
    assert s.best == D("98") and d is None


@pytest.mark.parametrize("side,live", [("long", "101.50"), ("short", "98.48")])
def test_a_wanted_stop_looser_than_the_live_one_is_never_sent(side, live):
    """The live stop may be tighter than the trail wants (another rule moved it): no move back."""
    best = "102" if side == "long" else "98"  # wanted 101.49 / 98.49
    for last in (None, T0 - 3_600_000):
        _, d = ev(side=side, state=active(best), stop=live, mark=best, last_move_ms=last)
        assert d is None
    _, d = ev(side=side, state=active(best), stop="101.49" if side == "long" else "98.49", mark=best)
    assert d is None  # equal: nothing to do


@pytest.mark.parametrize("side,stop,blocked,moves", [("long", "101.40", "101.49", "101.38"), ("short", "98.58", "98.49", "98.60")])
def test_min_improvement_blocks_tiny_moves(side, stop, blocked, moves):
    best = "102" if side == "long" else "98"  # wanted 101.49 / 98.49
    _, d = ev(side=side, state=active(best), stop=stop, mark=best, now_ms=T0 + 600_000, last_move_ms=T0)
    assert d is None  # 0.089 % / 0.091 % < 0.1 %
    _, d = ev(side=side, state=active(best), stop=moves, mark=best, now_ms=T0 + 600_000, last_move_ms=T0)
    assert d == StopDecision(price=D(blocked), reason="trailing", emergency=False)  # 0.108 % / 0.112 %


@pytest.mark.parametrize("side", SIDES)
def test_rate_limit_holds_a_second_move_within_60s(side):
    best, stop = ("102", "101.00") if side == "long" else ("98", "98.98")  # wanted 101.49 / 98.49: ~0.49 % (< 1 %)
    _, d = ev(side=side, state=active(best), stop=stop, mark=best, last_move_ms=T0, now_ms=T0 + 59_999)
    assert d is None
    _, d = ev(side=side, state=active(best), stop=stop, mark=best, last_move_ms=T0, now_ms=T0 + 60_000)
    assert d is not None and d.emergency is False and d.price == D("101.49" if side == "long" else "98.49")


@pytest.mark.parametrize("side", SIDES)
def test_emergency_override_moves_within_the_window_and_says_so(side):
    best, stop = ("102", "100.40") if side == "long" else ("98", "99.50")  # wanted >= 1 % past the live stop
    _, d = ev(side=side, state=active(best), stop=stop, mark=best, last_move_ms=T0, now_ms=T0 + 1_000)
    assert d == StopDecision(price=D("101.49" if side == "long" else "98.49"), reason="trailing", emergency=True)
    # the same jump outside the window, or as the first move, overrides nothing
    for last in (T0 - 60_000, None):
        _, d = ev(side=side, state=active(best), stop=stop, mark=best, last_move_ms=last, now_ms=T0)
        assert d is not None and d.emergency is False


@pytest.mark.parametrize("side,mark,price", [("long", "100.5", "100.10"), ("short", "99.5", "99.90")])
def test_breakeven_price_includes_fees(side, mark, price):
    p = TrailingParams(breakeven_at_percent=D("0.5"))
    s, d = ev(p, side=side, mark=mark)
    assert s.breakeven_reached and not s.active
    assert d == StopDecision(price=D(price), reason="breakeven", emergency=False)
    s, d = ev(p, side=side, mark="100.49" if side == "long" else "99.51")
    assert not s.breakeven_reached and d is None


def test_breakeven_rounds_away_from_the_market_by_less_than_a_tick():
    p = TrailingParams(breakeven_at_percent=D("0.5"))
    tick = D("0.1")
    _, d = ev(p, entry="46321.7", mark="46600.0", tick=tick)  # 46321.7 * 1.001 = 46368.0217
    assert d.price == D("46368.0")
    _, d = ev(p, side="short", entry="46321.7", mark="46000.0", tick=tick)  # * 0.999 = 46275.3783
    assert d.price == D("46275.4")


@pytest.mark.parametrize("side", SIDES)
def test_rounding_never_yields_a_price_below_one_tick(side):
    tick = D("0.00001")
    for price in (D("0.000004"), D("0.00000001"), D("0"), D("0.00001")):
        assert on_grid(side, price, tick) == tick
    # a coin priced at a few ticks: the stop is still >= one tick and on the grid
    s, d = ev(side=side, entry="0.00003", mark="0.00002" if side == "short" else "0.00005", tick=tick, stop="0.00001" if side == "long" else "0.00010")
    assert d is not None and d.price >= tick and d.price % tick == 0


@pytest.mark.parametrize("mark", [D("NaN"), D("sNaN"), D("Infinity"), D("-Infinity"), D("-1"), D("0"), D("-0")])
@pytest.mark.parametrize("side", SIDES)
def test_bad_mark_gives_no_decision_and_keeps_the_state(mark, side):
    for state in (TrailState(), active("102" if side == "long" else "98")):
        s, d = ev(side=side, state=state, mark=mark, stop="101.00" if side == "long" else "99.00", now_ms=T0 + 3_600_000)
        assert d is None and s == state


@pytest.mark.parametrize("side", SIDES)
def test_disabled_does_nothing(side):
    p = TrailingParams(enabled=False, breakeven_at_percent=D("0.5"), time_activation_minutes=1)
    for state in (TrailState(), active("110" if side == "long" else "90")):
        s, d = ev(p, side=side, state=state, mark="150" if side == "long" else "50", now_ms=T0 + 3_600_000)
        assert d is None and s == state


@pytest.mark.parametrize("side", SIDES)
def test_time_activation_after_n_minutes_only_in_profit(side):
    p = TrailingParams(time_activation_minutes=10)
    up, down = ("100.2", "99.9") if side == "long" else ("99.8", "100.1")
    assert not ev(p, side=side, mark=up, now_ms=T0 + 599_999)[0].active
    assert not ev(p, side=side, mark=down, now_ms=T0 + 600_000)[0].active
    assert not ev(p, side=side, mark="100", now_ms=T0 + 600_000)[0].active  # zero profit is not profit
    s, _ = ev(p, side=side, mark=up, now_ms=T0 + 600_000)
    assert s.active and s.best == D(up)


def test_short_emergency_threshold_is_a_percent_of_the_live_stop():
    """Emergency % is measured against the live stop (module docstring), so a short's stop,
    above the market, may lag the best mark by cb + e / (1 - e) (~1.508 %), not cb + e."""
    tick = D("0.1")
    # live short stop 40603.1 (moved at best 40401.0), the mark falls to 40000 within the window:
    # wanted 40200.0 is 0.9928 % of the live stop away (< 1 %): held
    s, d = ev(side="short", entry="41500.0", state=active("40401.0"), stop="40603.1", last_move_ms=T0, mark="40000.0", now_ms=T0 + 30_000, tick=tick)
    assert d is None and s.best == D("40000.0")
    assert D("40603.1") > D("40000.0") * D("1.015") + tick  # lags 1.5078 % of the best mark
    # a long never lags past cb + e: the emergency fires first
    s, d = ev(side="long", entry="38500.0", state=active("39600.0"), stop="39402.0", last_move_ms=T0, mark="40000.0", now_ms=T0 + 30_000, tick=tick)
    assert d == StopDecision(price=D("39800.0"), reason="trailing", emergency=True)


def test_breakeven_move_is_not_held_by_the_rate_limit():
    """Was a bug (found here): the breakeven step waited out the 60 s rate limit, stop under entry."""
    p = TrailingParams(breakeven_at_percent=D("0.5"), time_activation_minutes=10)
    ticks = [(T0, D("100")), (T0 + 600_000, D("100.20")), (T0 + 610_000, D("100.60"))]
    run = simulate(p, "long", D("100"), C, ticks)
    assert [(m.t, m.price) for m in run.moves[:1]] == [(T0 + 600_000, D("99.69"))]  # time activation: 100.2 * 0.995
    assert run.steps[-1].state.breakeven_reached  # 0.6 % profit >= 0.5 %
    assert run.moves[1:] == [Move(T0 + 610_000, D("100.60"), D("99.69"), D("100.10"), "breakeven", True)]  # 0.41 % < 1 %, 10 s after


def test_breakeven_move_is_not_blocked_by_min_improvement():
    """Was a bug (found here): a breakeven step smaller than min improvement never happened."""
    p = TrailingParams(breakeven_at_percent=D("0.6"), time_activation_minutes=10)
    ticks = [(T0, D("100")), (T0 + 600_000, D("100.56")), (T0 + 700_000, D("100.60"))]
    run = simulate(p, "long", D("100"), C, ticks)
    assert [(m.t, m.price) for m in run.moves[:1]] == [(T0 + 600_000, D("100.05"))]  # 100.56 * 0.995 = 100.0572
    assert run.steps[-1].state.breakeven_reached  # 100 s after the move: no rate limit in the way
    assert run.moves[1:] == [Move(T0 + 700_000, D("100.60"), D("100.05"), D("100.10"), "breakeven", False)]  # 0.05 % < 0.1 %


def test_harness_applies_decisions_and_records_moves():
    ticks = [(T0, D("100")), (T0 + 1_000, D("101.5")), (T0 + 2_000, D("102")), (T0 + 61_000, D("102")), (T0 + 62_000, D("104"))]
    run = simulate(P, "long", D("100"), C, ticks)
    assert run.initial == D("98.00")
    assert [(m.t, m.price, m.emergency) for m in run.moves] == [(T0 + 1_000, D("100.99"), False), (T0 + 61_000, D("101.49"), False), (T0 + 62_000, D("103.48"), True)]


# ------------------------------------------------------------- real history
MARKET_OF_FILE = {"btc": "BTCUSDT", "xrp": "XRPUSDT"}


def history_ticks(path: Path, tick: D) -> tuple[tuple[int, D], ...]:
    """Candle -> 4 ticks (open, low/high by direction, close) at quarter-candle steps, on the tick grid."""
    t0, interval, candles = load_candles(Path(path))
    cache: dict[str, D] = {}

    def px(x: str) -> D:
        v = cache.get(x)
        if v is None:
            v = cache[x] = grid(D(x), tick, ROUND_HALF_EVEN).quantize(tick)
        return v

    out = []
    for i, (o, h, low, c) in enumerate(candles):
        base = t0 + i * interval
        for k, p in enumerate(candle_ticks(px(o), px(h), px(low), px(c))):
            out.append((base + k * interval // 4, p))
    return tuple(out)


def _resolve_source(path_source, tick: D | None) -> tuple[tuple[tuple[int, D], ...], D, str]:
    if isinstance(path_source, (str, Path)):
        path = Path(path_source)
        if not path.exists():
            path = DATA_DIR / path
        if tick is None:
            tick = MARKETS.resolve(MARKET_OF_FILE[path.name.split("-")[0]]).tick_size
        return _history_ticks_cached(path, tick), tick, path.name
    ticks = tuple(path_source)
    if tick is None:
        tick = D(1).scaleb(min(p.as_tuple().exponent for _t, p in ticks))
    return ticks, tick, "ticks"


@functools.lru_cache(maxsize=4)
def _history_ticks_cached(path: Path, tick: D) -> tuple[tuple[int, D], ...]:
    return history_ticks(path, tick)


def real_history_runs(path_source, *, params: TrailingParams = P, tick: D | None = None, positions_per_side: int = 20,
                      hold_hours: float = 24, close_on_stop: bool = False) -> tuple[list[Run], list[float], str, D]:
    """Positions opened at evenly spaced points of the path, each held ``hold_hours`` (or until stopped out).

    Returns (runs, position-hours of each run, source name, tick)."""
    ticks, tick, name = _resolve_source(path_source, tick)
    hold_ms = int(hold_hours * 3_600_000)
    last_start = ticks[-1][0] - hold_ms
    starts = [i for i, (t, _p) in enumerate(ticks) if t <= last_start]
    if not starts:
        raise ValueError(f"{name}: shorter than {hold_hours} h")
    idx = [starts[round(k * (len(starts) - 1) / max(positions_per_side - 1, 1))] for k in range(positions_per_side)]
    runs, hours = [], []
    for side in SIDES:
        for i in idx:
            t_open, entry = ticks[i]
            window = [(t, p) for t, p in ticks[i : i + hold_ms // max(ticks[1][0] - ticks[0][0], 1) + 2] if t < t_open + hold_ms]
            run = simulate(params, side, entry, tick, window, keep_steps=False, close_on_stop=close_on_stop)
            end = run.stopped_ms if run.stopped_ms is not None else t_open + hold_ms
            runs.append(run)
            hours.append((end - t_open) / 3_600_000)
    return runs, hours, name, tick


def moves_per_position_hour(path_source, *, params: TrailingParams = P, tick: D | None = None, positions_per_side: int = 20,
                            hold_hours: float = 24, close_on_stop: bool = False) -> dict:
    """Stop moves per position-hour of the rate-limited trailing stop vs the alternatives.

    ``path_source``: a candle file (a path, or a name in ``adapters.paper.prices.DATA_DIR``:
    ``btc-perp-1m-2022-01.csv``, ``xrp-usdt-perp-5m-2021-11.json``) or a sequence of
    (time_ms, mark) ticks. ``positions_per_side`` longs and as many shorts are opened at
    evenly spaced points, each held ``hold_hours`` (with ``close_on_stop``: only until the mark
    reaches the live stop). Figures: ``moves_per_hour`` (rate-limited, these params),
    ``moves_per_active_hour`` (the same per hour since trailing activation),
    ``unthrottled_moves_per_hour`` (same rules, no interval and no minimum improvement: a
    move on every tick that tightens the grid stop), ``ticks_per_hour`` (moving on every tick).
    """
    runs, hours, name, tick = real_history_runs(path_source, params=params, tick=tick, positions_per_side=positions_per_side, hold_hours=hold_hours, close_on_stop=close_on_stop)
    free = TrailingParams(**{**_fields(params), "min_move_interval_secs": 0, "min_improvement_percent": D(0)})
    free_runs, free_hours, _n, _t = real_history_runs(path_source, params=free, tick=tick, positions_per_side=positions_per_side, hold_hours=hold_hours, close_on_stop=close_on_stop)
    ticks, _tick, _name = _resolve_source(path_source, tick)
    tick_ms = ticks[1][0] - ticks[0][0]
    total_h = sum(hours)
    active_h = sum(h - ((r.activated_ms - r.opened_ms) / 3_600_000) for r, h in zip(runs, hours) if r.activated_ms is not None)
    n_moves = sum(len(r.moves) for r in runs)
    n_ticks = sum(round(h * 3_600_000 / tick_ms) for h in hours)

    def max_in_hour(run: Run) -> int:
        ts, best, j = [m.t for m in run.moves], 0, 0
        for i, t in enumerate(ts):
            while ts[j] <= t - 3_600_000:
                j += 1
            best = max(best, i - j + 1)
        return best

    return {
        "source": name,
        "tick": str(tick),
        "positions": len(runs),
        "activated": sum(1 for r in runs if any(m.reason == "trailing" for m in r.moves)),
        "stopped_out": sum(1 for r in runs if r.stopped_ms is not None),
        "position_hours": round(total_h, 2),
        "moves": n_moves,
        "emergency_moves": sum(m.emergency for r in runs for m in r.moves),
        "moves_per_hour": n_moves / total_h,
        "active_hours": round(active_h, 2),
        "moves_per_active_hour": n_moves / active_h if active_h else 0.0,
        "max_moves_in_any_hour": max((max_in_hour(r) for r in runs), default=0),
        "unthrottled_moves_per_hour": sum(len(r.moves) for r in free_runs) / sum(free_hours),
        "ticks_per_hour": n_ticks / total_h,
    }


def print_figures(fig: dict, label: str = "") -> None:
    print(
        f"\n[real history{label}] {fig['source']} (tick {fig['tick']}): {fig['positions']} positions, "
        f"{fig['activated']} activated, {fig['stopped_out']} stopped out, {fig['position_hours']} position-h\n"
        f"  rate-limited stop moves: {fig['moves']} ({fig['emergency_moves']} emergency) = {fig['moves_per_hour']:.3f} /position-h "
        f"(max {fig['max_moves_in_any_hour']} in any hour); {fig['moves_per_active_hour']:.3f} per hour trailing ({fig['active_hours']} h)\n"
        f"  unthrottled (every tightening tick): {fig['unthrottled_moves_per_hour']:.3f} /position-h\n"
        f"  ticks (moving on every tick): {fig['ticks_per_hour']:.1f} /position-h"
    )


@functools.lru_cache(maxsize=8)
def _figures(name: str, close_on_stop: bool) -> dict:
    return moves_per_position_hour(DATA_DIR / name, close_on_stop=close_on_stop)


@pytest.mark.parametrize("name", ["btc-perp-1m-2022-01.csv", "xrp-usdt-perp-5m-2021-11.json"])
def test_real_history_moves_per_position_hour(name):
    runs, _hours, _n, _t = real_history_runs(DATA_DIR / name)
    assert len(runs) == 40 and sum(r.side == "long" for r in runs) == 20
    for run in runs:
        check_never_loosens(run)
        check_rate_limit_and_improvement(run)
    for close_on_stop, label in ((False, ": held 24 h"), (True, ": closed when the mark reaches the stop")):
        fig = _figures(name, close_on_stop)
        print_figures(fig, label)
        assert fig["moves"] > 0 and fig["activated"] > 0
        assert fig["moves_per_hour"] <= fig["moves_per_active_hour"] <= 60
        assert fig["max_moves_in_any_hour"] <= 60 + fig["emergency_moves"]
        assert fig["moves_per_hour"] * 10 < fig["ticks_per_hour"]  # far below moving on every tick
        assert fig["moves_per_hour"] <= fig["unthrottled_moves_per_hour"]


def test_moves_per_position_hour_accepts_a_tick_sequence():
    ticks = [(T0 + i * 15_000, D(100) + D(i) / 100) for i in range(4 * 60 * 3)]  # +0.01 every 15 s for 3 h
    fig = moves_per_position_hour(ticks, positions_per_side=2, hold_hours=1)
    assert fig["tick"] == "0.01" and fig["positions"] == 4
    assert fig["moves_per_hour"] <= 60 and fig["ticks_per_hour"] == 240
