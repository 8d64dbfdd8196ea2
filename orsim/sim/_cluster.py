"""A whole orsim cluster inside one trio run, over a MemoryNetwork (``SimCluster``).

The same server code that runs as separate processes (Configuration Server, T-Server,
URS, ORS nodes) is wired together here through ``orsim.wire.MemoryNetwork`` and one
shared ``MemoryStore`` (the session store server of a SQLite topology, app ``store``),
so a cluster runs under ``trio.testing.MockClock`` in virtual time: fast, and
deterministic for a given seed (``orsim.sim.run_seeded``).

Every application runs in its own cancel scope, as its own "process". The faults:

``crash(app)``          SIGKILL: its tasks stop and its links close at once (the store:
                        an outage until it is started again).
``freeze(app)``         SIGSTOP: it reads nothing and nothing it sends arrives (bytes are
                        kept, buffers are bounded, so its senders block as over TCP) and
                        its store operations wait; ``thaw(app)`` is SIGCONT.
``hang(app)``           a cut cable: bytes to and from it are dropped; ``resume(app)``.
``partition(a, b)``     silently drop the bytes between two applications (``heal=True``).
``delay(a, b, ms)``     deliver the bytes between two applications ``ms`` late, in order.
``stall_store()``       the session store stops answering (``resume=True``: it answers).
``set_option(...)``     a live change through the Configuration Server.

A frozen application's own timers still run in the simulation (a real SIGSTOP stops
them too); what the rest of the cluster sees is the same: silence, then everything it
had sent once it is thawed. A store operation they would begin begins at the thaw.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TypeVar

import attrs
import trio

from orsim.config import TSERVER_TYPES, Application, ConfigDatabase
from orsim.confserv import APP_NAME, APP_TYPE, ConfServ, ConfServClient
from orsim.node import ModeChanged, OrsNode, follow_changes, read_startup
from orsim.sim._trace import Trace
from orsim.store import MemoryStore, Session, StoreError
from orsim.tserver import Ledger, LedgerCounts, TServer
from orsim.urs import UrsServer
from orsim.wire import Call, Connection, Json, MemoryNetwork, open_connection, serve_app

T = TypeVar("T")
A = TypeVar("A")

#: Where the Configuration Server listens in a simulation.
CONFSERV = ("confserv.sim", 2020)
CONFSERV_APP = "confserv"
#: The wall-clock time (s since the epoch) that virtual time 0 stands for in a simulation
#: (2023-11-14T22:13:20Z): ledger times and ``mode_since`` are ``SIM_EPOCH + virtual``.
SIM_EPOCH = 1_700_000_000.0
#: The process ids a simulation reports: 1000, 1001, ... one per start (never real pids).
FIRST_PID = 1000
#: Name the driver (load, ledger) and the administrator (options) use on the network.
DRIVER_APP = "sim-driver"
ADMIN_APP = "sim-admin"


def sim_wall() -> float:
    """The simulated wall clock: ``SIM_EPOCH`` plus the virtual time."""
    return SIM_EPOCH + trio.current_time()


def run_id_of(seed: int) -> str:
    """The T-Server run id of a simulation with ``seed`` (in its call ids)."""
    return f"s{random.Random(seed).getrandbits(32):08x}"


def _trace_mode_changes(node: OrsNode, trace: Trace | None) -> None:
    """Record the node's role changes in the trace, in simulated wall time."""
    if trace is None:
        return

    def changed(command: ModeChanged) -> None:
        trace.record(
            "mode",
            app=node.settings.app,
            old=command.old.value,
            new=command.new.value,
            mode=command.new.mode,
            epoch=command.epoch,
            reason=command.reason,
        )

    node.on_mode_change = changed


