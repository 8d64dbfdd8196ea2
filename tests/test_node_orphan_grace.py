"""A Node counts as dead ``ORPHAN_GRACE`` after its last application became unreachable.

Found by `orsim search` (seed 109, pair-and-lone-slow-urs; kept as
`scenarios/search-dead-node-adopted-a-grace-after-its-last-link.yaml`): the orphan
round, once a second, noticed a Node gone only at its next pass and counted the grace
from there. Node ORS_1 was unreachable for 2.65 s before its restarted backup came back,
still starting, and was not adopted; a call it held missed its router-timeout once the
backup had recovered it and asked the slow URS.
"""

from __future__ import annotations

import attrs
from helpers import core_settings

from orsim.node._core import (
    ORPHAN_GRACE,
    EpochClaimed,
    FenceAnswered,
    LoadOrphans,
    MemberAnnounced,
    NodeCore,
    PeerLinkDown,
    PeerLinkUp,
    SessionsLoaded,
)
from orsim.node._membership import MemberInfo
from orsim.node._settings import PeerApp


def _with_a_lone_peer_node() -> NodeCore:
    """A, primary of Node 1, and P2, the only application of Node 2."""
    peer = PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False)
    settings = attrs.evolve(core_settings(partner=False), peers=(peer,), nodes={1: "DC", 2: "DC"})
    core = NodeCore(settings)
    core.start(0.0)
    core.handle(EpochClaimed(1, True, 1), 0.0)
    core.handle(FenceAnswered(1), 0.0)
    core.handle(SessionsLoaded((), 1), 0.0)
    core.handle(PeerLinkUp("P2"), 0.0)
    core.handle(MemberAnnounced(MemberInfo("P2", 2, "DC", "primary", 1)), 0.0)
    assert core.mode == "primary"
    return core


def test_the_dead_nodes_round_comes_a_grace_after_its_last_link_went_down() -> None:
    core = _with_a_lone_peer_node()
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0):
        core.tick(t)
    core.handle(PeerLinkDown("P2"), 10.3)
    due = 10.3 + ORPHAN_GRACE
    assert core.next_deadline() <= due
    assert LoadOrphans(2) not in core.tick(due - 0.01)
    assert LoadOrphans(2) in core.tick(due)


def test_a_node_back_within_the_grace_is_not_adopted() -> None:
    core = _with_a_lone_peer_node()
    core.handle(PeerLinkDown("P2"), 10.3)
    core.handle(PeerLinkUp("P2"), 11.0)
    assert not any(
        isinstance(c, LoadOrphans) for t in (11.5, 12.3, 13.0, 14.0) for c in core.tick(t)
    )
