"""A creation the store took is said so (``session {claimed: true}``), and a creation
without the store's word yields to it, to the store's answer once it is back, and to the
T-Server's ``call_routed``; a redelivered call is not said created before the store has
taken it.

Both were found with a lone Node thawed into a store outage: calls redelivered to it were
said created, then left at the store's second miss, and nobody routed them
(`scenarios/lone-node-thawed-into-a-store-outage.yaml`, 1 lost); and the Reserved Node,
which had created the Node's calls without the store meanwhile, routed them as the thawed
Node did, whose creations the store had taken
(`scenarios/lone-node-thawed-as-the-store-returns.yaml`, 6 routed twice).
"""

from __future__ import annotations

import itertools

import attrs
from helpers import claimed_primary, core_settings
from test_node_unpersisted_creation import _calls_assigned_to, _kinds, _primary

from orsim.node._core import (
    CallQueried,
    CallRouted,
    ClaimLate,
    Command,
    DeleteSession,
    LateClaimed,
    MemberAnnounced,
    NodeCore,
    Note,
    NotifySession,
    PeerLinkUp,
    Phase,
    QueryCall,
    RouteAnswered,
    RouteRequested,
    SelectTarget,
    SendRoute,
    SessionAnnounced,
    SessionsLoaded,
    SessionWritten,
    StoreBack,
    TargetSelected,
    WriteOutcome,
    WriteSession,
)
from orsim.node._membership import MemberInfo
from orsim.node._settings import PeerApp


def _notices(commands: list[Command]) -> list[NotifySession]:
    return [c for c in commands if isinstance(c, NotifySession)]


def test_a_redelivered_call_kept_from_the_store_is_said_under_way_not_created() -> None:
    core = _primary(other_node=True)
    c1 = next(_calls_assigned_to(1, reserved=2))
    core.handle(RouteRequested(c1, "5000", 100.0, redelivered=True), 1.0)
    first = core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.0)
    (notice,) = _notices(first)
    assert notice.pending and not notice.claimed
    assert WriteSession in _kinds(first)  # the second try, once the store answers
    # The store does not answer it either: the call waits for the store's word, and
    # nothing says it was created, so its watchers' watch runs on and the Reserved Node
    # may create it.
    second = core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.5)
    assert not _notices(second)
    assert [n.event for n in second if isinstance(n, Note)] == ["redelivered_call_awaits_store"]
    assert core.calls[c1].phase is Phase.AWAITING_STORE
    assert not [c for c in second if isinstance(c, SelectTarget | SendRoute)]


def _awaiting_store() -> tuple[NodeCore, str]:
    """Node 1's primary with a redelivered call whose two writes the store did not answer."""
    core = _primary(other_node=True)
    c1 = next(_calls_assigned_to(1, reserved=2))
    core.handle(RouteRequested(c1, "5000", 100.0, redelivered=True), 1.0)
    core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.0)
    core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.5)
    assert core.calls[c1].phase is Phase.AWAITING_STORE
    return core, c1


def test_a_redelivered_call_waiting_for_the_store_is_routed_if_the_store_says_ours() -> None:
    """Found by the stateful HA test: its first write landed, unanswered, and its second
    try was not answered either. Left then, the call was lost: the store's claim made every other
    Node defer to this one, which no longer carried it."""
    for outcome, routed in ((WriteOutcome.OWNED, True), (WriteOutcome.ELSEWHERE, False)):
        core, c1 = _awaiting_store()
        (claim,) = core.handle(StoreBack(1), 3.0)
        assert isinstance(claim, ClaimLate) and claim.session.call_id == c1
        out = core.handle(LateClaimed(c1, outcome), 3.1)
        if routed:
            (notice,) = _notices(out)
            assert notice.claimed
            assert out[-1] == QueryCall(c1)
            assert core.handle(CallQueried(c1, "in_flight"), 3.2) == [SelectTarget(c1, "5000")]
        else:
            assert [n.event for n in out if isinstance(n, Note)] == ["call_left_to_store_claim"]
            assert c1 not in core.calls


def test_a_redelivered_call_waiting_for_the_store_yields_to_a_claim_pushed_meanwhile() -> None:
    core, c1 = _awaiting_store()
    out = core.handle(SessionAnnounced(c1, claimed=True, node_id=2), 2.0)
    assert [n.event for n in out if isinstance(n, Note)] == ["call_left_to_store_claim"]
    assert c1 not in core.calls


