"""The paper exchange: a simulated USDⓈ-M linear perpetual venue behind ccxt's unified async API.

- :class:`PaperEngine` - deterministic matching and account engine (pure, synchronous).
- :class:`PaperExchange` - the ccxt-compatible async facade (faults, latency, price ticks, watch_*).
- :class:`PriceReplay` - mark prices from real candles (synthetic bootstrap for other symbols).
- :class:`FaultPlan` / :class:`FaultInjector` - errors, ambiguous timeouts, latency, partial fills.
"""

from adapters.paper.engine import EngineConfig, PaperEngine
from adapters.paper.errors import ERRORS, error_code, venue_error
from adapters.paper.exchange import PaperExchange
from adapters.paper.faults import FaultInjector, FaultPlan
from adapters.paper.prices import PriceReplay

__all__ = ["ERRORS", "EngineConfig", "FaultInjector", "FaultPlan", "PaperEngine", "PaperExchange", "PriceReplay", "error_code", "venue_error"]
