"""Who creates the session of a new call, and who watches in case it does not happen.

The T-Server delivers a call's routing-point event to every ORS registered on the DN.
Each ORS application decides alone, from the call's ``Assignment`` (``_assignment``), its
own Node ID and its role (ors-domain.md section 4):

===================================  ================================================
this application is                  decision
===================================  ================================================
the primary of the Assigned Node     ``CREATE`` the session now
the other half of the Assigned Node  ``WATCH`` for ``call-watching-timeout``
(backup, claiming, suspending,
starting)
the Reserved Node (either half)      ``WATCH`` for ``call-watching-timeout``
anything else                        ``IGNORE``
===================================  ================================================

A watch ends when a session for the call is created (by anyone: a peer's session event,
or a session recovered from the store) or the call is routed (the T-Server's
``call_routed`` push). Otherwise:

- *Assigned Node, other half*: when this application becomes primary (takeover or a
  failed switchover), it creates every call it watches at once ("the backup switched to
  primary mode, the new primary tries to create the session"). At the deadline the
  Reserved Node acts too, but the watch goes on until this application becomes primary,
  the call is created or routed, or it expires: the Reserved Node may not have been able
  to act (its own primary frozen or switching over), and the store's claim lets only one
  of them create the call.
- *Reserved Node*: at the deadline, if this application is primary, it creates the
  session (the Assigned Node, both halves, did not). Its backup watches too: the Reserved
  Node may change hands during the watch (a switchover, a takeover), and whichever half
  is primary at the deadline, or becomes primary after it, creates the call (found by
  `orsim search`: a call arrived as the Reserved Node switched over, or froze).

A call's Assignment is fixed when its event arrives; a membership change only affects
calls that arrive afterwards (a watch for a call whose Assigned Node has since left
still fires at its deadline, which is exactly when the Reserved Node must act).
Changing ``timeout_ms`` at run time (``orchestration/call-watching-timeout`` is dynamic
in orsim) applies to watches started afterwards; running watches keep their deadline.

Times are plain floats in seconds, given by the caller (``trio.current_time()`` in the
runtime); nothing here reads a clock.
"""

from __future__ import annotations

import enum
import math
import types
from collections.abc import Mapping, Sequence

import attrs

from orsim.node._assignment import Assignment, NodeLike, assign, outweighed_at_home
from orsim.node._mutations import mutated
from orsim.node._role import Role

__all__ = ["Decision", "Verdict", "Watch", "WatchKind", "Watcher", "decide"]


class Verdict(enum.Enum):
    """What this application does about a new call."""

    CREATE = "create"
    WATCH = "watch"
    IGNORE = "ignore"

    def __repr__(self) -> str:
        return self.name


class WatchKind(enum.Enum):
    """Why this application watches a call."""

    ASSIGNED = "assigned"  # the other half of the Assigned Node
    RESERVED = "reserved"  # the primary of the Reserved Node

    def __repr__(self) -> str:
        return self.name


@attrs.frozen
class Decision:
    """The decision for one call; ``kind`` and ``deadline`` are set for ``WATCH`` only.

    ``assignment`` is None for an ``IGNORE`` decided without it: two Nodes of this
    application's data center outweigh its own for the call (``outweighed_at_home``).
    """

    verdict: Verdict
    assignment: Assignment | None
    kind: WatchKind | None = None
    deadline: float | None = None

    @property
    def reserved(self) -> int | None:
        """The call's Reserved Node (None: none, or not computed)."""
        return None if self.assignment is None else self.assignment.reserved


def decide(
    call_id: str,
    now: float,
    live_nodes: Sequence[NodeLike] | Mapping[int, str],
    node_id: int,
    role: Role,
    timeout_ms: float,
) -> Decision:
    """Decide what this application does about a call whose event just arrived.

    Args:
        call_id: the call's ID.
        now: the current time, in seconds.
        live_nodes: the live Nodes, this application's Node included.
        node_id: this application's Node ID.
        role: this application's role.
        timeout_ms: ``orchestration/call-watching-timeout``, in milliseconds.
    """
    if type(live_nodes) is dict and outweighed_at_home(call_id, live_nodes, node_id):
        return Decision(Verdict.IGNORE, None)  # neither Assigned nor Reserved
    assignment = assign(call_id, live_nodes)
    deadline = now + timeout_ms / 1000.0
    if mutated("watcher-ignores-timeout"):
        deadline = math.inf
    if assignment.assigned == node_id:
        if role.creates_sessions:
            return Decision(Verdict.CREATE, assignment)
        if role is Role.STOPPED:
            return Decision(Verdict.IGNORE, assignment)
        return Decision(Verdict.WATCH, assignment, WatchKind.ASSIGNED, deadline)
    if assignment.reserved == node_id and role is not Role.STOPPED:
        return Decision(Verdict.WATCH, assignment, WatchKind.RESERVED, deadline)
    return Decision(Verdict.IGNORE, assignment)


@attrs.frozen
class Watch:
    """One watched call."""

    call_id: str
    kind: WatchKind
    assignment: Assignment
    deadline: float
    expires: float | None  # after this the call is lost anyway (T-Server router deadline)


