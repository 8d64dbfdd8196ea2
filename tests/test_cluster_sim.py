"""The whole cluster in one trio run over memory streams, in virtual time (MockClock).

Each test drives calls through the T-Server and checks the ledger, the ground truth:
every call routed exactly once, none lost, none duplicated.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
import trio.testing

from orsim.config import ConfigDatabase, load_database
from orsim.testing import SimCluster, open_sim_cluster
from orsim.tserver import LedgerCounts

TOPOLOGY = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"
ADDP = 1.0  # the demo topology's addp-timeout on every link
PEER_ADDP = 1.0  # the demo topology's orchestration/peer-addp-timeout
HEARTBEAT = 0.25


@pytest.fixture
def db() -> ConfigDatabase:
    return load_database(TOPOLOGY)


async def drive(sim: SimCluster, calls: int, rate: float = 50.0) -> None:
    """Make ``calls`` calls at ``rate``/s and wait until the ledger settles."""
    await sim.request("generate", rate=rate, duration=calls / rate)

    async def settled() -> bool:
        ledger = await sim.ledger()
        created: int = ledger.created
        in_flight: int = ledger.in_flight
        return created >= calls and in_flight == 0

    with trio.fail_after(calls / rate + 60):
        while not await settled():
            await trio.sleep(0.1)


async def assert_clean(sim: SimCluster, calls: int) -> LedgerCounts:
    ledger = await sim.ledger()
    assert ledger.created == calls
    assert ledger.lost == 0, ledger
    assert ledger.duplicates == 0, ledger
    assert ledger.routed == calls
    return ledger


async def test_steady_state_two_nodes_share_the_calls(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """Primaries are primary, backups are backup, and both Nodes route calls."""
    async with open_sim_cluster(db) as sim:
        assert [sim.mode(a) for a in ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B")] == [
            "primary",
            "backup",
            "primary",
            "backup",
        ]
        await drive(sim, 400)
        ledger = await assert_clean(sim, 400)
        by_app = ledger.by_app
        assert set(by_app) == {"ORS_1", "ORS_2"}
        assert min(by_app.values()) > 400 * 0.3


async def test_one_link_per_pair_between_nodes_and_both_ways_within_one(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """The halves of a Node dial each other; between Nodes only the smaller name dials.
    Everyone still sees, and hears the mode of, everyone else."""
    async with open_sim_cluster(db) as sim:
        apps = sim.ors_apps

        def everyone_known() -> bool:
            return all(
                sim.nodes[a].core.peers.is_live(b) and b in sim.nodes[a].core.peers.info
                for a in apps
                for b in apps
                if a != b
            )

        await sim.wait_until(everyone_known, timeout=10)
        for a in apps:
            node = sim.nodes[a]
            partner = node.settings.partner
            expected = {b for b in apps if b != a and (b == partner or a < b)}
            assert set(node._outbound) == expected
            assert {b: node.core.peers.info[b].mode for b in apps if b != a} == {
                b: sim.mode(b) for b in apps if b != a
            }


async def test_primary_crash_backup_takes_over_at_once(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """A crashed primary (closed links) is replaced by its backup well within addp-timeout."""
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=50, duration=6)
        await trio.sleep(2)
        sim.crash("ORS_1")
        gap = await sim.wait_until(lambda: sim.mode("ORS_1_B") == "primary", timeout=ADDP)
        assert gap < ADDP
        assert sim.nodes["ORS_1_B"].epoch == 2
        await trio.sleep(6)
        await drive(sim, 0)
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created >= 290
        assert ledger.by_app.get("ORS_1_B", 0) > 0


async def test_primary_hang_detected_within_addp_plus_heartbeat(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """A hung primary (silent, links open) is replaced within peer ADDP + one heartbeat."""
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=50, duration=8)
        await trio.sleep(2)
        sim.hang("ORS_1")
        gap = await sim.wait_until(
            lambda: sim.mode("ORS_1_B") == "primary", timeout=PEER_ADDP + HEARTBEAT + 0.5
        )
        assert gap <= PEER_ADDP + HEARTBEAT
        await trio.sleep(3)
        sim.resume("ORS_1")
        await sim.wait_until(lambda: sim.mode("ORS_1") == "backup", timeout=10)
        await trio.sleep(5)
        await drive(sim, 0)
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created


async def test_reserved_node_creates_sessions_when_assigned_node_is_silent(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """With both halves of Node 1 gone, Node 2 (the Reserved Node) serves every call."""
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=50, duration=6)
        await trio.sleep(1)
        sim.hang("ORS_1")
        sim.hang("ORS_1_B")
        await trio.sleep(7)
        await drive(sim, 0)
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created
        assert ledger.by_app.get("ORS_2", 0) > ledger.created / 2


async def test_graceful_switchover_loses_no_call(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """A switchover asked of a primary hands the Node over with no call lost or doubled."""
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=50, duration=5)
        await trio.sleep(1)
        await sim.nodes["ORS_1"].switchover()
        assert sim.mode("ORS_1_B") == "primary"
        assert sim.mode("ORS_1") == "backup"
        await trio.sleep(5)
        await drive(sim, 0)
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created >= 240


async def test_live_call_watching_timeout_reaches_every_node(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """Changing the list's call-watching-timeout applies at once on every running node."""
    async with open_sim_cluster(db) as sim:
        assert {n.call_watching_timeout_ms for n in sim.nodes.values()} == {500}
        await sim.set_option("ORS_Cluster_1", "orchestration", "call-watching-timeout", "1200")
        await sim.wait_until(
            lambda: {n.call_watching_timeout_ms for n in sim.nodes.values()} == {1200},
            timeout=5,
        )
        # The application's own value does not override the list's (the list wins).
        await sim.set_option("ORS_1", "orchestration", "call-watching-timeout", "3000")
        await trio.sleep(2)
        assert sim.nodes["ORS_1"].call_watching_timeout_ms == 1200


async def test_sessions_of_a_dead_node_are_adopted(
    db: ConfigDatabase, autojump_clock: trio.testing.MockClock
) -> None:
    """Both halves of Node 1 die holding sessions: Node 2 adopts and routes them, 0 lost."""
    urs = db.applications["URS"]
    slow_urs = attrs.evolve(urs, options={**urs.options, "urs": {"think-time-ms": "1500"}})
    db = attrs.evolve(db, applications={**db.applications, "URS": slow_urs})
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=20, duration=2)
        await trio.sleep(1.5)
        assert sim.nodes["ORS_1"].status().sessions > 0  # calls held mid-flight
        sim.crash("ORS_1")
        sim.crash("ORS_1_B")
        await trio.sleep(12)
        ledger = await sim.ledger()
        assert ledger.lost == 0, ledger
        assert ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created == 40
        assert sim.nodes["ORS_2"].core.sessions_adopted > 0
