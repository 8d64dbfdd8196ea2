"""Scenarios that reproduce a failure in simulation only, each kept as a test that passes.

Each runs the file's fault schedule in seeded virtual time and must pass every
expectation. They live here, not in ``scenarios/``, because real processes do not meet
the same schedule the same way (each file says why); ``scenarios/`` passes in both modes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orsim.scenario import load_scenario
from orsim.scenario._sim import run_scenario_sim, sim_logs

HERE = Path(__file__).resolve().parent / "sim_scenarios"


@pytest.mark.parametrize("path", sorted(HERE.glob("*.yaml")), ids=lambda p: p.stem)
def test_sim_scenario_passes(path: Path, tmp_path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.seed is not None
    with sim_logs(tmp_path / "logs" / "sim.jsonl"):
        result, _trace = run_scenario_sim(
            scenario, run_dir=tmp_path, seed=scenario.seed, out=lambda _line: None
        )
    assert result.passed, [v.label for v in result.verdicts if not v.passed]
