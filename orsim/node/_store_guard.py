"""The node's guard around the session store: a deadline on every operation, and a
*degraded* mode that keeps routing while the store is away (ORS 8.1.2 and later).

An operation that misses its deadline, or finds the store unreachable, marks the store
degraded and raises :class:`~orsim.store.StoreUnavailable`. (A store that can tell that
an operation will end without waiting, ``answers_at_once``: a simulation's in-memory
store when not stalled, has it run without a deadline to keep.) While degraded every
operation fails at once (no call waits on a store known to be away) and a probe, a
write that touches nothing, asks the store every ``probe_interval``; the first one
answered in time ends the outage: the deletes that failed meanwhile are sent, and the
``on_recovered`` hook lets the node resync its epoch and recover its sessions.

What the node does meanwhile (``_runtime.py``): it creates sessions without writing
them (counted as ``unpersisted``), routes them, and a takeover claims the epoch at the
T-Server (compare-and-set there) instead of in the store, so even then two applications
can never act for one Node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final, TypeVar

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim.errors import ConnectionLost, UnreachableError
from orsim.logs import get_logger
from orsim.node._messages import StoreHealth
from orsim.store import Session, SessionStore, StaleEpoch, StoreError, StoreUnavailable

T = TypeVar("T")

#: Longest a node waits for one store operation (s). Store writes take milliseconds;
#: past this the store is treated as away and the node carries on without it.
STORE_DEADLINE: Final = 1.0
#: How often a degraded store is probed (s).
PROBE_INTERVAL: Final = 0.2
#: Deletes kept for a store that is away; beyond this the oldest are forgotten (a
#: session left behind is at worst recovered and refused as already routed).
MAX_PENDING_DELETES: Final = 100_000
#: The node id no Node has: the probe's no-op delete goes there.
_PROBE_NODE: Final = 0
_PROBE_CALL: Final = "orsim-store-probe"


_FAILURES = (StoreError, UnreachableError, ConnectionLost, OSError, trio.BrokenResourceError)


@attrs.define(eq=False)
class StoreGuard:
    """A :class:`SessionStore` whose operations end within ``deadline`` or raise."""

    store: SessionStore
    deadline: float = STORE_DEADLINE
    probe_interval: float = PROBE_INTERVAL
    app: str = ""
    #: Called (awaited) each time an outage ends.
    on_recovered: Callable[[], Awaitable[None]] | None = None
    degraded: bool = False
    #: Operations that failed or missed their deadline.
    failures: int = 0
    #: Outages begun (ok -> degraded).
    outages: int = 0
    #: Sessions routed without being written (created while degraded).
    unpersisted: int = 0
    _pending: dict[tuple[int, str], int] = attrs.Factory(dict)
    _went_degraded: trio.Event = attrs.Factory(trio.Event)
    #: Set (and replaced) each time an outage ends.
    _recovered: trio.Event = attrs.Factory(trio.Event)
    #: When (trio time) the current outage's first probe began (None: not yet).
    _probed_at: float | None = None
    #: Set (and replaced) when an outage's first probe begins.
    _probing: trio.Event = attrs.Factory(trio.Event)
    _log: FilteringBoundLogger = attrs.field(init=False)
    #: The store's ``answers_at_once`` (an in-memory store has one), else None.
    _at_once: Callable[[], bool] | None = None

    def __attrs_post_init__(self) -> None:
        self._log = get_logger(app=self.app)
        self._at_once = getattr(self.store, "answers_at_once", None)

    def rebind_log(self) -> None:
        """Take the current log level (after ``orsim.logs.set_log_level``)."""
        self._log = get_logger(app=self.app)

    @property
    def state(self) -> str:
        """``ok`` or ``degraded`` (status shows it)."""
        return "degraded" if self.degraded else "ok"

    def counts(self) -> StoreHealth:
        """What ``status`` shows of the store, per application."""
        return StoreHealth(
            store=self.state,
            store_failures=self.failures,
            store_outages=self.outages,
            sessions_unpersisted=self.unpersisted,
            store_deletes_pending=len(self._pending),
        )

    # -- guarding ----------------------------------------------------------------

    async def _guard(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        if self.degraded:
            await trio.lowlevel.checkpoint()
            raise StoreUnavailable(f"session store is degraded ({what} not tried)")
        return await self._timed(what, op)

    async def _timed(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        at_once = self._at_once
        try:
            if at_once is not None and at_once():
                # The store says this operation ends without waiting (an in-memory store,
                # not stalled): there is no deadline to keep, and no cancel scope to pay for.
                return await op()
            with trio.move_on_after(self.deadline):
                return await op()
            error = "deadline"
        except StaleEpoch:
            raise
        except _FAILURES as exc:
            error = str(exc)
        self.failures += 1
        self._degrade(what, error)
        if error == "deadline":
            error = f"not answered within {self.deadline:g}s"
        raise StoreUnavailable(f"session store: {what} failed: {error}")

    def _degrade(self, what: str, error: str) -> None:
        if not self.degraded:
            self.degraded = True
            self._probed_at = None
            self.outages += 1
            self._log.warning(
                "store_degraded", operation=what, error=error, deadline_s=self.deadline
            )
            self._went_degraded.set()

    async def wait_answering(self, since_outage: float) -> bool:
        """Wait until the store is not degraded, but not past ``since_outage`` (s) after
        the outage's first probe began; whether it is answering.

        The age counts from the first probe, not from the miss that began the outage: an
        application frozen (SIGSTOP) over a store operation misses its deadline at the
        thaw, and if frozen again at once, has not asked the store since when it thaws
        next. Aged from the miss, such an outage counted as long over, and calls went
        on without the store's word that another Node had created them (found by `orsim
        search`, seed 436: a lone Node frozen twice routed 2 calls twice and lost 2).
        """
        while self.degraded and self._probed_at is None:
            await self._probing.wait()
        if self._probed_at is not None:
            with trio.move_on_at(self._probed_at + since_outage):
                while self.degraded:
                    await self._recovered.wait()
        return not self.degraded

    async def run(self) -> None:
        """Probe the store while it is degraded; end the outage once it answers."""
        while True:
            if not self.degraded:
                self._went_degraded = trio.Event()
                await self._went_degraded.wait()
            await trio.sleep(self.probe_interval)
            if self._probed_at is None:
                self._probed_at = trio.current_time()
                self._probing.set()
                self._probing = trio.Event()
            try:
                await self._timed("probe", self._probe)
                await self._flush_deletes()
            except StoreUnavailable:
                continue
            self.degraded = False
            self._recovered.set()
            self._recovered = trio.Event()
            self._log.info("store_recovered", outages=self.outages)
            if self.on_recovered is not None:
                await self.on_recovered()

    async def _probe(self) -> None:
        # A write, not a read: a store whose writes are stuck (a held lock) still reads.
        await self.store.delete_session(_PROBE_NODE, 0, _PROBE_CALL)

    async def _flush_deletes(self) -> None:
        for key, epoch in list(self._pending.items()):
            try:
                await self._timed(
                    "delete_session", partial(self.store.delete_session, key[0], epoch, key[1])
                )
            except StaleEpoch:
                pass  # the Node moved on: its new primary owns what is left
            del self._pending[key]

    # -- the store's operations --------------------------------------------------

    async def current_epoch(self, node_id: int) -> int:
        return await self._guard("current_epoch", lambda: self.store.current_epoch(node_id))

    async def initial_epoch(self, node_id: int, wait: float) -> int | None:
        """The Node's epoch at start-up, waiting up to ``wait`` for the store; None if away."""
        with trio.move_on_after(wait):
            while True:
                try:
                    return await self._timed(
                        "current_epoch", lambda: self.store.current_epoch(node_id)
                    )
                except StoreUnavailable:
                    await trio.sleep(self.probe_interval)
        return None

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        return await self._guard(
            "claim_epoch", lambda: self.store.claim_epoch(node_id, expected, new)
        )

    async def put_session(self, session: Session) -> None:
        await self._guard("put_session", lambda: self.store.put_session(session))

    async def create_session(self, session: Session) -> bool:
        return await self._guard("create_session", lambda: self.store.create_session(session))

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        return await self._guard(
            "adopt_session", lambda: self.store.adopt_session(session, from_node, from_epoch)
        )

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        """Delete, or keep the delete for when the store is back (never raises Unavailable)."""
        try:
            await self._guard(
                "delete_session", lambda: self.store.delete_session(node_id, epoch, call_id)
            )
        except StoreUnavailable:
            self._pending[(node_id, call_id)] = epoch
            if len(self._pending) > MAX_PENDING_DELETES:
                del self._pending[next(iter(self._pending))]

    async def sessions(self, node_id: int) -> list[Session]:
        return await self._guard("sessions", lambda: self.store.sessions(node_id))

    async def aclose(self) -> None:
        await self.store.aclose()
