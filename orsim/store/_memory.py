"""An in-process session store for whole-cluster simulations in one trio run.

Same contract as the SQLite and Redis stores (epoch compare-and-set, fenced writes), kept
in dictionaries; it never blocks, so it is safe under ``trio.testing.MockClock``.
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

    async def current_epoch(self, node_id: int) -> int:
        await trio.lowlevel.checkpoint()
        return self._epochs.get(node_id, 0)

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        await trio.lowlevel.checkpoint()
        if self._epochs.get(node_id, 0) != expected or new <= expected:
            return False
        self._epochs[node_id] = new
        return True

    def _check(self, node_id: int, epoch: int) -> None:
        current = self._epochs.get(node_id, 0)
        if epoch < current:
            raise StaleEpoch(node_id, epoch, current)

    async def put_session(self, session: Session) -> None:
        await trio.lowlevel.checkpoint()
        self._check(session.node_id, session.epoch)
        self._sessions.setdefault(session.node_id, {})[session.call_id] = session

    async def create_session(self, session: Session) -> bool:
        await trio.lowlevel.checkpoint()
        self._check(session.node_id, session.epoch)
        owner = self._claims.setdefault(session.call_id, session.node_id)
        if owner != session.node_id or session.call_id in self._done:
            return False
        self._sessions.setdefault(session.node_id, {})[session.call_id] = session
        return True

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        await trio.lowlevel.checkpoint()
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
        await trio.lowlevel.checkpoint()
        self._check(node_id, epoch)
        self._sessions.get(node_id, {}).pop(call_id, None)
        if self._claims.get(call_id) == node_id:
            self._done.add(call_id)

    async def sessions(self, node_id: int) -> list[Session]:
        await trio.lowlevel.checkpoint()
        return list(self._sessions.get(node_id, {}).values())

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
