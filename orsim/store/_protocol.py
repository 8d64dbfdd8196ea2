"""What every session store offers (CONTRACTS.md "Session store"), and its statistics."""

from __future__ import annotations

from typing import Final, Protocol

import attrs

from orsim.store._session import Session

#: How long a call's creation claim (call_id -> node_id) is kept after it was made (s).
#: It outlives the session so a late contender still loses after the call was served;
#: calls are created by at most two Nodes within a few seconds, so two minutes is ample.
CLAIM_TTL: Final = 120.0


@attrs.define
class Tallies:
    """What one store handle has done (this process only)."""

    puts: int = 0
    deletes: int = 0
    stale_refusals: int = 0
    claims_won: int = 0  #: epoch claims won (claim_epoch)
    claims_lost: int = 0
    creates: int = 0  #: create_session calls that created (True)
    creates_refused: int = 0  #: create_session calls refused: another Node owns the call


@attrs.frozen(kw_only=True)
class StoreStatistics(Tallies):
    """A snapshot of one store handle's activity (this process only)."""

    backend: str  #: "sqlite" or "redis"
    location: str  #: the database file, or host:port/db


@attrs.define
class Counters(Tallies):
    """The mutable tallies behind :class:`StoreStatistics`."""

    def created(self, created: bool) -> bool:
        """Count a ``create_session`` that created (True) or was refused; ``created``."""
        if created:
            self.creates += 1
        else:
            self.creates_refused += 1
        return created

    def snapshot(self, backend: str, location: str) -> StoreStatistics:
        return StoreStatistics(backend=backend, location=location, **attrs.asdict(self))


class SessionStore(Protocol):
    """The shared session store of a cluster, fenced by a per-Node epoch.

    Every write carries the writer's epoch; the store refuses one older than the Node's
    current epoch with :class:`StaleEpoch`. The epoch is raised only by
    :meth:`claim_epoch`, a compare-and-set, so of two contenders exactly one wins.

    The CONTRACTS.md methods plus :meth:`create_session` and :meth:`adopt_session`; the
    SQLite and Redis stores add ``count(node_id)`` and ``statistics()``.
    """

    async def current_epoch(self, node_id: int) -> int:
        """The Node's current epoch (0 when never claimed)."""
        ...

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        """Set the Node's epoch to ``new`` if it is still ``expected``; True if it was."""
        ...

    async def put_session(self, session: Session) -> None:
        """Create or replace a session; durable on return. Raises StaleEpoch."""
        ...

    async def create_session(self, session: Session) -> bool:
        """Create the session of a call unless another Node already owns the call.

        Atomically: refuse with StaleEpoch if ``session.epoch`` is older than the current
        epoch of ``session.node_id`` (like :meth:`put_session`); then, if a claim for
        ``session.call_id`` exists and belongs to a different Node, return False and write
        nothing; otherwise record the claim (call_id -> node_id) if absent, write the
        session exactly as :meth:`put_session` would, and return True (so a retry by the
        same Node, or its backup after takeover, succeeds). Of any number of Nodes
        creating one call, cluster-wide, exactly one gets True.

        The claim outlives the session and is dropped :data:`CLAIM_TTL` seconds after it
        was made. :meth:`delete_session` by the owner marks the call *done*: a done call
        is refused (False) to every Node, its own included, so a backup that takes over
        never serves again a call its primary finished.

        A call adopted (:meth:`adopt_session`) is claimed by its adopter, whose creation
        then succeeds too and replaces the adopted session, as a retry would: the store
        cannot tell the two apart. An adopter does not create a call it is adopting
        (``NodeCore`` holds that creation until the adoption answers).
        """
        ...

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        """Move the call ``session.call_id`` from ``from_node`` to ``session.node_id``.

        For a live Node taking over the unfinished calls of a dead one: it first fences
        the dead Node with ``claim_epoch(from_node, e, e + 1)``, then adopts each of its
        sessions with ``from_epoch = e + 1``.

        Atomically: require the current epoch of ``from_node`` to equal ``from_epoch``
        (else StaleEpoch(from_node, from_epoch, current)); require ``session.epoch`` >=
        the current epoch of ``session.node_id`` (else StaleEpoch, as put_session). Then,
        only if the call is claimed by ``from_node`` AND a session for it exists under
        ``from_node``: delete that session, move the claim to ``session.node_id``
        (refreshing its claimed time), write ``session`` under ``session.node_id`` and
        return True. Otherwise (already adopted, routed and deleted, claimed by another
        Node, or the claim expired after :data:`CLAIM_TTL`) write nothing, return False.
        """
        ...

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        """Forget a session (absent is fine); durable on return. Raises StaleEpoch."""
        ...

    async def sessions(self, node_id: int) -> list[Session]:
        """Every session kept for the Node, ordered by creation time."""
        ...

    async def aclose(self) -> None:
        """Release the connection; safe to call twice."""
        ...
