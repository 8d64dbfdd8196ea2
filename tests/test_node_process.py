"""`orsim node` as a real process: start-up, exit codes 0/2/3/4 and their messages."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import attrs
import pytest
import trio
from helpers import ORSIM, TOPOLOGIES, free_ports, topology_copy

from orsim.cluster._handle import claim_under_way
from orsim.config import AppConnection, load_database
from orsim.confserv import serve_confserv
from orsim.tserver import TServer
from orsim.urs import UrsServer
from orsim.wire import TcpNetwork, open_connection

pytestmark = pytest.mark.slow


async def start_servers(nursery: trio.Nursery, config: Path, state: Path) -> int:
    """Configuration Server (free port), T-Server and URS of ``config``, in this process."""
    net = TcpNetwork()
    db = load_database(config)
    port: int = await nursery.start(
        lambda task_status: serve_confserv(net, db, "127.0.0.1", 0, state, task_status=task_status)
    )
    for app in db.applications.values():
        if app.type == "SIPServer":
            await nursery.start(
                lambda task_status, a=app: TServer.from_application(a).serve(
                    net, task_status=task_status
                )
            )
        elif app.type == "RoutingServer":
            await nursery.start(
                lambda task_status, a=app: UrsServer.from_application(a).serve(
                    net, task_status=task_status
                )
            )
    return port


async def run_node(
    *args: str, cwd: Path, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(timeout):
        return await trio.run_process(
            [ORSIM, "node", *args], capture_stdout=True, capture_stderr=True, check=False, cwd=cwd
        )


async def test_version_and_usage_errors(tmp_path: Path) -> None:
    """-V prints the version (exit 0); unknown or missing arguments are usage errors (2)."""
    done = await run_node("-V", cwd=tmp_path)
    assert done.returncode == 0 and b"orsim node" in done.stdout
    done = await run_node("-host", "127.0.0.1", "-port", "1", "-app", "X", "--bogus", cwd=tmp_path)
    assert done.returncode == 2
    done = await run_node("-host", "127.0.0.1", cwd=tmp_path)
    assert done.returncode == 2
    assert b"-port" in done.stderr and b"Traceback" not in done.stderr


@pytest.mark.parametrize("half", [["-backup_host", "127.0.0.1"], ["-backup_port", "2021"]])
async def test_half_a_backup_configuration_server_is_a_usage_error(
    tmp_path: Path, half: list[str]
) -> None:
    """-backup_host without -backup_port (or the reverse) names no server: exit 2, one line."""
    done = await run_node("-host", "127.0.0.1", "-port", "1", "-app", "X", *half, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert (
        "-backup_host needs -backup_port" in lines[0]
        or "-backup_port needs -backup_host" in (lines[0])
    )


async def test_unreachable_configuration_server_exits_4(tmp_path: Path) -> None:
    """No Configuration Server (nor backup) within --connect-timeout: exit 4, one line."""
    done = await run_node(
        "-host",
        "127.0.0.1",
        "-port",
        "1",
        "-backup_host",
        "127.0.0.1",
        "-backup_port",
        "2",
        "-app",
        "ORS_1",
        "--connect-timeout",
        "1",
        cwd=tmp_path,
    )
    assert done.returncode == 4
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orsim node: unreachable:")
    assert "127.0.0.1:1" in lines[0] and "127.0.0.1:2" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-app", "NOPE"], "application 'NOPE' not found"),
        (["-app", "ORS_1", "-cluster", "NOPE"], "NOPE"),
        (["-app", "URS"], "not OrchestrationServer"),
    ],
)
async def test_configuration_errors_exit_3(tmp_path: Path, args: list[str], message: str) -> None:
    """A missing application or cluster, or a non-ORS application: exit 3, one clear line."""
    config = topology_copy(TOPOLOGIES / "demo.yaml", tmp_path / "db.yaml")
    async with trio.open_nursery() as nursery:
        port = await start_servers(nursery, config, tmp_path / "state")
        done = await run_node("-host", "127.0.0.1", "-port", str(port), *args, cwd=tmp_path)
        nursery.cancel_scope.cancel()
    assert done.returncode == 3, done.stderr
    line = done.stderr.decode().strip().splitlines()[0]
    assert line.startswith("orsim node: configuration error:") and message in line


async def test_two_urses_break_the_cluster_requirement(tmp_path: Path) -> None:
    """An ORS application with two RoutingServer connections refuses to start (exit 3)."""
    config = topology_copy(TOPOLOGIES / "demo.yaml", tmp_path / "db.yaml")
    db = load_database(config)
    # The loader refuses such a database, so build it past the loader and serve it as is.
    urs_b = attrs.evolve(db.applications["URS"], name="URS_B", port=1, dbid=999)
    ors_2 = db.applications["ORS_2"]
    ors_2 = attrs.evolve(ors_2, connections=(*ors_2.connections, AppConnection("URS_B")))
    db = attrs.evolve(db, applications={**db.applications, "URS_B": urs_b, "ORS_2": ors_2})
    async with trio.open_nursery() as nursery:
        port: int = await nursery.start(
            lambda task_status: serve_confserv(
                TcpNetwork(), db, "127.0.0.1", 0, tmp_path / "state", task_status=task_status
            )
        )
        done = await run_node(
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-app",
            "ORS_2",
            "-cluster",
            "ORS_Cluster_1",
            cwd=tmp_path,
        )
        nursery.cancel_scope.cancel()
    assert done.returncode == 3
    assert done.stderr.decode().strip().splitlines()[0] == (
        "orsim node: configuration error: application 'ORS_2' lists 2 RoutingServer "
        "connections (URS, URS_B); an ORS node must have exactly one"
    )


@pytest.mark.parametrize("primary_down", [False, True], ids=["confserv", "backup-confserv"])
async def test_node_starts_serves_status_and_stops_cleanly(
    tmp_path: Path, primary_down: bool
) -> None:
    """A node reads its configuration, becomes primary, answers status, exits 0 on SIGTERM.

    With its primary Configuration Server down and the backup up (``-backup_host`` /
    ``-backup_port``), it starts from the backup (ors-domain.md section 3)."""
    config = topology_copy(TOPOLOGIES / "demo.yaml", tmp_path / "db.yaml")
    db = load_database(config)
    ors = db.applications["ORS_1"]
    async with trio.open_nursery() as nursery:
        port = await start_servers(nursery, config, tmp_path / "state")
        where = ["-port", str(port)]
        if primary_down:
            (dead,) = free_ports(1)  # nothing listens there
            where = ["-port", str(dead), "-backup_host", "127.0.0.1", "-backup_port", str(port)]
        proc = await trio.lowlevel.open_process(
            [
                ORSIM,
                "node",
                "-host",
                "127.0.0.1",
                *where,
                "-app",
                "ORS_1",
                "-cluster",
                "ORS_Cluster_1",
            ],
            cwd=tmp_path,
            stderr=subprocess.DEVNULL,
        )
        try:
            with trio.fail_after(30):
                while True:
                    try:
                        conn = await open_connection(
                            TcpNetwork(), ors.address, ors.port, app="t", app_type="Test"
                        )
                    except OSError:
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(conn.serve)
                    status = await conn.request("status")
                    # A lone primary shows `backup` while its claim of the Node is under
                    # way (store epoch, then the T-Server's fence): 3 runs of 25 read it
                    # there with both cores busy.
                    if status["mode"] != "starting" and not claim_under_way(status):
                        break
                    await conn.aclose()
                    await trio.sleep(0.1)
            assert status["mode"] == "primary"
            assert status["node_id"] == ors.dbid
            assert status["cluster"] == "ORS_Cluster_1"
            assert status["data_center"] == "DC_East"
            assert status["frames_sent"] > 0 and status["frames_received"] > 0
            await conn.aclose()
            proc.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                code = await proc.wait()
            assert code == 0
            assert (tmp_path / "sessions.db").exists()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        nursery.cancel_scope.cancel()
