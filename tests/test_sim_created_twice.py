"""The simulation's "session created twice" oracle (a split-brain verdict).

A creation is its Node and its time. The Node that began a call may claim it again
under a newer epoch (its route refused as stale: ``NodeCore._route_answered``), writing
the same creation again; that is not a second creation, and neither is the same claim by
a Node that adopted the call (the creation moved with it). Another Node creating the call,
or the same Node beginning it anew (a backup that created its partner's call instead of
recovering it: `orsim search` seeds 71 and 73), is.
"""

from __future__ import annotations

from typing import Any

from helpers import TOPOLOGIES, wait_until

from orsim.config import load_database
from orsim.sim import open_sim_cluster
from orsim.store import Session


def _session(node_id: int, epoch: int, created_at: float) -> Session:
    return Session(
        call_id="c-1", node_id=node_id, epoch=epoch, dn="5000", state="created",
        created_at=created_at,
    )  # fmt: skip


async def test_a_node_claiming_its_own_creation_again_is_not_a_second_creation(
    autojump_clock: Any,
) -> None:
    async with open_sim_cluster(load_database(TOPOLOGIES / "two-nodes.yaml"), seed=1) as sim:
        node = sim.nodes["ORS_1"]
        await wait_until(lambda: node.core.mode == "primary", 10)
        store, node_id = node.store, node.settings.node_id
        epoch = node.core.current_epoch
        assert await store.create_session(_session(node_id, epoch, created_at=100.0))
        assert await store.create_session(_session(node_id, epoch, created_at=100.0))
        assert sim.created_twice == []
        # The same Node, beginning the call anew: another creation.
        assert await store.create_session(_session(node_id, epoch, created_at=101.0))
        assert sim.created_twice == ["c-1"]


async def test_an_adopter_claiming_the_adopted_call_again_is_not_a_second_creation(
    autojump_clock: Any,
) -> None:
    async with open_sim_cluster(load_database(TOPOLOGIES / "two-nodes.yaml"), seed=1) as sim:
        first, adopter = sim.nodes["ORS_1"], sim.nodes["ORS_2"]
        await wait_until(lambda: first.core.mode == adopter.core.mode == "primary", 10)
        store, dead, mine = adopter.store, first.settings.node_id, adopter.settings.node_id
        epoch, own = first.core.current_epoch, adopter.core.current_epoch
        assert await store.create_session(_session(dead, epoch, created_at=100.0))
        assert await store.claim_epoch(dead, epoch, epoch + 1)  # the adopter's fence
        assert await store.adopt_session(_session(mine, own, created_at=100.0), dead, epoch + 1)
        # Its route refused as stale, say: claimed again, the adopted creation.
        assert await store.create_session(_session(mine, own, created_at=100.0))
        assert sim.created_twice == []
        # The adopter beginning the call anew (#4): another creation.
        assert await store.create_session(_session(mine, own, created_at=101.0))
        assert sim.created_twice == ["c-1"]
