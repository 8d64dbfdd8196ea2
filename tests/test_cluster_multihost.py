"""One topology, several machines: ``orsim cluster up CONFIG --host NAME`` per host.

Tested on one machine with three hosts on loopback addresses, each with its own run
directory, as three machines would run it: the Configuration Server's host first, the
others with its cluster key. Real processes over real TCP and a real ``redis-server``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from helpers import ROOT, TOPOLOGIES, free_ports

from orsim.cluster import AppRow, ClusterHandle, ClusterStatus, Manifest, plan_apps
from orsim.cluster._handle import _proxy_routes
from orsim.config import load_database
from orsim.errors import ClusterError, ConfigError, UsageError
from orsim.tserver import LedgerReport

#: Three hosts of one machine (addresses no other test uses).
ADDRESSES = {"hq": "127.0.0.41", "east": "127.0.0.42", "west": "127.0.0.43"}
PLACES = {"SIP_Server": "hq", "URS": "hq", "ORS_1": "east", "ORS_1_B": "east",
          "ORS_2": "west", "ORS_2_B": "west"}  # fmt: skip
EVERY_APP = {"confserv", "redis", *PLACES}

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


def three_host_topology(path: Path, store: str | None = None) -> tuple[Path, int]:
    """The demo cluster on hosts hq (SIP Server, URS, so the Configuration Server, and the
    Redis store), east (Node ORS_1) and west (Node ORS_2), every port free; returns the
    file and the Configuration Server's port."""
    doc = yaml.safe_load((TOPOLOGIES / "demo.yaml").read_text())
    ports = free_ports(len(doc["applications"]) + 2)
    doc["hosts"] = {name: {"address": address} for name, address in ADDRESSES.items()}
    for (name, app), port in zip(doc["applications"].items(), ports, strict=False):
        app["host"], app["port"] = PLACES[name], port
    url = store or f"redis://{ADDRESSES['hq']}:{ports[-2]}/0"
    doc["transactions"]["ORS_Cluster_1"]["annex"]["persistence"] = {"store": url}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, ports[-1]


