"""A whole orsim cluster inside one trio run, over a MemoryNetwork.

The same server code that runs as separate processes (Configuration Server, T-Server,
URS, ORS nodes) is wired together here through ``orsim.wire.MemoryNetwork`` and a shared
``MemoryStore``, so failover behaviour can be tested under ``trio.testing.MockClock`` in
virtual time: fast and deterministic. Faults: ``crash`` (cancel the application and close
its links at once), ``hang``/``resume`` (silence it without closing anything),
``partition`` (silence the links between two applications).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from orsim.config import ConfigDatabase
from orsim.node._live import follow_changes
from orsim.node._runtime import OrsNode
from orsim.node._startup import read_startup
from orsim.store._memory import MemoryStore
from orsim.wire import Connection, MemoryNetwork, open_connection

CONFSERV = ("confserv.sim", 2020)


@attrs.define(eq=False)
class SimCluster:
    """A running in-process cluster and the faults it can suffer."""

    db: ConfigDatabase
    net: MemoryNetwork
    store: MemoryStore
    nursery: trio.Nursery
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)
    nodes: dict[str, OrsNode] = attrs.Factory(dict)
    tserver: Any = None
    _client: Connection | None = None

    @property
    def ors_apps(self) -> list[str]:
        return sorted(
            a.name for a in self.db.applications.values() if a.type == "OrchestrationServer"
        )

    def cluster_of(self, app_name: str) -> str | None:
        app = self.db.applications[app_name]
        for txn in self.db.transactions.values():
            if app.primary_name in txn.cluster_members:
                return txn.name
        return None

    async def start(self, app_name: str) -> OrsNode:
        """Start (or restart) one ORS application and wait until it has a role."""
        from orsim.confserv.client import ConfServClient

        view = self.net.for_app(app_name)
        client = await ConfServClient.connect(
            view, [CONFSERV], app=app_name, app_type="OrchestrationServer", timeout=10
        )
        async with client:
            startup = await read_startup(client, app_name, self.cluster_of(app_name))
        node = OrsNode(startup.settings, view, self.store)
        scope = trio.CancelScope()
        self.scopes[app_name] = scope
        self.nodes[app_name] = node

        async def run(task_status: trio.TaskStatus[int]) -> None:
            with scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(node.run)
                    nursery.start_soon(follow_changes, view, [CONFSERV], startup, node)
                    task_status.started(0)

        await self.nursery.start(run)
        return node

    def crash(self, app_name: str) -> None:
        """Kill the application: its tasks stop and its links close at once."""
        self.scopes[app_name].cancel()
        self.net.close_all([app_name])

    def hang(self, app_name: str) -> None:
        """Freeze the application as seen from outside: nothing in, nothing out."""
        self.net.hang(app_name)

    def resume(self, app_name: str) -> None:
        self.net.hang(app_name, resume=True)

    def stall_store(self, resume: bool = False) -> None:
        """The session store stops answering (or answers again): a store outage."""
        if resume:
            self.store.resume()
        else:
            self.store.stall()

    def partition(self, a: str, b: str, heal: bool = False) -> None:
        self.net.partition(a, b, heal=heal)

    def mode(self, app_name: str) -> str:
        return self.nodes[app_name].mode

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> float:
        """Wait (virtual time) until ``predicate()`` holds; returns the time it took."""
        start = trio.current_time()
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)
        return trio.current_time() - start

    async def client(self) -> Connection:
        """A client connection to the T-Server (for making calls and reading the ledger)."""
        if self._client is None or self._client.closed.is_set():
            tserver = next(
                a for a in self.db.applications.values() if a.type in ("SIPServer", "TServer")
            )
            self._client = await open_connection(
                self.net.for_app("sim-driver"),
                tserver.address,
                tserver.port,
                app="sim-driver",
                app_type="Driver",
            )
            self.nursery.start_soon(self._client.serve)
        return self._client

    async def request(self, method: str, **params: Any) -> Any:
        conn = await self.client()
        return await conn.request(method, params)

    async def set_option(self, obj: str, section: str, key: str, value: str) -> None:
        """A live change through the Configuration Server, as ``orsim config set`` does."""
        from orsim.confserv.client import ConfServClient

        client = await ConfServClient.connect(
            self.net.for_app("sim-admin"), [CONFSERV], app="sim-admin", app_type="Admin"
        )
        async with client:
            await client.set_option(obj, section, key, value)

    async def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("ledger")
        return result


@asynccontextmanager
async def open_sim_cluster(
    db: ConfigDatabase, start_nodes: bool = True
) -> AsyncIterator[SimCluster]:
    """Run the Configuration Server, T-Server, URS(es) and (optionally) every ORS app."""
    from orsim.confserv import serve_confserv
    from orsim.tserver import serve_tserver
    from orsim.urs import serve_urs

    net = MemoryNetwork()
    with tempfile.TemporaryDirectory() as state:
        async with trio.open_nursery() as nursery:
            sim = SimCluster(db, net, MemoryStore(), nursery)
            await nursery.start(
                lambda task_status: serve_confserv(
                    net.for_app("confserv"),
                    db,
                    CONFSERV[0],
                    CONFSERV[1],
                    Path(state),
                    task_status=task_status,
                )
            )
            for app in db.applications.values():
                if app.type in ("SIPServer", "TServer"):
                    await nursery.start(
                        lambda task_status, a=app: serve_tserver(
                            net.for_app(a.name), a, task_status=task_status
                        )
                    )
                elif app.type == "RoutingServer":
                    await nursery.start(
                        lambda task_status, a=app: serve_urs(
                            net.for_app(a.name), a, task_status=task_status
                        )
                    )
            if start_nodes:
                # Primaries first, as a launcher would, so the configured roles hold.
                apps = sorted(sim.ors_apps, key=lambda n: db.applications[n].is_backup)
                for name in apps:
                    await sim.start(name)
            try:
                yield sim
            finally:
                nursery.cancel_scope.cancel()
