"""The typed messages of every service: each round-trips through the codec, writes the
JSON the dict literals wrote before, and garbage is refused with ``bad_request`` only."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, cast

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from orsim import confserv, node, store, tserver, urs
from orsim.config import Application, ConfigDatabase, Host, Transaction, lint_text
from orsim.errors import RemoteProtocolError, RequestRefused
from orsim.fuzz._targets import DATABASE as FUZZ_DATABASE
from orsim.node import MemberInfo
from orsim.store import Session
from orsim.wire import (
    NEED_DATA,
    Call,
    Done,
    FrameDecoder,
    HandlerTable,
    Json,
    MemoryNetwork,
    Notice,
    Push,
    PushTable,
    Record,
    Request,
    Response,
    Status,
    StatusReport,
    encode,
    on,
    open_connection,
    when,
)

#: The fuzzer's database: a 2-Node cluster, a T-Server with two routing points, a URS.
DATABASE = FUZZ_DATABASE


def _database() -> ConfigDatabase:
    result = lint_text(DATABASE, "messages.yaml")
    assert result.database is not None, result.problems
    return result.database


DB = _database()

text = st.text(max_size=12)
name = st.text(min_size=1, max_size=12)
whole = st.integers(min_value=0, max_value=2**53)
integer = st.integers(min_value=-(2**53), max_value=2**53)
number = st.floats(allow_nan=False, allow_infinity=False)
names = st.lists(text, max_size=4).map(tuple)
options = st.dictionaries(name, st.dictionaries(name, text, max_size=3), max_size=3)
sessions = st.builds(
    Session,
    call_id=text,
    node_id=integer,
    epoch=integer,
    dn=text,
    state=text,
    target=text,
    created_at=number,
    data=st.dictionaries(text, text, max_size=3),
)
#: Times of a call record: its latency (ms) is computed from two of them, so they are
#: kept where that cannot overflow.
times = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
records = st.builds(
    tserver.CallRecord,
    call_id=text,
    dn=text,
    created_at=times,
    deadline=times,
    state=text,
    routed_at=st.none() | times,
    app=st.none() | text,
    node_id=st.none() | integer,
    epoch=st.none() | integer,
    target=st.none() | text,
)
members = st.builds(
    MemberInfo,
    app=name,
    node_id=whole,
    data_center=text,
    mode=st.sampled_from(["primary", "backup", "starting", "suspending"]),
    epoch=whole,
)

#: A strategy for every typed message of every service.
MESSAGES: dict[type[Record], st.SearchStrategy[Record]] = {
    # wire
    Done: st.just(Done()),
    Status: st.just(Status()),
    StatusReport: st.dictionaries(name, integer, max_size=4).map(StatusReport),
    # URS
    urs.Register: st.builds(urs.Register, st.none() | text, st.none() | integer),
    urs.SelectTarget: st.builds(urs.SelectTarget, st.none() | text, st.none() | text),
    urs.Target: st.builds(urs.Target, text),
    urs.ReleaseTarget: st.builds(urs.ReleaseTarget, text),
    urs.Released: st.builds(urs.Released, st.booleans()),
    # T-Server
    tserver.RouteRequest: st.builds(
        tserver.RouteRequest,
        name,
        text,
        st.none() | number,
        st.none() | number,
        st.booleans(),
        number,
    ).filter(lambda r: r.redelivered or r.waited == 0.0),
    tserver.CallRouted: st.builds(
        tserver.CallRouted, name, text, st.none() | integer, st.none() | integer, st.none() | text
    ),
    tserver.Register: st.builds(tserver.Register, st.none() | text, st.none() | integer, names),
    tserver.Registered: st.builds(tserver.Registered, names),
    tserver.Fence: st.builds(tserver.Fence, integer, integer, st.none() | text),
    tserver.Fenced: st.builds(tserver.Fenced, integer),
    tserver.QueryCall: st.builds(tserver.QueryCall, text),
    tserver.CallState: st.builds(tserver.CallState, text),
    tserver.ClaimEpoch: st.builds(tserver.ClaimEpoch, integer, integer, integer, st.none() | text),
    tserver.EpochClaim: st.builds(tserver.EpochClaim, st.booleans(), integer),
    tserver.Route: st.builds(
        tserver.Route, text, st.none() | text, st.none() | text, integer, integer
    ),
    tserver.Routed: st.builds(tserver.Routed, text, number, st.booleans()),
    tserver.MakeCall: st.builds(tserver.MakeCall, st.none() | text),
    tserver.MadeCall: st.builds(tserver.MadeCall, text, text, number, number),
    tserver.Generate: st.builds(tserver.Generate, number, st.none() | number, st.none() | text),
    tserver.StopGenerator: st.just(tserver.StopGenerator()),
    tserver.Follow: st.builds(tserver.Follow, st.booleans()),
    tserver.Role: st.builds(tserver.Role, text, integer),
    tserver.LedgerOps: st.builds(
        tserver.LedgerOps,
        integer,
        st.lists(st.lists(st.none() | integer | number | text, max_size=6), max_size=4).map(tuple),
    ),
    tserver.ReplicaAck: st.builds(tserver.ReplicaAck, integer),
    tserver.Stopped: st.builds(tserver.Stopped, st.booleans()),
    tserver.Ledger: st.builds(
        tserver.Ledger, st.none() | st.booleans(), st.none() | integer, st.none() | integer
    ),
    tserver.LedgerReport: st.builds(
        tserver.LedgerReport,
        st.builds(
            tserver.LedgerCounts,
            **{
                f: whole
                for f in (
                    "created",
                    "routed",
                    "lost",
                    "default_routed",
                    "duplicates",
                    "resent",
                    "stale",
                    "unknown",
                    "late",
                    "in_flight",
                )
            },
            by_app=st.dictionaries(text, whole, max_size=3),
            by_node=st.dictionaries(whole, whole, max_size=3),
            latency_p50_ms=st.none() | number,
            latency_p99_ms=st.none() | number,
        ),
        st.none() | st.lists(records, max_size=3).map(tuple),
    ).map(lambda r: r if r.records is None else attrs.evolve(r, records_total=len(r.records))),
    # store server
    store.CurrentEpoch: st.builds(store.CurrentEpoch, integer),
    store.Epoch: st.builds(store.Epoch, integer),
    store.ClaimEpoch: st.builds(store.ClaimEpoch, integer, integer, integer),
    store.Won: st.builds(store.Won, st.booleans()),
    store.PutSession: st.builds(store.PutSession, sessions),
    store.CreateSession: st.builds(store.CreateSession, sessions),
    store.Created: st.builds(store.Created, st.booleans()),
    store.AdoptSession: st.builds(store.AdoptSession, sessions, integer, integer),
    store.Moved: st.builds(store.Moved, st.booleans()),
    store.DeleteSession: st.builds(store.DeleteSession, integer, integer, text),
    store.Sessions: st.builds(store.Sessions, integer),
    store.SessionList: st.lists(sessions, max_size=3).map(lambda s: store.SessionList(tuple(s))),
    store.Stale: st.builds(store.Stale, integer, integer, integer),
    store.Count: st.builds(store.Count, integer),
    store.Counted: st.builds(store.Counted, integer),
    # Configuration Server
    confserv.GetApplication: st.builds(confserv.GetApplication, name),
    confserv.ApplicationFound: st.sampled_from(
        [confserv.ApplicationFound(a) for a in DB.applications.values()]
    ),
    confserv.GetApplications: st.builds(confserv.GetApplications, names),
    confserv.ApplicationsFound: st.just(confserv.ApplicationsFound(dict(DB.applications))),
    confserv.GetTransaction: st.builds(confserv.GetTransaction, name),
    confserv.TransactionFound: st.sampled_from(
        [confserv.TransactionFound(t) for t in DB.transactions.values()]
    ),
    confserv.ListApplications: st.builds(confserv.ListApplications, st.none() | text),
    confserv.Names: st.builds(confserv.Names, names),
    confserv.GetHost: st.builds(confserv.GetHost, name),
    confserv.HostFound: st.builds(confserv.HostFound, st.builds(Host, text, text, integer)),
    confserv.SetOption: st.builds(confserv.SetOption, name, name, name, text),
    confserv.DeleteOption: st.builds(confserv.DeleteOption, name, name, name),
    confserv.OptionChanged: st.builds(confserv.OptionChanged, text, text),
    confserv.ImportOptions: st.builds(confserv.ImportOptions, name, options),
    confserv.Imported: st.builds(confserv.Imported, integer),
    confserv.ObjectChanged: st.builds(
        confserv.ObjectChanged, text, text, text, text, st.none() | text, options
    ),
    # ORS node
    node.Member: st.builds(node.Member, members),
    node.SessionCreated: st.builds(node.SessionCreated, name, st.none() | integer, st.booleans()),
    node.Handover: st.builds(node.Handover, st.none() | integer),
    node.Switchover: st.just(node.Switchover()),
    node.SwitchedOver: st.builds(node.SwitchedOver, st.none() | text),
}

#: The requests a server decodes from a peer's frame, and the pushes a receiver does.
INBOUND = [c for c in MESSAGES if issubclass(c, Call | Notice)]

json_values: st.SearchStrategy[Json] = st.recursive(
    st.none() | st.booleans() | integer | number | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
#: Parameters that look like the real ones: the real field names with any values.
FIELD_NAMES = sorted(
    {"call_id", "dn", "app", "node_id", "epoch", "target", "dns", "session", "name", "names",
     "object", "section", "key", "value", "options", "type", "rate", "duration", "records",
     "offset", "limit", "expected", "new", "from_node", "from_epoch", "mode", "data_center",
     "created_at", "deadline", "waited", "redelivered", "pending", "kind"}
)  # fmt: skip
garbage_params = st.dictionaries(st.sampled_from(FIELD_NAMES) | text, json_values, max_size=8)


def _refusal(work: Callable[[], object]) -> str | None:
    """The code ``work`` was refused with (None: not refused)."""
    try:
        work()
    except RequestRefused as exc:
        return exc.code
    return None


def _through_codec(message: Record) -> Json:
    """``message``'s JSON as the peer reads it: framed, encoded, decoded."""
    if isinstance(message, Call):
        frame = encode(Request(7, message.METHOD, message.to_json()))
    elif isinstance(message, Notice):
        frame = encode(Push(message.TOPIC, message.to_json()))
    else:
        frame = encode(Response(7, message.to_json()))
    decoder = FrameDecoder()
    decoder.receive_data(frame)
    decoded = decoder.next_message()
    assert decoded is not NEED_DATA
    if isinstance(decoded, Request):
        assert isinstance(message, Call) and decoded.method == message.METHOD
        return decoded.params
    if isinstance(decoded, Push):
        assert isinstance(message, Notice) and decoded.topic == message.TOPIC
        return decoded.data
    assert isinstance(decoded, Response)
    return decoded.result


