"""Public test helpers for orsim users and orsim's own tests.

FakeCluster            a process-free stand-in for ``orsim.cluster.ClusterHandle``
wait_for_mode(cluster, app, mode, timeout)
the simulation (``orsim.sim``): open_sim_cluster(db, seed=...) -> SimCluster,
SimClusterHandle, run_seeded, sim_clock, CONFSERV (the Configuration Server's address)
the pytest plugin (``orsim_cluster``, ``orsim_topology_cluster`` fixtures) is loaded
automatically through the ``orsim`` pytest11 entry point.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orsim.testing.fake_cluster import FakeCluster as FakeCluster
from orsim.testing.pytest_plugin import wait_for_mode as wait_for_mode

if TYPE_CHECKING:
    from orsim.sim import CONFSERV as CONFSERV
    from orsim.sim import SimCluster as SimCluster
    from orsim.sim import SimClusterHandle as SimClusterHandle
    from orsim.sim import open_sim_cluster as open_sim_cluster
    from orsim.sim import run_seeded as run_seeded
    from orsim.sim import sim_clock as sim_clock

#: Names taken from ``orsim.sim`` on first use. The pytest11 entry point loads this
#: package in every pytest run, and importing the simulation (every server and the node)
#: would add about 0.2 s to each, for tests that may never simulate.
_SIM_NAMES = frozenset(
    {"CONFSERV", "SimCluster", "SimClusterHandle", "open_sim_cluster", "run_seeded", "sim_clock"}
)


def __getattr__(name: str) -> object:
    if name in _SIM_NAMES:
        import orsim.sim

        return getattr(orsim.sim, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONFSERV",
    "FakeCluster",
    "SimCluster",
    "SimClusterHandle",
    "open_sim_cluster",
    "run_seeded",
    "sim_clock",
    "wait_for_mode",
]
