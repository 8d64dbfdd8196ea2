"""Safety invariants read from a simulation's exact history (its trace), not from samples.

A status sampler can miss a double primary that lasts less than its interval; the
simulation records every role change the moment it happens, so here the rule "at most one
acting primary per Node at the current epoch" is checked at every change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from orsim.config import ConfigDatabase
from orsim.tserver import DoublePrimary

#: Trace entries after which an application holds no role (a new process starts clean).
_ROLE_ENDS = frozenset({"crash", "start"})


def node_names(db: ConfigDatabase) -> dict[str, str]:
    """Each ORS application's Node (its primary application's name)."""
    return {
        a.name: a.primary_name for a in db.applications.values() if a.type == "OrchestrationServer"
    }


def double_primaries(
    entries: Iterable[Mapping[str, object]], node_of: Mapping[str, str]
) -> list[DoublePrimary]:
    """Every moment two running applications of one Node were primary at the same epoch.

    Each finding: a ``DoublePrimary`` (``t``: virtual time). A frozen
    application still counts: it believes it holds the Node, and acts on it when thawed.
    """
    held: dict[str, tuple[str, int]] = {}
    found: list[DoublePrimary] = []
    for entry in entries:
        kind, app = entry.get("kind"), entry.get("app")
        if not isinstance(app, str):
            continue
        if kind in _ROLE_ENDS:
            held.pop(app, None)
        elif kind == "mode":
            mode, epoch = str(entry.get("mode")), _whole(entry.get("epoch"))
            held[app] = (mode, epoch)
            if mode != "primary":
                continue
            node = node_of.get(app)
            for other, (other_mode, other_epoch) in held.items():
                same = other_mode == "primary" and other_epoch == epoch
                if other != app and same and node_of.get(other) == node:
                    first, second = sorted((app, other))
                    found.append(DoublePrimary(_time(entry.get("t")), node, (first, second), epoch))
    return found


def _whole(value: object) -> int:
    """A trace entry's integer (an epoch), 0 for none."""
    return value if isinstance(value, int) else 0


def _time(value: object) -> float:
    """A trace entry's virtual time (``Trace.record`` always writes one)."""
    assert isinstance(value, int | float)
    return value
