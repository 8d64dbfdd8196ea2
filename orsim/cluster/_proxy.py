"""The fault proxy: holds every application's public port and forwards to its private one.

Theory of operation. Each application of a launched cluster listens on a private port
(``ORSIM_LISTEN_PORT``); the proxy listens on the public port that the configuration
names and that every peer connects to. For each accepted connection the proxy reads the
client's first frame, a wire ``Hello``, to learn which application is calling; the server
side is the route's application. So every forwarded link is known as a pair A↔B, and
faults can be applied per pair:

- partition A B: existing A↔B links go *silent* (bytes are read and dropped both ways, the
  sockets stay open) so that only ADDP can notice, as with a pulled cable; new A↔B
  connections are accepted and black-holed.
- heal A B: the silent links are closed (they are dead for good, as after a real
  partition the peers have long given up on them) and new links forward normally.
- delay A B N: every chunk forwarded on an A↔B link is held N ms before it is sent on.

A client whose Hello names it ``PROXY_CONTROL_CLIENT`` is put through to the proxy's own
control port instead of the route's application: so the launcher of one host reaches the
proxy of another (``orsim cluster partition``/``isolate`` across hosts, each proxy cutting
the links it carries) at any public port of that host, with no port of its own to
publish. The control port still asks for the cluster key, as every server does.

After the Hello the proxy never looks at frames. TCP links (``TcpNetwork``) are then
relayed by ``_relay.Relay``, one thread with a plain epoll loop that reads up to 64 KiB at
a time and writes each chunk straight on, holding chunks in order only while the pair has
a delay: a trio wake-up per chunk cost ~0.2 ms more, on each of the 4 proxy hops of a
call. Other streams (a ``MemoryNetwork`` in tests) are pumped by trio tasks the same way.
Accepting, the Hello, faults and control requests stay in trio.

A destination that stops reading holds up only its own link, in both ways of relaying:
the link keeps a bounded backlog (one chunk, or ``_QUEUE_CHUNKS`` chunks under a delay)
and stops reading its source, so the sender sees the backpressure as over a direct link
and its own ``Connection`` drops the link ("peer not reading"); the proxy ends its half
when the destination reads again (and finds the close) or goes away.
"""

from __future__ import annotations

import functools
import itertools
import os
import socket
from typing import NoReturn

import attrs
import trio

from orsim.cluster._control import CheckKey, Closed, Delay, Heal, Partition, Severed
from orsim.cluster._faults import FaultTable, pair
from orsim.cluster._relay import Relay
from orsim.errors import RemoteProtocolError, UnreachableError
from orsim.logs import get_logger
from orsim.wire import (
    NEED_DATA,
    Connection,
    Done,
    FrameDecoder,
    HandlerTable,
    Hello,
    Json,
    Network,
    Status,
    StatusReport,
    on,
    serve_app,
    serve_listener,
)

#: How long a new client may take to send its Hello before it is forwarded as unknown.
HELLO_TIMEOUT = 10.0
#: Name used for a client whose first frame is not a readable Hello.
UNKNOWN_CLIENT = "?"
#: Chunks queued per direction before the reader waits (backpressure under delay).
_QUEUE_CHUNKS = 64
_READ_SIZE = 65536
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

PROXY_APP = "proxy"
PROXY_TYPE = "FaultProxy"
#: The Hello name that a public port puts through to the proxy's control port.
PROXY_CONTROL_CLIENT = "orsim-proxy-control"


@attrs.frozen
class Route:
    """Forward ``host:public_port`` (application ``app``) to ``target_host:target_port``."""

    app: str
    host: str
    public_port: int
    target_host: str
    target_port: int


@attrs.define(eq=False)
class _Backlog:
    #: Chunks of one direction handed to its delivery task and not yet written.
    chunks: int = 0


@attrs.define(eq=False)
class _Link:
    id: int
    client: str
    server: str
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    #: Cut by a partition: forwards nothing and is closed on heal.
    severed: bool = False

    def joins(self, a: str, b: str) -> bool:
        return pair(self.client, self.server) == pair(a, b)


@attrs.define(eq=False)
class _RelayFaults:
    """A link's faults as the relay thread reads them, chunk by chunk."""

    link: _Link
    faults: FaultTable

    @property
    def severed(self) -> bool:
        return self.link.severed

    def delay_s(self) -> float:
        return self.faults.delay_ms(self.link.client, self.link.server) / 1000


