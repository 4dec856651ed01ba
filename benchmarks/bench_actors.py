"""Actor messaging through a supervisor-built tree of 500 idle position-like actors."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from benchmarks._util import row, summary_us
from supervision.actor import ActorContext, ManagedActor, handles
from core.messages import Message, Shutdown, StartChild
from supervision.supervisor import ChildSpec, Supervisor
from core.clock import RealClock
from core.config import parse_config

N_ACTORS = 500


class PriceSeen(Message, frozen=True, kw_only=True):
    sent_ns: int


class Collect(Message, frozen=True, kw_only=True):
    pass


class IdlePosition(ManagedActor):
    """Holds a little state and records how long each message waited."""

    def started(self) -> None:
        self.best = 0
        self.latencies: list[int] = []

    @handles(PriceSeen)
    def _seen(self, msg: PriceSeen) -> None:
        self.latencies.append(time.perf_counter_ns() - msg.sent_ns)
        self.best = max(self.best, msg.sent_ns)

    @handles(Collect)
    def _collect(self, msg: Collect) -> list[int]:
        out, self.latencies = self.latencies, []
        return out


def run() -> None:
    print(f"actors ({N_ACTORS} idle position-like actors under the supervisor)")
    with tempfile.TemporaryDirectory() as tmp:
        io = IOLoop("bench-io").start()
        store = EventStore(Path(tmp) / "bench.db", io).open()
        clock = RealClock()
        ctx = ActorContext(clock=clock, io=io, store=store, config=parse_config("", base_dir=Path(tmp)))
        sup = Supervisor.start(ctx=ctx, children=[])
        try:
            t0 = time.perf_counter()
            for i in range(N_ACTORS):
                sup.tell(StartChild(spec=ChildSpec(name=f"position:SYM{i}:{i}", factory=lambda n, c: IdlePosition.start(name=n, ctx=c), kind="position", restart="transient")))
            refs: dict = {}
            while len(refs) < N_ACTORS:
                refs = sup.proxy().refs.get()
            row("start 500 actors through the supervisor", f"{time.perf_counter() - t0:.2f} s")
            actors = list(refs.values())

            # Throughput: one producer, round robin (a price fan-out).
            rounds = 40
            start = time.perf_counter()
            for _ in range(rounds):
                for ref in actors:
                    ref.tell(PriceSeen(sent_ns=time.perf_counter_ns()))
            samples: list[int] = []
            for ref in actors:
                samples.extend(ref.ask(Collect(), timeout=60))
            elapsed = time.perf_counter() - start
            row(f"tell throughput ({rounds * N_ACTORS:,} msgs, 1 producer)", f"{len(samples) / elapsed:,.0f} msgs/s")
            row("tell-to-handled latency under fan-out load", summary_us(samples))

            # Latency when not saturated: paced ticks, like a live price feed.
            paced = []
            for _ in range(20):
                for ref in actors[:50]:
                    ref.tell(PriceSeen(sent_ns=time.perf_counter_ns()))
                time.sleep(0.01)  # pacing the producer (benchmark driver, not an actor)
            for ref in actors:
                paced.extend(ref.ask(Collect(), timeout=60))
            row("tell-to-handled latency, paced (50 actors x 20)", summary_us(paced))

            # Request/reply round trip through the tree (ask is for tests/CLI).
            rtts = []
            for ref in actors[:200]:
                t = time.perf_counter_ns()
                ref.ask(Collect(), timeout=10)
                rtts.append(time.perf_counter_ns() - t)
            row("ask round trip (200 actors)", summary_us(rtts))
        finally:
            sup.tell(Shutdown(reason="bench done"))
            sup.actor_stopped.wait(30)
            store.close()
            io.stop()
            clock.close()

