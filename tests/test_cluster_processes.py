"""Real processes over TCP: calls through one Node, and failover of a 2-Node cluster.

Each test starts a cluster with the launcher's Python API (every server a separate OS
process on free ports) and asserts on the T-Server's ledger, the ground truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import TOPOLOGIES, settle

from orsim.cluster import ClusterHandle, ClusterStatus
from orsim.errors import ClusterError, UsageError

pytestmark = pytest.mark.slow


def mode_of(status: ClusterStatus, app: str) -> str:
    return next(str(a["mode"]) for a in status["apps"] if a["app"] == app)


async def wait_routed_by(cluster: ClusterHandle, app: str, count: int, timeout: float = 30) -> None:
    """Wait until ``app`` has routed at least ``count`` calls."""
    with trio.fail_after(timeout):
        while (await cluster.ledger()).counts.by_app.get(app, 0) < count:
            await trio.sleep(0.2)


async def test_one_node_routes_1000_calls(tmp_path: Path) -> None:
    """Configuration Server, T-Server, URS and one ORS: 1,000 calls, all routed once."""
    cluster = await ClusterHandle.up(TOPOLOGIES / "single.yaml", tmp_path / "run", ports="auto")
    try:
        await cluster.load(rate=200, duration=5)
        ledger = await settle(cluster, 1000)
        assert ledger.counts.created == 1000
        assert ledger.counts.routed == 1000
        assert ledger.counts.lost == 0
        assert ledger.counts.duplicates == 0
        assert ledger.counts.by_app == {"ORS_1": 1000}
    finally:
        await cluster.down()


@pytest.mark.parametrize("signal", ["KILL", "STOP"])
async def test_primary_failure_under_load_loses_no_call(tmp_path: Path, signal: str) -> None:
    """SIGKILL or SIGSTOP of a primary under load: its backup takes over, 0 lost, 0 doubled."""
    cluster = await ClusterHandle.up(TOPOLOGIES / "demo.yaml", tmp_path / "run", ports="auto")
    try:
        status = await cluster.status()
        modes = {a["app"]: a["mode"] for a in status["apps"] if a["type"] == "OrchestrationServer"}
        assert modes == {
            "ORS_1": "primary",
            "ORS_1_B": "backup",
            "ORS_2": "primary",
            "ORS_2_B": "backup",
        }
        await cluster.load(rate=40, duration=12)
        await wait_routed_by(cluster, "ORS_1", 40)  # the fault falls under steady load
        fault_at = time.time()
        await cluster.kill("ORS_1", signal=signal)
        status = await cluster.wait_for(lambda s: mode_of(s, "ORS_1_B") == "primary", timeout=15)
        gap_ms = (time.time() - fault_at) * 1000
        print(f"failover gap ({signal}): {gap_ms:.0f} ms")
        ledger = await settle(cluster, 400, timeout=60)
        assert ledger.counts.lost == 0, ledger
        assert ledger.counts.duplicates == 0, ledger
        assert ledger.counts.routed == ledger.counts.created
        assert ledger.counts.by_app.get("ORS_1_B", 0) > 0
        if signal == "STOP":
            await cluster.kill("ORS_1", signal="CONT")
            await cluster.wait_for(lambda s: mode_of(s, "ORS_1") == "backup", timeout=20)
    finally:
        await cluster.down()


async def test_ports_picked_free_then_taken_are_picked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up --ports auto` picks free ports, but another program may bind one before the
    server does (seen when test runs share a machine: "Address already in use" from the
    proxy). The launcher then picks others and the cluster comes up."""
    import socket

    from orsim.cluster import _handle

    held: list[socket.socket] = []
    real = _handle._free_ports
    picks = 0

    def first_pick_taken(count: int) -> list[int]:
        nonlocal picks
        picks += 1
        ports = real(count)
        if picks == 1:  # someone else listens on every port of the first pick
            for port in ports:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", port))
                sock.listen()
                held.append(sock)
        return ports

    monkeypatch.setattr(_handle, "_free_ports", first_pick_taken)
    try:
        cluster = await ClusterHandle.up(TOPOLOGIES / "single.yaml", tmp_path / "run", ports="auto")
        try:
            status = await cluster.status()
            assert {a["app"]: a["mode"] for a in status["apps"]}["ORS_1"] == "primary"
            assert picks == 2
        finally:
            await cluster.down()
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("status", "under_way"),
    [
        ({"mode": "backup", "role": "claiming"}, True),
        ({"mode": "backup", "role": "primary"}, True),  # won; the fence is on its way
        ({"mode": "primary", "role": "primary"}, False),
        ({"mode": "backup", "role": "backup"}, False),
        ({"mode": "suspending", "role": "suspending"}, False),
        ({"mode": "primary"}, False),  # a server, not an ORS application
    ],
)
def test_claim_under_way_reads_an_ors_status(status: dict[str, str], under_way: bool) -> None:
    from orsim.cluster._handle import claim_under_way

    assert claim_under_way(status) is under_way


