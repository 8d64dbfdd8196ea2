"""``orsim scenario run --store URL`` / ``ORSIM_STORE``, and the Redis library scenario.

The process tests run the real CLI on real clusters with a real ``redis-server`` (the
launcher starts it; skipped where it is not installed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TOPOLOGIES, free_ports

from orsim.cluster import AppEntry, ClusterStatus, Manifest, cluster_status
from orsim.errors import ClusterError
from orsim.scenario._store import RenamedApps
from orsim.tserver import CallLedger, LedgerReport

LIBRARY = ROOT / "scenarios"
needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)


class FakeCluster:
    """Records the verbs it gets (a ``ClusterLike``); its status has a ``redis`` row."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def status(self) -> ClusterStatus:
        entries = tuple(
            AppEntry(app=app, type=kind, host="", public_port=0, private_port=0, tier=0, argv=())
            for app, kind in (("redis", "Redis"), ("ORS_1", "x"))
        )
        manifest = Manifest(cluster=None, config="", served_config="", run_dir="",
                            confserv_host="", confserv_port=0, proxy_control_port=0,
                            apps=entries)  # fmt: skip
        return cluster_status(manifest, {}, {}, {}, None)

    async def kill(self, app: str, signal: str = "KILL") -> None:
        self.calls.append(("kill", app, signal))

    async def start(self, app: str) -> None:
        self.calls.append(("start", app))

    async def partition(self, a: str, b: str, heal: bool = False) -> None:
        self.calls.append(("partition", a, b))

    async def isolate(self, host: str, heal: bool = False) -> None:
        self.calls.append(("isolate", host))

    async def switchover(self, node: str) -> None:
        self.calls.append(("switchover", node))

    async def delay(self, a: str, b: str, ms: float) -> None:
        self.calls.append(("delay", a, b, str(ms)))

    async def load(self, rate: float, duration: float | None = None) -> None:
        self.calls.append(("load", str(rate), str(duration)))

    async def stop_load(self) -> None:
        self.calls.append(("stop_load",))

    async def ledger(self, records: bool = False) -> LedgerReport:
        return LedgerReport(CallLedger().counts())

    async def set_option(self, object: str, section: str, key: str, value: str) -> None:
        self.calls.append(("set_option", object, section, key, value))

    async def down(self) -> None:
        self.calls.append(("down",))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orsim.cli", "scenario", "run", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


async def test_renamed_apps_show_and_act_under_the_scenario_names() -> None:
    """The new store process answers to the old store's name, both ways."""
    fake = FakeCluster()
    cluster = RenamedApps(fake, {"store": "redis"}, "redis://127.0.0.1:1/0")
    assert [a["app"] for a in (await cluster.status())["apps"]] == ["store", "ORS_1"]
    await cluster.kill("store", "STOP")
    await cluster.start("store")
    await cluster.partition("ORS_1", "store")
    assert fake.calls == [
        ("kill", "redis", "STOP"),
        ("start", "redis"),
        ("partition", "ORS_1", "redis"),
    ]
    outside = RenamedApps(fake, {"store": None}, "redis://10.0.0.9:6379/0")
    with pytest.raises(ClusterError, match=r"10\.0\.0\.9.*outside this cluster"):
        await outside.kill("store")


def test_bad_store_url_and_sim_are_refused_in_one_line(tmp_path: Path) -> None:
    """A URL that is no store: exit 3 before anything runs; --store with --sim: exit 2;
    ORSIM_STORE under --sim is left aside with a note."""
    scenario = str(LIBRARY / "backup-crash.yaml")
    bad = run_cli(scenario, "--store", "mongodb://x", "--run-dir", str(tmp_path))
    assert bad.returncode == 3 and "persistence/store" in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    sim = run_cli(scenario, "--sim", "--store", "redis://127.0.0.1:1/0", "--run-dir", str(tmp_path))
    assert sim.returncode == 2 and "--sim" in sim.stderr, sim.stderr
    env = {"ORSIM_STORE": "redis://127.0.0.1:1/0"}
    ok = run_cli(scenario, "--sim", "--run-dir", str(tmp_path), env=env)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr
    assert "ORSIM_STORE is not used" in ok.stderr


@needs_redis
@pytest.mark.slow
def test_orsim_store_runs_a_sqlite_scenario_on_redis(tmp_path: Path) -> None:
    """ORSIM_STORE=redis://...: a scenario written for the SQLite store server runs on a
    Redis the launcher starts, and its ``stop: store`` / ``continue: store`` freeze and
    resume that Redis; 0 lost, 0 duplicated."""
    scenario = tmp_path / "store-freeze.yaml"
    scenario.write_text(
        yaml.safe_dump(
            {
                "name": "store-freeze",
                "topology": str(TOPOLOGIES / "two-nodes.yaml"),
                "seed": 3,
                "steps": [
                    {"load": {"rate": 30}},
                    {"wait": {"ledger": "routed", "at_least": 20, "timeout": 10}},
                    {"stop": "store"},
                    {"sleep": 2},
                    {"continue": "store"},
                    {"expect": {"app": "store", "mode": "primary", "within": 5}},
                    {"sleep": 1},
                    {"load": "stop"},
                    {"expect": {"calls_lost": 0}},
                    {"expect": {"calls_duplicated": 0}},
                ],
            },
            sort_keys=False,
        )
    )
    url = f"redis://127.0.0.1:{free_ports(1)[0]}/0"
    runs = tmp_path / "runs"
    proc = run_cli(str(scenario), "--run-dir", str(runs), env={"ORSIM_STORE": url})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "3 passed, 0 failed"
    assert "FAULT stop store (SIGSTOP)" in proc.stdout
    run = runs / "store-freeze"
    served = yaml.safe_load((run / "config.yaml").read_text())
    store = served["transactions"]["ORS_Cluster_1"]["annex"]["persistence"]["store"]
    assert store.startswith("redis://127.0.0.1:")
    assert (run / "logs" / "redis.jsonl").read_text().count("Ready to accept connections") == 1
    # The frozen Redis was the nodes' store: its calls missed their deadline meanwhile.
    assert any("store_degraded" in log.read_text() for log in run.glob("logs/ORS_*.jsonl"))
    assert not list(run.glob("pids/*.pid"))  # the Redis was stopped with the cluster


@needs_redis
@pytest.mark.slow
def test_library_redis_restart_under_load_passes(tmp_path: Path) -> None:
    """scenarios/redis-restart-under-load.yaml on real processes: Redis killed under load
    and started again empty, then a primary crash; every expectation holds."""
    proc = run_cli(str(LIBRARY / "redis-restart-under-load.yaml"), "--run-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].endswith("passed, 0 failed")
    assert "FAULT kill redis (SIGKILL)" in proc.stdout
    assert "REPAIR start redis" in proc.stdout
