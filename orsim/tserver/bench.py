"""Benchmark a T-Server: drive N calls, report calls/s and routing latency from the ledger.

Two ways to use it:

- ``await bench_tserver(network, host, port, calls=N)`` against a running T-Server. With
  ``route=True`` (default) the bench is also the router: it registers on every routing
  point and routes each route request it hears, so it measures the T-Server alone. With
  ``route=False`` something else routes (a running ORS cluster) and the bench only creates
  calls and waits for each one to be routed or lost. Run it against an otherwise idle
  T-Server: with ``route=True`` it routes every call it hears of.
- ``python -m orsim.tserver.bench [--host H --port P] [--calls N] [--rate R]``: without
  ``--port`` it starts a T-Server in-process on a free port first.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from orsim.config import ROUTING_POINTS, Application
from orsim.errors import RequestRefused
from orsim.logs import configure_logging
from orsim.tserver._client import TServerClient
from orsim.tserver._ledger import ROUTED, percentile
from orsim.tserver._messages import CallRouted, MakeCall, RouteRequest
from orsim.tserver._server import TServer
from orsim.wire import Connection, Network, Push, TcpNetwork, connected

BENCH_APP = "orsim-bench"
#: Node id the bench routes as when it is the router: no real DBID is negative.
BENCH_NODE_ID = -1
#: How long past the last deadline to wait for the T-Server to declare calls lost.
LOSS_MARGIN = 0.5


@attrs.frozen
class BenchResult:
    """What one bench run measured."""

    calls: int
    routed: int
    lost: int
    duplicates: int
    elapsed_s: float
    calls_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    def summary(self) -> str:
        def ms(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2f} ms"

        return (
            f"{self.calls} calls: {self.routed} routed, {self.lost} lost, "
            f"{self.duplicates} duplicates in {self.elapsed_s:.2f} s = "
            f"{self.calls_per_s:.0f} calls/s; latency p50 {ms(self.latency_p50_ms)}, "
            f"p99 {ms(self.latency_p99_ms)}"
        )


@attrs.define(eq=False)
class _Tracker:
    ids: set[str] = attrs.Factory(set)
    resolved: set[str] = attrs.Factory(set)
    created_all: bool = False
    done: trio.Event = attrs.Factory(trio.Event)
    last_resolved_at: float = 0.0
    give_up_at: float = -math.inf

    #: Closed-loop mode: at most this many calls of ours unresolved at once.
    window: trio.Semaphore | None = None
    window_size: int = 0

    def resolve(self, call_id: str) -> None:
        if call_id in self.resolved:
            return
        self.resolved.add(call_id)
        if self.window is not None and self.window.value < self.window_size:
            self.window.release()
        self.last_resolved_at = trio.current_time()
        self.check()

    def check(self) -> None:
        if self.created_all and self.ids <= self.resolved:
            self.done.set()


async def bench_tserver(
    network: Network,
    host: str,
    port: int,
    *,
    calls: int = 1000,
    rate: float | None = None,
    concurrency: int = 16,
    route: bool = True,
    timeout: float = 60.0,
) -> BenchResult:
    """Create ``calls`` calls and wait until each is routed or lost; statistics come from
    the ledger.

    With ``rate`` calls are created open-loop at that pace. Without it, the bench keeps
    ``concurrency`` calls unresolved at a time (closed loop, so latency is the T-Server's
    round trip rather than a queue the bench built up); that mode needs ``route=True`` or
    a router that never loses calls.
    """
    tracker = _Tracker()
    if rate is None:
        tracker.window = trio.Semaphore(concurrency)
        tracker.window_size = concurrency
    to_route_send, to_route = trio.open_memory_channel[str](math.inf)

    async def on_push(_conn: Connection, push: Push) -> None:
        call_id = push.data.get("call_id")
        if not isinstance(call_id, str):
            return
        if push.topic == RouteRequest.TOPIC and route:
            to_route_send.send_nowait(call_id)
        elif push.topic == CallRouted.TOPIC:
            tracker.resolve(call_id)

    async with connected(
        network, host, port, app=BENCH_APP, app_type="Bench", on_push=on_push
    ) as conn:
        client = TServerClient(conn, timeout=timeout)
        await client.register(BENCH_APP, BENCH_NODE_ID, [])
        before = await client.ledger()

        async def router() -> None:
            async for call_id in to_route:
                try:
                    await client.route(
                        call_id, "Agent_1", app=BENCH_APP, node_id=BENCH_NODE_ID, epoch=0
                    )
                    tracker.resolve(call_id)  # the router hears no call_routed of its own
                except RequestRefused:
                    pass  # lost or routed by someone else: the ledger tells

        async def caller(quota: trio.CapacityLimiter, counter: list[int]) -> None:
            while counter[0] < calls:
                n = counter[0]
                counter[0] += 1
                if rate is not None:
                    await trio.sleep_until(start + n / rate)
                if tracker.window is not None:
                    await tracker.window.acquire()
                async with quota:
                    made = await conn.call(MakeCall(), timeout)
                tracker.ids.add(made.call_id)
                # Past this (in trio time) an unrouted call is lost: stop waiting for it.
                lost_at = trio.current_time() + made.deadline - made.created_at
                tracker.give_up_at = max(tracker.give_up_at, lost_at + LOSS_MARGIN)

        start = trio.current_time()
        with trio.move_on_after(timeout):
            async with trio.open_nursery() as nursery:
                if route:
                    for _ in range(concurrency):
                        nursery.start_soon(router)
                limiter = trio.CapacityLimiter(concurrency)
                counter = [0]
                async with trio.open_nursery() as callers:
                    for _ in range(concurrency if rate is None else max(concurrency, 64)):
                        callers.start_soon(caller, limiter, counter)
                tracker.created_all = True
                tracker.check()
                with trio.move_on_at(tracker.give_up_at):
                    await tracker.done.wait()
                nursery.cancel_scope.cancel()
        end = tracker.last_resolved_at if tracker.done.is_set() else trio.current_time()
        ledger = await client.ledger(records=True)
    ours = [r for r in ledger.records or () if r.call_id in tracker.ids]
    latencies = [r.latency_ms for r in ours if r.state == ROUTED and r.latency_ms is not None]
    routed = len(latencies)
    elapsed = max(end - start, 1e-9)
    return BenchResult(
        calls=len(tracker.ids),
        routed=routed,
        lost=sum(1 for r in ours if r.state == "lost"),
        duplicates=ledger.counts.duplicates - before.counts.duplicates,
        elapsed_s=elapsed,
        calls_per_s=routed / elapsed,
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
    )


async def bench_standalone(
    calls: int = 1000, rate: float | None = None, concurrency: int = 16
) -> BenchResult:
    """Start a T-Server in this process on a free loopback port and bench it."""
    app = Application(
        name="SIP_Server",
        type="SIPServer",
        host="localhost",
        address="127.0.0.1",
        port=0,
        options={ROUTING_POINTS.section: {"5000": "default"}},
    )
    network = TcpNetwork()
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(TServer.from_application(app).serve, network))
        result = await bench_tserver(
            network, "127.0.0.1", port, calls=calls, rate=rate, concurrency=concurrency
        )
        nursery.cancel_scope.cancel()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orsim.tserver.bench", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="a running T-Server (default: start one)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rate", type=float, help="calls/s (default: as fast as possible)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-route", action="store_true", help="let the cluster route")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    if args.port is None:
        result = trio.run(partial(bench_standalone, args.calls, args.rate, args.concurrency))
    else:
        result = trio.run(
            partial(
                bench_tserver,
                TcpNetwork(),
                args.host,
                args.port,
                calls=args.calls,
                rate=args.rate,
                concurrency=args.concurrency,
                route=not args.no_route,
            )
        )
    print(json.dumps(attrs.asdict(result)) if args.json else result.summary())
    return 0 if result.lost == 0 and result.duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
