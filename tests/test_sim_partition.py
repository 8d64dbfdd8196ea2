"""A partition in the simulation cuts links as the fault proxy does: what had arrived is
still read, nothing more arrives, and the heal closes the links it cut.

TCP never loses bytes from the middle of a live connection: while a cable is out its
segments are resent, or the connection dies. The launcher's fault proxy drops what a cut
link carries and closes it at the heal (``tests/test_proxy.py``); the simulation used to
let the link go on with the frames of the cut missing, so a route request lost in a 0.1 s
cut was never offered again and its call was lost (`orsim search`, seed 79, kept as
``scenarios/search-healed-partition-closes-its-links.yaml``).
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from helpers import memory_link

from orsim.wire import MemoryNetwork, open_connection

HOST = "h"


async def test_a_healed_partition_closes_the_links_it_cut(autojump_clock: Any) -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        conn, served, port = await memory_link(nursery, net)
        net.partition("A", "B")
        await trio.sleep(0.1)
        assert not conn.closed.is_set()  # silent, not closed, while cut
        net.partition("A", "B", heal=True)
        with trio.fail_after(1):
            await conn.closed.wait()
            await served[0].closed.wait()
        # New links between them work after the heal.
        again = await open_connection(net.for_app("B"), HOST, port, app="B", app_type="Test")
        assert not again.closed.is_set()
        await again.aclose()
        nursery.cancel_scope.cancel()


async def test_healing_a_pair_that_was_not_cut_closes_nothing(autojump_clock: Any) -> None:
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        conn, _, _ = await memory_link(nursery, net)
        net.partition("A", "B", heal=True)
        await trio.sleep(1)
        assert not conn.closed.is_set()
        nursery.cancel_scope.cancel()


async def _raw_link(net: MemoryNetwork) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A raw memory link from A to B: (A's end, B's end)."""
    listener, port = await net.for_app("B").listen(HOST, 0)
    a_end = await net.for_app("A").connect(HOST, port)
    b_end = await listener.accept()
    return a_end, b_end


async def _read_within(stream: trio.abc.Stream, seconds: float) -> bytes:
    """What ``stream`` reads within ``seconds`` (b"" if nothing)."""
    with trio.move_on_after(seconds):
        return bytes(await stream.receive_some())
    return b""


async def test_bytes_a_frozen_reader_had_before_the_cut_are_read_when_it_thaws(
    autojump_clock: Any,
) -> None:
    """Bytes that reached a frozen reader's buffer before a partition are in its socket,
    as behind the fault proxy: it reads them once thawed; bytes sent after the cut, and
    bytes still in flight (delayed) when it came, never arrive. They were all dropped,
    and a URS answer that reached a frozen ORS before its link was cut was lost with its
    call (seen looking into `orsim search` seed 229; kept as
    ``scenarios/search-frozen-ors-reads-what-arrived-before-the-cut.yaml``)."""
    net = MemoryNetwork()
    a_end, b_end = await _raw_link(net)
    net.freeze("B")
    await a_end.send_all(b"arrived")
    net.delay("A", "B", 0.5)
    await a_end.send_all(b"in-flight")
    await trio.sleep(0.1)
    net.partition("A", "B")
    await a_end.send_all(b"after-the-cut")
    await trio.sleep(1.0)  # the delayed bytes fall due, on a cut link
    net.freeze("B", resume=True)
    assert await _read_within(b_end, 0.1) == b"arrived"
    assert await _read_within(b_end, 2.0) == b""


async def test_a_frozen_senders_bytes_have_not_left_it_when_the_cut_comes(
    autojump_clock: Any,
) -> None:
    """What a frozen application sends is held (it would send it once thawed): cut
    meanwhile, none of it arrives."""
    net = MemoryNetwork()
    a_end, b_end = await _raw_link(net)
    net.freeze("A")
    await a_end.send_all(b"held")
    net.partition("A", "B")
    net.freeze("A", resume=True)
    assert await _read_within(b_end, 1.0) == b""
