"""Every library scenario under ``--sim``: it passes, and its trace repeats from its seed.

Each run is a trio run of its own in virtual time (``run_scenario_sim``), so the whole
library, twice, takes seconds of wall time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orsim.scenario import load_scenario
from orsim.scenario._sim import run_files_sim, run_scenario_sim, sim_logs
from orsim.sim import SIM_EPOCH

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "scenarios").glob("*.yaml"))
TRACE_LINE = re.compile(r"^trace sha256 [0-9a-f]{64}$")


def run(path: Path, tmp_path: Path, seed: int | None = None) -> tuple[bool, str, list[str]]:
    """(passed, trace digest, trace lines) of one simulated run of ``path``."""
    scenario = load_scenario(path)
    used = scenario.seed if seed is None else seed
    assert used is not None, f"{path.name} has no seed"
    run_dir = tmp_path / f"{path.stem}-{used}-{len(list(tmp_path.iterdir()))}"
    lines: list[str] = []
    with sim_logs(run_dir / "logs" / "sim.jsonl"):
        result, trace = run_scenario_sim(scenario, run_dir=run_dir, seed=used, out=lines.append)
    return result.passed, trace.digest(), trace.lines()


def test_the_library_is_there() -> None:
    assert len(LIBRARY) >= 13


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_scenario_passes_and_repeats_exactly(path: Path, tmp_path: Path) -> None:
    """Passes in simulation; the same seed twice gives the same trace, line for line."""
    passed, digest, lines = run(path, tmp_path)
    assert passed, f"{path.name} failed under --sim"
    again_passed, again, again_lines = run(path, tmp_path)
    assert again_passed
    assert again_lines == lines
    assert again == digest
    # The trace holds what it promises: mode changes, faults, calls, verdicts, and only
    # virtual times (no wall-clock-sized number: those start at SIM_EPOCH).
    kinds = {line.split('"kind":"', 1)[1].split('"', 1)[0] for line in lines}
    assert {"mode", "call", "verdict", "start", "ready"} <= kinds
    assert SIM_EPOCH > 1e9
    assert not re.search(r"\d{10}", "".join(lines))


def test_a_different_seed_gives_a_different_trace(tmp_path: Path) -> None:
    path = ROOT / "scenarios" / "flapping-primary.yaml"  # seeded random sleeps as well
    _, first, first_lines = run(path, tmp_path, seed=1)
    _, second, second_lines = run(path, tmp_path, seed=2)
    assert first != second
    # Not only the call ids: the seeded sleep moves every later event.
    sleeps = [line for line in first_lines if "sleep " in line and "timeline.step" in line]
    others = [line for line in second_lines if "sleep " in line and "timeline.step" in line]
    assert sleeps and others and sleeps != others


def test_cli_sim_prints_a_trace_line_per_scenario(tmp_path: Path) -> None:
    """``orsim scenario run --sim``: timeline, verdicts, one trace line each, JUnit."""
    files = [str(ROOT / "scenarios" / f"{n}.yaml") for n in ("backup-crash", "primary-hang")]
    junit = tmp_path / "out.xml"

    def cli(hash_seed: str, runs: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "orsim", "scenario", "run", "--sim", *files, "--seed", "4",
             "--run-dir", str(tmp_path / runs), "--junit", str(junit)],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return proc.stdout.splitlines()

    out = cli("1", "runs")
    traces = [line for line in out if line.startswith("trace sha256")]
    assert len(traces) == 2 and all(TRACE_LINE.match(line) for line in traces)
    # Another process, other string hashes and object addresses: the same traces.
    assert [line for line in cli("2", "again") if line.startswith("trace sha256")] == traces
    assert any("FAULT stop ORS_1 (SIGSTOP)" in line for line in out)
    headers = [line for line in out if line.startswith("== scenario ")]
    assert len(headers) == 2 and all(line.endswith(", seed 4") for line in headers)
    assert out[-1] == "12 passed, 0 failed"
    assert [s.get("name") for s in ET.parse(junit).getroot().findall("testsuite")] == [
        "backup-crash",
        "primary-hang",
    ]
    assert (tmp_path / "runs" / "primary-hang" / "trace.jsonl").read_text().count("\n") > 100


def test_run_files_sim_counts_a_failure(tmp_path: Path) -> None:
    """An expectation that cannot hold fails the run (exit 1), still with its trace line."""
    scenario = tmp_path / "impossible.yaml"
    topology = ROOT / "scenarios" / "topologies" / "two-nodes.yaml"
    scenario.write_text(
        f"name: impossible\ntopology: {topology}\nseed: 1\nsteps:\n"
        "  - kill: ORS_1\n  - expect: {app: ORS_1, mode: primary, within: 2}\n"
    )
    lines: list[str] = []
    code = run_files_sim([scenario], run_root=tmp_path / "runs", out=lines.append)
    assert code == 1
    assert lines[-1] == "0 passed, 1 failed (failed: impossible)"
    assert sum(1 for line in lines if TRACE_LINE.match(line)) == 1
