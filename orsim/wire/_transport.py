"""The one transport seam: every orsim server and client gets its streams from a Network.

``TcpNetwork`` is what real processes use. ``MemoryNetwork`` wires servers together inside
one trio run over in-memory streams, so whole clusters can run under
``trio.testing.MockClock``; it can also cut links silently (partition), black-hole an
application (hang) or close all its links at once (crash).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from typing import Protocol

import attrs
import trio

Address = tuple[str, int]


class Network(Protocol):
    """Where streams come from."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a stream to ``host:port`` (raises ``OSError`` when nobody listens)."""
        ...

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        """Listen on ``host:port`` (0: any free port); returns the listener and its port."""
        ...


class TcpNetwork:
    """Real TCP sockets."""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        listeners = await trio.open_tcp_listeners(port, host=host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        return listener, listener.socket.getsockname()[1]


@attrs.define(eq=False)
class _FaultyStream(trio.abc.Stream):
    """A memory stream end that consults the network before delivering bytes."""

    inner: trio.abc.Stream
    net: MemoryNetwork
    local: str
    remote: str

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.net.blocked(self.local, self.remote):
            await trio.lowlevel.checkpoint()
            return  # silently dropped, like a cut cable
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while True:
            data = await self.inner.receive_some(max_bytes)
            if not data or not self.net.blocked(self.remote, self.local):
                return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define(eq=False)
class _MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    send: trio.MemorySendChannel[trio.abc.Stream]
    receive: trio.MemoryReceiveChannel[trio.abc.Stream]
    net: MemoryNetwork
    address: Address

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self.receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise trio.ClosedResourceError("listener closed") from exc

    async def aclose(self) -> None:
        self.net._listeners.pop(self.address, None)
        await self.receive.aclose()


@attrs.define(eq=False)
class MemoryNetwork:
    """In-process network for simulations and tests, with fault injection.

    Obtain a per-application view with ``for_app(name)``; faults are expressed between
    application names.
    """

    _listeners: dict[Address, _MemoryListener] = attrs.Factory(dict)
    _owners: dict[Address, str] = attrs.Factory(dict)
    _cuts: set[frozenset[str]] = attrs.Factory(set)
    _hung: set[str] = attrs.Factory(set)
    _streams: list[_FaultyStream] = attrs.Factory(list)
    _next_port: int = 40000

    def for_app(self, app: str) -> MemoryNetworkView:
        return MemoryNetworkView(self, app)

    def blocked(self, sender: str, receiver: str) -> bool:
        """True when bytes from ``sender`` must not reach ``receiver``."""
        return (
            sender in self._hung
            or receiver in self._hung
            or frozenset((sender, receiver)) in self._cuts
        )

    def partition(self, a: str, b: str, heal: bool = False) -> None:
        """Silently drop (or restore) all traffic between ``a`` and ``b``."""
        pair = frozenset((a, b))
        if heal:
            self._cuts.discard(pair)
        else:
            self._cuts.add(pair)

    def hang(self, app: str, resume: bool = False) -> None:
        """Make ``app`` silent to everyone (or let it talk again)."""
        if resume:
            self._hung.discard(app)
        else:
            self._hung.add(app)

    def close_all(self, apps: Iterable[str]) -> None:
        """Close every stream touching ``apps`` at once, as a crashed process would."""
        from trio.testing import MemoryReceiveStream, MemorySendStream

        names = set(apps)
        for stream in list(self._streams):
            if stream.local in names or stream.remote in names:
                self._streams.remove(stream)
                inner = stream.inner
                if isinstance(inner, trio.StapledStream):
                    for half in (inner.send_stream, inner.receive_stream):
                        if isinstance(half, MemorySendStream | MemoryReceiveStream):
                            half.close()

    async def _connect(self, local: str, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        listener = self._listeners.get((host, port))
        if listener is None:
            raise OSError(errno.ECONNREFUSED, f"nothing listens on {host}:{port}")
        remote = self._owners[(host, port)]
        # Imported here, not at module level: trio.testing drags pytest into every CLI.
        from trio.testing import memory_stream_pair

        a, b = memory_stream_pair()
        mine = _FaultyStream(a, self, local, remote)
        theirs = _FaultyStream(b, self, remote, local)
        self._streams += [mine, theirs]
        try:
            listener.send.send_nowait(theirs)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise OSError(errno.ECONNREFUSED, f"{host}:{port} refused") from exc
        return mine

    async def _listen(
        self, owner: str, host: str, port: int
    ) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        await trio.lowlevel.checkpoint()
        if port == 0:
            self._next_port += 1
            port = self._next_port
        if (host, port) in self._listeners:
            raise OSError(errno.EADDRINUSE, f"{host}:{port} in use")
        send, receive = trio.open_memory_channel[trio.abc.Stream](128)
        listener = _MemoryListener(send, receive, self, (host, port))
        self._listeners[(host, port)] = listener
        self._owners[(host, port)] = owner
        return listener, port


@attrs.define(eq=False)
class MemoryNetworkView:
    """A ``Network`` for one application of a ``MemoryNetwork``."""

    net: MemoryNetwork
    app: str

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await self.net._connect(self.app, host, port)

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        return await self.net._listen(self.app, host, port)
