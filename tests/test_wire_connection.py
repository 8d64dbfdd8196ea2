"""The wire connection: request/response, pushes, ADDP, and surviving bad clients."""

from __future__ import annotations

import struct
from collections.abc import Mapping

import pytest
import trio
import trio.testing

from orsim.errors import ConnectionLost, RequestRefused
from orsim.wire import (
    Connection,
    Json,
    MemoryNetwork,
    Network,
    Push,
    Request,
    TcpNetwork,
    connected,
    encode,
    frame_counts,
    serve_app,
)


async def echo_handler(conn: Connection, request: Request) -> object:
    if request.method == "echo":
        return request.params
    if request.method == "fail":
        raise RequestRefused("nope", "asked to fail")
    if request.method == "push_back":
        await conn.push("note", {"n": request.params["n"]})
        return None
    raise RequestRefused("unknown_method", request.method)


async def test_request_response_and_errors_over_tcp(nursery: trio.Nursery) -> None:
    """A TCP client gets answers, typed errors, and pushes from a served app."""
    net = TcpNetwork()
    port = await nursery.start(
        lambda task_status: serve_app(
            net,
            "127.0.0.1",
            0,
            app="S",
            app_type="Test",
            handler=echo_handler,
            task_status=task_status,
        )
    )
    pushes: list[Push] = []

    async def on_push(_conn: Connection, push: Push) -> None:
        pushes.append(push)

    async with connected(net, "127.0.0.1", port, app="C", app_type="Client", on_push=on_push) as c:
        assert c.peer_app == "S"
        assert await c.request("echo", {"a": [1, "x"]}) == {"a": [1, "x"]}
        with pytest.raises(RequestRefused) as info:
            await c.request("fail")
        assert info.value.code == "nope"
        await c.request("push_back", {"n": 7})
        with trio.fail_after(5):
            while not pushes:
                await trio.sleep(0.01)
        assert pushes[0].data == {"n": 7}


def inline_handler(conn: Connection, request: Request) -> object:
    """Answers at once, except ``slow`` (a coroutine: a task of its own answers it)."""
    if request.method == "echo":
        return request.params
    if request.method == "fail":
        raise RequestRefused("nope", "asked to fail")
    if request.method == "bad":
        raise KeyError("x")
    if request.method == "slow":

        async def later() -> object:
            await trio.sleep(1)
            if request.params.get("fail"):
                raise RequestRefused("late", "failed after waiting")
            return "late"

        return later()
    raise RequestRefused("unknown_method", request.method)


@pytest.mark.parametrize("network", ["tcp", "memory"])
async def test_inline_handler_answers_in_the_reader_and_defers_what_waits(
    nursery: trio.Nursery, network: str
) -> None:
    """An inline handler's answers and errors are those of a task's; one that has to wait
    is answered by a task while later requests are answered meanwhile."""
    server: Network
    client: Network
    if network == "tcp":
        server = client = TcpNetwork()
    else:
        memory = MemoryNetwork()
        server, client = memory.for_app("S"), memory.for_app("C")
    port = await nursery.start(
        lambda task_status: serve_app(
            server,
            "127.0.0.1",
            0,
            app="S",
            app_type="Test",
            handler=None,
            inline_handler=inline_handler,
            task_status=task_status,
        )
    )
    async with connected(client, "127.0.0.1", port, app="C", app_type="Client") as c:
        assert await c.request("echo", {"a": [1, "x"]}) == {"a": [1, "x"]}
        with pytest.raises(RequestRefused) as info:
            await c.request("fail")
        assert info.value.code == "nope"
        with pytest.raises(RequestRefused) as info:
            await c.request("bad")
        assert info.value.code == "bad_request"
        order: list[object] = []

        async def ask(method: str, params: Mapping[str, Json]) -> None:
            try:
                order.append(await c.request(method, dict(params)))
            except RequestRefused as exc:
                order.append(exc.code)

        async with trio.open_nursery() as asking:
            asking.start_soon(ask, "slow", {})
            asking.start_soon(ask, "slow", {"fail": True})
            await trio.sleep(0.1)
            asking.start_soon(ask, "echo", {"n": 1})
        assert order[0] == {"n": 1} and sorted(map(str, order[1:])) == ["late", "late"]


