"""The wire connection: request/response, pushes, ADDP, and surviving bad clients."""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from orsim.errors import ConnectionLost, RemoteError
from orsim.wire import (
    Connection,
    MemoryNetwork,
    Push,
    Request,
    RequestFailed,
    TcpNetwork,
    connected,
    serve_app,
)


async def echo_handler(conn: Connection, request: Request) -> object:
    if request.method == "echo":
        return request.params
    if request.method == "fail":
        raise RequestFailed("nope", "asked to fail")
    if request.method == "push_back":
        await conn.push("note", {"n": request.params["n"]})
        return None
    raise RequestFailed("unknown_method", request.method)


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
        with pytest.raises(RemoteError) as info:
            await c.request("fail")
        assert info.value.code == "nope"
        await c.request("push_back", {"n": 7})
        with trio.fail_after(5):
            while not pushes:
                await trio.sleep(0.01)
        assert pushes[0].data == {"n": 7}


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
    """A peer that goes silent is declared lost within its addp-timeout."""
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
            assert trio.current_time() - start <= 3.0
            with pytest.raises(ConnectionLost):
                await c.request("echo")
        nursery.cancel_scope.cancel()