async def test_up_returns_once_a_lone_primary_has_its_fence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by CI (1 run): right after `up`, ORS_1 of single.yaml was still `backup`. A
    lone application claims its Node in the store at once, and its status says `backup`
    until the T-Server confirms the fence; the launcher took that for ready. Here its
    link to the SIP Server is slowed (300 ms each way) before it starts, so the claim is
    won long before the fence, every time."""
    from orsim.cluster import _handle

    real = _handle.ClusterHandle._start_tier

    async def slowed(self: ClusterHandle, wave: list[Any], *args: Any) -> None:
        if any(e.app == "ORS_1" for e in wave):
            await self.delay("ORS_1", "SIP_Server", 300)
        await real(self, wave, *args)

    monkeypatch.setattr(_handle.ClusterHandle, "_start_tier", slowed)
    cluster = await ClusterHandle.up(TOPOLOGIES / "single.yaml", tmp_path / "run", ports="auto")
    try:
        status = await cluster.status()
        assert {a["app"]: a["mode"] for a in status["apps"]}["ORS_1"] == "primary"
    finally:
        await cluster.down()


async def test_a_foreign_server_on_a_picked_port_is_not_taken_for_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen when test runs shared the machine: another cluster's server took the port
    picked for ORS_2, answered the launcher's status as ready, and ORS_2 (which could not
    bind) was counted as up. An answer from another process (another pid) is not the
    app's: the app's start fails on the taken port, and the launcher picks others."""
    from orsim.cluster import _handle
    from orsim.wire import Connection, Request, TcpNetwork, serve_app

    async def foreign(_conn: Connection, _request: Request) -> object:
        return {"app": "store", "type": "SessionStore", "mode": "primary", "pid": 1}

    taken: list[int] = []
    real_prepare = _handle._prepare
    async with trio.open_nursery() as nursery:

        async def squat(port: int, task_status: trio.TaskStatus[int]) -> None:
            await serve_app(
                TcpNetwork(), "127.0.0.1", port, app="store", app_type="SessionStore",
                handler=foreign, task_status=task_status,
            )  # fmt: skip

        def prepare(*args: Any) -> Any:
            manifest = real_prepare(*args)
            if not taken:  # the first pick: ORS_1's port is someone else's by now
                taken.append(manifest.entry("ORS_1").private_port)
                trio.from_thread.run(nursery.start, squat, taken[0])
            return manifest

        monkeypatch.setattr(_handle, "_prepare", prepare)
        cluster = await ClusterHandle.up(TOPOLOGIES / "single.yaml", tmp_path / "run", ports="auto")
        try:
            ors = next(a for a in (await cluster.status())["apps"] if a["app"] == "ORS_1")
            assert ors["mode"] == "primary" and ors["pid"] != 1
            assert cluster.manifest.entry("ORS_1").private_port != taken[0]
        finally:
            await cluster.down()
        nursery.cancel_scope.cancel()


async def test_a_cluster_without_the_proxy_routes_directly_and_refuses_faults(
    tmp_path: Path,
) -> None:
    """``up --no-proxy``: every application listens on its public port itself (nobody
    else holds it), calls are routed, and a fault is refused naming the option."""
    cluster = await ClusterHandle.up(
        TOPOLOGIES / "single.yaml", tmp_path / "run", ports="auto", proxy=False
    )
    try:
        assert not cluster.manifest.proxy
        assert "proxy" not in cluster.pids()
        assert all(e.private_port == e.public_port for e in cluster.manifest.apps)
        await cluster.load(rate=200, duration=1)
        ledger = await settle(cluster, 200)
        assert (ledger.counts.routed, ledger.counts.lost) == (200, 0)
        for fault in (
            cluster.partition("ORS_1", "SIP_Server"),
            cluster.delay("ORS_1", "URS", 50),
            cluster.proxy_status(),
        ):
            with pytest.raises(ClusterError, match="without the fault proxy"):
                await fault
        assert (await cluster.ledger()).counts.routed == 200  # nothing was cut
    finally:
        await cluster.down()


async def test_no_proxy_is_refused_with_a_host(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--no-proxy"):
        await ClusterHandle.up(TOPOLOGIES / "demo.yaml", tmp_path / "run", host="a", proxy=False)
