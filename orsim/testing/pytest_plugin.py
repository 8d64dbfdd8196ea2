"""pytest plugin shipped with orsim (registered as the ``orsim`` pytest11 entry point).

Fixtures:

``orsim_cluster``
    A factory: ``async with orsim_cluster("topology.yaml") as cluster:`` brings the
    topology up as real processes on free ports, in a fresh run directory under the
    test's ``tmp_path``, and always tears it down. ``cluster`` is an
    ``orsim.cluster.ClusterHandle``: ``kill``, ``start``, ``partition``, ``delay``,
    ``switchover``, ``load``, ``stop_load``, ``ledger``, ``set_option``, ``status``,
    ``wait_for`` (all async); ``orsim.testing.wait_for_mode(cluster, app, mode)`` helps.
    A relative path is looked up next to the test file first, then from the current
    directory.

    ``orsim_cluster("topology.yaml", sim=True, seed=1)`` gives the same verbs over the
    simulation instead (``orsim.sim.SimClusterHandle``: every server a task of the
    test's own trio run, in virtual time, the scheduler seeded with ``seed``, default 0).
    The test must run under virtual time: request pytest-trio's ``autojump_clock``
    fixture (``async def test_x(orsim_cluster, autojump_clock)``); without it the
    factory fails the test saying so.

``orsim_topology_cluster``
    The cluster of the test's ``@pytest.mark.orsim_topology("topology.yaml")`` marker,
    already up (``@pytest.mark.orsim_topology("topology.yaml", sim=True)``: simulated).

``orsim_cluster_class``
    What the factories call ``up`` on (default ``ClusterHandle``). Override it in a
    ``conftest.py`` (e.g. with ``orsim.testing.fake_cluster.FakeCluster``) to test
    cluster-driving code without processes.

The fixtures are async: run the tests under pytest-trio (``trio_mode = true``).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
import trio

if TYPE_CHECKING:
    from orsim.cluster import ClusterStatus

#: How long teardown may take (shielded: it runs even when the test was cancelled).
TEARDOWN_TIMEOUT = 30.0

ClusterContext = Callable[..., AbstractAsyncContextManager[Any]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "orsim_topology(path): the configuration database the orsim_topology_cluster "
        "fixture brings up",
    )


@pytest.fixture
def orsim_cluster_class() -> Any:
    """The class whose ``up(config, run_dir, ports="auto")`` starts a cluster."""
    from orsim.cluster import ClusterHandle

    return ClusterHandle


def resolve_topology(path: str | Path, test_path: Path | None) -> Path:
    """``path`` as given, relative to the test file's folder first, then to the cwd."""
    candidate = Path(path)
    if candidate.is_absolute():
        return candidate
    if test_path is not None:
        beside = test_path.parent / candidate
        if beside.exists():
            return beside
    return candidate.absolute()


class StatusWaiter(Protocol):
    """A cluster that waits on its own status: ``ClusterHandle``, ``SimClusterHandle`` or
    ``FakeCluster``."""

    async def wait_for(
        self, predicate: Callable[[ClusterStatus], bool], timeout: float
    ) -> ClusterStatus: ...


async def wait_for_mode(
    cluster: StatusWaiter, app: str, mode: str, timeout: float = 15.0
) -> ClusterStatus:
    """Wait until ``app`` reports ``mode``; returns the status (raises on timeout)."""
    from orsim.cluster import app_mode

    def holds(status: ClusterStatus) -> bool:
        return app_mode(status, app) == mode

    return await cluster.wait_for(holds, timeout)


@pytest.fixture
def orsim_cluster(
    request: pytest.FixtureRequest, tmp_path: Path, orsim_cluster_class: Any
) -> ClusterContext:
    """``async with orsim_cluster("topology.yaml") as cluster:`` (see the module doc)."""
    counter = itertools.count(1)
    test_path = Path(str(request.path)) if getattr(request, "path", None) else None

    @asynccontextmanager
    async def open_cluster(
        topology: str | Path, *, sim: bool = False, seed: int = 0, **up_options: Any
    ) -> AsyncIterator[Any]:
        config = resolve_topology(topology, test_path)
        run_dir = tmp_path / f"orsim-run-{next(counter)}"
        if sim:
            async with _open_sim(config, run_dir, seed, up_options) as handle:
                yield handle
            return
        cluster = await orsim_cluster_class.up(config, run_dir, ports="auto", **up_options)
        try:
            yield cluster
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(TEARDOWN_TIMEOUT):
                await cluster.down()

    return open_cluster


@asynccontextmanager
async def _open_sim(
    config: Path, run_dir: Path, seed: int, options: dict[str, Any]
) -> AsyncIterator[Any]:
    """A simulated cluster in the running test's trio run (which must be in virtual time)."""
    import trio.testing

    from orsim.sim import SimClusterHandle, seed_scheduler

    if not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        pytest.fail(
            "orsim_cluster(..., sim=True) runs in virtual time: "
            "add pytest-trio's autojump_clock fixture to the test's arguments"
        )
    seed_scheduler(seed)
    async with trio.open_nursery() as nursery:
        handle = await SimClusterHandle.up(config, run_dir, nursery=nursery, seed=seed, **options)
        try:
            yield handle
        finally:
            with trio.CancelScope(shield=True):
                await handle.down()
        nursery.cancel_scope.cancel()


@pytest.fixture
async def orsim_topology_cluster(
    request: pytest.FixtureRequest, orsim_cluster: ClusterContext
) -> AsyncIterator[Any]:
    """The cluster of the test's ``orsim_topology`` marker, up for the test's duration."""
    marker = request.node.get_closest_marker("orsim_topology")
    if marker is None or not marker.args:
        pytest.fail("orsim_topology_cluster needs @pytest.mark.orsim_topology('topology.yaml')")
    async with orsim_cluster(marker.args[0], **marker.kwargs) as cluster:
        yield cluster
