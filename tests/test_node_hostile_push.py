"""A malformed or spoofed push costs its sender its connection, never the ORS node.

Seen in the field: a client that completes the Hello, then sends ``member {}`` (or
``route_request {}``, ``session {}``, ``call_routed {}``, a ``member`` with a text Node
ID) ended the node process. Each push is now checked at the edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from orsim.config import load_database
from orsim.testing import open_sim_cluster
from orsim.wire import Push, open_connection

TOPOLOGY = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"

BAD_PUSHES: list[tuple[str, Any]] = [
    ("member", {}),
    (
        "member",
        {"app": "ORS_1_B", "node_id": "abc", "data_center": "x", "mode": "primary", "epoch": 1},
    ),
    (
        "member",
        {"app": "ORS_1_B", "node_id": 1, "data_center": "x", "mode": "boss", "epoch": 1},
    ),
    (
        "member",
        {"app": "ORS_1_B", "node_id": 1, "data_center": "x", "mode": "primary", "epoch": -3},
    ),
    ("route_request", {}),
    ("route_request", {"call_id": 7}),
    ("session", {}),
    ("call_routed", {}),
    ("call_routed", {"call_id": ""}),
]


@pytest.mark.parametrize(("topic", "data"), BAD_PUSHES)
async def test_a_malformed_push_closes_only_its_connection(
    autojump_clock: trio.testing.MockClock, topic: str, data: Any
) -> None:
    """The bad connection is closed with a protocol error; the node keeps its mode and
    routes every call with nothing lost."""
    db = load_database(TOPOLOGY)
    ors1 = db.applications["ORS_1"]
    async with open_sim_cluster(db) as sim:
        await sim.request("generate", rate=20, duration=3)
        conn = await open_connection(
            sim.net.for_app("intruder"), ors1.address, ors1.port,
            app="intruder", app_type="OrchestrationServer",
        )  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.serve)
            await conn.push(topic, data)
            with trio.fail_after(5):
                await conn.closed.wait()
        assert "protocol" in conn.close_reason or "closed" in conn.close_reason
        await trio.sleep(8)
        assert sim.mode("ORS_1") == "primary"
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created == 60


async def test_a_member_push_claiming_another_app_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client that says Hello as one app and announces itself as the partner, primary
    at a huge epoch, is cut off: the primary does not step down."""
    db = load_database(TOPOLOGY)
    ors1 = db.applications["ORS_1"]
    async with open_sim_cluster(db) as sim:
        node_id = sim.nodes["ORS_1"].settings.node_id
        conn = await open_connection(
            sim.net.for_app("intruder"), ors1.address, ors1.port,
            app="intruder", app_type="OrchestrationServer",
        )  # fmt: skip
        spoof = {"app": "ORS_1_B", "node_id": node_id, "data_center": "DC_East",
                 "mode": "primary", "epoch": 50}  # fmt: skip
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.serve)
            await conn.send(Push("member", spoof))
            with trio.fail_after(5):
                await conn.closed.wait()
        await trio.sleep(2)
        assert sim.mode("ORS_1") == "primary"
        assert sim.nodes["ORS_1"].epoch < 50


async def _claim_as_partner(sim: Any, target: str, partner: str, settle: float) -> None:
    """Say Hello to ``target`` as its ``partner`` and announce, as the partner, that the
    Node is at epoch 50 with the partner primary; then let ``settle`` seconds pass."""
    app = sim.db.applications[target]
    node = sim.nodes[target]
    conn = await open_connection(
        sim.net.for_app("intruder"), app.address, app.port,
        app=partner, app_type="OrchestrationServer",
    )  # fmt: skip
    spoof = {"app": partner, "node_id": node.settings.node_id,
             "data_center": "DC_East", "mode": "primary", "epoch": 50}  # fmt: skip
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        await conn.send(Push("member", spoof))
        await trio.sleep(settle)
        nursery.cancel_scope.cancel()


async def test_a_partners_epoch_claim_the_arbiters_do_not_bear_out_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 20, finding 2: a client that says Hello *as the partner* and announces it
    holds the Node at epoch 50 made the primary step down, and both halves stayed backup
    at 50 while the store said 1 (150 of 150 calls lost). The claim is now checked at the
    store and the T-Server's fence, neither bears it out, and the primary keeps the Node
    at its own epoch, routing every call."""
    async with open_sim_cluster(load_database(TOPOLOGY)) as sim:
        epoch = sim.nodes["ORS_1"].epoch
        await sim.request("generate", rate=20, duration=3)
        await _claim_as_partner(sim, "ORS_1", "ORS_1_B", settle=8)
        assert sim.mode("ORS_1") == "primary"
        assert sim.mode("ORS_1_B") == "backup"
        assert sim.nodes["ORS_1"].epoch == epoch
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.by_app.get("ORS_1", 0) > 0
        assert ledger.routed == ledger.created == 60


async def test_a_backup_takes_a_partners_epoch_only_from_the_store(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 20, finding 2, the backup's side: told by "its partner" that the Node is at
    epoch 50, a backup took 50 as its own, so when the primary then died its claims (from
    50, where the store had 1) all failed and nobody routed the Node's calls. Now the
    backup keeps the store's epoch, takes over and routes every call."""
    async with open_sim_cluster(load_database(TOPOLOGY)) as sim:
        epoch = sim.nodes["ORS_1_B"].epoch
        await _claim_as_partner(sim, "ORS_1_B", "ORS_1", settle=2)
        assert sim.mode("ORS_1_B") == "backup"
        assert sim.nodes["ORS_1_B"].epoch == epoch
        await sim.request("generate", rate=20, duration=6)
        await trio.sleep(2)
        sim.crash("ORS_1")
        await sim.wait_until(lambda: sim.mode("ORS_1_B") == "primary", timeout=15)
        await trio.sleep(10)
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created == 120
        assert ledger.by_app.get("ORS_1_B", 0) > 0
