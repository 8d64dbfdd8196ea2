"""Batched fan-out: ``PushBatch`` on the wire and the T-Server's batches to the clients
that register for them."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio
import trio.testing

from orsim.config._model import Application
from orsim.errors import RemoteProtocolError
from orsim.tserver import CallRouted, ClaimEpoch, RouteRequest, TServer, TServerClient
from orsim.tserver import _server as server_module
from orsim.wire import (
    Connection,
    MemoryNetwork,
    Notice,
    Push,
    PushBatch,
    PushTable,
    connected,
    decode_body,
    encode,
    when,
)

HOST = "127.0.0.1"


def tserver_app() -> Application:
    return Application(
        name="SIP_Server",
        type="SIPServer",
        host="hostA",
        address=HOST,
        port=0,
        options={"routing-points": {"5000": "default"}, "TServer": {"router-timeout": "10"}},
    )


def _table(seen: list[Notice]) -> PushTable:
    def keep(_conn: Connection, notice: Notice) -> None:
        seen.append(notice)

    return PushTable.of([when(RouteRequest, keep), when(CallRouted, keep)])


def test_batch_round_trips_through_the_codec() -> None:
    """A batch's pushes come out of a frame as they went in, in order."""
    items = (
        Push("route_request", {"call_id": "c-1", "dn": "5000"}),
        Push("call_routed", {"call_id": "c-0", "app": "ORS_1"}),
    )
    frame = encode(Push(PushBatch.TOPIC, PushBatch(items).to_json()))
    message = decode_body(frame[4:])
    assert isinstance(message, Push)
    assert PushBatch.from_json(message.data) == PushBatch(items)


async def test_push_table_handles_each_push_of_a_batch_in_order() -> None:
    """Each push of a batch goes to its handler as if it came alone; unknown topics are
    skipped."""
    seen: list[Notice] = []
    batch = PushBatch(
        (
            Push("route_request", {"call_id": "c-1", "dn": "5000"}),
            Push("nobody_takes_this", {}),
            Push("call_routed", {"call_id": "c-0", "app": "ORS_1"}),
        )
    )
    await _table(seen)(None, Push(PushBatch.TOPIC, batch.to_json()))  # type: ignore[arg-type]  # no connection needed
    assert seen == [RouteRequest("c-1", "5000"), CallRouted("c-0", "ORS_1")]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"items": []},
        {"items": "x"},
        {"items": [["route_request"]]},
        {"items": [[1, {}]]},
        {"items": [["route_request", []]]},
        {"items": [["pushes", {"items": []}]]},
        {"items": [["call_routed", {"call_id": "c-0"}], ["route_request", {"call_id": ""}]]},
    ],
)
async def test_a_malformed_batch_is_a_protocol_error_and_nothing_is_handled(
    data: dict[str, object],
) -> None:
    """A malformed batch (or a malformed push in it) costs the sender its link; none of
    its pushes is handled, not even the good ones before the bad one."""
    seen: list[Notice] = []
    with pytest.raises(RemoteProtocolError):
        await _table(seen)(None, Push(PushBatch.TOPIC, data))  # type: ignore[arg-type]  # no connection needed
    assert seen == []