async def test_server_survives_garbage_half_frames_and_huge_headers(nursery: trio.Nursery) -> None:
    """Garbage, a half frame then close, and a 2 GiB length header do not stop the server."""
    net = TcpNetwork()
    port = await nursery.start(
        lambda task_status: serve_app(
            net,
            "127.0.0.1",
            0,
            app="S",
            app_type="Test",
            handler=echo_handler,
            task_status=task_status,
        )
    )
    for junk in (b"\x00\x00\x00\x05hello", b"\x00\x00\x01\x00{", struct.pack(">I", 2**31) + b"x"):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(junk)
        await stream.aclose()
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(200)]
    async with connected(net, "127.0.0.1", port, app="C", app_type="Client") as c:
        assert await c.request("echo", {"ok": True}) == {"ok": True}
    for stream in idle:
        await stream.aclose()


async def test_addp_detects_silent_peer_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer that goes silent is declared lost within twice its addp-timeout (a poll
    after T of silence, T more for its answer: see test_wire_addp.py)."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_app(
                net.for_app("S"),
                "h",
                0,
                app="S",
                app_type="Test",
                handler=echo_handler,
                task_status=task_status,
            )
        )
        async with connected(
            net.for_app("C"), "h", port, app="C", app_type="Client", addp_timeout=3
        ) as c:
            await trio.sleep(30)  # virtual: ADDP pings keep an idle live link up
            assert not c.closed.is_set()
            net.hang("S")
            start = trio.current_time()
            await c.closed.wait()
            assert trio.current_time() - start <= 6.0
            with pytest.raises(ConnectionLost):
                await c.request("echo")
        nursery.cancel_scope.cancel()


async def test_frames_are_counted_and_buffered_pushes_leave_in_order(nursery: trio.Nursery) -> None:
    """Every frame is counted on both ends; pushes buffered back to back arrive in order,
    and a push made just before closing is still delivered."""
    net = MemoryNetwork()
    got: list[int] = []
    arrived = trio.Event()

    async def on_push(_conn: Connection, push: Push) -> None:
        got.append(push.data["n"])
        if push.data["n"] == 99:
            arrived.set()

    server_conns: list[Connection] = []

    async def on_connect(conn: Connection) -> None:
        server_conns.append(conn)

    port = await nursery.start(
        lambda task_status: serve_app(
            net.for_app("S"),
            "h",
            0,
            app="S",
            app_type="Test",
            handler=echo_handler,
            on_push=on_push,
            on_connect=on_connect,
            task_status=task_status,
        )
    )
    before = frame_counts()
    async with connected(net.for_app("C"), "h", port, app="C", app_type="Client") as c:
        assert await c.request("echo", {"x": 1}) == {"x": 1}
        for n in range(50):
            assert c.push_nowait("note", {"n": n})
        for n in range(50, 99):
            await c.push("note", {"n": n})
        assert c.send_frame_nowait(encode(Push("note", {"n": 99})))
        with trio.fail_after(5):
            await arrived.wait()
        assert got == list(range(100))
        assert c.frames_sent == 101 and c.frames_received == 1
        assert server_conns[0].frames_received == 101 and server_conns[0].frames_sent == 1
        after = frame_counts()
        assert after["frames_sent"] - before["frames_sent"] == 102
        assert after["frames_received"] - before["frames_received"] == 102
        assert not c.push_nowait("note", {"n": 0}, limit=0)  # a full buffer refuses


async def test_push_before_close_is_flushed(nursery: trio.Nursery) -> None:
    """``aclose`` sends what is still buffered before closing."""
    net = MemoryNetwork()
    got: list[Push] = []
    done = trio.Event()

    async def on_push(_conn: Connection, push: Push) -> None:
        got.append(push)
        done.set()

    port = await nursery.start(
        lambda task_status: serve_app(
            net.for_app("S"), "h", 0, app="S", app_type="Test", handler=echo_handler,
            on_push=on_push, task_status=task_status,
        )
    )  # fmt: skip
    async with connected(net.for_app("C"), "h", port, app="C", app_type="Client") as c:
        await c.request("echo", {})
        c.push_nowait("last", {"n": 1})
    with trio.fail_after(5):
        await done.wait()
    assert got[0].topic == "last"


class _ResetOnSend(trio.abc.Stream):
    """A stream whose peer resets the connection as the first bytes go out."""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        raise trio.BrokenResourceError("socket connection broken: [Errno 104] reset")

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _ResettingNetwork:
    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        return _ResetOnSend()

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        raise AssertionError("the test only connects")


async def test_a_reset_while_the_hello_goes_out_is_a_lost_connection() -> None:
    """The handshake's send fails like its read does: ConnectionLost, which every client's
    reconnect loop takes (found by `make scenarios`: a node's store link reset during its
    Hello ended the node)."""
    from orsim.wire import open_connection

    with pytest.raises(ConnectionLost, match="during handshake"):
        await open_connection(
            _ResettingNetwork(),
            "127.0.0.1",
            1,
            app="ORS_1",
            app_type="OrchestrationServer",
        )
