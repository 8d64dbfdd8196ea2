"""No process holds the cluster hostage through the session store (real processes).

Each test starts a real cluster with the launcher and breaks the store under load in
one of the ways seen in the field: another process holds the SQLite write lock past the
T-Server's ``router-timeout``; a primary freezes in the middle of a call's store work;
the Redis server goes away and comes back empty. The ledger must show 0 lost and 0
duplicated every time, and persistence must resume by itself.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import TOPOLOGIES, free_ports, node_id, settle, topology_copy

from orsim.cluster import AppRow, ClusterHandle, ClusterStatus
from orsim.errors import OrsimError
from orsim.store import RedisLocation, RedisStore

pytestmark = pytest.mark.slow

ROUTER_TIMEOUT = 3
ORS_APPS = ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B")
EXPECTED_MODES = {"ORS_1": "primary", "ORS_1_B": "backup", "ORS_2": "primary", "ORS_2_B": "backup"}


def _edit(think_ms: int) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        doc["applications"]["SIP_Server"]["options"]["TServer"]["router-timeout"] = ROUTER_TIMEOUT
        doc["applications"]["URS"]["options"]["urs"]["think-time-ms"] = think_ms

    return edit


def apps(status: ClusterStatus) -> dict[str, AppRow]:
    return {a["app"]: a for a in status["apps"]}


def modes(status: ClusterStatus) -> dict[str, str]:
    return {name: a["mode"] for name, a in apps(status).items() if name in ORS_APPS}


async def wait_all_store(cluster: ClusterHandle, state: str, timeout: float = 30) -> None:
    await cluster.wait_for(
        lambda s: all(apps(s)[a].get("store") == state for a in ORS_APPS if
                      apps(s)[a]["mode"] == "primary"),
        timeout=timeout,
    )  # fmt: skip


def _count_sessions(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0])
    finally:
        conn.close()


def _hold_write_lock(db: Path, seconds: float, held: list[float]) -> None:
    """What a careless outside process does: BEGIN IMMEDIATE and sit on it."""
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.append(time.monotonic())
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_outside_write_lock_past_router_timeout_loses_nothing(tmp_path: Path) -> None:
    """An outside process holds the SQLite write lock for longer than router-timeout under
    load: every node marks its store degraded and keeps routing (0 lost, 0 duplicated),
    every application keeps its mode, and persistence resumes once the lock is gone."""
    config = topology_copy(TOPOLOGIES / "two-nodes.yaml", tmp_path / "db.yaml", _edit(100))
    cluster = await ClusterHandle.up(config, tmp_path / "run", ports="auto")
    db = tmp_path / "run" / "sessions.db"
    try:
        assert modes(await cluster.status()) == EXPECTED_MODES
        await cluster.load(rate=60, duration=12)
        with trio.fail_after(20):  # sessions are being written: the store works
            while _count_sessions(db) == 0:
                await trio.sleep(0.05)
        held: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                trio.to_thread.run_sync, _hold_write_lock, db, ROUTER_TIMEOUT + 2.0, held
            )
            await cluster.wait_for(
                lambda s: any(apps(s)[a].get("store") == "degraded" for a in ORS_APPS),
                timeout=10,
            )
            while nursery.child_tasks:  # modes hold all through the outage
                assert modes(await cluster.status()) == EXPECTED_MODES
                await trio.sleep(0.25)
        await wait_all_store(cluster, "ok")
        with trio.fail_after(20):  # persistence resumed: sessions are written again
            while _count_sessions(db) == 0:
                await trio.sleep(0.05)
        ledger = await settle(cluster, 720)
        status = await cluster.status()
        assert ledger.counts.lost == 0, ledger
        assert ledger.counts.duplicates == 0, ledger
        assert ledger.counts.routed == ledger.counts.created == 720
        assert modes(status) == EXPECTED_MODES
        unpersisted = sum(apps(status)[a]["sessions_unpersisted"] or 0 for a in ORS_APPS)
        assert unpersisted > 0  # calls really were routed through the outage
    finally:
        await cluster.down()


async def test_primary_frozen_mid_call_backup_takes_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORS_1 freezes (SIGSTOP, by a test hook at a known moment) with a session written and
    not yet routed, the moment that used to hold the store's write lock: ORS_2 never
    stalls, ORS_1_B takes over within the ADDP bound and routes the frozen call (recovered
    from the store), and when ORS_1 wakes it is fenced: 0 lost, 0 duplicated."""
    monkeypatch.setenv("ORSIM_TEST_FREEZE", "ORS_1:40")
    config = topology_copy(TOPOLOGIES / "two-nodes.yaml", tmp_path / "db.yaml", _edit(200))
    cluster = await ClusterHandle.up(config, tmp_path / "run", ports="auto")
    try:
        await cluster.load(rate=80, duration=12)
        status = await cluster.wait_for(
            lambda s: apps(s)["ORS_1"]["process"] == "stopped", timeout=30
        )
        frozen_at = time.monotonic()
        routed_by_2 = (await cluster.ledger()).counts.by_app.get("ORS_2", 0)
        status = await cluster.wait_for(lambda s: modes(s)["ORS_1_B"] == "primary", timeout=15)
        takeover_s = time.monotonic() - frozen_at
        # peer-addp-timeout 1 s: detected within 2 s, plus heartbeat, claim and status poll.
        print(f"takeover after {takeover_s:.2f} s")
        assert takeover_s < 6.0
        with trio.fail_after(10):  # ORS_2 kept routing while ORS_1 was frozen
            while (await cluster.ledger()).counts.by_app.get("ORS_2", 0) <= routed_by_2 + 20:
                await trio.sleep(0.1)
        await cluster.wait_for(
            lambda s: (apps(s)["ORS_1_B"]["sessions_recovered"] or 0) >= 1, timeout=10
        )
        await cluster.kill("ORS_1", signal="CONT")
        status = await cluster.wait_for(lambda s: modes(s)["ORS_1"] == "backup", timeout=15)
        ledger = await settle(cluster, 960)
        assert ledger.counts.lost == 0, ledger
        assert ledger.counts.duplicates == 0, ledger
        assert ledger.counts.routed == ledger.counts.created == 960
        assert modes(status)["ORS_1_B"] == "primary"
    finally:
        await cluster.down()


