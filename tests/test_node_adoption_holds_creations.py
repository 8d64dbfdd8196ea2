"""A call to create while this application's adoption round moves it is held.

Found by `orsim search` (seed 197, pair-and-lone-slow-urs, "#4"; made deterministic as
`scenarios/search-adoption-holds-new-creations.yaml`): the lone ORS_2 adopted dead Node
ORS_1's sessions, and the T-Server handed it some of those calls while ``AdoptOrphans``
was under way. It created them at once; the store took the creations, as the adoption
had just made the calls' claims ORS_2's own, and the adopted sessions were overwritten by
fresh ones: 13 sessions created twice.
"""

from __future__ import annotations

import attrs
from helpers import core_settings, session_writes

from orsim.node._core import (
    ORPHAN_GRACE,
    RECLAIM_WAIT,
    Adopted,
    AdoptOrphans,
    EpochClaimed,
    FenceAnswered,
    LoadOrphans,
    MemberAnnounced,
    NodeCore,
    NotifySession,
    OrphansLoaded,
    PeerLinkDown,
    PeerLinkUp,
    QueryCall,
    RouteRequested,
    SessionsLoaded,
)
from orsim.node._membership import MemberInfo
from orsim.node._settings import PeerApp
from orsim.store import Session

CREATED = 1_700_000_000.5
#: When the dead Node's orphan round is due (its last link went down at 1.0).
ROUND = 1.0 + ORPHAN_GRACE


def _orphan(call_id: str) -> Session:
    """Node 2's stored session of ``call_id``."""
    return Session(
        call_id=call_id, node_id=2, epoch=1, dn="5000", state="created", created_at=CREATED
    )


def _lone_node_whose_peer_died(recovered: bool = True) -> NodeCore:
    """A, primary of Node 1, alone since P2 (the only application of Node 2) went away;
    ``recovered``: its own takeover's recovery has answered."""
    peer = PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False)
    settings = attrs.evolve(core_settings(partner=False), peers=(peer,), nodes={1: "DC", 2: "DC"})
    core = NodeCore(settings, wall=CREATED + 5)
    core.start(0.0)
    core.handle(PeerLinkUp("P2"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("P2", 2, "DC", "primary", 1)), 0.0)
    core.handle(EpochClaimed(1, True, 1), 0.0)
    core.handle(FenceAnswered(1), 0.0)
    core.handle(SessionsLoaded(() if recovered else None, 1), 0.0)
    assert core.mode == "primary"
    core.handle(PeerLinkDown("P2"), 1.0)
    return core


def _adopting(call_id: str, recovered: bool = True) -> NodeCore:
    """``_lone_node_whose_peer_died``, its ``AdoptOrphans`` of ``call_id`` unanswered."""
    core = _lone_node_whose_peer_died(recovered)
    assert LoadOrphans(2) in core.tick(ROUND)
    out = core.handle(OrphansLoaded(2, (_orphan(call_id),)), ROUND + 0.01)
    assert out == [AdoptOrphans(2, (_orphan(call_id),), epoch=1)]
    return core


def _moved(call_id: str) -> Session:
    """``call_id``'s session as the adoption wrote it, Node 1's."""
    return attrs.evolve(_orphan(call_id), node_id=1)


def test_a_call_under_adoption_is_not_created_before_the_adoption_answers() -> None:
    core = _adopting("c1")
    out = core.handle(RouteRequested("c1", "5000", redelivered=True), ROUND + 0.02)
    assert session_writes(out) == []
    assert any(isinstance(c, NotifySession) and c.pending for c in out)  # watchers told
    # Nor by the recovery's wait, which releases the calls held for it.
    assert session_writes(core.tick(ROUND + 0.02 + RECLAIM_WAIT)) == []


def test_a_call_the_adoption_moved_is_carried_on_never_created_again() -> None:
    core = _adopting("c1")
    core.handle(RouteRequested("c1", "5000", redelivered=True), ROUND + 0.02)
    out = core.handle(Adopted(2, (_moved("c1"),)), ROUND + 0.1)
    assert session_writes(out) == []
    assert QueryCall("c1") in out  # asked first, as every adopted call is
    call = core.calls["c1"]
    assert call.recovered and call.created_at == CREATED
    assert session_writes(core.handle(RouteRequested("c1", "5000", redelivered=True), 0.2)) == []
    assert session_writes(core.tick(ROUND + 0.1 + RECLAIM_WAIT)) == []


def test_a_call_the_adoption_did_not_move_is_created_then() -> None:
    core = _adopting("c1")
    core.handle(RouteRequested("c1", "5000", redelivered=True), ROUND + 0.02)
    (write,) = session_writes(core.handle(Adopted(2, ()), ROUND + 0.1))  # fenced by another
    assert write.create and write.session.call_id == "c1" and write.session.node_id == 1


def test_a_call_outside_the_adoption_is_created_at_once() -> None:
    core = _adopting("c1")
    (write,) = session_writes(core.handle(RouteRequested("c2", "5000"), ROUND + 0.02))
    assert write.create and write.session.call_id == "c2"


def test_the_recovery_releases_no_call_still_under_adoption() -> None:
    core = _adopting("c1", recovered=False)
    assert session_writes(core.handle(RouteRequested("c1", "5000"), ROUND + 0.02)) == []
    assert session_writes(core.handle(SessionsLoaded((), 1), ROUND + 0.03)) == []
    assert session_writes(core.tick(ROUND + 0.02 + RECLAIM_WAIT)) == []
    assert QueryCall("c1") in core.handle(Adopted(2, (_moved("c1"),)), ROUND + 0.1)
