"""The node's store guard, and whole clusters riding out a store outage, in virtual time.

The guard's unit tests stall an in-memory store; the cluster tests run every server in
one trio run (``open_sim_cluster``) and stall the store under load, alone and together
with a crash or a hang of a primary, so a takeover has to claim the epoch at the
T-Server. The ledger is the ground truth throughout: 0 lost, 0 duplicated.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import pytest
import trio
import trio.testing

from orsim.config import ConfigDatabase, load_database
from orsim.node._store_guard import StoreGuard
from orsim.store import Session, StaleEpoch, StoreError, StoreUnavailable
from orsim.store._memory import MemoryStore
from orsim.testing import SimCluster, open_sim_cluster
from orsim.tserver import LedgerCounts

TOPOLOGY = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"
ORS_APPS = ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B")


def _session(call_id: str, node_id: int = 1, epoch: int = 0) -> Session:
    return Session(call_id=call_id, node_id=node_id, epoch=epoch, dn="5000", state="created")


class _Failing(MemoryStore):
    """A store whose backend raises, as a Redis that refuses connections does."""

    failing: bool = False

    async def create_session(self, session: Session) -> bool:
        if self.failing:
            raise StoreError("connection refused")
        return await super().create_session(session)


async def test_a_stalled_store_is_degraded_after_the_deadline_then_fails_fast(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An operation on a stalled store ends at the deadline with StoreUnavailable and marks
    the store degraded; while degraded, operations fail without waiting at all."""
    store = MemoryStore()
    guard = StoreGuard(store, deadline=1.0)
    assert await guard.create_session(_session("c1"))
    store.stall()
    start = trio.current_time()
    with pytest.raises(StoreUnavailable):
        await guard.create_session(_session("c2"))
    assert trio.current_time() - start == pytest.approx(1.0)
    assert (guard.state, guard.outages, guard.failures) == ("degraded", 1, 1)
    start = trio.current_time()
    with pytest.raises(StoreUnavailable):
        await guard.current_epoch(1)
    assert trio.current_time() == start  # no call waits on a store known to be away
    assert guard.counts().store == "degraded"


async def test_the_outage_ends_by_itself_and_pending_deletes_are_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Deletes made while degraded are kept; once the store answers a probe, they are sent,
    the guard is ok again and the node's recovery hook runs once."""
    store = MemoryStore()
    recovered: list[float] = []

    async def on_recovered() -> None:
        recovered.append(trio.current_time())

    guard = StoreGuard(store, deadline=1.0, probe_interval=0.2, on_recovered=on_recovered)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        assert await guard.create_session(_session("c1"))
        store.stall()
        with pytest.raises(StoreUnavailable):
            await guard.create_session(_session("c2"))
        await guard.delete_session(1, 0, "c1")  # kept, not raised
        assert guard.counts().store_deletes_pending == 1
        await trio.sleep(5)
        assert guard.degraded and not recovered  # still away: probes time out
        resumed = trio.current_time()
        store.resume()
        with trio.fail_after(5):
            while guard.degraded:
                await trio.sleep(0.01)
        assert len(recovered) == 1 and recovered[0] - resumed < 1.5
        # c1 deleted late; c2's write was abandoned at its deadline, so never made.
        assert await store.sessions(1) == []
        assert guard.counts().store_deletes_pending == 0
        nursery.cancel_scope.cancel()


async def test_stale_epoch_is_an_answer_not_an_outage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fenced write is refused by a healthy store: StaleEpoch passes through, no outage."""
    store = MemoryStore()
    guard = StoreGuard(store)
    assert await guard.claim_epoch(1, 0, 2)
    with pytest.raises(StaleEpoch):
        await guard.put_session(_session("c1", epoch=1))
    assert (guard.state, guard.outages) == ("ok", 0)


async def test_a_failing_backend_degrades_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An error from the backend (not only a timeout) makes the store degraded."""
    store = _Failing()
    store.failing = True
    guard = StoreGuard(store, deadline=5.0)
    start = trio.current_time()
    with pytest.raises(StoreUnavailable, match="connection refused"):
        await guard.create_session(_session("c1"))
    assert trio.current_time() == start
    assert guard.degraded


# -- whole clusters in virtual time ----------------------------------------------


@pytest.fixture
def db() -> ConfigDatabase:
    return load_database(TOPOLOGY)


async def settle(sim: SimCluster, timeout: float = 60) -> LedgerCounts:
    """The ledger (``SimCluster.ledger``) once no call is in flight."""
    with trio.fail_after(timeout):
        while True:
            ledger = await sim.ledger()
            if ledger.in_flight == 0:
                return ledger
            await trio.sleep(0.1)


def primaries(sim: SimCluster, node_id: int) -> list[str]:
    """Applications of the Node acting as primary (holding the Node's epoch)."""
    return [
        name
        for name, node in sim.nodes.items()
        if node.settings.node_id == node_id
        and node.core.role.role.holds_node
        and not sim.scopes[name].cancel_called  # crashed: no longer acts at all
    ]


