"""What the fault-schedule search needs to know of a topology: who can be faulted, and
how long a healed cluster may take to serve again."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from orsim.cluster import store_app_names
from orsim.config import TSERVER_TYPES, ConfigDatabase, load_database
from orsim.sim import START_DELAY

#: Genesys' default call-watching-timeout (ms), when the cluster list gives none.
DEFAULT_CWT_MS = 1000.0


@attrs.frozen
class SearchTopology:
    """A topology file read for the search (``read_topology``)."""

    path: Path
    db: ConfigDatabase = attrs.field(eq=False, repr=False)
    #: Node (its primary's name) -> its applications, primary first
    nodes: dict[str, tuple[str, ...]] = attrs.field(eq=False)
    #: T-Servers and URSs: faulted only through links (they have no backup here)
    servers: tuple[str, ...]
    #: the session store servers (``store``), when the topology persists to SQLite
    stores: tuple[str, ...]
    #: the cluster list (set-option object), if any
    cluster_list: str | None
    cwt_ms: float
    #: the longest ADDP / peer timeout on any ORS link (s)
    longest_timeout: float
    #: the shortest T-Server router-timeout (s): how long a call may wait to be routed
    router_timeout: float = 10.0

    @property
    def ors(self) -> tuple[str, ...]:
        return tuple(app for apps in self.nodes.values() for app in apps)

    @property
    def liveness_bound(self) -> float:
        """How long after the last repair every Node must have its primary again (s).

        A restarted application starts (``START_DELAY``), probes for its partner, and a
        thawed or healed one may first have to notice it was fenced: each of those waits
        is at most one timeout; the margin covers the claim, fence and recovery.
        """
        return round(START_DELAY + 3 * self.longest_timeout + self.cwt_ms / 1000.0 + 5.0, 1)


def read_topology(path: str | os.PathLike[str]) -> SearchTopology:
    """Load a topology for the search.

    Raises:
        ConfigError: the file is broken, or it has no ORS Node to fault.
    """
    from orsim.errors import ConfigError

    db = load_database(path)
    nodes: dict[str, tuple[str, ...]] = {}
    longest = 0.0
    for app in sorted(db.applications.values(), key=lambda a: a.name):
        if app.type != "OrchestrationServer":
            continue
        if not app.is_backup:
            nodes[app.name] = (app.name,) + ((app.backup,) if app.backup else ())
        for conn in app.connections:
            longest = max(longest, conn.addp_timeout, conn.addp_remote_timeout)
    if not nodes:
        raise ConfigError(f"{path}: no OrchestrationServer to fault")
    servers = tuple(
        sorted(
            a.name
            for a in db.applications.values()
            if a.type in TSERVER_TYPES or a.type == "RoutingServer"
        )
    )
    cluster_list, cwt = None, DEFAULT_CWT_MS
    for txn in db.transactions.values():
        if txn.cluster_members:
            cluster_list = txn.name
            orchestration = txn.annex.get("orchestration", {})
            cwt = float(orchestration.get("call-watching-timeout", cwt))
            longest = max(longest, float(orchestration.get("peer-addp-timeout", 0) or 0))
            break
    from orsim.tserver import router_timeout_of

    router_timeout = min(
        (router_timeout_of(a.options) for a in db.applications.values() if a.type in TSERVER_TYPES),
        default=10.0,
    )
    return SearchTopology(
        path=Path(path).resolve(),
        db=db,
        nodes=nodes,
        servers=servers,
        stores=tuple(store_app_names(db)),
        cluster_list=cluster_list,
        cwt_ms=cwt,
        longest_timeout=longest or 3.0,
        router_timeout=router_timeout,
    )
