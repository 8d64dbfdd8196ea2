"""The T-Server over the wire: registration, fan-out, route answers, generator, bad input."""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from orsim.config._model import Application
from orsim.errors import RequestRefused
from orsim.tserver import CallRouted, RouteRequest, TServer, TServerClient
from orsim.tserver import _server as server_module
from orsim.wire import Connection, MemoryNetwork, Network, Push, TcpNetwork, connected

HOST = "127.0.0.1"


def tserver_app(timeout: float = 10.0, points: tuple[str, ...] = ("5000", "5001")) -> Application:
    return Application(
        name="SIP_Server",
        type="SIPServer",
        host="hostA",
        address=HOST,
        port=0,
        options={
            "routing-points": {dn: "default" for dn in points},
            "TServer": {"router-timeout": str(timeout)},
        },
    )


@attrs.define(eq=False)
class Peer:
    """A test client: its typed wrapper and the pushes it received."""

    client: TServerClient
    pushes: trio.MemoryReceiveChannel[Push]

    @property
    def conn(self) -> Connection:
        return self.client.conn

    async def next_push(self, topic: str, timeout: float = 5.0) -> Push:
        with trio.fail_after(timeout):
            while True:
                push = await self.pushes.receive()
                if push.topic == topic:
                    return push


@asynccontextmanager
async def peer(network: Network, port: int, app: str) -> AsyncIterator[Peer]:
    send, receive = trio.open_memory_channel[Push](math.inf)

    async def on_push(_conn: Connection, push: Push) -> None:
        send.send_nowait(push)

    async with connected(
        network, HOST, port, app=app, app_type="OrchestrationServer", on_push=on_push
    ) as conn:
        yield Peer(TServerClient(conn), receive)


def _drain(pushes: trio.MemoryReceiveChannel[Push]) -> list[Push]:
    """The pushes received so far (without waiting)."""
    got: list[Push] = []
    while True:
        try:
            got.append(pushes.receive_nowait())
        except trio.WouldBlock:
            return got


async def start(nursery: trio.Nursery, network: Network, app: Application) -> int:
    port: int = await nursery.start(partial(TServer.from_application(app).serve, network))
    return port


async def test_route_request_fans_out_and_route_answers(nursery: trio.Nursery) -> None:
    """Both registered clients get each route request; route (heard by the others, not
    echoed to the router), identical resend, duplicate, stale, unknown."""
    net = TcpNetwork()
    port = await start(nursery, net, tserver_app())
    async with (
        peer(net, port, "ORS_1") as a,
        peer(net, port, "ORS_1_B") as b,
        peer(net, port, "Other") as other,
    ):
        assert await a.client.register("ORS_1", 101, ["5000"]) == ["5000"]
        assert await b.client.register("ORS_1_B", 101, []) == ["5000", "5001"]
        await other.client.register("Other", 202, ["5001"])
        call_id = await a.client.make_call("5000")
        for p in (a, b):
            request = RouteRequest.from_push(await p.next_push("route_request"))
            assert request.call_id == call_id
            assert request.dn == "5000"
            assert request.created_at is not None
            assert request.deadline == pytest.approx(request.created_at + 10.0)

        latency = await a.client.route(call_id, "Agent_1", app="ORS_1", node_id=101, epoch=1)
        assert latency >= 0
        routed = CallRouted.from_push(await b.next_push("call_routed"))
        assert routed == CallRouted(call_id, "ORS_1", 101, 1, "Agent_1")
        # The router resends after a lost answer: the same success, and no news again.
        again = await a.client.route(call_id, "Agent_1", app="ORS_1", node_id=101, epoch=1)
        assert again == latency

        with pytest.raises(RequestRefused) as info:
            await b.client.route(call_id, "Agent_2", app="ORS_1_B", node_id=101, epoch=1)
        assert info.value.code == "duplicate"

        assert await b.client.fence(101, 2) == 2
        second = await a.client.make_call("5000")
        with pytest.raises(RequestRefused) as info:
            await a.client.route(second, "Agent_1", app="ORS_1", node_id=101, epoch=1)
        assert info.value.code == "stale_epoch"
        await b.client.route(second, "Agent_3", app="ORS_1_B", node_id=101, epoch=2)

        with pytest.raises(RequestRefused) as info:
            await a.client.route("no-such-call", "Agent_1", app="ORS_1", node_id=101, epoch=2)
        assert info.value.code == "unknown_call"

        ledger = await other.client.ledger(records=True)
        keys = ("created", "routed", "duplicates", "resent", "stale", "lost")
        assert {k: getattr(ledger.counts, k) for k in keys} == {
            "created": 2,
            "routed": 2,
            "duplicates": 1,
            "resent": 1,
            "stale": 1,
            "lost": 0,
        }
        # Each heard of the call the other routed, once; neither of its own.
        assert (await a.next_push("call_routed")).data["call_id"] == second
        await b.client.status()  # a round trip: any stray push to b would be in by now
        for p in (a, b):
            assert [x for x in _drain(p.pushes) if x.topic == "call_routed"] == []
        assert ledger.counts.by_app == {"ORS_1": 1, "ORS_1_B": 1}
        assert ledger.counts.by_node == {101: 2}
        assert ledger.counts.latency_p50_ms is not None
        records = {r.call_id: r for r in (ledger.records or ())}
        assert records[second].epoch == 2
        assert records[second].app == "ORS_1_B"
        assert records[second].state == "routed"

        status = await other.client.status()
        assert status["mode"] == "primary"
        assert status["type"] == "SIPServer"
        assert status["calls"]["routed"] == 2
        assert status["frames_sent"] > 0 and status["frames_received"] > 0
        assert sorted(c["app"] for c in status["clients"]) == ["ORS_1", "ORS_1_B", "Other"]
        # "Other" registered on 5001 only: it heard none of these.
        assert other.pushes.statistics().current_buffer_used == 0