@pytest.mark.parametrize("kind", list(MESSAGES), ids=lambda c: f"{c.__module__}.{c.__name__}")
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_each_message_round_trips_through_the_codec(
    kind: type[Record], data: st.DataObject
) -> None:
    """Encoding a message and decoding what the peer reads gives the same message back."""
    message = data.draw(MESSAGES[kind])
    again = kind.from_json(_through_codec(message))
    assert again == message
    if isinstance(message, confserv.ObjectChanged | confserv.ImportOptions):
        assert isinstance(again, confserv.ObjectChanged | confserv.ImportOptions)
        assert again.options == message.options  # not part of equality


@pytest.mark.parametrize("kind", INBOUND, ids=lambda c: f"{c.__module__}.{c.__name__}")
@settings(max_examples=80, deadline=None)
@given(params=garbage_params | json_values)
def test_garbage_params_are_refused_with_bad_request_only(kind: type[Record], params: Json) -> None:
    """Whatever a peer sends, reading it gives the message or ``bad_request``, nothing else."""
    assert _refusal(lambda: kind.from_json(params)) in (None, "bad_request")


def test_every_message_is_covered() -> None:
    """Each service's requests, their answers and its pushes have a strategy here."""
    for package in (urs, tserver, store, confserv, node):
        for exported in package.__all__:
            value = getattr(package, exported)
            if isinstance(value, type) and issubclass(value, Call | Notice):
                assert value in MESSAGES, value
            if isinstance(value, type) and issubclass(value, Call):
                assert value.ANSWER in MESSAGES, value.ANSWER


