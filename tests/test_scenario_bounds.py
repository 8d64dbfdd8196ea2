"""Scenario values are finite and sensible (issue 20, finding 9): what would hang or fail
at run time is refused by `orsim scenario check` in one line, exit 3."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_scenario_load import LIBRARY, ROOT, VALID, cached_topology

from orsim.errors import ConfigError
from orsim.scenario import check_document

ORSIM = str(ROOT / ".venv" / "bin" / "orsim")
INF, NAN = float("inf"), float("nan")

#: (step, the field the message must name)
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "sleep-inf": ({"sleep": INF}, "(sleep), field 'sleep'"),
    "sleep-nan": ({"sleep": NAN}, "(sleep), field 'sleep'"),
    "sleep-between-inf": ({"sleep": {"between": [1, INF]}}, "field 'sleep.between.1'"),
    "wait-timeout-1e9": ({"wait": {"ready": "all", "timeout": 1e9}}, "field 'wait.timeout'"),
    "wait-timeout-nan": ({"wait": {"ready": "all", "timeout": NAN}}, "field 'wait.timeout'"),
    "load-duration-inf": ({"load": {"rate": 10, "duration": INF}}, "field 'load.duration'"),
    "load-rate-nan": ({"load": {"rate": NAN}}, "field 'load.rate'"),
    "load-rate-absurd": ({"load": {"rate": 1e6}}, "field 'load.rate'"),
    # Above it a cluster on one machine fails over on its own slowness (finding 9).
    "load-rate-overload": ({"load": {"rate": 1001}}, "field 'load.rate'"),
    "delay-ms-nan": (
        {"delay": {"between": ["ORS_2", "SIP_Server"], "ms": NAN}}, "field 'delay.ms'"
    ),
    "delay-ms-inf": (
        {"delay": {"between": ["ORS_2", "SIP_Server"], "ms": INF}}, "field 'delay.ms'"
    ),
    "restart-stop": ({"restart": {"app": "ORS_1", "signal": "STOP"}}, "field 'restart.signal'"),
    "restart-cont": ({"restart": {"app": "ORS_1", "signal": "CONT"}}, "field 'restart.signal'"),
    "within-inf": (
        {"expect": {"app": "ORS_1", "mode": "primary", "within": INF}}, "field 'expect.within'"
    ),
    "gap-nan": ({"expect": {"failover_gap_ms": NAN}}, "field 'expect.failover_gap_ms'"),
}  # fmt: skip


def with_step(step: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc["steps"].append(step)
    return doc


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_absurd_values_are_refused_naming_step_and_field(case: str) -> None:
    step, where = REFUSED[case]
    with pytest.raises(ConfigError) as info:
        check_document(with_step(step), str(LIBRARY / "probe.yaml"), load_topology=cached_topology)
    assert len(info.value.problems) == 1, info.value.problems
    assert where in info.value.problems[0], info.value.problems


@pytest.mark.parametrize(
    "step",
    [
        {"sleep": 86400},
        {"wait": {"ready": "all", "timeout": 86400}},
        {"load": {"rate": 1000, "duration": 86400}},
        {"delay": {"between": ["ORS_2", "SIP_Server"], "ms": 86_400_000}},
        {"restart": {"app": "ORS_1", "signal": "TERM"}},
    ],
)
def test_bounds_themselves_are_accepted(step: dict[str, Any]) -> None:
    check_document(with_step(step), str(LIBRARY / "probe.yaml"), load_topology=cached_topology)


@pytest.mark.parametrize("text", ["sleep: .inf", "delay: {between: [ORS_2, SIP_Server], ms: .nan}",
                                  "restart: {app: ORS_1, signal: STOP}"])  # fmt: skip
def test_scenario_check_one_line_exit_3(text: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(VALID)
    doc["topology"] = str(LIBRARY / "topologies" / "two-nodes.yaml")
    doc["steps"].append(yaml.safe_load(text))
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.run(
        [ORSIM, "scenario", "check", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"step {len(doc['steps'])}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_schemas_rate_bound_is_the_launchers() -> None:
    """A scenario and `orsim cluster load` refuse the same overload (finding 9)."""
    import json

    from orsim.cluster import MAX_LOAD_RATE

    schema = json.loads((ROOT / "orsim" / "scenario" / "schema.json").read_text())
    text = json.dumps(schema)
    assert f'"maximum": {MAX_LOAD_RATE:g}' in text


def test_cluster_load_refuses_an_overload_up_front_in_one_line(tmp_path: Path) -> None:
    """Above the bound, `orsim cluster load` says why before it touches any cluster."""
    done = subprocess.run(
        [ORSIM, "cluster", "load", "--rate", "10000", "--run-dir", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "load rate 10000 calls/s" in lines[0] and "1000 calls/s" in lines[0]
