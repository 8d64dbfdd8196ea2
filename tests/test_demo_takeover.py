"""The demo's takeover time: the heir's own ``mode_since``, not the poll that saw it."""

from __future__ import annotations

from typing import Any, cast

import pytest

from orsim.cluster._status import ClusterStatus
from orsim.cluster.demo import takeover_ms


def _status(mode_since: object) -> ClusterStatus:
    apps: list[dict[str, Any]] = [
        {"app": "ORS_1_B", "mode": "primary", "mode_since": mode_since},
        {"app": "ORS_2", "mode": "primary", "mode_since": 50.0},
    ]
    return cast(ClusterStatus, {"apps": apps})


def test_the_heirs_own_clock_says_when_it_took_over() -> None:
    # Killed at 100.0; primary at 100.012; the status that showed it came at 100.230.
    assert takeover_ms(_status(100.012), "ORS_1_B", 100.0, 100.23) == pytest.approx(12.0)


@pytest.mark.parametrize("since", [None, "soon", 99.5, 100.5])
def test_a_mode_since_outside_the_kill_and_the_poll_falls_back_to_the_poll(
    since: object,
) -> None:
    """Missing, not a number, from before the kill (it was primary already: another
    clock) or after the status came: the poll's time, which is an upper bound."""
    assert takeover_ms(_status(since), "ORS_1_B", 100.0, 100.23) == pytest.approx(230.0)