async def test_tserver_batches_pushes_for_clients_that_ask(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A client registered with ``batches`` hears every call and every call's routing,
    in order, in fewer frames than pushes; a client that did not ask gets one frame per
    push, as before."""
    net = MemoryNetwork()
    batched: list[Notice] = []
    table = _table(batched)
    plain: list[Push] = []

    async def keep_plain(_conn: Connection, push: Push) -> None:
        plain.append(push)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(TServer.from_application(tserver_app()).serve, net.for_app("SIP_Server"))
        )
        async with (
            connected(
                net.for_app("ORS_1"),
                HOST,
                port,
                app="ORS_1",
                app_type="OrchestrationServer",
                on_push=table,
            ) as a,
            connected(
                net.for_app("ORS_2"),
                HOST,
                port,
                app="ORS_2",
                app_type="OrchestrationServer",
                on_push=keep_plain,
            ) as b,
        ):
            ors_1, ors_2 = TServerClient(a), TServerClient(b)
            await ors_1.register("ORS_1", 1, [], batches=True)
            await ors_1.fence(1, 1, app="ORS_1")  # Node 1's primary: prompt news
            await ors_2.register("ORS_2", 2, [])
            frames_before = a.frames_received
            await ors_2.generate(rate=500, duration=0.5)
            await trio.sleep(0.2)
            # Routed while the generator runs: the news rides with its next ticks.
            calls = [n.call_id for n in batched if isinstance(n, RouteRequest)]
            for call_id in calls:
                await ors_2.route(call_id, "Agent_1", app="ORS_2", node_id=2, epoch=0)
            await trio.sleep(0.4)
            made = [n.call_id for n in batched if isinstance(n, RouteRequest)]
            assert len(made) == 250
            assert [p.data["call_id"] for p in plain if p.topic == "route_request"] == made
            routed = [n.call_id for n in batched if isinstance(n, CallRouted)]
            assert routed == calls
            assert all(p.topic != PushBatch.TOPIC for p in plain)
            assert a.frames_received - frames_before < len(batched) / 2
            # With no generator to ride with, the news goes out at once.
            one = await ors_2.make_call()
            await ors_2.route(one, "Agent_1", app="ORS_2", node_id=2, epoch=0)
            sent = trio.current_time()
            while not any(isinstance(n, CallRouted) and n.call_id == one for n in batched):
                await trio.sleep(0.0001)
            assert trio.current_time() - sent < server_module.FANOUT_LINGER
        nursery.cancel_scope.cancel()


def test_a_big_fanout_is_cut_into_frames_of_bounded_size() -> None:
    """More pushes than ``PUSHES_PER_BATCH`` go out in several batches."""
    pushes = [Push("route_request", {"call_id": f"c-{n}"}) for n in range(1201)]
    frames = server_module._batch_frames(pushes)
    assert len(frames) == math.ceil(1201 / server_module.PUSHES_PER_BATCH)
    decoded: list[Push] = []
    for frame in frames:
        message = decode_body(frame[4:])
        assert isinstance(message, Push)
        decoded.extend(PushBatch.from_json(message.data).items)
    assert decoded == pushes


async def _batch_arrivals(
    wakeups: float, monkeypatch: pytest.MonkeyPatch
) -> list[list[tuple[float, list[str]]]]:
    """Three batching clients of a T-Server, each its Node's primary, whose fan-out may
    wake them ``wakeups`` times a second together, under a 1,000 calls/s generator for
    0.3 s: per client, each frame's arrival time and the route requests it carried."""
    monkeypatch.setattr(server_module, "FANOUT_WAKEUPS", wakeups)
    net = MemoryNetwork()
    arrivals: list[list[tuple[float, list[str]]]] = [[], [], []]

    def recorder(k: int) -> PushTable:
        seen: list[Notice] = []
        table = _table(seen)

        async def record(conn: Connection, push: Push) -> None:
            await table(conn, push)
            calls = [n.call_id for n in seen if isinstance(n, RouteRequest)]
            seen.clear()
            arrivals[k].append((trio.current_time(), calls))

        return record  # type: ignore[return-value]  # a PushHandler, as a table is

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(TServer.from_application(tserver_app()).serve, net.for_app("SIP_Server"))
        )
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for k in range(3):
                app = f"ORS_{k + 1}"
                conn = await stack.enter_async_context(
                    connected(net.for_app(app), HOST, port, app=app,
                              app_type="OrchestrationServer", on_push=recorder(k))
                )  # fmt: skip
                client = TServerClient(conn)
                await client.register(app, k + 1, [], batches=True)
                await client.fence(k + 1, 1, app=app)
                clients.append(client)
            await clients[0].generate(rate=1000, duration=0.3)
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    return arrivals


async def test_fanout_flushes_are_paced_for_many_batching_clients(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more batching clients than ``FANOUT_WAKEUPS`` allows at one flush per
    generator tick, each client gets a frame at most every ``clients / FANOUT_WAKEUPS``
    seconds (here 3 / 300 = 10 ms), and still every call, once, in order."""
    arrivals = await _batch_arrivals(300.0, monkeypatch)
    for frames in arrivals:
        calls = [c for _, batch in frames for c in batch]
        assert len(calls) == 300 and len(set(calls)) == 300
        assert calls == [c for _, batch in arrivals[0] for c in batch]
        times = [t for t, batch in frames if batch]
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.01 - 1e-9
        # A frame carries at most the calls of the gap and of the tick that ends it.
        assert max(len(batch) for _, batch in frames) <= 14


async def test_fanout_goes_out_each_tick_for_few_clients(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the pace allows a flush per generator tick (3 / 2000 s < 4 ms), each tick's
    calls go out at the end of that tick, as before pacing."""
    arrivals = await _batch_arrivals(2000.0, monkeypatch)
    for frames in arrivals:
        times = [t for t, batch in frames if batch]
        assert len([c for _, batch in frames for c in batch]) == 300
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) <= server_module.GENERATOR_TICK + 1e-6


