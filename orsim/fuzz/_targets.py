"""The fuzzed servers: Configuration Server, T-Server, URS and an ORS node, each with the
methods and pushes it takes and how to make plausible parameters for them.

Each target runs its real server code in process (the node inside a whole simulated
cluster, so it has peers, a T-Server and a store to act on) and hands the loop its
dispatch. Names in the inputs come from the database below, so many inputs pass the
first checks and reach the server's state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial

import trio

from orsim.config import (
    ANY_KEY,
    CALL_WATCHING_TIMEOUT,
    DEFAULT_DN,
    LOG_VERBOSE,
    ROUTER_TIMEOUT,
    ROUTING_POINTS,
    SYSTEM_ID,
    URS_STRATEGY,
    URS_TARGETS,
    URS_THINK_TIME,
    ConfigDatabase,
    lint_text,
)
from orsim.fuzz._gen import JsonGen, Maker
from orsim.fuzz._harness import Dispatch, Target
from orsim.wire import Connection, MemoryNetwork, Message, Push, Request

DATABASE = """\
tenants: [Environment]
hosts:
  local: {address: 127.0.0.1}
applications:
  SIP_Server:
    type: SIPServer
    host: local
    port: 7001
    options:
      routing-points: {"5000": default, "5001": default}
      TServer: {router-timeout: 10}
  URS:
    type: RoutingServer
    host: local
    port: 7002
    options:
      urs: {strategy: least-busy, targets: "Agent_1,Agent_2,Agent_3"}
  ORS_1: &ors
    type: OrchestrationServer
    host: local
    port: 7101
    backup: ORS_1_B
    connections:
      - {server: SIP_Server, addp-timeout: 1, addp-remote-timeout: 1}
      - {server: URS, addp-timeout: 1, addp-remote-timeout: 1}
  ORS_1_B: {<<: *ors, port: 7102, backup: null}
  ORS_2: {<<: *ors, port: 7201, backup: ORS_2_B}
  ORS_2_B: {<<: *ors, port: 7202, backup: null}
transactions:
  ORS_Cluster_1:
    type: List
    annex:
      cluster: {ORS_1: DC_East, ORS_2: DC_West}
      orchestration: {call-watching-timeout: 500, peer-addp-timeout: 1}
      persistence: {store: "sqlite:///sessions.db"}