# -- the bytes on the wire are the ones the dict literals made ------------------------------


@pytest.mark.parametrize(
    ("message", "literal"),
    [
        (tserver.Route("c1", "A", "ORS_1", 101, 3),
         {"call_id": "c1", "target": "A", "app": "ORS_1", "node_id": 101, "epoch": 3}),
        (tserver.Routed("c1", 1.5), {"routed": True, "call_id": "c1", "latency_ms": 1.5}),
        (tserver.RouteRequest("c1", "5000", 1.0, 11.0),
         {"call_id": "c1", "dn": "5000", "created_at": 1.0, "deadline": 11.0}),
        (tserver.RouteRequest("c1", "5000", 1.0, 11.0, True, 2.5),
         {"call_id": "c1", "dn": "5000", "created_at": 1.0, "deadline": 11.0,
          "redelivered": True, "waited": 2.5}),
        (tserver.CallRouted("c1", "T", None, None, "X"),
         {"call_id": "c1", "app": "T", "node_id": None, "epoch": None, "target": "X"}),
        (tserver.Fence(4, 2), {"node_id": 4, "epoch": 2}),
        (tserver.Fence(4, 2, "ORS_1"), {"node_id": 4, "epoch": 2, "app": "ORS_1"}),
        (tserver.Register("ORS_1", 1, ("5000",)), {"app": "ORS_1", "node_id": 1, "dns": ["5000"]}),
        (tserver.MakeCall(), {}),
        (tserver.Ledger(), {}),
        (tserver.Ledger(True, 10), {"records": True, "offset": 10}),
        (tserver.Generate(5.0), {"rate": 5.0, "duration": None, "dn": None}),
        (urs.SelectTarget("c1", "5000"), {"call_id": "c1", "dn": "5000"}),
        (urs.Register("ORS_1", None), {"app": "ORS_1", "node_id": None}),
        (node.SessionCreated("c1", 101), {"call_id": "c1", "node_id": 101}),
        (node.SessionCreated("c1", 101, True), {"call_id": "c1", "node_id": 101, "pending": True}),
        (node.SessionCreated("c1", 101, claimed=True),
         {"call_id": "c1", "node_id": 101, "claimed": True}),
        (node.Member(MemberInfo("ORS_1", 1, "DC", "primary", 2)),
         {"app": "ORS_1", "node_id": 1, "data_center": "DC", "mode": "primary", "epoch": 2}),
        (node.Handover(3), {"epoch": 3}),
        (confserv.ListApplications(), {}),
        (confserv.ListApplications("T"), {"type": "T"}),
        (store.Stale(1, 2, 3), {"stale": [1, 2, 3]}),
        (store.DeleteSession(1, 2, "c"), {"node_id": 1, "epoch": 2, "call_id": "c"}),
    ],
)  # fmt: skip
def test_the_json_is_the_dict_literal_of_before(message: Record, literal: Json) -> None:
    """Key order included: the frames are byte for byte those of the dicts they replace."""
    assert encode(Push("x", message.to_json())) == encode(Push("x", literal))


