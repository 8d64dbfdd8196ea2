"""The mock Configuration Server: serves a database, takes live changes, pushes them.

Requests and pushes are those of CONTRACTS.md ("Configuration Server"). A change is
checked against the current database, written to the journal (durable), applied, pushed
to every connection that read the object, and only then acknowledged. Changes run one at
a time, so the journal order is the order clients saw.

Pushing never waits on a reader: each push is left in the reader's out-buffer
(``Connection.push_nowait``), whose bounds drop a reader that stops reading (a stalled
write or a full buffer: "peer not reading", counted in ``links_dropped_slow``). So a
SIGSTOPped reader cannot hold a change, or the change lock, for anyone else; it re-reads
the objects when it reconnects.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import NoReturn

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim.config import (
    Application,
    ConfigDatabase,
)
from orsim.confserv._changes import (
    Change,
    Kind,
    apply_all,
    options_of,
)
from orsim.confserv._journal import Journal
from orsim.confserv._messages import (
    ApplicationFound,
    ApplicationsFound,
    ConfServStatus,
    DeleteOption,
    GetApplication,
    GetApplications,
    GetHost,
    GetTransaction,
    HostFound,
    Imported,
    ImportOptions,
    ListApplications,
    Names,
    ObjectChanged,
    OptionChanged,
    SetOption,
    TransactionFound,
)
from orsim.errors import ConnectionLost, RequestRefused
from orsim.logs import get_logger
from orsim.wire import (
    Connection,
    HandlerTable,
    Json,
    Network,
    Request,
    Status,
    StatusReport,
    frame_totals,
    on,
    serve_app,
)

APP_NAME = "confserv"
APP_TYPE = "ConfigurationServer"
#: What a client without the cluster's key may ask: reading the database (and following
#: it) changes nothing; setting, deleting and importing options need the key.
OPEN_METHODS = frozenset(
    {"status", "get_application", "get_applications", "get_transaction",
     "list_applications", "get_host"}
)  # fmt: skip


@attrs.define(eq=False)
class ConfServ:
    """The server's state: the live database, the journal and who reads what."""

    db: ConfigDatabase
    journal: Journal | None = None
    #: (kind, object name) -> connections that read it
    readers: defaultdict[tuple[str, str], set[Connection]] = attrs.Factory(lambda: defaultdict(set))
    connections: set[Connection] = attrs.Factory(set)
    change_count: int = 0
    _change_lock: trio.Lock = attrs.Factory(trio.Lock)
    _log: FilteringBoundLogger = attrs.Factory(lambda: get_logger(app=APP_NAME))
    #: Every request the Configuration Server answers, with its handler.
    handlers: HandlerTable = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.handlers = HandlerTable.of(
            APP_NAME,
            [
                on(GetApplication, self.get_application),
                on(GetApplications, self.get_applications),
                on(GetTransaction, self.get_transaction),
                on(ListApplications, self.list_applications),
                on(GetHost, self.get_host),
                on(SetOption, self.set_option),
                on(DeleteOption, self.delete_option),
                on(ImportOptions, self.import_options),
                on(Status, self._status),
            ],
        )

    def replay(self) -> None:
        """Re-apply the journal's changes on top of the YAML database (at start)."""
        if self.journal is None:
            return
        previous = self.journal.source(os.path.abspath(self.db.source))
        if previous is not None and previous != os.path.abspath(self.db.source):
            self._log.warning("state_from_other_database", state_source=previous)
        applied = 0
        for change in self.journal.changes():
            try:
                self.db, _kind = apply_all(self.db, [change])
                applied += 1
            except RequestRefused as exc:
                self._log.warning(
                    "journal_change_skipped", change=attrs.asdict(change), error=exc.message
                )
        self.change_count = applied
        self._log.info("state_restored", changes=applied, journal=self.journal.path)

    # -- connections --------------------------------------------------------------

    async def on_connect(self, conn: Connection) -> None:
        self.connections.add(conn)

    async def on_disconnect(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for readers in self.readers.values():
            readers.discard(conn)

    # -- requests -----------------------------------------------------------------

    async def handle(self, conn: Connection, request: Request) -> Json:
        return await self.handlers.handle(conn, request)

    def get_application(self, conn: Connection, request: GetApplication) -> ApplicationFound:
        name = request.name
        app = self.db.applications.get(name)
        if app is None:
            raise RequestRefused("not_found", f"application '{name}' not found")
        self.readers[("application", name)].add(conn)
        return ApplicationFound(app)

    def get_applications(self, conn: Connection, request: GetApplications) -> ApplicationsFound:
        """Several Applications in one request (Genesys reads objects in bulk at start-up)."""
        found: dict[str, Application] = {}
        for name in request.names:
            app = self.db.applications.get(name)
            if app is not None:
                self.readers[("application", app.name)].add(conn)
                found[app.name] = app
        return ApplicationsFound(found)

    def get_transaction(self, conn: Connection, request: GetTransaction) -> TransactionFound:
        name = request.name
        txn = self.db.transactions.get(name)
        if txn is None or txn.tenant != self.db.list_tenant:
            raise RequestRefused(
                "not_found", f"transaction '{name}' not found under tenant {self.db.list_tenant}"
            )
        self.readers[("transaction", name)].add(conn)
        return TransactionFound(txn)

    def list_applications(self, conn: Connection, request: ListApplications) -> Names:
        wanted = request.type
        return Names(
            tuple(a.name for a in self.db.applications.values() if wanted in (None, a.type))
        )

    def get_host(self, conn: Connection, request: GetHost) -> HostFound:
        host = self.db.hosts.get(request.name)
        if host is None:
            raise RequestRefused("not_found", f"host '{request.name}' not found")
        return HostFound(host)

    async def set_option(self, conn: Connection, request: SetOption) -> OptionChanged:
        change = Change(request.object, request.section, request.key, request.value)
        kind = await self.commit([change])
        return OptionChanged(change.object, kind)

    async def delete_option(self, conn: Connection, request: DeleteOption) -> OptionChanged:
        change = Change(request.object, request.section, request.key, None)
        kind = await self.commit([change])
        return OptionChanged(change.object, kind)

    async def import_options(self, conn: Connection, request: ImportOptions) -> Imported:
        changes = [
            Change(request.object, section, key, value)
            for section, keys in request.options.items()
            for key, value in keys.items()
        ]
        if changes:
            await self.commit(changes)
        return Imported(len(changes))

    def status(self) -> ConfServStatus:
        """What ``status`` answers."""
        return ConfServStatus(
            app=APP_NAME,
            type=APP_TYPE,
            pid=os.getpid(),
            source=self.db.source,
            applications=len(self.db.applications),
            transactions=len(self.db.transactions),
            changes=self.change_count,
            clients=len(self.connections),
            frames=frame_totals(),
        )

    def _status(self, conn: Connection, request: Status) -> StatusReport:
        return StatusReport(self.status().to_json())

    # -- changes ------------------------------------------------------------------

    async def commit(self, changes: list[Change]) -> Kind:
        """Check, journal, apply and push ``changes`` (all or none); returns the kind.

        Shielded once checked: a client hanging up mid-request must not leave the journal
        and the live database disagreeing.
        """
        async with self._change_lock:
            try:
                new_db, kind = apply_all(self.db, changes)
            except RequestRefused as exc:
                raise RequestRefused(exc.code, exc.message) from None
            with trio.CancelScope(shield=True):
                if self.journal is not None:
                    await trio.to_thread.run_sync(self.journal.append, changes)
                self.db = new_db
                self.change_count += len(changes)
                for change in changes:
                    self._log.info(
                        "option_changed",
                        kind=kind,
                        object=change.object,
                        section=change.section,
                        key=change.key,
                        value=change.value,
                    )
                self._push(kind, changes)
        return kind

    def _push(self, kind: Kind, changes: list[Change]) -> None:
        """Queue the change pushes on every reader's connection (never waits)."""
        name = changes[0].object
        readers = list(self.readers.get((kind, name), ()))
        if not readers:
            return
        options = options_of(self.db, kind, name)
        pushes = [ObjectChanged(kind, name, c.section, c.key, c.value, options) for c in changes]
        for conn in readers:
            try:
                for push in pushes:
                    conn.notify_nowait(push)
            except (ConnectionLost, RuntimeError) as exc:  # gone or going: nothing to tell
                self._log.info("push_failed", peer=conn.peer_app, error=str(exc))


async def serve_confserv(
    network: Network,
    db: ConfigDatabase,
    host: str,
    port: int,
    state_dir: str | os.PathLike[str] | None,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve ``db`` on ``host:port`` until cancelled; reports the bound port via ``started``.

    Args:
        network: where the listener comes from (``TcpNetwork`` in processes).
        db: the loaded, checked database (``orsim.config.load_database``).
        host, port: where to listen (port 0: any free port).
        state_dir: where live changes are kept; the journal found there is re-applied
            on top of ``db`` first. None keeps changes in memory only.

    Raises:
        UnreachableError: the port cannot be bound.
    """
    journal = Journal(state_dir) if state_dir is not None else None
    server = ConfServ(db, journal)
    try:
        if journal is not None:
            await trio.to_thread.run_sync(server.replay)
        await serve_app(
            network,
            host,
            port,
            app=APP_NAME,
            app_type=APP_TYPE,
            handler=server.handle,
            on_connect=server.on_connect,
            on_disconnect=server.on_disconnect,
            open_methods=OPEN_METHODS,
            task_status=task_status,
        )
    finally:
        if journal is not None:
            journal.close()
