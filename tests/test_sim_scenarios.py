"""Scenarios that pass in simulation but not yet with real processes, each kept as a
test in simulation (``scenarios/`` passes in both modes; each file here says why not).
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