def test_an_application_answer_is_its_wire_form() -> None:
    """``get_application`` answers what ``application_to_wire`` gave."""
    from orsim.config import application_to_wire, transaction_to_wire

    app: Application = DB.applications["ORS_1"]
    txn: Transaction = DB.transactions["ORS_Cluster_1"]
    assert confserv.ApplicationFound(app).to_json() == application_to_wire(app)
    assert confserv.TransactionFound(txn).to_json() == transaction_to_wire(txn)


# -- the tables ----------------------------------------------------------------------------


def _table() -> HandlerTable:
    def route(conn: object, request: tserver.Route) -> tserver.Routed:
        return tserver.Routed(request.call_id, 1.0)

    def broken(conn: object, request: tserver.QueryCall) -> tserver.CallState:
        raise ZeroDivisionError

    return HandlerTable.of("T", [on(tserver.Route, route), on(tserver.QueryCall, broken)])


@settings(max_examples=200, deadline=None)
@given(method=st.sampled_from(["route", "nope"]), params=garbage_params)
def test_a_table_refuses_garbage_with_bad_request_or_unknown_method(
    method: str, params: dict[str, Json]
) -> None:
    """A handler table answers garbage ``bad_request`` (``unknown_method`` for a method it
    does not have), never anything else."""
    table = _table()
    conn = cast("object", None)
    answers: list[Json] = []
    refused = _refusal(lambda: answers.append(table(conn, Request(1, method, params))))  # type: ignore[arg-type]
    if refused is not None:
        assert refused == ("unknown_method" if method == "nope" else "bad_request")
    else:
        assert method == "route"
        assert answers == [{"routed": True, "call_id": params["call_id"], "latency_ms": 1.0}]


def test_a_handler_bug_is_answered_internal() -> None:
    """An unexpected exception in a handler is ``internal``; the server lives on."""
    with pytest.raises(RequestRefused) as info:
        _table()(None, Request(1, "query_call", {"call_id": "c"}))  # type: ignore[arg-type]
    assert info.value.code == "internal"


def test_a_table_refuses_two_handlers_for_one_method() -> None:
    """A method has one handler."""

    def answer(conn: object, request: Status) -> StatusReport:
        return StatusReport({})

    with pytest.raises(ValueError, match="status"):
        HandlerTable.of("T", [on(Status, answer), on(Status, answer)])


def test_a_malformed_push_is_a_protocol_error() -> None:
    """A push table takes a well-formed push, ignores a topic it does not name and turns
    a malformed one into ``RemoteProtocolError`` (the link is dropped)."""
    seen: list[node.Handover] = []
    table = PushTable.of([when(node.Handover, lambda conn, push: seen.append(push))])
    assert table.decode(Push("other", {})) is None
    decoded = table.decode(Push("handover", {"epoch": 4}))
    assert decoded is not None and decoded[1] == node.Handover(4)
    with pytest.raises(RemoteProtocolError):
        PushTable.of([when(node.Member, lambda conn, push: None)]).decode(
            Push("member", {"app": ""})
        )


