"""The launcher's pure parts: start plan, manifest, status assembly, log lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orsim.cluster import AppEntry, Manifest, RunDir
from orsim.cluster._plan import (
    CONFSERV_APP,
    STORE_TYPE,
    TIER_BACKUPS,
    TIER_PRIMARIES,
    TIER_SERVERS,
    cluster_name,
    plan_apps,
    rewrite_ports,
    sqlite_stores,
    store_names,
)
from orsim.cluster._render import format_log_line
from orsim.cluster._status import cluster_status, process_label
from orsim.cluster.cli import _merged
from orsim.config import load_database
from orsim.errors import ClusterError
from orsim.tserver import LedgerCounts


def topology(nodes: int, legacy: bool = False) -> str:
    """A database with ``nodes`` primary/backup pairs, one SIP Server and one URS."""
    data: dict[str, object] = {
        "tenants": ["Environment", "Resources"],
        "hosts": {"local": {"address": "127.0.0.1"}},
    }
    apps: dict[str, object] = {
        "SIP_Server": {
            "type": "SIPServer",
            "host": "local",
            "port": 7001,
            "options": {"routing-points": {"5000": "default"}},
        },
        "URS": {"type": "RoutingServer", "host": "local", "port": 7002},
    }
    conns = [
        {"server": "SIP_Server", "addp-timeout": 1, "addp-remote-timeout": 1},
        {"server": "URS", "addp-timeout": 1, "addp-remote-timeout": 1},
    ]
    members = {f"ORS_{n}": f"DC_{n}" for n in range(1, nodes + 1)}
    for n in range(1, nodes + 1):
        extra = {"options": {"cluster": members}} if legacy else {}
        apps[f"ORS_{n}"] = {
            "type": "OrchestrationServer",
            "host": "local",
            "port": 7100 + n * 2,
            "backup": f"ORS_{n}_B",
            "connections": conns,
            **extra,
        }
        apps[f"ORS_{n}_B"] = {
            "type": "OrchestrationServer",
            "host": "local",
            "port": 7101 + n * 2,
            "connections": conns,
            **extra,
        }
    data["applications"] = apps
    annex = {
        "cluster": members,
        "orchestration": {"call-watching-timeout": 500},
        "persistence": {"store": "sqlite:///sessions.db"},
    }
    if legacy:
        annex = {"persistence": {"store": "sqlite:///sessions.db"}}
        data["transactions"] = {}
    else:
        data["transactions"] = {
            "ORS_Cluster_1": {"type": "List", "tenant": "Environment", "annex": annex}
        }
    return yaml.safe_dump(data, sort_keys=False)


def plan(tmp_path: Path, text: str) -> tuple[AppEntry, ...]:
    path = tmp_path / "db.yaml"
    path.write_text(text)
    db = load_database(path)
    names = [*db.applications, CONFSERV_APP, *store_names(db, len(sqlite_stores(db)))]
    private = {name: 40000 + i for i, name in enumerate(names)}
    public = {name: app.port for name, app in db.applications.items()}
    return plan_apps(
        db,
        served_config=str(path),
        state_dir="/state",
        confserv_port=2020,
        public=public,
        private=private,
    )


def test_plan_orders_tiers_and_passes_cluster(tmp_path: Path) -> None:
    """Confserv first, then servers, primaries, backups; nodes get -cluster and node ids."""
    entries = plan(tmp_path, topology(2))
    assert [e.app for e in entries] == [
        "confserv",
        "store",
        "SIP_Server",
        "URS",
        "ORS_1",
        "ORS_2",
        "ORS_1_B",
        "ORS_2_B",
    ]
    assert [e.tier for e in entries] == sorted(e.tier for e in entries)
    ors1, ors1b = entries[4], entries[6]
    assert ors1.tier == TIER_PRIMARIES
    assert ors1b.tier == TIER_BACKUPS
    assert ors1.argv[-2:] == ("-cluster", "ORS_Cluster_1")
    assert ors1.argv[:5] == ("node", "-host", "127.0.0.1", "-port", "2020")
    assert ors1b.node_id == ors1.node_id
    assert ors1b.data_center == "DC_1"
    assert ors1b.primary == "ORS_1"
    assert ors1.backup == "ORS_1_B"
    assert entries[0].argv[:4] == ("confserv", str(tmp_path / "db.yaml"), "--port", "40006")
    assert not entries[0].listen_env
    assert ors1.listen_env
    assert cluster_name(entries) == "ORS_Cluster_1"


def test_plan_starts_one_store_server_per_sqlite_file(tmp_path: Path) -> None:
    """The nodes' SQLite file gets one managed store server, with the servers, on its own
    port (not behind the proxy), and a Redis store gets none."""
    entries = plan(tmp_path, topology(2))
    stores = [e for e in entries if e.type == STORE_TYPE]
    assert [e.app for e in stores] == ["store"]
    (store,) = stores
    assert store.argv == ("store", "serve", "sqlite:///sessions.db", "--port",
                          str(store.private_port), "--managed")  # fmt: skip
    assert store.public_port == store.private_port
    assert store.tier == TIER_SERVERS
    assert not store.listen_env
    redis = topology(2).replace("sqlite:///sessions.db", "redis://127.0.0.1:6390/0")
    assert not [e for e in plan(tmp_path, redis) if e.type == STORE_TYPE]


def test_legacy_cluster_has_no_cluster_flag(tmp_path: Path) -> None:
    """A legacy cluster section gives the data center, and nodes start without -cluster."""
    entries = plan(tmp_path, topology(1, legacy=True))
    node = next(e for e in entries if e.app == "ORS_1_B")
    assert "-cluster" not in node.argv
    assert node.cluster is None
    assert node.data_center == "DC_1"
    assert cluster_name(entries) is None


def test_rewrite_ports_copies() -> None:
    """Ports are replaced in a copy; the original stays as it was."""
    raw = yaml.safe_load(topology(1))
    out = rewrite_ports(raw, {"ORS_1": 1234})
    assert isinstance(out, dict)
    assert out["applications"]["ORS_1"]["port"] == 1234
    assert raw["applications"]["ORS_1"]["port"] == 7102


def test_manifest_round_trip_and_lookup(tmp_path: Path) -> None:
    """The manifest survives JSON, carries pids, and names the known apps on a miss."""
    entries = plan(tmp_path, topology(1))
    run = RunDir.at(tmp_path / "run")
    run.create()
    manifest = Manifest(
        cluster="C",
        config="a",
        served_config="b",
        run_dir=str(run.root),
        confserv_host="127.0.0.1",
        confserv_port=2020,
        proxy_control_port=9,
        apps=entries,
        pids={"ORS_1": 42},
    )
    run.write_manifest(manifest)
    again = run.read_manifest()
    assert again == manifest
    assert again.pids == {"ORS_1": 42}
    with pytest.raises(ClusterError, match="known: confserv"):
        again.entry("ORS_9")
    with pytest.raises(ClusterError, match="no cluster"):
        RunDir.at(tmp_path / "elsewhere").read_manifest()


def test_status_prefers_answers_and_marks_silent_apps_down(tmp_path: Path) -> None:
    """A node's own answer wins; a silent one is down with ledger counts; calls from ledger."""
    entries = plan(tmp_path, topology(1))
    manifest = Manifest(
        cluster="C",
        config="a",
        served_config="b",
        run_dir="r",
        confserv_host="h",
        confserv_port=1,
        proxy_control_port=2,
        apps=entries,
    )
    ledger = LedgerCounts(
        created=5, routed=4, lost=1, default_routed=0, duplicates=0, resent=0, stale=0,
        unknown=0, late=0, in_flight=0, by_app={"ORS_1": 3}, by_node={},
        latency_p50_ms=None, latency_p99_ms=None,
    )  # fmt: skip
    answers = {"ORS_1_B": {"mode": "primary", "sessions": 2, "calls_routed": 1, "epoch": 3}}
    status = cluster_status(
        manifest,
        answers,
        {"ORS_1": 7, "ORS_1_B": 8},
        {"ORS_1": "stopped", "ORS_1_B": "running"},
        ledger,
    )
    by_app = {a["app"]: a for a in status["apps"]}
    assert by_app["ORS_1"]["mode"] == "down"
    assert by_app["ORS_1"]["pid"] == 7
    assert by_app["ORS_1"]["calls_routed"] == 3
    assert by_app["ORS_1"]["process"] == "stopped"
    assert by_app["ORS_1_B"]["mode"] == "primary"
    assert by_app["ORS_1_B"]["sessions"] == 2
    assert by_app["confserv"]["pid"] is None
    assert status["calls"]["lost"] == 1
    assert status["cluster"] == "C"
    nothing = cluster_status(manifest, {}, {}, {}, None)
    assert nothing["calls"]["created"] is None
    assert process_label("T") == "stopped"
    assert process_label("Z") == "exited"
    assert process_label("S") == "running"
    assert process_label(None) == "exited"


def test_log_lines_are_readable_and_merged_in_time_order() -> None:
    """JSON lines show time, app, level, event, key=values; tracebacks stay with their event."""
    a = ['{"ts": "2024-01-01T10:00:02.000Z", "level": "info", "event": "b", "x": 1}']
    b = [
        '{"ts": "2024-01-01T10:00:01.000Z", "level": "warning", "event": "a", "s": "v"}',
        "Traceback (most recent call last):",
    ]
    merged = _merged({"A": a, "B": b})
    assert [app for app, _ in merged] == ["B", "B", "A"]
    text = format_log_line("B", b[0]).plain
    assert text.startswith("10:00:01.000")
    assert "B" in text
    assert "warning" in text
    assert text.endswith("a s=v")
    assert "Traceback" in format_log_line("B", b[1]).plain
