"""Public test helpers for orsim users and orsim's own tests.

FakeCluster            a process-free stand-in for ``orsim.cluster.ClusterHandle``
wait_for_mode(cluster, app, mode, timeout)
the pytest plugin (``orsim_cluster``, ``orsim_topology_cluster`` fixtures) is loaded
automatically through the ``orsim`` pytest11 entry point.
"""

from __future__ import annotations

from orsim.testing.fake_cluster import FakeCluster as FakeCluster
from orsim.testing.pytest_plugin import wait_for_mode as wait_for_mode

__all__ = ["FakeCluster", "wait_for_mode"]
