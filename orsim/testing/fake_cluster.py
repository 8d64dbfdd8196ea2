"""A fake of ``orsim.cluster.ClusterHandle``: the same async verbs, no processes.

Made for testing code that drives a cluster (the scenario runner, pytest fixtures, your
own tools) fast and deterministically, under ``trio.testing.MockClock``. It is a model,
not a simulator of ORS: every application's mode is a step function of time, changed by
the verbs (a killed or stopped primary's backup becomes primary ``failover_delay`` later
with the next epoch); calls arrive at the load's rate, go to Nodes in turn and are routed
by the Node's primary ``route_latency`` after they arrive (or as soon as it has one), by
the next Node after ``watch_timeout`` if the Node has none, and are lost after
``router_timeout``. Knobs inject the bugs a scenario must catch: ``duplicate_every``,
``split_brain`` (an old primary that comes back keeps acting as primary) and a long
``failover_delay``.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

import attrs
import trio

from orsim.cluster import Answer, AppEntry, Manifest, cluster_status, poll_status
from orsim.config import ConfigDatabase, load_database
from orsim.errors import ClusterError
from orsim.node import SwitchedOver
from orsim.tserver import CallRecord, LedgerCounts, LedgerReport

if TYPE_CHECKING:
    from orsim.cluster import ClusterStatus

CONFSERV = "confserv"


class Knobs(TypedDict, total=False):
    """What ``FakeCluster.up`` takes beyond the launcher's arguments (see the class)."""

    clock: Callable[[], float]
    failover_delay: float
    start_delay: float
    route_latency: float
    watch_timeout: float
    router_timeout: float
    duplicate_every: int
    split_brain: bool


@attrs.define
class _Lane:
    """One application's mode over time: sorted change points."""

    times: list[float] = attrs.Factory(list)
    modes: list[tuple[str, int]] = attrs.Factory(list)  # (mode, epoch)

    def at(self, t: float) -> tuple[str, int]:
        i = bisect.bisect_right(self.times, t) - 1
        return self.modes[i] if i >= 0 else ("down", 0)

    def set(self, t: float, mode: str, epoch: int) -> None:
        """From ``t`` on (dropping any change planned later than ``t``)."""
        keep = bisect.bisect_left(self.times, t)
        del self.times[keep:], self.modes[keep:]
        self.times.append(t)
        self.modes.append((mode, epoch))

    def since(self, t: float) -> float | None:
        """When the mode it has at ``t`` began (None: it has none yet)."""
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return None
        mode = self.modes[i][0]
        while i > 0 and self.modes[i - 1][0] == mode:
            i -= 1
        return self.times[i]

    def next_primary(self, t: float) -> float | None:
        """The first time at or after ``t`` this application is primary."""
        if self.at(t)[0] == "primary":
            return t
        for when, (mode, _epoch) in zip(self.times, self.modes, strict=True):
            if when > t and mode == "primary":
                return when
        return None