class RedisProcess:
    """A redis-server of one test's own, without persistence, to stop and start again."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.log = directory / "redis.log"
        (self.port,) = free_ports(1)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    async def sessions(self, node_ids: list[int]) -> int | None:
        """Sessions kept in it for those Nodes, None while it does not answer."""
        try:
            store = await RedisStore.open(RedisLocation("127.0.0.1", self.port), timeout=1.0)
        except OrsimError:
            return None
        try:
            return sum([len(await store.sessions(n)) for n in node_ids])
        except OrsimError:
            return None
        finally:
            await store.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    redis = RedisProcess(binary, tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


async def test_redis_stopped_past_router_timeout_and_restarted(
    tmp_path: Path, private_redis: RedisProcess
) -> None:
    """The Redis server dies under load for longer than router-timeout and comes back with
    nothing in it: routing goes on (0 lost, 0 duplicated), nobody changes mode, and the
    nodes persist again by themselves (sessions appear in Redis, epochs resynced)."""
    redis = private_redis
    with trio.fail_after(15):
        while await redis.sessions([]) is None:
            await trio.sleep(0.1)
    config = topology_copy(
        TOPOLOGIES / "two-nodes.yaml", tmp_path / "db.yaml", _edit(100), store=redis.url
    )
    cluster = await ClusterHandle.up(config, tmp_path / "run", ports="auto")
    try:
        status = await cluster.status()
        assert modes(status) == EXPECTED_MODES
        assert not any(a["type"] == "SessionStore" for a in status["apps"])
        node_ids = sorted({node_id(a) for a in status["apps"] if a["app"] in ORS_APPS})
        await cluster.load(rate=60, duration=14)
        with trio.fail_after(20):
            while not await redis.sessions(node_ids):
                await trio.sleep(0.05)
        redis.stop()
        await cluster.wait_for(
            lambda s: any(apps(s)[a].get("store") == "degraded" for a in ORS_APPS), timeout=10
        )
        with trio.move_on_after(ROUTER_TIMEOUT + 2.0):  # the outage outlasts router-timeout
            while True:
                assert modes(await cluster.status()) == EXPECTED_MODES
                await trio.sleep(0.25)
        redis.start()
        await wait_all_store(cluster, "ok")
        with trio.fail_after(20):  # persistence resumed by itself
            while not await redis.sessions(node_ids):
                await trio.sleep(0.05)
        ledger = await settle(cluster, 840)
        status = await cluster.status()
        assert ledger.counts.lost == 0, ledger
        assert ledger.counts.duplicates == 0, ledger
        assert ledger.counts.routed == ledger.counts.created == 840
        assert modes(status) == EXPECTED_MODES
        epochs = {a: apps(status)[a]["epoch"] for a in ("ORS_1", "ORS_2")}
        fresh = await RedisStore.open(RedisLocation("127.0.0.1", redis.port))
        try:  # the empty Redis learned each primary's epoch back from its node
            for app, epoch in epochs.items():
                assert await fresh.current_epoch(node_id(apps(status)[app])) == epoch
        finally:
            await fresh.aclose()
    finally:
        await cluster.down()
