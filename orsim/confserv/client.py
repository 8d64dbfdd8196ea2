"""The Configuration Server client every orsim process uses at start-up.

    client = await ConfServClient.connect(network, addresses, app="ORS_1",
                                          app_type="OrchestrationServer", timeout=10.0)
    async with client:
        app = await client.get_application("ORS_1")
        txn = await client.get_transaction("ORS_Cluster_1")
        async for change in client.changes: ...

``changes`` carries an ``ObjectChanged`` for every change of an object this client has
read; it closes when the connection ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TypeVar

import attrs
import trio

from orsim.config import (
    Application,
    EffectiveOptions,
    Host,
    Options,
    Transaction,
    check_node_cluster,
    cluster_members,
    effective_options,
)
from orsim.confserv._messages import (
    DeleteOption,
    GetApplication,
    GetApplications,
    GetHost,
    GetTransaction,
    ImportOptions,
    ListApplications,
    ObjectChanged,
    SetOption,
)
from orsim.errors import ConfigError, RequestRefused
from orsim.logs import get_logger
from orsim.wire import Call, Connection, Json, Network, Push, Status, connect_with_retry

A = TypeVar("A")

#: Error codes of the Configuration Server that mean "your configuration request is wrong".
CONFIG_ERROR_CODES = ("not_found", "not_allowed", "bad_value")
#: Pushes waiting to be read; beyond this the oldest are dropped (each push carries the
#: object's full options, so a later one supersedes an earlier one).
CHANGES_BUFFER = 1000


@attrs.frozen
class NodeConfig:
    """What an ORS node needs from the Configuration Server to start.

    ``apps`` holds the node's application, the servers it connects to, its primary or
    backup, every Node of its cluster and their backups (those that exist).
    """

    app: Application
    cluster: Transaction | None
    apps: Mapping[str, Application] = attrs.field(eq=False)

    @property
    def effective(self) -> EffectiveOptions:
        """The node's effective options (the list wins)."""
        return effective_options(self.app, self.cluster)

    def problems(self) -> list[str]:
        """The start-up requirement problems (empty: the node may start)."""
        return check_node_cluster(self.app, self.cluster, self.apps)


def _config_errors(exc: RequestRefused) -> Exception:
    if exc.code in CONFIG_ERROR_CODES:
        return ConfigError(exc.message)
    return exc


def _other_than(exc: BaseException) -> Callable[[BaseException], bool]:
    """A ``subgroup`` test for the exceptions of a group other than ``exc`` and trio's
    cancellations."""

    def other(e: BaseException) -> bool:
        return not isinstance(e, BaseExceptionGroup | trio.Cancelled) and e is not exc

    return other


