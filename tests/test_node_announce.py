"""How often an ORS application announces itself to the applications of other Nodes: often
enough that no link to them goes silent for its ADDP timeout (orsim.node._core)."""

from __future__ import annotations

import attrs
from helpers import core_settings

from orsim.node._core import OTHER_NODES_EVERY, Announce, NodeCore, announce_every
from orsim.node._settings import NodeSettings, PeerApp


def _settings(heartbeat: float = 0.25, *timeouts: float, partner_addp: float = 1.0) -> NodeSettings:
    """ "A" (Node 1, partner "B" with ``partner_addp``) with one peer per ADDP timeout."""
    base = core_settings(partner=True)
    partner = attrs.evolve(base.peers[0], addp_timeout=partner_addp)
    others = tuple(
        PeerApp(f"P{i}", 10 + i, "DC", "127.0.0.1", 10 + i, is_backup=False, addp_timeout=t)
        for i, t in enumerate(timeouts)
    )
    nodes = {1: "DC", **{p.node_id: "DC" for p in others}}
    return attrs.evolve(base, peers=(partner, *others), nodes=nodes, heartbeat=heartbeat)


def test_within_the_shortest_addp_timeout_of_the_links_to_other_nodes() -> None:
    """Default links (2 s, heartbeat 0.25 s): every 7 beats, 1.75 s, not every 2 s, when
    each link's ADDP poll was due too; a shorter link sets the pace."""
    assert announce_every(_settings(0.25, 2.0, 2.0)) == 7
    assert announce_every(_settings(0.25, 2.0, 1.0)) == 3
    assert announce_every(_settings(0.25, 0.1)) == 1


def test_never_less_often_than_before() -> None:
    """Long ADDP timeouts, ADDP off, or no other Node: ``OTHER_NODES_EVERY`` as before."""
    assert announce_every(_settings(0.25, 10.0)) == OTHER_NODES_EVERY
    assert announce_every(_settings(0.25, 0.0)) == OTHER_NODES_EVERY
    assert announce_every(_settings(0.25)) == OTHER_NODES_EVERY


def test_the_partner_link_does_not_count() -> None:
    """The partner hears every heartbeat anyway: its link's timeout sets nothing."""
    assert announce_every(_settings(0.25, 2.0, partner_addp=0.25)) == 7


def test_the_core_announces_to_everyone_every_that_many_beats() -> None:
    """The partner hears every heartbeat; the other Nodes' applications every 7th."""
    settings = _settings(0.25, 2.0, 2.0)
    core = NodeCore(settings)
    core.start(0.0)
    everyone = []
    now = 0.0
    for _ in range(21):
        now = core.next_deadline()
        announced = [c for c in core.tick(now) if isinstance(c, Announce)]
        assert len(announced) == 1
        everyone.append(set(announced[0].apps) == {"B", "P0", "P1"})
        if not everyone[-1]:
            assert announced[0].apps == ("B",)
    assert [i + 1 for i, e in enumerate(everyone) if e] == [7, 14, 21]
