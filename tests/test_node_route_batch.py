"""Route requests a batch at a time: ``RoutesRequested``/``CallsRouted`` in the core, the
``when_many`` rows of a ``PushTable``, and what the T-Server's messages read of a run."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from orsim.errors import RemoteProtocolError, RequestRefused
from orsim.node import _watch
from orsim.node._assignment import assign, home_rivals, outweighed_at_home, outweighed_by
from orsim.node._core import (
    CallRouted,
    CallsRouted,
    Command,
    EpochClaimed,
    FenceAnswered,
    MemberAnnounced,
    NodeCore,
    PeerLinkDown,
    PeerLinkUp,
    RouteRequested,
    RoutesRequested,
    SessionAnnounced,
    SessionsLoaded,
    WriteSession,
)
from orsim.node._membership import MemberInfo
from orsim.node._messages import SessionCreated as SessionAnnouncedPush
from orsim.node._runtime import OrsNode
from orsim.node._settings import Endpoint, NodeSettings, PeerApp
from orsim.tserver import CallRouted as CallRoutedPush
from orsim.tserver import RoutedCalls, RouteRequest, RouteRequests
from orsim.wire import Connection, Json, Push, PushBatch, PushTable, _codec, _typed, when, when_many

DCS = ("East", "West")


def cluster_core(
    nodes: dict[int, str], live: set[int], role: str, timeout_ms: float = 300.0
) -> NodeCore:
    """``NodeCore`` of "A", one half of Node 1 ("A_2" the other), with both applications
    of each Node of ``live`` linked and announced; ``role``: primary, backup or starting
    (its partner not heard yet)."""
    backup = role == "backup"
    peers = [PeerApp("A_2", 1, nodes[1], "127.0.0.1", 2, is_backup=not backup)]
    for n in sorted(nodes):
        if n != 1:
            peers += [
                PeerApp(f"N{n}", n, nodes[n], "127.0.0.1", 10 * n, is_backup=False),
                PeerApp(f"N{n}_B", n, nodes[n], "127.0.0.1", 10 * n + 1, is_backup=True),
            ]
    server = Endpoint("X", "127.0.0.1", 1)
    settings = NodeSettings(
        app="A", node_id=1, configured_backup=backup, partner="A_2", cluster="C",
        data_center=nodes[1], address="127.0.0.1", port=1, peers=tuple(peers), nodes=nodes,
        tserver=server, urs=server, call_watching_timeout_ms=timeout_ms,
    )  # fmt: skip
    core = NodeCore(settings)
    core.start(0.0)
    for peer in peers:
        if peer.node_id in live or (peer.name == "A_2" and role != "starting"):
            core.handle(PeerLinkUp(peer.name), 0.0)
            mode = "backup" if peer.is_backup else "primary"
            info = MemberInfo(peer.name, peer.node_id, peer.data_center, mode, int(not backup))
            core.handle(MemberAnnounced(info), 0.0)
    if role == "primary":
        core.handle(EpochClaimed(1, True, 1), 0.0)
        core.handle(FenceAnswered(1), 0.0)
        core.handle(SessionsLoaded((), 1), 0.0)
    assert core.mode == {"primary": "primary", "backup": "backup", "starting": "starting"}[role]
    return core


def state_of(core: NodeCore) -> dict[str, Any]:
    """Everything the handling of route requests may change in ``core``."""
    return {
        "calls": dict(core.calls),
        "watches": dict(core.watcher.watches),
        "unowned": dict(core._unowned),
        "watched_dns": dict(core._watched_dns),
        "early_news": dict(core._early_news),
        "handled": list(core._handled),
        "arrival_live": core._arrival_live,
        "hint": core.take_deadline_hint(),
        "next_deadline": core.next_deadline(),
    }


calls = st.sampled_from([f"call-{i}" for i in range(40)])
requests = st.builds(
    RouteRequested,
    calls,
    st.sampled_from(["5000", "5001", ""]),
    st.none() | st.floats(0.0, 30.0),
    st.booleans(),
)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[dict[int, str], set[int]]:
    """Nodes 1..n in two data centers, and which of the others are live."""
    count = draw(st.integers(1, 7))
    nodes = {n: draw(st.sampled_from(DCS)) for n in range(1, count + 1)}
    live = {n for n in nodes if n != 1 and draw(st.booleans())}
    return nodes, live


@settings(max_examples=300, deadline=None)
@given(
    cluster=clusters(),
    role=st.sampled_from(["primary", "backup", "starting"]),
    before=st.lists(
        st.one_of(
            requests,
            st.builds(CallRouted, calls),
            st.builds(SessionAnnounced, calls, st.booleans()),
            st.tuples(st.sampled_from(["down", "up"]), st.integers(2, 7)),
        ),
        max_size=12,
    ),
    batch=st.lists(requests, max_size=25),
)
def test_a_batch_decides_as_its_requests_one_by_one(
    cluster: tuple[dict[int, str], set[int]],
    role: str,
    before: list[RouteRequested | CallRouted | SessionAnnounced | tuple[str, int]],
    batch: list[RouteRequested],
) -> None:
    """Whatever the membership, the role and what came before (calls routed, created,
    watched, announced early; Nodes lost or back since), a batch gives the commands and
    leaves the state that its requests give fed one by one, in order."""
    nodes, live = cluster
    one_by_one, batched = cluster_core(nodes, live, role), cluster_core(nodes, live, role)
    for core in (one_by_one, batched):
        for event in before:
            if not isinstance(event, tuple):
                core.handle(event, 1.0)
            elif event[1] in nodes:  # the primary of Node event[1] lost, or back
                app = f"N{event[1]}"
                if event[0] == "down":
                    core.handle(PeerLinkDown(app), 1.0)
                else:
                    core.handle(PeerLinkUp(app), 1.0)
                    info = MemberInfo(app, event[1], nodes[event[1]], "primary", 1)
                    core.handle(MemberAnnounced(info), 1.0)
        core.take_deadline_hint()
    expected: list[Command] = []
    for request in batch:
        expected += one_by_one.handle(request, 2.0)
    assert batched.handle(RoutesRequested.of(batch), 2.0) == expected
    assert state_of(batched) == state_of(one_by_one)


@given(batch=st.lists(requests, max_size=10))
def test_a_batch_lists_its_requests_in_order(batch: list[RouteRequested]) -> None:
    """``RoutesRequested.of`` and ``requests`` are each other's inverse."""
    assert RoutesRequested.of(batch).requests() == batch


