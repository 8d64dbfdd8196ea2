"""No hostage through the network (ARCHITECTURE.md principle 7): a peer that stops reading
(SIGSTOP, full socket buffers) holds up only its own link, never the sender's service to
anyone else. The sender drops the link, says why and counts it."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import serve_memory_links

from orsim.config import load_database
from orsim.config._model import Application
from orsim.confserv import ConfServClient, serve_confserv
from orsim.errors import ConnectionLost
from orsim.tserver import TServer
from orsim.wire import (
    Connection,
    Json,
    MemoryNetwork,
    Push,
    PushHandler,
    Request,
    RequestHandler,
    RequestRefused,
    TcpNetwork,
    connected,
    frame_counts,
    open_connection,
    serve_app,
)
from orsim.wire._connection import HIGH_WATER
from orsim.wire._transport import NonBlockingStream

NOT_READING = "peer not reading"


def dropped_slow() -> int:
    return frame_counts()["links_dropped_slow"]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """Poll ``check`` until true (the state lives behind a wire); bounded by ``timeout``."""
    with trio.fail_after(timeout):
        for _ in itertools.count():
            if await check():
                return
            await trio.sleep(0.05)


async def start_server(
    nursery: trio.Nursery,
    net: MemoryNetwork,
    app: str,
    handler: RequestHandler | None = None,
    on_push: PushHandler | None = None,
) -> tuple[int, list[Connection]]:
    """Serve ``app`` on ``net``; returns its port and the server side of every link."""
    return await serve_memory_links(nursery, net, app, handler, on_push)


async def push_until_lost(
    conn: Connection, data: dict[str, Json], timeout: float
) -> tuple[int, float]:
    """``push`` until the link is lost; (pushes taken, how long the failing one waited)."""
    taken = 0
    with trio.fail_after(timeout):
        while True:
            started = trio.current_time()
            try:
                await conn.push("note", data)
            except ConnectionLost:
                return taken, trio.current_time() - started
            taken += 1


def push_nowait_until_lost(conn: Connection, data: dict[str, Json], most: int) -> int:
    """``push_nowait`` until the link is lost; the pushes taken."""
    for taken in range(most):
        try:
            assert conn.push_nowait("note", data)
        except ConnectionLost:
            return taken
    raise AssertionError(f"{most} pushes taken, the link still open")


async def echo(_conn: Connection, request: Request) -> Json:
    if request.method == "echo":
        return request.params
    raise RequestRefused("unknown_method", request.method)


# -- the in-memory transport behaves as TCP does ---------------------------------------------


async def test_memory_link_to_a_frozen_app_fills_then_blocks_its_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A frozen receiver reads nothing: its link takes ``buffer_size`` bytes, then the
    sender waits (as on a full socket buffer); on resume everything arrives in order."""
    net = MemoryNetwork(buffer_size=1000)
    listener, port = await net.for_app("R").listen("h", 0)
    sender = await net.for_app("W").connect("h", port)
    receiver = await listener.accept()
    net.freeze("R")
    data = bytes(range(256)) * 10
    assert isinstance(sender, NonBlockingStream)
    assert sender.send_nowait(data[:600]) == 600
    assert sender.send_nowait(data[600:]) == 400  # full: the rest is not taken
    assert sender.send_nowait(data[1000:]) == 0
    with trio.move_on_after(30) as waited:
        await sender.send_all(data[1000:])
    assert waited.cancelled_caught  # blocked for as long as the receiver is frozen
    with trio.move_on_after(30) as held:
        await receiver.receive_some()
    assert held.cancelled_caught  # a frozen app reads nothing
    net.freeze("R", resume=True)
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send_all, data[1000:])
        with trio.fail_after(1):
            while len(got) < len(data):
                got += await receiver.receive_some()
    assert bytes(got) == data
    await sender.aclose()
    with trio.fail_after(1):
        assert await receiver.receive_some() == b""
    await listener.aclose()


# -- the connection's bounds --------------------------------------------------------------


