"""The URS over the wire: registration, target selection, think time, status, bad input."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing

from orsim.config._model import Application
from orsim.errors import ConfigError, RequestRefused
from orsim.urs import UrsClient, UrsServer
from orsim.wire import MemoryNetwork, TcpNetwork, connected

HOST = "127.0.0.1"


def urs_app(**urs: str) -> Application:
    return Application(
        name="URS",
        type="RoutingServer",
        host="hostA",
        address=HOST,
        port=0,
        options={"urs": dict(urs)} if urs else {},
    )


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until true: the state lives in another task or process, so there is
    no event to wait on; the timeout bounds the wait."""
    with trio.fail_after(timeout):
        for _ in itertools.count():
            if await check():
                return
            await trio.sleep(0.02)


async def test_select_round_robin_and_status(nursery: trio.Nursery) -> None:
    """Registered nodes get targets in turn; status lists clients and counts requests."""
    net = TcpNetwork()
    port: int = await nursery.start(
        partial(UrsServer.from_application(urs_app(targets="A,B,C")).serve, net)
    )
    async with (
        connected(net, HOST, port, app="ORS_1", app_type="OrchestrationServer") as c1,
        connected(net, HOST, port, app="ORS_2", app_type="OrchestrationServer") as c2,
    ):
        one, two = UrsClient(c1), UrsClient(c2)
        await one.register("ORS_1", 101)
        await two.register("ORS_2", 202)
        chosen = [await (one if i % 2 else two).select_target(f"c{i}", "5000") for i in range(6)]
        assert chosen == ["A", "B", "C", "A", "B", "C"]
        await one.release_target("A")
        status = await one.status()
        assert status["type"] == "RoutingServer"
        assert status["mode"] == "primary"
        assert status["requests"] == 6
        assert isinstance(status["frames_sent"], int) and status["frames_received"] > 0
        assert status["busy"] == {"A": 1, "B": 2, "C": 2}
        assert sorted(c["app"] for c in status["clients"]) == ["ORS_1", "ORS_2"]
        assert isinstance(status["pid"], int)
    async with connected(net, HOST, port, app="Probe", app_type="X") as probe:
        # Disconnect handling runs after the links close.
        await eventually(lambda: _no_clients(UrsClient(probe)))


async def _no_clients(urs: UrsClient) -> bool:
    return not (await urs.status())["clients"]


async def test_least_busy_and_think_time(autojump_clock: trio.testing.MockClock) -> None:
    """least-busy follows releases; each answer waits think-time-ms."""
    net = MemoryNetwork()
    app = urs_app(targets="A,B", strategy="least-busy", **{"think-time-ms": "250"})
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            partial(UrsServer.from_application(app).serve, net.for_app("URS"))
        )
        async with connected(net.for_app("ORS_1"), HOST, port, app="ORS_1", app_type="X") as c:
            urs = UrsClient(c)
            start = trio.current_time()
            assert await urs.select_target("c1", "5000") == "A"
            assert trio.current_time() - start == pytest.approx(0.25)
            assert await urs.select_target("c2", "5000") == "B"
            await urs.release_target("A")
            assert await urs.select_target("c3", "5000") == "A"
            await urs.release_target("B")
            assert await urs.select_target("c4", "5000") == "B"
        nursery.cancel_scope.cancel()


async def test_bad_requests_answered(nursery: trio.Nursery) -> None:
    """Bad parameters and unknown methods get errors; the URS keeps serving."""
    net = TcpNetwork()
    port: int = await nursery.start(partial(UrsServer.from_application(urs_app()).serve, net))
    async with (
        connected(net, HOST, port, app="Rogue", app_type="X") as rogue,
        connected(net, HOST, port, app="ORS_1", app_type="X") as good,
    ):
        bad: list[tuple[str, dict[str, object], str]] = [
            ("select_target", {"call_id": 3}, "bad_request"),
            ("release_target", {}, "bad_request"),
            ("register", {"node_id": "x"}, "bad_request"),
            ("reboot", {}, "unknown_method"),
        ]
        for method, params, code in bad:
            with pytest.raises(RequestRefused) as info:
                await rogue.request(method, params, timeout=5)
            assert info.value.code == code
            assert await UrsClient(good).select_target("c", "5000") in {
                "Agent_1",
                "Agent_2",
                "Agent_3",
                "Agent_4",
            }
        await rogue.stream.send_all(b"\x00\x00\x00\x02{]")
        with trio.fail_after(5):
            await rogue.closed.wait()
        assert (await UrsClient(good).status())["requests"] == 4


def test_options_validated_and_live_change() -> None:
    """Bad URS options are configuration errors at start, ignored when changed live."""
    for bad in (
        {"strategy": "random"},
        {"think-time-ms": "-5"},
        {"think-time-ms": "x"},
        {"targets": "A,A"},
    ):
        with pytest.raises(ConfigError, match="urs/"):
            UrsServer.from_application(urs_app(**bad))
    server = UrsServer.from_application(urs_app(targets="A,B"))
    server.selector.choose()
    server.apply_options({"urs": {"strategy": "bogus"}})
    assert server.options.strategy == "round-robin"
    server.apply_options({"urs": {"targets": "B,C", "strategy": "least-busy"}})
    assert server.options.targets == ("B", "C")
    assert server.selector.strategy == "least-busy"
    assert server.selector.choose() == "B"
