"""A frozen (SIGSTOPped) application in the simulation learns nothing until it is thawed.

A stopped process runs nothing: the kernel keeps what arrives for it, and what happened
meanwhile (a peer's crash, a link its peers gave up) reaches it only once it runs again.
`orsim search` found a schedule (seed 61, kept as
``scenarios/search-frozen-backup-hears-of-the-crash-when-thawed.yaml``) where a frozen
backup lost its link to its crashed primary while still frozen, claimed the Node, timed
its store out during the freeze, and so took over without recovering the primary's
sessions: one session created twice. These pin the network's side of it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import trio
import trio.testing
from helpers import TOPOLOGIES, memory_link, serve_memory_links, wait_until

from orsim.config import load_database
from orsim.errors import ConnectionLost
from orsim.sim import open_sim_cluster
from orsim.store import Session, StoreUnavailable
from orsim.wire import MemoryNetwork

HOST = "h"
TWO_NODES = TOPOLOGIES / "two-nodes.yaml"


async def test_a_frozen_peer_hears_of_a_crash_only_once_thawed(autojump_clock: Any) -> None:
    """A crashes while B is frozen: B's link stays up until B is thawed, then B reads the
    close as a peer's (before: B's own end was closed at once, frozen or not)."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        conn, _, _ = await memory_link(nursery, net)
        net.freeze("B")
        net.close_all(["A"])
        await trio.sleep(5)
        assert not conn.closed.is_set()
        net.freeze("B", resume=True)
        with trio.fail_after(1):
            await conn.closed.wait()
        assert conn.close_reason == "closed by peer"
        nursery.cancel_scope.cancel()


async def test_a_frozen_sender_does_not_learn_of_a_crash_by_sending(autojump_clock: Any) -> None:
    """What a frozen B sends to a crashed A does not fail while B is frozen (a stopped
    process sends nothing); once thawed, B finds the link gone."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        conn, _, _ = await memory_link(nursery, net)
        net.freeze("B")
        net.close_all(["A"])
        assert conn.push_nowait("note", {"n": 1})
        await conn.push("note", {"n": 2})
        assert not conn.closed.is_set()
        net.freeze("B", resume=True)
        with trio.fail_after(1):
            await conn.closed.wait()
        try:
            await conn.push("note", {"n": 3})
        except ConnectionLost:
            pass
        else:
            raise AssertionError("a push on a link closed by its crashed peer went through")
        nursery.cancel_scope.cancel()


async def test_a_frozen_application_connects_only_once_thawed(autojump_clock: Any) -> None:
    """B dials while frozen: the connection is opened when B runs again, not before."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        port, _ = await serve_memory_links(nursery, net, "A")
        net.freeze("B")
        opened: list[float] = []

        async def dial() -> None:
            await net.for_app("B").connect(HOST, port)
            opened.append(trio.current_time())

        nursery.start_soon(dial)
        await trio.sleep(3)
        assert opened == []
        thawed_at = trio.current_time()
        net.freeze("B", resume=True)
        with trio.fail_after(1):
            while not opened:
                await trio.sleep(0.01)
        assert opened[0] >= thawed_at
        nursery.cancel_scope.cancel()