async def test_sender_waiting_on_a_frozen_peer_gets_connection_lost_within_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``push`` waits above the high-water mark; with the peer frozen that wait ends in
    ``ConnectionLost`` within ``stall_timeout``, the reason is given and counted once."""
    net = MemoryNetwork(buffer_size=64 * 1024)
    before = dropped_slow()
    async with trio.open_nursery() as nursery:
        port, server_side = await start_server(nursery, net, "S", echo)
        async with connected(net.for_app("C"), "h", port, app="C", app_type="Client") as c:
            c.stall_timeout = 0.5
            assert await c.request("echo", {"n": 1}) == {"n": 1}
            net.freeze("S")
            blob = "x" * 32_000
            pushed, waited = await push_until_lost(c, {"blob": blob}, timeout=60)
            # It filled the link and the out-buffer up to the high-water mark first ...
            assert pushed * len(blob) > HIGH_WATER
            # ... then waited no longer than the stall bound.
            assert 0 < waited <= c.stall_timeout + 1e-6
            assert c.close_reason.startswith(NOT_READING), c.close_reason
            assert "no progress for 0.5s" in c.close_reason
            assert dropped_slow() - before == 1
            with pytest.raises(ConnectionLost):
                await c.request("echo", {"n": 2})
            # Once it runs again, the frozen side reads what was sent, then sees the close.
            net.freeze("S", resume=True)
            with trio.fail_after(5):
                await server_side[0].closed.wait()
            assert dropped_slow() - before == 1
        nursery.cancel_scope.cancel()


async def test_out_buffer_cap_closes_the_link_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Pushes that never wait still cannot grow the out-buffer past ``max_buffered``: the
    link closes at the cap, without waiting for the stall bound."""
    net = MemoryNetwork(buffer_size=64 * 1024)
    before = dropped_slow()
    async with trio.open_nursery() as nursery:
        port, _ = await start_server(nursery, net, "S", echo)
        async with connected(net.for_app("C"), "h", port, app="C", app_type="Client") as c:
            c.max_buffered = 100_000
            assert await c.request("echo", {}) == {}  # serve() runs
            net.freeze("S")
            started = trio.current_time()
            taken = push_nowait_until_lost(c, {"blob": "y" * 10_000}, most=1000)
            # Pushes on an idle memory link are written at once: six frames of ~10 kB
            # and part of a seventh fill the 64 kB link; then the rest of the seventh
            # and nine more wait in the out-buffer, and the next passes 100,000 bytes.
            assert taken == 16
            assert c.buffered_frames == 0  # the backlog is freed with the link
            assert trio.current_time() == started
            assert c.close_reason.startswith(NOT_READING), c.close_reason
            assert "over 100000" in c.close_reason
            assert dropped_slow() - before == 1
        nursery.cancel_scope.cancel()


async def test_pipelined_requests_whose_answers_are_never_read_keep_memory_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that pipelines 400 requests for big answers and reads none: the server
    builds answers only while they fit under the high-water mark, then drops the link."""
    net = MemoryNetwork(buffer_size=64 * 1024)
    before = dropped_slow()
    answer_size = 100_000
    built = 0

    async def big(_conn: Connection, request: Request) -> Json:
        nonlocal built
        built += 1
        return {"blob": "z" * answer_size}

    async with trio.open_nursery() as nursery:
        port, server_side = await start_server(nursery, net, "S", big)
        # Never served: nothing ever reads this client's side of the link.
        c = await open_connection(net.for_app("C"), "h", port, app="C", app_type="Client")
        for n in range(1, 401):
            await c.send(Request(n, "ledger", {"records": True}))
        with trio.fail_after(30):
            while not server_side or not server_side[0].closed.is_set():
                await trio.sleep(0.1)
        link = server_side[0]
        assert link.close_reason.startswith(NOT_READING), link.close_reason
        # What fits in the link and under the high-water mark, plus one: not 400.
        assert built <= (64 * 1024 + HIGH_WATER) // answer_size + 2, built
        assert dropped_slow() - before == 1
        await c.aclose()
        nursery.cancel_scope.cancel()


async def test_a_loop_pushing_to_each_peer_in_turn_is_not_held_by_a_frozen_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """As a node's heartbeat pushes to each peer in turn: with one peer frozen, the live
    peer still gets every push on time (the idle-link direct write never waits), and the
    frozen peer's link is dropped within the stall bound once its buffers are full."""
    net = MemoryNetwork(buffer_size=64 * 1024)
    before = dropped_slow()
    heard: list[float] = []
    all_heard = trio.Event()

    async def on_push(_conn: Connection, push: Push) -> None:
        heard.append(trio.current_time())
        if push.data["beat"] == 59:
            all_heard.set()

    async with trio.open_nursery() as nursery:
        live_port, _ = await start_server(nursery, net, "Q", echo, on_push)
        frozen_port, _ = await start_server(nursery, net, "P", echo, on_push)
        view = net.for_app("N")
        async with (
            connected(view, "h", frozen_port, app="N", app_type="Node") as to_p,
            connected(view, "h", live_port, app="N", app_type="Node") as to_q,
        ):
            net.freeze("P")
            frozen_at = trio.current_time()
            dropped_at = None
            pad = "p" * 8_000
            for beat in range(60):
                await trio.sleep_until(frozen_at + 0.1 * (beat + 1))
                for conn in (to_p, to_q):
                    try:
                        await conn.push("member", {"beat": beat, "pad": pad})
                    except ConnectionLost:
                        if dropped_at is None:
                            dropped_at = trio.current_time()
            with trio.fail_after(0.01):
                await all_heard.wait()
            assert len(heard) == 60
            gaps = [b - a for a, b in itertools.pairwise(heard)]
            assert max(gaps) < 0.1 + 1e-6, max(gaps)
            assert to_p.close_reason.startswith(NOT_READING), to_p.close_reason
            # 64 kB fill in 8 beats (0.8 s), then at most the 2 s stall bound.
            assert dropped_at is not None and dropped_at - frozen_at <= 0.8 + 2.0 + 0.2
            assert not to_q.closed.is_set()
            assert dropped_slow() - before == 1
        nursery.cancel_scope.cancel()