def test_a_redelivered_call_the_store_takes_at_the_second_try_is_said_claimed_to_all() -> None:
    core = _primary(other_node=True)
    c1 = next(_calls_assigned_to(1, reserved=2))
    core.handle(RouteRequested(c1, "5000", 100.0, redelivered=True), 1.0)
    core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.0)
    out = core.handle(SessionWritten(c1, WriteOutcome.OWNED), 1.3)
    (notice,) = _notices(out)
    # Every peer: a Node that thought this one gone may have taken the call as its own.
    assert notice.claimed and not notice.pending and notice.apps == ("P2",)
    assert QueryCall in _kinds(out)


def test_a_call_written_at_once_is_said_claimed_and_one_gone_on_without_is_not() -> None:
    core = _primary(other_node=True)
    c1, c2 = itertools.islice(_calls_assigned_to(1, reserved=2), 2)
    core.handle(RouteRequested(c1, "5000", 100.0), 1.0)
    (owned,) = _notices(core.handle(SessionWritten(c1, WriteOutcome.OWNED), 1.0))
    assert owned.claimed
    core.handle(RouteRequested(c2, "5000", 100.0), 1.0)
    (away,) = _notices(core.handle(SessionWritten(c2, WriteOutcome.UNPERSISTED), 1.0))
    assert not away.claimed and not away.pending


def _gone_on_without_the_store() -> tuple[NodeCore, str]:
    """Node 1's primary, selecting a target for a call it created without the store."""
    core = _primary(other_node=True)
    call_id = next(_calls_assigned_to(1, reserved=2))
    core.handle(RouteRequested(call_id, "5000", 100.0), 1.0)
    core.handle(SessionWritten(call_id, WriteOutcome.UNPERSISTED), 1.0)
    core.handle(SessionWritten(call_id, WriteOutcome.UNPERSISTED), 1.5)
    out = core.handle(CallQueried(call_id, "in_flight"), 1.5)
    assert SelectTarget in _kinds(out)
    return core, call_id


def test_a_creation_without_the_store_yields_to_another_nodes_claim() -> None:
    core, call_id = _gone_on_without_the_store()
    out = core.handle(SessionAnnounced(call_id, claimed=True, node_id=2), 1.6)
    assert [n.event for n in out if isinstance(n, Note)] == ["call_left_to_store_claim"]
    assert call_id not in core.calls
    # URS's answer comes after: nothing is routed.
    assert not core.handle(TargetSelected(call_id, "Agent_1"), 2.0)


def test_news_that_does_not_end_a_creation() -> None:
    # Not claimed (the other Node went on without the store too): the T-Server decides.
    core, call_id = _gone_on_without_the_store()
    assert not core.handle(SessionAnnounced(call_id, node_id=2), 1.6)
    assert call_id in core.calls
    # From this Node itself (its own partner's creation is fenced, not yielded to).
    assert not core.handle(SessionAnnounced(call_id, claimed=True, node_id=1), 1.6)
    assert call_id in core.calls
    # Its route already sent: too late to leave it.
    core.handle(TargetSelected(call_id, "Agent_1"), 1.7)
    assert not core.handle(SessionAnnounced(call_id, claimed=True, node_id=2), 1.8)
    assert call_id in core.calls


def test_a_creation_the_store_took_does_not_yield() -> None:
    core = _primary(other_node=True)
    call_id = next(_calls_assigned_to(1, reserved=2))
    core.handle(RouteRequested(call_id, "5000", 100.0), 1.0)
    core.handle(SessionWritten(call_id, WriteOutcome.OWNED), 1.0)
    assert not core.handle(SessionAnnounced(call_id, claimed=True, node_id=2), 1.1)
    assert call_id in core.calls


