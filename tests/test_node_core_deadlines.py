"""NodeCore's deadlines: ``tick(next_deadline())`` always does what made that deadline, so
a driver that wakes at it never wakes for it again (found by `orsim search`: a simulation
spun forever at one virtual instant)."""

from __future__ import annotations

from helpers import primary_core

from orsim.node._core import NotifySession, RouteRequested


def test_the_slow_store_notice_fires_at_its_own_deadline_despite_rounding() -> None:
    """The notice is due at ``since + patience``; ``now - since >= patience`` is False at
    that very instant for some times (0.08 + 0.15 - 0.08 < 0.15 in floating point)."""
    core = primary_core(partner=False)
    since = 0.08
    patience = core.watcher.timeout_ms / 2000.0
    assert (since + patience) - since < patience, "the rounding case this test is about"
    core.handle(RouteRequested("c1"), since)
    due = core.next_deadline()
    assert due == since + patience
    out = core.tick(due)
    assert any(isinstance(c, NotifySession) and c.pending for c in out)
    assert core.next_deadline() > due
