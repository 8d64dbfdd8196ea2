"""``orsim scenario run --store URL``: any scenario with its topology's store replaced.

The launcher serves a copy of the topology with every Node's ``persistence/store`` set to
URL (``ClusterHandle.up(store=...)``), starting a Redis if URL names one on this machine
that is not running. A step that names the topology's own store process (``store``,
the SQLite store server) then acts on the new one (``redis``): the cluster is shown to
the scenario under the old names, so ``stop: store`` freezes the Redis, and the timeline
and report call it ``store`` (its type says ``Redis``). An external Redis (one that
already answers) is no app of the cluster: a step naming the store process then fails,
saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from orsim.cluster import REDIS_TYPE, STORE_TYPE, store_app_names
from orsim.config import load_database
from orsim.errors import ClusterError
from orsim.scenario._runner import ClusterFactory, ClusterLike

if TYPE_CHECKING:
    from orsim.cluster import AppRow, ClusterStatus
    from orsim.tserver import LedgerReport

#: The environment variable that sets ``--store`` for every run.
STORE_ENV = "ORSIM_STORE"


def store_factory(url: str) -> ClusterFactory:
    """A cluster factory that launches each topology with its store replaced by ``url``."""

    async def launch(config: Path, run_dir: Path) -> ClusterLike:
        from orsim.cluster import ClusterHandle

        db = await trio.to_thread.run_sync(load_database, config)
        handle = await ClusterHandle.up(config, run_dir, ports="auto", store=url)
        started = [e.app for e in handle.manifest.apps if e.type in (STORE_TYPE, REDIS_TYPE)]
        olds = store_app_names(db)
        renames: dict[str, str | None] = {
            old: started[i] if i < len(started) else None for i, old in enumerate(olds)
        }
        renames = {old: new for old, new in renames.items() if old != new}
        return RenamedApps(handle, renames, url) if renames else handle

    return launch


@attrs.define(eq=False)
class RenamedApps:
    """A cluster seen with some applications under other names (``renames``: the name a
    scenario uses -> the cluster's own, None where the cluster has none: the store at
    ``url`` runs outside it)."""

    cluster: ClusterLike
    renames: dict[str, str | None]
    url: str = ""

    def _own(self, app: str) -> str:
        if app not in self.renames:
            return app
        own = self.renames[app]
        if own is None:
            raise ClusterError(
                f"{app}: the store is now {self.url} (--store), which runs outside this "
                "cluster; there is no store process to act on"
            )
        return own

    async def status(self) -> ClusterStatus:
        status = await self.cluster.status()
        back = {own: name for name, own in self.renames.items() if own is not None}
        apps: list[AppRow] = [
            {**row, "app": back.get(row["app"], row["app"])} for row in status["apps"]
        ]
        return {**status, "apps": apps}

    async def kill(self, app: str, signal: str = "KILL") -> object:
        return await self.cluster.kill(self._own(app), signal)

    async def start(self, app: str) -> object:
        return await self.cluster.start(self._own(app))

    async def partition(self, a: str, b: str, heal: bool = False) -> object:
        return await self.cluster.partition(self._own(a), self._own(b), heal=heal)

    async def isolate(self, host: str, heal: bool = False) -> object:
        return await self.cluster.isolate(host, heal=heal)

    async def delay(self, a: str, b: str, ms: float) -> object:
        return await self.cluster.delay(self._own(a), self._own(b), ms)

    async def switchover(self, node: str) -> object:
        return await self.cluster.switchover(node)

    async def load(self, rate: float, duration: float | None = None) -> object:
        return await self.cluster.load(rate, duration)

    async def stop_load(self) -> object:
        return await self.cluster.stop_load()

    async def ledger(self, records: bool = False) -> LedgerReport:
        return await self.cluster.ledger(records)

    async def set_option(self, object: str, section: str, key: str, value: str) -> object:
        return await self.cluster.set_option(object, section, key, value)

    async def down(self) -> object:
        return await self.cluster.down()