async def test_store_outage_longer_than_router_timeout_loses_no_call(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """The store stalls for 15 s under load (router-timeout is 10 s): every call is routed
    once, nobody changes mode, and sessions are written again once it is back."""
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=50, duration=25)
        await trio.sleep(3)
        sim.stall_store()
        await trio.sleep(15)
        assert {a: sim.mode(a) for a in ORS_APPS} == {
            "ORS_1": "primary", "ORS_1_B": "backup", "ORS_2": "primary", "ORS_2_B": "backup",
        }  # fmt: skip
        assert sim.nodes["ORS_1"].guard.degraded and sim.nodes["ORS_2"].guard.degraded
        sim.stall_store(resume=True)
        await sim.wait_until(
            lambda: not any(sim.nodes[a].guard.degraded for a in ORS_APPS), timeout=5
        )
        await trio.sleep(8)
        ledger = await settle(sim)
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created == 1250
        unpersisted = sum(sim.nodes[a].guard.unpersisted for a in ("ORS_1", "ORS_2"))
        assert unpersisted >= 600  # about 15 s at 50/s went through unwritten


@pytest.mark.parametrize("fault", ["crash", "hang"])
async def test_takeover_while_the_store_is_away_claims_at_the_tserver(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock, fault: str
) -> None:
    """With the store away, a primary crashes or hangs: its backup claims the next epoch at
    the T-Server (compare-and-set there), so exactly one application acts for the Node
    at any time; a hung primary that wakes is fenced. When the store is back it learns
    the new epoch. 0 duplicated; the only calls lost are the ones the failed primary
    held unpersisted at the fault (as in ORS: without persistence, a session dies with
    its primary), and every other call is routed."""
    async with open_sim_cluster(db) as sim:
        node_1 = sim.nodes["ORS_1"].settings.node_id
        await sim.request("generate", rate=50, duration=20)
        await trio.sleep(2)
        sim.stall_store()
        await trio.sleep(1.5)  # every node has met the outage
        held = set(sim.nodes["ORS_1"].core.calls)
        getattr(sim, fault)("ORS_1")
        await sim.wait_until(lambda: sim.mode("ORS_1_B") == "primary", timeout=5)
        epoch = sim.nodes["ORS_1_B"].epoch
        assert epoch == 2
        # A hung ORS_1 still believes it is primary, but cannot act: its epoch is stale.
        assert sorted(primaries(sim, node_1)) == (
            ["ORS_1", "ORS_1_B"] if fault == "hang" else ["ORS_1_B"]
        )
        if fault == "hang":
            await trio.sleep(2)
            sim.resume("ORS_1")  # it wakes believing it is primary: the T-Server fences it
            await sim.wait_until(lambda: sim.mode("ORS_1") == "backup", timeout=10)
        assert primaries(sim, node_1) == ["ORS_1_B"]
        await trio.sleep(3)
        sim.stall_store(resume=True)
        await sim.wait_until(lambda: not sim.nodes["ORS_1_B"].guard.degraded, timeout=5)
        await trio.sleep(1)
        assert await sim.store.current_epoch(node_1) == epoch  # the store learned it
        await trio.sleep(14)
        ledger = await settle(sim)
        lost = {r["call_id"] for r in (await sim.request("ledger", records=True))["records"]
                if r["state"] == "lost"}  # fmt: skip
        assert lost <= held, lost - held
        assert ledger.duplicates == 0, ledger
        assert ledger.routed + ledger.lost == ledger.created == 1000
        assert ledger.by_app.get("ORS_1_B", 0) > 0


async def test_an_outage_is_aged_from_its_first_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A creation's second try waits for the store up to a window counted from the
    outage's first probe, not from the miss that began it: an application frozen over
    that miss (and frozen again at once) has not asked the store since, and a store that
    answers again must get its say (`orsim search`, seed 436)."""
    store = MemoryStore()
    guard = StoreGuard(store, deadline=1.0, probe_interval=0.2)
    store.stall()
    with pytest.raises(StoreUnavailable):
        await guard.create_session(_session("c1"))
    store.resume()
    await trio.sleep(3)  # no probe ran meanwhile (the guard's task is not running yet)
    answering: list[bool] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _append(answering, guard.wait_answering(0.5)))
        await trio.sleep(1)
        assert not answering  # not "away" at once, though the outage began 3 s ago
        nursery.start_soon(guard.run)
        with trio.fail_after(1):
            while not answering:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert answering == [True]

    # A store that stays away: the window runs from the first probe, then it is away.
    store.stall()
    with pytest.raises(StoreUnavailable):
        await guard.create_session(_session("c2"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard.run)
        start = trio.current_time()
        assert not await guard.wait_answering(0.5)
        assert trio.current_time() - start == pytest.approx(0.2 + 0.5)
        nursery.cancel_scope.cancel()


async def _append(into: list[bool], answer: Awaitable[bool]) -> None:
    into.append(await answer)
