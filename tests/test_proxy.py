"""The fault proxy: forwarding, Hello peek, partition silence, heal, delay, control port."""

from __future__ import annotations

from functools import partial

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from orsim.cluster import FaultProxy, FaultTable, Route
from orsim.cluster._proxy import PROXY_CONTROL_CLIENT
from orsim.errors import ConnectionLost, RequestRefused
from orsim.wire import (
    Connection,
    Request,
    TcpNetwork,
    connected,
    open_connection,
    serve_app,
)

HOST = "127.0.0.1"
NAMES = st.sampled_from(["A", "B", "C", "D"])


async def echo(_conn: Connection, request: Request) -> object:
    if request.method == "echo":
        return request.params
    raise RequestRefused("unknown_method", request.method)


async def start_echo(nursery: trio.Nursery, app: str = "S") -> int:
    port: int = await nursery.start(
        partial(serve_app, TcpNetwork(), HOST, 0, app=app, app_type="Test", handler=echo)
    )
    return port


async def start_proxy(nursery: trio.Nursery, target: int, app: str = "S") -> tuple[FaultProxy, int]:
    proxy = FaultProxy(TcpNetwork())
    port: int = await nursery.start(proxy.serve_route, Route(app, HOST, 0, HOST, target))
    return proxy, port


# -- the pure fault table -------------------------------------------------------------


@given(NAMES, NAMES)
def test_faults_are_symmetric(a: str, b: str) -> None:
    """A partition or delay of A and B applies to B and A alike, and heal clears both."""
    table = FaultTable()
    table.partition(a, b)
    table.delay(a, b, 50)
    assert table.is_cut(b, a)
    assert table.delay_ms(b, a) == 50
    table.heal(b, a)
    assert not table.is_cut(a, b)
    assert table.delay_ms(a, b) == 0


def test_faults_touch_only_their_pair() -> None:
    """Cutting A-B leaves A-C alone; a zero delay removes the delay; negative is refused."""
    table = FaultTable()
    table.partition("A", "B")
    table.delay("A", "C", 10)
    assert not table.is_cut("A", "C")
    table.delay("A", "C", 0)
    assert table.snapshot() == {"partitions": [{"a": "A", "b": "B"}], "delays": []}
    with pytest.raises(ValueError):
        table.delay("A", "B", -1)


# -- forwarding over loopback -----------------------------------------------------------


async def test_forwards_and_learns_the_client_from_its_hello(nursery: trio.Nursery) -> None:
    """Requests pass through both ways, and the link is known as C->S by the Hello."""
    target = await start_echo(nursery)
    proxy, port = await start_proxy(nursery, target)
    net = TcpNetwork()
    async with connected(net, HOST, port, app="C", app_type="Client") as conn:
        assert conn.peer_app == "S"
        big = {"blob": "x" * 300_000}
        assert await conn.request("echo", big, timeout=5) == big
        links = proxy.status()["links"]
        assert links == [{"client": "C", "server": "S", "severed": False}]


async def test_partition_silences_links_without_closing_them(nursery: trio.Nursery) -> None:
    """A partitioned link stays open but carries nothing; a new link is black-holed."""
    target = await start_echo(nursery)
    proxy, port = await start_proxy(nursery, target)
    net = TcpNetwork()
    async with connected(net, HOST, port, app="C", app_type="Client") as conn:
        assert await conn.request("echo", {"n": 1}, timeout=5) == {"n": 1}
        assert proxy.partition("S", "C") == 1
        with pytest.raises(trio.TooSlowError):
            await conn.request("echo", {"n": 2}, timeout=0.3)
        assert not conn.closed.is_set()
        with pytest.raises(trio.TooSlowError):
            await open_connection(net, HOST, port, app="C", app_type="Client", timeout=0.3)
        # Another client is not affected.
        async with connected(net, HOST, port, app="D", app_type="Client") as other:
            assert await other.request("echo", {"n": 3}, timeout=5) == {"n": 3}


