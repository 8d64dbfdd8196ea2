"""A call refused as stale to a primary that holds its Node again, at a newer epoch.

Found by `orsim search` (seed 101, pair-and-lone-slow-urs; kept as
`scenarios/search-node-back-after-adoption-claims-before-routing.yaml`): ORS_1 froze
with calls waiting for the slow URS while its backup was killed. The lone ORS_2 found
Node 1 dead, fenced it and adopted its sessions. Thawed, ORS_1 claimed a newer epoch
(its backup restarted), and the T-Server refused its old routes as stale. ORS_1 took
that for "the call is still this Node's", asked the T-Server only whether the call was
routed (not yet: the adopter waited for the URS too), and routed it under the new
epoch. The adopter then routed it again: 6 calls routed twice.
"""

from __future__ import annotations

from helpers import primary_core

from orsim.node._core import (
    CallQueried,
    ClaimEpochCmd,
    Command,
    EpochClaimed,
    EpochRead,
    FenceAnswered,
    NodeCore,
    NotifySession,
    PeerLinkDown,
    QueryCall,
    RouteAnswered,
    RouteRequested,
    SelectTarget,
    SendRoute,
    SessionsLoaded,
    SessionWritten,
    TargetSelected,
    WriteOutcome,
    WriteSession,
)


def _kinds(commands: list[Command]) -> list[type]:
    return [type(c) for c in commands]


def _routing_when_the_node_was_taken() -> NodeCore:
    """A (Node 1, epoch 1) routes c1; meanwhile its Node is fenced (epoch 2, as an
    adopter fences it), and A, its partner gone, holds the Node again at epoch 3."""
    core = primary_core(partner=True)
    assert WriteSession in _kinds(core.handle(RouteRequested("c1", "5000"), 1.0))
    assert SelectTarget in _kinds(core.handle(SessionWritten("c1", WriteOutcome.OWNED), 1.1))
    (route,) = [c for c in core.handle(TargetSelected("c1", "Agent_1"), 1.2)]
    assert route == SendRoute("c1", "Agent_1", 1)
    core.handle(EpochRead(2), 10.0)
    assert core.mode == "backup"
    core.handle(PeerLinkDown("B"), 10.001)
    claims = [c for t in (10.5, 11.0, 11.5, 12.5) for c in core.tick(t)]
    assert ClaimEpochCmd(2, 3) in claims
    core.handle(EpochClaimed(3, True, 3), 12.6)
    core.handle(FenceAnswered(3), 12.6)
    core.handle(SessionsLoaded((), 3), 12.6)  # c1 is no longer Node 1's in the store
    assert core.mode == "primary" and core.current_epoch == 3
    return core


def test_a_stale_route_is_claimed_again_under_the_new_epoch_before_anything_else() -> None:
    core = _routing_when_the_node_was_taken()
    out = core.handle(RouteAnswered("c1", "stale_epoch"), 12.7)
    assert _kinds(out) == [WriteSession]
    (claim,) = out
    assert isinstance(claim, WriteSession)
    assert claim.create and claim.session.node_id == 1 and claim.session.epoch == 3
    assert claim.session.target == "Agent_1"


def test_a_call_adopted_meanwhile_is_left_to_its_adopter() -> None:
    core = _routing_when_the_node_was_taken()
    core.handle(RouteAnswered("c1", "stale_epoch"), 12.7)
    out = core.handle(SessionWritten("c1", WriteOutcome.ELSEWHERE), 12.8)
    assert not {SendRoute, QueryCall, SelectTarget} & set(_kinds(out))
    assert "c1" not in core.calls


def test_a_call_still_the_nodes_is_checked_with_the_tserver_then_routed_anew() -> None:
    core = _routing_when_the_node_was_taken()
    core.handle(RouteAnswered("c1", "stale_epoch"), 12.7)
    notice, query = core.handle(SessionWritten("c1", WriteOutcome.OWNED), 12.8)
    assert isinstance(notice, NotifySession) and notice.claimed  # its watchers learn it
    assert isinstance(query, QueryCall)
    out = core.handle(CallQueried("c1", "in_flight"), 12.9)
    assert out == [SendRoute("c1", "Agent_1", 3)]


def test_without_the_stores_word_the_tserver_still_says_whether_it_is_routed() -> None:
    core = _routing_when_the_node_was_taken()
    core.handle(RouteAnswered("c1", "stale_epoch"), 12.7)
    out = core.handle(SessionWritten("c1", WriteOutcome.UNPERSISTED), 12.8)
    assert _kinds(out) == [QueryCall]
    assert not {SendRoute} & set(_kinds(core.handle(CallQueried("c1", "routed"), 12.9)))
    assert "c1" not in core.calls
