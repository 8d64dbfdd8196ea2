"""Applications on their hosts: each listens on its host's address, a partition may
name two hosts (every link between their applications is cut), and ``isolate`` cuts a
host off from every other; in the simulation as with real processes."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from helpers import ROOT, TOPOLOGIES, node_id, settle

from orsim.cluster import AppEntry, AppRow, ClusterHandle, ClusterStatus, Manifest
from orsim.cluster._hosts import isolate_sides, link_sides
from orsim.errors import ClusterError
from orsim.sim import SimClusterHandle

EAST, WEST = ("ORS_1", "ORS_1_B"), ("ORS_2", "ORS_2_B")


def entry(app: str, host_name: str | None, type: str = "OrchestrationServer") -> AppEntry:
    return AppEntry(app=app, type=type, host="127.0.0.1", public_port=1, private_port=2,
                    tier=2, argv=(), host_name=host_name)  # fmt: skip


MANIFEST = Manifest(
    cluster="C", config="c.yaml", served_config="c.yaml", run_dir="run",
    confserv_host="127.0.0.1", confserv_port=2020, proxy_control_port=1,
    apps=(entry("confserv", None, "ConfigurationServer"), entry("store", None, "SessionStore"),
          entry("redis", "east", "Redis"), entry("SIP_Server", "local", "SIPServer"),
          entry("ORS_1", "east"), entry("ORS_1_B", "east"), entry("ORS_2", "west"),
          entry("ORS_2_B", "west"), entry("west", "local", "RoutingServer")),
)  # fmt: skip


def test_a_host_stands_for_its_proxied_applications() -> None:
    """A host is every application on it but the store processes (not behind the proxy);
    an application of the same name as a host wins; a name must exist and differ."""
    assert link_sides(MANIFEST, "east", "local").to_json() == {
        "a": ["ORS_1", "ORS_1_B"],
        "b": ["SIP_Server", "west"],
    }
    assert link_sides(MANIFEST, "ORS_1", "west").to_json() == {"a": ["ORS_1"], "b": ["west"]}
    with pytest.raises(ClusterError, match=r"no application or host 'x'.*hosts: east, local"):
        link_sides(MANIFEST, "east", "x")
    with pytest.raises(ClusterError, match="named twice"):
        link_sides(MANIFEST, "east", "east")


def test_isolate_is_a_host_against_every_other_host() -> None:
    """``isolate east``: east's applications against every proxied application elsewhere
    (the Configuration Server, on no host here, included; the store processes not); a
    name that is no host with applications, or a host alone, is refused."""
    assert isolate_sides(MANIFEST, "east").to_json() == {
        "a": ["ORS_1", "ORS_1_B"],
        "b": ["confserv", "SIP_Server", "ORS_2", "ORS_2_B", "west"],
    }
    with pytest.raises(ClusterError, match=r"no host 'ORS_1'.*hosts: east, local, west"):
        isolate_sides(MANIFEST, "ORS_1")
    alone = Manifest(
        **{
            **attrs.asdict(MANIFEST, recurse=False),
            "apps": (entry("ORS_1", "east"), entry("store", None, "SessionStore")),
        }
    )
    with pytest.raises(ClusterError, match="nothing to cut it from"):
        isolate_sides(alone, "east")


async def test_host_faults_in_the_simulation(autojump_clock: trio.testing.MockClock) -> None:
    """The simulation cuts what the proxy would: every pair of a host partition or an
    isolate at once, each recorded in the trace; heal restores every one of them."""
    async with trio.open_nursery() as nursery:
        sim = await SimClusterHandle.up(TOPOLOGIES / "demo.yaml", nursery=nursery, seed=1)
        try:
            await sim.isolate("west")
            cut = {(e["a"], e["b"]) for e in sim.trace.entries if e["kind"] == "partition"}
            assert cut == {(w, o) for w in WEST for o in
                           ("confserv", "SIP_Server", "URS", *EAST)}  # fmt: skip
            assert sim.sim.net.blocked("SIP_Server", "ORS_2")
            await sim.isolate("west", heal=True)
            assert not sim.sim.net.blocked("SIP_Server", "ORS_2")
            await sim.partition("east", "west")
            assert sim.sim.net.blocked("ORS_1", "ORS_2_B")
            assert not sim.sim.net.blocked("ORS_1", "SIP_Server")
        finally:
            await sim.down()


@pytest.mark.slow
def test_the_datacenter_split_scenario_passes_on_real_processes(tmp_path: Any) -> None:
    """``scenarios/datacenter-split.yaml`` (a host partition, then an isolate, under load)
    passes through the real CLI: 0 lost, 0 duplicated, never a lasting double primary."""
    proc = subprocess.run(
        [sys.executable, "-m", "orsim.cli", "scenario", "run",
         str(ROOT / "scenarios" / "datacenter-split.yaml"), "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "FAULT isolate host west from every other host" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "3 passed, 0 failed"


def rows(status: ClusterStatus) -> dict[str, AppRow]:
    return {a["app"]: a for a in status["apps"]}


def refused(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


@pytest.mark.slow
async def test_demo_hosts_listen_apart_and_a_host_partition_cuts_them(tmp_path: Any) -> None:
    """The demo's data centers are hosts 127.0.0.2 and 127.0.0.3: each application listens
    there and only there. ``partition east west`` under load makes each side see only its
    own Node (both route on: 0 lost, 0 duplicated, one primary per Node); heal joins them."""
    cluster = await ClusterHandle.up(TOPOLOGIES / "demo.yaml", tmp_path / "run", ports="auto")
    try:
        status = await cluster.status()
        for app, address in [*((a, "127.0.0.2") for a in EAST), *((a, "127.0.0.3") for a in WEST)]:
            row = rows(status)[app]
            assert row["host"] == address
            for port in (row["public_port"], row["private_port"]):
                assert not refused(address, port)
                assert refused("127.0.0.1", port)
        node_1, node_2 = node_id(rows(status)["ORS_1"]), node_id(rows(status)["ORS_2"])
        await cluster.load(rate=40, duration=8)
        await cluster.partition("east", "west")
        cut = await cluster.proxy_status()
        assert len(cut["partitions"]) == len(EAST) * len(WEST)
        await _wait_live_nodes(cluster, {"ORS_1": [node_1], "ORS_2": [node_2]})
        await cluster.partition("east", "west", heal=True)
        assert (await cluster.proxy_status())["partitions"] == []
        both = sorted([node_1, node_2])
        await _wait_live_nodes(cluster, {"ORS_1": both, "ORS_2": both})
        ledger = await settle(cluster, 320, timeout=30)
        assert ledger.counts.lost == 0 and ledger.counts.duplicates == 0, ledger
        modes = {a: rows(await cluster.status())[a]["mode"] for a in (*EAST, *WEST)}
        assert sorted(modes.values()) == ["backup", "backup", "primary", "primary"]
        assert {modes["ORS_1"], modes["ORS_1_B"]} == {"primary", "backup"}
    finally:
        await cluster.down()


async def _wait_live_nodes(
    cluster: ClusterHandle, expected: dict[str, list[int]], timeout: float = 10
) -> None:
    """Until each application's own ``live_nodes`` is as ``expected``."""
    with trio.fail_after(timeout):
        while True:
            seen = {app: (await cluster.request(app, "status"))["live_nodes"] for app in expected}
            if {app: sorted(nodes) for app, nodes in seen.items()} == expected:
                return
            await trio.sleep(0.1)
