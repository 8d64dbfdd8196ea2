"""The mode a switchover's primary reports once it has handed its Node over.

Found by `orsim search` (seed 103, two-nodes-redundant-servers; kept as
`scenarios/search-handed-over-primary-reports-suspending.yaml`): under a 250 ms delay
between ORS_2 and ORS_2_B, ORS_2 handed its Node over and went on reporting
``primary`` until its partner's takeover reached it, while the partner was primary
already: two primaries of one Node in two consecutive status samples. Once it has
handed over it acts for the Node no more, and says ``suspending``, as a stopping
primary does.
"""

from __future__ import annotations

from helpers import primary_core

from orsim.node._core import (
    EpochRead,
    MemberAnnounced,
    NodeCore,
    PushHandover,
    RouteRequested,
    SessionWritten,
    SwitchoverAsked,
    WriteOutcome,
)
from orsim.node._membership import MemberInfo


def _switching_over_with_a_call() -> NodeCore:
    core = primary_core(partner=True)
    core.handle(RouteRequested("c1", "5000"), 1.0)
    core.handle(SessionWritten("c1", WriteOutcome.OWNED), 1.1)
    out = core.handle(SwitchoverAsked(), 2.0)
    assert not any(isinstance(c, PushHandover) for c in out)  # draining c1 first
    return core


def test_a_draining_primary_still_reports_primary() -> None:
    core = _switching_over_with_a_call()
    assert core.mode == "primary"
    assert core.member_info().mode == "primary"


def test_a_primary_that_handed_over_reports_suspending_until_it_steps_down() -> None:
    core = _switching_over_with_a_call()
    pushed = [c for t in (3.0, 4.0, 5.0, 6.0) for c in core.tick(t)]
    assert PushHandover(1) in pushed  # the drain ran out
    assert core.mode == "suspending" and core.member_info().mode == "suspending"
    # The partner's takeover (epoch 2), borne out by the store, steps it down.
    core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), 6.1)
    core.handle(EpochRead(2), 6.2)
    assert core.mode == "backup"
