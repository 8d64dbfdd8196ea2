"""Faults by host: which applications a ``partition``/``delay`` of A and B hits (pure).

A and B each name an application or a topology host (every application placed on it).
Only links through the fault proxy can be cut, so a host's store processes (the SQLite
store server, a Redis), which nodes reach directly, are not part of it.
"""

from __future__ import annotations

from orsim.cluster._plan import STORE_TYPE
from orsim.cluster._redis import REDIS_TYPE
from orsim.cluster._rundir import Manifest
from orsim.errors import ClusterError
from orsim.wire import Json

_DIRECT = (STORE_TYPE, REDIS_TYPE)


def host_apps(manifest: Manifest, host: str) -> list[str]:
    """The proxied applications placed on topology host ``host``."""
    return [e.app for e in manifest.apps if e.host_name == host and e.type not in _DIRECT]


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


def link_sides(manifest: Manifest, a: str, b: str) -> dict[str, Json]:
    """The proxy's ``{"a": [...], "b": [...]}`` for a fault between A and B: the proxy cuts
    every link between an application of one side and one of the other.

    Raises:
        ClusterError: an unknown name, or A and B are the same.
    """
    if a == b:
        raise ClusterError(f"{a!r} is named twice; a link has two ends")
    return {"a": list(link_ends(manifest, a)), "b": list(link_ends(manifest, b))}
