"""Faults by host: which applications a ``partition``/``delay`` of A and B, or an
``isolate`` of a host, hits (pure).

A and B each name an application or a topology host (every application placed on it);
``isolate H`` is H against every application placed anywhere else. Only links through
the fault proxy can be cut, so a host's store processes (the SQLite store server, a
Redis), which nodes reach directly, are not part of it.
"""

from __future__ import annotations

from orsim.cluster._control import Sides
from orsim.cluster._plan import STORE_TYPE
from orsim.cluster._redis import REDIS_TYPE
from orsim.cluster._rundir import Manifest
from orsim.errors import ClusterError

_DIRECT = (STORE_TYPE, REDIS_TYPE)


def host_apps(manifest: Manifest, host: str) -> list[str]:
    """The proxied applications placed on topology host ``host``."""
    return [e.app for e in manifest.apps if e.host_name == host and e.type not in _DIRECT]


def proxied_hosts(manifest: Manifest) -> list[str]:
    """Every topology host with an application behind a fault proxy, sorted."""
    return sorted({e.host_name for e in manifest.apps
                   if e.host_name is not None and e.type not in _DIRECT})  # fmt: skip


def link_ends(manifest: Manifest, name: str) -> list[str]:
    """``name`` as the applications it stands for: itself if an application (names of
    applications win), else every application on the host of that name.

    Raises:
        ClusterError: neither an application nor a host with applications.
    """
    if any(e.app == name for e in manifest.apps):
        return [name]
    apps = host_apps(manifest, name)
    if apps:
        return apps
    known_apps = ", ".join(e.app for e in manifest.apps)
    hosts = sorted({e.host_name for e in manifest.apps if e.host_name is not None})
    raise ClusterError(
        f"no application or host {name!r} in this cluster "
        f"(applications: {known_apps}; hosts: {', '.join(hosts) or 'none'})"
    )


def link_sides(manifest: Manifest, a: str, b: str) -> Sides:
    """The sides of a fault between A and B: the proxy cuts every link between an
    application of one side and one of the other.

    Raises:
        ClusterError: an unknown name, or A and B are the same.
    """
    if a == b:
        raise ClusterError(f"{a!r} is named twice; a link has two ends")
    return Sides(tuple(link_ends(manifest, a)), tuple(link_ends(manifest, b)))


def isolate_sides(manifest: Manifest, host: str) -> Sides:
    """The sides of a fault that cuts host ``host`` off: every application on it against
    every proxied application not on it.

    Raises:
        ClusterError: ``host`` is no host with applications, or no other host has any.
    """
    inside = host_apps(manifest, host)
    if not inside:
        hosts = ", ".join(proxied_hosts(manifest)) or "none"
        raise ClusterError(f"no host {host!r} with applications in this cluster (hosts: {hosts})")
    outside = [e.app for e in manifest.apps if e.host_name != host and e.type not in _DIRECT]
    if not outside:
        raise ClusterError(f"every application is on host {host!r}: nothing to cut it from")
    return Sides(tuple(inside), tuple(outside))
