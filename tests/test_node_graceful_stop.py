"""Graceful shutdown (ors-domain.md section 4): SIGTERM or `orsim cluster stop` makes a
primary ``suspending``; it creates no new session, its running sessions finish or go to
its backup, then it exits 0; a second stop, or anything but a primary, exits at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import TOPOLOGIES, core_settings, primary_core

from orsim.cluster import ClusterHandle
from orsim.config import load_database
from orsim.node._core import (
    EpochRead,
    Exit,
    MemberAnnounced,
    NodeCore,
    PushHandover,
    ReadEpoch,
    RouteAnswered,
    RouteRequested,
    SessionWritten,
    StopAsked,
    WriteOutcome,
    WriteSession,
)
from orsim.node._membership import MemberInfo
from orsim.testing import open_sim_cluster

DEMO = Path(__file__).parent.parent / "scenarios" / "topologies" / "demo.yaml"


def test_primary_without_backup_creates_nothing_then_exits_once_drained() -> None:
    """Suspending alone: new calls are not created here (the Reserved Node will), the
    running one is routed, then Exit."""
    core = primary_core(partner=False)
    started = core.handle(RouteRequested("c1"), 1.0)
    assert any(isinstance(c, WriteSession) for c in started)
    out = core.handle(StopAsked(), 1.0)
    assert core.mode == "suspending"
    assert not any(isinstance(c, Exit) for c in out)
    assert not any(isinstance(c, WriteSession) for c in core.handle(RouteRequested("c2"), 1.1))
    core.handle(SessionWritten("c1", WriteOutcome.OWNED), 1.2)
    out = core.handle(RouteAnswered("c1", "routed"), 1.3)
    assert not any(isinstance(c, Exit) for c in out)  # exits at the next tick, drained
    assert any(isinstance(c, Exit) for c in core.tick(core.next_deadline()))


def test_primary_with_backup_hands_over_then_exits() -> None:
    """With its backup connected, the stop is a switchover: drain, hand over, and exit
    once the backup holds the Node: a higher epoch it announces, borne out by the store
    (a partner's word alone moves no epoch: issue 20, finding 2)."""
    core = primary_core(partner=True)
    out = core.handle(StopAsked(), 1.0)
    assert core.mode == "suspending"
    assert any(isinstance(c, PushHandover) for c in out)
    out = core.handle(MemberAnnounced(MemberInfo("B", 1, "DC", "primary", 2)), 1.1)
    # The partner's word alone is not enough: the store must bear its epoch out.
    assert any(isinstance(c, ReadEpoch) for c in out)
    assert not any(isinstance(c, Exit) for c in out)
    out = core.handle(EpochRead(2), 1.2)
    assert any(isinstance(c, Exit) for c in out)
    assert core.mode == "backup"


def test_a_second_stop_or_a_backup_exits_at_once() -> None:
    """A second stop cuts the drain short; a backup has nothing to hand over."""
    core = primary_core(partner=False)
    core.handle(RouteRequested("c1"), 1.0)
    assert not any(isinstance(c, Exit) for c in core.handle(StopAsked(), 1.0))
    assert any(isinstance(c, Exit) for c in core.handle(StopAsked(), 1.1))
    backup = NodeCore(core_settings(partner=True))
    assert any(isinstance(c, Exit) for c in backup.handle(StopAsked(), 0.0))


async def test_graceful_stop_in_simulation_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Under load, ORS_1 is stopped gracefully: ORS_1_B takes over, ORS_1 exits, and every
    call is routed once."""
    async with open_sim_cluster(load_database(DEMO)) as sim:
        await sim.request("generate", rate=50, duration=6)
        await trio.sleep(2)
        node = sim.nodes["ORS_1"]
        node.stop_gracefully()
        assert node.mode == "suspending"
        with trio.fail_after(10):
            await node.exited.wait()
        sim.crash("ORS_1")  # the process ends
        assert sim.mode("ORS_1_B") == "primary"
        await trio.sleep(10)
        ledger = await sim.ledger()
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == ledger.created == 300


@pytest.mark.slow
async def test_cluster_stop_under_load(tmp_path: Path) -> None:
    """`orsim cluster stop ORS_1` (real processes): ORS_1 exits, ORS_1_B is primary, and
    not one call is lost or doubled."""
    cluster = await ClusterHandle.up(TOPOLOGIES / "two-nodes.yaml", tmp_path / "run", ports="auto")
    try:
        await cluster.load(rate=60, duration=8)
        await cluster.wait_for(lambda s: (s["calls"]["routed"] or 0) >= 60, timeout=20)
        await cluster.stop("ORS_1")
        assert not cluster.alive("ORS_1")
        status = await cluster.wait_for(
            lambda s: any(a["app"] == "ORS_1_B" and a["mode"] == "primary" for a in s["apps"]),
            timeout=10,
        )
        with trio.fail_after(60):
            while True:
                ledger = (await cluster.ledger()).counts
                if ledger.created >= 480 and ledger.in_flight == 0:
                    break
                await trio.sleep(0.2)
        assert ledger.lost == 0 and ledger.duplicates == 0, ledger
        assert ledger.routed == 480
        assert status is not None
    finally:
        await cluster.down()
