"""The launcher: run a whole cluster as local processes, observe it, inject faults.

Public API:
    ClusterHandle.up(config_path, run_dir, ports="given"|"auto", progress=None)
    ClusterHandle.attach(run_dir)
    ClusterHandle.up(config_path, run_dir, host=NAME, key=KEY): one host of several
    link_sides / isolate_sides: which application pairs a fault by host cuts
    FaultProxy / Route / serve_proxy: the fault proxy (also usable in-process in tests)
"""

from __future__ import annotations

from orsim.cluster._faults import FaultTable as FaultTable
from orsim.cluster._handle import MAX_LOAD_RATE as MAX_LOAD_RATE
from orsim.cluster._handle import ClusterHandle as ClusterHandle
from orsim.cluster._handle import stop_processes as stop_processes
from orsim.cluster._hosts import isolate_sides as isolate_sides
from orsim.cluster._hosts import link_sides as link_sides
from orsim.cluster._plan import CONFSERV_APP as CONFSERV_APP
from orsim.cluster._plan import STORE_TYPE as STORE_TYPE
from orsim.cluster._plan import cluster_name as cluster_name
from orsim.cluster._plan import plan_apps as plan_apps
from orsim.cluster._plan import store_app_names as store_app_names
from orsim.cluster._proxy import FaultProxy as FaultProxy
from orsim.cluster._proxy import Route as Route
from orsim.cluster._proxy import serve_proxy as serve_proxy
from orsim.cluster._redis import REDIS_TYPE as REDIS_TYPE
from orsim.cluster._rundir import AppEntry as AppEntry
from orsim.cluster._rundir import Manifest as Manifest
from orsim.cluster._rundir import RunDir as RunDir
from orsim.cluster._status import Answer as Answer
from orsim.cluster._status import AppRow as AppRow
from orsim.cluster._status import CallsSummary as CallsSummary
from orsim.cluster._status import ClusterStatus as ClusterStatus
from orsim.cluster._status import app_mode as app_mode
from orsim.cluster._status import app_row as app_row
from orsim.cluster._status import calls_summary as calls_summary
from orsim.cluster._status import cluster_status as cluster_status
from orsim.cluster._status import mode_changed_at as mode_changed_at
from orsim.cluster._status import node_primary as node_primary
from orsim.cluster._status import poll_status as poll_status

__all__ = [
    "CONFSERV_APP",
    "MAX_LOAD_RATE",
    "REDIS_TYPE",
    "STORE_TYPE",
    "Answer",
    "AppEntry",
    "AppRow",
    "CallsSummary",
    "ClusterHandle",
    "ClusterStatus",
    "FaultProxy",
    "FaultTable",
    "Manifest",
    "Route",
    "RunDir",
    "app_mode",
    "app_row",
    "calls_summary",
    "cluster_name",
    "cluster_status",
    "isolate_sides",
    "link_sides",
    "mode_changed_at",
    "node_primary",
    "plan_apps",
    "poll_status",
    "serve_proxy",
    "stop_processes",
    "store_app_names",
]
