"""The cluster's key (issue 20, finding 3): state-changing methods and pushes need it.

Seen in the field: any local client could fence a Node at the T-Server, register and
route calls under a claimed name, set ``router-timeout 0.001`` at the Configuration
Server, force a takeover with a ``handover`` push, switch a Node over, cut links at the
proxy and start 100k calls/s. Now ``orsim cluster up`` makes a key (``cluster.key``,
mode 0600) and gives it to every application; a client without it may only read.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio
import trio.testing
from helpers import TOPOLOGIES

from orsim.cluster import ClusterHandle, ClusterStatus
from orsim.errors import RequestRefused
from orsim.wire import (
    KEY_FILE,
    Connection,
    MemoryNetwork,
    Push,
    Request,
    TcpNetwork,
    open_connection,
    serve_app,
)


async def _serve_counter(
    net: MemoryNetwork, counts: dict[str, int], *, task_status: Any
) -> NoReturn:
    """A server whose ``bump`` changes state and whose ``status`` reads it."""

    async def handle(_conn: Connection, request: Request) -> Any:
        if request.method == "bump":
            counts["bumps"] += 1
        return dict(counts)

    async def on_push(_conn: Connection, _push: Push) -> None:
        counts["pushes"] += 1

    await serve_app(
        net.for_app("server"), "server.sim", 9000, app="server", app_type="Test",
        handler=handle, on_push=on_push, task_status=task_status,
    )  # fmt: skip


async def test_without_the_key_a_client_may_read_but_not_change_anything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork(key="s3cret")
    counts = {"bumps": 0, "pushes": 0}
    async with trio.open_nursery() as nursery:
        await nursery.start(_serve_counter, net, counts)
        outsider = await open_connection(
            net.for_app("outsider", key="guess"), "server.sim", 9000, app="outsider", app_type="X"
        )
        member = await open_connection(
            net.for_app("member"), "server.sim", 9000, app="m", app_type="X"
        )
        nursery.start_soon(outsider.serve)
        nursery.start_soon(member.serve)
        assert await outsider.request("status", {}) == {"bumps": 0, "pushes": 0}
        with pytest.raises(RequestRefused) as refused:
            await outsider.request("bump", {})
        assert refused.value.code == "unauthorized"
        assert await member.request("bump", {}) == {"bumps": 1, "pushes": 0}
        await member.push("anything", {})
        await outsider.push("anything", {})
        with trio.fail_after(5):
            await outsider.closed.wait()  # a push without the key costs the connection
        assert "push without the cluster's key" in (outsider.close_reason or "")
        assert await member.request("status", {}) == {"bumps": 1, "pushes": 1}
        nursery.cancel_scope.cancel()


def _mode(status: ClusterStatus, app: str) -> tuple[str, int]:
    entry = next(a for a in status["apps"] if a["app"] == app)
    return str(entry["mode"]), int(entry.get("epoch") or 0)


async def _refused(conn: Connection, method: str, params: dict[str, Any]) -> None:
    with pytest.raises(RequestRefused) as refused:
        await conn.request(method, params)
    assert refused.value.code == "unauthorized", (method, refused.value)


@pytest.mark.slow
async def test_a_launched_cluster_refuses_what_a_keyless_client_asks_to_change(
    tmp_path: Path,
) -> None:
    """Every finding-3 attack, from a client without the key, against real processes:
    each refused, nothing changed; reading still works; the launcher (with the key)
    still switches over."""
    run = tmp_path / "run"
    cluster = await ClusterHandle.up(TOPOLOGIES / "demo.yaml", run, ports="auto")
    try:
        key_file = run / KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert len(key_file.read_text().strip()) == 64
        before = await cluster.status()
        outsider = TcpNetwork(key="")
        entries = {e.app: e for e in cluster.manifest.apps}
        conns: dict[str, Connection] = {}
        async with trio.open_nursery() as nursery:
            for app in ("SIP_Server", "confserv", "ORS_1", "URS"):
                entry = entries[app]
                conn = await open_connection(
                    outsider, entry.host, entry.private_port, app="intruder", app_type="X"
                )
                nursery.start_soon(conn.serve)
                conns[app] = conn
            proxy = await open_connection(
                outsider, "127.0.0.1", cluster.manifest.proxy_control_port,
                app="intruder", app_type="X",
            )  # fmt: skip
            nursery.start_soon(proxy.serve)
            tserver = conns["SIP_Server"]
            await _refused(tserver, "fence", {"node_id": 1, "epoch": 1_000_000})
            await _refused(tserver, "register", {"app": "ORS_1", "dns": ["5000"]})
            await _refused(tserver, "route", {"call_id": "x", "target": "t", "epoch": 1})
            await _refused(tserver, "generate", {"rate": 100_000, "duration": 60})
            await _refused(conns["confserv"], "set_option", {
                "object": "SIP_Server", "section": "TServer", "key": "router-timeout",
                "value": "0.001"})  # fmt: skip
            await _refused(conns["ORS_1"], "switchover", {})
            await _refused(conns["URS"], "select_target", {"call_id": "x"})
            await _refused(proxy, "partition", {"pairs": [["ORS_1", "ORS_1_B"]]})
            assert (await tserver.request("ledger", {}))["created"] == 0
            assert await conns["confserv"].request("get_application", {"name": "ORS_1"})
            ors = conns["ORS_1"]
            await ors.push("member", {"app": "ORS_1_B", "node_id": 1, "data_center": "DC1",
                                      "mode": "primary", "epoch": 50})  # fmt: skip
            with trio.fail_after(10):
                await ors.closed.wait()
            nursery.cancel_scope.cancel()
        after = await cluster.status()
        for app in ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B"):
            assert _mode(after, app) == _mode(before, app), app
        await cluster.switchover("ORS_1")
        await cluster.wait_for(lambda s: _mode(s, "ORS_1_B")[0] == "primary", timeout=20)
    finally:
        await cluster.down()


@pytest.mark.slow
async def test_config_set_presents_the_run_directorys_key(tmp_path: Path) -> None:
    """``orsim config set`` reads the key from ``--run-dir``; from another directory (no
    key) the change is refused in one line."""
    run = tmp_path / "run"
    cluster = await ClusterHandle.up(TOPOLOGIES / "demo.yaml", run, ports="auto")
    try:
        port = str(cluster.manifest.confserv_port)
        base = [sys.executable, "-m", "orsim", "config", "set", "-host", "127.0.0.1",
                "-port", port, "SIP_Server", "TServer", "router-timeout", "9"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "ORSIM_CLUSTER_KEY"}

        def run_cli(run_dir: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*base, "--run-dir", str(run_dir)], capture_output=True, text=True, env=env,
                timeout=60,
            )  # fmt: skip

        refused = await trio.to_thread.run_sync(run_cli, tmp_path / "elsewhere")
        assert refused.returncode != 0
        assert "needs the cluster's key" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        done = await trio.to_thread.run_sync(run_cli, run)
        assert done.returncode == 0, done.stderr
    finally:
        await cluster.down()
