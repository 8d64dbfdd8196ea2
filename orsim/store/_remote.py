"""A node's client of the store server of a SQLite session file (see ``_server.py``).

``RemoteStore`` is a :class:`~orsim.store.SessionStore` whose every operation is one
request to the server, answered within ``timeout`` or failed with
:class:`~orsim.store.StoreUnavailable` (the outcome of a write that timed out is
unknown). ``run()`` keeps the link: it finds the server through ``PATH.server.json``,
reconnects when the link drops, and, when no server has ever been started for the file
(or the unmanaged one that served it has died), starts one itself, so a node on its
own needs nothing but the file's path. A *managed* server (the launcher's) is never
started by a node: a managed server that is down is an outage, not a vacancy.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Final, TypeVar, final

import trio

from orsim.errors import ConnectionLost, RemoteProtocolError, RequestRefused
from orsim.logs import get_logger
from orsim.store._messages import (
    AdoptSession,
    ClaimEpoch,
    Count,
    CreateSession,
    CurrentEpoch,
    DeleteSession,
    PutSession,
    Sessions,
    Stale,
)
from orsim.store._protocol import Counters, StoreStatistics
from orsim.store._server import APP_NAME, read_sidecar
from orsim.store._session import (
    Session,
    StaleEpoch,
    StoreError,
    StoreUnavailable,
    check_claim,
)
from orsim.wire import Call, Connection, Network, open_connection

A = TypeVar("A")

#: Default deadline of one store request (s): store writes take milliseconds, so this
#: only runs out when the server is frozen, overloaded or gone.
DEFAULT_TIMEOUT: Final = 1.0
#: Pause between two connection attempts (s).
_RETRY = 0.1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@final
class RemoteStore:
    """The session store of ``path``, reached through its store server."""

    def __init__(
        self,
        path: Path,
        network: Network,
        *,
        app: str,
        timeout: float = DEFAULT_TIMEOUT,
        autostart: bool = True,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self._network = network
        self._app = app
        self._autostart = autostart
        self._conn: Connection | None = None
        self._up = trio.Event()
        self._started: subprocess.Popen[bytes] | None = None
        self._counters = Counters()
        self._closed = False
        self._log = get_logger(app=app, store=str(path))

    # -- the link ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection to the file's store server until cancelled."""
        task_status.started()
        announced = False
        while not self._closed:
            address = self._server_address()
            if address is None:
                await trio.sleep(_RETRY)
                continue
            try:
                with trio.fail_after(max(self.timeout, 1.0)):
                    conn = await open_connection(
                        self._network, *address, app=self._app, app_type="OrchestrationServer"
                    )
            except (OSError, ConnectionLost, trio.TooSlowError) as exc:
                if not announced:
                    self._log.info("store_server_unreachable", error=str(exc))
                    announced = True
                await trio.sleep(_RETRY)
                continue
            announced = False
            self._conn = conn
            self._up.set()
            try:
                await conn.serve()
            finally:
                self._conn = None
                self._up = trio.Event()
                await conn.aclose()
            self._log.warning("store_link_lost", reason=conn.close_reason)

    def _server_address(self) -> tuple[str, int] | None:
        if self._started is not None and self._started.poll() is not None:
            self._started = None  # reaped
        found = read_sidecar(self.path)
        if found is not None and (found.managed or _alive(found.pid)):
            return found.host, found.port
        if self._autostart and self._started is None:
            self._start_server()
        return None

    def _start_server(self) -> None:
        """Start an unmanaged store server for the file (it exits when idle)."""
        log_path = self.path.with_name(self.path.name + ".server.log")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._started = subprocess.Popen(
                [sys.executable, "-m", "orsim", "store", "serve", str(self.path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        self._log.info("store_server_started", pid=self._started.pid)

    async def _call(self, message: Call[A]) -> A:
        if self._closed:
            raise trio.ClosedResourceError("session store is closed")
        method = message.METHOD
        with trio.move_on_after(self.timeout):
            while True:
                conn = self._conn
                if conn is None:
                    await self._up.wait()
                    if self._closed:
                        raise trio.ClosedResourceError("session store is closed")
                    continue
                try:
                    answer = await conn.request(method, message.to_json())
                except ConnectionLost:
                    await trio.lowlevel.checkpoint()
                    continue  # wait for the next link, within the same deadline
                except RequestRefused as exc:
                    raise StoreError(f"store server {self.path}: {exc}") from exc
                stale = Stale.find(answer)
                if stale is not None:
                    raise stale
                try:
                    return message.answer(answer)
                except RemoteProtocolError as exc:
                    raise StoreError(f"store server {self.path}: bad answer to {method}") from exc
        raise StoreUnavailable(
            f"store server of {self.path} did not answer {method} within {self.timeout:g}s"
        )

    # -- SessionStore ------------------------------------------------------------

    async def current_epoch(self, node_id: int) -> int:
        return (await self._call(CurrentEpoch(node_id))).epoch

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        check_claim(expected, new)
        won = (await self._call(ClaimEpoch(node_id, expected, new))).won
        if won:
            self._counters.claims_won += 1
        else:
            self._counters.claims_lost += 1
        return won

    async def _fenced(self, message: Call[A]) -> A:
        try:
            return await self._call(message)
        except StaleEpoch:
            self._counters.stale_refusals += 1
            raise

    async def put_session(self, session: Session) -> None:
        await self._fenced(PutSession(session))
        self._counters.puts += 1

    async def create_session(self, session: Session) -> bool:
        return self._counters.created((await self._fenced(CreateSession(session))).created)

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        return (await self._fenced(AdoptSession(session, from_node, from_epoch))).moved

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        await self._fenced(DeleteSession(node_id, epoch, call_id))
        self._counters.deletes += 1

    async def sessions(self, node_id: int) -> list[Session]:
        return list((await self._call(Sessions(node_id))).sessions)

    async def count(self, node_id: int) -> int:
        return (await self._call(Count(node_id))).count

    def statistics(self) -> StoreStatistics:
        return self._counters.snapshot(APP_NAME, str(self.path))

    async def aclose(self) -> None:
        self._closed = True
        self._up.set()  # wake callers waiting for a link: there will be none
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(ConnectionLost):
                await conn.aclose()
