"""The fuzz loop: inputs through the codec, then straight into a server's dispatch.

No sockets and no scheduler round per input: each client is a real ``Connection``
serving over a ``NullStream`` (its writes vanish, it reads nothing), so the servers can
keep, push to and drop it as they would a real one, while the loop awaits the request
or push handler directly. Each input is first encoded and decoded as on the wire, so
the handlers see only what a peer could really send.

Outcomes: ``ok``; ``error`` (an error answer, or a push refused as a protocol error:
that link is closed); ``rejected`` (the codec refused the frame); ``crash`` (an
exception that would end the server, or a handler bug the dispatcher turned into
``internal``); ``unchecked`` (a KeyError/TypeError/ValueError, which ``Connection``
answers as ``bad_request``: not fatal, but the input got past the server's checks);
``hang`` (no answer within ``HANG_S``: the run stops there).
"""

from __future__ import annotations

import os
import resource
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import attrs
import trio

from orsim.errors import (
    ConnectionLost,
    LocalProtocolError,
    OrsimError,
    RemoteProtocolError,
    RequestRefused,
)
from orsim.fuzz._gen import JsonGen
from orsim.logs import quiet_logs
from orsim.wire import (
    Connection,
    Message,
    Push,
    PushHandler,
    Request,
    RequestHandler,
    Response,
    decode_body,
    encode,
)

#: Longest a handler may take for one input before it counts as a hang.
HANG_S = 5.0
#: Inputs between two scheduler checkpoints (the servers' own tasks run meanwhile).
CHECKPOINT_EVERY = 16
#: Failing inputs kept per report, with their traceback's last line.
EXAMPLES = 5


class NullStream(trio.abc.Stream):
    """A peer that takes every byte at once and never sends any."""

    eager_writes = True

    def __init__(self) -> None:
        self._closed = trio.Event()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await self._closed.wait()
        return b""

    async def aclose(self) -> None:
        self._closed.set()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class Dispatch:
    """What a target exposes to the loop: one server's handlers and its input maker."""

    #: (app, app type) the fuzzing clients say Hello as
    peers: tuple[tuple[str, str], ...]
    #: the next input for a client: a Request or a Push
    make: Callable[[JsonGen, Connection], Message]
    handler: RequestHandler | None = None
    on_push: PushHandler | None = None
    #: name pools the generator starts from
    pools: dict[str, list[str]] = attrs.Factory(dict)
    #: called with each successful answer (to learn names: call ids, targets)
    learn: Callable[[JsonGen, Request, object], None] | None = None
    on_disconnect: Callable[[Connection], Awaitable[None]] | None = None


#: A target: opens its server(s) in the nursery and yields their Dispatch.
Target = Callable[[trio.Nursery], AbstractAsyncContextManager[Dispatch]]


@attrs.define
class Report:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = attrs.Factory(Counter)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    examples: list[str] = attrs.Factory(list)

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    @property
    def failures(self) -> int:
        return self.outcomes["crash"] + self.outcomes["hang"]

    def line(self) -> str:
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.outcomes.items()))
        return (
            f"{self.target:<9} {self.inputs:>11,} inputs {self.seconds:7.1f} s "
            f"{self.rate:>9,.0f} inputs/s  rss {self.rss_start_mb:.0f}->{self.rss_end_mb:.0f} MB"
            f"  ({parts})"
        )


def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_target(name: str, target: Target, inputs: int, seed: int) -> Report:
    """Fuzz one target with ``inputs`` inputs from ``seed``."""
    report = Report(name)
    with quiet_logs():
        async with trio.open_nursery() as nursery, target(nursery) as dispatch:
            loop = _Loop(dispatch, JsonGen(seed, dispatch.pools), nursery, report)
            await loop.run(inputs)
            nursery.cancel_scope.cancel()
    return report


