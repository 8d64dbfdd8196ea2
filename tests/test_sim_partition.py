"""A healed partition in the simulation closes the links it cut, as the fault proxy does.

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
