"""What the launcher starts, in which order, with which arguments (pure).

Start order (waves, each started together and waited on before the next): the
Configuration Server; the T-Servers and URSes; every ORS application. The two halves of
a Node start together: each learns of the other at once, and the role rules make the
configured primary lead (the configured backup also waits longer before it would start
alone), so nobody sits out a start-up probe waiting for a partner not started yet.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from orsim.cluster._redis import REDIS_PROGRAM, REDIS_TYPE, RedisServer, managed_redis
from orsim.cluster._rundir import AppEntry
from orsim.config import CLUSTER, TSERVER_TYPES, Application, ConfigDatabase, storage_of

CONFSERV_APP = "confserv"
CONFSERV_TYPE = "ConfigurationServer"
#: Genesys' customary Configuration Server port, used when ports are taken as given.
DEFAULT_CONFSERV_PORT = 2020
LOOPBACK = "127.0.0.1"
#: The store server of a SQLite session file (``orsim store serve``), one per file.
STORE_APP = "store"
STORE_TYPE = "SessionStore"
DEFAULT_STORE_URL = "sqlite:///sessions.db"

TIER_CONFSERV, TIER_SERVERS, TIER_PRIMARIES, TIER_BACKUPS = 0, 1, 2, 3

_COMMAND_BY_TYPE = {
    **{t: "tserver" for t in TSERVER_TYPES},
    "RoutingServer": "urs",
    "OrchestrationServer": "node",
}


def launched_apps(db: ConfigDatabase) -> list[Application]:
    """The database's applications the launcher runs, in start order."""
    apps = [a for a in db.applications.values() if a.type in _COMMAND_BY_TYPE]
    return sorted(apps, key=lambda a: (_tier(a), a.name))


def start_waves(entries: Sequence[AppEntry]) -> list[list[AppEntry]]:
    """``entries`` grouped into start waves: Configuration Server, servers, ORS apps."""
    waves: dict[int, list[AppEntry]] = {}
    for entry in entries:
        waves.setdefault(min(entry.tier, TIER_PRIMARIES), []).append(entry)
    return [waves[k] for k in sorted(waves)]


def _tier(app: Application) -> int:
    if app.type != "OrchestrationServer":
        return TIER_SERVERS
    return TIER_BACKUPS if app.is_backup else TIER_PRIMARIES


def node_cluster(db: ConfigDatabase, app: Application) -> tuple[str | None, str | None]:
    """(cluster list, data center) of an ORS application.

    A List transaction whose ``cluster`` section names the Node's primary gives both; a
    legacy ``cluster`` section in the application's (or its primary's) own options gives
    the data center only, and the node is started without ``-cluster``.
    """
    primary = app.primary_name
    for txn in sorted(db.transactions.values(), key=lambda t: t.name):
        members = txn.cluster_members
        if primary in members:
            return txn.name, members[primary]
    for source in (app, db.applications.get(primary)):
        members = CLUSTER.read_section(source.options) if source is not None else {}
        if primary in members:
            return None, members[primary]
    return None, None


def sqlite_stores(db: ConfigDatabase) -> list[str]:
    """The SQLite store URLs the database's ORS applications use, each once, in order.

    Relative paths start at the run directory, where every process of the cluster runs.
    """
    txns = {name: txn for txn in db.transactions.values() for name in txn.cluster_members}
    urls: list[str] = []
    for app in launched_apps(db):
        if app.type != "OrchestrationServer":
            continue
        url = storage_of(app, txns.get(app.primary_name)) or DEFAULT_STORE_URL
        if url.strip().startswith("sqlite:") and url not in urls:
            urls.append(url)
    return urls


def store_names(db: ConfigDatabase, count: int) -> list[str]:
    """App names for ``count`` store servers: ``store``, ``store_2``, ... (none taken)."""
    names: list[str] = []
    n = 1
    while len(names) < count:
        name = STORE_APP if n == 1 else f"{STORE_APP}_{n}"
        if name not in db.applications and name != CONFSERV_APP:
            names.append(name)
        n += 1
    return names


def redis_servers(db: ConfigDatabase) -> list[RedisServer]:
    """The Redis servers of ``db``'s local ``redis://`` stores (``redis``, ...), each at its
    URL's port (the launcher leaves out those already running, see ``_redis``)."""
    taken = {*db.applications, CONFSERV_APP, *store_names(db, len(sqlite_stores(db)))}
    return managed_redis(db, taken)


def store_app_names(db: ConfigDatabase) -> list[str]:
    """The names the launcher may give the store processes of ``db``: the SQLite store
    servers (``store``, ...) and the local Redis servers (``redis``, ...)."""
    sqlite = store_names(db, len(sqlite_stores(db)))
    return [*sqlite, *(r.name for r in redis_servers(db))]


def confserv_place(db: ConfigDatabase) -> tuple[str | None, str]:
    """(topology host, address) where the Configuration Server lives.

    The database does not describe the Configuration Server itself (it is what serves
    the database), so orsim places it with the cluster's T-Server: the one server every
    Node must reach anyway (a cluster requirement). Without a T-Server: this machine's
    loopback, on no topology host.
    """
    for app in launched_apps(db):
        if app.type in TSERVER_TYPES and not app.is_backup:
            return app.host, app.address
    return None, LOOPBACK


