"""Failures found and reproduced but not fixed yet, each kept as a scenario that fails.

Each runs in simulation and is expected to fail (strict): the day a change fixes one, its
test fails here as an unexpected pass, and the scenario moves to ``scenarios/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orsim.scenario import load_scenario
from orsim.scenario._sim import run_scenario_sim, sim_logs

KNOWN = Path(__file__).resolve().parent / "known_bugs"


@pytest.mark.xfail(strict=True, reason="a creation without the store, unlinked: see the file")
def test_lone_node_thawed_unlinked_as_the_store_returns_routes_no_call_twice(
    tmp_path: Path,
) -> None:
    scenario = load_scenario(KNOWN / "lone-node-thawed-unlinked-as-the-store-returns.yaml")
    assert scenario.seed is not None
    with sim_logs(tmp_path / "logs" / "sim.jsonl"):
        result, _trace = run_scenario_sim(
            scenario, run_dir=tmp_path, seed=scenario.seed, out=lambda _line: None
        )
    assert result.passed, [v.label for v in result.verdicts if not v.passed]
