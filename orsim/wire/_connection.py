"""A live connection: one reader, one writer lock, request ids, pushes and ADDP.

The connection is symmetric: either side may send requests and pushes, so the same class
serves clients, servers and node-to-node links. Run ``serve()`` in a nursery; it returns
when the peer closes, goes silent past the ADDP timeout, or breaks the protocol, and then
every pending request fails with ``ConnectionLost``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from orsim.errors import (
    ConnectionLost,
    LocalProtocolError,
    OrsimError,
    RemoteError,
    RemoteProtocolError,
)
from orsim.logs import get_logger
from orsim.wire._addp import Addp, AddpAction
from orsim.wire._codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder, encode
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

RequestHandler = Callable[["Connection", Request], Awaitable[Json]]
PushHandler = Callable[["Connection", Push], Awaitable[None]]

_READ_SIZE = 65536


class RequestFailed(OrsimError):
    """Raise from a request handler to answer with an ``ErrorResponse`` of ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.define(eq=False)
class _Pending:
    done: trio.Event = attrs.Factory(trio.Event)
    outcome: Response | ErrorResponse | None = None


@attrs.define(eq=False)
class Connection:
    """One established, handshaken connection to a peer application."""

    stream: trio.abc.Stream
    peer_app: str
    peer_type: str
    addp_timeout: float = 0.0
    handler: RequestHandler | None = None
    on_push: PushHandler | None = None
    decoder: FrameDecoder = attrs.Factory(FrameDecoder)
    max_frame: int = DEFAULT_MAX_FRAME
    #: Free-form per-connection state for the server that owns it.
    info: dict[str, Any] = attrs.Factory(dict)
    closed: trio.Event = attrs.Factory(trio.Event)
    close_reason: str = ""
    _send_lock: trio.StrictFIFOLock = attrs.Factory(trio.StrictFIFOLock)
    _ids: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _pending: dict[int, _Pending] = attrs.Factory(dict)

    # -- sending -----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one message; raises ``ConnectionLost`` if the link is gone."""
        if self.closed.is_set():
            raise ConnectionLost(f"connection to {self.peer_app} is closed ({self.close_reason})")
        frame = encode(message, self.max_frame)
        try:
            async with self._send_lock:
                await self.stream.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._mark_closed(f"send failed: {exc}")
            raise ConnectionLost(f"connection to {self.peer_app} lost while sending") from exc

    async def request(
        self, method: str, params: dict[str, Json] | None = None, timeout: float = math.inf
    ) -> Json:
        """Call ``method`` on the peer and wait for its answer.

        Raises:
            RemoteError: the peer answered with an error.
            ConnectionLost: the link closed before the answer.
            trio.TooSlowError: no answer within ``timeout`` seconds.
        """
        request_id = next(self._ids)
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            await self.send(Request(request_id, method, params or {}))
            with trio.fail_after(timeout):
                await pending.done.wait()
        finally:
            self._pending.pop(request_id, None)
        outcome = pending.outcome
        if outcome is None:
            raise ConnectionLost(f"connection to {self.peer_app} lost ({self.close_reason})")
        if isinstance(outcome, ErrorResponse):
            raise RemoteError(outcome.code, outcome.message)
        return outcome.result

    async def push(self, topic: str, data: dict[str, Json] | None = None) -> None:
        """Send a notification."""
        await self.send(Push(topic, data or {}))

    async def aclose(self) -> None:
        """Close the link; safe to call twice and under cancellation."""
        self._mark_closed(self.close_reason or "closed locally")
        await trio.aclose_forcefully(self.stream)

    # -- receiving ---------------------------------------------------------------

    async def serve(self) -> None:
        """Read and dispatch until the link ends; never raises for a peer's misdeeds."""
        log = get_logger(peer=self.peer_app)
        addp = Addp(self.addp_timeout, last_rx=trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keepalive, addp, nursery.cancel_scope)
                try:
                    await self._read_loop(addp, nursery)
                except RemoteProtocolError as exc:
                    log.warning("protocol_error", error=str(exc))
                    self.close_reason = f"protocol error: {exc}"
                    with trio.move_on_after(1) as scope:
                        scope.shield = True
                        try:
                            await self.send(ErrorResponse(0, "protocol", str(exc)))
                        except (ConnectionLost, LocalProtocolError):
                            pass
                nursery.cancel_scope.cancel()
        finally:
            self._mark_closed(self.close_reason or "closed")
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(self, addp: Addp, nursery: trio.Nursery) -> None:
        while not self.closed.is_set():
            try:
                data = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self.close_reason = self.close_reason or f"receive failed: {exc}"
                return
            addp.on_receive(trio.current_time())
            self.decoder.receive_data(bytes(data))
            while True:
                message = self.decoder.next_message()
                if message is NEED_DATA:
                    break
                await self._dispatch(message, nursery)  # type: ignore[arg-type]
            if not data:
                self.close_reason = self.close_reason or "closed by peer"
                return

    async def _dispatch(self, message: Message, nursery: trio.Nursery) -> None:
        if isinstance(message, Response | ErrorResponse):
            pending = self._pending.get(message.id)
            if pending is None:
                if isinstance(message, ErrorResponse) and message.id == 0:
                    raise RemoteProtocolError(f"peer reported {message.code}: {message.message}")
                return  # answer to a request we gave up on
            pending.outcome = message
            pending.done.set()
        elif isinstance(message, Request):
            nursery.start_soon(self._answer, message)
        elif isinstance(message, Push):
            if self.on_push is not None:
                await self.on_push(self, message)
        elif isinstance(message, Ping):
            nursery.start_soon(self._pong, message.seq)
        elif isinstance(message, Pong):
            pass
        else:
            raise RemoteProtocolError(f"unexpected {type(message).__name__} after handshake")

    async def _pong(self, seq: int) -> None:
        try:
            await self.send(Pong(seq))
        except ConnectionLost:
            pass

    async def _answer(self, request: Request) -> None:
        reply: Message
        if self.handler is None:
            reply = ErrorResponse(request.id, "unsupported", "this peer serves no requests")
        else:
            try:
                reply = Response(request.id, await self.handler(self, request))
            except RequestFailed as exc:
                reply = ErrorResponse(request.id, exc.code, exc.message)
            except RemoteError as exc:
                reply = ErrorResponse(request.id, exc.code, exc.message)
            except ConnectionLost:
                return
            except OrsimError as exc:
                reply = ErrorResponse(request.id, "error", str(exc))
            except (KeyError, TypeError, ValueError) as exc:
                reply = ErrorResponse(request.id, "bad_request", f"{request.method}: {exc!r}")
        try:
            await self.send(reply)
        except LocalProtocolError as exc:
            await self.send(ErrorResponse(request.id, "too_large", str(exc)))
        except ConnectionLost:
            pass

    async def _keepalive(self, addp: Addp, scope: trio.CancelScope) -> None:
        seq = itertools.count(1)
        while True:
            deadline = addp.next_deadline()
            with trio.move_on_at(deadline):
                await self.closed.wait()
                return
            action = addp.poll(trio.current_time())
            if action is AddpAction.LOST:
                self.close_reason = f"no answer within addp-timeout {self.addp_timeout:g}s"
                get_logger(peer=self.peer_app).warning("addp_timeout", timeout=self.addp_timeout)
                self._mark_closed(self.close_reason)
                scope.cancel()
                return
            if action is AddpAction.PING:
                try:
                    await self.send(Ping(next(seq)))
                except ConnectionLost:
                    scope.cancel()
                    return

    def _mark_closed(self, reason: str) -> None:
        if not self.closed.is_set():
            self.close_reason = self.close_reason or reason
            self.closed.set()
            for pending in self._pending.values():
                pending.done.set()