"""
#: The options the fuzzer's live changes touch.
_LIVE_OPTIONS = (
    CALL_WATCHING_TIMEOUT,
    LOG_VERBOSE,
    ROUTER_TIMEOUT,
    URS_STRATEGY,
    URS_TARGETS,
    URS_THINK_TIME,
    ROUTING_POINTS,
    DEFAULT_DN,
)
ORS_APPS = ["ORS_1", "ORS_1_B", "ORS_2", "ORS_2_B"]
APPS = ["SIP_Server", "URS", *ORS_APPS]
POOLS: dict[str, list[str]] = {
    "app": APPS,
    "object": [*APPS, "ORS_Cluster_1"],
    "dn": ["5000", "5001"],
    "call": ["c-1"],
    "target": ["Agent_1", "Agent_2", "Agent_3"],
    # Few sections and keys: live changes then stay small, as real ones are.
    "section": list(dict.fromkeys(o.section for o in (*_LIVE_OPTIONS, SYSTEM_ID))),
    "key": [o.key for o in _LIVE_OPTIONS if o.key != ANY_KEY] + ["5000"],
    "value": ["500", "standard", "10", "round-robin", "Agent_1", "0", "default", "-5", "x"],
    "host": ["local"],
    "type": ["OrchestrationServer", "SIPServer", "RoutingServer"],
    "mode": ["primary", "backup", "starting", "suspending"],
    "dc": ["DC_East", "DC_West"],
}  # fmt: skip


def database() -> ConfigDatabase:
    result = lint_text(DATABASE, "fuzz.yaml")
    assert result.database is not None, result.problems
    return result.database


# -- value makers ----------------------------------------------------------------------


def name(pool: str) -> Maker:
    return lambda gen: gen.pick(pool)


def names(pool: str) -> Maker:
    return lambda gen: [gen.pick(pool) for _ in range(gen.rng.randint(0, 3))]


def whole(gen: JsonGen) -> int:
    return gen.integer()


def node_id(gen: JsonGen) -> int:
    """Mostly the Node IDs of the database (101, 103), so state is kept per few Nodes."""
    return gen.choice((101, 103)) if gen.rng.random() < 0.8 else gen.integer()


def number(gen: JsonGen) -> float | int:
    return gen.number()


def flag(gen: JsonGen) -> bool:
    return gen.rng.random() < 0.5


def small_rate(gen: JsonGen) -> float:
    """Generator rates a fuzz run can afford (the edges come from the wrong-type mix)."""
    return round(gen.rng.uniform(0.1, 20), 2)


def options(gen: JsonGen) -> dict[str, object]:
    return {
        gen.pick("section"): {gen.pick("key"): gen.pick("value")}
        for _ in range(gen.rng.randint(0, 2))
    }


def request(methods: Mapping[str, Mapping[str, Maker]]) -> Callable[[JsonGen], Message]:
    """Requests of ``methods`` (now and then an unknown method, or junk parameters)."""
    listed = list(methods)

    def make(gen: JsonGen) -> Message:
        r = gen.rng.random()
        method = gen.string() if r < 0.03 else gen.choice(listed)
        params = gen.fields(methods.get(method, {}))
        if r > 0.98:
            params = {gen.string(): gen.any() for _ in range(gen.rng.randint(0, 3))}
        return Request(gen.rng.randint(1, 2**31), method, params)

    return make


# -- Configuration Server --------------------------------------------------------------

CONFSERV_METHODS: dict[str, dict[str, Maker]] = {
    "get_application": {"name": name("app")},
    "get_applications": {"names": names("app")},
    "get_transaction": {"name": name("object")},
    "list_applications": {"type": name("type")},
    "get_host": {"name": name("host")},
    "set_option": {"object": name("object"), "section": name("section"),
                   "key": name("key"), "value": name("value")},
    "delete_option": {"object": name("object"), "section": name("section"),
                      "key": name("key")},
    "import_options": {"object": name("object"), "options": options},
    "status": {},
}  # fmt: skip


@asynccontextmanager
async def confserv(nursery: trio.Nursery) -> AsyncIterator[Dispatch]:
    from orsim.confserv import ConfServ

    server = ConfServ(database())  # no journal: changes live in memory
    make = request(CONFSERV_METHODS)
    yield Dispatch(
        peers=(("ORS_1", "OrchestrationServer"), ("SIP_Server", "SIPServer"),
               ("admin", "Tool")),
        make=lambda gen, conn: make(gen),
        handler=server.handle,
        pools=POOLS,
        on_disconnect=server.on_disconnect,
    )  # fmt: skip


# -- T-Server --------------------------------------------------------------------------

TSERVER_METHODS: dict[str, dict[str, Maker]] = {
    "register": {"app": name("app"), "node_id": node_id, "dns": names("dn"), "batches": flag},
    "fence": {"node_id": node_id, "epoch": whole, "app": name("app")},
    "query_call": {"call_id": name("call")},
    "claim_epoch": {"node_id": node_id, "expected": whole, "new": whole, "app": name("app")},
    "route": {"call_id": name("call"), "target": name("target"), "app": name("app"),
              "node_id": node_id, "epoch": whole},
    "make_call": {"dn": name("dn")},
    "generate": {"rate": small_rate, "duration": lambda gen: gen.rng.uniform(0, 0.2),
                 "dn": name("dn")},
    "stop_generator": {},
    # A page of records costs as much as hundreds of other requests: rarely.
    "ledger": {"records": lambda gen: gen.rng.random() < 0.1, "offset": whole, "limit": whole},
    "status": {},
}  # fmt: skip
#: How often each method is asked: calls made and routed most; status and ledger dumps
#: rarely, as their cost grows with the ledger (a status sorts every latency so far).
TSERVER_WEIGHTS = {"route": 24, "make_call": 12, "register": 8, "query_call": 8, "fence": 8,
                   "claim_epoch": 8, "generate": 2, "stop_generator": 2, "ledger": 1,
                   "status": 1}  # fmt: skip


def _learn_calls(gen: JsonGen, request: Request, result: object) -> None:
    if request.method == "make_call" and isinstance(result, dict):
        gen.remember("call", result.get("call_id"))


@asynccontextmanager
async def tserver(nursery: trio.Nursery) -> AsyncIterator[Dispatch]:
    from orsim.tserver import TServer

    server = TServer.from_application(database().applications["SIP_Server"])
    view = MemoryNetwork().for_app("SIP_Server")
    await nursery.start(partial(server.serve, view, run_id="fuzz"))
    make = _weighted(TSERVER_METHODS, TSERVER_WEIGHTS)
    yield Dispatch(
        peers=(("ORS_1", "OrchestrationServer"), ("ORS_1_B", "OrchestrationServer"),
               ("ORS_2", "OrchestrationServer"), ("intruder", "Tool")),
        make=lambda gen, conn: make(gen),
        handler=server.handlers.handle,
        pools=POOLS,
        learn=_learn_calls,
        on_disconnect=server._on_disconnect,
    )  # fmt: skip


def _weighted(
    methods: Mapping[str, Mapping[str, Maker]], weights: Mapping[str, int]
) -> Callable[[JsonGen], Message]:
    """``request`` over ``methods``, each drawn ``weights[m]`` times as often."""
    makers = [request({m: methods[m]}) for m in methods for _ in range(weights.get(m, 1))]
    unknown = request(methods)

    def make(gen: JsonGen) -> Message:
        maker: Callable[[JsonGen], Message] = unknown
        if gen.rng.random() >= 0.05:
            maker = gen.choice(makers)
        return maker(gen)

    return make


# -- URS -------------------------------------------------------------------------------

URS_METHODS: dict[str, dict[str, Maker]] = {
    "register": {"app": name("app"), "node_id": node_id},
    "select_target": {"call_id": name("call"), "dn": name("dn")},
    "release_target": {"target": name("target")},
    "status": {},
}


@asynccontextmanager
async def urs(nursery: trio.Nursery) -> AsyncIterator[Dispatch]:
    from orsim.urs import UrsServer

    server = UrsServer.from_application(database().applications["URS"])
    make = request(URS_METHODS)
    yield Dispatch(
        peers=(("ORS_1", "OrchestrationServer"), ("ORS_2_B", "OrchestrationServer"),
               ("intruder", "Tool")),
        make=lambda gen, conn: make(gen),
        handler=server.handlers.handle,
        pools=POOLS,
        on_disconnect=server._on_disconnect,
    )  # fmt: skip


# -- ORS node --------------------------------------------------------------------------


def _member(gen: JsonGen, conn: Connection) -> dict[str, object]:
    app = conn.peer_app if gen.rng.random() < 0.8 else gen.pick("app")
    return gen.fields({
        "app": lambda g: app, "node_id": node_id,
        "data_center": name("dc"), "mode": name("mode"),
        "epoch": lambda g: g.rng.randint(0, 6) if g.rng.random() < 0.9 else g.integer(),
        "headless": lambda g: g.rng.random() < 0.5,
    })  # fmt: skip


PUSHES: dict[str, Callable[[JsonGen, Connection], dict[str, object]]] = {
    "member": _member,
    "route_request": lambda gen, conn: gen.fields({
        "call_id": lambda g: f"fz-{g.rng.randint(0, 63)}", "dn": name("dn"),
        "created_at": number, "deadline": number,
    }),
    "session": lambda gen, conn: gen.fields({
        "call_id": lambda g: f"fz-{g.rng.randint(0, 63)}", "pending": flag, "claimed": flag,
    }),
    "call_routed": lambda gen, conn: gen.fields({
        "call_id": lambda g: f"fz-{g.rng.randint(0, 63)}", "app": name("app"),
        "node_id": node_id, "epoch": whole, "target": name("target"),
    }),
    "handover": lambda gen, conn: gen.fields({"epoch": whole}),
}  # fmt: skip


def _batch(gen: JsonGen, conn: Connection) -> dict[str, object]:
    """A ``pushes`` batch (the T-Server's fan-out) of the pushes above, now and then
    broken: an item that is not ``[topic, data]``, or a batch inside the batch."""
    items: list[object] = []
    for _ in range(gen.rng.randint(0, 4)):
        topic = gen.choice(list(PUSHES))
        items.append([topic, PUSHES[topic](gen, conn)])
    if gen.rng.random() < 0.1:
        items.append(gen.any() if gen.rng.random() < 0.5 else ["pushes", {"items": []}])
    return {"items": items}


NODE_METHODS: dict[str, dict[str, Maker]] = {"status": {}}


def _node_input(gen: JsonGen, conn: Connection) -> Message:
    r = gen.rng.random()
    if r < 0.1:
        return request(NODE_METHODS)(gen)
    if r < 0.13:
        return Push(gen.string(), {gen.string(): gen.any()})
    if r < 0.2:
        return Push("pushes", _batch(gen, conn))
    topic = gen.choice(list(PUSHES))
    return Push(topic, PUSHES[topic](gen, conn))


@asynccontextmanager
async def node(nursery: trio.Nursery) -> AsyncIterator[Dispatch]:
    from orsim.sim import open_sim_cluster

    async with open_sim_cluster(database()) as sim:
        ors = sim.nodes["ORS_1"]
        yield Dispatch(
            peers=(("ORS_1_B", "OrchestrationServer"), ("ORS_2", "OrchestrationServer"),
                   ("ORS_2_B", "OrchestrationServer"), ("SIP_Server", "SIPServer"),
                   ("intruder", "Tool")),
            make=_node_input,
            handler=ors.handlers.handle,
            on_push=ors.pushes,
            pools=POOLS,
        )  # fmt: skip
        sim.nursery.cancel_scope.cancel()


TARGETS: dict[str, Target] = {
    "confserv": confserv,
    "tserver": tserver,
    "urs": urs,
    "node": node,
}
