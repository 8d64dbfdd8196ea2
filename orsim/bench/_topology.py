"""The benchmark topology: a configuration database for N Nodes (pure).

Modelled on ``scenarios/topologies/demo.yaml``: one SIP Server with routing point 5000,
one URS, Nodes ``ORS_k`` (primary) + ``ORS_k_B`` (backup) in one cluster List,
call-watching-timeout 500 ms and a sqlite session store. The primary<->backup link's
ADDP timeout is a parameter (each node takes a peer link's timeout from its connection
entry to the partner); every other peer link keeps orsim's default
``peer-addp-timeout`` (2 s), as a user's cluster would: at 16 Nodes start-up keeps this
machine's 2 cores so busy that 1 s links to other Nodes time out while nothing is wrong.
The links to the SIP Server and the URS keep the demo's 1 s.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from orsim.config import (
    ADDP_REMOTE_TIMEOUT,
    ADDP_TIMEOUT,
    CALL_WATCHING_TIMEOUT,
    CLUSTER,
    LOG_VERBOSE,
    ROUTER_TIMEOUT,
    ROUTING_POINTS,
    STORE,
    URS_STRATEGY,
    URS_TARGETS,
    sections,
)

CLUSTER_LIST = "ORS_Cluster_1"
TSERVER_APP = "SIP_Server"
URS_APP = "URS"
ROUTING_POINT = "5000"
SERVER_ADDP_TIMEOUT = 1.0
DATA_CENTERS = ("DC_East", "DC_West")


def primary_name(node: int) -> str:
    return f"ORS_{node}"


def backup_name(node: int) -> str:
    return f"ORS_{node}_B"


def _link(server: str, seconds: float) -> dict[str, object]:
    return {"server": server, ADDP_TIMEOUT.key: seconds, ADDP_REMOTE_TIMEOUT.key: seconds}


def _ors(node: int, partner: str, port: int, addp_timeout: float) -> dict[str, object]:
    return {
        "type": "OrchestrationServer",
        "host": "local",
        "port": port,
        "connections": [
            _link(TSERVER_APP, SERVER_ADDP_TIMEOUT),
            _link(URS_APP, SERVER_ADDP_TIMEOUT),
            _link(partner, addp_timeout),
        ],
        "options": sections({LOG_VERBOSE: "standard"}),
    }


def topology(nodes: int, addp_timeout: float = 1.0) -> dict[str, object]:
    """The configuration database (as YAML-ready data) of a cluster of ``nodes`` Nodes."""
    if nodes < 1:
        raise ValueError(f"need at least one Node, not {nodes}")
    if not addp_timeout > 0:
        raise ValueError(f"addp-timeout must be > 0, not {addp_timeout}")
    applications: dict[str, object] = {
        TSERVER_APP: {
            "type": "SIPServer",
            "host": "local",
            "port": 7001,
            "options": {
                ROUTING_POINTS.section: {ROUTING_POINT: "default"},
                **sections({ROUTER_TIMEOUT: 10}),
            },
        },
        URS_APP: {
            "type": "RoutingServer",
            "host": "local",
            "port": 7002,
            "options": sections(
                {URS_STRATEGY: "round-robin", URS_TARGETS: "Agent_1,Agent_2,Agent_3,Agent_4"}
            ),
        },
    }
    members: dict[str, str] = {}
    for k in range(1, nodes + 1):
        primary, backup = primary_name(k), backup_name(k)
        applications[primary] = {
            **_ors(k, backup, 7000 + 10 * k, addp_timeout),
            "backup": backup,
            "redundancy": "warm-standby",
        }
        applications[backup] = _ors(k, primary, 7000 + 10 * k + 1, addp_timeout)
        members[primary] = DATA_CENTERS[(k - 1) % len(DATA_CENTERS)]
    return {
        "tenants": ["Environment", "Resources"],
        "hosts": {"local": {"address": "127.0.0.1"}},
        "applications": applications,
        "transactions": {
            CLUSTER_LIST: {
                "type": "List",
                "tenant": "Environment",
                "annex": {
                    CLUSTER.section: members,
                    **sections({CALL_WATCHING_TIMEOUT: 500, STORE: "sqlite:///sessions.db"}),
                },
            }
        },
    }


def topology_yaml(nodes: int, addp_timeout: float = 1.0) -> str:
    """:func:`topology` as YAML text."""
    header = f"# orsim bench topology: {nodes} Node(s), primary<->backup addp {addp_timeout:g}s\n"
    return header + yaml.safe_dump(topology(nodes, addp_timeout), sort_keys=False)


def write_topology(directory: Path, nodes: int, addp_timeout: float = 1.0) -> Path:
    """Write the database to ``directory`` and return its path."""
    path = directory / f"bench-{nodes}n-addp{addp_timeout:g}.yaml"
    path.write_text(topology_yaml(nodes, addp_timeout))
    return path


def launched_process_count(nodes: int) -> int:
    """Processes ``orsim cluster up`` starts for ``nodes`` Nodes: 2 ORS per Node, the
    Configuration Server, the session store server, the SIP Server, the URS and the
    fault proxy."""
    return 2 * nodes + 5
