"""No hostage through the fault proxy: a destination that stops reading holds up only its
own link. The proxy stays transparent (its per-link buffer is bounded, and reading from
the source pauses, so backpressure reaches the sender as over a plain TCP link); the
sender's own ``Connection`` then drops the link as not reading."""

from __future__ import annotations

import itertools
import select
import socket
import threading
from functools import partial

import pytest
import trio
import trio.testing

from orsim.cluster import FaultProxy, Route
from orsim.cluster._relay import QUEUE_CHUNKS, READ_SIZE, Relay
from orsim.errors import ConnectionLost
from orsim.wire import Connection, MemoryNetwork, Push, connected, frame_counts, serve_app

NOT_READING = "peer not reading"
#: Bytes the socket buffers of two socketpairs can hold, far above Linux's defaults.
KERNEL_SLACK = 4 * 1024 * 1024


class _Faults:
    """A link's faults as the relay reads them: none, or a delay."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    @property
    def severed(self) -> bool:
        return False

    def delay_s(self) -> float:
        return self.delay


def _relayed(
    relay: Relay, delay: float = 0.0
) -> tuple[socket.socket, socket.socket, int, threading.Event]:
    """A link through ``relay``: (source end, destination end, key, ended)."""
    source, a = socket.socketpair()
    b, destination = socket.socketpair()
    ended = threading.Event()
    key = relay.add(a, b, b"", _Faults(delay), ended.set)
    for s in (source, destination):
        s.settimeout(10)
    return source, destination, key, ended


def _fill(source: socket.socket, limit: int) -> bytes:
    """Write numbered bytes into ``source`` until it stays unwritable for 1 s (nobody
    takes more) or ``limit`` bytes were taken; returns what was taken."""
    source.setblocking(False)
    taken = bytearray()
    counter = itertools.count()
    chunk = b""
    while len(taken) < limit:
        if not chunk:
            chunk = b"".join(b"%08d" % next(counter) for _ in range(8192))
        try:
            sent = source.send(chunk)
        except BlockingIOError:
            _, writable, _ = select.select([], [source], [], 1.0)
            if not writable:
                break
            continue
        taken += chunk[:sent]
        chunk = chunk[sent:]
    source.settimeout(10)
    return bytes(taken)


@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_relay_link_whose_destination_stops_reading_holds_up_no_other(delay: float) -> None:
    """One epoll thread relays every link: a destination that stops reading makes the
    relay stop reading its source once a bounded amount is held (backpressure), while
    another link relays round trips as usual; nothing is lost or reordered."""
    relay = Relay()
    source, destination, key, ended = _relayed(relay, delay)
    other_source, other_destination, other_key, other_ended = _relayed(relay)
    try:
        bound = (QUEUE_CHUNKS + 1) * READ_SIZE + KERNEL_SLACK
        taken = _fill(source, limit=16 * bound)
        # The relay holds a bounded amount, however long the source keeps writing.
        assert 0 < len(taken) <= bound, len(taken)
        for n in range(50):
            message = b"ping %03d " % n * 100
            other_source.sendall(message)
            got = b""
            while len(got) < len(message):
                got += other_destination.recv(65536)
            assert got == message
            other_destination.sendall(got)
            back = b""
            while len(back) < len(message):
                back += other_source.recv(65536)
            assert back == message
        # The stuck destination reads again: everything arrives, in order.
        received = bytearray()
        while len(received) < len(taken):
            received += destination.recv(1 << 20)
        assert bytes(received) == taken
    finally:
        relay.remove(key)
        relay.remove(other_key)
    assert ended.wait(10) and other_ended.wait(10)
    assert destination.recv(10) == b""  # the relay closed its sockets
    for s in (source, destination, other_source, other_destination):
        s.close()


async def test_proxy_passes_a_frozen_clients_backpressure_to_the_sender(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through the proxy (its trio pumps, over a MemoryNetwork): a server pushes to two
    clients in turn, one of them frozen. The other gets every push on time; the server
    drops the frozen one's link as not reading; the proxy ends that link once the frozen
    client reads again (until then it holds a bounded backlog)."""
    net = MemoryNetwork(buffer_size=32 * 1024)
    before = frame_counts()["links_dropped_slow"]
    server_links: list[Connection] = []
    heard: list[float] = []
    all_heard = trio.Event()
    beats = 80

    async def on_connect(conn: Connection) -> None:
        server_links.append(conn)

    async def on_push(_conn: Connection, push: Push) -> None:
        heard.append(trio.current_time())
        if push.data["beat"] == beats - 1:
            all_heard.set()

    async with trio.open_nursery() as nursery:
        target: int = await nursery.start(
            partial(
                serve_app,
                net.for_app("S"),
                "s",
                0,
                app="S",
                app_type="Test",
                handler=None,
                on_connect=on_connect,
            )
        )
        proxy = FaultProxy(net.for_app("proxy"))
        port: int = await nursery.start(proxy.serve_route, Route("S", "p", 0, "s", target))
        async with (
            connected(net.for_app("C"), "p", port, app="C", app_type="Client") as frozen,
            connected(
                net.for_app("D"), "p", port, app="D", app_type="Client", on_push=on_push
            ) as live,
        ):
            with trio.fail_after(5):
                while len(server_links) < 2:
                    await trio.sleep(0.01)
            to_c = next(link for link in server_links if link.peer_app == "C")
            net.freeze("C")
            start = trio.current_time()
            pad = "q" * 4_000
            for beat in range(beats):
                await trio.sleep_until(start + 0.05 * (beat + 1))
                for link in server_links:
                    try:
                        await link.push("news", {"beat": beat, "pad": pad})
                    except ConnectionLost:
                        pass
            with trio.fail_after(0.01):
                await all_heard.wait()
            assert len(heard) == beats
            assert max(b - a for a, b in itertools.pairwise(heard)) < 0.05 + 1e-6
            assert to_c.close_reason.startswith(NOT_READING), to_c.close_reason
            assert frame_counts()["links_dropped_slow"] - before == 1
            assert not live.closed.is_set()

            # The proxy holds C's link (a bounded backlog, its reading paused) as a TCP
            # path would; once C runs again it reads the backlog, then the close.
            assert len(proxy.status()["links"]) == 2
            net.freeze("C", resume=True)
            with trio.fail_after(5):
                await frozen.closed.wait()
            with trio.fail_after(5):
                while len(proxy.status()["links"]) > 1:
                    await trio.sleep(0.01)
            assert proxy.status()["links"] == [{"client": "D", "server": "S", "severed": False}]
        nursery.cancel_scope.cancel()