@given(st.lists(calls, max_size=20), st.lists(calls, max_size=20))
def test_calls_routed_together_are_each_routed(known: list[str], routed: list[str]) -> None:
    """``CallsRouted`` is ``CallRouted`` for each call, in order."""
    nodes = {1: "East", 2: "East", 3: "East"}
    one_by_one, batched = (
        cluster_core(nodes, {2, 3}, "backup"),
        cluster_core(nodes, {2, 3}, "backup"),
    )
    for core in (one_by_one, batched):
        for call in known:
            core.handle(RouteRequested(call, "5000", 9.0), 1.0)
    for call in routed:
        assert one_by_one.handle(CallRouted(call), 2.0) == []
    assert batched.handle(CallsRouted(tuple(routed)), 2.0) == []
    assert state_of(batched) == state_of(one_by_one)


@given(call=calls, cluster=clusters())
def test_outweighed_by_home_rivals_is_outweighed_at_home(
    call: str, cluster: tuple[dict[int, str], set[int]]
) -> None:
    """The rivals found once per membership give the answer of ``outweighed_at_home``,
    which never contradicts ``assign``."""
    nodes, live = cluster
    live_nodes = {n: nodes[n] for n in nodes if n in live or n == 1}
    outweighed = outweighed_by(call, 1, home_rivals(live_nodes, 1))
    assert outweighed == outweighed_at_home(call, live_nodes, 1)
    if outweighed:
        assert 1 not in tuple(assign(call, live_nodes))
    assert not outweighed_by(call, 9, home_rivals(live_nodes, 9))  # not live: never


