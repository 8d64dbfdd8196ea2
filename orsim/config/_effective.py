"""Effective options of an ORS application and the cluster start-up requirements.

Pure functions over model objects: no I/O. The merge follows the Clustering chapter: with
``-cluster C`` an option set both in the Application and in the List transaction C takes
the list's value; without it, only the Application is read. Logging sections and
``scxml/system-id`` are never taken from a list (the loader rejects them; if one arrives
anyway, e.g. through a live change, it is ignored with a warning).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeVar

import attrs

from orsim.config._model import TSERVER_TYPES, Application, Options, Transaction
from orsim.config._option import Option
from orsim.config._option_rules import CLUSTER_SECTION, list_option_problem
from orsim.config._options import STORE

T = TypeVar("T")

Origin = Literal["application", "transaction"]
ORS_TYPE = "OrchestrationServer"
URS_TYPE = "RoutingServer"


@attrs.frozen
class OptionValue:
    """One effective option value and where it came from."""

    value: str
    origin: Origin


@attrs.frozen
class EffectiveOptions:
    """The options an ORS application runs with, each with its origin.

    ``warnings`` lists the list options that were ignored (logging, ``scxml/system-id``,
    sections a list may not carry).
    """

    app: str
    cluster: str | None
    values: Mapping[str, Mapping[str, OptionValue]] = attrs.field(eq=False)
    warnings: tuple[str, ...] = ()

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        """The value of ``section/key``, or ``default`` when unset."""
        found = self.values.get(section, {}).get(key)
        return found.value if found is not None else default

    def value(self, option: Option[T]) -> T:
        """The value of ``option`` (its default when unset).

        Raises:
            ConfigError: the value set is refused (naming this application).
        """
        return option.value(self.get(option.section, option.key), owner=f"application '{self.app}'")

    def section(self, section: str) -> dict[str, str]:
        """One section as plain ``key -> value``."""
        return {k: v.value for k, v in self.values.get(section, {}).items()}

    def plain(self) -> Options:
        """All options as plain ``section -> key -> value``."""
        return {s: self.section(s) for s in self.values}

    def to_json(self) -> dict[str, object]:
        """The SPEC form of ``orsim config show --json``."""
        return {
            "app": self.app,
            "cluster": self.cluster,
            "options": {
                section: {k: {"value": v.value, "from": v.origin} for k, v in keys.items()}
                for section, keys in self.values.items()
            },
        }


def effective_options(app: Application, cluster: Transaction | None) -> EffectiveOptions:
    """Merge ``app``'s options with the cluster list's annex (the list wins).

    Args:
        app: the ORS application.
        cluster: the List transaction named by ``-cluster``, or None (legacy: the
            application's options alone).

    The list's ``cluster`` section (Node membership) replaces the application's legacy one
    as a whole rather than key by key, so a Node is never a member by accident of merging.
    """
    values: dict[str, dict[str, OptionValue]] = {
        section: {key: OptionValue(value, "application") for key, value in keys.items()}
        for section, keys in app.options.items()
    }
    warnings: list[str] = []
    if cluster is not None:
        for section, keys in cluster.annex.items():
            if section == CLUSTER_SECTION:
                values[section] = {k: OptionValue(v, "transaction") for k, v in keys.items()}
                continue
            for key, value in keys.items():
                reason = list_option_problem(section, key)
                if reason is not None:
                    warnings.append(
                        f"cluster '{cluster.name}': option {section}/{key} ignored: {reason}"
                    )
                    continue
                values.setdefault(section, {})[key] = OptionValue(value, "transaction")
    return EffectiveOptions(app.name, cluster.name if cluster else None, values, tuple(warnings))


def connected_of_type(
    app: Application, apps: Mapping[str, Application], types: tuple[str, ...]
) -> list[str]:
    """Names of ``app``'s connections whose server is of one of ``types``, in list order."""
    return [c.server for c in app.connections if c.server in apps and apps[c.server].type in types]


def tservers_of(app: Application, apps: Mapping[str, Application]) -> tuple[str, ...]:
    """The T-Servers/SIP Servers ``app`` connects to, sorted."""
    return tuple(sorted(connected_of_type(app, apps, TSERVER_TYPES)))


def storage_of(app: Application, cluster: Transaction | None) -> str | None:
    """The effective ``persistence/store`` of ``app`` (None: not set)."""
    return effective_options(app, cluster).get(STORE.section, STORE.key)


def urs_problem(app: Application, apps: Mapping[str, Application]) -> str | None:
    """The one-URS requirement, in the SPEC's wording (None: satisfied)."""
    urses = connected_of_type(app, apps, (URS_TYPE,))
    if len(urses) == 1:
        return None
    if not urses:
        return (
            f"application '{app.name}' lists no RoutingServer connection; "
            "an ORS node must have exactly one"
        )
    return (
        f"application '{app.name}' lists {len(urses)} RoutingServer connections "
        f"({', '.join(urses)}); an ORS node must have exactly one"
    )


def cluster_members(app: Application, cluster: Transaction | None) -> dict[str, str] | None:
    """Primary app name -> data center of the cluster ``app`` runs in (None: no cluster).

    With a list, its ``cluster`` section; without, the application's legacy one.
    """
    if cluster is not None:
        return cluster.cluster_members
    legacy = app.options.get(CLUSTER_SECTION)
    return dict(legacy) if legacy else None


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return ", ".join(value) if value else "none"
    return repr(value) if value is not None else "none"


def check_node_cluster(
    app: Application, cluster: Transaction | None, apps: Mapping[str, Application]
) -> list[str]:
    """The start-up requirements of an ORS node; returns every problem (empty: start).

    Args:
        app: the application the node runs as.
        cluster: the List transaction from ``-cluster``, or None (legacy: the ``cluster``
            section of the application's own options, if any; none at all: standalone).
        apps: applications by name; must hold every server ``app`` connects to, every
            Node listed in the cluster and each listed Node's backup (what is missing is
            reported as not found).

    Checks: ``app`` is an OrchestrationServer with exactly one RoutingServer connection;
    in a cluster, ``app`` (or its primary) is listed, every listed Node is an existing
    primary ORS application, and every application of every Node connects to the same
    T-Server(s) and uses the same ``persistence/store`` as ``app`` (effective options).
    """
    problems: list[str] = []
    if app.type != ORS_TYPE:
        return [f"application '{app.name}' is of type {app.type}, not {ORS_TYPE}"]
    for conn in app.connections:
        if conn.server not in apps:
            problems.append(
                f"application '{app.name}' connects to '{conn.server}', "
                "which is not in the configuration"
            )
    urs = urs_problem(app, apps)
    if urs is not None:
        problems.append(urs)
    members = cluster_members(app, cluster)
    if members is None:
        return problems
    label = f"cluster '{cluster.name}'" if cluster else f"the legacy cluster of '{app.name}'"
    if not members:
        return [*problems, f"{label} lists no Nodes (its annex has no cluster section)"]
    if app.primary_name not in members:
        if app.is_backup:
            problems.append(
                f"application '{app.name}' is not in {label}: neither it nor its primary "
                f"'{app.primary_name}' is listed"
            )
        else:
            problems.append(f"application '{app.name}' is not listed in {label}")
    my_tservers = tservers_of(app, apps)
    my_store = storage_of(app, cluster)
    if not my_tservers:
        problems.append(
            f"application '{app.name}' lists no T-Server/SIP Server connection; "
            f"every Node of {label} must serve the same T-Server"
        )
    for member in sorted(members):
        peer = apps.get(member)
        if peer is None:
            problems.append(f"{label} lists '{member}', which is not an application")
            continue
        if peer.type != ORS_TYPE:
            problems.append(f"{label} lists '{member}', which is a {peer.type}, not {ORS_TYPE}")
            continue
        if peer.is_backup:
            problems.append(
                f"{label} lists '{member}', a backup application; a cluster lists each Node "
                f"by its primary ('{peer.primary}')"
            )
            continue
        peers = [peer]
        if peer.backup is not None:
            backup = apps.get(peer.backup)
            if backup is None:
                problems.append(
                    f"application '{member}' names backup '{peer.backup}', which is not found"
                )
            else:
                peers.append(backup)
        for other in peers:
            if other.name == app.name:
                continue
            theirs = tservers_of(other, apps)
            if my_tservers and theirs != my_tservers:
                problems.append(
                    f"application '{app.name}' serves T-Server {_show(my_tservers)} but "
                    f"'{other.name}' (Node '{member}') serves {_show(theirs)}; every Node "
                    f"of {label} must serve the same T-Server"
                )
            their_store = storage_of(other, cluster)
            if their_store != my_store:
                problems.append(
                    f"application '{app.name}' uses persistent storage {_show(my_store)} but "
                    f"'{other.name}' (Node '{member}') uses {_show(their_store)}; every Node "
                    f"of {label} must use the same persistent storage"
                )
    return problems
