"""The simulation backend: the launcher's verbs and status shape over ``SimCluster``, the
plugin's ``orsim_cluster(..., sim=True)``, and the MemoryNetwork's latency and freeze.

All in virtual time (``autojump_clock``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from orsim.cluster._rundir import AppEntry, Manifest
from orsim.cluster._status import AppRow, ClusterStatus, cluster_status
from orsim.errors import ClusterError
from orsim.sim import START_DELAY, SimClusterHandle
from orsim.testing import wait_for_mode
from orsim.wire import MemoryNetwork
from orsim.wire._transport import NonBlockingStream

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGY = ROOT / "scenarios" / "topologies" / "two-nodes.yaml"


def real_shape() -> tuple[set[str], set[str], set[str]]:
    """(top-level keys, app row keys, calls keys) of the real launcher's status."""
    entry = AppEntry(
        app="ORS_1", type="OrchestrationServer", host="127.0.0.1", public_port=1,
        private_port=2, tier=2, argv=("node",),
    )  # fmt: skip
    manifest = Manifest(
        cluster=None, config="c", served_config="c", run_dir="r", confserv_host="h",
        confserv_port=1, proxy_control_port=2, apps=(entry,),
    )  # fmt: skip
    status = cluster_status(manifest, {}, {}, {}, None)
    return set(status), set(status["apps"][0]), set(status["calls"])


def row(status: ClusterStatus, app: str) -> AppRow:
    return next(r for r in status["apps"] if r["app"] == app)


async def test_status_has_the_real_launchers_shape(
    orsim_cluster: Any, autojump_clock: trio.testing.MockClock
) -> None:
    top, app_keys, call_keys = real_shape()
    async with orsim_cluster(TOPOLOGY, sim=True) as cluster:
        assert isinstance(cluster, SimClusterHandle)
        status = await cluster.status()
        assert set(status) == top
        assert set(status["calls"]) == call_keys
        for r in status["apps"]:
            assert set(r) == app_keys, r["app"]
        apps = [r["app"] for r in status["apps"]]
        assert apps[:2] == ["confserv", "store"]  # the launcher's start order
        assert {"SIP_Server", "URS", "ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B"} <= set(apps)
        assert row(status, "store")["type"] == "SessionStore"
        ors = row(status, "ORS_1")
        assert (ors["type"], ors["mode"], ors["process"]) == (
            "OrchestrationServer", "primary", "running"
        )  # fmt: skip
        assert ors["node_id"] is not None and ors["cluster"] == status["cluster"]
        assert row(status, "ORS_1_B")["mode"] == "backup"
        assert isinstance(ors["pid"], int) and isinstance(ors["epoch"], int)
        assert status["calls"]["created"] == 0


async def test_signals_start_and_load(
    orsim_cluster: Any, autojump_clock: trio.testing.MockClock
) -> None:
    async with orsim_cluster(TOPOLOGY, sim=True, seed=3) as cluster:
        await cluster.load(50)
        await cluster.wait_for(lambda s: (s["calls"]["routed"] or 0) >= 20, 10)
        # STOP: no answer, process stopped; CONT: back as it was.
        await cluster.kill("store", "STOP")
        status = await cluster.status()
        assert (row(status, "store")["mode"], row(status, "store")["process"]) == (
            "down", "stopped"
        )  # fmt: skip
        with pytest.raises(ClusterError, match="stopped, not dead"):
            await cluster.start("store")
        await cluster.kill("store", "CONT")
        assert row(await cluster.status(), "store")["mode"] == "primary"
        # KILL: gone at once; the backup takes over; start takes the modelled start-up.
        await cluster.kill("ORS_1", "KILL")
        status = await cluster.status()
        assert (row(status, "ORS_1")["mode"], row(status, "ORS_1")["pid"]) == ("down", None)
        await wait_for_mode(cluster, "ORS_1_B", "primary", timeout=5)
        with pytest.raises(ClusterError, match="not running"):
            await cluster.kill("ORS_1", "CONT")
        before = trio.current_time()
        await cluster.start("ORS_1")
        assert trio.current_time() - before >= START_DELAY
        await wait_for_mode(cluster, "ORS_1", "backup", timeout=10)
        with pytest.raises(ClusterError, match="already running"):
            await cluster.start("ORS_1")
        await cluster.switchover("ORS_1")
        await wait_for_mode(cluster, "ORS_1", "primary", timeout=5)
        await cluster.stop_load()
        await trio.sleep(11)  # past the router-timeout: every call has ended
        ledger = await cluster.ledger(records=True)
        counts, records = ledger.counts, ledger.records or ()
        assert counts.lost == 0 and counts.duplicates == 0 and counts.in_flight == 0
        assert len(records) == counts.created > 20
        assert all(r.call_id.startswith("SIP_Server-s") for r in records)
        kinds = [e["kind"] for e in cluster.trace.entries]
        assert {"signal", "freeze", "thaw", "crash", "switchover", "mode"} <= set(kinds)