async def test_unrouted_call_is_lost_at_its_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A call nobody routes is lost after router-timeout; a late route answers `lost`."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, net.for_app("SIP_Server"), tserver_app(timeout=2.0))
        async with peer(net.for_app("ORS_1"), port, "ORS_1") as a:
            await a.client.register("ORS_1", 1, ["5000"])
            call_id = await a.client.make_call()
            created = trio.current_time()
            await trio.sleep(1.9)
            assert (await a.client.ledger()).counts.in_flight == 1
            await trio.sleep(0.2)
            assert (await a.client.ledger()).counts.lost == 1
            with pytest.raises(RequestRefused) as info:
                await a.client.route(call_id, "Agent_1", app="ORS_1", node_id=1, epoch=0)
            assert info.value.code == "lost"
            ledger = await a.client.ledger(records=True)
            record = (ledger.records or ())[0]
            assert record.state == "lost"
            assert record.deadline - record.created_at == pytest.approx(2.0)
            assert trio.current_time() - created < 2.5
        nursery.cancel_scope.cancel()


async def test_generator_paces_calls(autojump_clock: trio.testing.MockClock) -> None:
    """`generate` makes rate × duration calls spread over the routing points, then stops."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        port = await start(nursery, net.for_app("SIP_Server"), tserver_app())
        async with peer(net.for_app("ORS_1"), port, "ORS_1") as a:
            await a.client.register("ORS_1", 1, [])
            started = trio.current_time()
            await a.client.generate(rate=50, duration=2.0)
            seen: list[tuple[float, str]] = []
            while len(seen) < 100:
                push = await a.next_push("route_request")
                seen.append((trio.current_time() - started, push.data["dn"]))
            # Pacing: call n at n/rate seconds.
            for n, (at, _dn) in enumerate(seen):
                assert at == pytest.approx(n / 50, abs=0.005)
            assert {dn for _, dn in seen} == {"5000", "5001"}
            await trio.sleep(1.0)
            status = await a.client.status()
            assert status["calls"]["created"] == 100
            assert status["generator"]["running"] is False
            # Until stopped; a new generator replaces the old one.
            await a.client.generate(rate=10, dn="5001")
            await trio.sleep(1.0)
            assert await a.client.stop_generator() is True
            assert await a.client.stop_generator() is False
            created = (await a.client.ledger()).counts.created
            assert 109 <= created <= 111
            await trio.sleep(1.0)
            assert (await a.client.ledger()).counts.created == created
        nursery.cancel_scope.cancel()


async def test_generator_rate_over_tcp(nursery: trio.Nursery) -> None:
    """Over real TCP and the real clock, a generator makes about rate calls per second."""
    net = TcpNetwork()
    port = await start(nursery, net, tserver_app())
    async with peer(net, port, "ORS_1") as a:
        await a.client.register("ORS_1", 1, [])
        await a.client.generate(rate=200, duration=0.5)
        for _ in range(100):
            await a.next_push("route_request")
        assert (await a.client.status())["calls"]["created"] == 100


async def test_ledger_records_are_paged(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client fetches every record even when the server pages them."""
    monkeypatch.setattr(server_module, "MAX_RECORDS_PAGE", 7)
    net = TcpNetwork()
    port = await start(nursery, net, tserver_app())
    async with peer(net, port, "ORS_1") as a:
        ids = [await a.client.make_call() for _ in range(20)]
        ledger = await a.client.ledger(records=True)
        assert [r.call_id for r in (ledger.records or ())] == ids
        assert len(set(ids)) == 20
        assert ledger.counts.created == 20
        with pytest.raises(RequestRefused) as info:
            await a.conn.request("ledger", {"records": True, "limit": 8})
        assert info.value.code == "bad_request"


