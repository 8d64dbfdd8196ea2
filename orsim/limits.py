"""Process limits every orsim process sets as it starts (standard library only: the CLI
imports this before anything else)."""

from __future__ import annotations

import resource


def raise_fd_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; the new soft limit.

    Every orsim process holds a descriptor per link, the fault proxy four per link, and a
    Configuration Server one per client: the usual soft limit (1024) let 1,000 idle
    connections keep a restarting ORS from its Configuration Server. The hard limit is
    the administrator's ceiling; the soft one only a default.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target