async def test_fanout_pace_is_capped(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many clients batch, a route request waits at most ``FANOUT_MAX_GAP``
    for the pace (here 3 / 30 = 100 ms, capped at 20 ms)."""
    monkeypatch.setattr(server_module, "FANOUT_MAX_GAP", 0.02)
    arrivals = await _batch_arrivals(30.0, monkeypatch)
    for frames in arrivals:
        times = [t for t, batch in frames if batch]
        assert len([c for _, batch in frames for c in batch]) == 300
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.02 - 1e-9
        assert max(gaps) <= 0.02 + server_module.GENERATOR_TICK + 1e-6


# -- lazy delivery: clients that do not hold their Node's epoch --------------------------


class _Fanout:
    """A T-Server (ledger times = trio times) and its clients, each with what it heard:
    per frame, the arrival time and its notices."""

    def __init__(self, net: MemoryNetwork, port: int, stack: contextlib.AsyncExitStack) -> None:
        self.net, self.port, self.stack = net, port, stack
        self.heard: dict[str, list[tuple[float, list[Notice]]]] = {}

    async def join(self, app: str, node_id: int | None) -> TServerClient:
        """``app`` of Node ``node_id`` registers for batches."""
        frames = self.heard[app] = []
        seen: list[Notice] = []
        table = _table(seen)

        async def record(conn: Connection, push: Push) -> None:
            await table(conn, push)
            frames.append((trio.current_time(), seen.copy()))
            seen.clear()

        conn = await self.stack.enter_async_context(
            connected(self.net.for_app(app), HOST, self.port, app=app,
                      app_type="OrchestrationServer", on_push=record)
        )  # fmt: skip
        client = TServerClient(conn)
        await client.register(app, node_id, [], batches=True)
        return client

    def calls(self, app: str, kind: type[Notice] = RouteRequest) -> list[str]:
        """The call ids of the ``kind`` notices ``app`` heard, in order."""
        return [n.call_id for _, ns in self.heard[app] for n in ns if isinstance(n, kind)]  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def _fanout() -> AsyncIterator[_Fanout]:
    net = MemoryNetwork()
    server = TServer.from_application(tserver_app())
    async with trio.open_nursery() as nursery:
        serve = partial(server.serve, net.for_app("SIP_Server"), wall_at_zero=0.0)
        port = await nursery.start(serve)
        async with contextlib.AsyncExitStack() as stack:
            yield _Fanout(net, port, stack)
        nursery.cancel_scope.cancel()


async def test_a_backup_hears_every_call_lazily(autojump_clock: trio.testing.MockClock) -> None:
    """Node 1's backup (it never fenced) hears every call, once, in order, in frames
    ``FANOUT_LAZY_GAP`` apart, each call within that of its creation; its primary (it
    fenced) and a client of no Node hear them at the generator's pace."""
    gap = server_module.FANOUT_LAZY_GAP
    async with _fanout() as fanout:
        primary = await fanout.join("ORS_1", 1)
        await primary.fence(1, 1, app="ORS_1")
        await fanout.join("ORS_1_B", 1)
        await fanout.join("router", None)
        await primary.generate(rate=1000, duration=0.3)
        await trio.sleep(0.5)
    made = fanout.calls("ORS_1")
    assert len(made) == 300 and len(set(made)) == 300
    assert fanout.calls("ORS_1_B") == made == fanout.calls("router")
    lazy = [(t, ns) for t, ns in fanout.heard["ORS_1_B"] if ns]
    assert min(b[0] - a[0] for a, b in itertools.pairwise(lazy)) >= gap - 1e-9
    waits = [t - (n.created_at or 0) for t, ns in lazy for n in ns if isinstance(n, RouteRequest)]
    assert max(waits) <= gap + 1e-9
    assert len(lazy) <= 0.3 / gap + 1
    tick = server_module.GENERATOR_TICK
    for prompt in ("ORS_1", "router"):
        times = [t for t, ns in fanout.heard[prompt] if ns]
        assert max(b - a for a, b in itertools.pairwise(times)) <= tick + 1e-6


async def test_a_fence_hurries_the_news_to_the_new_holder(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """When Node 1's backup fences (a takeover), every push waiting for it arrives ahead
    of the fence's answer: the calls offered and the news of those routed. From then on
    it hears each call at once, and the primary it displaced only ``FANOUT_LAZY_GAP``
    later."""
    async with _fanout() as fanout:
        primary = await fanout.join("ORS_1", 1)
        await primary.fence(1, 1, app="ORS_1")
        backup = await fanout.join("ORS_1_B", 1)
        calls = [await primary.make_call() for _ in range(3)]
        await primary.route(calls[0], "Agent_1", app="ORS_1", node_id=1, epoch=1)
        assert fanout.calls("ORS_1_B") == []  # lazy: nothing yet
        fenced_at = trio.current_time()
        await backup.fence(1, 2, app="ORS_1_B")
        assert trio.current_time() == fenced_at
        assert fanout.calls("ORS_1_B") == calls
        assert fanout.calls("ORS_1_B", CallRouted) == [calls[0]]
        # Now the displaced primary is the lazy one.
        made_at = trio.current_time()
        late = await primary.make_call()
        while late not in fanout.calls("ORS_1_B"):
            await trio.sleep(0.0001)
        assert trio.current_time() - made_at < server_module.FANOUT_LINGER
        while late not in fanout.calls("ORS_1"):
            await trio.sleep(0.0001)
        assert trio.current_time() - made_at >= server_module.FANOUT_LAZY_GAP - 1e-9


async def test_a_claim_at_the_tserver_hurries_the_news_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backup that claims its Node's next epoch here (the store away) gets what waited
    for it ahead of the answer, as a fence would."""
    async with _fanout() as fanout:
        primary = await fanout.join("ORS_1", 1)
        await primary.fence(1, 1, app="ORS_1")
        backup = await fanout.join("ORS_1_B", 1)
        call = await primary.make_call()
        assert fanout.calls("ORS_1_B") == []
        claim = ClaimEpoch(1, 1, 2, "ORS_1_B")
        assert (await backup.conn.call(claim, 5)).won
        assert fanout.calls("ORS_1_B") == [call]