async def test_call_sends_a_typed_request_and_returns_the_typed_answer() -> None:
    """``conn.call(Route(...))`` gives a ``Routed``; a refusal is ``RequestRefused``; a
    malformed answer is ``RemoteProtocolError``."""
    from orsim.wire import serve_app

    def route(conn: object, request: tserver.Route) -> tserver.Routed:
        if request.call_id == "refused":
            raise RequestRefused("duplicate", "routed already")
        return tserver.Routed(request.call_id, 2.5)

    def status(conn: object, request: Status) -> StatusReport:
        return StatusReport({"no": "call_id"})

    table = HandlerTable.of("T", [on(tserver.Route, route), on(Status, status)])
    net = MemoryNetwork()
    server_net, client_net = net.for_app("T"), net.for_app("ORS_1")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_app(
                server_net, "127.0.0.1", 7001, app="T", app_type="SIPServer",
                handler=table.handle, inline_handler=table, task_status=task_status,
            )
        )  # fmt: skip
        conn = await open_connection(client_net, "127.0.0.1", port, app="ORS_1", app_type="ORS")
        nursery.start_soon(conn.serve)
        routed = await conn.call(tserver.Route("c1", "A", None, 1, 1))
        assert routed == tserver.Routed("c1", 2.5)
        with pytest.raises(RequestRefused) as info:
            await conn.call(tserver.Route("refused", "A", None, 1, 1))
        assert info.value.code == "duplicate"
        with pytest.raises(RemoteProtocolError):
            await conn.call(_Bogus())
        await conn.aclose()
        nursery.cancel_scope.cancel()


@attrs.frozen
class _Bogus(Call[tserver.Routed]):
    """``status`` read as if it answered ``route`` (a malformed answer)."""

    METHOD: ClassVar[str] = "status"
    ANSWER: ClassVar[type[Record]] = tserver.Routed


# -- status records ----------------------------------------------------------------------

FRAMES = ["frames_sent", "frames_received", "links_dropped_slow"]


async def test_each_status_record_writes_the_field_names_of_before() -> None:
    """Each server's ``status`` record writes today's field names, in today's order
    (``status --json`` is a contract: SPEC.md section 4)."""
    from pathlib import Path

    from orsim.confserv import ConfServ
    from orsim.store import MemoryStore, StoreServer
    from orsim.tserver import TServer
    from orsim.urs import UrsServer

    urs_status = UrsServer.from_application(DB.applications["URS"]).status().to_json()
    assert list(urs_status) == [
        "app", "type", "mode", "pid", "clients", "requests", "strategy", "targets",
        "think_time_ms", "busy", *FRAMES,
    ]  # fmt: skip
    assert urs_status["targets"] == ["Agent_1", "Agent_2", "Agent_3"]
    tserver_status = TServer.from_application(DB.applications["SIP_Server"]).status().to_json()
    assert list(tserver_status) == [
        "app", "type", "mode", "pid", "clients", "calls", "routing_points", "router_timeout",
        *FRAMES, "generator",
    ]  # fmt: skip
    assert list(tserver_status["calls"]) == [
        "created", "routed", "lost", "default_routed", "duplicates", "resent", "stale",
        "in_flight",
    ]  # fmt: skip
    assert list(ConfServ(DB).status().to_json()) == [
        "app", "type", "mode", "pid", "source", "applications", "transactions", "changes",
        "clients", *FRAMES,
    ]  # fmt: skip
    store_status = StoreServer(MemoryStore(), Path("s.db")).status().to_json()
    assert list(store_status) == [
        "app", "type", "mode", "pid", "path", "clients", "requests", "statistics",
    ]  # fmt: skip


async def test_the_node_status_record_writes_the_field_names_of_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An ORS node's ``status`` keeps every field ``status --json`` reads, in order."""
    from orsim.sim import open_sim_cluster

    async with open_sim_cluster(DB) as sim:
        status = sim.nodes["ORS_1"].status().to_json()
        assert list(status) == [
            "app", "type", "node_id", "cluster", "data_center", "mode", "role", "mode_since",
            "epoch", "pid", "sessions", "calls_routed", "sessions_recovered",
            "sessions_adopted", "watching", "call_watching_timeout_ms", "live_nodes",
            "tserver_connected", "urs_connected", "store", "store_failures", "store_outages",
            "sessions_unpersisted", "store_deletes_pending", *FRAMES,
        ]  # fmt: skip
        assert isinstance(status["live_nodes"], list)
