"""A call to create while the takeover's recovery waits for the store is held.

Found by `orsim search` (seed 191, three-nodes-two-dc; kept as
`scenarios/search-deferred-recovery-holds-new-creations.yaml`): ORS_3_B restarted, took
Node ORS_3 over from its frozen partner, and froze itself; thawed, the store deadline the
freeze ran out deferred its recovery, and the T-Server handed it the old primary's
waiting call again. It created the call at once, a second time in the same Node, though
the old primary's session for it was in the store for the recovery to carry on.
"""

from __future__ import annotations

from helpers import core_settings, session_writes

from orsim.node._core import (
    RECLAIM_WAIT,
    EpochClaimed,
    FenceAnswered,
    NodeCore,
    QueryCall,
    RouteRequested,
    SessionsLoaded,
)
from orsim.store import Session

OLD_CREATION = 1_700_000_000.5


def old_primary_session(call_id: str) -> Session:
    """Node 1's stored session of ``call_id``, as its old primary wrote it."""
    return Session(
        call_id=call_id, node_id=1, epoch=0, dn="5000", state="created", created_at=OLD_CREATION
    )


def _primary_with_its_recovery_deferred() -> NodeCore:
    core = NodeCore(core_settings(partner=False), wall=1_700_000_001.0)
    core.start(0.0)
    core.handle(EpochClaimed(1, True, 1), 0.0)
    core.handle(FenceAnswered(1), 0.0)
    core.handle(SessionsLoaded(None, 1), 0.0)  # the store did not answer the load
    assert core.mode == "primary"
    return core


def test_the_recovery_carries_on_the_held_call_with_its_first_creation() -> None:
    core = _primary_with_its_recovery_deferred()
    assert session_writes(core.handle(RouteRequested("c1", "5000", redelivered=True), 0.1)) == []
    stored = old_primary_session("c1")
    out = core.handle(SessionsLoaded((stored,), 1), 0.2)
    assert session_writes(out) == []  # carried on, not created again
    assert QueryCall("c1") in out  # asked first, as every recovered call is
    call = core.calls["c1"]
    assert call.recovered and call.created_at == OLD_CREATION
    assert session_writes(core.tick(0.1 + RECLAIM_WAIT)) == []  # and the wait creates nothing


def test_a_held_call_the_store_never_gave_back_is_created_after_the_wait() -> None:
    core = _primary_with_its_recovery_deferred()
    core.handle(RouteRequested("c2", "5000"), 0.1)
    assert session_writes(core.tick(0.1 + RECLAIM_WAIT / 2)) == []
    (write,) = session_writes(core.tick(0.1 + RECLAIM_WAIT))
    assert write.create and write.session.call_id == "c2"


def test_with_the_sessions_recovered_new_calls_are_created_at_once() -> None:
    core = _primary_with_its_recovery_deferred()
    core.handle(SessionsLoaded((), 1), 0.2)
    (write,) = session_writes(core.handle(RouteRequested("c3", "5000"), 0.3))
    assert write.create