def orsim(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orsim.cli", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def rows(status: ClusterStatus) -> dict[str, AppRow]:
    return {a["app"]: a for a in status["apps"]}


def ready(status: ClusterStatus) -> bool:
    modes = {a: r["mode"] for a, r in rows(status).items()}
    return all(m in ("primary", "backup") for m in modes.values()) and sorted(
        modes[a] for a in ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B")
    ) == ["backup", "backup", "primary", "primary"]


# -- the plan (pure) ---------------------------------------------------------------------------


def test_a_host_plan_runs_its_own_apps_and_lists_the_others(tmp_path: Path) -> None:
    """With ``local_host``, every app placed elsewhere is remote, asked at its public
    port; the Configuration Server lives with the T-Server (-host of every server); the
    host's fault proxy carries only its own apps."""
    config, _ = three_host_topology(tmp_path / "db.yaml")
    db = load_database(config)
    names = [*PLACES, "confserv"]
    public = {a: 7000 + i for i, a in enumerate(PLACES)}
    private = {a: 9000 + i for i, a in enumerate(names)}
    entries = plan_apps(db, served_config=str(config), state_dir="s", confserv_port=2020,
                        public=public, private=private, local_host="east")  # fmt: skip
    by_app = {e.app: e for e in entries}
    assert set(by_app) == EVERY_APP
    assert {a for a, e in by_app.items() if not e.remote} == {"ORS_1", "ORS_1_B"}
    assert by_app["ORS_2"].private_port == by_app["ORS_2"].public_port == public["ORS_2"]
    assert by_app["ORS_1"].private_port == private["ORS_1"]
    confserv = by_app["confserv"]
    assert (confserv.host_name, confserv.host) == ("hq", ADDRESSES["hq"])
    assert ("-host", ADDRESSES["hq"]) == by_app["ORS_1"].argv[1:3]
    assert by_app["redis"].host_name == "hq" and by_app["redis"].remote
    manifest = Manifest(cluster="ORS_Cluster_1", config="c", served_config="c", run_dir="r",
                        confserv_host=ADDRESSES["hq"], confserv_port=2020,
                        proxy_control_port=1, apps=entries, host="east")  # fmt: skip
    routes = [r.app for r in _proxy_routes(manifest)]
    assert sorted(routes) == ["ORS_1", "ORS_1_B"]


async def test_up_host_refuses_what_cannot_span_machines(tmp_path: Path) -> None:
    """An unknown host, ``--ports auto`` and a SQLite store shared by Nodes of two hosts
    are refused before anything starts, each saying why."""
    config, _ = three_host_topology(tmp_path / "db.yaml")
    with pytest.raises(ConfigError, match=r"no host 'north'.*hosts: east, hq, west"):
        await ClusterHandle.up(config, tmp_path / "a", host="north")
    with pytest.raises(UsageError, match="use them as given"):
        await ClusterHandle.up(config, tmp_path / "b", ports="auto", host="east")
    sqlite, _ = three_host_topology(tmp_path / "sqlite.yaml", store="sqlite:///sessions.db")
    with pytest.raises(ConfigError, match=r"hosts east, west.*Redis store"):
        await ClusterHandle.up(sqlite, tmp_path / "c", host="east")
    for refused in ("a", "b", "c"):  # refused before the run directory was made
        assert not (tmp_path / refused / "manifest.json").exists()


def test_up_key_file_must_hold_a_key(tmp_path: Path) -> None:
    """``--key-file`` that is missing or empty is a usage error (exit 2), one line."""
    config, _ = three_host_topology(tmp_path / "db.yaml")
    (tmp_path / "empty.key").write_text("\n")
    for key_file in (tmp_path / "missing.key", tmp_path / "empty.key"):
        proc = orsim("cluster", "up", str(config), "--host", "east", "--key-file",
                     str(key_file), "--run-dir", str(tmp_path / "run"))  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert "--key-file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


# -- three hosts, one cluster --------------------------------------------------------------------


@pytest.mark.slow
@needs_redis
async def test_three_hosts_form_one_cluster_that_fails_over(tmp_path: Path) -> None:
    """Three ``up --host`` (hq first; east with ``--key-file``, west with
    ``$ORSIM_CLUSTER_KEY``; one without the key is refused) form one cluster: status
    from any run directory shows every app with its host; a kill on another host's run
    directory is refused, saying where; under load through hq's T-Server, a SIGKILL of
    ORS_1 on east's fails over to ORS_1_B, and isolating west from hq's run directory
    reaches every host's proxy; 0 calls lost, 0 duplicated."""
    config, confserv_port = three_host_topology(tmp_path / "db.yaml")
    dirs = {host: tmp_path / host for host in ADDRESSES}
    up = ("cluster", "up", str(config), "--detach", "--confserv-port", str(confserv_port))
    try:
        proc = orsim(*up, "--host", "hq", "--run-dir", str(dirs["hq"]))
        assert proc.returncode == 0, proc.stderr[-3000:]
        key_file = dirs["hq"] / "cluster.key"
        # Without hq's key, east's servers would be refused by everyone: up says so and
        # starts nothing.
        proc = orsim(*up, "--host", "east", "--run-dir", str(tmp_path / "keyless"))
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "is not the one of the cluster on host hq" in proc.stderr
        assert not list((tmp_path / "keyless" / "pids").glob("*.pid"))
        proc = orsim(*up, "--host", "east", "--run-dir", str(dirs["east"]),
                     "--key-file", str(key_file))  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        proc = orsim(*up, "--host", "west", "--run-dir", str(dirs["west"]),
                     env={"ORSIM_CLUSTER_KEY": key_file.read_text().strip()})  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        for run_dir in dirs.values():
            key = run_dir / "cluster.key"
            assert key.read_text() == key_file.read_text()
            assert stat.S_IMODE(key.stat().st_mode) == 0o600

        hq, east, west = (ClusterHandle.attach(dirs[h]) for h in ("hq", "east", "west"))
        await west.wait_for(ready, timeout=20)
        proc = orsim("cluster", "status", "--json", "--run-dir", str(dirs["west"]))
        assert proc.returncode == 0, proc.stderr
        status = json.loads(proc.stdout)
        assert status["host"] == "west"
        seen = rows(status)
        assert set(seen) == EVERY_APP
        for app, row in seen.items():
            host = "hq" if app in ("confserv", "redis") else PLACES[app]
            assert row["host_name"] == host and row["host"] == ADDRESSES[host]
            assert row["remote"] == (host != "west")
            assert row["mode"] == ("backup" if app.endswith("_B") else "primary")
            if app != "redis":  # a Redis says no pid (PING only) when not ours
                assert isinstance(row["pid"], int)  # its own answer, from its machine

        await east.load(rate=40)  # the T-Server is hq's: asked through hq's proxy
        await east.wait_for(lambda s: (s["calls"]["routed"] or 0) >= 40, timeout=15)
        with pytest.raises(ClusterError, match="ORS_1 runs on host east"):
            await hq.kill("ORS_1")
        killed = time.time()
        await east.kill("ORS_1")
        after = await hq.wait_for(lambda s: rows(s)["ORS_1_B"]["mode"] == "primary", 10)
        # ORS_1_B's own clock of its takeover (mode_since, wall time on the same machine):
        # a killed primary's closed socket is seen at once, not after an ADDP timeout.
        since = rows(after)["ORS_1_B"]["mode_since"]
        assert since is not None
        gap = since - killed
        print(f"three hosts: ORS_1_B primary {gap * 1000:.0f} ms after the SIGKILL of ORS_1")
        assert 0 < gap < 2.0
        # The new primary routes Node ORS_1's calls.
        await east.wait_for(lambda s: (rows(s)["ORS_1_B"]["calls_routed"] or 0) >= 5, 15)

        proc = orsim("cluster", "isolate", "west", "--run-dir", str(dirs["hq"]))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "west: isolated from every other host"
        for host in ADDRESSES:  # every host's proxy has the cut (each carries a share)
            assert len((await hq.proxy_status(host))["partitions"]) == 2 * 5
        node_2 = rows(await hq.status())["ORS_2"]["node_id"]
        await _until_live_nodes(hq, "ORS_1_B", lambda nodes: node_2 not in nodes)
        await west.isolate("west", heal=True)
        for host in ADDRESSES:
            assert (await west.proxy_status(host))["partitions"] == []
        await _until_live_nodes(hq, "ORS_1_B", lambda nodes: node_2 in nodes)

        await east.stop_load()
        ledger = await _settled(hq)
        print(f"three hosts: {ledger.counts.created} calls, {ledger.counts.lost} lost, "
              f"{ledger.counts.duplicates} duplicated")  # fmt: skip
        assert ledger.counts.created >= 80
        assert ledger.counts.lost == 0 and ledger.counts.duplicates == 0, ledger
    finally:
        for host in ("west", "east", "hq"):
            orsim("cluster", "down", "--run-dir", str(dirs[host]))
    for run_dir in dirs.values():
        assert not list((run_dir / "pids").glob("*.pid"))


async def _until_live_nodes(
    cluster: ClusterHandle, app: str, holds: Any, timeout: float = 10
) -> None:
    """Until ``holds(app's live_nodes)``, asked of the app over the wire."""
    with trio.fail_after(timeout):
        while not holds((await cluster.request(app, "status"))["live_nodes"]):
            await trio.sleep(0.1)


async def _settled(cluster: ClusterHandle, timeout: float = 30) -> LedgerReport:
    with trio.fail_after(timeout):
        while (ledger := await cluster.ledger()).counts.in_flight:
            await trio.sleep(0.2)
    return ledger
