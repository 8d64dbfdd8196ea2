"""A Node that looks alive but has nobody acting for it is adopted like a gone one.

Found by `orsim search` (seed 411, pair-and-lone-slow-urs; kept as
`scenarios/search-headless-node-adopted.yaml`): ORS_1 died holding a call that waited for
the slow URS; its backup, cut from the SIP Server and restarted twice, stayed linked to
every peer but could not take the Node over (its fence was never confirmed). The other
Node counted Node ORS_1 alive and never adopted its session; the call was lost. Each
application now says whether it is ``headless`` (it does not hold its Node and has no
live partner that does), and a Node whose every reachable application says so is gone
for the orphan round.
"""

from __future__ import annotations

import attrs
from helpers import claimed_primary, core_settings, primary_core
from hypothesis import given
from hypothesis import strategies as st

from orsim.node._core import (
    ORPHAN_GRACE,
    Announce,
    Command,
    LoadOrphans,
    MemberAnnounced,
    NodeCore,
    PeerLinkDown,
    PeerLinkUp,
)
from orsim.node._membership import MemberInfo, PeerView
from orsim.node._messages import Member
from orsim.node._settings import PeerApp


def _beside_a_pair() -> NodeCore:
    """A, primary of lone Node 1; Node 2 is the pair P2 (primary) and P2B (backup)."""
    peers = (
        PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False),
        PeerApp("P2B", 2, "DC", "127.0.0.1", 4, is_backup=True),
    )
    settings = attrs.evolve(core_settings(partner=False), peers=peers, nodes={1: "DC", 2: "DC"})
    core = NodeCore(settings)
    core.start(0.0)
    claimed_primary(core)
    for app, mode in (("P2", "primary"), ("P2B", "backup")):
        core.handle(PeerLinkUp(app), 0.0)
        core.handle(MemberAnnounced(MemberInfo(app, 2, "DC", mode, 1)), 0.0)
    return core


def _rounds(core: NodeCore, start: float, end: float) -> list[Command]:
    out: list[Command] = []
    t = start
    while t <= end:
        out += core.tick(t)
        t = round(t + 0.25, 6)
    return out


def test_a_node_whose_backup_cannot_take_over_is_adopted_a_grace_later() -> None:
    core = _beside_a_pair()
    core.handle(PeerLinkDown("P2"), 5.0)  # the primary dies
    # Its backup is linked, but cut from the T-Server: it says nobody acts for Node 2.
    core.handle(MemberAnnounced(MemberInfo("P2B", 2, "DC", "backup", 2, headless=True)), 5.1)
    assert LoadOrphans(2) not in _rounds(core, 5.25, 6.5)
    assert LoadOrphans(2) in _rounds(core, 6.75, 5.1 + ORPHAN_GRACE + 1.0)


def test_a_backup_that_sees_its_primary_keeps_its_node_out_of_adoption() -> None:
    """P2 is cut from this application only: P2B still has it, and says so."""
    core = _beside_a_pair()
    core.handle(PeerLinkDown("P2"), 5.0)
    core.handle(MemberAnnounced(MemberInfo("P2B", 2, "DC", "backup", 1)), 5.1)
    assert LoadOrphans(2) not in _rounds(core, 5.25, 12.0)


def test_a_node_that_acts_again_within_the_grace_is_not_adopted() -> None:
    core = _beside_a_pair()
    core.handle(PeerLinkDown("P2"), 5.0)
    core.handle(MemberAnnounced(MemberInfo("P2B", 2, "DC", "backup", 2, headless=True)), 5.1)
    core.tick(5.5)
    core.handle(MemberAnnounced(MemberInfo("P2B", 2, "DC", "primary", 2)), 6.0)
    assert LoadOrphans(2) not in _rounds(core, 6.0, 12.0)


def _backup_beside_a_lone_node() -> NodeCore:
    """A, configured backup of Node 1 (its primary B live and primary); P2 is Node 2."""
    base = core_settings(partner=True)
    peers = (*base.peers, PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False))
    settings = attrs.evolve(base, configured_backup=True, peers=peers, nodes={1: "DC", 2: "DC"})
    core = NodeCore(settings)
    core.start(0.0)
    for app, node, mode in (("B", 1, "primary"), ("P2", 2, "primary")):
        core.handle(PeerLinkUp(app), 0.0)
        core.handle(MemberAnnounced(MemberInfo(app, node, "DC", mode, 1)), 0.0)
    assert core.mode == "backup"
    return core


def test_an_application_says_it_is_headless_only_when_nobody_holds_its_node() -> None:
    assert not primary_core(partner=True).member_info().headless
    backup = _backup_beside_a_lone_node()
    assert not backup.member_info().headless  # its primary is live
    backup.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "backup", 1)), 0.1)
    assert backup.member_info().headless  # linked, but not holding
    backup.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 1)), 0.2)
    backup.handle(PeerLinkDown("B"), 0.3)
    assert backup.member_info().headless  # gone; the takeover is not done yet


def test_a_change_of_headless_is_told_to_every_peer_by_the_next_heartbeat() -> None:
    core = _backup_beside_a_lone_node()
    out = core.handle(PeerLinkDown("B"), 1.0)  # its claim is under way from here
    out += _rounds(core, 1.0, 1.0 + core.settings.heartbeat + 0.25)
    told = [c for c in out if isinstance(c, Announce) and "P2" in c.apps and c.info.headless]
    assert told, out


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.booleans(), st.booleans()),
        max_size=8,
    )
)
def test_headless_nodes_are_live_nodes_whose_every_reachable_app_is_headless(
    apps: list[tuple[str, bool, bool]],
) -> None:
    """The model: a Node (this one aside) is headless iff it has a reachable application
    and each reachable one announced ``headless``; one that said nothing acts."""
    app_nodes = {"a": 2, "b": 2, "c": 3, "d": 1}
    view = PeerView(nodes={1: "", 2: "", 3: ""}, app_nodes=app_nodes)
    state: dict[str, tuple[bool, bool]] = {}
    for app, live, headless in apps:
        state[app] = (live, headless)
    for app, (live, headless) in state.items():
        if live:
            view.link_up(app)
            view.announce(MemberInfo(app, app_nodes[app], "", "backup", 1, headless=headless))
    expected = set()
    for node in (2, 3):
        reachable = [state[a] for a, n in app_nodes.items() if n == node and a in state]
        reachable = [s for s in reachable if s[0]]
        if reachable and all(h for _, h in reachable):
            expected.add(node)
    assert view.headless_nodes(1) == expected


@given(st.booleans())
def test_member_round_trips_headless_and_leaves_it_out_when_false(headless: bool) -> None:
    member = Member(MemberInfo("P", 2, "DC", "backup", 3, headless=headless))
    data = member.to_json()
    assert isinstance(data, dict)
    assert ("headless" in data) is headless
    assert Member.from_json(data) == member