async def test_bad_client_does_not_disturb_others(nursery: trio.Nursery) -> None:
    """Garbage frames and bad commands get errors; a well-behaved client keeps being served."""
    net = TcpNetwork()
    port = await start(nursery, net, tserver_app())
    async with peer(net, port, "ORS_1") as good, peer(net, port, "Rogue") as rogue:
        await good.client.register("ORS_1", 1, ["5000"])
        bad_requests: list[tuple[str, dict[str, object], str]] = [
            (
                "route",
                {"call_id": "ghost", "target": "x", "node_id": 1, "epoch": 0},
                "unknown_call",
            ),
            ("route", {"call_id": 5, "node_id": 1, "epoch": 0}, "bad_request"),
            ("route", {"call_id": "x", "node_id": "one", "epoch": 0}, "bad_request"),
            ("route", {"call_id": "x", "node_id": 1, "epoch": True}, "bad_request"),
            ("route", {}, "bad_request"),
            ("register", {"dns": "5000"}, "bad_request"),
            ("register", {"dns": ["9999"]}, "unknown_dn"),
            ("make_call", {"dn": "9999"}, "unknown_dn"),
            ("generate", {"rate": -1}, "bad_request"),
            ("generate", {"rate": 1e12}, "bad_request"),
            ("generate", {"rate": 5, "duration": -3}, "bad_request"),
            ("fence", {"node_id": [1], "epoch": 2}, "bad_request"),
            ("ledger", {"records": "yes"}, "bad_request"),
            ("ledger", {"records": True, "offset": -1}, "bad_request"),
            ("nonsense", {}, "unknown_method"),
            ("__init__", {}, "unknown_method"),
        ]
        for method, params, code in bad_requests:
            with pytest.raises(RequestRefused) as info:
                await rogue.conn.request(method, params, timeout=5)
            assert info.value.code == code, (method, params)
            # Meanwhile the good client is served as usual.
            call_id = await good.client.make_call("5000")
            assert (await good.next_push("route_request")).data["call_id"] == call_id
            await good.client.route(call_id, "Agent_1", app="ORS_1", node_id=1, epoch=0)
            with pytest.raises(RequestRefused) as info:
                await rogue.client.route(call_id, "Agent_9", app="Rogue", node_id=1, epoch=0)
            assert info.value.code == "duplicate"

        # Raw garbage: not JSON, a truncated frame, a huge length header, a bad first frame.
        for junk in (
            b"\x00\x00\x00\x05hello",
            b"\x00\x00\x01\x00{",
            struct.pack(">I", 2**31) + b"x",
            b'\x00\x00\x00\x0d{"t":"bogus"}',
        ):
            stream = await trio.open_tcp_stream(HOST, port)
            await stream.send_all(junk)
            await stream.aclose()
        # Garbage after a good handshake: the server answers an error and drops that link.
        async with connected(net, HOST, port, app="Rogue2", app_type="X") as rogue2:
            await rogue2.stream.send_all(b"\x00\x00\x00\x03abc")
            with trio.fail_after(5):
                await rogue2.closed.wait()

        ledger = await good.client.ledger()
        assert ledger.counts.routed == len(bad_requests)
        assert ledger.counts.duplicates == len(bad_requests)
        assert ledger.counts.unknown == 1
        status = await good.client.status()
        assert [c["app"] for c in status["clients"]] == ["ORS_1"]


@attrs.define(eq=False)
class _StallingStream(trio.abc.Stream):
    """A server-side stream whose sends block forever once its peer is marked stalled."""

    inner: trio.abc.Stream
    peer: str
    stalled: set[str]

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.peer in self.stalled:
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define(eq=False)
class _StallingListener(trio.abc.Listener[trio.abc.Stream]):
    inner: trio.abc.Listener[trio.abc.Stream]
    stalled: set[str]

    async def accept(self) -> trio.abc.Stream:
        stream = await self.inner.accept()
        return _StallingStream(stream, getattr(stream, "remote", "?"), self.stalled)

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define(eq=False)
class _StallingNetwork:
    """The server's view of a MemoryNetwork, able to stall its sends to one peer (a full
    socket buffer towards a SIGSTOPped process)."""

    inner: Network
    stalled: set[str] = attrs.Factory(set)

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await self.inner.connect(host, port)

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        listener, bound = await self.inner.listen(host, port)
        return _StallingListener(listener, self.stalled), bound


