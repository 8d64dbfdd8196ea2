"""A typed client of the URS over an established ``Connection``."""

from __future__ import annotations

import attrs

from orsim.urs._messages import Register, ReleaseTarget, SelectTarget
from orsim.wire import Connection, Json, Status

#: Request timeout used unless the caller gives one (think time included).
DEFAULT_TIMEOUT = 10.0


@attrs.define(eq=False)
class UrsClient:
    """The URS requests as methods."""

    conn: Connection
    timeout: float = DEFAULT_TIMEOUT

    async def register(self, app: str, node_id: int | None) -> None:
        await self.conn.call(Register(app, node_id), self.timeout)

    async def select_target(self, call_id: str, dn: str) -> str:
        """Where to route ``call_id``."""
        return (await self.conn.call(SelectTarget(call_id, dn), self.timeout)).target

    async def release_target(self, target: str) -> None:
        """The call sent to ``target`` is over (lets least-busy see the load fall)."""
        await self.conn.call(ReleaseTarget(target), self.timeout)

    async def status(self) -> dict[str, Json]:
        return (await self.conn.call(Status(), self.timeout)).fields