@attrs.define(eq=False)
class _GatedStore:
    """One application's handle on the shared store: while the application is frozen,
    its operations wait (a stopped process does not write)."""

    store: MemoryStore
    sim: SimCluster
    app: str

    def answers_at_once(self) -> bool:
        """Whether an operation begun now ends without waiting (see ``MemoryStore``)."""
        return not self.sim.net.frozen(self.app) and self.store.answers_at_once()

    async def _gated(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op()``, begun once the application is not frozen.

        A stopped process begins nothing: an operation a frozen application's timer
        (which still runs here) would begin is begun at the thaw, with the caller's
        deadline counted from there. Counted from the freeze, the deadline ran out at
        the thaw and degraded a store that was answering (a real process begins the
        operation after the thaw, and finds the store answering): calls then went on
        without the store's word, and `orsim search` found calls routed twice and lost
        that way (seed 436).
        """
        sim, app = self.sim, self.app
        if not sim.net.frozen(app):
            return await op()  # its own checkpoint; a simulation pays a round for each
        left = trio.current_effective_deadline() - trio.current_time()
        with trio.CancelScope(shield=True):
            await sim.net.wait_thawed(app)
        if sim.running(app):
            # Shielded from the caller's deadline, not from a crash: a dead process's
            # operation never reaches the store.
            ops = sim.gated_ops.setdefault(app, set())
            with trio.CancelScope(shield=True) as scope:
                ops.add(scope)
                try:
                    with trio.move_on_after(left):
                        return await op()
                finally:
                    ops.discard(scope)
        # Crashed, or not answered within the deadline counted from the thaw: the
        # cancellation (the crash's, or the caller's deadline, which ran out earlier)
        # is seen here.
        await trio.lowlevel.checkpoint()
        # (A caller outside the application's own tasks, a test's, is not cancelled.)
        raise StoreError(f"{app} crashed before its store operation ended")

    async def current_epoch(self, node_id: int) -> int:
        return await self._gated(partial(self.store.current_epoch, node_id))

    async def claim_epoch(self, node_id: int, expected: int, new: int) -> bool:
        return await self._gated(partial(self.store.claim_epoch, node_id, expected, new))

    async def put_session(self, session: Session) -> None:
        await self._gated(partial(self.store.put_session, session))

    async def create_session(self, session: Session) -> bool:
        made = await self._gated(partial(self.store.create_session, session))
        if made:
            # A creation is its Node and its time: the Node that began the call
            # claiming it again under a newer epoch (its route refused as stale, see
            # ``NodeCore._route_answered``) writes the same creation again, not a new one.
            creation = (session.node_id, session.created_at)
            first = self.sim.created.setdefault(session.call_id, creation)
            if first != creation:
                self.sim.created_twice.append(session.call_id)
        return made

    async def adopt_session(self, session: Session, from_node: int, from_epoch: int) -> bool:
        moved = await self._gated(partial(self.store.adopt_session, session, from_node, from_epoch))
        if moved:
            # The creation is the adopter's now: claiming the call again under a newer
            # epoch, it writes the same creation, as the Node that began it would. Taken
            # for a second creation, it failed runs where nothing was created twice.
            self.sim.created[session.call_id] = (session.node_id, session.created_at)
        return moved

    async def delete_session(self, node_id: int, epoch: int, call_id: str) -> None:
        await self._gated(partial(self.store.delete_session, node_id, epoch, call_id))

    async def sessions(self, node_id: int) -> list[Session]:
        return await self._gated(partial(self.store.sessions, node_id))

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class SimCluster:
    """A running in-process cluster and the faults it can suffer (see the module doc)."""

    db: ConfigDatabase
    net: MemoryNetwork
    store: MemoryStore
    nursery: trio.Nursery
    seed: int = 0
    trace: Trace = attrs.Factory(Trace)
    #: Names the launcher gives the store servers (``store``): they map to ``store``.
    store_apps: tuple[str, ...] = ()
    #: app -> the cancel scope of its current run ("process")
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)
    #: Store operations a frozen application began, now running past the thaw, shielded
    #: from their caller's deadline (``_GatedStore._gated``): a crash cancels them.
    gated_ops: dict[str, set[trio.CancelScope]] = attrs.Factory(dict)
    nodes: dict[str, OrsNode] = attrs.Factory(dict)
    tservers: dict[str, TServer] = attrs.Factory(dict)
    #: app -> running | stopped | exited (as the launcher's ``process`` field)
    processes: dict[str, str] = attrs.Factory(dict)
    #: app -> the simulated pid of its current run
    pids: dict[str, int] = attrs.Factory(dict)
    confserv: ConfServ | None = None
    #: calls whose session was created (by anyone): call -> (Node, creation time), the
    #: adopter's once adopted; and those created a second time, as another creation
    created: dict[str, tuple[int, float]] = attrs.Factory(dict)
    created_twice: list[str] = attrs.Factory(list)
    _next_pid: int = FIRST_PID
    _client: Connection | None = None

    # -- what there is ---------------------------------------------------------------

    @property
    def ors_apps(self) -> list[str]:
        return sorted(
            a.name for a in self.db.applications.values() if a.type == "OrchestrationServer"
        )

    @property
    def tserver(self) -> TServer | None:
        """The acting T-Server's ``TServer`` object (the primary of a redundant pair,
        else the first running), None while none runs."""
        running = self.tservers.values()
        return next((t for t in running if t.mode == "primary"), next(iter(running), None))

    @property
    def run_id(self) -> str:
        return run_id_of(self.seed)

    def app_type(self, app: str) -> str:
        if app == CONFSERV_APP:
            return "ConfigurationServer"
        if app in self.store_apps:
            return "SessionStore"
        found = self.db.applications.get(app)
        if found is None:
            raise KeyError(app)
        return found.type

    def cluster_of(self, app_name: str) -> str | None:
        app = self.db.applications[app_name]
        for txn in self.db.transactions.values():
            if app.primary_name in txn.cluster_members:
                return txn.name
        return None

    def running(self, app: str) -> bool:
        """True while ``app``'s process runs (not crashed; frozen counts as running)."""
        return self.processes.get(app, "exited") != "exited"

    def release_frozen(self) -> None:
        """Let every frozen application go (untraced): a simulation ending with some
        frozen must not leave their store operations waiting, shielded, for a thaw, or
        running past it on a stalled store."""
        for app in list(self.processes):
            if self.net.frozen(app):
                self.net.freeze(app, resume=True)
        for ops in self.gated_ops.values():
            for op in ops:
                op.cancel()

    # -- starting ----------------------------------------------------------------------

    async def start(self, app_name: str) -> ConfServ | TServer | UrsServer | OrsNode | None:
        """Start (or restart) one application and wait until it serves; for an ORS
        application, until it has a role (returns its ``OrsNode``)."""
        kind = self.app_type(app_name)
        self.trace.record("start", app=app_name)
        if kind == "SessionStore":
            self._ran(app_name)
            self.store.resume()
            return None
        if kind == "ConfigurationServer":
            return await self._start_confserv()
        if kind in TSERVER_TYPES or kind == "RoutingServer":
            return await self._start_server(app_name, kind)
        if kind == "OrchestrationServer":
            return await self._start_node(app_name)
        raise ValueError(f"{app_name} ({kind}) cannot run in a simulation")

    def _ran(self, app: str) -> None:
        self.processes[app] = "running"
        self.pids[app] = self._next_pid
        self._next_pid += 1
        self.net.freeze(app, resume=True)

    async def _spawn(self, app: str, body: Callable[[trio.TaskStatus[T]], Awaitable[None]]) -> T:
        """Run ``body`` as ``app``'s process in a scope of its own; returns what it started."""
        if self.running(app):
            raise RuntimeError(f"{app} is already running")
        scope = trio.CancelScope()
        self.scopes[app] = scope
        self._ran(app)

        async def run(task_status: trio.TaskStatus[T]) -> None:
            with scope:
                await body(task_status)
            if self.scopes.get(app) is scope and self.processes.get(app) != "exited":
                self.processes[app] = "exited"

        try:
            result: T = await self.nursery.start(run)
        except BaseException:
            self.processes[app] = "exited"
            raise
        self.trace.record("ready", app=app)
        return result

    async def _start_confserv(self) -> ConfServ:
        # Live changes survive a restart, as the real server's journal keeps them.
        db = self.db if self.confserv is None else self.confserv.db
        server = ConfServ(db, None)
        self.confserv = server
        view = self.net.for_app(CONFSERV_APP)

        async def body(task_status: trio.TaskStatus[int]) -> None:
            await serve_app(
                view, CONFSERV[0], CONFSERV[1], app=APP_NAME, app_type=APP_TYPE,
                handler=server.handle, on_connect=server.on_connect,
                on_disconnect=server.on_disconnect, task_status=task_status,
            )  # fmt: skip

        await self._spawn(CONFSERV_APP, body)
        return server

    async def _start_server(self, app_name: str, kind: str) -> TServer | UrsServer:
        """A T-Server or URS: read its Application from the Configuration Server, serve
        it and apply live changes, as ``orsim tserver``/``orsim urs`` do."""
        view = self.net.for_app(app_name)

        async def body(task_status: trio.TaskStatus[TServer | UrsServer]) -> None:
            client = await ConfServClient.connect(
                view, [CONFSERV], app=app_name, app_type=kind, timeout=10
            )
            async with client, trio.open_nursery() as nursery:
                app: Application = await client.get_application(app_name)
                twin_name = app.backup or app.primary
                twin = await client.get_application(twin_name) if twin_name else None
                server: TServer | UrsServer
                if kind == "RoutingServer":
                    server = UrsServer.from_application(app)
                    await nursery.start(partial(server.serve, view))
                else:
                    server = self.tservers[app_name] = TServer.from_application(app, twin)
                    await nursery.start(
                        partial(server.serve, view, run_id=self.run_id, wall_at_zero=SIM_EPOCH)
                    )
                task_status.started(server)
                async for change in client.changes:
                    if change.kind == "application" and change.object == app_name:
                        server.apply_options(change.options)
                await trio.sleep_forever()  # keep serving without live changes

        return await self._spawn(app_name, body)

    async def _start_node(self, app_name: str) -> OrsNode:
        # The new process answers nothing until its node is built: its status is "down"
        # meanwhile, as a real process's is before it listens, not what the node it
        # replaces last said (found by `orsim search`, seed 151: a restarting primary
        # read its Application while its dead predecessor still said "primary", beside
        # the backup that had taken over: two primaries in consecutive samples).
        self.nodes.pop(app_name, None)
        view = self.net.for_app(app_name)

        async def body(task_status: trio.TaskStatus[OrsNode]) -> None:
            client = await ConfServClient.connect(
                view, [CONFSERV], app=app_name, app_type="OrchestrationServer", timeout=10
            )
            async with client:
                startup = await read_startup(client, app_name, self.cluster_of(app_name))
            store = _GatedStore(self.store, self, app_name)
            node = OrsNode(startup.settings, view, store, wall=sim_wall)
            _trace_mode_changes(node, self.trace)
            node.mode_since = sim_wall()
            self.nodes[app_name] = node
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                nursery.start_soon(follow_changes, view, [CONFSERV], startup, node)
                task_status.started(node)

        return await self._spawn(app_name, body)

    # -- faults ------------------------------------------------------------------------

    def crash(self, app_name: str) -> None:
        """Kill the application: its tasks stop and its links close at once."""
        self.trace.record("crash", app=app_name)
        self.processes[app_name] = "exited"
        if app_name in self.store_apps:
            self.store.stall()
            return
        scope = self.scopes.get(app_name)
        if scope is not None:
            scope.cancel()
        for op in self.gated_ops.pop(app_name, ()):
            op.cancel()
        self.tservers.pop(app_name, None)
        self.net.freeze(app_name, resume=True)
        self.net.close_all([app_name])

    def freeze(self, app_name: str) -> None:
        """SIGSTOP: the application stops reading and its output waits (see the module)."""
        self.trace.record("freeze", app=app_name)
        if self.running(app_name):
            self.processes[app_name] = "stopped"
        if app_name in self.store_apps:
            self.store.stall()
            return
        self.net.freeze(app_name)

    def thaw(self, app_name: str) -> None:
        """SIGCONT: a frozen application goes on."""
        self.trace.record("thaw", app=app_name)
        if self.processes.get(app_name) == "stopped":
            self.processes[app_name] = "running"
        if app_name in self.store_apps:
            if self.running(app_name):
                self.store.resume()
            return
        self.net.freeze(app_name, resume=True)

    def hang(self, app_name: str) -> None:
        """Cut the application's cable: bytes to and from it are dropped."""
        self.trace.record("hang", app=app_name)
        self.net.hang(app_name)

    def resume(self, app_name: str) -> None:
        """Undo ``hang`` (and ``freeze``)."""
        self.trace.record("resume", app=app_name)
        self.net.hang(app_name, resume=True)
        if self.net.frozen(app_name):
            self.thaw(app_name)

    def stall_store(self, resume: bool = False) -> None:
        """The session store stops answering (or answers again): a store outage."""
        self.trace.record("store", stalled=not resume)
        if resume:
            self.store.resume()
        else:
            self.store.stall()

    def partition(self, a: str, b: str, heal: bool = False) -> None:
        self.trace.record("heal" if heal else "partition", a=a, b=b)
        self.net.partition(a, b, heal=heal)

    def delay(self, a: str, b: str, ms: float) -> None:
        """Deliver the bytes between ``a`` and ``b`` ``ms`` milliseconds late (0: no delay)."""
        self.trace.record("delay", a=a, b=b, ms=ms)
        self.net.delay(a, b, ms / 1000.0)

    # -- observing and driving ---------------------------------------------------------

    def mode(self, app_name: str) -> str:
        return self.nodes[app_name].mode

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> float:
        """Wait (virtual time) until ``predicate()`` holds; returns the time it took."""
        start = trio.current_time()
        with trio.fail_after(timeout):
            while not predicate():
                await trio.sleep(0.01)
        return trio.current_time() - start

    def tserver_app(self) -> Application:
        return next(a for a in self.db.applications.values() if a.type in TSERVER_TYPES)

    async def client(self) -> Connection:
        """A client connection to the T-Server (for making calls and reading the ledger)."""
        if self._client is None or self._client.closed.is_set():
            acting = self.tserver
            tserver = self.tserver_app() if acting is None else acting.app
            self._client = await open_connection(
                self.net.for_app(DRIVER_APP),
                tserver.address,
                tserver.port,
                app=DRIVER_APP,
                app_type="Driver",
            )
            self.nursery.start_soon(self._client.serve)
        return self._client

    async def request(self, method: str, **params: object) -> Json:
        conn = await self.client()
        return await conn.request(method, params)

    async def call(self, message: Call[A]) -> A:
        """``message`` to the T-Server, as the driver; its typed answer."""
        return await (await self.client()).call(message)

    async def set_option(self, obj: str, section: str, key: str, value: str) -> None:
        """A live change through the Configuration Server, as ``orsim config set`` does."""
        from orsim.confserv.client import ConfServClient

        self.trace.record("set_option", object=obj, section=section, key=key, value=value)
        client = await ConfServClient.connect(
            self.net.for_app(ADMIN_APP), [CONFSERV], app=ADMIN_APP, app_type="Admin"
        )
        async with client:
            await client.set_option(obj, section, key, value)

    async def ledger(self) -> LedgerCounts:
        """The T-Server's ledger counts."""
        conn = await self.client()
        return (await conn.call(Ledger())).counts


