"""The cluster status as `orsim cluster status --json` prints it (pure assembly).

Each process's own ``status`` answer wins; the manifest fills in what a process that does
not answer cannot say. An application that does not answer is ``down`` whatever its
process does (a stopped or hung process is as useless to its peers as a dead one); the
extra ``process`` field tells ``running``, ``stopped`` or ``exited`` apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orsim.cluster._rundir import AppEntry, Manifest
from orsim.errors import ClusterError

CALL_FIELDS = ("created", "routed", "lost", "duplicates", "in_flight")
#: The ``process`` of an application on another host (``up --host``): not this run
#: directory's to see; its own ``status`` answer says whether it serves.
REMOTE_PROCESS = "remote"
_EXTRA_CALL_FIELDS = ("default_routed", "stale", "resent", "latency_p50_ms", "latency_p99_ms")


def process_label(kernel_state: str | None) -> str:
    """``running``, ``stopped`` or ``exited`` from a /proc state letter."""
    if kernel_state is None or kernel_state in ("Z", "X"):
        return "exited"
    if kernel_state in ("T", "t"):
        return "stopped"
    return "running"


def app_status(
    entry: AppEntry,
    answer: Mapping[str, Any] | None,
    pid: int | None,
    process: str,
    ledger: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One application's row."""
    answer = answer or {}
    routed_by_ledger = None
    if ledger is not None and entry.type == "OrchestrationServer":
        routed_by_ledger = ledger.get("by_app", {}).get(entry.app, 0)
    calls_routed = answer.get("calls_routed", routed_by_ledger)
    mode = answer.get("mode", "down") if answer else "down"
    if process == REMOTE_PROCESS:
        pid = answer.get("pid")  # the pid on its own machine, as it says
    return {
        "app": entry.app,
        "type": entry.type,
        "node_id": answer.get("node_id", entry.node_id),
        "cluster": answer.get("cluster", entry.cluster),
        "data_center": answer.get("data_center", entry.data_center),
        "mode": mode,
        "pid": pid if process != "exited" else None,
        "process": process,
        "sessions": answer.get("sessions", 0 if entry.type == "OrchestrationServer" else None),
        "calls_routed": calls_routed,
        "sessions_recovered": answer.get("sessions_recovered"),
        "epoch": answer.get("epoch"),
        # The session store as this application sees it: ok | degraded (ORS nodes).
        "store": answer.get("store"),
        "store_outages": answer.get("store_outages"),
        "store_failures": answer.get("store_failures"),
        "sessions_unpersisted": answer.get("sessions_unpersisted"),
        "mode_since": answer.get("mode_since"),
        "host": entry.host,
        "host_name": entry.host_name,
        "remote": entry.remote,
        "public_port": entry.public_port,
        "private_port": entry.private_port,
        "primary": entry.primary,
        "backup": entry.backup,
    }


def calls_summary(ledger: Mapping[str, Any] | None) -> dict[str, Any]:
    """The cluster-level ``calls`` object (all None when the T-Server does not answer)."""
    fields = CALL_FIELDS + _EXTRA_CALL_FIELDS
    if ledger is None:
        return {name: None for name in fields}
    return {name: ledger.get(name) for name in fields}


def cluster_status(
    manifest: Manifest,
    answers: Mapping[str, Mapping[str, Any] | None],
    pids: Mapping[str, int | None],
    processes: Mapping[str, str],
    ledger: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The whole ``status --json`` object."""
    return {
        "cluster": manifest.cluster,
        "run_dir": manifest.run_dir,
        "state": manifest.state,
        # The topology host this run directory launched (None: every host).
        "host": manifest.host,
        "apps": [
            app_status(
                entry,
                answers.get(entry.app),
                pids.get(entry.app),
                processes.get(entry.app, "exited"),
                ledger,
            )
            for entry in manifest.apps
        ],
        "calls": calls_summary(ledger),
    }


def node_primary(manifest: Manifest, status: Mapping[str, Any], node: str) -> str:
    """The application acting as primary of Node ``node`` (its primary app name or id).

    Raises:
        ClusterError: no such Node, or it has no primary now.
    """
    members = [
        e for e in manifest.apps if e.node_id is not None and node in (e.app, str(e.node_id))
    ]
    if not members:
        raise ClusterError(f"no Node {node!r} in this cluster")
    node_id = members[0].node_id
    apps = [e.app for e in manifest.apps if e.node_id == node_id]
    primaries = [a["app"] for a in status["apps"] if a["app"] in apps and a["mode"] == "primary"]
    if not primaries:
        raise ClusterError(f"Node {node} ({', '.join(apps)}) has no primary to hand over")
    return str(primaries[0])
