"""A live connection: one reader, one writer lock, request ids, pushes and ADDP.

The connection is symmetric: either side may send requests and pushes, so the same class
serves clients, servers and node-to-node links. Run ``serve()`` in a nursery; it returns
when the peer closes, goes silent past the ADDP timeout, or breaks the protocol, and then
every pending request fails with ``ConnectionLost``.

Sending is write-behind while ``serve()`` runs: a frame is encoded at once and appended
to the connection's out-buffer, and one writer task sends everything buffered in a single
``send_all``. Under load many frames leave in one system call (and cross the fault proxy
as one chunk) instead of one call and several task switches per frame. An async send
(``send``, ``push``, ``request``, a request's answer) that finds nothing buffered and no
write under way sends its frame itself at once instead: the writer's turn would only add
a scheduler round to an idle link's latency, and frames sent meanwhile are buffered (the
sender holds the write lock), so batching under load is unchanged. That direct write
never waits: it writes what the socket takes at once (a non-blocking write) and leaves
the rest to the writer. Before ``serve()`` starts (or after it ends) frames are sent
directly. On a memory stream (``eager_writes``: a write is a copy, not a system call)
pushes, too, are written at once when the link is idle, as are ADDP polls and answers on
every stream; and a memory link's ADDP deadlines are kept, with every other memory
link's, as are its requests' timeouts, by one task per run (``_link_timers``), not by a
task and cancel scopes of its own.
``send`` waits while more than ``HIGH_WATER`` bytes are buffered, and a request
is not handled while its answers would join more than that; ``push_nowait`` never waits
and reports whether the frame was taken.

No hostage (ARCHITECTURE.md, principle 7): a peer that stops reading (SIGSTOP, a full
socket buffer) can hold up only its own link. Every write has a deadline: one that makes
no progress (``WRITE_CHUNK`` bytes taken) for ``stall_timeout`` seconds, or an out-buffer
grown past ``max_buffered`` bytes, closes the connection with the close reason "peer not
reading: ..." and counts it (``links_dropped_slow``); every waiting sender is woken with
``ConnectionLost``.

Every connection counts the frames it sends and receives; ``frame_counts()`` gives the
process-wide totals and the links dropped for not reading (the servers' ``status``
answers carry them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from orsim.errors import (
    ConnectionLost,
    LocalProtocolError,
    OrsimError,
    RemoteProtocolError,
    RequestRefused,
)
from orsim.logs import get_logger
from orsim.wire._addp import Addp, AddpAction
from orsim.wire._codec import DEFAULT_MAX_FRAME, NEED_DATA, PUSH_MEMO, FrameDecoder, encode
from orsim.wire._link_timers import link_timers
from orsim.wire._messages import (
    ErrorResponse,
    Json,
    Message,
    Ping,
    Pong,
    Push,
    Request,
    Response,
)
from orsim.wire._session import Session
from orsim.wire._transport import NonBlockingStream
from orsim.wire._typed import PushTable, Record

if TYPE_CHECKING:
    from orsim.wire._typed import Call, Notice

A = TypeVar("A")

RequestHandler = Callable[["Connection", Request], Awaitable[Json]]
#: A request handler called in the reader, without a task: it answers at once (its
#: result), or returns an awaitable (a coroutine) that a task of its own awaits for the
#: answer, for a request it cannot answer without waiting. Its exceptions are answered
#: as ``RequestHandler``'s are.
InlineHandler = Callable[["Connection", Request], Any]
PushHandler = Callable[["Connection", Push], Awaitable[None]]

_READ_SIZE = 65536
#: Largest frame an async sender writes itself when the link is idle (larger ones go to
#: the writer, which writes them in ``WRITE_CHUNK`` pieces under the stall deadline).
_DIRECT_MAX = 65536
#: Buffered bytes beyond which ``send`` waits for the writer (the peer is not reading),
#: and beyond which a request's handling waits for its answer to have room.
HIGH_WATER = 1024 * 1024
#: Default ``Connection.stall_timeout`` (s): the longest one write may make no progress
#: before the link is closed as not reading. Far above any pause of a live peer whose
#: socket buffers (megabytes) are full, short enough that a frozen one is dropped before
#: its backlog matters.
STALL_TIMEOUT = 2.0
#: Default ``Connection.max_buffered`` (bytes): an out-buffer this big means the peer is
#: not keeping up by far (senders wait at ``HIGH_WATER``; pushes that do not wait have
#: their own limits); the link is closed rather than let it grow.
MAX_BUFFERED = 16 * HIGH_WATER
#: Progress unit of a write: a bigger batch is written in pieces of this size, and each
#: piece must be taken within ``stall_timeout``.
WRITE_CHUNK = 256 * 1024

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@attrs.define
class FrameCounts:
    """Frames sent and received by every connection of this process."""

    sent: int = 0
    received: int = 0
    #: Connections closed because their peer did not read (stalled write, buffer cap).
    dropped_slow: int = 0


_TOTALS = FrameCounts()


@attrs.frozen
class FrameTotals(Record):
    """Process-wide frame totals, as a status shows them (``FLATTEN`` it in)."""

    frames_sent: int
    frames_received: int
    #: Connections closed as "peer not reading".
    links_dropped_slow: int


def frame_totals() -> FrameTotals:
    """The process-wide totals as a record (see ``frame_counts``)."""
    return FrameTotals(_TOTALS.sent, _TOTALS.received, _TOTALS.dropped_slow)


def frame_counts() -> dict[str, int]:
    """Process-wide totals: ``{"frames_sent": n, "frames_received": n,
    "links_dropped_slow": n}`` (the last: connections closed as "peer not reading")."""
    return {
        "frames_sent": _TOTALS.sent,
        "frames_received": _TOTALS.received,
        "links_dropped_slow": _TOTALS.dropped_slow,
    }


def _write_nowait(stream: trio.abc.Stream, data: bytes) -> int | None:
    """Write what ``stream`` takes without waiting; the bytes written, or None when the
    stream has no non-blocking write (then the caller must ``send_all``)."""
    if isinstance(stream, trio.SocketStream):
        fd = stream.socket.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("socket was already closed")
        try:
            return os.write(fd, data)  # the socket is non-blocking (trio made it so)
        except BlockingIOError:
            return 0
    # A ``NonBlockingStream``, looked up as an attribute: isinstance() against a
    # runtime-checkable Protocol walks its members on every call (a hot path).
    send_nowait = getattr(stream, "send_nowait", None)
    if send_nowait is not None:
        taken: int = send_nowait(data)
        return taken
    return None


def _eager(stream: trio.abc.Stream) -> bool:
    """Whether pushes should be written at once on an idle link rather than left to the
    writer task: only on a stream whose write costs no system call (``eager_writes``:
    the memory network's), where batching saves nothing and costs a task switch."""
    return isinstance(stream, NonBlockingStream) and bool(getattr(stream, "eager_writes", False))


#: What a request handler may raise to be answered with an error (``_error_reply``).
_HANDLER_ERRORS = (OrsimError, KeyError, TypeError, ValueError)


def _error_reply(request: Request, exc: BaseException) -> ErrorResponse | None:
    """The answer to ``request`` whose handler raised ``exc`` (one of ``_HANDLER_ERRORS``);
    None for ``ConnectionLost``: the link is gone, nothing to answer on."""
    if isinstance(exc, RequestRefused):
        return ErrorResponse(request.id, exc.code, exc.message)
    if isinstance(exc, ConnectionLost):
        return None
    if isinstance(exc, OrsimError):
        return ErrorResponse(request.id, "error", str(exc))
    return ErrorResponse(request.id, "bad_request", f"{request.method}: {exc!r}")


@attrs.define(eq=False)
class _Pending:
    """A request waiting for its answer (and, on a memory link, its ``LinkTimers``
    timeout: ``due`` makes it fail as too slow)."""

    done: trio.Event = attrs.Factory(trio.Event)
    outcome: Response | ErrorResponse | None = None
    timed_out: bool = False

    def alive(self) -> bool:
        return not self.done.is_set()

    def due(self, now: float) -> None:
        self.timed_out = True
        self.done.set()


#: How often a frozen application's memory links look whether it was thawed, to check
#: ADDP again (virtual seconds).
FROZEN_RECHECK = 0.05


@attrs.define(eq=False)
class _AddpTimer:
    """A memory link's ADDP deadlines, kept by ``LinkTimers``."""

    conn: Connection
    addp: Addp
    scope: trio.CancelScope

    def alive(self) -> bool:
        return not self.conn.closed.is_set()

    def due(self, now: float) -> float | None:
        stream = self.conn.stream
        if stream.stopped():  # type: ignore[attr-defined]
            # A stopped process checks nothing: it looks again once thawed, after its
            # reader took what waits (a real one, thawed, finds its deadlines past and
            # the bytes there at once; this simulation lets the bytes count first).
            return now + FROZEN_RECHECK
        # Bytes already in the link, not yet read, count as received: both ends' checks
        # fall due at the same virtual instant, and the first one's poll would otherwise
        # not count for the second, which would poll too (twice the frames for nothing).
        if stream.has_unread(now):  # type: ignore[attr-defined]
            self.addp.on_receive(now)
        if not self.conn._addp_step(self.addp, now, self.scope):
            return None
        return self.addp.next_deadline()


@attrs.define(eq=False)
class Connection:
    """One established, handshaken connection to a peer application."""

    stream: trio.abc.Stream
    peer_app: str
    peer_type: str
    addp_timeout: float = 0.0
    #: Log this side's ADDP polls, the answers to them and the loss (``addp-trace``).
    addp_trace: bool = False
    handler: RequestHandler | None = None
    on_push: PushHandler | None = None
    #: Answers requests in the reader when it can (see ``InlineHandler``); ``handler``
    #: is then not used.
    inline_handler: InlineHandler | None = None
    decoder: FrameDecoder = attrs.Factory(FrameDecoder)
    max_frame: int = DEFAULT_MAX_FRAME
    #: Longest one write may make no progress before the peer counts as not reading.
    stall_timeout: float = STALL_TIMEOUT
    #: Out-buffer size (bytes) beyond which the peer counts as not reading.
    max_buffered: int = MAX_BUFFERED
    closed: trio.Event = attrs.Factory(trio.Event)
    close_reason: str = ""
    _send_lock: trio.StrictFIFOLock = attrs.Factory(trio.StrictFIFOLock)
    #: Request ids, ADDP poll numbers and the sort of each frame (sans-IO).
    session: Session = attrs.Factory(Session)
    _pending: dict[int, _Pending] = attrs.Factory(dict)
    #: Frames sent and received on this connection.
    frames_sent: int = 0
    frames_received: int = 0
    _out: list[bytes] = attrs.Factory(list)
    _out_bytes: int = 0
    _writer_running: bool = False
    _writer_idle: trio.Event | None = None
    #: Where a memory link starts its writer task, once something is buffered (see
    #: ``serve``); None while it runs, or on other streams (their writer always runs).
    _writer_nursery: trio.Nursery | None = None
    _drained: trio.Event = attrs.Factory(trio.Event)
    _serve_scope: trio.CancelScope | None = None
    #: Pushes on an idle link are written at once (see ``_eager``); fixed per stream.
    _eager_pushes: bool = attrs.field(init=False, default=False)
    _send_nowait: Callable[[bytes], int] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._eager_pushes = _eager(self.stream)
        if self._eager_pushes:
            # Looked up once: every frame of a memory link is written through it.
            self._send_nowait = self.stream.send_nowait  # type: ignore[attr-defined]
            # Both ends in this process: a push fanned out to many links is decoded once.
            self.decoder.memo = PUSH_MEMO

    # -- sending -----------------------------------------------------------------

    @property
    def buffered_frames(self) -> int:
        """Frames waiting in the out-buffer for the writer."""
        return len(self._out)

    async def send(self, message: Message) -> None:
        """Send one message; raises ``ConnectionLost`` if the link is gone.

        While ``serve()`` runs the frame is buffered for the writer task (this waits only
        while the buffer is over ``HIGH_WATER``); otherwise it is sent directly.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        frame = self._encode(message)
        if not self._writer_running:
            await self._send_now(frame)
            return
        if self._idle_for(frame):
            await self._send_direct(frame)
            return
        self._buffer(frame)
        await self._wait_below_high_water()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def push_nowait(self, topic: str, data: dict[str, Json], limit: int | None = None) -> bool:
        """Buffer a push without waiting; False (not sent) when ``limit`` frames already wait.

        Raises:
            ConnectionLost: the link is closed.
            RuntimeError: ``serve()`` is not running (nothing would send the frame).
        """
        if not self._writer_running:
            self._check_open()
            raise RuntimeError("push_nowait needs serve() running")
        if limit is not None and len(self._out) >= limit:
            return False
        self._queue(self._encode(Push(topic, data)), self._eager_pushes)
        return True

    def send_frame_nowait(
        self, frame: bytes, limit: int | None = None, *, direct: bool = False
    ) -> bool:
        """Like ``push_nowait`` for a frame already encoded (``encode``): one encoding can
        go to many connections. False (not sent) when ``limit`` frames already wait.
        ``direct``: written at once on an idle link rather than left to the writer task
        (for a sender that batched its pushes itself: a task switch saved per frame).
        """
        self._check_open()
        if not self._writer_running:
            raise RuntimeError("send_frame_nowait needs serve() running")
        if limit is not None and len(self._out) >= limit:
            return False
        self.frames_sent += 1
        _TOTALS.sent += 1
        self._queue(frame, direct or self._eager_pushes)
        return True

    def _idle_for(self, frame: bytes) -> bool:
        """Nothing buffered and no write under way: ``frame`` may go out at once."""
        return not self._out and not self._send_lock.locked() and len(frame) <= _DIRECT_MAX

    def _write_direct(self, frame: bytes) -> bool:
        """Write ``frame`` now, on an idle link (``_idle_for``), without waiting on the
        peer: what the socket does not take at once goes to the writer. False (nothing
        written) when the stream has no non-blocking write."""
        try:
            direct = self._send_nowait
            sent = _write_nowait(self.stream, frame) if direct is None else direct(frame)
        except _STREAM_ERRORS as exc:
            self._mark_closed(f"send failed: {exc}")
            raise ConnectionLost(f"connection to {self.peer_app} lost while sending") from exc
        if sent is None:
            return False
        if sent < len(frame):
            self._buffer(frame[sent:] if sent else frame)
        return True

    async def _send_direct(self, frame: bytes, checkpoint: bool = True) -> None:
        """``_write_direct``, else (no non-blocking write) the whole frame under the
        write lock. ``checkpoint=False`` for a caller that waits right after (a request:
        its answer) or ends (an answer's task): a needless scheduler round per frame."""
        if not self._write_direct(frame):
            # Written here, shielded: a frame cut by a cancellation would break the
            # stream for every later frame; the stall deadline still bounds it.
            with trio.CancelScope(shield=True):
                await self._send_now(frame)
            return
        if checkpoint:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def _queue(self, frame: bytes, direct: bool) -> None:
        """Send ``frame`` without waiting: written at once if ``direct`` and the link is
        idle (in order: nothing is buffered or being written), else buffered for the
        writer."""
        if direct and self._idle_for(frame) and self._write_direct(frame):
            return
        self._buffer(frame)

    def _check_open(self) -> None:
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.peer_app} is closed ({self.close_reason})")

    def _encode(self, message: Message) -> bytes:
        self._check_open()
        frame = encode(message, self.max_frame)
        self.frames_sent += 1
        _TOTALS.sent += 1
        return frame

    def _buffer(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._out_bytes > self.max_buffered:
            self._drop_slow(f"{self._out_bytes} bytes waiting, over {self.max_buffered}")
            self._check_open()
        idle = self._writer_idle
        if idle is not None:
            self._writer_idle = None
            idle.set()
        elif self._writer_nursery is not None:
            self._writer_nursery.start_soon(self._writer)
            self._writer_nursery = None

    def _drop_slow(self, why: str) -> None:
        """Close the link: the peer is not reading. Counted once; wakes every waiter."""
        if self.closed.is_set():
            return
        _TOTALS.dropped_slow += 1
        reason = f"peer not reading: {why}"
        get_logger(peer=self.peer_app).warning(
            "peer_not_reading", reason=reason, buffered=self._out_bytes
        )
        self.close_reason = reason
        self._mark_closed(reason)
        self._out.clear()
        self._out_bytes = 0
        if self._serve_scope is not None:
            self._serve_scope.cancel()  # serve() then closes the stream

    async def _wait_below_high_water(self) -> None:
        while self._out_bytes > HIGH_WATER and not self.closed.is_set():
            await self._drained.wait()
        self._check_open()

    async def _send_now(self, data: bytes) -> None:
        """Write ``data`` (under the write lock); each ``WRITE_CHUNK`` of it must be taken
        within ``stall_timeout``, else the link is closed as not reading."""
        stalled = False
        try:
            async with self._send_lock:
                view = memoryview(data)
                for start in range(0, len(view), WRITE_CHUNK):
                    with trio.move_on_after(self.stall_timeout) as deadline:
                        await self.stream.send_all(view[start : start + WRITE_CHUNK])
                    if deadline.cancelled_caught:
                        stalled = True
                        break
        except _STREAM_ERRORS as exc:
            self._mark_closed(f"send failed: {exc}")
            raise ConnectionLost(f"connection to {self.peer_app} lost while sending") from exc
        if stalled:
            self._drop_slow(f"a write made no progress for {self.stall_timeout:g}s")
            await trio.aclose_forcefully(self.stream)
            self._check_open()

    def _take_buffer(self) -> bytes:
        data = b"".join(self._out) if len(self._out) != 1 else self._out[0]
        self._out.clear()
        self._out_bytes = 0
        self._drained.set()
        self._drained = trio.Event()
        return data

    async def _writer(self) -> None:
        """Send whatever is buffered, in one write, until the connection ends."""
        self._writer_running = True
        try:
            while True:
                if not self._out:
                    idle = self._writer_idle = trio.Event()
                    await idle.wait()
                    continue
                await self._send_now(self._take_buffer())
        except ConnectionLost:
            pass
        finally:
            self._writer_running = False
            self._writer_idle = None

    async def request(
        self, method: str, params: dict[str, Json] | None = None, timeout: float = math.inf
    ) -> Json:
        """Call ``method`` on the peer and wait for its answer.

        Raises:
            RequestRefused: the peer answered with an error.
            ConnectionLost: the link closed before the answer.
            trio.TooSlowError: no answer within ``timeout`` seconds.
        """
        request_id = self.session.next_id()
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            message = Request(request_id, method, params or {})
            if self._writer_running:
                frame = self._encode(message)
                if self._idle_for(frame):
                    await self._send_direct(frame, checkpoint=False)  # the wait below is one
                else:
                    self._buffer(frame)  # the wait below is the checkpoint
                    await self._wait_below_high_water()
            else:
                await self.send(message)
            if timeout == math.inf:
                await pending.done.wait()  # no deadline to keep: no cancel scope
            elif self._eager_pushes and self._serve_scope is not None:
                # A memory link's timeout is kept by ``LinkTimers``, not a cancel scope.
                link_timers().add(trio.current_time() + timeout, pending)
                await pending.done.wait()
                if pending.timed_out:
                    raise trio.TooSlowError
            else:
                with trio.move_on_after(timeout) as scope:
                    await pending.done.wait()
                if scope.cancelled_caught:
                    raise trio.TooSlowError
        finally:
            self._pending.pop(request_id, None)
        outcome = pending.outcome
        if outcome is None:
            raise ConnectionLost(f"connection to {self.peer_app} lost ({self.close_reason})")
        if isinstance(outcome, ErrorResponse):
            raise RequestRefused(outcome.code, outcome.message)
        return outcome.result

    async def call(self, request: Call[A], timeout: float = math.inf) -> A:
        """Send the typed ``request`` and wait for its typed answer.

        Raises:
            RequestRefused: the peer refused it (``code``: why).
            RemoteProtocolError: the answer is malformed.
            ConnectionLost: the link closed before the answer.
            trio.TooSlowError: no answer within ``timeout`` seconds.
        """
        return request.answer(await self.request(request.METHOD, request.to_json(), timeout))

    async def notify(self, notice: Notice) -> None:
        """Send the typed push ``notice``."""
        await self.send(Push(notice.TOPIC, notice.to_json()))

    def notify_nowait(self, notice: Notice, limit: int | None = None) -> bool:
        """``push_nowait`` of the typed push ``notice``."""
        return self.push_nowait(notice.TOPIC, notice.to_json(), limit)

    async def push(self, topic: str, data: dict[str, Json] | None = None) -> None:
        """Send a notification."""
        await self.send(Push(topic, data or {}))

    async def aclose(self) -> None:
        """Close the link; safe to call twice and under cancellation.

        Frames still buffered are sent first (for at most a second), so a push made just
        before closing is not lost.
        """
        if self._out and not self.closed.is_set():
            with trio.move_on_after(1) as scope:
                scope.shield = True
                try:
                    await self._send_now(self._take_buffer())
                except ConnectionLost:
                    pass
        self._mark_closed(self.close_reason or "closed locally")
        await trio.aclose_forcefully(self.stream)

    # -- receiving ---------------------------------------------------------------

    async def serve(self) -> None:
        """Read and dispatch until the link ends; never raises for a peer's misdeeds."""
        log = get_logger(peer=self.peer_app)
        addp = Addp(self.addp_timeout, last_rx=trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                self._serve_scope = nursery.cancel_scope
                if self._eager_pushes:
                    # A memory link writes most frames at once (``_queue``): its writer
                    # task is started only when a frame has to wait (most never do, and
                    # a big simulated cluster has tens of thousands of links).
                    self._writer_running = True
                    self._writer_nursery = nursery
                else:
                    nursery.start_soon(self._writer)
                if self._eager_pushes and addp.enabled:
                    # A memory link: its deadlines are kept with every other's by one
                    # task (see ``_link_timers``), not by a task of its own.
                    timer = _AddpTimer(self, addp, nursery.cancel_scope)
                    link_timers().add(addp.next_deadline(), timer)
                else:
                    nursery.start_soon(self._keepalive, addp, nursery.cancel_scope)
                try:
                    await self._read_loop(addp, nursery)
                except RemoteProtocolError as exc:
                    log.warning("protocol_error", error=str(exc))
                    self.close_reason = f"protocol error: {exc}"
                    with trio.move_on_after(1) as scope:
                        scope.shield = True
                        try:
                            error = self._encode(ErrorResponse(0, "protocol", str(exc)))
                            await self._send_now(self._take_buffer() + error)
                        except (ConnectionLost, LocalProtocolError):
                            pass
                nursery.cancel_scope.cancel()
        finally:
            self._serve_scope = None
            self._writer_nursery = None
            self._writer_running = False
            self._mark_closed(self.close_reason or "closed")
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(self, addp: Addp, nursery: trio.Nursery) -> None:
        # trio.current_time() is this: the clock's, asked through two more calls.
        now = trio.lowlevel.current_clock().current_time
        receive_some, decoder, closed = self.stream.receive_some, self.decoder, self.closed
        while not closed.is_set():
            try:
                data = await receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.close_reason = self.close_reason or f"receive failed: {exc}"
                return
            addp.last_rx = now()  # any frame proves the peer alive (Addp.on_receive)
            decoder.receive_data(data)
            while True:
                message = decoder.next_message()
                if message is NEED_DATA:
                    break
                self.frames_received += 1
                _TOTALS.received += 1
                # Only a push is awaited (its handler): the rest is taken here, without
                # a coroutine per frame. A ``PushTable``'s handlers never wait: it is
                # called as a function (``dispatch``), no coroutine either.
                if type(message) is Push:
                    on_push = self.on_push
                    if on_push is None:
                        pass
                    elif type(on_push) is PushTable:
                        on_push.dispatch(self, message)
                    else:
                        await on_push(self, message)
                else:
                    self._take(message, nursery)
            if not data:
                self.close_reason = self.close_reason or "closed by peer"
                return

    def _take(self, message: Message, nursery: trio.Nursery) -> None:
        """Act on a received frame other than a push (what each asks: ``Session``)."""
        if type(message) is Response or type(message) is ErrorResponse:
            pending = self._pending.get(message.id)
            if pending is None:
                self.session.unmatched(message)  # a protocol error (id 0) raises
                return  # answer to a request we gave up on
            pending.outcome = message
            pending.done.set()
        elif type(message) is Request:
            if (
                self.inline_handler is not None
                and self._writer_running
                and self._out_bytes <= HIGH_WATER
            ):
                self._answer_inline(message, nursery)
            else:
                nursery.start_soon(self._answer, message)
        elif type(message) is Ping:
            pong = self.session.pong_for(message)
            if self.addp_trace:
                get_logger(peer=self.peer_app).info("addp_polled", seq=message.seq)
            if self._writer_running:
                # Answered here, as the writer would send it: a task per ping is a spawn
                # for a frame that never waits.
                try:
                    self._queue(self._encode(pong), direct=True)
                except ConnectionLost:
                    pass
            else:
                nursery.start_soon(self._pong, pong)
        else:
            self.session.receive(message)  # a pong needs nothing; anything else raises
            if self.addp_trace and type(message) is Pong:
                get_logger(peer=self.peer_app).info("addp_answer", seq=message.seq)

    async def _pong(self, pong: Pong) -> None:
        try:
            await self.send(pong)
        except ConnectionLost:
            pass

    def _answer_inline(self, request: Request, nursery: trio.Nursery) -> None:
        """Answer ``request`` here, in the reader, without a task: its handler answers at
        once, or gives a coroutine that a task then awaits for the answer."""
        assert self.inline_handler is not None
        reply: Response | ErrorResponse | None
        try:
            result = self.inline_handler(self, request)
        except _HANDLER_ERRORS as exc:
            reply = _error_reply(request, exc)
            if reply is None:
                return
        else:
            if isinstance(result, CoroutineType):
                nursery.start_soon(self._answer, request, result)
                return
            reply = Response(request.id, result)
        try:
            self._queue(self._encode_reply(request, reply), direct=True)
        except ConnectionLost:
            pass

    def _encode_reply(self, request: Request, reply: Message) -> bytes:
        try:
            return self._encode(reply)
        except LocalProtocolError as exc:
            return self._encode(ErrorResponse(request.id, "too_large", str(exc)))

    async def _answer(self, request: Request, later: Awaitable[Json] | None = None) -> None:
        """Answer ``request`` in a task of its own (``later``: the rest of an inline
        handler's work, to await for the answer)."""
        reply: Message | None
        if later is None and self._out_bytes > HIGH_WATER:
            # The peer is behind on its answers: handle this request (and build its
            # answer) only once there is room, so a peer that pipelines requests and
            # reads nothing cannot grow our memory.
            try:
                await self._wait_below_high_water()
            except ConnectionLost:
                return
        if later is None and self.handler is None and self.inline_handler is None:
            reply = ErrorResponse(request.id, "unsupported", "this peer serves no requests")
        else:
            try:
                if later is not None:
                    result = await later
                elif self.inline_handler is not None:
                    result = self.inline_handler(self, request)
                    if isinstance(result, CoroutineType):
                        result = await result
                else:
                    assert self.handler is not None
                    result = await self.handler(self, request)
                reply = Response(request.id, result)
            except _HANDLER_ERRORS as exc:
                reply = _error_reply(request, exc)
                if reply is None:
                    return
        try:
            frame = self._encode_reply(request, reply)
            if self._writer_running and not self._idle_for(frame):
                self._buffer(frame)  # the task ends here: no need to wait for the writer
            elif self._writer_running:
                await self._send_direct(frame, checkpoint=False)  # the task ends here
            else:
                await self._send_now(frame)
        except ConnectionLost:
            pass

    async def _keepalive(self, addp: Addp, scope: trio.CancelScope) -> None:
        while True:
            deadline = addp.next_deadline()
            with trio.move_on_at(deadline):
                await self.closed.wait()
                return
            if not self._addp_step(addp, trio.current_time(), scope):
                return

    def _addp_step(self, addp: Addp, now: float, scope: trio.CancelScope) -> bool:
        """At an ADDP deadline: poll the peer, or give it up (cancelling ``scope``, the
        serving nursery's); False once the link is given up."""
        action = addp.poll(now)
        if action is AddpAction.LOST:
            self.close_reason = f"no answer within addp-timeout {self.addp_timeout:g}s"
            get_logger(peer=self.peer_app).warning("addp_timeout", timeout=self.addp_timeout)
            self._mark_closed(self.close_reason)
            scope.cancel()
            return False
        if action is AddpAction.PING:
            ping = self.session.ping()
            if self.addp_trace:
                get_logger(peer=self.peer_app).info(
                    "addp_poll", seq=ping.seq, silent_s=round(now - addp.last_rx, 3)
                )
            try:
                # Sent as the writer would send it, without waiting: a poll is a few
                # bytes, and nothing should hold up the next deadline.
                self._queue(self._encode(ping), direct=True)
            except ConnectionLost:
                scope.cancel()
                return False
        return True

    def _mark_closed(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = self.close_reason or reason
            self.closed.set()
            self._drained.set()
            for pending in self._pending.values():
                pending.done.set()
