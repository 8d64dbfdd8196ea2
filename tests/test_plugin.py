"""The orsim pytest plugin, exercised through pytester with the fake cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orsim.testing.pytest_plugin import resolve_topology

pytest_plugins = ["pytester"]

TOPOLOGY = Path(__file__).resolve().parent.parent / "scenarios" / "topologies" / "two-nodes.yaml"

CONFTEST = """
import pytest
from orsim.testing import FakeCluster

@pytest.fixture
def orsim_cluster_class():
    return FakeCluster
"""

TESTS = """
import pytest
from orsim.testing import wait_for_mode

async def test_factory(orsim_cluster, tmp_path):
    async with orsim_cluster("topo.yaml") as cluster:
        assert (tmp_path / "orsim-run-1").is_dir()
        await cluster.load(20)
        await cluster.kill("ORS_1")
        await cluster.partition("ORS_2", "SIP_Server")
        status = await wait_for_mode(cluster, "ORS_1_B", "primary", timeout=5)
        assert {a["app"]: a["mode"] for a in status["apps"]}["ORS_1"] == "down"
        await cluster.wait_for(lambda s: s["calls"]["routed"] > 0, timeout=5)
        assert (await cluster.ledger()).counts.routed > 0
    assert cluster.is_down

@pytest.mark.orsim_topology("topo.yaml", failover_delay=0.2)
async def test_marker(orsim_topology_cluster):
    assert orsim_topology_cluster.failover_delay == 0.2
    status = await orsim_topology_cluster.status()
    assert len(status["apps"]) == 7

async def test_teardown_after_failure(orsim_cluster):
    async with orsim_cluster("topo.yaml") as cluster:
        pytest.CLUSTER = cluster
        raise RuntimeError("boom")

def test_was_torn_down():
    assert pytest.CLUSTER.is_down

async def test_marker_missing(orsim_topology_cluster):
    pass
"""


def test_fixtures_bring_clusters_up_and_down(pytester: pytest.Pytester) -> None:
    """The factory and the marker fixture start, expose and always tear down a cluster."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_users_cluster_suite=TESTS)  # unique: runs in-process
    shutil.copy(TOPOLOGY, pytester.path / "topo.yaml")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(["*RuntimeError: boom*"])
    result.stdout.fnmatch_lines(["*orsim_topology_cluster needs @pytest.mark.orsim_topology*"])


def test_the_marker_is_registered(pytester: pytest.Pytester) -> None:
    """``orsim_topology`` is a known marker (works under --strict-markers)."""
    result = pytester.runpytest_inprocess("--markers")
    result.stdout.fnmatch_lines(["*orsim_topology(path)*"])


def test_relative_topologies_are_found_beside_the_test(tmp_path: Path) -> None:
    """A relative path is looked up next to the test file, then from the cwd."""
    (tmp_path / "t.yaml").write_text("x")
    test_file = tmp_path / "test_x.py"
    assert resolve_topology("t.yaml", test_file) == tmp_path / "t.yaml"
    assert resolve_topology("other.yaml", test_file) == Path("other.yaml").absolute()
    assert resolve_topology(TOPOLOGY, None) == TOPOLOGY
