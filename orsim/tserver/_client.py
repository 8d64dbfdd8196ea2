"""A typed client of the T-Server over an established ``Connection``.

The caller owns the connection (it chooses the push handler and runs ``serve``); this
wrapper only names the requests. Refusals arrive as ``RequestRefused`` with ``code`` one
of ``unknown_call``, ``duplicate``, ``stale_epoch``, ``lost`` (see ``_ledger``).
"""

from __future__ import annotations

import attrs

from orsim.tserver._ledger import CallRecord
from orsim.tserver._messages import (
    Fence,
    Generate,
    Ledger,
    LedgerReport,
    MakeCall,
    Register,
    Route,
    StopGenerator,
)
from orsim.wire import Connection, Json, Status

#: Request timeout used unless the caller gives one: a T-Server answers at once.
DEFAULT_TIMEOUT = 10.0


@attrs.define(eq=False)
class TServerClient:
    """The T-Server's requests as methods."""

    conn: Connection
    timeout: float = DEFAULT_TIMEOUT

    async def register(
        self, app: str, node_id: int | None, dns: list[str], *, batches: bool = False
    ) -> list[str]:
        """Receive route requests for ``dns`` (empty: every routing point); returns all DNs
        this connection is registered on. ``batches``: take pushes in ``PushBatch``
        frames (a ``PushTable`` handles them)."""
        register = Register(app, node_id, tuple(dns), batches=batches or None)
        answer = await self.conn.call(register, self.timeout)
        return list(answer.dns)

    async def fence(self, node_id: int, epoch: int, app: str | None = None) -> int:
        """Refuse commands of Node ``node_id`` below ``epoch`` from now on; the known epoch.
        With ``app``: that application holds ``epoch`` (refused if another does)."""
        return (await self.conn.call(Fence(node_id, epoch, app), self.timeout)).epoch

    async def route(
        self, call_id: str, target: str, *, app: str, node_id: int, epoch: int
    ) -> float:
        """Route ``call_id`` to ``target``; returns the latency in ms.

        Raises:
            RequestRefused: refused (``code``: unknown_call, duplicate, stale_epoch, lost).
        """
        answer = await self.conn.call(Route(call_id, target, app, node_id, epoch), self.timeout)
        return answer.latency_ms

    async def make_call(self, dn: str | None = None) -> str:
        """Create one call (on the first routing point by default); its id."""
        return (await self.conn.call(MakeCall(dn), self.timeout)).call_id

    async def generate(
        self, rate: float, duration: float | None = None, dn: str | None = None
    ) -> None:
        """Create calls at ``rate`` per second for ``duration`` s (None: until stopped),
        replacing any running generator."""
        await self.conn.call(Generate(rate, duration, dn), self.timeout)

    async def stop_generator(self) -> bool:
        """Stop the generator; True if one was running."""
        return (await self.conn.call(StopGenerator(), self.timeout)).stopped

    async def ledger(self, records: bool = False) -> LedgerReport:
        """The ledger's counts, and with ``records`` every call record (fetched in pages)."""
        if not records:
            return await self.conn.call(Ledger(), self.timeout)
        collected: list[CallRecord] = []
        page = await self.conn.call(Ledger(True, 0), self.timeout)
        while page.records and len(collected) + len(page.records) < (page.records_total or 0):
            collected.extend(page.records)
            page = await self.conn.call(Ledger(True, len(collected)), self.timeout)
        collected.extend(page.records or ())
        return LedgerReport(page.counts, tuple(collected), len(collected))

    async def status(self) -> dict[str, Json]:
        return (await self.conn.call(Status(), self.timeout)).fields