@attrs.define(eq=False)
class FaultProxy:
    """Forwarding with per-pair faults; run ``serve_route`` per route and ``serve_control``."""

    network: Network
    faults: FaultTable = attrs.Factory(FaultTable)
    routes: list[Route] = attrs.Factory(list)
    _links: dict[int, _Link] = attrs.Factory(dict)
    _ids: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _relay: Relay = attrs.Factory(Relay)
    #: Where ``serve_control`` listens, once it does (host, port).
    _control: tuple[str, int] | None = None

    # -- faults ----------------------------------------------------------------

    def partition(self, a: str, b: str) -> int:
        """Silence every A↔B link and black-hole new ones; returns how many links went quiet."""
        self.faults.partition(a, b)
        hit = [link for link in self._links.values() if link.joins(a, b)]
        for link in hit:
            link.severed = True
        get_logger().info("partition", a=a, b=b, links=len(hit))
        return len(hit)

    def heal(self, a: str, b: str) -> int:
        """Close the silenced A↔B links and forward new ones normally; returns links closed."""
        self.faults.heal(a, b)
        dead = [link for link in self._links.values() if link.severed and link.joins(a, b)]
        for link in dead:
            link.scope.cancel()
        get_logger().info("heal", a=a, b=b, closed=len(dead))
        return len(dead)

    def delay(self, a: str, b: str, ms: float) -> None:
        self.faults.delay(a, b, ms)
        get_logger().info("delay", a=a, b=b, ms=ms)

    def status(self) -> dict[str, Json]:
        return {
            "app": PROXY_APP,
            "type": PROXY_TYPE,
            "mode": "primary",
            "pid": os.getpid(),
            "routes": [
                {"app": r.app, "public_port": r.public_port, "target_port": r.target_port}
                for r in self.routes
            ],
            "links": [
                {"client": link.client, "server": link.server, "severed": link.severed}
                for link in self._links.values()
            ],
            **self.faults.snapshot(),
        }

    # -- serving ---------------------------------------------------------------

    async def serve_control(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Answer ``partition``, ``heal``, ``delay``, ``status`` and ``check_key`` on
        ``host:port``."""
        handlers = HandlerTable.of(
            PROXY_APP,
            [
                on(Partition, self._partition),
                on(Heal, self._heal),
                on(Delay, self._delay),
                on(Status, lambda _conn, _status: StatusReport(self.status())),
                on(CheckKey, lambda _conn, _check: Done()),
            ],
        )
        async with trio.open_nursery() as nursery:
            bound: int = await nursery.start(
                functools.partial(
                    serve_app,
                    self.network,
                    host,
                    port,
                    app=PROXY_APP,
                    app_type=PROXY_TYPE,
                    handler=handlers.handle,
                )
            )
            self._control = (host, bound)
            task_status.started(bound)
        raise AssertionError("unreachable")

    # Each fault hits every pair of its sides at once, with no schedule point between.

    def _partition(self, _conn: Connection, sides: Partition) -> Severed:
        return Severed(sum(self.partition(a, b) for a, b in sides.pairs()))

    def _heal(self, _conn: Connection, sides: Heal) -> Closed:
        return Closed(sum(self.heal(a, b) for a, b in sides.pairs()))

    def _delay(self, _conn: Connection, sides: Delay) -> Done:
        for a, b in sides.pairs():
            self.delay(a, b, sides.ms)
        return Done()

    async def serve_route(
        self, route: Route, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Accept on the route's public port forever; reports the bound port via ``started``."""
        try:
            listener, bound = await self.network.listen(route.host, route.public_port)
        except OSError as exc:
            raise UnreachableError(
                f"proxy: cannot listen on {route.host}:{route.public_port} for {route.app}: {exc}"
            ) from exc
        if route in self.routes:
            self.routes.remove(route)
        self.routes.append(attrs.evolve(route, public_port=bound))
        get_logger().info("route", app=route.app, public_port=bound, target_port=route.target_port)
        await serve_listener(
            listener,
            functools.partial(self._handle, route=route),
            log=get_logger(app=route.app),
            started=lambda: task_status.started(bound),
        )

    async def _handle(self, client: trio.abc.Stream, route: Route) -> None:
        try:
            first, client_app = await _peek_hello(client)
            if first is None:
                return
            if client_app == PROXY_CONTROL_CLIENT and self._control is not None:
                # Another host's launcher: put through to the control port (see top).
                route = Route(PROXY_APP, route.host, route.public_port, *self._control)
            link = _Link(next(self._ids), client_app, route.app)
            self._links[link.id] = link
            try:
                with link.scope:
                    await self._run_link(link, client, first, route)
            except Exception as exc:
                # One broken link must never take the proxy (and every other link) down.
                get_logger(client=link.client, server=link.server).warning(
                    "link_failed", error=repr(exc)
                )
            finally:
                del self._links[link.id]
        finally:
            await trio.aclose_forcefully(client)

    async def _run_link(
        self, link: _Link, client: trio.abc.Stream, first: bytes, route: Route
    ) -> None:
        log = get_logger(client=link.client, server=link.server)
        if self.faults.is_cut(link.client, link.server):
            link.severed = True
            log.info("link_blackholed")
            await _drain(client)
            return
        try:
            upstream = await self.network.connect(route.target_host, route.target_port)
        except OSError as exc:
            # The application is down: the client sees its connection closed at once.
            log.info("upstream_refused", error=str(exc))
            return
        log.debug("link_opened")
        try:
            if isinstance(client, trio.SocketStream) and isinstance(upstream, trio.SocketStream):
                await self._relay_link(link, client, upstream, first)
                return
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, link, client, upstream, first, nursery.cancel_scope)
                nursery.start_soon(self._pump, link, upstream, client, b"", nursery.cancel_scope)
        finally:
            await trio.aclose_forcefully(upstream)
            log.debug("link_closed")

    async def _relay_link(
        self, link: _Link, client: trio.SocketStream, upstream: trio.SocketStream, first: bytes
    ) -> None:
        """Hand the link to the relay thread (dup'ed sockets) until either side ends it,
        or the link's scope is cancelled (heal, shutdown)."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def finished() -> None:  # called in the relay thread
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        a = socket.socket(fileno=os.dup(client.socket.fileno()))
        b = socket.socket(fileno=os.dup(upstream.socket.fileno()))
        key = self._relay.add(a, b, first, _RelayFaults(link, self.faults), finished)
        try:
            await done.wait()
        finally:
            self._relay.remove(key)

    async def _pump(
        self,
        link: _Link,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        first: bytes,
        done: trio.CancelScope,
    ) -> None:
        """Copy one direction; either direction ending ends the link."""
        send, receive = trio.open_memory_channel[tuple[float, bytes]](_QUEUE_CHUNKS)
        queued = _Backlog()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, link, receive, sink, done, queued)
                async with send:
                    data: bytes | bytearray = first
                    try:
                        while True:
                            if data and not link.severed:
                                delay = self.faults.delay_ms(link.client, link.server) / 1000
                                if delay or queued.chunks:
                                    queued.chunks += 1
                                    await send.send((trio.current_time() + delay, bytes(data)))
                                else:
                                    await sink.send_all(data)
                            data = await source.receive_some(_READ_SIZE)
                            if not data:
                                break
                    except _STREAM_ERRORS:
                        pass
        finally:
            done.cancel()

    async def _deliver(
        self,
        link: _Link,
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]],
        sink: trio.abc.Stream,
        done: trio.CancelScope,
        queued: _Backlog,
    ) -> None:
        try:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    if not link.severed:
                        await sink.send_all(data)
                    queued.chunks -= 1
        except _STREAM_ERRORS:
            done.cancel()


async def _peek_hello(stream: trio.abc.Stream) -> tuple[bytes | None, str]:
    """Read until the first whole frame; returns the bytes read and the client's name.

    The bytes are forwarded unchanged. A first frame that is not a Hello (or garbage) is
    forwarded too, under the name ``?``: the server behind decides what to do with it.
    """
    decoder = FrameDecoder()
    raw = bytearray()
    with trio.move_on_after(HELLO_TIMEOUT):
        while True:
            try:
                data = await stream.receive_some(_READ_SIZE)
            except _STREAM_ERRORS:
                return None, UNKNOWN_CLIENT
            if not data:
                return None, UNKNOWN_CLIENT
            raw += data
            try:
                decoder.receive_data(bytes(data))
                message = decoder.next_message()
            except RemoteProtocolError:
                return bytes(raw), UNKNOWN_CLIENT
            if message is NEED_DATA:
                continue
            return bytes(raw), message.app if isinstance(message, Hello) else UNKNOWN_CLIENT
    return bytes(raw), UNKNOWN_CLIENT


async def serve_proxy(
    network: Network,
    routes: list[Route],
    control_host: str,
    control_port: int,
    *,
    task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve every route and the control port; ``started`` once all of them listen."""
    proxy = FaultProxy(network)
    async with trio.open_nursery() as nursery:
        for route in routes:
            await nursery.start(proxy.serve_route, route)
        await nursery.start(proxy.serve_control, control_host, control_port)
        task_status.started(proxy)
        await trio.sleep_forever()
    raise AssertionError("unreachable")


async def _drain(stream: trio.abc.Stream) -> None:
    """Read and drop everything until the peer closes (or the link is cancelled)."""
    try:
        while await stream.receive_some(_READ_SIZE):
            pass
    except _STREAM_ERRORS:
        pass