@attrs.define(eq=False)
class _Loop:
    dispatch: Dispatch
    gen: JsonGen
    nursery: trio.Nursery
    report: Report
    conns: list[Connection] = attrs.Factory(list)
    #: inputs done so far, and the one under way (for the watchdog)
    done: int = 0
    current: Message | None = None
    finished: bool = False

    async def run(self, inputs: int) -> None:
        self.conns = [await self._open(app, kind) for app, kind in self.dispatch.peers]
        report = self.report
        report.rss_start_mb = rss_mb()
        started = time.perf_counter()
        # One watchdog rather than a deadline per input (a cancel scope each costs ~15%
        # of an input): a hang ends the run, recorded with the input that hung.
        with trio.CancelScope() as scope:
            self.nursery.start_soon(self._watchdog, scope)
            for n in range(inputs):
                self.done = n
                index = self.gen.rng.randrange(len(self.conns))
                conn = self.conns[index]
                if conn.closed.is_set():  # dropped by the server (or refused a push)
                    conn = self.conns[index] = await self._reopen(conn)
                outcome = await self._one(conn)
                report.outcomes[outcome] += 1
                if n % CHECKPOINT_EVERY == 0:
                    await trio.lowlevel.checkpoint()
            self.done = inputs
        self.finished = True
        report.seconds = time.perf_counter() - started
        report.inputs = self.done
        report.rss_end_mb = rss_mb()

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        seen = -1
        while not self.finished:
            if self.done == seen and self.current is not None:
                self.report.outcomes["hang"] += 1
                self._example("hang", self.current, None)
                scope.cancel()
                return
            seen = self.done
            await trio.sleep(HANG_S)

    async def _open(self, app: str, kind: str) -> Connection:
        conn = Connection(NullStream(), app, kind)
        await self.nursery.start(_serve, conn)
        return conn

    async def _reopen(self, conn: Connection) -> Connection:
        await conn.aclose()
        if self.dispatch.on_disconnect is not None:
            await self.dispatch.on_disconnect(conn)
        return await self._open(conn.peer_app, conn.peer_type)

    async def _one(self, conn: Connection) -> str:
        message = self.dispatch.make(self.gen, conn)
        try:
            received = decode_body(encode(message)[4:])
        except LocalProtocolError:
            return "unsendable"
        except RemoteProtocolError:
            return "rejected"
        self.current = received
        if isinstance(received, Push):
            return await self._push(conn, received)
        if isinstance(received, Request):
            return await self._request(conn, received)
        return "ok"  # another message type: a server never gets one past the Hello

    async def _push(self, conn: Connection, push: Push) -> str:
        if self.dispatch.on_push is None:
            return "ok"
        try:
            await self.dispatch.on_push(conn, push)
        except RemoteProtocolError:
            await conn.aclose()  # as Connection.serve does: this link ends
            return "error"
        except Exception as exc:
            self._example("crash", push, exc)
            return "crash"
        return "ok"

    async def _request(self, conn: Connection, request: Request) -> str:
        if self.dispatch.handler is None:
            return "ok"
        try:
            result = await self.dispatch.handler(conn, request)
        except RequestRefused as exc:
            if exc.code == "internal":  # a handler bug the dispatcher caught
                self._example("crash", request, exc)
                return "crash"
            return "error"
        except (ConnectionLost, OrsimError):
            return "error"
        except (KeyError, TypeError, ValueError) as exc:
            # Connection answers these bad_request: the server lives, but the input got
            # past its checks. Reported, not failed.
            self._example("unchecked", request, exc)
            return "unchecked"
        except Exception as exc:
            self._example("crash", request, exc)
            return "crash"
        try:
            encode(Response(request.id, result))
        except LocalProtocolError:
            return "error"  # answered too_large
        if self.dispatch.learn is not None:
            self.dispatch.learn(self.gen, request, result)
        return "ok"

    def _example(self, kind: str, message: Message, exc: BaseException | None) -> None:
        if sum(e.startswith(kind) for e in self.report.examples) >= EXAMPLES:
            return
        where = ""
        if exc is not None:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        text = repr(message)
        text = text if len(text) <= 300 else text[:297] + "..."
        self.report.examples.append(f"{kind}: {exc!r}{where}: {text}")


async def _serve(conn: Connection, *, task_status: trio.TaskStatus[None]) -> None:
    """Serve ``conn`` (its writer runs, so servers may push to it) until it closes."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        while True:  # until its writer runs (push_nowait refuses until then)
            await trio.lowlevel.checkpoint()
            try:
                conn.push_nowait("fuzz", {})
            except RuntimeError:
                continue
            break
        task_status.started()
