"""The T-Server benchmark helper drives calls and reads latency from the ledger."""

from __future__ import annotations

from functools import partial

import trio

from orsim.config._model import Application
from orsim.tserver import TServer, TServerClient
from orsim.tserver.bench import bench_standalone, bench_tserver
from orsim.wire import Connection, Push, TcpNetwork, connected


async def test_bench_standalone_routes_every_call() -> None:
    """Closed-loop bench against an in-process T-Server: every call routed once."""
    result = await bench_standalone(calls=200, concurrency=8)
    assert (result.calls, result.routed, result.lost, result.duplicates) == (200, 200, 0, 0)
    assert result.calls_per_s > 0
    assert result.latency_p50_ms is not None
    assert result.latency_p99_ms is not None
    assert result.latency_p50_ms <= result.latency_p99_ms
    assert "200 routed" in result.summary()


async def test_bench_with_an_external_router_and_a_lost_call(nursery: trio.Nursery) -> None:
    """With route=False the bench waits for another router, and for losses at deadlines."""
    app = Application(
        name="SIP_Server",
        type="SIPServer",
        host="h",
        address="127.0.0.1",
        port=0,
        options={"routing-points": {"5000": "x"}, "TServer": {"router-timeout": "0.3"}},
    )
    net = TcpNetwork()
    port: int = await nursery.start(partial(TServer.from_application(app).serve, net))
    skipped: list[str] = []
    to_route_send, to_route = trio.open_memory_channel[str](1000)

    async def on_push(_conn: Connection, push: Push) -> None:
        if push.topic == "route_request":
            to_route_send.send_nowait(push.data["call_id"])

    async with connected(
        net, "127.0.0.1", port, app="ORS_1", app_type="X", on_push=on_push
    ) as conn:
        router = TServerClient(conn)
        await router.register("ORS_1", 5, [])

        async def route_all_but_first() -> None:
            async for call_id in to_route:
                if not skipped:
                    skipped.append(call_id)
                    continue
                await router.route(call_id, "A", app="ORS_1", node_id=5, epoch=1)

        nursery.start_soon(route_all_but_first)
        result = await bench_tserver(
            net, "127.0.0.1", port, calls=50, rate=500, route=False, timeout=10
        )
    assert (result.calls, result.routed, result.lost) == (50, 49, 1)
