"""A ``redis://`` store on this machine: the launcher runs the Redis (app ``redis``).

The plan and URL rewriting are pure; the rest starts real clusters with a real
``redis-server`` from PATH (skipped where it is not installed; CI installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import yaml
from helpers import ROOT, TOPOLOGIES, free_ports, node_id, pid, settle, topology_copy

from orsim.cluster import AppRow, ClusterHandle, ClusterStatus
from orsim.cluster._plan import store_app_names
from orsim.cluster._procs import pid_alive
from orsim.cluster._redis import (
    REDIS_TYPE,
    local_address,
    ping_redis,
    rewrite_store_urls,
    set_store,
    with_port,
)
from orsim.config import load_database
from orsim.errors import ClusterError, OrsimError
from orsim.store import RedisLocation, RedisStore

ORS_APPS = ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B")
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def rows(status: ClusterStatus) -> dict[str, AppRow]:
    return {a["app"]: a for a in status["apps"]}


def redis_topology(
    tmp_path: Path, host: str = "127.0.0.1", port: int | None = None, auth: str = ""
) -> Path:
    """two-nodes.yaml on free ports with its store in Redis at host:port (free by default);
    ``auth``: ``:PASSWORD@``."""
    port = port if port is not None else free_ports(1)[0]
    url = f"redis://{auth}{host}:{port}/0"
    return topology_copy(TOPOLOGIES / "two-nodes.yaml", tmp_path / "db.yaml", store=url)


# -- pure parts ------------------------------------------------------------------------------


def test_local_addresses() -> None:
    """Every loopback address is this machine's (127.0.0.2 too); TEST-NET-1 is not."""
    assert local_address("127.0.0.1") == "127.0.0.1"
    assert local_address("127.0.0.2") == "127.0.0.2"
    assert local_address("192.0.2.1") is None


def test_plan_runs_a_local_redis_not_a_remote_one(tmp_path: Path) -> None:
    """A local Redis store is an app ``redis`` of type Redis (named like the store server,
    so scenarios can name it); a remote one is used as it is."""
    db = load_database(redis_topology(tmp_path, port=6390))
    assert store_app_names(db) == ["redis"]
    remote = load_database(redis_topology(tmp_path, host="192.0.2.1", port=6390))
    assert store_app_names(remote) == []


def test_url_rewrites() -> None:
    """The port moves (password and DB kept); a store is set in lists and ORS apps."""
    assert with_port("redis://:pw@127.0.0.1:6390/2", 7000) == "redis://:pw@127.0.0.1:7000/2"
    assert with_port("redis://[::1]/0", 7000) == "redis://[::1]:7000/0"
    raw = yaml.safe_load((TOPOLOGIES / "two-nodes.yaml").read_text())
    set_store(raw, "redis://127.0.0.1:6390/0")
    annex = raw["transactions"]["ORS_Cluster_1"]["annex"]
    assert annex["persistence"]["store"] == "redis://127.0.0.1:6390/0"
    assert raw["applications"]["ORS_1_B"]["options"]["persistence"]["store"].endswith(":6390/0")
    assert "persistence" not in raw["applications"]["URS"].get("options", {})
    rewrite_store_urls(raw, {"redis://127.0.0.1:6390/0": "redis://127.0.0.1:7000/0"})
    assert annex["persistence"]["store"] == "redis://127.0.0.1:7000/0"


async def test_given_port_held_by_something_else_is_refused(tmp_path: Path) -> None:
    """With ports as given, a non-Redis listener on the store's port stops ``up`` at once
    (this one never answers PING)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        config = redis_topology(tmp_path, port=sock.getsockname()[1])
        with pytest.raises(ClusterError, match="not Redis"):
            await ClusterHandle.up(config, tmp_path / "run", confserv_port=free_ports(1)[0])


def test_missing_redis_server_is_one_line_exit_4(tmp_path: Path) -> None:
    """Without redis-server on PATH: one line naming the store and how to install it."""
    config = redis_topology(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "orsim.cli", "cluster", "up", str(config), "--ports", "auto",
         "--detach", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
        env={"PATH": str(tmp_path / "empty-bin")},
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "redis-server" in lines[0] and "apt-get install redis-server" in lines[0]


# -- real processes --------------------------------------------------------------------------


@needs_redis
@pytest.mark.slow
async def test_up_runs_redis_kill_start_and_down(tmp_path: Path) -> None:
    """``up`` starts a Redis on the store's address (a free port under --ports auto), with
    the URL's password, that holds the sessions; status shows it; kill degrades the nodes'
    store, start brings it back (empty) and they persist again; ``down`` stops it."""
    config = redis_topology(tmp_path, host="127.0.0.2", auth=":s3cret@")
    cluster = await ClusterHandle.up(config, tmp_path / "run", ports="auto")
    try:
        status = await cluster.status()
        redis = rows(status)["redis"]
        assert (redis["type"], redis["mode"], redis["host"]) == (REDIS_TYPE, "primary", "127.0.0.2")
        port, redis_pid = redis["private_port"], pid(redis)
        served = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
        annex = served["transactions"]["ORS_Cluster_1"]["annex"]
        assert annex["persistence"]["store"] == f"redis://:s3cret@127.0.0.2:{port}/0"
        node_ids = sorted({node_id(rows(status)[a]) for a in ("ORS_1", "ORS_2")})
        await cluster.load(rate=40, duration=6)
        await _wait_sessions(port, node_ids)

        await cluster.kill("redis")
        assert not await ping_redis("127.0.0.2", port)
        await cluster.wait_for(
            lambda s: all(rows(s)[a]["store"] == "degraded" for a in ("ORS_1", "ORS_2")), 10
        )
        await cluster.start("redis")
        await cluster.wait_for(lambda s: all(rows(s)[a]["store"] == "ok" for a in ORS_APPS), 10)
        await _wait_sessions(port, node_ids)  # persisted again in the fresh Redis
        ledger = await settle(cluster, 240, timeout=30)
        assert ledger.counts.lost == 0 and ledger.counts.duplicates == 0, ledger
        redis_pid = pid(rows(await cluster.status())["redis"])
        assert pid_alive(redis_pid)
    finally:
        await cluster.down()
    assert not pid_alive(redis_pid)
    assert not await ping_redis("127.0.0.2", port)


@needs_redis
@pytest.mark.slow
async def test_a_redis_already_there_is_used_as_it_is(tmp_path: Path, redis_url: str) -> None:
    """A Redis answering at the store's address is neither started nor listed nor stopped."""
    location = RedisLocation("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    config = topology_copy(TOPOLOGIES / "two-nodes.yaml", tmp_path / "db.yaml", store=redis_url)
    cluster = await ClusterHandle.up(config, tmp_path / "run", ports="auto")
    try:
        status = await cluster.status()
        assert not [a for a in status["apps"] if a["type"] == REDIS_TYPE]
        assert all(rows(status)[a]["store"] == "ok" for a in ORS_APPS)
    finally:
        await cluster.down()
    assert await ping_redis(location.host, location.port)


async def _wait_sessions(port: int, node_ids: list[int], timeout: float = 15) -> None:
    """Until the Redis at 127.0.0.2:port (password s3cret) holds a session of one of
    ``node_ids``."""
    with trio.fail_after(timeout):
        while True:
            with contextlib.suppress(OrsimError):
                location = RedisLocation("127.0.0.2", port, password="s3cret")
                store = await RedisStore.open(location, timeout=1.0)
                try:
                    if any([await store.sessions(n) for n in node_ids]):
                        return
                finally:
                    await store.aclose()
            await trio.sleep(0.05)
