"""The fault proxy's fast path: TCP links relayed by one thread with a plain epoll loop.

Why not trio: a relayed chunk costs the proxy one wake-up per hop, and every message of a
call crosses the proxy (4 hops on a call's critical path). Measured on the 2-core test
machine, a trio process woken from idle takes ~0.2 ms more than a plain ``epoll`` loop to
read and forward a chunk, so relaying in trio added ~0.45 ms to each round trip through
the proxy and most of the proxy's CPU. This loop does only ``recv`` and ``send``.

The trio side (``FaultProxy``) still accepts links, reads the Hello, applies faults to the
link objects and answers control requests; it hands each TCP link's two sockets (dup'ed)
to :class:`Relay` and waits for the link to end. The loop reads the same fault state:
a severed link drops what it reads (both ways, sockets open); a pair with a delay holds
each chunk until it is due, in order (chunks arriving while earlier ones wait queue
behind them). A socket's reading pauses while its peer has unsent bytes or
``QUEUE_CHUNKS`` delayed chunks, as the trio pumps did.

No hostage (ARCHITECTURE.md principle 7): every socket is non-blocking and only ever
written when epoll says so, so a destination that stops reading (SIGSTOP) stalls no other
link. Its link holds at most ``READ_SIZE`` bytes per direction, ``(QUEUE_CHUNKS + 1) *
READ_SIZE`` under a delay, and then stops reading its source: the backpressure reaches the
sender as over a direct TCP link, and the sender's ``Connection`` drops the link as not
reading (counted there). The relay closes nothing on its own, staying transparent.

Only this thread touches the epoll set and the sockets; others post commands (add,
remove) and wake it through a socketpair. The thread ends when it has no link left and
starts again with the next one.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

READ_SIZE = 65536
#: Delayed chunks waiting for one socket before its peer's reading pauses.
QUEUE_CHUNKS = 64
_CLOSE_ERRORS = (OSError, ValueError)


class LinkFaults(Protocol):
    """What the loop needs to know of a link and its pair's faults (read each chunk)."""

    @property
    def severed(self) -> bool: ...

    def delay_s(self) -> float: ...


@attrs.define(eq=False)
class _End:
    """One socket of a relayed link; ``out`` and ``queue`` hold bytes bound for it."""

    sock: socket.socket
    key: int
    fd: int
    faults: LinkFaults
    peer: _End | None = None
    out: bytearray = attrs.Factory(bytearray)
    queue: collections.deque[tuple[float, bytes]] = attrs.Factory(collections.deque)
    mask: int = 0


@attrs.define(eq=False)
class _Pair:
    a: _End
    b: _End
    on_done: Callable[[], None]
    closed: bool = False


class Relay:
    """Relays TCP links in a thread of its own; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: collections.deque[tuple[str, int, _Pair | None]] = collections.deque()
        self._running = False
        self._keys = itertools.count(1)
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    def add(
        self,
        a: socket.socket,
        b: socket.socket,
        first: bytes,
        faults: LinkFaults,
        on_done: Callable[[], None],
    ) -> int:
        """Relay between ``a`` and ``b`` (blocking sockets are made non-blocking; the
        relay closes them); ``first`` is sent to ``b`` first. ``on_done`` is called from
        the relay thread once the link has ended. Returns the link's key for ``remove``."""
        key = next(self._keys)
        a.setblocking(False)
        b.setblocking(False)
        end_a = _End(a, key, a.fileno(), faults)
        end_b = _End(b, key, b.fileno(), faults)
        end_a.peer, end_b.peer = end_b, end_a
        if first:
            end_b.out += first
        self._post("add", key, _Pair(end_a, end_b, on_done))
        return key

    def remove(self, key: int) -> None:
        """End the link (closing its sockets) if it still runs; safe to call twice."""
        self._post("remove", key, None)

    def _post(self, what: str, key: int, pair: _Pair | None) -> None:
        with self._lock:
            self._commands.append((what, key, pair))
            if not self._running:
                self._running = True
                self._wake_r, self._wake_w = socket.socketpair()
                self._wake_r.setblocking(False)
                self._wake_w.setblocking(False)
                threading.Thread(
                    target=_Loop(self, self._wake_r).run, name="proxy-relay", daemon=True
                ).start()
                return
            wake = self._wake_w
        try:
            assert wake is not None
            wake.send(b"!")
        except (BlockingIOError, OSError):
            pass  # already woken (full), or the loop is ending and will read commands

    def _take_commands(self, idle: bool) -> list[tuple[str, int, _Pair | None]] | None:
        """The commands posted since the last call; None (and the thread ends) when
        ``idle`` and none are waiting."""
        with self._lock:
            if not self._commands and idle:
                self._running = False
                for s in (self._wake_r, self._wake_w):
                    if s is not None:
                        s.close()
                self._wake_r = self._wake_w = None
                return None
            taken = list(self._commands)
            self._commands.clear()
            return taken