async def test_heal_closes_dead_links_and_forwards_new_ones(nursery: trio.Nursery) -> None:
    """After heal the silenced link is closed (its peer notices) and new links work."""
    target = await start_echo(nursery)
    proxy, port = await start_proxy(nursery, target)
    net = TcpNetwork()
    async with connected(net, HOST, port, app="C", app_type="Client") as conn:
        proxy.partition("C", "S")
        assert proxy.heal("C", "S") == 1
        with trio.fail_after(5):
            await conn.closed.wait()
    async with connected(net, HOST, port, app="C", app_type="Client") as conn:
        assert await conn.request("echo", {"n": 4}, timeout=5) == {"n": 4}
    assert proxy.status()["partitions"] == []


async def test_delay_holds_each_chunk(nursery: trio.Nursery) -> None:
    """With a 150 ms delay a round trip takes at least 300 ms, and in order."""
    target = await start_echo(nursery)
    proxy, port = await start_proxy(nursery, target)
    net = TcpNetwork()
    async with connected(net, HOST, port, app="C", app_type="Client") as conn:
        proxy.delay("C", "S", 150)
        started = trio.current_time()
        answers = []
        async with trio.open_nursery() as inner:

            async def ask(n: int) -> None:
                answers.append(await conn.request("echo", {"n": n}, timeout=5))

            for n in range(5):
                inner.start_soon(ask, n)
        took = trio.current_time() - started
        assert took >= 0.3
        assert sorted(a["n"] for a in answers) == list(range(5))
        proxy.delay("C", "S", 0)
        started = trio.current_time()
        await conn.request("echo", {}, timeout=5)
        assert trio.current_time() - started < 0.3


async def test_unknown_first_frame_is_forwarded_as_unknown(nursery: trio.Nursery) -> None:
    """Garbage is forwarded under the name '?', and the server behind rejects it."""
    target = await start_echo(nursery)
    _proxy, port = await start_proxy(nursery, target)
    stream = await trio.open_tcp_stream(HOST, port)
    await stream.send_all(b"\x00\x00\x00\x05hello")
    with trio.fail_after(5):
        while True:
            if not await stream.receive_some(65536):
                break
    await stream.aclose()
    # The proxy is still serving.
    async with connected(TcpNetwork(), HOST, port, app="C", app_type="Client") as conn:
        assert await conn.request("echo", {"ok": 1}, timeout=5) == {"ok": 1}


async def test_client_of_a_down_app_is_closed_at_once(nursery: trio.Nursery) -> None:
    """When nothing listens behind the route, the client's connection is closed."""
    with trio.socket.socket() as sock:
        await sock.bind((HOST, 0))
        dead_port = sock.getsockname()[1]
    _proxy, port = await start_proxy(nursery, dead_port)
    with trio.fail_after(5), pytest.raises(ConnectionLost):
        await open_connection(TcpNetwork(), HOST, port, app="C", app_type="Client")


async def test_control_port_requests(nursery: trio.Nursery) -> None:
    """partition/heal/delay/status over the wire; bad parameters are refused."""
    target = await start_echo(nursery)
    proxy, _port = await start_proxy(nursery, target)
    control: int = await nursery.start(proxy.serve_control, HOST, 0)
    async with connected(TcpNetwork(), HOST, control, app="orsim-cluster", app_type="X") as c:
        assert await c.request("partition", {"a": "A", "b": "B"}) == {"links": 0}
        await c.request("delay", {"a": "A", "b": "C", "ms": 20})
        status = await c.request("status")
        assert status["partitions"] == [{"a": "A", "b": "B"}]
        assert status["delays"] == [{"a": "A", "b": "C", "ms": 20.0}]
        assert status["routes"][0]["app"] == "S"
        assert await c.request("heal", {"a": "B", "b": "A"}) == {"closed": 0}
        for method, params in (
            ("partition", {"a": "A"}),
            ("delay", {"a": "A", "b": "B"}),
            ("nope", {"a": "A", "b": "B"}),
        ):
            with pytest.raises(RequestRefused):
                await c.request(method, params)