async def test_tcp_peer_that_stops_reading_is_dropped(nursery: trio.Nursery) -> None:
    """Over TCP (kernel socket buffers, the non-blocking direct write): a server stuck in
    its push handler stops reading; the client's sends end in ``ConnectionLost`` once the
    buffers are full and a write made no progress for ``stall_timeout``."""
    before = dropped_slow()
    stuck = trio.Event()

    async def on_push(_conn: Connection, push: Push) -> None:
        stuck.set()
        await trio.sleep_forever()  # this link's reader never reads again

    net = TcpNetwork()
    port = await nursery.start(
        partial(
            serve_app,
            net,
            "127.0.0.1",
            0,
            app="S",
            app_type="Test",
            handler=echo,
            on_push=on_push,
        )
    )
    async with connected(net, "127.0.0.1", port, app="C", app_type="Client") as c:
        c.stall_timeout = 0.3
        sent, _ = await push_until_lost(c, {"blob": "t" * 200_000}, timeout=60)
        assert stuck.is_set()
        assert sent >= 2
        assert c.close_reason.startswith(NOT_READING), c.close_reason
        assert dropped_slow() - before == 1


# -- the T-Server -------------------------------------------------------------------------


def tserver_app() -> Application:
    return Application(
        name="SIP_Server",
        type="SIPServer",
        host="hostA",
        address="h",
        port=0,
        options={"routing-points": {"5000": "default"}, "TServer": {"router-timeout": "10"}},
    )