@attrs.define(eq=False)
class ConfServClient:
    """A connection to the Configuration Server. Use ``connect`` then ``async with``."""

    connection: Connection
    changes: trio.MemoryReceiveChannel[ObjectChanged]
    _changes_in: trio.MemorySendChannel[ObjectChanged]
    _nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None

    @classmethod
    async def connect(
        cls,
        network: Network,
        addresses: list[tuple[str, int]],
        *,
        app: str,
        app_type: str,
        timeout: float = 10.0,
    ) -> ConfServClient:
        """Connect to the first Configuration Server address that answers.

        Tries every address in turn, with backoff, for up to ``timeout`` seconds.

        Raises:
            UnreachableError: none answered in time.
        """
        send, receive = trio.open_memory_channel[ObjectChanged](CHANGES_BUFFER)
        log = get_logger(app=app)

        async def on_push(_conn: Connection, push: Push) -> None:
            if push.topic != ObjectChanged.TOPIC:
                return
            try:
                change = ObjectChanged.from_json(push.data)
            except RequestRefused as exc:
                log.warning("bad_push", topic=push.topic, error=exc.message)
                return
            try:
                try:
                    send.send_nowait(change)
                except trio.WouldBlock:
                    # Nobody is reading: drop the oldest so the newest full state gets in.
                    receive.receive_nowait()
                    send.send_nowait(change)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.WouldBlock):
                pass

        conn = await connect_with_retry(
            network,
            addresses,
            app=app,
            app_type=app_type,
            timeout=timeout,
            what="the Configuration Server",
            on_push=on_push,
        )
        return cls(conn, receive, send)

    async def __aenter__(self) -> ConfServClient:
        manager = self._nursery_manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        nursery.start_soon(self._serve)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Shielded (closing a socket is immediate): a Cancelled escaping here would skip the
        # nursery's __aexit__ below and corrupt trio's nursery stack on every SIGTERM.
        with trio.CancelScope(shield=True):
            await self.aclose()
        assert self._nursery_manager is not None, "__aexit__ without __aenter__"
        try:
            result: bool | None = await self._nursery_manager.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The nursery is our detail: let the block's own exception out unwrapped, also
            # when the reader was cancelled meanwhile by a scope around us (the process is
            # stopping): that cancellation comes again at the caller's next checkpoint.
            if exc is not None and group.subgroup(_other_than(exc)) is None:
                raise exc from exc.__cause__
            raise
        return result

    async def _serve(self) -> None:
        try:
            await self.connection.serve()
        finally:
            self._changes_in.close()

    async def aclose(self) -> None:
        """Close the connection (the ``changes`` channel then ends)."""
        await self.connection.aclose()
        self._changes_in.close()

    @property
    def closed(self) -> trio.Event:
        """Set when the connection to the Configuration Server is gone."""
        return self.connection.closed

    async def request(
        self, method: str, params: dict[str, Json], timeout: float = math.inf
    ) -> Json:
        """Any Configuration Server request; not_found/not_allowed/bad_value -> ConfigError."""
        try:
            return await self.connection.request(method, params, timeout=timeout)
        except RequestRefused as exc:
            raise _config_errors(exc) from None

    async def call(self, request: Call[A], timeout: float = math.inf) -> A:
        """A typed Configuration Server request; not_found/not_allowed/bad_value ->
        ConfigError."""
        try:
            return await self.connection.call(request, timeout)
        except RequestRefused as exc:
            raise _config_errors(exc) from None

    async def get_application(self, name: str) -> Application:
        """The Application ``name``; this client then gets its change pushes.

        Raises:
            ConfigError: ``application 'X' not found``.
        """
        return (await self.call(GetApplication(name))).application

    async def get_applications(self, names: Iterable[str]) -> dict[str, Application]:
        """The Applications of ``names`` that exist, by name, in one request."""
        found = await self.call(GetApplications(tuple(sorted(set(names)))))
        return dict(found.applications)

    async def get_transaction(self, name: str) -> Transaction:
        """The List transaction ``name`` (under the list tenant); registers for pushes.

        Raises:
            ConfigError: ``transaction 'X' not found under tenant T``.
        """
        return (await self.call(GetTransaction(name))).transaction

    async def list_applications(self, app_type: str | None = None) -> list[str]:
        return list((await self.call(ListApplications(app_type))).names)

    async def get_host(self, name: str) -> Host:
        return (await self.call(GetHost(name))).host

    async def set_option(self, obj: str, section: str, key: str, value: str) -> str:
        """Set one option (durable when this returns); returns the object's kind."""
        return (await self.call(SetOption(obj, section, key, value))).kind

    async def delete_option(self, obj: str, section: str, key: str) -> str:
        """Delete one option (durable when this returns); returns the object's kind."""
        return (await self.call(DeleteOption(obj, section, key))).kind

    async def import_options(self, obj: str, options: Options) -> int:
        """Set many options at once (all or none); returns how many were set."""
        return (await self.call(ImportOptions(obj, options))).count

    async def status(self) -> dict[str, Json]:
        return (await self.call(Status())).fields

    async def get_node_config(self, app: str, cluster: str | None = None) -> NodeConfig:
        """Everything ``check_node_cluster`` needs for an ORS node, read in one go.

        Raises:
            ConfigError: the application or the cluster list is not found.
        """
        application = await self.get_application(app)
        txn = await self.get_transaction(cluster) if cluster is not None else None
        wanted = [c.server for c in application.connections]
        wanted += [n for n in (application.backup, application.primary) if n]
        members = cluster_members(application, txn) or {}
        apps = {application.name: application}
        for name in [*wanted, *members]:
            await self._fetch_into(apps, name)
        for name in members:
            member = apps.get(name)
            if member is not None and member.backup:
                await self._fetch_into(apps, member.backup)
        return NodeConfig(application, txn, apps)

    async def _fetch_into(self, apps: dict[str, Application], name: str) -> None:
        if name in apps:
            return
        try:
            apps[name] = await self.get_application(name)
        except ConfigError:
            pass  # check_node_cluster reports what is missing
