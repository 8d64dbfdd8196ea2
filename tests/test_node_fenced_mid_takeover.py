"""A takeover whose fence waits while the store already shows a newer holder.

Found by `orsim search` (seed 107, three-nodes; kept as
`scenarios/search-takeover-stuck-on-its-fence-steps-down.yaml`): ORS_W1_B, cut from the
SIP Server and from its partner, won the claim on its partner's crash, and its fence
waited on the silent T-Server link. Its partner, restarted and unable to see it, claimed
the next epoch and became primary. ORS_W1_B read that epoch from the store but kept it
for after its takeover, which ended only when the heal closed the T-Server link: both
showed primary for 0.6 s.
"""

from __future__ import annotations

from helpers import stepped_down_core

from orsim.node._core import (
    ClaimEpochCmd,
    EpochClaimed,
    EpochRead,
    FenceAnswered,
    FenceTServer,
    LoadSessions,
    ModeChanged,
    NodeCore,
    PeerLinkDown,
    QueryCall,
    ReadEpoch,
    SessionsLoaded,
)
from orsim.store import Session


def _session(call_id: str) -> Session:
    """Node 1's stored session of ``call_id``, written by B at epoch 2."""
    return Session(call_id=call_id, node_id=1, epoch=2, dn="5000", state="created", created_at=1.0)


def _taking_over_with_its_fence_unanswered() -> NodeCore:
    """A, stepped down for B (epoch 2), claims epoch 3 when B goes; the fence waits."""
    core = stepped_down_core()
    core.handle(PeerLinkDown("B"), 10.001)
    claims = [c for t in (10.5, 11.0, 11.5, 12.5) for c in core.tick(t)]
    assert ClaimEpochCmd(2, 3) in claims
    # The sessions are read while the fence is asked (the claim is won).
    assert core.handle(EpochClaimed(3, True, 3), 12.6) == [FenceTServer(3), LoadSessions(3)]
    assert core.mode == "primary"  # its role, and what it announces to its peers
    assert core.status_mode == "backup"  # it does not act before the fence is confirmed
    return core


def test_a_newer_epoch_read_while_the_fence_waits_steps_it_down_at_once() -> None:
    core = _taking_over_with_its_fence_unanswered()
    assert ReadEpoch() in core.tick(12.9)  # it reads the Node's epoch every beat
    out = core.handle(EpochRead(4), 12.9)
    assert core.mode == "backup" and core.current_epoch == 4
    (changed,) = [c for c in out if isinstance(c, ModeChanged)]
    assert changed.new.mode == "backup"


def test_the_fences_late_answer_changes_nothing() -> None:
    core = _taking_over_with_its_fence_unanswered()
    core.handle(EpochRead(4), 12.9)
    assert core.handle(FenceAnswered(3), 13.5) == []
    assert core.mode == "backup" and core.current_epoch == 4


# Found by `orsim search` (seed 179, demo; kept as
# `scenarios/search-store-claim-waits-for-the-tserver-fence.yaml`): a claim won in the
# store, and the partner's claim won at the T-Server (its store away), both at one epoch.
# The T-Server refuses the store claimant's fence; the takeover must end there, not go on
# to recover sessions and report primary beside the T-Server's holder.
def test_a_refused_fence_ends_the_takeover_before_it_recovers() -> None:
    core = _taking_over_with_its_fence_unanswered()
    out = core.handle(FenceAnswered(3, refused=True), 12.7)
    assert not any(isinstance(c, LoadSessions) for c in out)  # the takeover does not go on
    assert core.mode == "backup" and core.current_epoch == 4
    (changed,) = [c for c in out if isinstance(c, ModeChanged)]
    assert changed.new.mode == "backup"
    # The sessions read for it come back after: they carry nothing on.
    assert core.handle(SessionsLoaded((_session("c1"),), 3), 12.8) == []
    assert not core.calls


def test_an_accepted_fence_goes_on_to_recover() -> None:
    core = _taking_over_with_its_fence_unanswered()
    assert core.handle(FenceAnswered(3), 12.7) == []  # its sessions are on their way
    assert core.mode == core.status_mode == "primary"
    out = core.handle(SessionsLoaded((_session("c1"),), 3), 12.8)
    assert QueryCall("c1") in out and any(isinstance(c, ModeChanged) for c in out)


def test_sessions_read_before_the_fence_is_answered_wait_for_it() -> None:
    core = _taking_over_with_its_fence_unanswered()
    assert core.handle(SessionsLoaded((_session("c1"),), 3), 12.7) == []
    assert not core.calls and core.status_mode == "backup"  # nothing before the fence
    out = core.handle(FenceAnswered(3), 12.8)
    assert QueryCall("c1") in out and any(isinstance(c, ModeChanged) for c in out)
    assert core.calls["c1"].recovered and core.status_mode == "primary"
    assert not any(isinstance(c, LoadSessions) for c in out)  # read once