def test_a_call_outweighed_at_home_is_not_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a batch, only the calls whose Node is not outweighed at home reach the watcher's
    decision; the others are remembered as unowned at once, under the live Nodes."""
    nodes = {n: "East" for n in range(1, 9)}
    core = cluster_core(nodes, set(range(2, 9)), "primary")
    decided: list[str] = []

    def counting(call_id: str, *args: Any) -> _watch.Decision:
        decided.append(call_id)
        return real(call_id, *args)

    real = _watch.decide
    monkeypatch.setattr(_watch, "decide", counting)
    batch = [f"call-{i}" for i in range(64)]
    rivals = home_rivals(nodes, 1)
    out = core.handle(RoutesRequested.of(RouteRequested(c, "5000", 9.0) for c in batch), 2.0)
    outweighed = [c for c in batch if outweighed_by(c, 1, rivals)]
    assert outweighed and decided == [c for c in batch if c not in outweighed]
    assert all(core._unowned[c].elsewhere_under is core._arrival_live for c in outweighed)
    mine = [c for c in batch if assign(c, nodes).assigned == 1]
    assert [c.session.call_id for c in out if isinstance(c, WriteSession)] == mine


def test_a_batch_skips_calls_routed_or_under_way() -> None:
    """A call already routed, or being created, is not taken again from a batch."""
    nodes = {1: "East"}
    core = cluster_core(nodes, set(), "primary")
    core.handle(CallRouted("old"), 1.0)
    first = core.handle(RoutesRequested.of([RouteRequested("new", "5000")]), 1.0)
    again = core.handle(
        RoutesRequested.of([RouteRequested("old", "5000"), RouteRequested("new", "5000")]), 2.0
    )
    assert [type(c) for c in first] == [WriteSession] and again == []


# -- the wire: when_many rows ----------------------------------------------------------


def _table(seen: list[tuple[str, object]]) -> PushTable:
    def keep(name: str) -> Any:
        return lambda _conn, message: seen.append((name, message))

    return PushTable.of(
        [
            when_many(RouteRequest, RouteRequests.from_bodies, keep("requests")),
            when_many(CallRoutedPush, RoutedCalls.from_bodies, keep("routed")),
            when(SessionAnnouncedPush, keep("session")),
        ]
    )


def _batch(*items: tuple[str, dict[str, Json]]) -> Push:
    return Push(PushBatch.TOPIC, PushBatch(tuple(Push(t, d) for t, d in items)).to_json())


def _rr(call: str, **more: Json) -> tuple[str, dict[str, Json]]:
    return ("route_request", {"call_id": call, "dn": "5000", **more})


def _cr(call: str) -> tuple[str, dict[str, Json]]:
    return ("call_routed", {"call_id": call, "app": "ORS_1"})


#: The link a push came on: no handler here looks at it.
CONN = cast(Connection, None)


def test_consecutive_pushes_of_a_many_row_come_in_one_call_in_order() -> None:
    """Runs of one topic are read together; the order of the pushes is kept across
    topics, and a topic the table does not take does not break a run."""
    seen: list[tuple[str, object]] = []
    push = _batch(
        _rr("c1"), ("other", {}), _rr("c2"), _cr("c0"), _cr("c1"), _rr("c3"),
        ("session", {"call_id": "c3", "node_id": 1}),
    )  # fmt: skip
    _table(seen).dispatch(CONN, push)
    assert [(name, getattr(m, "call_ids", None)) for name, m in seen] == [
        ("requests", ("c1", "c2")),
        ("routed", ("c0", "c1")),
        ("requests", ("c3",)),
        ("session", None),
    ]


@pytest.fixture
def push_memo() -> Any:
    """The process's memos of pushes read, emptied before and after the test."""
    memos = (_codec.PUSH_MEMO, _typed._BATCHES, _typed._NOTICES)
    for memo in memos:
        memo.clear()
    yield memos
    for memo in memos:
        memo.clear()


