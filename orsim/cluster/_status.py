"""The cluster status as `orsim cluster status --json` prints it (assembly, and the
one polling loop every handle's ``wait_for`` shares).

Each process's own ``status`` answer wins; the manifest fills in what a process that does
not answer cannot say. An application that does not answer is ``down`` whatever its
process does (a stopped or hung process is as useless to its peers as a dead one); the
extra ``process`` field tells ``running``, ``stopped`` or ``exited`` apart.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypedDict

import trio

from orsim.cluster._rundir import AppEntry, Manifest
from orsim.errors import ClusterError
from orsim.tserver import LedgerCounts

#: The ``process`` of an application on another host (``up --host``): not this run
#: directory's to see; its own ``status`` answer says whether it serves.
REMOTE_PROCESS = "remote"


class AppRow(TypedDict):
    """One application's row of ``status --json`` (field names: SPEC.md section 4)."""

    app: str
    type: str
    node_id: int | None
    cluster: str | None
    data_center: str | None
    mode: str
    pid: int | None
    process: str
    sessions: int | None
    calls_routed: int | None
    sessions_recovered: int | None
    epoch: int | None
    # The session store as this application sees it: ok | degraded (ORS nodes).
    store: str | None
    store_outages: int | None
    store_failures: int | None
    sessions_unpersisted: int | None
    mode_since: float | None
    #: An ORS application's role in its Node. It says more than ``mode`` during a
    #: takeover: ``claiming`` (mode backup) while it asks the store for the Node,
    #: ``primary`` (mode backup) while the T-Server has not confirmed its fence. None: not
    #: an ORS, or down.
    role: str | None
    host: str
    host_name: str | None
    remote: bool
    public_port: int
    private_port: int
    primary: str | None
    backup: str | None


class CallsSummary(TypedDict):
    """The cluster-level ``calls`` object (all None when the T-Server does not answer)."""

    created: int | None
    routed: int | None
    lost: int | None
    duplicates: int | None
    in_flight: int | None
    default_routed: int | None
    stale: int | None
    resent: int | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class ClusterStatus(TypedDict):
    """The whole ``status --json`` object (SPEC.md section 4)."""

    cluster: str | None
    run_dir: str
    state: str
    #: The topology host this run directory launched (None: every host).
    host: str | None
    apps: list[AppRow]
    calls: CallsSummary


#: An application's own ``status`` answer, as JSON read off the wire.
Answer = Mapping[str, object]


def _int(answer: Answer, key: str, default: int | None = None) -> int | None:
    value = answer.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(answer: Answer, key: str, default: str | None = None) -> str | None:
    value = answer.get(key, default)
    return value if isinstance(value, str) else None


def _number(answer: Answer, key: str) -> float | None:
    value = answer.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def process_label(kernel_state: str | None) -> str:
    """``running``, ``stopped`` or ``exited`` from a /proc state letter."""
    if kernel_state is None or kernel_state in ("Z", "X"):
        return "exited"
    if kernel_state in ("T", "t"):
        return "stopped"
    return "running"


def app_status(
    entry: AppEntry,
    answer: Answer | None,
    pid: int | None,
    process: str,
    ledger: LedgerCounts | None,
) -> AppRow:
    """One application's row."""
    answer = answer or {}
    routed_by_ledger = None
    if ledger is not None and entry.type == "OrchestrationServer":
        routed_by_ledger = ledger.by_app.get(entry.app, 0)
    mode = _text(answer, "mode", "down") or "down" if answer else "down"
    if process == REMOTE_PROCESS:
        pid = _int(answer, "pid")  # the pid on its own machine, as it says
    return {
        "app": entry.app,
        "type": entry.type,
        "node_id": _int(answer, "node_id", entry.node_id),
        "cluster": _text(answer, "cluster", entry.cluster),
        "data_center": _text(answer, "data_center", entry.data_center),
        "mode": mode,
        "pid": pid if process != "exited" else None,
        "process": process,
        "sessions": _int(answer, "sessions", 0 if entry.type == "OrchestrationServer" else None),
        "calls_routed": _int(answer, "calls_routed", routed_by_ledger),
        "sessions_recovered": _int(answer, "sessions_recovered"),
        "epoch": _int(answer, "epoch"),
        "store": _text(answer, "store"),
        "store_outages": _int(answer, "store_outages"),
        "store_failures": _int(answer, "store_failures"),
        "sessions_unpersisted": _int(answer, "sessions_unpersisted"),
        "mode_since": _number(answer, "mode_since"),
        "role": _text(answer, "role"),
        "host": entry.host,
        "host_name": entry.host_name,
        "remote": entry.remote,
        "public_port": entry.public_port,
        "private_port": entry.private_port,
        "primary": entry.primary,
        "backup": entry.backup,
    }


def calls_summary(ledger: LedgerCounts | None) -> CallsSummary:
    """The cluster-level ``calls`` object (all None when the T-Server does not answer)."""
    if ledger is None:
        return {
            "created": None, "routed": None, "lost": None, "duplicates": None,
            "in_flight": None, "default_routed": None, "stale": None, "resent": None,
            "latency_p50_ms": None, "latency_p99_ms": None,
        }  # fmt: skip
    return {
        "created": ledger.created,
        "routed": ledger.routed,
        "lost": ledger.lost,
        "duplicates": ledger.duplicates,
        "in_flight": ledger.in_flight,
        "default_routed": ledger.default_routed,
        "stale": ledger.stale,
        "resent": ledger.resent,
        "latency_p50_ms": ledger.latency_p50_ms,
        "latency_p99_ms": ledger.latency_p99_ms,
    }


def cluster_status(
    manifest: Manifest,
    answers: Mapping[str, Answer | None],
    pids: Mapping[str, int | None],
    processes: Mapping[str, str],
    ledger: LedgerCounts | None,
) -> ClusterStatus:
    """The whole ``status --json`` object."""
    return {
        "cluster": manifest.cluster,
        "run_dir": manifest.run_dir,
        "state": manifest.state,
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


def app_row(status: ClusterStatus, app: str) -> AppRow | None:
    """``app``'s row of ``status`` (None: no such application)."""
    return next((row for row in status["apps"] if row["app"] == app), None)


def app_mode(status: ClusterStatus, app: str) -> str | None:
    """``app``'s mode in ``status`` (None: no such application)."""
    row = app_row(status, app)
    return row["mode"] if row is not None else None


def mode_changed_at(mode_since: object, after: float, seen: float) -> float:
    """When an application entered the mode a status showed it in at ``seen``, having been
    in another at ``after``: its own ``mode_since`` where that falls between the two (the
    same wall clock), else ``seen``, the status's own resolution."""
    if isinstance(mode_since, int | float) and after < mode_since <= seen:
        return mode_since
    return seen


def node_primary(manifest: Manifest, status: ClusterStatus, node: str) -> str:
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
    return primaries[0]


async def poll_status(
    status: Callable[[], Awaitable[ClusterStatus]],
    predicate: Callable[[ClusterStatus], bool],
    timeout: float,
    interval: float,
) -> ClusterStatus:
    """Ask ``status()`` every ``interval`` s until ``predicate`` holds; returns that status
    (every cluster handle's ``wait_for``).

    Raises:
        ClusterError: it did not hold within ``timeout`` seconds.
    """
    last: ClusterStatus | None = None
    with trio.move_on_after(timeout):
        while True:
            last = await status()
            if predicate(last):
                return last
            await trio.sleep(interval)
    modes = ", ".join(f"{a['app']}={a['mode']}" for a in last["apps"]) if last else ""
    raise ClusterError(f"condition not met within {timeout:g}s (last: {modes})")