@attrs.define(eq=False)
class FakeCluster:
    """A pretend cluster of ``db``'s applications (plus ``confserv``), driven by ``clock``."""

    db: ConfigDatabase
    clock: Callable[[], float] = trio.current_time
    failover_delay: float = 1.0
    start_delay: float = 0.3
    route_latency: float = 0.02
    watch_timeout: float = 0.5
    router_timeout: float = 10.0
    duplicate_every: int = 0
    split_brain: bool = False
    #: Every verb called, in order, as (verb, args...) for assertions.
    calls: list[tuple[object, ...]] = attrs.Factory(list)
    is_down: bool = False
    _lanes: dict[str, _Lane] = attrs.Factory(dict)
    _process: dict[str, str] = attrs.Factory(dict)
    _loads: list[list[float]] = attrs.Factory(list)  # [start, end (inf: open), rate]
    _partitions: set[frozenset[str]] = attrs.Factory(set)
    options: dict[tuple[str, str, str], str] = attrs.Factory(dict)

    @classmethod
    async def up(
        cls,
        config_path: str | os.PathLike[str],
        run_dir: str | os.PathLike[str] | None = None,
        ports: str = "auto",
        progress: Callable[[str, str], None] | None = None,
        **knobs: Unpack[Knobs],
    ) -> FakeCluster:
        """Like ``ClusterHandle.up``: every application up, primaries primary."""
        db = await trio.to_thread.run_sync(load_database, Path(config_path))
        cluster = cls(db, **knobs)
        if run_dir is not None:
            await trio.Path(run_dir).mkdir(parents=True, exist_ok=True)
        now = cluster.clock()
        for app in cluster.apps:
            cluster._process[app] = "running"
            cluster._lanes[app] = _Lane()
            cluster._lanes[app].set(now, "backup" if cluster._is_backup(app) else "primary", 1)
            if progress is not None:
                progress(app, "ready")
        cluster.calls.append(("up", str(config_path)))
        return cluster

    @classmethod
    def factory(cls, **knobs: Unpack[Knobs]) -> Callable[[Path, Path], Awaitable[FakeCluster]]:
        """An ``up`` with knobs set, in the shape the scenario runner takes."""

        async def up(config: Path, run_dir: Path) -> FakeCluster:
            return await cls.up(config, run_dir, **knobs)

        return up

    # --- topology ------------------------------------------------------------------------

    @property
    def apps(self) -> list[str]:
        return [CONFSERV, *self.db.applications]

    def _is_backup(self, app: str) -> bool:
        found = self.db.applications.get(app)
        return found is not None and found.is_backup

    def _node_apps(self, app: str) -> list[str]:
        found = self.db.applications.get(app)
        if found is None or found.type != "OrchestrationServer":
            return [app]
        primary = self.db.applications[found.primary_name]
        return [primary.name] + ([primary.backup] if primary.backup else [])

    @property
    def nodes(self) -> list[str]:
        return sorted(
            a.name
            for a in self.db.applications.values()
            if a.type == "OrchestrationServer" and not a.is_backup
        )

    def _check(self, app: str) -> None:
        if app not in self._lanes:
            raise ClusterError(f"no application {app!r} in this cluster")

    def mode(self, app: str, t: float | None = None) -> str:
        return self._lanes[app].at(self.clock() if t is None else t)[0]

    def _epoch(self, app: str, t: float) -> int:
        return max(self._lanes[a].at(t)[1] for a in self._node_apps(app))

    # --- faults --------------------------------------------------------------------------

    async def kill(self, app: str, signal: str = "KILL") -> None:
        self._check(app)
        self.calls.append(("kill", app, signal))
        now = self.clock()
        lane = self._lanes[app]
        if signal == "CONT":
            if self._process[app] != "stopped":
                raise ClusterError(f"{app} is not stopped")
            self._process[app] = "running"
            others = [a for a in self._node_apps(app) if a != app]
            taken = any(self._lanes[o].next_primary(now) is not None for o in others)
            resumed = "primary" if self.split_brain or not taken else "backup"
            # A process that was frozen still holds the epoch it had; it learns better
            # only when fenced (which the split_brain knob pretends never happens).
            lane.set(now, resumed, lane.at(now)[1])
            return
        if self._process[app] != "running":
            raise ClusterError(f"{app} is not running")
        was_primary = lane.at(now)[0] == "primary"
        self._process[app] = "stopped" if signal == "STOP" else "exited"
        lane.set(now, "down", lane.at(now)[1])
        if was_primary:
            self._take_over(app, now)

    def _take_over(self, lost: str, now: float) -> None:
        for other in self._node_apps(lost):
            if other != lost and self._process.get(other) == "running":
                epoch = self._epoch(lost, now) + 1
                self._lanes[other].set(now + self.failover_delay, "primary", epoch)
                return

    async def start(self, app: str) -> None:
        self._check(app)
        self.calls.append(("start", app))
        if self._process[app] == "running":
            raise ClusterError(f"{app} is already running")
        if self._process[app] == "stopped":
            raise ClusterError(f"{app} is stopped, not dead")
        now = self.clock()
        self._process[app] = "running"
        others = [a for a in self._node_apps(app) if a != app]
        taken = any(self._lanes[o].next_primary(now) is not None for o in others)
        lane = self._lanes[app]
        lane.set(now, "starting", lane.at(now)[1])
        ready = now + self.start_delay
        if app in self.db.applications and self.db.applications[app].type == "OrchestrationServer":
            mode, epoch = ("backup", 0) if taken else ("primary", self._epoch(app, now) + 1)
        else:
            mode, epoch = "primary", 1
        lane.set(ready, mode, epoch)
        await trio.sleep_until(ready)

    async def switchover(self, node: str) -> SwitchedOver:
        self.calls.append(("switchover", node))
        apps = self._node_apps(node)
        now = self.clock()
        primary = next((a for a in apps if self.mode(a, now) == "primary"), None)
        backup = next((a for a in apps if self.mode(a, now) == "backup"), None)
        if primary is None or backup is None:
            raise ClusterError(f"Node {node} has no primary/backup pair to switch over")
        epoch = self._epoch(node, now) + 1
        self._lanes[primary].set(now + 0.05, "backup", epoch - 1)
        self._lanes[backup].set(now + 0.05, "primary", epoch)
        return SwitchedOver(backup)

    async def partition(self, a: str, b: str, heal: bool = False) -> None:
        self._check(a)
        self._check(b)
        self.calls.append(("heal" if heal else "partition", a, b))
        (self._partitions.discard if heal else self._partitions.add)(frozenset((a, b)))

    async def isolate(self, host: str, heal: bool = False) -> None:
        self.calls.append(("heal" if heal else "isolate", host))

    async def delay(self, a: str, b: str, ms: float) -> None:
        self._check(a)
        self._check(b)
        self.calls.append(("delay", a, b, ms))

    async def set_option(self, object: str, section: str, key: str, value: str) -> None:
        self.calls.append(("set_option", object, section, key, value))
        self.options[(object, section, key)] = value

    # --- load and ledger -----------------------------------------------------------------

    async def load(self, rate: float, duration: float | None = None) -> None:
        self.calls.append(("load", rate, duration))
        now = self.clock()
        self._close_loads(now)
        self._loads.append([now, now + duration if duration else math.inf, rate])

    async def stop_load(self) -> None:
        self.calls.append(("stop_load",))
        self._close_loads(self.clock())

    def _close_loads(self, now: float) -> None:
        for load in self._loads:
            load[1] = min(load[1], now)

    def _route(self, node: str, created: float) -> tuple[float, str, int] | None:
        """(routed_at, app, epoch) of a call the Node is assigned, if anyone routes it."""
        deadline = created + self.router_timeout
        best: tuple[float, str, int] | None = None
        for app in self._node_apps(node):
            when = self._lanes[app].next_primary(created + self.route_latency)
            if when is not None and when <= deadline and (best is None or when < best[0]):
                best = (when, app, self._lanes[app].at(when)[1])
        if best is not None:
            return best
        nodes = self.nodes
        reserved = nodes[(nodes.index(node) + 1) % len(nodes)]
        if reserved == node:
            return None
        for app in self._node_apps(reserved):
            when = self._lanes[app].next_primary(created + self.watch_timeout)
            if when is not None and when <= deadline:
                return when, app, self._lanes[app].at(when)[1]
        return None

    async def ledger(self, records: bool = False) -> LedgerReport:
        await trio.lowlevel.checkpoint()
        now = self.clock()
        rows: list[CallRecord] = []
        nodes = self.nodes
        for start, end, rate in self._loads:
            count = math.ceil((min(end, now) - start) * rate)
            for k in range(max(count, 0)):
                created = start + k / rate
                node = nodes[len(rows) % len(nodes)]
                rows.append(self._record(len(rows) + 1, node, created, now))
        routed = [r for r in rows if r.state == "routed"]
        by_app: dict[str, int] = {}
        for r in routed:
            if r.app is not None:
                by_app[r.app] = by_app.get(r.app, 0) + 1
        counts = LedgerCounts(
            created=len(rows),
            routed=len(routed),
            lost=sum(1 for r in rows if r.state == "lost"),
            default_routed=0,
            duplicates=len(routed) // self.duplicate_every if self.duplicate_every else 0,
            resent=0,
            stale=0,
            unknown=0,
            late=0,
            in_flight=sum(1 for r in rows if r.state == "in_flight"),
            by_app=by_app,
            by_node={},
            latency_p50_ms=None,
            latency_p99_ms=None,
        )
        return LedgerReport(counts, tuple(rows), len(rows)) if records else LedgerReport(counts)

    def _record(self, number: int, node: str, created: float, now: float) -> CallRecord:
        """Call ``number``, made at ``created`` on ``node``, as the ledger has it at ``now``."""
        route = self._route(node, created)
        deadline = created + self.router_timeout
        call = CallRecord(
            call_id=f"call-{number}", dn="5000", created_at=created, deadline=deadline
        )
        if route is not None and route[0] <= now:
            routed_at, app, epoch = route
            node_id = self.db.applications[self._node_apps(app)[0]].dbid
            return attrs.evolve(call, state="routed", routed_at=routed_at, app=app,
                                node_id=node_id, epoch=epoch)  # fmt: skip
        return attrs.evolve(call, state="lost") if deadline <= now else call

    # --- observing -----------------------------------------------------------------------

    async def status(self) -> ClusterStatus:
        """The status as the launcher assembles it, from each application's mode now."""
        now = self.clock()
        entries: list[AppEntry] = []
        answers: dict[str, Answer] = {}
        for app in self.apps:
            found = self.db.applications.get(app)
            mode, epoch = self._lanes[app].at(now)
            app_type = found.type if found is not None else "ConfigurationServer"
            ors = app_type == "OrchestrationServer"
            node_id = self.db.applications[self._node_apps(app)[0]].dbid if ors else None
            entries.append(
                AppEntry(app=app, type=app_type, host="", public_port=0, private_port=0,
                         tier=0, argv=(), node_id=node_id)
            )  # fmt: skip
            answer: dict[str, object] = {"mode": mode, "epoch": epoch if ors else None}
            if mode != "down":  # a process that is gone says nothing
                answer["mode_since"] = self._lanes[app].since(now)
            answers[app] = answer
        manifest = Manifest(cluster=None, config="", served_config="", run_dir="",
                            confserv_host="", confserv_port=0, proxy_control_port=0,
                            apps=tuple(entries), state="up")  # fmt: skip
        return cluster_status(manifest, answers, {}, self._process, (await self.ledger()).counts)

    async def wait_for(
        self, predicate: Callable[[ClusterStatus], bool], timeout: float
    ) -> ClusterStatus:
        return await poll_status(self.status, predicate, timeout, 0.05)

    async def down(self) -> None:
        self.calls.append(("down",))
        self.is_down = True
        now = self.clock()
        self._close_loads(now)
        for app in self.apps:
            self._process[app] = "exited"
            self._lanes[app].set(now, "down", self._lanes[app].at(now)[1])


__all__ = ["FakeCluster"]