def test_a_process_with_only_real_links_keeps_nothing_of_what_it_read(push_memo: Any) -> None:
    """Over TCP no other reader shares a push (the codec's memo stays empty), so reading a
    batch or a notice keeps neither: a lazy backup held 256 batches, ~15 MB."""
    memo, batches, notices = push_memo
    seen: list[tuple[str, object]] = []
    table = _table(seen)
    table.dispatch(CONN, _batch(_rr("c1"), _cr("c0")))
    table.dispatch(CONN, Push("session", {"call_id": "c3", "node_id": 1}))
    assert [name for name, _ in seen] == ["requests", "routed", "session"]
    assert (memo, batches, notices) == ({}, {}, {})


def test_readers_in_one_process_share_what_one_of_them_read(push_memo: Any) -> None:
    """In the simulation (the codec's memo in use) one read of a push serves every table
    that reads it alike."""
    memo, batches, notices = push_memo
    push = _batch(_rr("c1"), _cr("c0"))
    lone = Push("session", {"call_id": "c3", "node_id": 1})
    memo[b"a body"] = push  # a memory link's decoder shared a push
    first: list[tuple[str, object]] = []
    second: list[tuple[str, object]] = []
    for table in (_table(first), _table(second)):
        table.dispatch(CONN, push)
        table.dispatch(CONN, lone)
    assert len(batches) == 1 and len(notices) == 1
    assert all(a is b for (_, a), (_, b) in zip(first, second, strict=True))


def test_a_push_that_comes_alone_is_a_run_of_one() -> None:
    """A lone ``route_request`` is read as a batch of one."""
    seen: list[tuple[str, object]] = []
    _table(seen).dispatch(CONN, Push("route_request", {"call_id": "c1", "deadline": 5}))
    assert seen == [("requests", RouteRequests(("c1",), ("",), (None,), (False,)))]


@pytest.mark.parametrize(
    "bad",
    [
        ("route_request", {"call_id": 7}),
        ("route_request", {"dn": "5000"}),
        ("call_routed", {"call_id": ""}),
        ("session", {"call_id": None}),
    ],
)
@pytest.mark.parametrize("where", [0, 2, 4])
def test_a_malformed_push_anywhere_in_a_batch_and_nothing_is_handled(
    bad: tuple[str, dict[str, Json]], where: int
) -> None:
    """A malformed push costs the sender its link (``RemoteProtocolError``), wherever it
    sits in the batch, and nothing of the batch is handled."""
    seen: list[tuple[str, object]] = []
    items = [_rr("c1"), _rr("c2"), _cr("c0"), _rr("c3")]
    items.insert(where, bad)
    with pytest.raises(RemoteProtocolError, match="malformed"):
        _table(seen).dispatch(CONN, _batch(*items))
    assert seen == []


json_values = (
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5) | st.text(max_size=3)
)


@given(
    st.dictionaries(
        st.sampled_from(["call_id", "dn", "created_at", "deadline", "redelivered", "waited"]),
        json_values,
    )
)
def test_a_run_reads_each_push_as_its_typed_message(body: dict[str, Json]) -> None:
    """``RouteRequests`` and ``RoutedCalls`` read a push as ``from_json`` does, and refuse
    what it refuses, with the same reason."""
    single, run = (
        _reading(RouteRequest.from_json, body),
        _reading(RouteRequests.from_bodies, [body]),
    )
    if isinstance(single, RouteRequest) and isinstance(run, RouteRequests):
        want = (single.call_id, single.dn, single.left, single.redelivered)
        assert (run.call_ids, run.dns, run.left, run.redelivered) == tuple((v,) for v in want)
    else:
        assert single == run  # the same reason to refuse it
    routed, routed_run = (
        _reading(CallRoutedPush.from_json, body),
        _reading(RoutedCalls.from_bodies, [body]),
    )
    if isinstance(routed, CallRoutedPush) and isinstance(routed_run, RoutedCalls):
        assert routed_run.call_ids == (routed.call_id,)
    else:
        assert routed == routed_run


