"""Kept for compatibility: the simulation is public as ``orsim.sim``."""

from __future__ import annotations

from orsim.sim._cluster import CONFSERV as CONFSERV
from orsim.sim._cluster import SimCluster as SimCluster
from orsim.sim._cluster import open_sim_cluster as open_sim_cluster

__all__ = ["CONFSERV", "SimCluster", "open_sim_cluster"]
