"""A handover that reaches an application already claiming its Node.

Found by `orsim search` (seed 113, two-nodes-redundant-servers; kept as
`scenarios/search-handover-to-a-claimer-is-not-a-switchover.yaml`): ORS_2 switched its
Node over to ORS_2_B, and ORS_2_B was stopped (SIGTERM) at once. ORS_2 saw it suspend
and claimed the Node back; the handover ORS_2_B pushed meanwhile waited for the claim,
and was then read as a switchover request: the new primary suspended and handed the
Node back to a partner gone to restart. Its Node served nothing for 7.5 s and a call
was lost.
"""

from __future__ import annotations

from helpers import stepped_down_core

from orsim.node._core import (
    ClaimEpochCmd,
    EpochClaimed,
    FenceAnswered,
    FenceTServer,
    HandoverReceived,
    LoadSessions,
    MemberAnnounced,
    PushHandover,
    SessionsLoaded,
)
from orsim.node._membership import MemberInfo


def test_a_handover_met_while_claiming_is_not_a_switchover_request() -> None:
    core = stepped_down_core()  # A, the configured primary; B took the Node over
    # B is stopped: it suspends, A claims; B's handover comes while A claims.
    out = core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "suspending", 2)), 10.1)
    assert ClaimEpochCmd(2, 3) in out
    assert core.handle(HandoverReceived(), 10.1) == []
    assert core.handle(EpochClaimed(3, True, 3), 10.2) == [FenceTServer(3), LoadSessions(3)]
    assert core.handle(FenceAnswered(3), 10.2) == []
    out = core.handle(SessionsLoaded((), 3), 10.2)
    assert not any(isinstance(c, PushHandover) for c in out)
    assert core.mode == "primary" and core.role.role.creates_sessions
