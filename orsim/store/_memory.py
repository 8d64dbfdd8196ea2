"""An in-process session store for whole-cluster simulations in one trio run.

Same contract as the SQLite and Redis stores (epoch compare-and-set, fenced writes), kept
in dictionaries; it never blocks, so it is safe under ``trio.testing.MockClock``. An
operation is not a schedule point (except while the store is stalled, or for a cancelled
caller): ``answers_at_once`` tells the ``StoreGuard`` it needs no deadline.
"""

from __future__ import annotations

import attrs
import trio

from orsim.store._session import Session, StaleEpoch


@attrs.define(eq=False)
class MemoryStore:
    """Sessions and epochs in memory; share one instance between simulated nodes."""

    _epochs: dict[int, int] = attrs.Factory(dict)
    _sessions: dict[int, dict[str, Session]] = attrs.Factory(dict)
    _claims: dict[str, int] = attrs.Factory(dict)
    #: Calls whose session its owner deleted: finished, never created again.
    _done: set[str] = attrs.Factory(set)
    #: Set while the store answers; cleared by :meth:`stall` (a store outage).
    _answering: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._answering.set()

    @property
    def stalled(self) -> bool:
        return not self._answering.is_set()

    def stall(self) -> None:
        """From now on every operation waits, untouched, until :meth:`resume` (an outage:
        a frozen store server, a held lock, an unreachable Redis)."""
        if not self.stalled:
            self._answering = trio.Event()

    def resume(self) -> None:
        """The store answers again; operations that waited go on."""
        self._answering.set()

    def answers_at_once(self) -> bool:
        """Whether an operation begun now ends without waiting (the store is not
        stalled): ``StoreGuard`` then keeps no deadline on it."""
        return self._answering.is_set()

    async def _enter(self) -> None:
        # No schedule point unless stalled: an operation is a few dictionary look-ups,
        # and a simulation pays a scheduler round for each (a cancelled caller still
        # stops here, as at a checkpoint).
        if self._answering.is_set():
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        while self.stalled:
            await self._answering.wait()

    async def current_epoch(self, node_id: int) -> int:
        await self._enter()
        return self._epochs.get(node_id, 0)

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        await self._enter()
        if self._epochs.get(node_id, 0) != expected or new <= expected:
            return False
        self._epochs[node_id] = new
        return True

    def _check(self, node_id: int, epoch: int) -> None:
        current = self._epochs.get(node_id, 0)
        if epoch < current:
            raise StaleEpoch(node_id, epoch, current)

    async def put_session(self, session: Session) -> None:
        await self._enter()
        self._check(session.node_id, session.epoch)
        self._sessions.setdefault(session.node_id, {})[session.call_id] = session

    async def create_session(self, session: Session) -> bool:
        await self._enter()
        self._check(session.node_id, session.epoch)
        owner = self._claims.setdefault(session.call_id, session.node_id)
        if owner != session.node_id or session.call_id in self._done:
            return False
        self._sessions.setdefault(session.node_id, {})[session.call_id] = session
        return True

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        await self._enter()
        current = self._epochs.get(from_node, 0)
        if current != from_epoch:
            raise StaleEpoch(from_node, from_epoch, current)
        self._check(session.node_id, session.epoch)
        held = self._sessions.get(from_node, {})
        if self._claims.get(session.call_id) != from_node or session.call_id not in held:
            return False
        del held[session.call_id]
        self._claims[session.call_id] = session.node_id
        self._sessions.setdefault(session.node_id, {})[session.call_id] = session
        return True

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        await self._enter()
        self._check(node_id, epoch)
        self._sessions.get(node_id, {}).pop(call_id, None)
        if self._claims.get(call_id) == node_id:
            self._done.add(call_id)

    async def sessions(self, node_id: int) -> list[Session]:
        await self._enter()
        return list(self._sessions.get(node_id, {}).values())

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