class _PlainNetwork:
    """TCP whose streams are not ``trio.SocketStream``: the proxy pumps them in trio."""

    def __init__(self) -> None:
        self.tcp = TcpNetwork()

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return trio.StapledStream(*_halves(await self.tcp.connect(host, port)))

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        return await self.tcp.listen(host, port)


def _halves(stream: trio.abc.Stream) -> tuple[trio.abc.SendStream, trio.abc.ReceiveStream]:
    return stream, stream


async def test_non_socket_streams_are_pumped_in_trio(nursery: trio.Nursery) -> None:
    """Streams other than TCP sockets take the trio pumps: forwarding and delay alike."""
    target = await start_echo(nursery)
    proxy = FaultProxy(_PlainNetwork())
    port: int = await nursery.start(proxy.serve_route, Route("S", HOST, 0, HOST, target))
    async with connected(TcpNetwork(), HOST, port, app="C", app_type="Client") as conn:
        big = {"blob": "y" * 300_000}
        assert await conn.request("echo", big, timeout=5) == big
        proxy.delay("C", "S", 100)
        started = trio.current_time()
        assert await conn.request("echo", {"n": 1}, timeout=5) == {"n": 1}
        assert trio.current_time() - started >= 0.2


async def test_relay_thread_carries_many_links_and_stops_when_idle(nursery: trio.Nursery) -> None:
    """Concurrent links with big frames both ways; the relay thread ends with the last link."""
    target = await start_echo(nursery)
    proxy, port = await start_proxy(nursery, target)
    net = TcpNetwork()

    async def client(n: int) -> None:
        async with (
            connected(net, HOST, port, app=f"C{n}", app_type="Client") as conn,
            trio.open_nursery() as asks,
        ):
            for size in (10, 200_000, 900_000, 900_000):  # more than socket buffers hold
                asks.start_soon(ask, conn, {"blob": str(n) * size})

    async def ask(conn: Connection, payload: dict[str, str]) -> None:
        assert await conn.request("echo", payload, timeout=10) == payload

    async with trio.open_nursery() as clients:
        for n in range(4):
            clients.start_soon(client, n)
    with trio.fail_after(5):
        while proxy._relay._running or proxy.status()["links"]:
            await trio.sleep(0.01)


async def test_a_public_port_puts_the_control_client_through_to_control(
    nursery: trio.Nursery,
) -> None:
    """A Hello named ``PROXY_CONTROL_CLIENT`` at a route's public port reaches the proxy's
    control (another host's launcher has no other way in); with a cluster key, such a
    client without it may read the proxy's status but not cut links."""
    target = await start_echo(nursery)
    proxy = FaultProxy(TcpNetwork(key="k"))
    public: int = await nursery.start(proxy.serve_route, Route("S", HOST, 0, HOST, target))
    await nursery.start(proxy.serve_control, HOST, 0)
    keyed, keyless = TcpNetwork(key="k"), TcpNetwork(key="")
    async with connected(keyed, HOST, public, app=PROXY_CONTROL_CLIENT, app_type="L") as conn:
        assert conn.peer_app == "proxy"
        assert await conn.request("partition", {"a": "A", "b": ["B", "C"]}) == {"links": 0}
    assert proxy.faults.is_cut("A", "C")
    async with connected(keyless, HOST, public, app=PROXY_CONTROL_CLIENT, app_type="L") as conn:
        assert (await conn.request("status", {}))["partitions"] == [
            {"a": "A", "b": "B"},
            {"a": "A", "b": "C"},
        ]
        with pytest.raises(RequestRefused, match="unauthorized"):
            await conn.request("heal", {"a": "A", "b": "B"})
    # Anyone else still reaches the route's application.
    async with connected(keyed, HOST, public, app="C", app_type="T") as conn:
        assert conn.peer_app == "S"
