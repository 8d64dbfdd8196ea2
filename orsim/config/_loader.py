"""Loading a YAML configuration database and checking it against every SPEC rule.

``lint_text`` reads the document into model objects while collecting *every* problem
(each located ``file:line`` and naming the object and key), then checks the rules that
span objects: backup links, connections, cluster lists, legacy cluster sections and the
cluster requirements (same T-Server, same persistent storage, one URS per ORS).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

import attrs
import yaml

from orsim.config._effective import (
    ORS_TYPE,
    storage_of,
    tservers_of,
    urs_problem,
)
from orsim.config._model import (
    APP_TYPES,
    TSERVER_TYPES,
    AppConnection,
    Application,
    ConfigDatabase,
    Host,
    Options,
    Transaction,
)
from orsim.config._names import name_problem, shown
from orsim.config._option import Option
from orsim.config._option_rules import (
    CLUSTER_SECTION,
    list_option_problem,
    option_value_problem,
    option_value_to_str,
    option_value_warning,
)
from orsim.config._options import (
    ADDP_REMOTE_TIMEOUT,
    ADDP_TIMEOUT,
    ADDP_TRACE,
    CONNECTION_OPTIONS,
    RECONNECT_TIMEOUT,
    ROUTING_POINTS,
    STORE,
)
from orsim.config._yaml_source import (
    Path,
    YamlDocument,
    parse_yaml,
    read_yaml_text,
    yaml_error_message,
)
from orsim.errors import ConfigError

#: The Application type of a URS.
URS_TYPE = "RoutingServer"

#: DBIDs are numbered per object kind in file order from here, as Configuration Server does.
FIRST_DBID = 101
TOP_LEVEL_KEYS = ("tenants", "hosts", "applications", "transactions")
KNOWN_TENANTS = ("Environment", "Resources")
APP_KEYS = ("type", "host", "port", "backup", "redundancy", "connections", "options")
CONNECTION_KEYS = ("server", *(option.key for option in CONNECTION_OPTIONS))
REDUNDANCY_TYPES = ("warm-standby", "hot-standby", "not-specified")
#: The store an ORS uses when ``persistence/store`` is not set.
DEFAULT_STORE = STORE.default_value
TRANSACTION_KEYS = ("type", "tenant", "annex")
#: Host addresses that bind every interface, so reachable from other machines: warned of.
ANY_ADDRESS = ("0.0.0.0", "::", "0:0:0:0:0:0:0:0")
T = TypeVar("T")
_KINDS = {"applications": "application", "transactions": "transaction", "hosts": "host"}


@attrs.frozen
class LintResult:
    """What checking a database found. ``database`` is None when it has problems."""

    source: str
    database: ConfigDatabase | None
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def error(self) -> ConfigError:
        """The problems as one ConfigError (message: the problem, or a count)."""
        if len(self.problems) == 1:
            return ConfigError(self.problems[0], list(self.problems))
        return ConfigError(
            f"{self.source}: {len(self.problems)} configuration problems", list(self.problems)
        )


def load_database(path: str | os.PathLike[str]) -> ConfigDatabase:
    """Load and check a YAML configuration database.

    Raises:
        ConfigError: the file cannot be read or breaks rules; ``problems`` lists them all.
    """
    result = lint_database(path)
    if result.database is None:
        raise result.error()
    return result.database


def lint_database(path: str | os.PathLike[str]) -> LintResult:
    """Check a YAML file against every rule, collecting all problems and warnings."""
    source = os.fspath(path)
    try:
        text = read_yaml_text(source)
    except ConfigError as exc:
        return LintResult(source, None, (str(exc),))
    return lint_text(text, source)


def lint_text(text: str, source: str) -> LintResult:
    """Like ``lint_database`` for text already read (``source`` names it in messages)."""
    try:
        document = parse_yaml(text, source)
    except yaml.YAMLError as exc:
        return LintResult(source, None, (yaml_error_message(exc, source),))
    checker = _Checker(document)
    database = checker.run()
    problems = tuple(dict.fromkeys(checker.problems))  # keep order, drop repeats
    return LintResult(
        source, None if problems else database, problems, tuple(dict.fromkeys(checker.warnings))
    )


class _Checker:
    def __init__(self, document: YamlDocument) -> None:
        self.doc = document
        self.problems: list[str] = list(document.problems)
        self.warnings: list[str] = []

    # -- messages ----------------------------------------------------------------

    def _message(self, path: Path, text: str) -> str:
        where = self.doc.where(path)
        if len(path) >= 2 and path[0] in _KINDS:
            subject = f"{_KINDS[str(path[0])]} {shown(str(path[1]))}"
            key = "/".join(str(p) for p in path[2:])
            return f"{where}: {subject}: {key}: {text}" if key else f"{where}: {subject}: {text}"
        key = "/".join(str(p) for p in path)
        return f"{where}: {key}: {text}" if key else f"{where}: {text}"

    def problem(self, path: Path, text: str) -> None:
        self.problems.append(self._message(path, text))

    def warning(self, path: Path, text: str) -> None:
        self.warnings.append(self._message(path, text))

    # -- shapes ------------------------------------------------------------------

    def mapping(self, value: object, path: Path, what: str) -> dict[str, object]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"{what} must be a mapping, not {_kind(value)}")
            return {}
        return value

    def unknown_keys(
        self, body: Mapping[str, object], allowed: tuple[str, ...], path: Path
    ) -> None:
        for key in body:
            if key not in allowed:
                self.problem((*path, key), f"unknown key (expected one of: {', '.join(allowed)})")

    def name(self, value: object, path: Path, what: str, required: bool = True) -> str | None:
        if value is None:
            if required:
                self.problem(path, f"{what} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.problem(path, f"{what} must be a name, not {_kind(value)}")
            return None
        return str(value)

    def options(self, value: object, path: Path) -> Options:
        sections = self.mapping(value, path, "options")
        result: Options = {}
        for section, keys in sections.items():
            body = self.mapping(keys, (*path, section), "an option section")
            result[section] = {}
            for key, raw in body.items():
                try:
                    result[section][key] = option_value_to_str(raw)
                except TypeError as exc:
                    self.problem((*path, section, key), f"option value {exc}")
        return result

    # -- the document ------------------------------------------------------------

    def run(self) -> ConfigDatabase:
        top = self.mapping(self.doc.data, (), "the database")
        if self.doc.data is None:
            self.problem((), "the database is empty")
        self.unknown_keys(top, TOP_LEVEL_KEYS, ())
        tenants = self.tenants(top.get("tenants"))
        hosts = self.hosts(top.get("hosts"))
        apps = self.applications(top.get("applications"), hosts)
        list_tenant = "Environment" if "Environment" in tenants else "Resources"
        transactions = self.transactions(top.get("transactions"), tenants, list_tenant)
        apps = self.backups(apps)
        self.connections(apps)
        self.twins(apps)
        for name in sorted(set(apps) & set(transactions)):
            self.problem(
                ("transactions", name),
                "an application has the same name; object names must be unique "
                "(live changes address objects by name)",
            )
        for txn in transactions.values():
            self.cluster_list(txn, apps)
        self.legacy_clusters(apps)
        return ConfigDatabase(
            source=self.doc.source,
            tenants=tenants,
            hosts=hosts,
            applications=apps,
            transactions=transactions,
        )

    def tenants(self, value: object) -> tuple[str, ...]:
        path: Path = ("tenants",)
        if value is None:
            return KNOWN_TENANTS
        if not isinstance(value, list):
            self.problem(path, f"tenants must be a list, not {_kind(value)}")
            return KNOWN_TENANTS
        names: list[str] = []
        for index, item in enumerate(value):
            name = self.name(item, (*path, index), "a tenant")
            if name is None:
                continue
            if name in names:
                self.problem((*path, index), f"tenant '{name}' is listed twice")
            names.append(name)
        if not set(names) & set(KNOWN_TENANTS):
            self.problem(path, "tenants must include Environment (multi-tenant) or Resources")
        return tuple(dict.fromkeys(names))

    def hosts(self, value: object) -> dict[str, Host]:
        hosts: dict[str, Host] = {}
        for index, (name, body) in enumerate(self.mapping(value, ("hosts",), "hosts").items()):
            path: Path = ("hosts", name)
            if isinstance(body, str):
                body = {"address": body}
            fields = self.mapping(body, path, "a host")
            self.unknown_keys(fields, ("address",), path)
            address = self.name(fields.get("address"), (*path, "address"), "address")
            if address is not None and address.strip("[]") in ANY_ADDRESS:
                self.warning(
                    (*path, "address"),
                    f"{address} makes its applications listen on every network interface, "
                    "reachable from other machines; use 127.0.0.1 or one interface's address",
                )
            hosts[name] = Host(name, address or "", FIRST_DBID + index)
        return hosts

    def applications(self, value: object, hosts: Mapping[str, Host]) -> dict[str, Application]:
        apps: dict[str, Application] = {}
        taken: dict[tuple[str, int], str] = {}
        bodies = self.mapping(value, ("applications",), "applications")
        for index, (name, body) in enumerate(bodies.items()):
            path: Path = ("applications", name)
            problem = name_problem(name)
            if problem is not None:
                self.problem(path, problem)
            fields = self.mapping(body, path, "an application")
            self.unknown_keys(fields, APP_KEYS, path)
            app_type = self.name(fields.get("type"), (*path, "type"), "type") or ""
            if app_type and app_type not in APP_TYPES:
                self.problem(
                    (*path, "type"),
                    f"unknown application type '{app_type}' (expected one of: "
                    f"{', '.join(APP_TYPES)})",
                )
            host_name = self.name(fields.get("host"), (*path, "host"), "host") or ""
            host = hosts.get(host_name)
            if host_name and host is None:
                self.problem((*path, "host"), f"host '{host_name}' is not defined under hosts")
            port = self.port(fields.get("port"), (*path, "port"))
            if host is not None and port:
                clash = taken.get((host.address, port))
                if clash is not None:
                    self.problem(
                        (*path, "port"),
                        f"port {port} on {host.address} is already used by application '{clash}'",
                    )
                taken[(host.address, port)] = name
            redundancy = self.name(
                fields.get("redundancy", "warm-standby"), (*path, "redundancy"), "redundancy"
            )
            if redundancy is not None and redundancy not in REDUNDANCY_TYPES:
                self.problem(
                    (*path, "redundancy"),
                    f"unknown redundancy type '{redundancy}' (expected one of: "
                    f"{', '.join(REDUNDANCY_TYPES)})",
                )
            elif app_type == ORS_TYPE and redundancy == "hot-standby":
                self.problem(
                    (*path, "redundancy"), "Orchestration Server supports warm-standby only"
                )
            options = self.options(fields.get("options"), (*path, "options"))
            self.option_values(options, (*path, "options"))
            apps[name] = Application(
                name=name,
                type=app_type,
                host=host_name,
                address=host.address if host else "",
                port=port,
                dbid=FIRST_DBID + index,
                backup=self.name(fields.get("backup"), (*path, "backup"), "backup", False),
                redundancy=redundancy or "warm-standby",
                connections=self.connection_list(fields.get("connections"), (*path, "connections")),
                options=options,
            )
        return apps

    def port(self, value: object, path: Path) -> int:
        if value is None:
            self.problem(path, "port is required")
            return 0
        if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, f"port must be a number, not {value!r}")
            return 0
        if not 1 <= value <= 65535:
            self.problem(path, f"port {value} is out of range 1-65535")
            return 0
        return value

    def connection_list(self, value: object, path: Path) -> tuple[AppConnection, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(path, f"connections must be a list, not {_kind(value)}")
            return ()
        result: list[AppConnection] = []
        for index, item in enumerate(value):
            conn = self.connection((*path, index), item)
            if conn is None:
                continue
            if any(c.server == conn.server for c in result):
                self.problem((*path, index), f"connection to '{conn.server}' is listed twice")
                continue
            result.append(conn)
        return tuple(result)

    def connection(self, path: Path, item: object) -> AppConnection | None:
        if not isinstance(item, dict):
            server = self.name(item, path, "a connection")
            return AppConnection(server) if server else None
        self.unknown_keys(item, CONNECTION_KEYS, path)
        server = self.name(item.get("server"), (*path, "server"), "server")
        if server is None:
            return None
        return AppConnection(
            server,
            self.parameter(item, ADDP_TIMEOUT, path),
            self.parameter(item, ADDP_REMOTE_TIMEOUT, path),
            self.parameter(item, ADDP_TRACE, path),
            self.parameter(item, RECONNECT_TIMEOUT, path),
        )

    def parameter(self, item: dict[str, object], option: Option[T], path: Path) -> T:
        """A connection parameter's value; its default when absent or refused (and said)."""
        if option.key not in item:
            return option.default_value
        try:
            text = option_value_to_str(item[option.key])
        except TypeError as exc:
            self.problem((*path, option.key), f"option value {exc}")
            return option.default_value
        problem = option.problem(option.key, text)
        if problem is not None:
            self.problem((*path, option.key), problem)
            return option.default_value
        return option.value(text)

    def option_values(self, options: Options, path: Path) -> None:
        for section, keys in options.items():
            for key, value in keys.items():
                problem = option_value_problem(section, key, value)
                if problem is not None:
                    self.problem((*path, section, key), problem)
                warning = option_value_warning(section, key, value)
                if warning is not None:
                    self.warning((*path, section, key), warning)

    def transactions(
        self, value: object, tenants: tuple[str, ...], list_tenant: str
    ) -> dict[str, Transaction]:
        result: dict[str, Transaction] = {}
        bodies = self.mapping(value, ("transactions",), "transactions")
        for index, (name, body) in enumerate(bodies.items()):
            path: Path = ("transactions", name)
            fields = self.mapping(body, path, "a transaction")
            self.unknown_keys(fields, TRANSACTION_KEYS, path)
            txn_type = self.name(fields.get("type"), (*path, "type"), "type") or ""
            if txn_type and txn_type != "List":
                self.problem(
                    (*path, "type"),
                    f"transaction type '{txn_type}' is not supported "
                    "(orsim clusters use type List)",
                )
            tenant = self.name(fields.get("tenant", list_tenant), (*path, "tenant"), "tenant")
            if tenant is not None and tenant != list_tenant:
                mode = "multi-tenant" if list_tenant == "Environment" else "single-tenant"
                self.problem(
                    (*path, "tenant"),
                    f"a cluster list must be under tenant '{list_tenant}' in a {mode} "
                    f"configuration, not '{tenant}'",
                )
            elif tenant is not None and tenant not in tenants:
                self.problem((*path, "tenant"), f"tenant '{tenant}' is not listed under tenants")
            annex = self.options(fields.get("annex"), (*path, "annex"))
            for section, keys in annex.items():
                for key in keys:
                    reason = list_option_problem(section, key)
                    if reason is not None:
                        self.problem((*path, "annex", section, key), reason)
                if not keys and list_option_problem(section, "") is not None:
                    self.problem((*path, "annex", section), list_option_problem(section, "") or "")
            self.option_values(annex, (*path, "annex"))
            result[name] = Transaction(
                name=name,
                type=txn_type,
                tenant=tenant or list_tenant,
                dbid=FIRST_DBID + index,
                annex=annex,
            )
        return result

    # -- rules across objects ----------------------------------------------------

    def backups(self, apps: dict[str, Application]) -> dict[str, Application]:
        """Check backup links and derive each backup's ``primary``."""
        primaries: dict[str, str] = {}
        for app in apps.values():
            if app.backup is None:
                continue
            path: Path = ("applications", app.name, "backup")
            target = apps.get(app.backup)
            if app.backup == app.name:
                self.problem(path, "an application cannot be its own backup")
            elif target is None:
                self.problem(path, f"backup '{app.backup}' is not an application")
            elif target.type != app.type:
                self.problem(
                    path,
                    f"backup '{app.backup}' is a {target.type}; a backup must be of the same "
                    f"type as its primary ({app.type})",
                )
            elif target.backup == app.name:
                self.problem(
                    path,
                    f"backup link is circular ({app.name} -> {app.backup} -> {app.name})",
                )
            elif target.backup is not None:
                self.problem(
                    path,
                    f"backup '{app.backup}' has a backup of its own ('{target.backup}'); "
                    "a backup cannot itself be a primary",
                )
            elif app.backup in primaries:
                self.problem(
                    path,
                    f"'{app.backup}' is already the backup of '{primaries[app.backup]}'",
                )
            else:
                primaries[app.backup] = app.name
        return {
            name: attrs.evolve(app, primary=primaries.get(name), options=app.options)
            for name, app in apps.items()
        }

    def connections(self, apps: Mapping[str, Application]) -> None:
        for app in apps.values():
            path: Path = ("applications", app.name, "connections")
            for index, conn in enumerate(app.connections):
                if conn.server == app.name:
                    self.problem((*path, index), "an application cannot connect to itself")
                elif conn.server not in apps:
                    self.problem((*path, index), f"server '{conn.server}' is not an application")
            if app.type == ORS_TYPE:
                problem = urs_problem(app, apps)
                if problem is not None:
                    self.problem(path, problem)

    def twins(self, apps: Mapping[str, Application]) -> None:
        """Redundant T-Servers and URSes (reference section 8): a client lists the
        primary and finds its twin through the ``backup`` link, so a connection to the
        backup itself is an error; a T-Server's twin serves the same routing points,
        or the routers' registrations would fail after a switch."""
        for app in apps.values():
            for index, conn in enumerate(app.connections):
                server = apps.get(conn.server)
                if server is None or server.type not in (*TSERVER_TYPES, URS_TYPE):
                    continue
                if server.primary is not None:
                    self.problem(
                        ("applications", app.name, "connections", index),
                        f"'{server.name}' is the backup of '{server.primary}': connect to the "
                        f"primary; a client finds its backup through the backup link and "
                        "alternates between the two (reconnect-timeout)",
                    )
            twin = apps.get(app.backup) if app.backup else None
            if twin is None or app.type not in TSERVER_TYPES or twin.type != app.type:
                continue
            ours = ROUTING_POINTS.read_section(app.options)
            theirs = ROUTING_POINTS.read_section(twin.options)
            if ours != theirs:
                self.problem(
                    ("applications", twin.name, "options", ROUTING_POINTS.section),
                    f"backup '{twin.name}' serves routing points {_points(theirs)} but its "
                    f"primary '{app.name}' serves {_points(ours)}; a hot-standby T-Server "
                    "must serve the same ones (the routers register on them after a switch)",
                )

    def members(
        self, members: Mapping[str, str], apps: Mapping[str, Application], path: Path
    ) -> list[str]:
        """The listed Nodes that are existing primary ORS applications."""
        valid = []
        for name in members:
            target = apps.get(name)
            if target is None:
                self.problem((*path, name), f"Node '{name}' is not an application")
            elif target.type != ORS_TYPE:
                self.problem((*path, name), f"Node '{name}' is a {target.type}, not an {ORS_TYPE}")
            elif target.is_backup:
                self.problem(
                    (*path, name),
                    f"'{name}' is the backup of '{target.primary}'; a cluster lists each Node "
                    "by its primary application",
                )
            else:
                valid.append(name)
        return valid

    def cluster_list(self, txn: Transaction, apps: Mapping[str, Application]) -> None:
        path: Path = ("transactions", txn.name, "annex", CLUSTER_SECTION)
        members = txn.annex.get(CLUSTER_SECTION)
        if not members:
            self.problem(
                path[:3],
                "a cluster list needs a 'cluster' section naming its Nodes "
                "(primary application -> data center)",
            )
            return
        self.requirements(
            self.members(members, apps, path), apps, txn, path, f"cluster '{txn.name}'"
        )

    def legacy_clusters(self, apps: Mapping[str, Application]) -> None:
        """Clusters defined the legacy way: a ``cluster`` section in ORS app options."""
        checked: set[frozenset[str]] = set()
        for app in apps.values():
            members = app.options.get(CLUSTER_SECTION)
            if members is None or app.type != ORS_TYPE:
                continue
            path: Path = ("applications", app.name, "options", CLUSTER_SECTION)
            if not members:
                self.problem(path, "the legacy cluster section lists no Nodes")
                continue
            if app.primary_name not in members:
                self.problem(
                    path,
                    f"the legacy cluster section does not list this application's Node "
                    f"'{app.primary_name}'",
                )
            backup = apps.get(app.backup) if app.backup else None
            if backup is not None and backup.options.get(CLUSTER_SECTION) != members:
                # The backup would start with another view of the cluster and assign
                # calls differently from every other application.
                has = "does not have" if CLUSTER_SECTION not in backup.options else "differs in"
                self.problem(
                    ("applications", backup.name, "options", CLUSTER_SECTION),
                    f"backup '{backup.name}' {has} the legacy cluster section of its primary "
                    f"'{app.name}'; a Node's two applications must list the same cluster",
                )
            key = frozenset(members)
            if key in checked:
                continue
            checked.add(key)
            valid = self.members(members, apps, path)
            self.requirements(valid, apps, None, path, f"the legacy cluster of '{app.name}'")

    def requirements(
        self,
        members: list[str],
        apps: Mapping[str, Application],
        cluster: Transaction | None,
        path: Path,
        label: str,
    ) -> None:
        """Same T-Server and same persistent storage across every app of every Node."""
        nodes = [apps[m] for m in members]
        everyone = nodes + [
            apps[n.backup] for n in nodes if n.backup is not None and n.backup in apps
        ]
        if not everyone:
            return
        first = everyone[0]
        first_tservers = tservers_of(first, apps)
        first_store = storage_of(first, cluster)
        for app in everyone:
            tservers = tservers_of(app, apps)
            where = (*path, app.primary_name)
            if not tservers:
                self.problem(
                    where,
                    f"application '{app.name}' has no T-Server/SIP Server connection; every "
                    f"Node of {label} must serve the same T-Server",
                )
            elif app is not first and first_tservers and tservers != first_tservers:
                self.problem(
                    where,
                    f"application '{app.name}' serves T-Server {', '.join(tservers)} but "
                    f"'{first.name}' serves {', '.join(first_tservers)}; every Node of {label} "
                    "must serve the same T-Server",
                )
            store = storage_of(app, cluster)
            if app is first and (store or DEFAULT_STORE).strip().startswith("sqlite:"):
                addresses = sorted({a.address for a in everyone})
                if len(addresses) > 1 and not all(map(_loopback, addresses)):
                    self.problem(
                        where,
                        f"{label} keeps its sessions in a SQLite file "
                        f"({_repr(store or DEFAULT_STORE)}) but its Nodes run on hosts with "
                        f"different addresses ({', '.join(addresses)}); a file cannot be "
                        "shared across machines: use a redis:// store",
                    )
            if app is not first and store != first_store:
                self.problem(
                    where,
                    f"application '{app.name}' uses persistent storage {_repr(store)} but "
                    f"'{first.name}' uses {_repr(first_store)}; every Node of {label} must use "
                    "the same persistent storage (persistence/store)",
                )


def _points(points: Mapping[str, str]) -> str:
    return ", ".join(sorted(points)) if points else "none"


def _loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: hosts that are all this one machine."""
    return address.startswith("127.") or address in ("::1", "localhost")


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _repr(value: str | None) -> str:
    return repr(value) if value is not None else "none"