async def test_tserver_routes_for_others_while_a_registered_client_is_frozen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two ORS clients registered on one DN, one frozen (SIGSTOP): the other gets every
    route request on time and its route requests are answered at once, throughout; the
    frozen one is dropped within the stall bound, counted, and sees the close later."""
    net = MemoryNetwork(buffer_size=16 * 1024)
    server = TServer.from_application(tserver_app())
    before = dropped_slow()
    heard: list[float] = []
    answer_times: list[float] = []

    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(server.serve, net.for_app("SIP_Server")))
        async with trio.open_nursery() as routing:

            async def route(conn: Connection, call_id: str) -> None:
                started = trio.current_time()
                params = {"call_id": call_id, "target": "Agent_1", "app": "ORS_1"}
                await conn.request("route", {**params, "node_id": 1, "epoch": 1}, timeout=5)
                answer_times.append(trio.current_time() - started)

            async def on_push(conn: Connection, push: Push) -> None:
                if push.topic == "route_request":
                    heard.append(trio.current_time())
                    routing.start_soon(route, conn, str(push.data["call_id"]))

            async with (
                connected(
                    net.for_app("ORS_1"), "h", port, app="ORS_1", app_type="ORS", on_push=on_push
                ) as live,
                connected(net.for_app("ORS_2"), "h", port, app="ORS_2", app_type="ORS") as frozen,
            ):
                for conn, name, node in ((live, "ORS_1", 1), (frozen, "ORS_2", 2)):
                    await conn.request("register", {"app": name, "node_id": node, "dns": []})
                status = await live.request("status")
                assert {c["app"] for c in status["clients"]} == {"ORS_1", "ORS_2"}
                net.freeze("ORS_2")
                frozen_at = trio.current_time()
                await live.request("generate", {"rate": 200, "duration": 10})

                async def generator_done() -> bool:
                    status = await live.request("status")
                    return not status["generator"]["running"]

                await eventually(generator_done, timeout=15)
                ledger = await live.request("ledger")
                status = await live.request("status")

                async def all_routed() -> bool:
                    return bool(len(answer_times) == ledger["created"])

                await eventually(all_routed, timeout=5)
                ledger = await live.request("ledger")

                # The frozen client: dropped as not reading, and counted once.
                assert [c["app"] for c in status["clients"]] == ["ORS_1"]
                assert status["links_dropped_slow"] - before == 1
                assert dropped_slow() - before == 1
                # The live client: every call offered, heard on time and routed at once.
                assert ledger["created"] == 2000
                assert ledger["routed"] == ledger["created"] and ledger["lost"] == 0, ledger
                assert len(heard) == 2000
                assert heard[0] - frozen_at < 0.01
                assert max(b - a for a, b in itertools.pairwise(heard)) < 0.01
                assert max(answer_times) < 0.001, max(answer_times)
                # Once it runs again it reads what it was sent, then finds the link closed.
                net.freeze("ORS_2", resume=True)
                with trio.fail_after(5):
                    await frozen.closed.wait()
            routing.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


async def test_tserver_drops_a_frozen_client_within_the_stall_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The T-Server's link to a frozen client closes with "peer not reading" no later
    than the stall bound after its buffers fill, while the generator runs."""
    net = MemoryNetwork(buffer_size=16 * 1024)
    server = TServer.from_application(tserver_app())
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(partial(server.serve, net.for_app("SIP_Server")))
        async with connected(net.for_app("ORS_2"), "h", port, app="ORS_2", app_type="ORS") as c:
            await c.request("register", {"app": "ORS_2", "node_id": 2, "dns": []})
            (link,) = (conn for conn in server._clients if conn.peer_app == "ORS_2")
            net.freeze("ORS_2")
            frozen_at = trio.current_time()
            async with connected(
                net.for_app("Driver"), "h", port, app="Driver", app_type="Driver"
            ) as driver:
                await driver.request("generate", {"rate": 200, "duration": 10})
                with trio.fail_after(10):
                    await link.closed.wait()
            # 16 kB of ~170-byte route requests at 200/s fill in well under a second.
            assert trio.current_time() - frozen_at <= 1.0 + link.stall_timeout
            assert link.close_reason.startswith(NOT_READING), link.close_reason
        nursery.cancel_scope.cancel()


# -- the Configuration Server ----------------------------------------------------------

DEMO = Path(__file__).resolve().parent.parent / "scenarios" / "topologies" / "demo.yaml"


async def test_confserv_changes_go_on_while_a_reader_is_frozen(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Change pushes never wait on a reader: with one reader of the object frozen, every
    change is acknowledged at once and the live reader hears each; the frozen reader's
    link is dropped as not reading (and counted) once its buffers are full."""
    net = MemoryNetwork(buffer_size=16 * 1024)
    before = dropped_slow()
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            partial(serve_confserv, net.for_app("confserv"), load_database(DEMO), "h", 0, None)
        )

        async def client(app: str) -> ConfServClient:
            return await ConfServClient.connect(
                net.for_app(app), [("h", port)], app=app, app_type="OrchestrationServer"
            )

        async with (
            await client("ORS_2") as frozen,
            await client("ORS_1") as live,
            await client("tool") as writer,
        ):
            await frozen.get_application("ORS_1")
            await live.get_application("ORS_1")
            net.freeze("ORS_2")
            for n in range(60):
                started = trio.current_time()
                await writer.set_option("ORS_1", "orchestration", f"k{n}", "v" * 500)
                assert trio.current_time() - started < 0.001
                with trio.fail_after(0.01):
                    change = await live.changes.receive()
                assert change.key == f"k{n}"

            async def reader_dropped() -> bool:
                return bool((await writer.status())["clients"] == 2)

            await eventually(reader_dropped, timeout=10)
            status = await writer.status()
            assert status["links_dropped_slow"] - before == 1
        nursery.cancel_scope.cancel()
