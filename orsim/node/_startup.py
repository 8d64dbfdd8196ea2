"""Node start-up: read the configuration, merge options, check the cluster rules.

Reads, through the Configuration Server: the node's Application, the List transaction of
``-cluster`` (if given), the Applications of its connections, its partner, and every Node
of its cluster with their backups and connections; then computes the effective options
(the list wins) and refuses to start when a cluster requirement is broken.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from orsim.config import (
    CALL_WATCHING_TIMEOUT,
    PEER_ADDP_TIMEOUT,
    PEER_HEARTBEAT,
    ROUTING_POINTS,
    STORE,
    TSERVER_TYPES,
    AppConnection,
    Application,
    EffectiveOptions,
    Transaction,
    check_node_cluster,
    cluster_members,
    effective_options,
)
from orsim.errors import ConfigError
from orsim.node._settings import Endpoint, NodeSettings, PeerApp

ORS_TYPE = "OrchestrationServer"


class ConfigReader(Protocol):
    """What start-up needs of a Configuration Server client."""

    async def get_application(self, name: str) -> Application: ...

    async def get_applications(self, names: Iterable[str]) -> dict[str, Application]: ...

    async def get_transaction(self, name: str) -> Transaction: ...


@attrs.frozen
class Startup:
    """Start-up result: the runtime settings plus what to log."""

    settings: NodeSettings
    options: EffectiveOptions
    app: Application
    cluster: Transaction | None


async def _fetch_all(
    client: ConfigReader, names: Iterable[str], apps: dict[str, Application]
) -> None:
    """Add the Applications of ``names`` not read yet, in one request; missing ones are
    left out (the requirement checks report them as not found)."""
    wanted = [name for name in names if name not in apps]
    if wanted:
        apps.update(await client.get_applications(wanted))


async def read_startup(client: ConfigReader, app_name: str, cluster_name: str | None) -> Startup:
    """Read and check everything an ORS node needs before it can start.

    Raises:
        ConfigError: the application or cluster is missing, or a requirement is broken.
    """
    app = await client.get_application(app_name)
    if app.type != ORS_TYPE:
        raise ConfigError(f"application '{app_name}' is of type {app.type}, not {ORS_TYPE}")
    cluster = await client.get_transaction(cluster_name) if cluster_name else None
    apps: dict[str, Application] = {app.name: app}
    await _fetch_all(client, [c.server for c in app.connections], apps)
    await _fetch_all(client, [n for n in (app.backup, app.primary) if n], apps)
    members = cluster_members(app, cluster) or {}
    await _fetch_all(client, members, apps)
    await _fetch_all(client, [a.backup for a in list(apps.values()) if a.backup], apps)
    servers = [c.server for a in list(apps.values()) if a.type == ORS_TYPE for c in a.connections]
    await _fetch_all(client, servers, apps)
    # The twins of redundant T-Servers and URSes: a lost link alternates with them.
    await _fetch_all(client, [a.backup for a in list(apps.values()) if a.backup], apps)
    problems = check_node_cluster(app, cluster, apps)
    if problems:
        raise ConfigError(problems[0], problems)
    options = effective_options(app, cluster)
    return Startup(build_settings(app, cluster, apps, options), options, app, cluster)


def call_watching_timeout_ms(options: EffectiveOptions) -> float:
    """The effective ``orchestration/call-watching-timeout`` in ms.

    Raises:
        ConfigError: the value is not a whole number of ms >= 0.
    """
    return float(options.value(CALL_WATCHING_TIMEOUT))


def build_settings(
    app: Application,
    cluster: Transaction | None,
    apps: dict[str, Application],
    options: EffectiveOptions,
) -> NodeSettings:
    """Resolve the runtime settings of a node that passed the requirement checks."""
    members = cluster_members(app, cluster) or {app.primary_name: ""}
    primary = apps.get(app.primary_name, app)
    nodes = {apps[m].dbid: dc for m, dc in members.items() if m in apps}
    data_center = members.get(app.primary_name, "")
    peer_timeout = options.value(PEER_ADDP_TIMEOUT)
    peers: list[PeerApp] = []
    for member, dc in sorted(members.items()):
        node_app = apps.get(member)
        if node_app is None:
            continue
        for name in (member, node_app.backup):
            if name is None or name == app.name or name not in apps:
                continue
            peer = apps[name]
            link = app.connection_to(name)
            peers.append(
                PeerApp(
                    name=name,
                    node_id=node_app.dbid,
                    data_center=dc,
                    address=peer.address,
                    port=peer.port,
                    is_backup=peer.is_backup,
                    addp_timeout=link.addp_timeout if link and link.addp_timeout else peer_timeout,
                )
            )
    tserver = _endpoint(app, apps, TSERVER_TYPES)
    urs = _endpoint(app, apps, ("RoutingServer",))
    tserver_app = apps[tserver.name]
    return NodeSettings(
        app=app.name,
        node_id=primary.dbid,
        configured_backup=app.is_backup,
        partner=app.backup or app.primary,
        cluster=cluster.name if cluster else None,
        data_center=data_center,
        address=app.address,
        port=app.port,
        peers=tuple(peers),
        nodes=nodes or {primary.dbid: data_center},
        tserver=tserver,
        urs=urs,
        routing_points=tuple(ROUTING_POINTS.read_section(tserver_app.options)),
        store_url=options.value(STORE),
        call_watching_timeout_ms=call_watching_timeout_ms(options),
        heartbeat=options.value(PEER_HEARTBEAT),
    )


def _reached(server: Application, conn: AppConnection) -> Endpoint:
    """``server`` as reached through the connection ``conn`` (its ADDP parameters)."""
    return Endpoint(
        name=server.name,
        address=server.address,
        port=server.port,
        addp_timeout=conn.addp_timeout,
        addp_remote_timeout=conn.addp_remote_timeout,
        addp_trace=conn.addp_trace,
    )


def _endpoint(app: Application, apps: dict[str, Application], types: tuple[str, ...]) -> Endpoint:
    for conn in app.connections:
        server = apps.get(conn.server)
        if server is not None and server.type in types:
            twin = apps.get(server.backup) if server.backup else None
            return attrs.evolve(
                _reached(server, conn),
                backup=None if twin is None else _reached(twin, conn),
                reconnect_timeout=conn.reconnect_timeout,
            )
    raise ConfigError(f"application '{app.name}' has no connection of type {' or '.join(types)}")
