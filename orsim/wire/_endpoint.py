"""Opening client connections and serving an application's port, handshake included."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NoReturn, Required, TypedDict, Unpack

import trio

from orsim.errors import ConnectionLost, RemoteProtocolError, RequestRefused, UnreachableError
from orsim.logs import get_logger
from orsim.wire._addp import trace_sides
from orsim.wire._codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder, encode
from orsim.wire._connection import (
    Connection,
    InlineHandler,
    PushHandler,
    RequestHandler,
)
from orsim.wire._messages import (
    ErrorResponse,
    Message,
    Push,
    Request,
)
from orsim.wire._session import ClientHandshake, Refused, ServerHandshake
from orsim.wire._transport import Network, serve_listener

#: How long a new connection may take to say Hello before the server drops it.
HANDSHAKE_TIMEOUT = 10.0

ConnectionHook = Callable[[Connection], Awaitable[None]]
#: What a client without the cluster's key may call, unless a server says otherwise.
READ_ONLY = frozenset({"status"})


def key_of(network: Network) -> str:
    """The cluster key ``network`` presents ("" for none; a Network written before keys
    existed, a test's or a user's, has no ``key`` at all)."""
    return str(getattr(network, "key", ""))


def _keyless(
    app: str,
    open_methods: frozenset[str],
    handler: RequestHandler | None,
    inline_handler: InlineHandler | None,
) -> tuple[InlineHandler, PushHandler]:
    """The handlers of a connection without the cluster key: only ``open_methods`` (which
    change nothing) reach the server's own; every other request is refused, and a push
    (each one changes state) costs the connection."""

    def answer(conn: Connection, request: Request) -> Any:
        if request.method not in open_methods:
            raise RequestRefused(
                "unauthorized", f"{app}: {request.method!r} needs the cluster's key"
            )
        if inline_handler is not None:
            return inline_handler(conn, request)
        if handler is None:
            raise RequestRefused("unsupported", "this peer serves no requests")
        return handler(conn, request)

    async def refuse_push(conn: Connection, push: Push) -> None:
        raise RemoteProtocolError(f"{push.topic!r} push without the cluster's key")

    return answer, refuse_push


async def _send_one(stream: trio.abc.Stream, message: Message) -> None:
    try:
        await stream.send_all(encode(message))
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise ConnectionLost(f"connection broken during handshake: {exc}") from exc


async def _read_one(stream: trio.abc.Stream, decoder: FrameDecoder) -> Message:
    while True:
        message = decoder.next_message()
        if message is not NEED_DATA:
            return message
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionLost(f"connection broken during handshake: {exc}") from exc
        if not data:
            raise ConnectionLost("connection closed during handshake")
        decoder.receive_data(bytes(data))


async def open_connection(
    network: Network,
    host: str,
    port: int,
    *,
    app: str,
    app_type: str,
    addp_timeout: float = 0.0,
    addp_remote_timeout: float = 0.0,
    addp_trace: str = "off",
    handler: RequestHandler | None = None,
    on_push: PushHandler | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    timeout: float = HANDSHAKE_TIMEOUT,
) -> Connection:
    """Connect to ``host:port`` and complete the handshake. Run ``serve()`` on the result.

    Raises:
        OSError: nothing accepted the connection.
        ConnectionLost: the peer closed or refused during the handshake.
        trio.TooSlowError: no Welcome within ``timeout``.
    """
    stream = await network.connect(host, port)
    local_trace, remote_trace = trace_sides(addp_trace)
    handshake = ClientHandshake.of(
        app, app_type, addp_remote_timeout, key_of(network), remote_trace
    )
    try:
        with trio.fail_after(timeout):
            # A peer may reset the connection as the Hello goes out, as well as after.
            await _send_one(stream, handshake.hello)
            decoder = FrameDecoder(max_frame)
            reply = handshake.receive(await _read_one(stream, decoder), f"{host}:{port}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return Connection(
        stream,
        peer_app=reply.app,
        peer_type=reply.app_type,
        addp_timeout=addp_timeout,
        addp_trace=local_trace,
        handler=handler,
        on_push=on_push,
        decoder=decoder,
        max_frame=max_frame,
    )


class Link(TypedDict, total=False):
    """How this side opens a link, as ``open_connection`` takes it: who it is (``app``,
    ``app_type``: required), the ADDP timeouts, and who handles what the peer sends."""

    app: Required[str]
    app_type: Required[str]
    addp_timeout: float
    addp_remote_timeout: float
    addp_trace: str
    handler: RequestHandler | None
    on_push: PushHandler | None


@asynccontextmanager
async def connected(
    network: Network, host: str, port: int, **link: Unpack[Link]
) -> AsyncIterator[Connection]:
    """A served connection for the duration of the block; closed on exit."""
    conn = await open_connection(network, host, port, **link)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        try:
            yield conn
        finally:
            await conn.aclose()


async def connect_with_retry(
    network: Network,
    addresses: list[tuple[str, int]],
    *,
    timeout: float,
    what: str,
    **link: Unpack[Link],
) -> Connection:
    """Try ``addresses`` in turn with exponential backoff until one answers.

    Raises:
        UnreachableError: none answered within ``timeout`` seconds (``math.inf``: forever).
    """
    delay = 0.05
    last_error = "no address"
    # A link with ADDP gives up on a silent peer after its timeout; a handshake into
    # silence (a partition drops the Hello) gives up as soon, or the link would stay down
    # for HANDSHAKE_TIMEOUT after the partition heals.
    handshake = HANDSHAKE_TIMEOUT
    addp_timeout = link.get("addp_timeout", 0.0)
    if addp_timeout > 0:
        handshake = min(handshake, max(2 * addp_timeout, 0.5))
    handshake = min(handshake, timeout)
    with trio.move_on_after(timeout):
        while True:
            for host, port in addresses:
                try:
                    return await open_connection(network, host, port, timeout=handshake, **link)
                except (OSError, ConnectionLost, trio.TooSlowError, RemoteProtocolError) as exc:
                    last_error = f"{host}:{port}: {exc}"
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
    tried = ", ".join(f"{h}:{p}" for h, p in addresses)
    raise UnreachableError(f"cannot reach {what} at {tried} within {timeout:g}s ({last_error})")


async def serve_app(
    network: Network,
    host: str,
    port: int,
    *,
    app: str,
    app_type: str,
    handler: RequestHandler | None,
    inline_handler: InlineHandler | None = None,
    on_push: PushHandler | None = None,
    on_connect: ConnectionHook | None = None,
    on_disconnect: ConnectionHook | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    open_methods: frozenset[str] = READ_ONLY,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Accept connections on ``host:port`` forever; reports the bound port via ``started``.

    Each connection must open with ``Hello``; the server answers ``Welcome`` and then
    dispatches requests to ``handler`` (or ``inline_handler``: see ``InlineHandler``). A
    connection that breaks the protocol is answered with an error and dropped; nothing a
    client sends stops the server.

    When ``network`` has a cluster key, a client whose Hello does not present it may call
    only ``open_methods`` (methods that change nothing); any other request is refused
    (``unauthorized``) and any push closes its connection.
    """
    log = get_logger(app=app)
    try:
        listener, bound = await network.listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UnreachableError(f"{app}: port {host}:{port} is already in use") from exc
        raise UnreachableError(f"{app}: cannot listen on {host}:{port}: {exc}") from exc

    handshake = ServerHandshake(app, app_type, key_of(network))

    async def handle(stream: trio.abc.Stream) -> None:
        decoder = FrameDecoder(max_frame)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                outcome = handshake.receive(await _read_one(stream, decoder))
                if isinstance(outcome, Refused):
                    await stream.send_all(encode(outcome.error))
                    return
                await stream.send_all(encode(outcome.welcome))
                hello = outcome.hello
        except RemoteProtocolError as exc:
            log.warning("bad_handshake", error=str(exc))
            with trio.move_on_after(1):
                try:
                    await stream.send_all(encode(ErrorResponse(0, "protocol", str(exc))))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
            await trio.aclose_forcefully(stream)
            return
        except (
            ConnectionLost,
            trio.TooSlowError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,  # closed under us: this application is going down
            OSError,
        ):
            await trio.aclose_forcefully(stream)
            return
        if outcome.keyed:
            answer, pushed = inline_handler, on_push
        else:
            log.info("client_without_key", peer=hello.app, peer_type=hello.app_type)
            answer, pushed = _keyless(app, open_methods, handler, inline_handler)
        conn = Connection(
            stream,
            peer_app=hello.app,
            peer_type=hello.app_type,
            addp_timeout=hello.addp_remote_timeout,
            addp_trace=hello.addp_trace,
            handler=handler,
            inline_handler=answer,
            on_push=pushed,
            decoder=decoder,
            max_frame=max_frame,
        )
        try:
            if on_connect is not None:
                await on_connect(conn)
            await conn.serve()
        finally:
            await conn.aclose()
            if on_disconnect is not None:
                with trio.CancelScope(shield=True):
                    await on_disconnect(conn)

    log.info("listening", host=host, port=bound)
    await serve_listener(listener, handle, log=log, started=lambda: task_status.started(bound))