async def test_unknown_apps_and_signals_are_refused(
    orsim_cluster: Any, autojump_clock: trio.testing.MockClock
) -> None:
    async with orsim_cluster(TOPOLOGY, sim=True) as cluster:
        with pytest.raises(ClusterError, match="no application 'NOPE'"):
            await cluster.kill("NOPE")
        with pytest.raises(Exception, match="unknown signal"):
            await cluster.kill("ORS_1", "HUP")
        with pytest.raises(ClusterError, match="no Node"):
            await cluster.switchover("NOPE")


async def test_partition_and_confserv_restart(
    orsim_cluster: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """A live option change survives a Configuration Server restart (as its journal)."""
    async with orsim_cluster(TOPOLOGY, sim=True) as cluster:
        await cluster.set_option("ORS_Cluster_1", "orchestration", "call-watching-timeout", "700")
        await cluster.kill("confserv")
        assert row(await cluster.status(), "confserv")["mode"] == "down"
        await cluster.start("confserv")
        assert row(await cluster.status(), "confserv")["mode"] == "primary"
        db = cluster.sim.confserv.db
        assert (
            db.transactions["ORS_Cluster_1"].annex["orchestration"]["call-watching-timeout"]
            == "700"
        )
        await cluster.partition("ORS_1", "ORS_1_B")
        await trio.sleep(5)
        await cluster.partition("ORS_1", "ORS_1_B", heal=True)
        await trio.sleep(5)
        modes = {r["app"]: r["mode"] for r in (await cluster.status())["apps"]}
        assert sorted(modes[a] for a in ("ORS_1", "ORS_1_B")) == ["backup", "primary"]


# -- the network ---------------------------------------------------------------------


async def pair(net: MemoryNetwork) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    listener, port = await net.for_app("b").listen("b.sim", 0)
    client = await net.for_app("a").connect("b.sim", port)
    server = await listener.accept()
    return client, server


async def test_latency_delays_bytes_in_order(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.delay("a", "b", 0.3)
    start = trio.current_time()
    await client.send_all(b"one")
    net.delay("a", "b", 0)  # later bytes never overtake delayed ones
    await client.send_all(b"two")
    assert await server.receive_some() == b"onetwo"
    assert trio.current_time() - start == pytest.approx(0.3)
    await server.send_all(b"back")  # the delay was removed: no wait
    before = trio.current_time()
    assert await client.receive_some() == b"back"
    assert trio.current_time() == before
    assert net.latency("b", "a") == 0.0


async def test_latency_counts_against_the_buffer(autojump_clock: trio.testing.MockClock) -> None:
    net = MemoryNetwork(buffer_size=10)
    client, server = await pair(net)
    net.delay("a", "b", 1.0)
    assert isinstance(client, NonBlockingStream)
    assert client.send_nowait(b"x" * 25) == 10
    assert client.send_nowait(b"y") == 0
    assert await server.receive_some() == b"x" * 10


async def test_a_frozen_apps_close_is_seen_only_when_thawed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = MemoryNetwork()
    client, server = await pair(net)
    net.freeze("a")
    await client.aclose()  # its own timers may close a link while it is stopped
    with trio.move_on_after(5) as waited:
        await server.send_all(b"still accepted")  # no error: the peer looks alive
        await server.receive_some()
    assert waited.cancelled_caught
    net.freeze("a", resume=True)
    assert await server.receive_some() == b""  # now the close arrives
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")


async def test_a_restarting_app_is_down_until_its_new_node_answers(
    orsim_cluster: Any, autojump_clock: trio.testing.MockClock
) -> None:
    # Found by `orsim search` (seed 151): a sample taken just as the killed primary was
    # started again, while its new node read its Application, was answered with the
    # dead node's "primary", beside the backup that had taken over.
    async with orsim_cluster(TOPOLOGY, sim=True, seed=5) as cluster:
        await cluster.kill("ORS_1", "KILL")
        await wait_for_mode(cluster, "ORS_1_B", "primary")
        sim = cluster.sim
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sim.start, "ORS_1")
            while sim.processes.get("ORS_1") != "running":
                await trio.lowlevel.checkpoint()  # no time passes: the process just began
            r = row(await cluster.status(), "ORS_1")
            assert (r["process"], r["mode"], r["epoch"]) == ("running", "down", None)
        await wait_for_mode(cluster, "ORS_1", "backup")
