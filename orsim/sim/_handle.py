"""``SimClusterHandle``: the launcher's verbs (``ClusterHandle``'s) over a simulation.

The scenario runner and the pytest plugin drive a cluster through these verbs; this
backend carries them out on a ``SimCluster`` in the same trio run, and answers
``status()`` with the real launcher's JSON shape (``orsim.cluster._status``), the
session store server (``store``, type ``SessionStore``) included when the topology's
store is SQLite. Signals: KILL crashes the application; TERM stops an ORS application
gracefully (it suspends, drains, hands over, then exits; other applications crash); STOP
freezes it, CONT thaws it. ``start`` models a process start-up of
``start_delay`` virtual seconds (``START_DELAY``) before the application starts; an
ORS application then answers ``status`` as ``down`` until its node is built (as a real
process does before it listens), never with the node of the process it replaces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from orsim.cluster import (
    CONFSERV_APP,
    Answer,
    ClusterStatus,
    Manifest,
    cluster_name,
    cluster_status,
    isolate_sides,
    link_sides,
    node_primary,
    plan_apps,
    poll_status,
    store_app_names,
)
from orsim.config import ConfigDatabase, load_database
from orsim.errors import (
    ClusterError,
    ConnectionLost,
    RequestRefused,
    UnreachableError,
    UsageError,
)
from orsim.node import SwitchedOver, Switchover
from orsim.sim._cluster import CONFSERV, SimCluster, open_sim_cluster
from orsim.sim._invariants import double_primaries, node_names
from orsim.sim._trace import Trace
from orsim.tserver import Generate, LedgerCounts, LedgerReport, StopGenerator
from orsim.wire import Call, Json, open_connection

#: Modelled process start-up time (virtual s) of ``start``: a real ``orsim node`` takes
#: about this long from fork to listening (imports, reading its configuration).
START_DELAY = 0.5
#: Longest a TERM waits for an ORS application's graceful stop before it is cut short
#: (the launcher's ``down`` grace).
STOP_GRACE = 5.0
#: Interval between two ``wait_for`` polls (as the real launcher's).
POLL_INTERVAL = 0.2
#: Longest a request the launcher sends (switchover) may take.
REQUEST_TIMEOUT = 30.0
LAUNCHER_APP = "orsim-cluster"

A = TypeVar("A")


@attrs.define(eq=False)
class SimClusterHandle:
    """A simulated cluster with ``ClusterHandle``'s async verbs.

    Create it with ``await SimClusterHandle.up(config, run_dir, nursery=...)`` inside a
    trio run under ``MockClock(autojump_threshold=0)``, or use ``open_sim_handle``.
    """

    sim: SimCluster
    manifest: Manifest
    start_delay: float = START_DELAY
    _down: trio.Event = attrs.Factory(trio.Event)
    _gone: trio.Event = attrs.Factory(trio.Event)

    @property
    def trace(self) -> Trace:
        return self.sim.trace

    @classmethod
    async def up(
        cls,
        config_path: str | os.PathLike[str],
        run_dir: str | os.PathLike[str] | None = None,
        *,
        nursery: trio.Nursery,
        seed: int = 0,
        start_delay: float = START_DELAY,
        db: ConfigDatabase | None = None,
    ) -> SimClusterHandle:
        """Load the database and run the whole cluster as tasks of ``nursery``.

        Raises:
            ConfigError: the database is broken.
        """
        # Read in the event loop on purpose: a worker thread would let the autojump
        # clock move while it runs, and the run would no longer repeat exactly.
        db, manifest = _prepare(config_path, run_dir, db)
        stores = tuple(store_app_names(db))
        handle: list[SimClusterHandle] = []

        async def run(task_status: trio.TaskStatus[None]) -> None:
            async with open_sim_cluster(db, seed=seed, store_apps=stores) as sim:
                h = cls(sim, attrs.evolve(manifest, state="up"), start_delay)
                handle.append(h)
                task_status.started()
                try:
                    await h._down.wait()
                finally:
                    h._gone.set()

        await nursery.start(run)
        return handle[0]

    # -- observing -----------------------------------------------------------------------

    async def status(self) -> ClusterStatus:
        """The SPEC status object: ``{"cluster", "apps": [...SPEC fields...], "calls"}``."""
        await trio.lowlevel.checkpoint()
        sim = self.sim
        answers: dict[str, Answer | None] = {}
        for entry in self.manifest.apps:
            app = entry.app
            if sim.processes.get(app) != "running":
                answers[app] = None
            elif entry.type == "OrchestrationServer":
                node = sim.nodes.get(app)
                answers[app] = (
                    None if node is None else {**node.status().to_json(), "pid": sim.pids[app]}
                )
            else:
                tserver = sim.tservers.get(app)
                mode = "primary" if entry.primary is None else "backup"  # a URS twin
                answers[app] = {
                    "app": app, "type": entry.type,
                    "mode": mode if tserver is None else tserver.mode, "pid": sim.pids[app],
                }  # fmt: skip
        return cluster_status(
            self.manifest, answers, dict(sim.pids), dict(sim.processes), self._counts_or_none()
        )

    def _counts_or_none(self) -> LedgerCounts | None:
        tserver = self.sim.tserver
        if tserver is None or self.sim.processes.get(tserver.app.name) != "running":
            return None
        return tserver.ledger.counts()

    async def wait_for(
        self, predicate: Callable[[ClusterStatus], bool], timeout: float
    ) -> ClusterStatus:
        """Poll ``status()`` until ``predicate`` holds; returns that status.

        Raises:
            ClusterError: it did not hold within ``timeout`` (virtual) seconds.
        """
        return await poll_status(self.status, predicate, timeout, POLL_INTERVAL)

    async def ledger(self, records: bool = False) -> LedgerReport:
        """The T-Server's call ledger (every record with ``records``)."""
        await trio.lowlevel.checkpoint()
        counts = self._counts_or_none()
        if counts is None:
            raise UnreachableError("the T-Server does not answer 'ledger'")
        if not records:
            return LedgerReport(counts)
        sim = self.sim
        assert sim.tserver is not None
        every = tuple(sim.tserver.ledger.records())
        # What only a simulation can know exactly (see orsim.sim._invariants).
        return LedgerReport(
            counts,
            every,
            len(every),
            tuple(double_primaries(sim.trace.entries, node_names(sim.db))),
            tuple(sim.created_twice),
        )

    # -- faults --------------------------------------------------------------------------

    async def kill(self, app: str, signal: str = "KILL") -> None:
        """KILL: crash; TERM: graceful stop of an ORS app (else crash); STOP: freeze;
        CONT: thaw (see the module doc)."""
        sig = signal.upper().removeprefix("SIG")
        if sig not in ("KILL", "TERM", "STOP", "CONT"):
            raise UsageError(f"unknown signal {signal!r} (use KILL, TERM, STOP or CONT)")
        self.manifest.entry(app)
        await trio.lowlevel.checkpoint()
        if not self.sim.running(app):
            raise ClusterError(f"{app} is not running")
        self.sim.trace.record("signal", app=app, signal=sig)
        node = self.sim.nodes.get(app)
        if sig == "TERM" and node is not None:
            # Graceful stop, as the node process does on SIGTERM: suspend, drain, hand
            # over, exit; a second TERM would cut it short (here: the down grace).
            node.stop_gracefully()
            with trio.move_on_after(STOP_GRACE):
                await node.exited.wait()
            self.sim.crash(app)
        elif sig in ("KILL", "TERM"):
            self.sim.crash(app)
        elif sig == "STOP":
            self.sim.freeze(app)
        else:
            self.sim.thaw(app)

    async def start(self, app: str) -> None:
        """Start ``app`` again after ``start_delay`` (start-up) and wait until it is ready.

        Raises:
            ClusterError: it is still running (or stopped).
        """
        self.manifest.entry(app)
        state = self.sim.processes.get(app)
        if state == "stopped":
            raise ClusterError(f"{app} is stopped, not dead (resume it with --signal CONT)")
        if state == "running":
            raise ClusterError(f"{app} is already running (pid {self.sim.pids.get(app)})")
        await trio.sleep(self.start_delay)
        await self.sim.start(app)

    async def switchover(self, node: str) -> SwitchedOver:
        """Hand the Node's primary role over to its backup; ``node``: an app or node id."""
        primary = node_primary(self.manifest, await self.status(), node)
        self.sim.trace.record("switchover", app=primary)
        return await self.call(primary, Switchover())

    async def call(self, app: str, message: Call[A]) -> A:
        """``request`` with a typed message: ``message`` to ``app``, its typed answer."""
        return message.answer(await self.request(app, message.METHOD, message.to_json()))

    async def request(self, app: str, method: str, params: dict[str, Json]) -> Json:
        """One request to ``app`` as the launcher sends it (a fresh link, a deadline)."""
        address = self.sim.db.applications[app]
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                conn = await open_connection(
                    self.sim.net.for_app(LAUNCHER_APP), address.address, address.port,
                    app=LAUNCHER_APP, app_type="Launcher",
                )  # fmt: skip
                answer: Json = None
                refused: RequestRefused | None = None
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.serve)
                    try:
                        answer = await conn.request(method, params)
                    except RequestRefused as exc:
                        # Raised past the nursery, it would come out as an ExceptionGroup.
                        refused = exc
                    finally:
                        await conn.aclose()
                        nursery.cancel_scope.cancel()
                if refused is not None:
                    raise refused
                return answer
        except (OSError, trio.TooSlowError, ConnectionLost) as exc:
            raise UnreachableError(f"{app} does not answer {method!r}: {exc}") from exc

    async def partition(self, a: str, b: str, heal: bool = False) -> None:
        """Cut (or, with ``heal``, restore) every link between ``a`` and ``b``: each an
        application or a topology host (every application on it), as the real proxy does."""
        pairs = link_sides(self.manifest, a, b).pairs()
        await trio.lowlevel.checkpoint()
        for x, y in pairs:  # no checkpoint between: a host partition falls as one fault
            self.sim.partition(x, y, heal=heal)

    async def isolate(self, host: str, heal: bool = False) -> None:
        """Cut (or, with ``heal``, restore) every link between ``host``'s applications and
        any application on another host."""
        pairs = isolate_sides(self.manifest, host).pairs()
        await trio.lowlevel.checkpoint()
        for x, y in pairs:
            self.sim.partition(x, y, heal=heal)

    async def delay(self, a: str, b: str, ms: float) -> None:
        """Delay every byte between ``a`` and ``b`` (applications or hosts) by ``ms``
        milliseconds (0: no delay)."""
        pairs = link_sides(self.manifest, a, b).pairs()
        await trio.lowlevel.checkpoint()
        for x, y in pairs:
            self.sim.delay(x, y, ms)

    # -- load and configuration ----------------------------------------------------------

    async def load(self, rate: float, duration: float | None = None) -> None:
        """Have the T-Server create ``rate`` calls per second (for ``duration`` seconds)."""
        self.sim.trace.record("load", rate=rate, duration=duration)
        await self._driver(Generate(rate, duration))

    async def stop_load(self) -> None:
        self.sim.trace.record("stop_load")
        await self._driver(StopGenerator())

    async def _driver(self, message: Call[A]) -> A:
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                return await self.sim.call(message)
        except (OSError, trio.TooSlowError, ConnectionLost) as exc:
            raise UnreachableError(
                f"the T-Server does not answer {message.METHOD!r}: {exc}"
            ) from exc

    async def set_option(self, object: str, section: str, key: str, value: str) -> None:
        """A live option change through the Configuration Server."""
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                await self.sim.set_option(object, section, key, value)
        except (OSError, trio.TooSlowError, ConnectionLost) as exc:
            raise UnreachableError(f"{CONFSERV_APP} does not answer 'set_option': {exc}") from exc

    # -- stopping ------------------------------------------------------------------------

    async def down(self) -> None:
        """Stop every application (idempotent); returns once they are gone."""
        self.sim.trace.record("down")
        self._down.set()
        await self._gone.wait()
        self.manifest = attrs.evolve(self.manifest, state="down")


def _prepare(
    config_path: str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None,
    db: ConfigDatabase | None,
) -> tuple[ConfigDatabase, Manifest]:
    config = Path(config_path).absolute()
    if db is None:
        db = load_database(config)
    return db, sim_manifest(db, config, Path(run_dir or ".orsim/sim"))


def sim_manifest(db: ConfigDatabase, config: Path, run_dir: Path) -> Manifest:
    """The launcher's manifest of ``db`` (apps in start order, the store server included),
    with the simulation's addresses for ports."""
    stores = store_app_names(db)
    public = {a.name: a.port for a in db.applications.values()}
    private = {**public, CONFSERV_APP: CONFSERV[1], **{s: 0 for s in stores}}
    entries = plan_apps(
        db,
        served_config=str(config),
        state_dir="",
        confserv_port=CONFSERV[1],
        public=public,
        private=private,
    )
    return Manifest(
        cluster=cluster_name(entries),
        config=str(config),
        served_config=str(config),
        run_dir=str(run_dir),
        confserv_host=CONFSERV[0],
        confserv_port=CONFSERV[1],
        proxy_control_port=0,
        apps=entries,
    )