async def test_a_frozen_application_gives_up_no_link_by_addp(autojump_clock: Any) -> None:
    """Frozen for 5 s with ADDP at 1 s: A gives B up (by 2 s), but B checks nothing while
    stopped; thawed, B finds A's close, reading or writing (before: B's own ADDP gave A
    up during the freeze, and it acted on that while it could not have run)."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        conn, served, _ = await memory_link(nursery, net, addp=1.0)
        net.freeze("B")
        with trio.fail_after(2.5):
            await served[0].closed.wait()
        assert served[0].close_reason is not None
        assert "addp" in served[0].close_reason
        await trio.sleep(2.5)
        assert not conn.closed.is_set()
        net.freeze("B", resume=True)
        with trio.fail_after(1):
            await conn.closed.wait()
        # Found closed by A (read or written, whichever B did first), not given up by B.
        assert conn.close_reason is not None
        assert "addp" not in conn.close_reason, conn.close_reason
        nursery.cancel_scope.cancel()


async def test_a_store_operation_a_frozen_ors_would_begin_begins_at_the_thaw(
    autojump_clock: Any,
) -> None:
    """A frozen ORS's timers still run in the simulation, but a stopped process begins
    nothing: a store operation begun while frozen waits for the thaw and begins there,
    its deadline counted from the thaw, and finds the store answering. Before, its 1 s
    deadline ran out during the freeze and degraded, at the thaw, a store that was
    answering (`orsim search`, seed 436: a lone Node frozen twice routed 2 calls twice
    and lost 2, ``scenarios/search-lone-node-frozen-twice.yaml``). A store that is
    stalled at the thaw still misses the deadline, counted from there."""
    async with open_sim_cluster(load_database(TWO_NODES), seed=1) as sim:
        node = sim.nodes["ORS_1"]
        await wait_until(lambda: node.core.mode == "primary", 10)
        outcome: list[tuple[str, float]] = []

        async def write(call_id: str) -> None:
            node_id = node.settings.node_id
            session = Session(
                call_id=call_id,
                node_id=node_id,
                epoch=node.core.current_epoch,
                dn="5000",
                state="created",
            )
            try:
                await node.guard.create_session(session)
            except StoreUnavailable:
                outcome.append(("unavailable", trio.current_time()))
            else:
                outcome.append(("written", trio.current_time()))

        async with trio.open_nursery() as nursery:
            sim.freeze("ORS_1")
            sim.freeze("ORS_1_B")  # nobody takes the Node over meanwhile
            nursery.start_soon(write, "c-1")
            await trio.sleep(3)
            assert outcome == [] and not node.guard.degraded
            thawed_at = trio.current_time()
            sim.thaw("ORS_1")
            sim.thaw("ORS_1_B")
        assert outcome == [("written", thawed_at)]
        assert not node.guard.degraded and node.guard.failures == 0

        outcome.clear()
        async with trio.open_nursery() as nursery:
            sim.freeze("ORS_1")
            sim.freeze("ORS_1_B")
            nursery.start_soon(write, "c-2")
            await trio.sleep(3)
            sim.store.stall()
            thawed_at = trio.current_time()
            sim.thaw("ORS_1")
            sim.thaw("ORS_1_B")
        ((what, when),) = outcome
        assert what == "unavailable" and when == pytest.approx(thawed_at + 1.0)
        assert node.guard.degraded
        sim.store.resume()


async def test_no_adoption_without_the_tserver_fence(autojump_clock: Any) -> None:
    """A Node that looks dead may be routing still (the adopter's view may be late: it
    was frozen, say), so its routes must be refused before its calls move. ORS_1 without
    its T-Server link adopts nothing of ORS_2's lone Node and leaves its epoch alone;
    once its link is back, it adopts (found by `orsim search`, seed 67: the fence was
    skipped while the link was down, and both Nodes routed 4 calls)."""
    db = load_database(TOPOLOGIES / "pair-and-lone-slow-urs.yaml")
    async with open_sim_cluster(db, seed=2) as sim:
        node = sim.nodes["ORS_1"]
        lone = sim.nodes["ORS_2"].settings.node_id
        await wait_until(lambda: node.status().tserver_connected, 10)
        await sim.request("generate", rate=10)
        await trio.sleep(2)  # calls in every Node's hands (the URS takes 0.8 s)
        sim.net.partition("ORS_1", "SIP_Server")
        await wait_until(lambda: not node.status().tserver_connected, 5)
        epoch = await sim.store.current_epoch(lone)
        sim.crash("ORS_2")
        await trio.sleep(5)  # past the orphan grace, several rounds
        assert node.core.sessions_adopted == 0
        assert await sim.store.current_epoch(lone) == epoch
        sim.net.partition("ORS_1", "SIP_Server", heal=True)
        await wait_until(lambda: node.core.sessions_adopted > 0, 15)
        await sim.request("stop_generator")


async def test_a_store_operation_of_a_frozen_ors_that_is_killed_never_lands(
    autojump_clock: Any,
) -> None:
    """Killed while frozen, or while the operation it began at the thaw waits on a
    stalled store: a dead process writes nothing."""
    async with open_sim_cluster(load_database(TWO_NODES), seed=1) as sim:
        node = sim.nodes["ORS_1"]
        await wait_until(lambda: node.core.mode == "primary", 10)
        node_id, epoch = node.settings.node_id, node.core.current_epoch

        async def write(call_id: str) -> None:
            session = Session(
                call_id=call_id, node_id=node_id, epoch=epoch, dn="5000", state="created"
            )
            with contextlib.suppress(StoreUnavailable):  # the guard's word for the crash
                await node.guard.create_session(session)

        async with trio.open_nursery() as nursery:
            sim.freeze("ORS_1")
            sim.freeze("ORS_1_B")
            nursery.start_soon(write, "c-dead-1")
            await trio.sleep(0.5)
            sim.crash("ORS_1")  # frozen: it never began the write
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        assert not [s for s in await sim.store.sessions(node_id) if s.call_id == "c-dead-1"]

        sim.thaw("ORS_1_B")
        await wait_until(lambda: sim.mode("ORS_1_B") == "primary", 10)
        backup = sim.nodes["ORS_1_B"]
        node, node_id, epoch = backup, backup.settings.node_id, backup.core.current_epoch
        async with trio.open_nursery() as nursery:
            sim.freeze("ORS_1_B")
            nursery.start_soon(write, "c-dead-2")
            await trio.sleep(0.5)
            sim.store.stall()
            sim.thaw("ORS_1_B")  # the write begins, and waits on the store
            await trio.sleep(0.3)
            sim.crash("ORS_1_B")
            sim.store.resume()
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        assert not [s for s in await sim.store.sessions(node_id) if s.call_id == "c-dead-2"]
