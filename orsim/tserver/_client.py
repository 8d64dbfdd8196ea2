"""A typed client of the T-Server over an established ``Connection``, and its pushes.

The caller owns the connection (it chooses the push handler and runs ``serve``); this
wrapper only names the requests. Refusals arrive as ``RequestRefused`` with ``code`` one of
``unknown_call``, ``duplicate``, ``stale_epoch``, ``lost`` (see ``_ledger``).
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from orsim.wire import Connection, Json, Push

#: Request timeout used unless the caller gives one: a T-Server answers at once.
DEFAULT_TIMEOUT = 10.0


@attrs.frozen
class RouteRequest:
    """``route_request`` push: a call waits on routing point ``dn`` until ``deadline``."""

    call_id: str
    dn: str
    created_at: float
    deadline: float

    @classmethod
    def from_push(cls, push: Push) -> RouteRequest:
        """Raises KeyError/TypeError/ValueError on a malformed push."""
        d = push.data
        return cls(str(d["call_id"]), str(d["dn"]), float(d["created_at"]), float(d["deadline"]))


@attrs.frozen
class CallRouted:
    """``call_routed`` push: ``call_id`` was routed by ``app`` of Node ``node_id``."""

    call_id: str
    app: str
    node_id: int
    epoch: int
    target: str | None = None

    @classmethod
    def from_push(cls, push: Push) -> CallRouted:
        """Raises KeyError/TypeError/ValueError on a malformed push."""
        d = push.data
        target = d.get("target")
        return cls(
            str(d["call_id"]),
            str(d["app"]),
            int(d["node_id"]),
            int(d["epoch"]),
            None if target is None else str(target),
        )


@attrs.define(eq=False)
class TServerClient:
    """The T-Server's requests as methods."""

    conn: Connection
    timeout: float = DEFAULT_TIMEOUT

    async def _call(self, method: str, params: dict[str, Json]) -> Any:
        return await self.conn.request(method, params, timeout=self.timeout)

    async def register(self, app: str, node_id: int | None, dns: list[str]) -> list[str]:
        """Receive route requests for ``dns`` (empty: every routing point); returns all DNs
        this connection is registered on."""
        result = await self._call("register", {"app": app, "node_id": node_id, "dns": dns})
        return list(result["dns"])

    async def fence(self, node_id: int, epoch: int) -> int:
        """Refuse commands of Node ``node_id`` below ``epoch`` from now on; the known epoch."""
        result = await self._call("fence", {"node_id": node_id, "epoch": epoch})
        return int(result["epoch"])

    async def route(
        self, call_id: str, target: str, *, app: str, node_id: int, epoch: int
    ) -> float:
        """Route ``call_id`` to ``target``; returns the latency in ms.

        Raises:
            RequestRefused: refused (``code``: unknown_call, duplicate, stale_epoch, lost).
        """
        result = await self._call(
            "route",
            {"call_id": call_id, "target": target, "app": app, "node_id": node_id, "epoch": epoch},
        )
        return float(result["latency_ms"])

    async def make_call(self, dn: str | None = None) -> str:
        """Create one call (on the first routing point by default); its id."""
        result = await self._call("make_call", {} if dn is None else {"dn": dn})
        return str(result["call_id"])

    async def generate(
        self, rate: float, duration: float | None = None, dn: str | None = None
    ) -> None:
        """Create calls at ``rate`` per second for ``duration`` s (None: until stopped),
        replacing any running generator."""
        await self._call("generate", {"rate": rate, "duration": duration, "dn": dn})

    async def stop_generator(self) -> bool:
        """Stop the generator; True if one was running."""
        result = await self._call("stop_generator", {})
        return bool(result.get("stopped", False))

    async def ledger(self, records: bool = False) -> dict[str, Any]:
        """The ledger's counts, and with ``records`` every call record (fetched in pages)."""
        if not records:
            return dict(await self._call("ledger", {}))
        answer: dict[str, Any] = {}
        collected: list[Any] = []
        total = math.inf
        while len(collected) < total:
            page = await self._call("ledger", {"records": True, "offset": len(collected)})
            answer = dict(page)
            if not page["records"]:
                break
            collected.extend(page["records"])
            total = page["records_total"]
        answer["records"] = collected
        answer["records_total"] = len(collected)
        return answer

    async def status(self) -> dict[str, Any]:
        return dict(await self._call("status", {}))