async def test_client_that_stops_reading_does_not_stall_the_server(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushes to a client that stops reading are dropped past its outbox; others get theirs."""
    monkeypatch.setattr(server_module, "OUTBOX_SIZE", 4)
    net = MemoryNetwork()
    server_net = _StallingNetwork(net.for_app("SIP_Server"))
    async with trio.open_nursery() as nursery:
        port = await start(nursery, server_net, tserver_app())
        async with (
            peer(net.for_app("ORS_1"), port, "ORS_1") as good,
            peer(net.for_app("ORS_2"), port, "ORS_2") as stuck,
        ):
            await good.client.register("ORS_1", 1, ["5000"])
            await stuck.client.register("ORS_2", 2, ["5000"])
            server_net.stalled.add("ORS_2")
            for _ in range(50):
                call_id = await good.client.make_call("5000")
                assert (await good.next_push("route_request")).data["call_id"] == call_id
            status = await good.client.status()
            dropped = {c["app"]: c["dropped"] for c in status["clients"]}
            # One push is stuck in send_all, four wait in the outbox, the rest are dropped.
            assert dropped == {"ORS_1": 0, "ORS_2": 50 - 1 - 4}
        nursery.cancel_scope.cancel()


def test_bad_router_timeout_is_a_config_error() -> None:
    """An invalid TServer/router-timeout is refused at start."""
    from orsim.errors import ConfigError
    from orsim.tserver import TServer

    for bad in ("0", "-1", "soon", "inf"):
        app = attrs.evolve(tserver_app(), options={"TServer": {"router-timeout": bad}})
        with pytest.raises(ConfigError, match="router-timeout"):
            TServer.from_application(app)


async def test_live_option_change(autojump_clock: trio.testing.MockClock) -> None:
    """A new router-timeout applies to the next call; bad values are ignored."""
    from orsim.tserver import TServer

    server = TServer.from_application(tserver_app(timeout=10))
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(server.serve, net.for_app("SIP_Server")))
        async with peer(net.for_app("ORS_1"), port, "ORS_1") as a:
            first = await a.conn.request("make_call", {})
            server.apply_options(
                {"routing-points": {"6000": "x"}, "TServer": {"router-timeout": "1"}}
            )
            server.apply_options(
                {"routing-points": {"6000": "x"}, "TServer": {"router-timeout": "x"}}
            )
            assert server.router_timeout == 1.0
            second = await a.conn.request("make_call", {})
            assert second["dn"] == "6000"
            assert second["deadline"] - second["created_at"] == pytest.approx(1.0)
            # The shorter deadline of the second call is honoured before the first one's.
            await trio.sleep(1.5)
            ledger = await a.client.ledger(records=True)
            states = {r.call_id: r.state for r in (ledger.records or ())}
            assert states == {first["call_id"]: "in_flight", second["call_id"]: "lost"}
        nursery.cancel_scope.cancel()


async def test_a_client_that_registers_hears_the_calls_already_waiting(
    nursery: trio.Nursery,
) -> None:
    """A router that (re)connects while calls wait on its routing points is told about
    them (found by `orsim search`: a primary whose T-Server link was dropped while frozen
    never heard of a call, and nobody routed it); routed calls and other DNs are not."""
    net = MemoryNetwork()
    port = await start(nursery, net.for_app("SIP_Server"), tserver_app())
    async with peer(net.for_app("ORS_1"), port, "ORS_1") as a:
        await a.client.register("ORS_1", 101, ["5000", "5001"])
        waiting = await a.client.make_call("5000")
        routed = await a.client.make_call("5000")
        elsewhere = await a.client.make_call("5001")
        await a.client.route(routed, "Agent_1", app="ORS_1", node_id=101, epoch=1)
        async with peer(net.for_app("ORS_1_B"), port, "ORS_1_B") as b:
            await b.client.register("ORS_1_B", 101, ["5000"])
            told = RouteRequest.from_push(await b.next_push("route_request"))
            assert (told.call_id, told.dn) == (waiting, "5000")
            assert told.created_at is not None
            assert told.deadline == pytest.approx(told.created_at + 10.0)
            await trio.testing.wait_all_tasks_blocked()
            later = [p.data.get("call_id") for p in _drain(b.pushes)]
            assert routed not in later and elsewhere not in later