def _reading(read: Any, data: Any) -> object:
    """What ``read(data)`` gives, or the reason it refuses it."""
    try:
        return read(data)
    except RequestRefused as exc:
        return exc.message


# -- the runtime -----------------------------------------------------------------------


async def test_the_runtime_feeds_a_batch_with_each_expiry_in_its_own_clock(
    mock_clock: trio.testing.MockClock,
) -> None:
    """An ORS hands the core a batch as one event, each call's expiry what was left of
    its router timeout from now; the calls not its own are remembered as unowned."""
    nodes = {n: "East" for n in range(1, 5)}
    server = Endpoint("X", "127.0.0.1", 1)
    peers = tuple(
        PeerApp(f"N{n}", n, "East", "127.0.0.1", 10 * n, is_backup=False) for n in range(2, 5)
    )
    settings = NodeSettings(
        app="A", node_id=1, configured_backup=False, partner=None, cluster="C",
        data_center="East", address="127.0.0.1", port=1, peers=peers, nodes=nodes,
        tserver=server, urs=server, call_watching_timeout_ms=300,
    )  # fmt: skip
    ors = OrsNode(settings, network=None, store=None)  # type: ignore[arg-type]  # unused
    for peer in peers:
        ors.core.handle(PeerLinkUp(peer.name), 0.0)
        ors.core.handle(
            MemberAnnounced(MemberInfo(peer.name, peer.node_id, "East", "primary", 1)), 0.0
        )
    calls = [f"call-{i}" for i in range(40)]
    outweighed = [c for c in calls if outweighed_at_home(c, nodes, 1)]
    assert outweighed
    now = trio.current_time()
    items = [
        _rr(c, created_at=100.0, deadline=110.0, waited=1.5 if c == outweighed[0] else 0.0)
        for c in calls
    ]
    ors.pushes.dispatch(CONN, _batch(*items))
    for call in outweighed:
        left = 8.5 if call == outweighed[0] else 10.0
        assert math.isclose(ors.core._unowned[call].expires, now + left)
    assert not ors.core.calls  # starting (no store, no role yet): it creates nothing


def test_a_watched_call_stays_watched_when_its_node_is_outweighed_since() -> None:
    """A call watched under the membership of its first route request keeps its watch
    when it comes again in a batch after two heavier Nodes of this data center came up:
    the watch decides, as one by one, not the weights of now."""
    nodes = {1: "East", 2: "East", 3: "East", 4: "West"}
    call = next(
        c
        for c in (f"call-{i}" for i in range(10_000))
        if assign(c, {1: "East", 4: "West"}).assigned == 1 and outweighed_at_home(c, nodes, 1)
    )
    cores = [cluster_core(nodes, {4}, "backup") for _ in range(2)]
    for core in cores:
        core.handle(RouteRequested(call, "5000", 9.0), 1.0)
        assert call in core.watcher.watches
        for n in (2, 3):
            core.handle(PeerLinkUp(f"N{n}"), 1.5)
            core.handle(MemberAnnounced(MemberInfo(f"N{n}", n, "East", "primary", 1)), 1.5)
    one_by_one, batched = cores
    again = RouteRequested(call, "5001", 9.0)
    assert batched.handle(RoutesRequested.of([again]), 2.0) == one_by_one.handle(again, 2.0)
    assert call in batched.watcher.watches and call not in batched._unowned
    assert state_of(batched) == state_of(one_by_one)
