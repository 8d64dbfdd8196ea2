"""The raw limit: frames per second a bare trio client/server pair exchanges over
loopback with orsim's framing (``orsim.wire.encode`` / ``FrameDecoder``), without the
``Connection`` machinery (no handshake, no ADDP, no request bookkeeping).

The client keeps a window of requests in flight; the server decodes each and answers
with a response frame. Both directions count. The server normally runs in its own
process (``python -m orsim.bench._raw`` prints its port), as the cluster's servers do.
"""

from __future__ import annotations

import subprocess
import sys
import time

import attrs
import trio

from orsim.wire import NEED_DATA, FrameDecoder, Json, Request, Response, encode

LOOPBACK = "127.0.0.1"
READ_SIZE = 65536


@attrs.frozen
class RawResult:
    """``frames`` exchanged (both directions) in ``seconds``."""

    frames: int
    seconds: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _request(n: int) -> bytes:
    # A routing request of the size the call path sends.
    params = {"call_id": f"SIP_Server-1-{n}", "target": "Agent_1", "app": "ORS_1",
              "node_id": 103, "epoch": 2}  # fmt: skip
    return encode(Request(n, "route", params))


async def serve_answering(
    answer: Json, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer every request frame with ``answer`` on a free loopback port (reported
    through ``task_status``): each read's answers go out in one write."""
    listeners = await trio.open_tcp_listeners(0, host=LOOPBACK)

    async def serve(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        async with stream:
            while data := await stream.receive_some(READ_SIZE):
                decoder.receive_data(data)
                out = bytearray()
                while (message := decoder.next_message()) is not NEED_DATA:
                    assert isinstance(message, Request)
                    out += encode(Response(message.id, answer))
                if out:
                    await stream.send_all(out)

    async with trio.open_nursery() as nursery:
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(serve, listeners, handler_nursery=nursery)


async def serve_echo(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the echo (a route's answer) on a free loopback port."""
    await serve_answering({"routed": True, "latency_ms": 0.5}, task_status=task_status)


async def drive(port: int, requests: int, window: int = 128) -> RawResult:
    """Send ``requests`` requests keeping ``window`` in flight; wait for every answer."""
    stream = await trio.open_tcp_stream(LOOPBACK, port)
    credit = trio.Semaphore(window)
    answered = 0
    async with stream:
        start = time.perf_counter()

        async def send() -> None:
            sent = 0
            while sent < requests:
                await credit.acquire()
                batch = bytearray(_request(sent))
                sent += 1
                # Like a busy connection, write whatever the window allows in one go.
                while sent < requests:
                    try:
                        credit.acquire_nowait()
                    except trio.WouldBlock:
                        break
                    batch += _request(sent)
                    sent += 1
                await stream.send_all(batch)

        async def receive() -> None:
            nonlocal answered
            decoder = FrameDecoder()
            while answered < requests:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise ConnectionError("the echo server closed the connection")
                decoder.receive_data(data)
                while (message := decoder.next_message()) is not NEED_DATA:
                    assert isinstance(message, Response)
                    answered += 1
                    credit.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
        seconds = time.perf_counter() - start
    return RawResult(frames=2 * answered, seconds=seconds)


async def measure_raw(
    requests: int = 50_000, window: int = 128, separate: bool = True
) -> RawResult:
    """The raw loopback limit; ``separate`` runs the echo server in its own process."""
    if not separate:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_echo)
            result = await drive(port, requests, window)
            nursery.cancel_scope.cancel()
        return result
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "orsim.bench._raw"], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(64)
                if not chunk:
                    raise RuntimeError("the raw echo server exited before reporting its port")
                line += chunk
        return await drive(int(line), requests, window)
    finally:
        proc.kill()
        await proc.wait()


async def _serve_main() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_echo)
        print(port, flush=True)


if __name__ == "__main__":
    trio.run(_serve_main)
