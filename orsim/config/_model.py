"""The configuration object model: what the Configuration Server holds and serves.

Objects are frozen attrs values. Option values are strings, as in Genesys. Every object
carries a DBID; a Node's ID is the DBID of its primary application.
"""

from __future__ import annotations

from typing import Any

import attrs

from orsim.config._options import (
    ADDP_REMOTE_TIMEOUT,
    ADDP_TIMEOUT,
    ADDP_TRACE,
    CLUSTER,
    RECONNECT_TIMEOUT,
)

#: section -> option name -> string value
Options = dict[str, dict[str, str]]

APP_TYPES = ("OrchestrationServer", "RoutingServer", "SIPServer", "TServer")
#: Application types that are a T-Server for ORS purposes.
TSERVER_TYPES = ("SIPServer", "TServer")


@attrs.frozen
class Host:
    name: str
    address: str
    dbid: int = 0


@attrs.frozen
class AppConnection:
    """One entry of an Application's Connections list."""

    server: str
    addp_timeout: float = ADDP_TIMEOUT.default_value
    addp_remote_timeout: float = ADDP_REMOTE_TIMEOUT.default_value
    addp_trace: str = ADDP_TRACE.default_value
    #: Seconds between attempts to reach a server of a redundant pair (see the option).
    reconnect_timeout: float = RECONNECT_TIMEOUT.default_value


@attrs.frozen(kw_only=True)
class Application:
    name: str
    type: str
    host: str
    address: str
    port: int
    dbid: int = 0
    backup: str | None = None
    #: The primary whose ``backup`` link names this application (derived at load).
    primary: str | None = None
    redundancy: str = "warm-standby"
    connections: tuple[AppConnection, ...] = ()
    options: Options = attrs.field(factory=dict, eq=False)

    @property
    def is_backup(self) -> bool:
        return self.primary is not None

    @property
    def primary_name(self) -> str:
        """The Node's primary application: this one unless it is a backup."""
        return self.primary if self.primary is not None else self.name

    def connection_to(self, server: str) -> AppConnection | None:
        for conn in self.connections:
            if conn.server == server:
                return conn
        return None


@attrs.frozen(kw_only=True)
class Transaction:
    name: str
    type: str
    tenant: str
    dbid: int = 0
    annex: Options = attrs.field(factory=dict, eq=False)

    @property
    def cluster_members(self) -> dict[str, str]:
        """Primary application name -> data center, from the ``cluster`` section."""
        return dict(self.annex.get(CLUSTER.section, {}))


@attrs.frozen(kw_only=True)
class ConfigDatabase:
    """A whole loaded database. ``source`` is the file it came from (for messages)."""

    source: str
    tenants: tuple[str, ...]
    hosts: dict[str, Host] = attrs.field(eq=False)
    applications: dict[str, Application] = attrs.field(eq=False)
    transactions: dict[str, Transaction] = attrs.field(eq=False)

    @property
    def list_tenant(self) -> str:
        """Where cluster lists live: Environment when multi-tenant, else Resources."""
        return "Environment" if "Environment" in self.tenants else "Resources"


def application_to_wire(app: Application) -> dict[str, Any]:
    """An Application as a JSON object for the wire."""
    return attrs.asdict(app)


def application_from_wire(data: dict[str, Any]) -> Application:
    """Inverse of ``application_to_wire``."""
    fields = dict(data)
    fields["connections"] = tuple(AppConnection(**c) for c in fields.get("connections", ()))
    fields["options"] = {s: dict(kv) for s, kv in fields.get("options", {}).items()}
    return Application(**fields)


def transaction_to_wire(txn: Transaction) -> dict[str, Any]:
    """A Transaction as a JSON object for the wire."""
    return attrs.asdict(txn)


def transaction_from_wire(data: dict[str, Any]) -> Transaction:
    """Inverse of ``transaction_to_wire``."""
    fields = dict(data)
    fields["annex"] = {s: dict(kv) for s, kv in fields.get("annex", {}).items()}
    return Transaction(**fields)