class _Loop:
    """One run of the relay thread."""

    def __init__(self, relay: Relay, wake: socket.socket) -> None:
        self.relay = relay
        self.wake = wake
        self.epoll = select.epoll()
        self.ends: dict[int, _End] = {}
        self.pairs: dict[int, _Pair] = {}
        self.timers: list[tuple[float, int, _End]] = []
        self.seq = itertools.count()

    def run(self) -> None:
        self.epoll.register(self.wake.fileno(), select.EPOLLIN)
        try:
            while self._commands():
                timeout = -1.0
                if self.timers:
                    timeout = max(0.0, self.timers[0][0] - time.monotonic())
                for fd, events in self.epoll.poll(timeout):
                    if fd == self.wake.fileno():
                        continue  # drained with the commands
                    end = self.ends.get(fd)
                    if end is not None:
                        self._on_event(end, events)
                self._fire_timers()
        finally:
            for pair in list(self.pairs.values()):
                self._close(pair)
            self.epoll.close()

    def _commands(self) -> bool:
        try:
            while self.wake.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        while True:
            taken = self.relay._take_commands(idle=not self.pairs)
            if taken is None:
                return False
            if not taken:
                return True
            for what, key, pair in taken:
                if what == "add" and pair is not None:
                    self.pairs[key] = pair
                    for end in (pair.a, pair.b):
                        self.ends[end.fd] = end
                        self.epoll.register(end.fd, 0)
                    self._update(pair.a)
                    self._update(pair.b)
                elif what == "remove" and key in self.pairs:
                    self._close(self.pairs[key])

    def _on_event(self, end: _End, events: int) -> None:
        peer = end.peer
        assert peer is not None
        if events & select.EPOLLOUT and end.out and not self._flush(end):
            return
        if events & select.EPOLLIN:
            try:
                data = end.sock.recv(READ_SIZE)
            except BlockingIOError:
                data = None
            except _CLOSE_ERRORS:
                data = b""
            if data is not None:
                if not data:
                    self._close(self.pairs[end.key])
                    return
                self._forward(data, peer)
        elif events & (select.EPOLLHUP | select.EPOLLERR) and not events & select.EPOLLOUT:
            self._close(self.pairs[end.key])
            return
        self._update(end)
        self._update(peer)

    def _forward(self, data: bytes, to: _End) -> None:
        if to.faults.severed:
            return  # a partition: read and dropped, the sockets stay open
        delay = to.faults.delay_s()
        if delay > 0 or to.queue:
            if not to.queue:
                self._arm(to, time.monotonic() + delay)
            to.queue.append((time.monotonic() + delay, data))
        else:
            self._send(to, data)

    def _send(self, to: _End, data: bytes) -> None:
        if to.out:
            to.out += data
            return
        try:
            sent = to.sock.send(data)
        except BlockingIOError:
            sent = 0
        except _CLOSE_ERRORS:
            self._close(self.pairs[to.key])
            return
        if sent < len(data):
            to.out += data[sent:]

    def _flush(self, end: _End) -> bool:
        try:
            sent = end.sock.send(end.out)
        except BlockingIOError:
            return True
        except _CLOSE_ERRORS:
            self._close(self.pairs[end.key])
            return False
        del end.out[:sent]
        return True

    def _arm(self, end: _End, due: float) -> None:
        heapq.heappush(self.timers, (due, next(self.seq), end))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, end = heapq.heappop(self.timers)
            if end.key not in self.pairs:
                continue
            while end.queue and end.queue[0][0] <= now:
                _, data = end.queue.popleft()
                if not end.faults.severed:
                    self._send(end, data)
                if end.key not in self.pairs:
                    break
            if end.key not in self.pairs:
                continue
            if end.queue:
                self._arm(end, end.queue[0][0])
            assert end.peer is not None
            self._update(end)
            self._update(end.peer)

    def _update(self, end: _End) -> None:
        """Register what ``end`` waits for: reading unless its peer is backed up, writing
        while it has unsent bytes."""
        if end.key not in self.pairs:
            return
        peer = end.peer
        assert peer is not None
        mask = 0
        if not peer.out and len(peer.queue) < QUEUE_CHUNKS:
            mask |= select.EPOLLIN
        if end.out:
            mask |= select.EPOLLOUT
        if mask != end.mask:
            end.mask = mask
            self.epoll.modify(end.fd, mask)

    def _close(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        self.pairs.pop(pair.a.key, None)
        for end in (pair.a, pair.b):
            self.ends.pop(end.fd, None)
            try:
                self.epoll.unregister(end.fd)
            except _CLOSE_ERRORS:
                pass
            end.sock.close()
        pair.on_done()
