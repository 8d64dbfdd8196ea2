"""Loading the YAML database: model building and every rule of SPEC section 2."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orsim.config import ConfigDatabase, check_node_cluster, lint_text, load_database
from orsim.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scenarios" / "topologies" / "demo.yaml"
ORSIM = ROOT / ".venv" / "bin" / "orsim"


def ors(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "OrchestrationServer",
        "host": "h",
        "port": port,
        "connections": ["SIP", "URS"],
        **extra,
    }


def base() -> dict[str, Any]:
    """A small valid database: two Nodes of a cluster list."""
    return {
        "tenants": ["Environment", "Resources"],
        "hosts": {"h": {"address": "127.0.0.1"}},
        "applications": {
            "SIP": {"type": "SIPServer", "host": "h", "port": 7001},
            "URS": {"type": "RoutingServer", "host": "h", "port": 7002},
            "ORS_1": ors(7101, backup="ORS_1_B"),
            "ORS_1_B": ors(7102),
            "ORS_2": ors(7201, backup="ORS_2_B"),
            "ORS_2_B": ors(7202),
        },
        "transactions": {
            "C1": {
                "type": "List",
                "tenant": "Environment",
                "annex": {
                    "cluster": {"ORS_1": "DC_East", "ORS_2": "DC_West"},
                    "persistence": {"store": "sqlite:///s.db"},
                },
            }
        },
    }


def lint(data: dict[str, Any]) -> list[str]:
    return list(lint_text(yaml.safe_dump(data, sort_keys=False), "t.yaml").problems)


def one_problem(data: dict[str, Any], *needles: str) -> str:
    """Exactly one problem, naming the file and every needle."""
    problems = lint(data)
    assert len(problems) == 1, problems
    assert problems[0].startswith("t.yaml:"), problems
    for needle in needles:
        assert needle in problems[0], problems
    return problems[0]


class TestModel:
    def test_demo_loads_with_derived_primaries_and_stable_dbids(self) -> None:
        """The shipped demo database is valid; backups know their primary; DBIDs repeat."""
        first = load_database(DEMO)
        second = load_database(DEMO)
        assert isinstance(first, ConfigDatabase)
        assert [a.dbid for a in first.applications.values()] == [
            a.dbid for a in second.applications.values()
        ]
        assert len({a.dbid for a in first.applications.values()}) == len(first.applications)
        assert first.applications["ORS_1_B"].primary == "ORS_1"
        assert first.applications["ORS_1"].primary is None
        assert first.applications["ORS_1"].backup == "ORS_1_B"
        assert first.applications["ORS_1"].address == "127.0.0.2"  # host east
        assert first.transactions["ORS_Cluster_1"].cluster_members == {
            "ORS_1": "DC_East",
            "ORS_2": "DC_West",
        }
        assert first.list_tenant == "Environment"

    def test_scalars_become_strings_and_connections_take_both_forms(self) -> None:
        """Numbers, booleans and nulls are option strings; a connection may carry ADDP."""
        data = base()
        data["applications"]["ORS_1"]["options"] = {
            "orchestration": {"call-watching-timeout": 1500, "flag": True, "empty": None},
            "x": {"ratio": 0.5},
        }
        data["applications"]["ORS_1"]["connections"] = [
            "SIP",
            {"server": "URS", "addp-timeout": 3, "addp-remote-timeout": 1.5, "addp-trace": "both"},
        ]
        result = lint_text(yaml.safe_dump(data), "t.yaml")
        assert result.problems == ()
        assert result.database is not None
        app = result.database.applications["ORS_1"]
        assert app.options["orchestration"] == {
            "call-watching-timeout": "1500",
            "flag": "true",
            "empty": "",
        }
        assert app.options["x"] == {"ratio": "0.5"}
        urs = app.connection_to("URS")
        assert urs is not None
        assert (urs.addp_timeout, urs.addp_remote_timeout, urs.addp_trace) == (3.0, 1.5, "both")
        sip = app.connection_to("SIP")
        assert sip is not None
        assert sip.addp_timeout == 0.0

    def test_routing_point_keys_are_strings(self) -> None:
        """`{5000: default}` names DN "5000"."""
        data = base()
        data["applications"]["SIP"]["options"] = {"routing-points": {5000: "default"}}
        result = lint_text(yaml.safe_dump(data), "t.yaml")
        assert result.database is not None
        assert result.database.applications["SIP"].options["routing-points"] == {"5000": "default"}

    def test_load_database_raises_with_every_problem(self, tmp_path: Path) -> None:
        """load_database names every problem in ConfigError.problems."""
        data = base()
        data["applications"]["SIP"]["port"] = 70000
        data["applications"]["URS"]["host"] = "nowhere"
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as info:
            load_database(path)
        assert len(info.value.problems) == 2
        assert all(str(path) in p for p in info.value.problems)

    def test_missing_file_and_bad_yaml(self, tmp_path: Path) -> None:
        """An unreadable file or broken YAML is one located problem."""
        with pytest.raises(ConfigError, match="cannot read"):
            load_database(tmp_path / "missing.yaml")
        problems = lint_text("a: [1, 2\nb: 3\n", "x.yaml").problems
        assert len(problems) == 1
        assert problems[0].startswith("x.yaml:")
        assert "not valid YAML" in problems[0]


class TestRules:
    def test_valid_base(self) -> None:
        assert lint(base()) == []

    def test_line_numbers_name_the_key(self) -> None:
        """The message names file:line of the offending key, the object and the key."""
        text = (
            "hosts:\n"
            "  h: {address: 127.0.0.1}\n"
            "applications:\n"
            "  URS:\n"
            "    type: RoutingServer\n"
            "    host: h\n"
            "    port: 99999\n"
        )
        problems = lint_text(text, "f.yaml").problems
        assert problems == (
            "f.yaml:7: application 'URS': port: port 99999 is out of range 1-65535",
        )

    def test_unknown_host(self) -> None:
        data = base()
        data["applications"]["URS"]["host"] = "hostB"
        one_problem(data, "application 'URS'", "host", "'hostB' is not defined")

    def test_unknown_connection(self) -> None:
        data = base()
        data["applications"]["SIP"]["connections"] = ["Nobody"]
        one_problem(data, "application 'SIP'", "connections", "'Nobody' is not an application")

    def test_app_type(self) -> None:
        data = base()
        data["applications"]["URS"]["type"] = "Router"
        problems = lint(data)  # the ORS apps then lack a RoutingServer too
        assert problems[0].startswith("t.yaml:"), problems
        assert "application 'URS': type: unknown application type 'Router'" in problems[0]

    @pytest.mark.parametrize("port", [0, 65536, "abc", -5])
    def test_port_range(self, port: object) -> None:
        data = base()
        data["applications"]["URS"]["port"] = port
        one_problem(data, "application 'URS'", ": port:")

    def test_port_clash(self) -> None:
        data = base()
        data["applications"]["URS"]["port"] = 7001
        one_problem(data, "application 'URS'", "already used by application 'SIP'")

    def test_backup_must_exist(self) -> None:
        data = base()
        data["applications"]["ORS_1"]["backup"] = "ORS_X"
        problems = lint(data)
        assert any(
            "application 'ORS_1': backup: backup 'ORS_X' is not an application" in p
            for p in problems
        ), problems

    def test_backup_same_type(self) -> None:
        data = base()
        data["applications"]["URS"]["backup"] = "SIP"
        one_problem(data, "application 'URS'", "backup", "same type")

    def test_backup_not_itself(self) -> None:
        data = base()
        data["applications"]["URS"]["backup"] = "URS"
        one_problem(data, "application 'URS'", "backup", "its own backup")

    def test_backup_not_circular(self) -> None:
        data = base()
        data["applications"]["ORS_1_B"]["backup"] = "ORS_1"
        problems = lint(data)
        assert any("circular" in p and "application 'ORS_1'" in p for p in problems), problems

    def test_backup_shared_by_two_primaries(self) -> None:
        data = base()
        data["applications"]["ORS_2"]["backup"] = "ORS_1_B"
        problems = lint(data)
        assert any("already the backup of 'ORS_1'" in p for p in problems), problems

    def test_list_type(self) -> None:
        data = base()
        data["transactions"]["C1"]["type"] = "Folder"
        one_problem(data, "transaction 'C1'", "type", "'Folder' is not supported")

    def test_list_tenant_multi_tenant(self) -> None:
        data = base()
        data["transactions"]["C1"]["tenant"] = "Resources"
        one_problem(
            data, "transaction 'C1'", "tenant", "under tenant 'Environment'", "multi-tenant"
        )

    def test_list_tenant_single_tenant(self) -> None:
        data = base()
        data["tenants"] = ["Resources"]
        data["transactions"]["C1"]["tenant"] = "Environment"
        one_problem(data, "transaction 'C1'", "tenant", "under tenant 'Resources'", "single-tenant")

    def test_members_must_be_existing_ors_primaries(self) -> None:
        data = base()
        data["transactions"]["C1"]["annex"]["cluster"] = {
            "ORS_1": "DC",
            "ORS_2": "DC",
            "Ghost": "DC",
            "URS": "DC",
            "ORS_1_B": "DC",
        }
        problems = lint(data)
        assert len(problems) == 3, problems
        assert all("transaction 'C1': annex/cluster/" in p for p in problems)
        joined = "\n".join(problems)
        assert "'Ghost' is not an application" in joined
        assert "'URS' is a RoutingServer" in joined
        assert "'ORS_1_B' is the backup of 'ORS_1'" in joined

    def test_list_needs_cluster_section(self) -> None:
        data = base()
        del data["transactions"]["C1"]["annex"]["cluster"]
        one_problem(data, "transaction 'C1'", "needs a 'cluster' section")

    @pytest.mark.parametrize("section", ["log", "log-extended", "log-filter"])
    def test_log_sections_rejected_in_list(self, section: str) -> None:
        data = base()
        data["transactions"]["C1"]["annex"][section] = {"verbose": "all"}
        one_problem(data, "transaction 'C1'", f"annex/{section}/verbose", "logging section")

    def test_system_id_rejected_in_list(self) -> None:
        data = base()
        data["transactions"]["C1"]["annex"]["scxml"] = {"system-id": "X", "max-depth": 5}
        one_problem(data, "transaction 'C1'", "annex/scxml/system-id", "not allowed")

    def test_other_sections_rejected_in_list(self) -> None:
        data = base()
        data["transactions"]["C1"]["annex"]["TServer"] = {"x": 1}
        one_problem(data, "transaction 'C1'", "annex/TServer/x", "not allowed in a cluster list")

    @pytest.mark.parametrize(
        "section",
        ["orchestration", "scxml", "persistence", "elasticsearch", "performance-alarms", "mcr"],
    )
    def test_allowed_sections_in_list(self, section: str) -> None:
        data = base()
        data["transactions"]["C1"]["annex"][section] = {"some-option": "1"}
        assert lint(data) == []

    def test_exactly_one_urs_per_ors(self) -> None:
        data = base()
        data["applications"]["URS_B"] = {"type": "RoutingServer", "host": "h", "port": 7003}
        data["applications"]["ORS_2"]["connections"] = ["SIP", "URS", "URS_B"]
        one_problem(
            data,
            "application 'ORS_2'",
            "connections",
            "application 'ORS_2' lists 2 RoutingServer connections (URS, URS_B); "
            "an ORS node must have exactly one",
        )

    def test_no_urs(self) -> None:
        data = base()
        data["applications"]["ORS_2_B"]["connections"] = ["SIP"]
        one_problem(data, "application 'ORS_2_B'", "no RoutingServer connection")

    def test_nodes_may_have_different_urs(self) -> None:
        """8.1.3 allows each Node its own URS."""
        data = base()
        data["applications"]["URS_B"] = {"type": "RoutingServer", "host": "h", "port": 7003}
        data["applications"]["ORS_2"]["connections"] = ["SIP", "URS_B"]
        assert lint(data) == []

    def test_same_tserver_across_nodes(self) -> None:
        data = base()
        data["applications"]["SIP_B"] = {"type": "SIPServer", "host": "h", "port": 7004}
        data["applications"]["ORS_2_B"]["connections"] = ["SIP_B", "URS"]
        one_problem(
            data,
            "transaction 'C1'",
            "annex/cluster/ORS_2",
            "'ORS_2_B' serves T-Server SIP_B",
            "same T-Server",
        )

    def test_same_store_across_nodes_with_effective_options(self) -> None:
        """An application's own store is overridden by the list's; a different one breaks."""
        data = base()
        data["applications"]["ORS_2"]["options"] = {"persistence": {"store": "sqlite:///other"}}
        assert lint(data) == []  # the list wins, so all Nodes still share one store
        del data["transactions"]["C1"]["annex"]["persistence"]
        problems = lint(data)
        assert len(problems) == 1, problems
        assert "transaction 'C1'" in problems[0]
        assert "same persistent storage" in problems[0]

    def test_legacy_cluster_section(self) -> None:
        """A cluster section in ORS options defines a cluster; its rules are checked too."""
        data = base()
        del data["transactions"]
        for name in ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B"):
            data["applications"][name]["options"] = {
                "cluster": {"ORS_1": "DC_East", "ORS_2": "DC_West"},
                "persistence": {"store": "sqlite:///s.db"},
            }
        assert lint(data) == []
        data["applications"]["ORS_2_B"]["options"]["persistence"]["store"] = "sqlite:///x.db"
        one_problem(data, "options/cluster", "same persistent storage")
        data["applications"]["ORS_2_B"]["options"]["persistence"]["store"] = "sqlite:///s.db"
        data["applications"]["ORS_2"]["options"]["cluster"] = {"ORS_1": "DC_East"}
        problems = lint(data)
        assert any(
            "application 'ORS_2'" in p and "does not list this application's Node" in p
            for p in problems
        ), problems

    def test_legacy_backup_must_list_the_same_cluster(self) -> None:
        """A legacy cluster whose backup lacks the cluster section, or lists another, is an
        error: the backup would start with another view and assign calls differently."""
        data = base()
        del data["transactions"]
        for name in ("ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B"):
            data["applications"][name]["options"] = {
                "cluster": {"ORS_1": "DC_East", "ORS_2": "DC_West"},
            }
        assert lint(data) == []
        del data["applications"]["ORS_1_B"]["options"]["cluster"]
        one_problem(data, "application 'ORS_1_B': options/cluster", "does not have the legacy")
        data["applications"]["ORS_1_B"]["options"]["cluster"] = {"ORS_1": "DC_East"}
        one_problem(data, "application 'ORS_1_B': options/cluster", "differs in the legacy")

    def test_sqlite_store_across_machines_is_an_error(self) -> None:
        """A SQLite file cannot be shared by Nodes on hosts with different addresses (loopback
        addresses are all this machine, so those may share it); Redis may."""
        data = base()
        data["hosts"]["far"] = {"address": "10.1.2.3"}
        data["applications"]["ORS_2"]["host"] = "far"
        one_problem(data, "transaction 'C1'", "cannot be shared across machines")
        data["transactions"]["C1"]["annex"]["persistence"]["store"] = "redis://10.1.2.4:6379/0"
        assert lint(data) == []
        data["hosts"]["far"] = {"address": "127.0.0.3"}
        data["transactions"]["C1"]["annex"]["persistence"]["store"] = "sqlite:///s.db"
        assert lint(data) == []

    def test_hot_standby_ors_is_an_error(self) -> None:
        """Orchestration Server supports warm standby only."""
        data = base()
        data["applications"]["ORS_1"]["redundancy"] = "hot-standby"
        one_problem(data, "application 'ORS_1'", "warm-standby only")

    def test_call_watching_timeout(self) -> None:
        """Must be a number; below 1000 ms is a warning, not a problem."""
        data = base()
        data["transactions"]["C1"]["annex"]["orchestration"] = {"call-watching-timeout": "soon"}
        one_problem(data, "annex/orchestration/call-watching-timeout", "whole number")
        data["transactions"]["C1"]["annex"]["orchestration"] = {"call-watching-timeout": 250}
        result = lint_text(yaml.safe_dump(data), "t.yaml")
        assert result.problems == ()
        assert len(result.warnings) == 1
        assert "250 ms" in result.warnings[0]

    def test_unknown_keys(self) -> None:
        data = base()
        data["applications"]["URS"]["prot"] = 1
        data["extras"] = {}
        problems = lint(data)
        assert len(problems) == 2, problems
        assert any("application 'URS': prot: unknown key" in p for p in problems)

    def test_names_unique_across_apps_and_transactions(self) -> None:
        data = base()
        data["transactions"]["URS"] = copy.deepcopy(data["transactions"]["C1"])
        one_problem(data, "transaction 'URS'", "same name")

    def test_duplicate_yaml_keys(self) -> None:
        text = yaml.safe_dump(base(), sort_keys=False) + "hosts: {}\n"
        problems = lint_text(text, "t.yaml").problems
        assert any("duplicate key" in p for p in problems), problems


class TestLintCommand:
    def test_lint_lists_all_problems_and_exits_3(self, tmp_path: Path) -> None:
        """`orsim config lint` prints every problem at once and exits 3."""
        data = base()
        data["applications"]["URS"]["host"] = "nowhere"
        data["applications"]["ORS_1"]["backup"] = "ORS_1"
        data["transactions"]["C1"]["annex"]["log"] = {"verbose": "all"}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        proc = subprocess.run(
            [str(ORSIM), "config", "lint", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 3, proc
        lines = proc.stdout.splitlines()
        assert len([line for line in lines if line.startswith(str(path))]) >= 3, proc.stdout
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("orsim config: configuration error:")

    def test_lint_ok(self) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "orsim.cli", "config", "lint", str(DEMO)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc
        assert "ok:" in proc.stdout
        assert "warning:" in proc.stdout  # call-watching-timeout 500 ms


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios" / "topologies").glob("*.yaml")))
def test_shipped_topologies_are_valid(path: Path) -> None:
    """Every example database in scenarios/topologies passes every rule."""
    db = load_database(path)
    ors = [a for a in db.applications.values() if a.type == "OrchestrationServer"]
    assert ors
    cluster = next(iter(db.transactions.values()), None)
    for app in ors:  # the node start-up checks agree with lint
        assert check_node_cluster(app, cluster, db.applications) == [], app.name
