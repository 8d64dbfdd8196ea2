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
from collections.abc import Callable
from typing import Any, NoReturn

import attrs
import trio
from structlog.typing import FilteringBoundLogger

from orsim.config import (
    ConfigDatabase,
    application_to_wire,
    option_value_to_str,
    transaction_to_wire,
)
from orsim.confserv._changes import (
    Change,
    Kind,
    apply_all,
    options_of,
)
from orsim.confserv._journal import Journal
from orsim.errors import ConnectionLost, RequestRefused
from orsim.logs import get_logger
from orsim.wire import (
    Connection,
    Json,
    Network,
    Request,
    frame_counts,
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


def _text(params: dict[str, Json], name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise RequestRefused("bad_request", f"'{name}' must be a non-empty string")
    return value


def _value(params: dict[str, Json], name: str) -> str:
    try:
        return option_value_to_str(params.get(name))
    except TypeError as exc:
        raise RequestRefused("bad_request", f"'{name}' {exc}") from None


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
        method: Callable[[Connection, dict[str, Json]], Any] | None = self._methods().get(
            request.method
        )
        if method is None:
            raise RequestRefused("unknown_method", f"unknown method '{request.method}'")
        if not isinstance(request.params, dict):
            raise RequestRefused("bad_request", "params must be an object")
        return await method(conn, request.params)

    def _methods(self) -> dict[str, Callable[[Connection, dict[str, Json]], Any]]:
        return {
            "get_application": self.get_application,
            "get_applications": self.get_applications,
            "get_transaction": self.get_transaction,
            "list_applications": self.list_applications,
            "get_host": self.get_host,
            "set_option": self.set_option,
            "delete_option": self.delete_option,
            "import_options": self.import_options,
            "status": self.status,
        }

    async def get_application(self, conn: Connection, params: dict[str, Json]) -> Json:
        name = _text(params, "name")
        app = self.db.applications.get(name)
        if app is None:
            raise RequestRefused("not_found", f"application '{name}' not found")
        self.readers[("application", name)].add(conn)
        return application_to_wire(app)

    async def get_applications(self, conn: Connection, params: dict[str, Json]) -> Json:
        """Several Applications in one request (Genesys reads objects in bulk at start-up)."""
        names = params.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RequestRefused("bad_request", "names must be a list of strings")
        found: dict[str, Json] = {}
        for name in names:
            app = self.db.applications.get(str(name))
            if app is not None:
                self.readers[("application", app.name)].add(conn)
                found[app.name] = application_to_wire(app)
        return found

    async def get_transaction(self, conn: Connection, params: dict[str, Json]) -> Json:
        name = _text(params, "name")
        txn = self.db.transactions.get(name)
        if txn is None or txn.tenant != self.db.list_tenant:
            raise RequestRefused(
                "not_found", f"transaction '{name}' not found under tenant {self.db.list_tenant}"
            )
        self.readers[("transaction", name)].add(conn)
        return transaction_to_wire(txn)

    async def list_applications(self, conn: Connection, params: dict[str, Json]) -> Json:
        wanted = params.get("type")
        if wanted is not None and not isinstance(wanted, str):
            raise RequestRefused("bad_request", "'type' must be a string")
        return [a.name for a in self.db.applications.values() if wanted in (None, a.type)]

    async def get_host(self, conn: Connection, params: dict[str, Json]) -> Json:
        name = _text(params, "name")
        host = self.db.hosts.get(name)
        if host is None:
            raise RequestRefused("not_found", f"host '{name}' not found")
        return {"name": host.name, "address": host.address, "dbid": host.dbid}

    async def set_option(self, conn: Connection, params: dict[str, Json]) -> Json:
        change = Change(
            _text(params, "object"),
            _text(params, "section"),
            _text(params, "key"),
            _value(params, "value"),
        )
        kind = await self.commit([change])
        return {"object": change.object, "kind": kind}

    async def delete_option(self, conn: Connection, params: dict[str, Json]) -> Json:
        change = Change(
            _text(params, "object"), _text(params, "section"), _text(params, "key"), None
        )
        kind = await self.commit([change])
        return {"object": change.object, "kind": kind}

    async def import_options(self, conn: Connection, params: dict[str, Json]) -> Json:
        name = _text(params, "object")
        options = params.get("options")
        if not isinstance(options, dict):
            raise RequestRefused("bad_request", "'options' must be an object of sections")
        changes = []
        for section, keys in options.items():
            if not isinstance(keys, dict):
                raise RequestRefused("bad_request", f"section '{section}' must be an object")
            for key, value in keys.items():
                try:
                    changes.append(Change(name, section, key, option_value_to_str(value)))
                except TypeError as exc:
                    raise RequestRefused("bad_request", f"{section}/{key}: {exc}") from None
        if changes:
            await self.commit(changes)
        return {"count": len(changes)}

    async def status(self, conn: Connection, params: dict[str, Json]) -> Json:
        return {
            "app": APP_NAME,
            "type": APP_TYPE,
            "mode": "primary",
            "pid": os.getpid(),
            "source": self.db.source,
            "applications": len(self.db.applications),
            "transactions": len(self.db.transactions),
            "changes": self.change_count,
            "clients": len(self.connections),
            **frame_counts(),
        }

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
        payloads: list[dict[str, Json]] = [
            {
                "kind": kind,
                "object": name,
                "section": c.section,
                "key": c.key,
                "value": c.value,
                "options": options,
            }
            for c in changes
        ]

        for conn in readers:
            try:
                for payload in payloads:
                    conn.push_nowait("object_changed", payload)
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
