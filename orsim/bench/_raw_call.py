"""The raw call path: calls/s of a *call-shaped* exchange with no logic, the denominator
of the throughput section's ratio.

A routed call of the 2-Node cluster crosses these processes: the T-Server pushes a
``route_request`` to the Node's primary ORS, which creates the session at the store
server, asks the URS for a target and sends ``route`` back to the T-Server (and, off the
critical path, fans the news out to the other ORS processes, deletes the session, ...).
This module replays exactly the critical path's messages, with the same payloads
(orsim's typed messages, ``orsim.wire.encode``/``FrameDecoder``), between the same
number of processes over loopback TCP, and nothing else: no handshake, no ADDP, no fault
proxy, no request bookkeeping beyond an id, no ledger, no session table, no role:

    driver (T-Server role, this process)
      -- push route_request -->  ORS k (one process per primary, calls alternate)
                                   -- create_session --> store  (own process, answers)
                                   -- select_target  --> URS    (own process, answers)
      <-- request route --------
      -- response routed ------>

The driver keeps ``window`` calls in flight (closed loop) and reports calls/s over
``calls`` calls: a saturation measure, as the cluster's ``calls_per_s`` (the sweep's
best routed rate) is. ``python -m orsim.bench._raw_call ROLE [PORTS...]`` runs one
stand-in process (``store``, ``urs``, or ``ors STORE_PORT URS_PORT NODE_ID``) and prints
the port it listens on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import attrs
import trio

from orsim.bench._raw import LOOPBACK, READ_SIZE, serve_answering
from orsim.store import CreateSession, Session
from orsim.tserver import Route, RouteRequest
from orsim.urs import SelectTarget
from orsim.wire import NEED_DATA, FrameDecoder, Json, Push, Request, Response, encode

#: Node ids of the bench topology's primaries (any positive ids would do).
_NODE_IDS = (103, 105)


@attrs.frozen
class RawCallResult:
    """``calls`` call-shaped exchanges completed in ``seconds`` through ``nodes`` ORS."""

    calls: int
    seconds: float
    nodes: int

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def route_request_frame(n: int) -> bytes:
    call = RouteRequest(f"SIP_Server-1-{n}", "5000", time.time(), time.time() + 10.0)
    return encode(Push(RouteRequest.TOPIC, call.to_json()))


#: What the store and the URS stand-ins answer (``created``, ``target``).
ANSWERS: dict[str, Json] = {"store": {"created": True}, "urs": {"target": "Agent_1"}}


async def serve_answers(
    role: str, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """The store or URS stand-in: answers every request with ``ANSWERS[role]``."""
    await serve_answering(ANSWERS[role], task_status=task_status)


async def _reader(stream: trio.SocketStream, on_message: Callable[[object], None]) -> None:
    decoder = FrameDecoder()
    while data := await stream.receive_some(READ_SIZE):
        decoder.receive_data(data)
        while (message := decoder.next_message()) is not NEED_DATA:
            on_message(message)


@attrs.define(eq=False)
class _OrsRelay:
    """One ORS stand-in: per call, create_session, then select_target, then route."""

    store: trio.SocketStream
    urs: trio.SocketStream
    node_id: int
    app: str
    ids: int = 0
    #: request id -> (call id, step) awaiting an answer.
    pending: dict[int, tuple[str, str]] = attrs.Factory(dict)
    out: dict[str, bytearray] = attrs.Factory(dict)

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def queue(self, where: str, frame: bytes) -> None:
        self.out.setdefault(where, bytearray()).extend(frame)

    def on_route_request(self, message: object) -> None:
        if not isinstance(message, Push):
            return
        call_id = str(message.data["call_id"])
        session = Session(
            call_id=call_id,
            node_id=self.node_id,
            epoch=2,
            dn="5000",
            state="created",
            created_at=time.time(),
        )
        rid = self.next_id()
        self.pending[rid] = (call_id, "store")
        body = CreateSession(session).to_json()
        self.queue("store", encode(Request(rid, CreateSession.METHOD, body)))

    def on_answer(self, message: object) -> None:
        if not isinstance(message, Response):
            return
        call_id, step = self.pending.pop(message.id)
        rid = self.next_id()
        if step == "store":
            self.pending[rid] = (call_id, "urs")
            body = SelectTarget(call_id, "5000").to_json()
            self.queue("urs", encode(Request(rid, SelectTarget.METHOD, body)))
        elif step == "urs":
            self.pending[rid] = (call_id, "route")
            body = Route(call_id, "Agent_1", self.app, self.node_id, 2).to_json()
            self.queue("tserver", encode(Request(rid, Route.METHOD, body)))

    async def flush(self, streams: dict[str, trio.SocketStream]) -> None:
        while self.out:
            where, data = self.out.popitem()
            await streams[where].send_all(data)


async def serve_ors(
    store_port: int,
    urs_port: int,
    node_id: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """One ORS stand-in: accepts the driver, relays each call through store and URS."""
    store = await trio.open_tcp_stream(LOOPBACK, store_port)
    urs = await trio.open_tcp_stream(LOOPBACK, urs_port)
    listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)
    task_status.started(listeners[0].socket.getsockname()[1])
    tserver = await listeners[0].accept()
    relay = _OrsRelay(store, urs, node_id, f"ORS_{node_id}")
    streams = {"store": store, "urs": urs, "tserver": tserver}
    wake = trio.Event()

    def feed(handler: Callable[[object], None]) -> Callable[[object], None]:
        def on_message(message: object) -> None:
            handler(message)
            wake.set()

        return on_message

    async def writer() -> None:
        nonlocal wake
        while True:
            await wake.wait()
            wake = trio.Event()
            await relay.flush(streams)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        nursery.start_soon(_reader, store, feed(relay.on_answer))
        nursery.start_soon(_reader, urs, feed(relay.on_answer))

        def from_tserver(message: object) -> None:
            (relay.on_route_request if isinstance(message, Push) else relay.on_answer)(message)

        await _reader(tserver, feed(from_tserver))
        nursery.cancel_scope.cancel()


async def drive(ors_ports: list[int], calls: int, window: int = 128) -> RawCallResult:
    """The T-Server's side: ``calls`` route requests to the ORS stand-ins in turn,
    ``window`` in flight, each answered ``routed``; calls/s until the last is routed."""
    streams = [await trio.open_tcp_stream(LOOPBACK, port) for port in ors_ports]
    credit = trio.Semaphore(window)
    routed = 0
    done = trio.Event()
    answers = [bytearray() for _ in streams]
    locks = [trio.StrictFIFOLock() for _ in streams]  # the sender and the answerer share
    start = time.perf_counter()

    async def send() -> None:
        sent = 0
        while sent < calls:
            await credit.acquire()
            batches = [bytearray() for _ in streams]
            batches[sent % len(streams)] += route_request_frame(sent)
            sent += 1
            while sent < calls:  # write whatever the window allows in one go
                try:
                    credit.acquire_nowait()
                except trio.WouldBlock:
                    break
                batches[sent % len(streams)] += route_request_frame(sent)
                sent += 1
            for stream, lock, batch in zip(streams, locks, batches, strict=True):
                if batch:
                    async with lock:
                        await stream.send_all(batch)

    async def receive(k: int) -> None:
        nonlocal routed
        decoder = FrameDecoder()
        stream = streams[k]
        while not done.is_set():
            data = await stream.receive_some(READ_SIZE)
            if not data:
                raise ConnectionError("an ORS stand-in closed its connection")
            decoder.receive_data(data)
            while (message := decoder.next_message()) is not NEED_DATA:
                assert isinstance(message, Request)
                call_id = str(message.params["call_id"])
                answers[k] += encode(Response(message.id, {"routed": True, "call_id": call_id,
                                                           "latency_ms": 1.0}))  # fmt: skip
                routed += 1
                credit.release()
            if answers[k]:
                data, answers[k] = bytes(answers[k]), bytearray()
                async with locks[k]:
                    await stream.send_all(data)
            if routed >= calls:
                done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        for k in range(len(streams)):
            nursery.start_soon(receive, k)
        await done.wait()
        seconds = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
    return RawCallResult(calls=routed, seconds=seconds, nodes=len(streams))


async def _start(argv: list[str], stack: list[trio.Process]) -> int:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "orsim.bench._raw_call", *argv], stdout=subprocess.PIPE
    )
    stack.append(proc)
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(64)
            if not chunk:
                raise RuntimeError(f"the raw {argv[0]} process exited before its port")
            line += chunk
    return int(line)


async def measure_raw_call(calls: int = 30_000, nodes: int = 2, window: int = 128) -> RawCallResult:
    """Start the store, the URS and ``nodes`` ORS stand-ins (each its own process) and
    drive ``calls`` call-shaped exchanges through them from this process."""
    procs: list[trio.Process] = []
    try:
        store = await _start(["store"], procs)
        urs = await _start(["urs"], procs)
        ors = [
            await _start(["ors", str(store), str(urs), str(_NODE_IDS[k % 2] + 2 * (k // 2))], procs)
            for k in range(nodes)
        ]
        return await drive(ors, calls, window)
    finally:
        for proc in procs:
            proc.kill()
            await proc.wait()


async def _serve_main(argv: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        if argv[0] in ANSWERS:
            port = await nursery.start(serve_answers, argv[0])
        else:
            port = await nursery.start(serve_ors, int(argv[1]), int(argv[2]), int(argv[3]))
        print(port, flush=True)


if __name__ == "__main__":
    trio.run(_serve_main, sys.argv[1:])
