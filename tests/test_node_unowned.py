"""The unowned rule (orsim.node._core): a call nobody created whose Assigned and Reserved
Nodes have both gone falls to the Node that the live Nodes now assign it to; calls that
arrived under the live Nodes of now are not weighed again at each orphan round."""

from __future__ import annotations

import pytest
from helpers import claimed_primary

from orsim.node import _core
from orsim.node._assignment import Assignment, assign
from orsim.node._core import (
    MemberAnnounced,
    NodeCore,
    Note,
    PeerLinkDown,
    PeerLinkUp,
    RouteRequested,
    WriteSession,
)
from orsim.node._membership import MemberInfo
from orsim.node._settings import Endpoint, NodeSettings, PeerApp

NODES = {1: "DC", 2: "DC", 3: "DC"}
PEERS = (
    PeerApp("A_B", 1, "DC", "127.0.0.1", 2, is_backup=True),
    PeerApp("C", 2, "DC", "127.0.0.1", 3, is_backup=False),
    PeerApp("C_B", 2, "DC", "127.0.0.1", 4, is_backup=True),
    PeerApp("E", 3, "DC", "127.0.0.1", 5, is_backup=False),
    PeerApp("E_B", 3, "DC", "127.0.0.1", 6, is_backup=True),
)


def primary_of_node_1() -> NodeCore:
    """ "A", primary of Node 1, with every application of Nodes 1-3 linked."""
    return claimed_primary(node_1_linked())


def node_1_linked() -> NodeCore:
    """ "A" of Node 1, started (its claim asked), every application of Nodes 1-3 linked."""
    server = Endpoint("X", "127.0.0.1", 1)
    settings = NodeSettings(
        app="A", node_id=1, configured_backup=False, partner="A_B", cluster="C",
        data_center="DC", address="127.0.0.1", port=1, peers=PEERS, nodes=NODES,
        tserver=server, urs=server, call_watching_timeout_ms=300,
    )  # fmt: skip
    core = NodeCore(settings)
    core.start(0.0)
    for peer in PEERS:
        core.handle(PeerLinkUp(peer.name), 0.0)
        mode = "backup" if peer.is_backup else "primary"
        core.handle(MemberAnnounced(MemberInfo(peer.name, peer.node_id, "DC", mode, 0)), 0.0)
    return core


def call_of_node_2() -> str:
    """A call Assigned to Node 2 with Node 3 its Reserved Node (Node 1 has no part)."""
    return next(
        c for c in (f"call-{i}" for i in range(1000)) if assign(c, NODES) == Assignment(2, 3)
    )


def test_waiting_calls_are_not_weighed_again_under_the_same_live_nodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call waiting longer than twice the call-watching-timeout, its Nodes still live:
    the orphan rounds leave it, without weighing it."""
    core = primary_of_node_1()
    call = call_of_node_2()
    core.handle(RouteRequested(call, "5000", expires=30.0), 1.0)
    weighed: list[str] = []

    def counting(call_id: str, live: dict[int, str]) -> Assignment:
        weighed.append(call_id)
        return assign(call_id, live)

    monkeypatch.setattr(_core, "assign", counting)
    now = 1.0
    while now < 6.0:
        now = core.next_deadline()
        out = core.tick(now)
        assert not any(isinstance(c, WriteSession) for c in out)
    assert call not in weighed


def test_a_waiting_call_falls_to_this_node_once_its_nodes_have_gone() -> None:
    """Both applications of Nodes 2 and 3 gone: after the orphan grace the call is this
    Node's, and its primary creates it."""
    core = primary_of_node_1()
    call = call_of_node_2()
    core.handle(RouteRequested(call, "5000", expires=30.0), 1.0)
    for app in ("C", "C_B", "E", "E_B"):
        core.handle(PeerLinkDown(app), 1.5)
    created: list[WriteSession] = []
    now = 1.5
    while now < 10.0 and not created:
        now = core.next_deadline()
        out = core.tick(now)
        created = [c for c in out if isinstance(c, WriteSession) and c.session.call_id == call]
        if created:
            assert Note("unowned_call_created", (("call_id", call),)) in out
    assert created, "the unowned call was never created"
