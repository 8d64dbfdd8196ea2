"""A typed client of the URS over an established ``Connection``."""

from __future__ import annotations

from typing import Any

import attrs

from orsim.wire import Connection, Json

#: Request timeout used unless the caller gives one (think time included).
DEFAULT_TIMEOUT = 10.0


@attrs.define(eq=False)
class UrsClient:
    """The URS requests as methods."""

    conn: Connection
    timeout: float = DEFAULT_TIMEOUT

    async def _call(self, method: str, params: dict[str, Json]) -> Any:
        return await self.conn.request(method, params, timeout=self.timeout)

    async def register(self, app: str, node_id: int | None) -> None:
        await self._call("register", {"app": app, "node_id": node_id})

    async def select_target(self, call_id: str, dn: str) -> str:
        """Where to route ``call_id``."""
        result = await self._call("select_target", {"call_id": call_id, "dn": dn})
        return str(result["target"])

    async def release_target(self, target: str) -> None:
        """The call sent to ``target`` is over (lets least-busy see the load fall)."""
        await self._call("release_target", {"target": target})

    async def status(self) -> dict[str, Any]:
        return dict(await self._call("status", {}))
