"""Nothing is created while a takeover is under way (its claim won, its fence or its
recovery not answered yet): the Node's stored sessions are not known yet.

Found by `orsim search` (seed 241, demo; kept as
`scenarios/search-unowned-rule-waits-for-the-takeover.yaml`): ORS_1_B, thawed after its
partner was killed and restarted, claimed the Node, and while its fence and its recovery
were under way the unowned rule had it create a call that the restarted ORS_1 had
created and written. The recovery then found the call already under way: one session
created twice in one Node. The watch and route-request paths already waited (the watcher
learns the new role only at the takeover's end); these tests keep them so.
"""

from __future__ import annotations

from collections.abc import Sequence

from helpers import core_settings, session_writes
from test_node_deferred_recovery_holds_creations import OLD_CREATION, old_primary_session
from test_node_unowned import call_of_node_2, node_1_linked

from orsim.node._core import (
    RECLAIM_WAIT,
    EpochClaimed,
    FenceAnswered,
    FenceTServer,
    LoadSessions,
    NodeCore,
    Note,
    PeerLinkDown,
    QueryCall,
    RouteRequested,
    SessionsLoaded,
    WriteSession,
)


def _claimed_with_its_fence_unanswered() -> NodeCore:
    core = NodeCore(core_settings(partner=False), wall=1_700_000_001.0)
    core.start(0.0)
    assert core.handle(EpochClaimed(1, True, 1), 0.0) == [FenceTServer(1), LoadSessions(1)]
    assert core.awaiting_fence
    return core


def test_a_watch_ending_while_the_fence_waits_is_held_for_the_recovery() -> None:
    core = _claimed_with_its_fence_unanswered()
    # Not primary yet for its watcher: the call is watched, and its watch ends before
    # the T-Server answers the fence.
    assert session_writes(core.handle(RouteRequested("c1", "5000", redelivered=True), 0.1)) == []
    assert session_writes(core.tick(1.0)) == []
    assert core.handle(FenceAnswered(1), 1.1) == []  # the sessions are read already
    stored = old_primary_session("c1")
    out = core.handle(SessionsLoaded((stored,), 1), 1.2)
    assert session_writes(out) == []  # carried on with the old primary's creation
    assert QueryCall("c1") in out
    assert core.calls["c1"].recovered and core.calls["c1"].created_at == OLD_CREATION


def test_a_held_call_the_recovery_did_not_give_back_is_created_after_it() -> None:
    core = _claimed_with_its_fence_unanswered()
    core.handle(RouteRequested("c2", "5000"), 0.1)
    core.handle(FenceAnswered(1), 0.2)
    assert session_writes(core.tick(1.0)) == []  # the recovery's load is still under way
    (write,) = session_writes(core.handle(SessionsLoaded((), 1), 1.1))
    assert write.create and write.session.call_id == "c2" and write.session.epoch == 1
    assert core.mode == "primary"


def test_a_takeover_refused_at_its_fence_creates_nothing_it_held() -> None:
    core = _claimed_with_its_fence_unanswered()
    core.handle(RouteRequested("c3", "5000"), 0.1)
    assert session_writes(core.tick(1.0)) == []
    out = core.handle(FenceAnswered(1, refused=True), 1.1)
    assert session_writes(out) == [] and not any(isinstance(c, LoadSessions) for c in out)
    assert core.mode != "primary"


def _node_1_claimed_with_its_fence_unanswered() -> NodeCore:
    """ "A" of Node 1, every application of Nodes 1-3 linked, its claim won and its fence
    not answered."""
    core = node_1_linked()
    assert core.handle(EpochClaimed(1, True, 1), 0.0) == [FenceTServer(1), LoadSessions(1)]
    return core


def _created(commands: Sequence[object], call_id: str) -> bool:
    return any(isinstance(c, WriteSession) and c.session.call_id == call_id for c in commands)


def test_the_unowned_rule_waits_for_the_takeover() -> None:
    """The found case's path: a call of Nodes that have since gone falls to this Node
    while its takeover waits; it is created once the takeover is over, not before."""
    core = _node_1_claimed_with_its_fence_unanswered()
    call = call_of_node_2()
    core.handle(RouteRequested(call, "5000", expires=30.0), 1.0)
    for app in ("C", "C_B", "E", "E_B"):
        core.handle(PeerLinkDown(app), 1.5)
    now = 1.5
    while now < 10.0:
        now = core.next_deadline()
        assert not _created(core.tick(now), call), f"created at {now} during the takeover"
    assert core.handle(FenceAnswered(1), now) == []
    assert not _created(core.handle(SessionsLoaded((), 1), now), call)
    created: list[object] = []
    while now < 20.0 and not created:
        now = core.next_deadline()
        out = core.tick(now)
        created = [c for c in out if _created([c], call)]
    assert created, "the unowned call was never created after the takeover"
    assert Note("unowned_call_created", (("call_id", call),)) in out


def test_the_unowned_rule_waits_for_a_deferred_recovery_as_the_other_creations_do() -> None:
    """The store did not answer the takeover's load: for ``RECLAIM_WAIT`` the Node's
    stored sessions may still come back, and the unowned rule waits with the partner's
    announced calls and the held ones; then it creates the call (unwritten if the store
    is still away)."""
    core = _node_1_claimed_with_its_fence_unanswered()
    call = call_of_node_2()
    core.handle(RouteRequested(call, "5000", expires=30.0), 1.0)
    for app in ("C", "C_B", "E", "E_B"):
        core.handle(PeerLinkDown(app), 1.5)
    assert core.handle(FenceAnswered(1), 1.8) == []
    core.handle(SessionsLoaded(None, 1), 1.8)  # the store did not answer
    assert core.mode == "primary"
    now = 1.8
    while now < 1.8 + RECLAIM_WAIT:
        now = core.next_deadline()
        out = core.tick(now)
        if now < 1.8 + RECLAIM_WAIT:
            assert not _created(out, call), f"created at {now}, while the recovery waits"
    created: list[object] = []
    while now < 20.0 and not created:
        now = core.next_deadline()
        created = [c for c in core.tick(now) if _created([c], call)]
    assert created, "the unowned call was never created after the wait"