def test_the_store_back_claims_the_calls_that_went_on_without_it() -> None:
    """Once the store answers, a creation that went on without it is written: the store
    says whether another Node's came first (``scenarios/
    lone-node-thawed-unlinked-as-the-store-returns.yaml``: the other Node had no link
    to say so)."""
    core, call_id = _gone_on_without_the_store()
    (claim,) = core.handle(StoreBack(1), 2.0)
    assert isinstance(claim, ClaimLate) and claim.session.call_id == call_id
    out = core.handle(LateClaimed(call_id, WriteOutcome.ELSEWHERE), 2.1)
    assert [n.event for n in out if isinstance(n, Note)] == ["call_left_to_store_claim"]
    assert call_id not in core.calls
    assert not core.handle(TargetSelected(call_id, "Agent_1"), 2.2)

    core, call_id = _gone_on_without_the_store()
    core.handle(StoreBack(1), 2.0)
    (notice,) = core.handle(LateClaimed(call_id, WriteOutcome.OWNED), 2.1)
    assert isinstance(notice, NotifySession) and notice.claimed  # the other Node leaves it
    assert core.calls[call_id].claimed
    assert not core.handle(StoreBack(1), 3.0)  # claimed: nothing to claim again

    # Routed before the store answered: the session the claim wrote goes.
    core, call_id = _gone_on_without_the_store()
    core.handle(StoreBack(1), 2.0)
    core.handle(TargetSelected(call_id, "Agent_1"), 2.05)
    core.handle(RouteAnswered(call_id, "routed"), 2.06)
    out = core.handle(LateClaimed(call_id, WriteOutcome.OWNED), 2.1)
    assert out == [DeleteSession(1, 1, call_id)]


def test_a_call_the_tserver_says_routed_while_urs_chose_is_not_routed_again() -> None:
    """Both Nodes went on without the store; the other routed first. Its ``call_routed``
    arrives while URS chooses here: the call is over, and nothing is sent."""
    core, call_id = _gone_on_without_the_store()
    assert not core.handle(CallRouted(call_id), 1.7)
    out = core.handle(TargetSelected(call_id, "Agent_1"), 2.0)
    assert _kinds(out) == [Note, DeleteSession]
    assert call_id not in core.calls


def test_a_reserved_node_creating_a_watched_call_tells_its_partner_once() -> None:
    """A, primary of Node 1 with backup B, is the Reserved Node of a call of Node 2: it
    creates the call when its watch runs out, and is then the call's Reserved Node too;
    its partner was on the list twice, and was sent the push twice."""
    base = core_settings(partner=True)
    peers = (*base.peers, PeerApp("P2", 2, "DC", "127.0.0.1", 3, is_backup=False))
    core = NodeCore(attrs.evolve(base, peers=peers, nodes={1: "DC", 2: "DC"}))
    core.start(0.0)
    for app, node, mode in (("B", 1, "backup"), ("P2", 2, "primary")):
        core.handle(PeerLinkUp(app), 0.0)
        core.handle(MemberAnnounced(MemberInfo(app, node, "DC", mode, 1)), 0.0)
    claimed_primary(core)
    call_id = next(_calls_assigned_to(2, reserved=1))
    assert not core.handle(RouteRequested(call_id, "5000", 100.0), 1.0)
    created = [c for t in (1.2, 1.4, 1.6) for c in core.tick(t) if isinstance(c, WriteSession)]
    assert [c.session.call_id for c in created] == [call_id]
    (notice,) = _notices(core.handle(SessionWritten(call_id, WriteOutcome.OWNED), 1.6))
    assert notice.apps == ("B",)


def test_a_redelivered_call_waiting_for_the_store_is_left_if_the_node_moved_on() -> None:
    """The store, back, shows the Node claimed by a newer epoch: this application no
    longer holds it, and the Node's holder recovers the call from the store (or the
    Reserved Node's watch runs on), so the call is left, not kept forever."""
    core, c1 = _awaiting_store()
    out = core.handle(StoreBack(core.current_epoch + 1), 3.0)
    assert not core.role.role.holds_node
    assert "redelivered_call_left" in [n.event for n in out if isinstance(n, Note)]
    assert c1 not in core.calls and not [c for c in out if isinstance(c, ClaimLate)]


def test_a_redelivered_call_waiting_for_the_store_is_recovered_from_it() -> None:
    """A recovery that finds the call's session under this Node (its first write
    landed) carries it on: the parked call does not keep the recovery from it."""
    core = _primary(other_node=True)
    c1 = next(_calls_assigned_to(1, reserved=2))
    out = core.handle(RouteRequested(c1, "5000", 100.0, redelivered=True), 1.0)
    (write,) = [c for c in out if isinstance(c, WriteSession)]
    core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.0)
    core.handle(SessionWritten(c1, WriteOutcome.UNPERSISTED), 1.5)
    out = core.handle(SessionsLoaded((write.session,), core.current_epoch), 3.0)
    assert QueryCall(c1) in out
    assert core.calls[c1].phase is Phase.CHECKING and core.calls[c1].recovered