def node_hosts(db: ConfigDatabase) -> list[str]:
    """The topology hosts the ORS applications are placed on, sorted."""
    return sorted({a.host for a in launched_apps(db) if a.type == "OrchestrationServer"})


def plan_apps(
    db: ConfigDatabase,
    *,
    served_config: str,
    state_dir: str,
    confserv_port: int,
    public: Mapping[str, int],
    private: Mapping[str, int],
    redis: Sequence[RedisServer] | None = None,
    local_host: str | None = None,
) -> tuple[AppEntry, ...]:
    """Every process of the cluster (Configuration Server first), in start order.

    ``public`` maps each database application to the port peers use (the proxy holds it);
    ``private`` maps every application, ``confserv`` and each store server (named by
    :func:`store_names`) to the port it really listens on. A store server is not behind
    the proxy: its public port is its own. ``redis``: the Redis servers to run (default
    :func:`redis_servers`), each on its own address and port, also not behind the proxy.

    ``local_host``: the one topology host this launch runs (``up --host``); every entry
    placed elsewhere is ``remote`` (listed, not started), its private port its public one.
    The Configuration Server is placed by :func:`confserv_place`; a SQLite store server
    with its Nodes (on their host when they share one).
    """
    confserv_host, confserv_address = confserv_place(db)
    genesys = ("-host", confserv_address, "-port", str(confserv_port))

    def remote(host_name: str | None) -> bool:
        return local_host is not None and host_name != local_host

    def private_port(name: str, host_name: str | None) -> int:
        return public[name] if remote(host_name) and name in public else private[name]

    entries = [
        AppEntry(
            app=CONFSERV_APP,
            type=CONFSERV_TYPE,
            host=confserv_address,
            public_port=confserv_port,
            private_port=confserv_port if remote(confserv_host) else private[CONFSERV_APP],
            tier=TIER_CONFSERV,
            argv=(
                "confserv",
                served_config,
                "--port",
                str(private.get(CONFSERV_APP, confserv_port)),
                "--bind",
                confserv_address,
                "--state",
                state_dir,
            ),
            listen_env=False,
            host_name=confserv_host,
            remote=remote(confserv_host),
        )
    ]
    stores = sqlite_stores(db)
    hosts = node_hosts(db)
    store_host = hosts[0] if len(hosts) == 1 else None
    for name, url in zip(store_names(db, len(stores)), stores, strict=True):
        if remote(store_host):
            continue  # its port is its host's choice: only that host lists it
        entries.append(
            AppEntry(
                app=name,
                type=STORE_TYPE,
                host=LOOPBACK,
                public_port=private[name],
                private_port=private[name],
                tier=TIER_SERVERS,
                argv=("store", "serve", url, "--port", str(private[name]), "--managed"),
                listen_env=False,
                host_name=store_host,
            )
        )
    addresses: dict[str, str] = {}
    for host in sorted(db.hosts.values(), key=lambda h: h.name):
        addresses.setdefault(host.address, host.name)
    for server in redis_servers(db) if redis is None else redis:
        redis_host = addresses.get(server.bind)
        entries.append(
            AppEntry(
                app=server.name,
                type=REDIS_TYPE,
                host=server.bind,
                public_port=server.port,
                private_port=server.port,
                tier=TIER_SERVERS,
                argv=server.argv(),
                listen_env=False,
                program=REDIS_PROGRAM,
                host_name=redis_host,
                remote=remote(redis_host),
            )
        )
    for app in launched_apps(db):
        argv: tuple[str, ...] = (_COMMAND_BY_TYPE[app.type], *genesys, "-app", app.name)
        node_id = cluster = data_center = None
        if app.type == "OrchestrationServer":
            primary = db.applications.get(app.primary_name, app)
            node_id = primary.dbid
            cluster, data_center = node_cluster(db, app)
            if cluster is not None:
                argv += ("-cluster", cluster)
        entries.append(
            AppEntry(
                app=app.name,
                type=app.type,
                host=app.address,
                public_port=public[app.name],
                private_port=private_port(app.name, app.host),
                tier=_tier(app),
                argv=argv,
                node_id=node_id,
                cluster=cluster,
                data_center=data_center,
                primary=app.primary,
                backup=app.backup,
                host_name=app.host,
                remote=remote(app.host),
            )
        )
    return tuple(entries)


def cluster_name(entries: tuple[AppEntry, ...]) -> str | None:
    """The cluster list the nodes belong to (the first by name if there are several)."""
    names = sorted({e.cluster for e in entries if e.cluster is not None})
    return names[0] if names else None


def rewrite_ports(raw: object, ports: Mapping[str, int]) -> object:
    """A copy of a raw YAML database (a loaded one: each application a mapping) with the
    applications' ports replaced."""
    data = copy.deepcopy(raw)
    assert isinstance(data, dict)
    for name, port in ports.items():
        data["applications"][name]["port"] = port
    return data
