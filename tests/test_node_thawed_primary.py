"""A primary woken from a freeze after its backup took the Node over.

Found by `make test` (1 run in about 8 of
`test_cluster_processes.py::test_primary_failure_under_load_loses_no_call[STOP]`):
ORS_1, thawed, read the newer epoch and stepped down; then it read that its old link to
ORS_1_B was closed (ORS_1_B had given it up by ADDP while it was frozen), took that for
its partner's loss, and claimed the Node back from the healthy ORS_1_B. Genesys: the
backup takes over when the primary is gone; a partner that is only reconnecting is not.
"""

from __future__ import annotations

from helpers import stepped_down_core

from orsim.node._core import (
    ClaimEpochCmd,
    Command,
    EpochClaimed,
    MemberAnnounced,
    ModeChanged,
    NodeCore,
    PeerLinkDown,
    PeerLinkUp,
)
from orsim.node._membership import MemberInfo


def _thawed() -> NodeCore:
    """The primary, frozen meanwhile, reads the store's newer epoch (B's) and steps down."""
    return stepped_down_core()


def _claims(commands: list[Command]) -> list[ClaimEpochCmd]:
    return [c for c in commands if isinstance(c, ClaimEpochCmd)]


def test_an_old_link_closing_after_a_step_down_is_not_the_partners_loss() -> None:
    core = _thawed()
    # B's heartbeats from before the freeze, read from the old link's buffer, then the
    # old link's close (B gave A up by ADDP while A was frozen).
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "backup", 1)), 10.0005)
    assert not _claims(core.handle(PeerLinkDown("B"), 10.001))
    core.handle(PeerLinkUp("B"), 10.05)  # B, alive, reconnects
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), 10.05)
    for t in (10.5, 11.0, 12.0, 15.0):
        assert not _claims(core.tick(t))
    assert core.mode == "backup"


def test_a_partner_still_unreachable_when_the_probe_ends_is_lost() -> None:
    """B died while A was frozen: A takes its Node back, one probe window later."""
    core = _thawed()
    assert not _claims(core.handle(PeerLinkDown("B"), 10.001))
    claims = [c for t in (10.5, 11.0, 11.5, 12.5) for c in _claims(core.tick(t))]
    assert claims == [ClaimEpochCmd(2, 3)]


def test_the_new_modes_start_is_known_while_the_takeover_is_under_way() -> None:
    """The role changes when the claim is won; the fence and the session recovery come
    after. A status asked in between shows the new mode, so it must show when that mode
    began, not when the last one did (found by CI: a three-host test read ORS_1_B as
    primary "2.4 s before" the SIGKILL that made it so: the start-up's mode_since)."""
    core = _thawed()
    core.handle(PeerLinkDown("B"), 10.001)
    core.wall = 1_000.0
    (claim,) = [c for c in core.tick(11.5) if isinstance(c, ClaimEpochCmd)]
    assert core.mode == "backup"  # claiming
    core.wall = 1_000.25
    rest = core.handle(EpochClaimed(claim.new, True, claim.new), 11.75)
    assert core.mode == "primary"
    assert not any(isinstance(c, ModeChanged) for c in rest)  # the fence is under way
    assert core.mode_since == 1_000.25


def test_a_partner_that_came_back_and_went_again_within_the_probe_is_lost_at_once() -> None:
    """B reconnects after A stepped down, announces itself primary, and dies again
    before A's probe ends. A link made after the step-down is no stale link: its loss,
    with every other link down, is B's, and A claims at once.

    Two bugs came this way. Told only "absent" at the probe's end, A kept its partner up
    and never claimed (`orsim search`, seed 127: no primary for 7 s; kept as
    `scenarios/search-partner-gone-again-within-the-probe-is-lost.yaml`). Then A waited
    for the probe's end, the Node without a primary meanwhile
    (`scenarios/thawed-primary-takes-over-at-once.yaml`: 0.8 s)."""
    core = _thawed()
    assert not _claims(core.handle(PeerLinkDown("B"), 10.001))  # the old link
    core.handle(PeerLinkUp("B"), 10.05)
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), 10.05)
    assert _claims(core.handle(PeerLinkDown("B"), 10.5)) == [ClaimEpochCmd(2, 3)]
    assert not [c for t in (10.75, 11.0, 11.5, 12.5) for c in _claims(core.tick(t))]


def test_a_connection_given_up_while_frozen_is_no_proof_of_the_partner() -> None:
    """At the thaw A accepts what B dialled while A was frozen: a link up and, its Hello
    read, closed at once (B gave it up). Its close is no loss of B: A waits for the
    probe's end, by which B has relinked."""
    core = _thawed()
    core.handle(PeerLinkUp("B"), 10.002)  # from the backlog
    assert not _claims(core.handle(PeerLinkDown("B"), 10.003))
    assert not _claims(core.handle(PeerLinkDown("B"), 10.004))  # the old link
    core.handle(PeerLinkUp("B"), 10.2)  # B relinks for real
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), 10.2)
    assert not [c for t in (10.5, 11.0, 12.0, 15.0) for c in _claims(core.tick(t))]
    assert core.mode == "backup"


def test_an_old_link_closing_after_the_partner_relinked_is_not_its_loss() -> None:
    """B relinks while A's old link to it is still open (A has not read its close yet):
    that close leaves B live, and nothing is claimed."""
    core = _thawed()
    core.handle(PeerLinkUp("B"), 10.05)  # the new link; the old one still counted
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), 10.05)
    assert not _claims(core.handle(PeerLinkDown("B"), 10.1))  # the old link's close
    assert not [c for t in (10.5, 11.0, 12.0, 15.0) for c in _claims(core.tick(t))]
    assert core.mode == "backup"
