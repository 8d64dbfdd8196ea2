"""The store server: one process owns a SQLite session file and serves every node.

Why a server and not a file every node opens: SQLite's write lock belongs to whoever
holds it, and a node frozen (SIGSTOP) inside a write transaction held it for ever,
stalling every store operation of every other node, so the backup could not even raise
the epoch and the whole cluster stopped routing. Here only the server touches the file.
Nodes speak to it over the wire with a deadline per request: a frozen node holds
nothing, and a frozen, slow or dead server is a *store outage* that each node rides out
on its own (routing goes on, sessions are not persisted meanwhile, see
``orsim.node``'s store guard) until the server answers again.

The server is found through a small JSON file beside the database, ``PATH.server.json``
(``{"host", "port", "pid", "managed"}``), written once the port is bound and removed on a
clean exit of an unmanaged server (a managed one leaves it). Exactly one server runs per
file: it holds an exclusive ``flock`` on ``PATH.server.lock`` for its lifetime (the
kernel drops it when the process dies). The launcher starts a *managed* server (an
application named ``store`` of type ``SessionStore``); a node that finds no server for
its file starts an unmanaged one itself (see ``_remote.py``), which exits once no node
has been connected for a while.

Requests (CONTRACTS.md "Session store server") mirror the store's methods one to one;
an answer that would have raised ``StaleEpoch`` is ``{"stale": [node_id, epoch,
current]}``, so fencing crosses the wire as data, not as an error string.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Final, TypeVar

import attrs
import trio

from orsim.errors import OrsimError
from orsim.logs import get_logger
from orsim.store._messages import (
    AdoptSession,
    ClaimEpoch,
    Count,
    Counted,
    Created,
    CreateSession,
    CurrentEpoch,
    DeleteSession,
    Epoch,
    Moved,
    PutSession,
    SessionList,
    Sessions,
    Stale,
    StoreServerStatus,
    Won,
)
from orsim.store._protocol import SessionStore
from orsim.store._session import StaleEpoch
from orsim.wire import (
    Connection,
    Done,
    HandlerTable,
    Json,
    Network,
    Record,
    Request,
    RequestRefused,
    Status,
    StatusReport,
    on,
    serve_app,
)

T = TypeVar("T")

APP_NAME: Final = "store"
APP_TYPE: Final = "SessionStore"
#: What a client without the cluster's key may ask: reading changes nothing.
OPEN_METHODS: Final = frozenset({"status", "count", "sessions", "current_epoch"})
#: An unmanaged server exits after this long without a connected client (s).
DEFAULT_IDLE_EXIT: Final = 30.0


class StoreServerBusy(OrsimError):
    """Another store server already serves this database file."""


def sidecar_path(db: Path) -> Path:
    """Where the server of ``db`` says where it listens."""
    return db.with_name(db.name + ".server.json")


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".server.lock")


@attrs.frozen
class ServerAddress:
    """What ``PATH.server.json`` holds."""

    host: str
    port: int
    pid: int
    managed: bool


def read_sidecar(db: Path) -> ServerAddress | None:
    """The server address written beside ``db``, or None (absent or unreadable)."""
    try:
        raw = json.loads(sidecar_path(db).read_text())
        return ServerAddress(
            str(raw["host"]), int(raw["port"]), int(raw["pid"]), bool(raw["managed"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_sidecar(db: Path, address: ServerAddress) -> None:
    target = sidecar_path(db)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(attrs.asdict(address)) + "\n")
    os.replace(tmp, target)


def _remove_sidecar(db: Path) -> None:
    current = read_sidecar(db)
    if current is not None and current.pid == os.getpid():
        with contextlib.suppress(OSError):
            sidecar_path(db).unlink()


@contextlib.contextmanager
def exclusive_lock(db: Path) -> Iterator[None]:
    """Hold the one-server-per-file lock, or raise :class:`StoreServerBusy`."""
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreServerBusy(f"{db} is already served by another store server") from None
        yield
    finally:
        os.close(fd)


@attrs.define(eq=False)
class StoreServer:
    """Answers store requests from a backend :class:`SessionStore` it owns."""

    backend: SessionStore
    path: Path
    clients: int = 0
    requests: int = 0
    handlers: HandlerTable = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.handlers = HandlerTable.of(
            APP_NAME,
            [
                on(CurrentEpoch, self._current_epoch),
                on(ClaimEpoch, self._claim_epoch),
                on(PutSession, self._put_session),
                on(CreateSession, self._create_session),
                on(AdoptSession, self._adopt_session),
                on(DeleteSession, self._delete_session),
                on(Sessions, self._sessions),
                on(Count, self._count),
                on(Status, self._status),
            ],
        )

    async def handle(self, conn: Connection, request: Request) -> Json:
        if request.method != Status.METHOD and request.method in self.handlers.methods:
            self.requests += 1
        return await self.handlers.handle(conn, request)

    def status(self) -> StoreServerStatus:
        """What ``status`` answers."""
        counts = getattr(self.backend, "statistics", None)
        stats = attrs.asdict(counts()) if counts is not None else {}
        return StoreServerStatus(
            app=APP_NAME,
            type=APP_TYPE,
            pid=os.getpid(),
            path=str(self.path),
            clients=self.clients,
            requests=self.requests,
            statistics=stats,
        )

    def _status(self, conn: Connection, request: Status) -> StatusReport:
        return StatusReport(self.status().to_json())

    async def _current_epoch(self, conn: Connection, m: CurrentEpoch) -> Record:
        return await _guarded(self.backend.current_epoch(m.node_id), Epoch)

    async def _claim_epoch(self, conn: Connection, m: ClaimEpoch) -> Record:
        return await _guarded(self.backend.claim_epoch(m.node_id, m.expected, m.new), Won)

    async def _put_session(self, conn: Connection, m: PutSession) -> Record:
        return await _guarded(self.backend.put_session(m.session), lambda _: Done())

    async def _create_session(self, conn: Connection, m: CreateSession) -> Record:
        return await _guarded(self.backend.create_session(m.session), Created)

    async def _adopt_session(self, conn: Connection, m: AdoptSession) -> Record:
        moved = self.backend.adopt_session(m.session, m.from_node, m.from_epoch)
        return await _guarded(moved, Moved)

    async def _delete_session(self, conn: Connection, m: DeleteSession) -> Record:
        deleted = self.backend.delete_session(m.node_id, m.epoch, m.call_id)
        return await _guarded(deleted, lambda _: Done())

    async def _sessions(self, conn: Connection, m: Sessions) -> Record:
        found = await _guarded(self.backend.sessions(m.node_id), lambda s: SessionList(tuple(s)))
        return found

    async def _count(self, conn: Connection, m: Count) -> Record:
        counter = getattr(self.backend, "count", None)
        if counter is None:
            raise RequestRefused("unsupported", "this backend does not count sessions")
        return await _guarded(counter(m.node_id), Counted)


async def _guarded(work: Awaitable[T], answer: Callable[[T], Record]) -> Record:
    """The answer of a store operation: ``Stale`` for one refused for its epoch, and a
    refusal (``error``) for a store failure, as every store server has answered."""
    try:
        return answer(await work)
    except StaleEpoch as exc:
        return Stale.of(exc)
    except RequestRefused:
        raise
    except OrsimError as exc:
        raise RequestRefused("error", str(exc)) from exc


async def serve_store(
    network: Network,
    db: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    managed: bool = False,
    idle_exit: float | None = DEFAULT_IDLE_EXIT,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the SQLite session file ``db`` until cancelled (or idle, when unmanaged).

    Raises:
        StoreServerBusy: another server holds the file.
        StoreError: the file cannot be opened as a session database.
    """
    from orsim.store._sqlite import SqliteStore

    log = get_logger(app=APP_NAME, path=str(db))
    with exclusive_lock(db):
        backend = await SqliteStore.open(db)
        server = StoreServer(backend, db)
        idle = trio.Event() if idle_exit is None else None
        changed = trio.Event()

        async def connected(conn: Connection) -> None:
            nonlocal changed
            server.clients += 1
            changed.set()
            changed = trio.Event()

        async def gone(conn: Connection) -> None:
            nonlocal changed
            server.clients -= 1
            changed.set()
            changed = trio.Event()

        try:
            async with trio.open_nursery() as nursery:
                bound: int = await nursery.start(
                    lambda task_status: serve_app(
                        network,
                        host,
                        port,
                        app=APP_NAME,
                        app_type=APP_TYPE,
                        handler=server.handle,
                        on_connect=connected,
                        on_disconnect=gone,
                        open_methods=OPEN_METHODS,
                        task_status=task_status,
                    )
                )
                _write_sidecar(db, ServerAddress(host, bound, os.getpid(), managed))
                log.info("store_serving", host=host, port=bound, managed=managed)
                task_status.started(bound)
                if idle is not None:
                    await idle.wait()  # managed: serve until cancelled
                while True:
                    if server.clients:
                        await changed.wait()
                        continue
                    with trio.move_on_after(idle_exit or 0):
                        await changed.wait()
                        continue
                    log.info("store_idle_exit", idle_s=idle_exit)
                    nursery.cancel_scope.cancel()
                    break
        finally:
            if not managed:
                # A managed server's file stays: while it is down (killed, or the cluster
                # stopping) the nodes must see an outage, not a vacancy to fill.
                _remove_sidecar(db)
            await backend.aclose()
