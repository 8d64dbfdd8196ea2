"""`orsim cluster` end to end: the real CLI starting real server processes.

Each test runs its own cluster with ``--ports auto`` in a temporary run directory, and a
fixture stops whatever is left even when a test fails.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from test_cluster_plan import topology

from orsim.cluster import ClusterHandle, ClusterStatus, RunDir, stop_processes
from orsim.cluster._procs import pid_alive

pytestmark = pytest.mark.slow

ORSIM = (sys.executable, "-m", "orsim.cli")


async def orsim(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = await trio.run_process(
        [*ORSIM, *args], capture_stdout=True, capture_stderr=True, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"orsim {' '.join(args)} exited {result.returncode}:\n{result.stderr.decode()}")
    return result


def mode(status: ClusterStatus, app: str) -> str:
    return str(next(a["mode"] for a in status["apps"] if a["app"] == app))


def one_primary_per_node(status: ClusterStatus) -> bool:
    nodes: dict[int, list[str]] = {}
    for app in status["apps"]:
        if app["type"] == "OrchestrationServer":
            nodes.setdefault(app["node_id"] or 0, []).append(app["mode"])
    return all(sorted(modes) == ["backup", "primary"] for modes in nodes.values())


@pytest.fixture
async def run_dir(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "run"
    yield path
    await stop_processes(RunDir.at(path), grace=2.0)


async def wait_manifest_up(run_dir: Path, proc: trio.Process) -> dict[str, Any]:
    """Wait for a foreground `up` to report the cluster up in its manifest."""
    with trio.fail_after(40):
        while True:
            assert proc.poll() is None, "the launcher exited during start-up"
            try:
                data: dict[str, Any] = json.loads((run_dir / "manifest.json").read_text())
            except (OSError, ValueError):
                data = {}
            if data.get("state") == "up":
                return data
            await trio.sleep(0.1)


async def test_two_nodes_failover_restart_partition_down(tmp_path: Path, run_dir: Path) -> None:
    """up --detach, 2 primaries + 2 backups, kill under load with 0 lost, start, partition, down."""
    db = tmp_path / "db.yaml"
    db.write_text(topology(2))
    rd = ("--run-dir", str(run_dir))
    await orsim("cluster", "up", str(db), "--ports", "auto", "--detach", *rd)

    status = json.loads((await orsim("cluster", "status", "--json", *rd)).stdout)
    nodes = [a for a in status["apps"] if a["type"] == "OrchestrationServer"]
    assert sorted(a["mode"] for a in nodes) == ["backup", "backup", "primary", "primary"]
    assert {a["app"] for a in nodes if a["mode"] == "primary"} == {"ORS_1", "ORS_2"}
    assert {a["cluster"] for a in nodes} == {"ORS_Cluster_1"}
    assert status["cluster"] == "ORS_Cluster_1"
    assert set(status["calls"]) >= {"created", "routed", "lost", "duplicates", "in_flight"}
    assert all(a["pid"] for a in status["apps"])

    handle = ClusterHandle.attach(run_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(orsim, "cluster", "load", "--rate", "20", "--duration", "5", *rd)
        await handle.wait_for(lambda s: (s["calls"]["routed"] or 0) >= 10, 15)
        await orsim("cluster", "kill", "ORS_1", *rd)
        await handle.wait_for(lambda s: mode(s, "ORS_1_B") == "primary", 5)
    status = await handle.wait_for(lambda s: s["calls"]["in_flight"] == 0, 15)
    calls = status["calls"]
    records = (await handle.ledger(records=True)).records or ()
    assert calls["lost"] == 0, [r for r in records if r.state != "routed"]
    assert calls["duplicates"] == 0
    assert calls["routed"] == calls["created"]
    assert calls["created"] and calls["created"] > 0
    assert mode(status, "ORS_1") == "down"

    started = (await orsim("cluster", "start", "ORS_1", *rd)).stdout.decode()
    assert started.startswith("ORS_1: started (pid ") and ", mode " in started, started
    await handle.wait_for(lambda s: mode(s, "ORS_1") == "backup", 10)

    await orsim("cluster", "kill", "URS", "--signal", "STOP", *rd)
    status = await handle.status()
    urs = next(a for a in status["apps"] if a["app"] == "URS")
    assert (urs["mode"], urs["process"]) == ("down", "stopped")
    await orsim("cluster", "kill", "URS", "--signal", "CONT", *rd)
    await handle.wait_for(lambda s: mode(s, "URS") == "primary", 5)

    await orsim("cluster", "partition", "ORS_2", "ORS_2_B", *rd)
    proxy = await handle.proxy_status()
    assert proxy["partitions"] == [{"a": "ORS_2", "b": "ORS_2_B"}]
    cut = [lk for lk in proxy["links"] if {lk["client"], lk["server"]} == {"ORS_2", "ORS_2_B"}]
    assert cut
    assert all(lk["severed"] for lk in cut)
    await orsim("cluster", "partition", "ORS_2", "ORS_2_B", "--heal", *rd)
    assert (await handle.proxy_status())["partitions"] == []
    await handle.wait_for(one_primary_per_node, 15)

    pids = handle.pids()
    assert set(pids) >= {"proxy", "confserv", "SIP_Server", "URS", "ORS_1", "ORS_2_B"}
    await orsim("cluster", "down", *rd)
    assert not [app for app, pid in pids.items() if pid_alive(pid)]
    assert handle.pids() == {}
    assert json.loads((run_dir / "manifest.json").read_text())["state"] == "down"


async def test_broken_database_fails_fast_and_starts_nothing(tmp_path: Path, run_dir: Path) -> None:
    """A database breaking a cluster rule: exit 3 in under 2 s, one line, nothing started."""
    text = topology(1).replace("- server: URS\n", "- server: SIP_Server\n", 1)
    db = tmp_path / "broken.yaml"
    db.write_text(text)
    started = trio.current_time()
    result = await orsim(
        "cluster",
        "up",
        str(db),
        "--ports",
        "auto",
        "--run-dir",
        str(run_dir),
        "--detach",
        check=False,
    )
    took = trio.current_time() - started
    assert result.returncode == 3, result.stderr.decode()
    assert took < 2.0
    assert b"configuration error" in result.stderr
    assert b"Traceback" not in result.stderr
    assert not await trio.Path(run_dir).exists()


async def test_sigint_stops_a_foreground_up(tmp_path: Path, run_dir: Path) -> None:
    """Ctrl-C (SIGINT) to a foreground `up` stops every process it started."""
    db = tmp_path / "db.yaml"
    db.write_text(topology(1))
    proc = await trio.lowlevel.open_process(
        [*ORSIM, "cluster", "up", str(db), "--ports", "auto", "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        manifest = await wait_manifest_up(run_dir, proc)
        pids = manifest["pids"]
        assert len(pids) == 7  # proxy, confserv, store, SIP_Server, URS, ORS_1, ORS_1_B
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            await proc.wait()
        assert not [app for app, pid in pids.items() if pid_alive(pid)]
    finally:
        proc.kill()
        await proc.wait()


async def test_down_cleans_up_after_a_killed_launcher(tmp_path: Path, run_dir: Path) -> None:
    """If `up` itself is killed, its servers live on and `down` finds them by pid files."""
    db = tmp_path / "db.yaml"
    db.write_text(topology(1))
    proc = await trio.lowlevel.open_process(
        [*ORSIM, "cluster", "up", str(db), "--ports", "auto", "--run-dir", str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = await wait_manifest_up(run_dir, proc)
    proc.kill()
    await proc.wait()
    pids = manifest["pids"]
    assert all(pid_alive(pid) for pid in pids.values())
    (run_dir / "manifest.json").unlink()  # even without a manifest
    await orsim("cluster", "down", "--run-dir", str(run_dir))
    assert not [app for app, pid in pids.items() if pid_alive(pid)]
