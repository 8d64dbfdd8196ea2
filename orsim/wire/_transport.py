"""The one transport seam: every orsim server and client gets its streams from a Network.

``TcpNetwork`` is what real processes use. ``MemoryNetwork`` wires servers together inside
one trio run over in-memory streams, so whole clusters can run under
``trio.testing.MockClock``; it can also cut links silently (partition), black-hole an
application (hang), stop it reading and talking as SIGSTOP does (freeze), delay the bytes
between two applications (latency) or close all its links at once (crash). Each direction
of a memory link holds at most ``buffer_size`` bytes (delayed bytes included), so a frozen
receiver blocks its senders as a full TCP socket buffer does.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import ClassVar, NoReturn, Protocol, runtime_checkable

import attrs
import trio
from structlog.typing import FilteringBoundLogger

Address = tuple[str, int]

#: After a failed accept (out of file descriptors and the like), the pause before the
#: next: the listener is kept, and the loop does not spin on the error.
ACCEPT_BACKOFF = 0.1


async def serve_listener(
    listener: trio.abc.Listener[trio.abc.Stream],
    handle: Callable[[trio.abc.Stream], Awaitable[None]],
    *,
    log: FilteringBoundLogger,
    started: Callable[[], None],
) -> NoReturn:
    """Accept streams from ``listener`` forever, each handled by ``handle`` in its own
    task; calls ``started()`` once accepting (a caller's ``task_status.started(port)``).
    Closes the listener when cancelled."""
    async with listener, trio.open_nursery() as nursery:
        started()
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                log.warning("accept_failed", error=str(exc))
                await trio.sleep(ACCEPT_BACKOFF)
                continue
            nursery.start_soon(handle, stream)


class Network(Protocol):
    """Where streams come from.

    A network may also have a ``key`` (str): the cluster key this side presents in its
    Hellos and asks of others' (``""`` or none: no key; see ``serve_app``).
    """

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        """Open a stream to ``host:port`` (raises ``OSError`` when nobody listens)."""
        ...

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        """Listen on ``host:port`` (0: any free port); returns the listener and its port."""
        ...


@runtime_checkable
class NonBlockingStream(Protocol):
    """A stream that can also write without waiting (``Connection``'s direct path)."""

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Take what fits at once; the number of bytes taken (0: full)."""
        ...


#: Where a launched application finds its cluster's key (the launcher sets it).
CLUSTER_KEY_ENV = "ORSIM_CLUSTER_KEY"


class TcpNetwork:
    """Real TCP sockets. ``key``: the cluster key (default: ``$ORSIM_CLUSTER_KEY``, which
    the launcher gives every application it starts; none if unset)."""

    def __init__(self, key: str | None = None) -> None:
        self.key = os.environ.get(CLUSTER_KEY_ENV, "") if key is None else key

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        listeners = await trio.open_tcp_listeners(port, host=host)
        listener = listeners[0]
        for extra in listeners[1:]:
            await extra.aclose()
        return listener, listener.socket.getsockname()[1]


#: Bytes one direction of a memory link holds before its sender waits (the socket buffers
#: of both ends, as over TCP: a receiver that stops reading fills them, then blocks).
DEFAULT_BUFFER_SIZE = 256 * 1024


@attrs.define(eq=False)
class _Pipe:
    """One direction of a memory link: a bounded byte buffer between two stream ends.

    Bytes written under a latency wait in ``delayed`` (in order, each chunk with the
    virtual time it may be read) and count against the capacity meanwhile.
    """

    capacity: int
    data: bytearray = attrs.Factory(bytearray)
    delayed: deque[tuple[float, bytes]] = attrs.Factory(deque)
    delayed_bytes: int = 0
    #: The sending end closed: its own sends fail.
    writer_closed: bool = False
    #: ... and the reader has been told: it gets EOF once the buffer is drained.
    eof: bool = False
    #: The receiving end closed: its own reads fail.
    reader_closed: bool = False
    #: ... and the writer has been told: sends fail, nothing more is kept.
    broken: bool = False
    #: While the link is cut: the bytes at the head of ``data`` that had arrived when it
    #: was (``cut``), still read; what comes after them is dropped.
    arrived: int = 0
    #: The task waiting to read, if any. A stream has one reader at a time, so a slot
    #: rescheduled directly, not a ParkingLot: every frame wakes it once.
    reader: trio.lowlevel.Task | None = None
    writers: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)

    def room(self) -> int:
        return max(0, self.capacity - len(self.data) - self.delayed_bytes)

    def write_nowait(self, data: bytes | bytearray | memoryview, latency: float = 0.0) -> int:
        """Take as much of ``data`` as fits; the number of bytes taken. With ``latency``
        (s), or while earlier bytes are still delayed, the bytes become readable only
        ``latency`` seconds (trio time) from now, and never before earlier ones."""
        if self.writer_closed:
            raise trio.ClosedResourceError("stream closed")
        if self.broken:
            raise trio.BrokenResourceError("peer closed the stream")
        taken = min(len(data), self.capacity - len(self.data) - self.delayed_bytes)
        if taken > 0:
            if latency > 0 or self.delayed:
                at = trio.current_time() + latency
                if self.delayed:
                    at = max(at, self.delayed[-1][0])
                self.delayed.append((at, bytes(data[:taken])))
                self.delayed_bytes += taken
            else:
                self.data += data[:taken]
            self.wake_reader()
            return taken
        return 0

    def cut(self, sender_frozen: bool) -> None:
        """The link is cut from now on: what has arrived (``data``, and delayed bytes
        already due) stays readable, as bytes in a socket's receive buffer do; the rest
        never arrives. A frozen sender's bytes have not left it (``MemoryNetwork.freeze``):
        none has arrived."""
        self._ripen()
        self.arrived = 0 if sender_frozen else len(self.data)

    def _ripen(self) -> float | None:
        """Move the delayed bytes that are due into ``data``; when the next is due."""
        if not self.delayed:
            return None
        now = trio.current_time()
        while self.delayed and self.delayed[0][0] <= now:
            _, chunk = self.delayed.popleft()
            self.delayed_bytes -= len(chunk)
            self.data += chunk
        return self.delayed[0][0] if self.delayed else None

    async def write(self, data: bytes | bytearray | memoryview, latency: float = 0.0) -> None:
        """Write all of ``data``, waiting while the buffer is full (the reader is slow)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        sent = self.write_nowait(view, latency)
        if sent == len(view):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # Each park is a schedule point already: no extra checkpoint after the last one
        # (a simulation pays a scheduler round per checkpoint).
        while sent < len(view):
            await self.writers.park()
            sent += self.write_nowait(view[sent:], latency)

    def take(self, max_bytes: int | None, held: Callable[[], bool]) -> bytes | None:
        """Up to ``max_bytes`` to read now (b"" at EOF); None while there is nothing to
        read, or while ``held()``: then wait (``wait_readable``) and ask again."""
        if self.reader_closed:
            raise trio.ClosedResourceError("stream closed")
        due = self._ripen() if self.delayed else None
        data = self.data
        if not (data or (self.eof and due is None)) or held():
            return None
        if max_bytes is None or len(data) <= max_bytes:
            chunk = bytes(data)
            data.clear()
        else:
            chunk = bytes(data[:max_bytes])
            del data[:max_bytes]
        if self.writers:
            self.writers.unpark_all()
        return chunk

    async def wait_readable(self) -> None:
        """Wait until a writer (or ``wake``) says there may be bytes, or until delayed
        bytes are due. The reader waits in a slot of its own, not a ParkingLot: every
        frame wakes it once."""
        if self.reader is not None:
            raise trio.BusyResourceError("another task is already reading this stream")
        self.reader = trio.lowlevel.current_task()
        if not self.delayed:
            await trio.lowlevel.wait_task_rescheduled(self._abort_read)
            return
        with trio.move_on_at(self.delayed[0][0]):
            await trio.lowlevel.wait_task_rescheduled(self._abort_read)

    def _abort_read(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        self.reader = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake_reader(self) -> None:
        task = self.reader
        if task is not None:
            self.reader = None
            trio.lowlevel.reschedule(task)

    def wake(self) -> None:
        self.wake_reader()
        if self.writers:
            self.writers.unpark_all()


@attrs.define(eq=False)
class _FaultyStream(trio.abc.Stream):
    """A memory stream end that consults the network before delivering bytes.

    Each direction is a bounded ``_Pipe``: a receiver that stops reading (``freeze``)
    fills it and its sender then waits, as over TCP with full socket buffers.
    """

    #: A write is a copy into the peer's buffer, not a system call: ``Connection``
    #: writes pushes at once instead of batching them for its writer task.
    eager_writes: ClassVar[bool] = True

    outgoing: _Pipe
    incoming: _Pipe
    net: MemoryNetwork
    local: str
    remote: str

    def has_unread(self, now: float) -> bool:
        """Whether bytes from the peer wait here that its reader would take now (not
        held by a frozen end, not dropped by a cut): they prove the peer alive, as they
        would have had the reader run first."""
        pipe = self.incoming
        if self._held():
            return False
        if self.net.blocked(self.remote, self.local):
            return pipe.arrived > 0
        return bool(pipe.data) or bool(pipe.delayed and pipe.delayed[0][0] <= now)

    def stopped(self) -> bool:
        """Whether this end's application is frozen (SIGSTOP): it runs nothing, so its
        ADDP checks wait until it is thawed, and then come after it read what waits
        (``has_unread``)."""
        return self.local in self.net._frozen

    def _held(self) -> bool:
        frozen = self.net._frozen
        return bool(frozen) and (self.local in frozen or self.remote in frozen)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.outgoing.writer_closed:
            raise trio.ClosedResourceError("stream closed")
        if self.net.blocked(self.local, self.remote) or self._unheard():
            await trio.lowlevel.checkpoint()
            return  # silently dropped, like a cut cable
        try:
            await self.outgoing.write(data, self.net.latency(self.local, self.remote))
        except trio.BrokenResourceError:
            if not self._unheard():  # the peer closed while this end waited, frozen
                raise

    def _unheard(self) -> bool:
        """A frozen end writing to a closed peer: a stopped process writes nothing, so it
        must not learn of the close by writing (it does when thawed)."""
        return self.outgoing.broken and self.stopped()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Take what fits without waiting (as a non-blocking socket write); bytes taken."""
        net = self.net
        if not (net._hung or net._cuts or net._latency or net._frozen):  # no fault: usual
            return self.outgoing.write_nowait(data)
        if (net.blocked(self.local, self.remote) or self._unheard()) and not (
            self.outgoing.writer_closed
        ):
            return len(data)
        return self.outgoing.write_nowait(data, net.latency(self.local, self.remote))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self.outgoing
        while not pipe.room() and not (pipe.writer_closed or pipe.broken):
            await pipe.writers.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Up to ``max_bytes`` (b"" at EOF); waits while there is nothing, or while
        either end is frozen. Exactly one schedule point: the wait, or (when bytes are
        there at once) a checkpoint; a simulation pays a scheduler round for each, and
        every frame is read once."""
        pipe = self.incoming
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            chunk = pipe.take(max_bytes, self._held)
            if chunk is None:
                await pipe.wait_readable()
                waited = True
            elif not chunk or not self.net.blocked(self.remote, self.local):
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return chunk
            elif pipe.arrived:
                # Cut since, but these bytes had arrived (a frozen reader's buffer): read,
                # as a stopped process reads its socket when it runs again; the rest of
                # the chunk came after the cut. Dropped, a URS answer that reached a
                # frozen ORS before its link was cut was lost at the thaw, and its call
                # with it (seen looking into `orsim search` seed 229: kept as
                # scenarios/search-frozen-ors-reads-what-arrived-before-the-cut.yaml).
                chunk = chunk[: pipe.arrived]
                pipe.arrived -= len(chunk)
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return chunk

    def close_now(self) -> None:
        """Close this end at once: the peer reads EOF, its further sends fail. A frozen
        application's close reaches the peer only when it is thawed (nothing a stopped
        process does is seen), though its own end is closed at once."""
        self.outgoing.writer_closed = True
        self.incoming.reader_closed = True
        self.incoming.data.clear()
        self.incoming.delayed.clear()
        self.incoming.delayed_bytes = 0
        self.incoming.arrived = 0
        self.outgoing.wake()
        self.incoming.wake()
        if self.net.frozen(self.local):
            self.net._closing[self] = None
        else:
            self.publish_close()

    def publish_close(self) -> None:
        """Let the peer see this end's close."""
        self.net._closing.pop(self, None)
        self.outgoing.eof = True
        self.incoming.broken = True
        self.outgoing.wake()
        self.incoming.wake()
        self.net._streams.pop(self, None)

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()


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
    application names. ``buffer_size``: bytes one direction of a link holds before its
    sender waits. Streams are kept in the order they were opened (a dict, not a set), so
    faults that touch several streams act on them in the same order in every run: a
    seeded simulation stays deterministic.
    """

    buffer_size: int = DEFAULT_BUFFER_SIZE
    #: The cluster key every application's view presents and asks for ("": none).
    key: str = ""
    _listeners: dict[Address, _MemoryListener] = attrs.Factory(dict)
    _owners: dict[Address, str] = attrs.Factory(dict)
    _cuts: set[frozenset[str]] = attrs.Factory(set)
    _hung: set[str] = attrs.Factory(set)
    _frozen: set[str] = attrs.Factory(set)
    _latency: dict[frozenset[str], float] = attrs.Factory(dict)
    _streams: dict[_FaultyStream, None] = attrs.Factory(dict)
    #: Streams a frozen application closed: the peer learns of it when it is thawed.
    _closing: dict[_FaultyStream, None] = attrs.Factory(dict)
    #: Set when a frozen application is thawed (its connects wait for it).
    _thaws: dict[str, trio.Event] = attrs.Factory(dict)
    _next_port: int = 40000

    def for_app(self, app: str, key: str | None = None) -> MemoryNetworkView:
        """``app``'s view of the network; ``key``: the one it presents, if not the
        network's (an outsider's, in a test)."""
        return MemoryNetworkView(self, app, self.key if key is None else key)

    def blocked(self, sender: str, receiver: str) -> bool:
        """True when bytes from ``sender`` must not reach ``receiver``."""
        if not self._hung and not self._cuts:
            return False  # the usual case, asked for every chunk: no set built
        return (
            sender in self._hung
            or receiver in self._hung
            or frozenset((sender, receiver)) in self._cuts
        )

    def partition(self, a: str, b: str, heal: bool = False) -> None:
        """Silently drop all traffic between ``a`` and ``b``; or heal the cut: the links
        that were cut are closed then, both ends, as the launcher's fault proxy closes
        them (they are dead for good). Left open, a healed link went on with frames
        missing from the middle of its stream, which TCP never does: a route request lost
        in a 0.1 s cut was never offered again, and the call was lost (found by `orsim
        search`, seed 79). Closed, the routers reconnect and are offered what waits."""
        pair = frozenset((a, b))
        if not heal:
            self._blocking(lambda: self._cuts.add(pair), pair)
            return
        if pair in self._cuts:
            self._cuts.discard(pair)
            for stream in list(self._streams):
                if frozenset((stream.local, stream.remote)) == pair:
                    stream.close_now()

    def delay(self, a: str, b: str, seconds: float) -> None:
        """Deliver the bytes between ``a`` and ``b`` (both ways) ``seconds`` late, in
        order, as a slow link does (0 removes the delay). Applies to bytes sent from now
        on; bytes already delayed keep their time."""
        pair = frozenset((a, b))
        if seconds > 0:
            self._latency[pair] = seconds
        else:
            self._latency.pop(pair, None)

    def latency(self, sender: str, receiver: str) -> float:
        """The delay (s) of bytes from ``sender`` to ``receiver`` (0: none)."""
        if not self._latency:
            return 0.0
        return self._latency.get(frozenset((sender, receiver)), 0.0)

    def hang(self, app: str, resume: bool = False) -> None:
        """Make ``app`` silent to everyone (or let it talk again): bytes to and from it
        are dropped, as by a cut cable, so its senders never wait on it."""
        if resume:
            self._hung.discard(app)
        else:
            self._blocking(lambda: self._hung.add(app), {app})

    def _blocking(self, change: Callable[[], None], apps: Iterable[str]) -> None:
        """Make ``change``, a cut or a hang of ``apps``' links; each link direction it
        blocks keeps what had arrived (``_Pipe.cut``)."""
        names = set(apps)
        before = [
            (s, self.blocked(s.remote, s.local))
            for s in self._streams
            if s.local in names or s.remote in names
        ]
        change()
        for stream, was in before:
            if not was and self.blocked(stream.remote, stream.local):
                stream.incoming.cut(sender_frozen=stream.remote in self._frozen)

    def frozen(self, app: str) -> bool:
        return app in self._frozen

    async def wait_thawed(self, app: str) -> None:
        """Return once ``app`` is not frozen (at once if it is not)."""
        while app in self._frozen:
            await self._thaws.setdefault(app, trio.Event()).wait()

    def freeze(self, app: str, resume: bool = False) -> None:
        """Stop ``app`` as SIGSTOP does (or let it go on, as SIGCONT): it reads nothing
        and nothing it sends (EOF included) arrives, but bytes are kept, not dropped.
        Bytes sent to it fill its links' buffers, and then their senders wait."""
        if resume:
            self._frozen.discard(app)
            thaw = self._thaws.pop(app, None)
            if thaw is not None:
                thaw.set()
            for stream in [s for s in self._closing if s.local == app]:
                stream.publish_close()
        else:
            self._frozen.add(app)
        for stream in list(self._streams):
            if app in (stream.local, stream.remote):
                stream.incoming.wake()

    def close_all(self, apps: Iterable[str]) -> None:
        """Close every stream end of ``apps`` at once, as a crashed process's kernel does.

        Only their own ends: each peer reads EOF, and its sends fail, when it next reads
        or sends, as over TCP. A frozen peer therefore learns of the crash only once it
        is thawed, as a stopped process does; closing its end too made it lose the link
        while stopped, and act on that (claim, time out its store, take over) before it
        could have run at all.
        """
        names = set(apps)
        for stream in list(self._streams):
            if stream.local in names:
                stream.close_now()

    async def _connect(self, local: str, host: str, port: int) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        # A stopped process opens no connection: it dials once it runs again.
        await self.wait_thawed(local)
        listener = self._listeners.get((host, port))
        if listener is None:
            raise OSError(errno.ECONNREFUSED, f"nothing listens on {host}:{port}")
        remote = self._owners[(host, port)]
        there, back = _Pipe(self.buffer_size), _Pipe(self.buffer_size)
        mine = _FaultyStream(there, back, self, local, remote)
        theirs = _FaultyStream(back, there, self, remote, local)
        self._streams[mine] = None
        self._streams[theirs] = None
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
    key: str = ""

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await self.net._connect(self.app, host, port)

    async def listen(self, host: str, port: int) -> tuple[trio.abc.Listener[trio.abc.Stream], int]:
        return await self.net._listen(self.app, host, port)