def start_order(db: ConfigDatabase) -> list[list[str]]:
    """The start waves of ``db``'s applications, as the launcher's: servers (T-Servers,
    URSes), then the ORS applications (primaries first, so the configured roles hold)."""
    servers = sorted(
        a.name
        for a in db.applications.values()
        if a.type in TSERVER_TYPES or a.type == "RoutingServer"
    )
    ors = sorted(
        (a for a in db.applications.values() if a.type == "OrchestrationServer"),
        key=lambda a: (a.is_backup, a.name),
    )
    return [servers, [a.name for a in ors]]


@asynccontextmanager
async def open_sim_cluster(
    db: ConfigDatabase,
    start_nodes: bool = True,
    *,
    seed: int = 0,
    trace: Trace | None = None,
    store_apps: tuple[str, ...] = (),
    network: MemoryNetwork | None = None,
) -> AsyncIterator[SimCluster]:
    """Run the Configuration Server, T-Server(s), URS(es) and (optionally) every ORS app.

    Args:
        seed: the T-Server's call ids derive from it (seed trio's scheduler with
            ``orsim.sim.run_seeded`` for a fully deterministic run).
        trace: where events are recorded (a fresh ``Trace`` if None).
        store_apps: launcher names of the store server (``store``) to expose as apps.
    """
    net = network if network is not None else MemoryNetwork()
    async with trio.open_nursery() as nursery:
        sim = SimCluster(
            db, net, MemoryStore(), nursery, seed=seed,
            trace=trace if trace is not None else Trace(), store_apps=store_apps,
        )  # fmt: skip
        for app in store_apps:
            sim._ran(app)
        await sim.start(CONFSERV_APP)
        servers, nodes = start_order(db)
        for name in servers:
            await sim.start(name)
        if start_nodes:
            for name in nodes:
                await sim.start(name)
        try:
            yield sim
        finally:
            sim.release_frozen()
            nursery.cancel_scope.cancel()
