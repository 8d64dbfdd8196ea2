"""What the fault-schedule search needs to know of a topology: who can be faulted, and
how long a healed cluster may take to serve again."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from orsim.cluster import store_app_names
from orsim.config import (
    CALL_WATCHING_TIMEOUT,
    PEER_ADDP_TIMEOUT,
    ROUTER_TIMEOUT,
    TSERVER_TYPES,
    ConfigDatabase,
    effective_options,
    load_database,
)
from orsim.sim import START_DELAY


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
    router_timeout: float = ROUTER_TIMEOUT.default_value

    @property
    def ors(self) -> tuple[str, ...]:
        return tuple(app for apps in self.nodes.values() for app in apps)

    @property
    def liveness_bound(self) -> float:
        """How long after the last repair every Node must have its primary again (s).

        A restarted application starts (``START_DELAY``), probes for its partner, and a
        thawed or healed one may first have to notice it was fenced: each of those waits
        is at most one timeout (an ADDP loss two: it is seen between T and 2T); the margin
        covers the claim, fence and recovery.
        """
        return round(START_DELAY + 4 * self.longest_timeout + self.cwt_ms / 1000.0 + 5.0, 1)


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
    cluster = next((t for t in db.transactions.values() if t.cluster_members), None)
    if cluster is not None:
        peer_addp = PEER_ADDP_TIMEOUT.text_in(cluster.annex)
        longest = max(longest, PEER_ADDP_TIMEOUT.value(peer_addp) if peer_addp else 0.0)
    # The longest call-watching-timeout any ORS application runs with (the list's, its
    # own, or the default), so a settle time covers every watch.
    cwt = max(
        effective_options(app, cluster).value(CALL_WATCHING_TIMEOUT)
        for app in db.applications.values()
        if app.type == "OrchestrationServer"
    )
    router_timeout = min(
        (
            ROUTER_TIMEOUT.read(a.options)
            for a in db.applications.values()
            if a.type in TSERVER_TYPES
        ),
        default=ROUTER_TIMEOUT.default_value,
    )
    return SearchTopology(
        path=Path(path).resolve(),
        db=db,
        nodes=nodes,
        servers=servers,
        stores=tuple(store_app_names(db)),
        cluster_list=cluster.name if cluster is not None else None,
        cwt_ms=float(cwt),
        longest_timeout=longest or 3.0,
        router_timeout=router_timeout,
    )