@attrs.define(eq=False)
class Watcher:
    """The calls one application watches, and when it must create them.

    The runtime tells it every new call (``on_route_request``), every session created
    or recovered (``on_session_created``), every call routed (``on_call_routed``) and
    every role change (``set_role``), and asks it regularly which calls are due
    (``due``; ``next_deadline`` says when to ask next).

    Args:
        node_id: this application's Node ID.
        timeout_ms: ``orchestration/call-watching-timeout`` in milliseconds; may be
            changed at any time, applies to new watches.
        role: this application's current role.
    """

    node_id: int
    timeout_ms: float
    role: Role = Role.STARTING
    _watches: dict[str, Watch] = attrs.field(factory=dict, init=False)

    @property
    def watches(self) -> Mapping[str, Watch]:
        """The calls watched now, by call ID (read-only view)."""
        return types.MappingProxyType(self._watches)

    def on_route_request(
        self,
        call_id: str,
        now: float,
        live_nodes: Sequence[NodeLike] | Mapping[int, str],
        *,
        expires: float | None = None,
    ) -> Decision:
        """A routing-point event for a new call arrived: decide, and watch if need be.

        A repeated event for a call already watched keeps the first watch.

        Args:
            call_id: the call's ID.
            now: the current time, in seconds.
            live_nodes: the live Nodes, this application's Node included.
            expires: when the call is lost anyway, if known; the watch ends then.

        Returns:
            The decision; on ``CREATE`` the runtime creates the session at once.
        """
        known = self._watches.get(call_id)
        if known is not None:
            return Decision(Verdict.WATCH, known.assignment, known.kind, known.deadline)
        decision = decide(call_id, now, live_nodes, self.node_id, self.role, self.timeout_ms)
        assignment = decision.assignment
        if decision.kind is not None and decision.deadline is not None and assignment:  # WATCH
            self._watches[call_id] = Watch(
                call_id, decision.kind, assignment, decision.deadline, expires
            )
        return decision

    def on_session_created(self, call_id: str) -> bool:
        """A session exists for the call (created by anyone, or recovered): stop watching.

        Returns:
            True if the call was watched.
        """
        return self._watches.pop(call_id, None) is not None

    def extend(self, call_id: str, deadline: float) -> bool:
        """Push the call's watch deadline back to ``deadline`` (never earlier). True if the
        call was watched."""
        watch = self._watches.get(call_id)
        if watch is None:
            return False
        if deadline > watch.deadline:
            self._watches[call_id] = attrs.evolve(watch, deadline=deadline)
        return True

    def on_call_routed(self, call_id: str) -> bool:
        """The T-Server reported the call routed: stop watching. True if it was watched."""
        return self._watches.pop(call_id, None) is not None

    def set_role(self, role: Role, now: float) -> list[str]:
        """Record a role change; on becoming primary, return the calls to create now.

        Those are the calls watched for this application's own Node, before or past their
        deadline, and the Reserved Node's calls past their deadline (the store's claim
        decides between this Node and any other that creates the call too).
        Call it after recovering the Node's sessions from the store (and telling
        ``on_session_created`` about each), so recovered calls are not created twice.
        """
        promoted = role.creates_sessions and not self.role.creates_sessions
        self.role = role
        if not promoted:
            return []
        self._expire(now)
        mine = [
            w for w in self._watches.values() if w.kind is WatchKind.ASSIGNED or w.deadline <= now
        ]
        for watch in mine:
            del self._watches[watch.call_id]
        return [watch.call_id for watch in sorted(mine, key=_by_deadline)]

    def due(self, now: float) -> list[str]:
        """End the watches whose deadline has passed; return the calls to create now.

        Returned calls are no longer watched: the runtime creates them (this application
        is primary). An application that is not primary keeps its watches past their
        deadline: they end when it becomes primary (``set_role``), when the call is
        created or routed, or when it expires.
        """
        self._expire(now)
        if not self.role.creates_sessions:
            return []  # kept for a promotion (see the module docstring)
        ready = sorted((w for w in self._watches.values() if w.deadline <= now), key=_by_deadline)
        for watch in ready:
            del self._watches[watch.call_id]
        return [watch.call_id for watch in ready]

    def next_deadline(self) -> float | None:
        """The earliest time ``due`` may have something to do, or None if nothing."""
        times = [
            t
            for w in self._watches.values()
            for t in (self._next_time(w), w.expires)
            if t is not None
        ]
        return min(times, default=None)

    def _next_time(self, watch: Watch) -> float | None:
        # Not primary: a watch ends by promotion or expiry, not at its deadline.
        if not self.role.creates_sessions:
            return None
        return watch.deadline

    def _expire(self, now: float) -> None:
        gone = [c for c, w in self._watches.items() if w.expires is not None and w.expires <= now]
        for call_id in gone:
            del self._watches[call_id]


def _by_deadline(watch: Watch) -> tuple[float, str]:
    return (watch.deadline, watch.call_id)
