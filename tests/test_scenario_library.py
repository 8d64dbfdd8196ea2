"""Library scenarios on a real cluster, through the real CLI (slow: real processes).

A representative subset: a primary crash, a graceful switchover and a backup crash, run by one
``orsim scenario run`` with JUnit XML and an HTML report. Plus the pytest plugin's
``orsim_cluster`` fixture on the real launcher. Ports are picked at run time.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from orsim.testing import wait_for_mode

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "scenarios"
SUBSET = ("primary-crash-under-load", "graceful-switchover", "backup-crash")

pytestmark = pytest.mark.slow


def test_library_subset_passes_through_the_cli(tmp_path: Path) -> None:
    """The subset passes on a real cluster; JUnit and the report are written."""
    junit, report = tmp_path / "out.xml", tmp_path / "out.html"
    files = [str(LIBRARY / f"{name}.yaml") for name in SUBSET]
    proc = subprocess.run(
        [sys.executable, "-m", "orsim.cli", "scenario", "run", *files,
         "--run-dir", str(tmp_path / "runs"), "--junit", str(junit), "--report", str(report)],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].endswith("passed, 0 failed")
    suites = ET.parse(junit).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == list(SUBSET)
    assert 'class="lane" data-app="ORS_1_B"' in report.read_text()
    # Every cluster was torn down: no pid file is left in any run directory.
    assert not list((tmp_path / "runs").glob("*/pids/*.pid"))


async def test_plugin_fixture_on_a_real_cluster(orsim_cluster: Any) -> None:
    """``orsim_cluster`` brings the two-Node topology up; a kill fails over."""
    async with orsim_cluster(LIBRARY / "topologies" / "two-nodes.yaml") as cluster:
        await cluster.load(20)
        await cluster.wait_for(lambda s: (s["calls"]["routed"] or 0) >= 10, 15)
        await cluster.kill("ORS_1")
        await wait_for_mode(cluster, "ORS_1_B", "primary", timeout=10)
        await cluster.stop_load()
        ledger = await cluster.ledger()
        assert ledger.counts.duplicates == 0
