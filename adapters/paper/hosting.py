"""Building a paper exchange from config, and keeping its state across restarts.

Both ways of hosting it use this: in-process (``make run``) and its own
process (``tradebot paper serve``). The state file holds the engine snapshot
and the moment the price replay started, so after a restart prices continue
from where they were rather than jumping back to the start of the history.
Writes are atomic (temp file + rename): a kill mid-write leaves the last good
state.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from loguru import logger

from adapters.markets import Markets
from adapters.paper.engine import PaperEngine
from adapters.paper.exchange import MARKET_FILES, PaperExchange
from adapters.paper.prices import PriceReplay

STATE_VERSION = 1


def markets_path(config: Any) -> Path:
    """The paper flavour's market file; a missing data directory is named by its config key, ``paper.data_dir``."""
    path: Path = config.paper_data_dir / "markets" / MARKET_FILES[config.paper.flavour]
    if not path.exists():
        where = "the data directory does not exist" if not config.paper_data_dir.exists() else "no such file in the data directory"
        raise FileNotFoundError(
            f"paper exchange: market data {path} not found ({where}); set paper.data_dir in the config "
            f"(now {config.paper.data_dir!r}, relative to the config file) to the folder holding markets/ and prices/"
        )
    return path


def build_paper_exchange(config: Any, clock: Any, state_path: Path | None = None, faults: Any = None) -> PaperExchange:
    """Engine (restored from ``state_path`` when it exists), price replay and facade (with the
    :class:`~adapters.paper.faults.FaultPlan` ``faults``, if any); not started."""
    p = config.paper
    mpath = markets_path(config)
    markets = Markets.from_file(mpath)
    saved = load_state(state_path) if state_path else None
    if saved is not None:
        engine = PaperEngine.restore(saved["engine"], markets)
        replay_start = int(saved["replay_start_ms"])
        logger.info("paper exchange: restored state from {} ({} positions, {} open orders)", state_path, len(engine.positions), len(engine.open_orders))
        if engine.config.hedge_mode != config.exchange.hedge_mode:
            logger.warning("paper exchange: the saved account is in {} mode but exchange.hedge_mode = {}; the saved mode stays (delete {} to start afresh)", "hedge" if engine.config.hedge_mode else "one-way", str(config.exchange.hedge_mode).lower(), state_path)
    else:
        # The account's position mode is the bot's exchange.hedge_mode: one key, so the two cannot disagree.
        engine = PaperEngine(markets, flavour=p.flavour, initial_balance=p.starting_balance, leverage=p.leverage, taker_fee_rate=p.taker_fee_rate, slippage_bps=p.slippage_bps, seed=p.seed, hedge_mode=config.exchange.hedge_mode)
        replay_start = clock.now_ms()
    replay = PriceReplay(markets, start_ms=replay_start, time_scale=max(1, int(p.speed)), seed=p.seed, data_dir=config.paper_data_dir / "prices")
    exchange = PaperExchange(engine, clock, flavour=p.flavour, faults=faults, price_replay=replay, tick_interval_ms=p.tick_interval_ms, markets_path=mpath)
    exchange.replay_start_ms = replay_start
    return exchange


def load_state(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    if data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: paper state version {data.get('version')} is not {STATE_VERSION}")
    return data


def save_state(path: Path, exchange: PaperExchange) -> None:
    """Write the engine's state atomically (under the engine lock)."""
    snapshot = exchange.with_engine(lambda engine, now: engine.snapshot())
    data = {"version": STATE_VERSION, "replay_start_ms": exchange.replay_start_ms, "engine": snapshot}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in the paper state")


class StateSaver:
    """Saves after changes, at most every ``interval_ms`` (driven by the clock), and on close."""

    def __init__(self, exchange: PaperExchange, path: Path, clock: Any, interval_ms: int = 200) -> None:
        self.exchange, self.path, self.clock = exchange, Path(path), clock
        self._dirty = True
        exchange.engine.add_listener(self._on_change)
        self._timer = clock.call_every(interval_ms, self._maybe_save)

    def _on_change(self, kind: str, key: str) -> None:
        self._dirty = True  # runs under the engine lock: only flag here

    def _maybe_save(self) -> None:
        if self._dirty:
            self._dirty = False
            try:
                save_state(self.path, self.exchange)
            except OSError as exc:
                self._dirty = True
                logger.error("paper exchange: could not save state: {}", exc)

    def close(self) -> None:
        self._timer.cancel()
        self._dirty = True
        self._maybe_save()
