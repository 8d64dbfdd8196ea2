"""The sans-IO side of a connection: the handshake, request ids and ADDP polls.

Theory of operation. A link opens with one exchange: the client sends ``Hello`` (who it
is, the ADDP timeout it asks the server to keep, the cluster's key) and the server
answers ``Welcome`` (who it is), or an ``ErrorResponse`` (id 0) when it cannot speak the
client's protocol version. After that either side may send requests, each with an id of
its own, answered by a ``Response``/``ErrorResponse`` of the same id, and ADDP polls
(``Ping``) answered by a ``Pong`` of the same sequence number.

Nothing here reads or writes bytes, sleeps or knows trio: ``ServerHandshake`` and
``ClientHandshake`` take the peer's first message and say what to send or whom they
speak to, and ``Session`` hands out request ids and poll numbers and sorts each frame
that arrives after the handshake into what the trio code must do with it (the
``Connection`` in ``_connection.py`` is that code: read, feed, act).
"""

from __future__ import annotations

import hmac
import itertools
from enum import Enum

import attrs

from orsim.errors import ConnectionLost, RemoteProtocolError
from orsim.wire import _messages as msg


@attrs.frozen
class Accepted:
    """The server's side of a handshake that succeeded: answer ``welcome``; the client
    is ``hello`` (``keyed``: it presented the cluster's key, or there is none)."""

    hello: msg.Hello
    welcome: msg.Welcome
    keyed: bool


@attrs.frozen
class Refused:
    """The server's side of a handshake that failed: answer ``error``, then close."""

    error: msg.ErrorResponse


@attrs.frozen
class ServerHandshake:
    """Who the server is, and the cluster's key (empty: none)."""

    app: str
    app_type: str
    key: str = ""

    def receive(self, message: msg.Message) -> Accepted | Refused:
        """The server's answer to the client's first message.

        Raises:
            RemoteProtocolError: the first message is not a ``Hello``.
        """
        if not isinstance(message, msg.Hello):
            raise RemoteProtocolError(f"expected Hello, got {type(message).__name__}")
        if message.version != msg.PROTOCOL_VERSION:
            return Refused(
                msg.ErrorResponse(
                    0,
                    "version",
                    f"protocol version {message.version} unsupported "
                    f"(server speaks {msg.PROTOCOL_VERSION})",
                )
            )
        return Accepted(message, msg.Welcome(self.app, self.app_type), self.has_key(message))

    def has_key(self, hello: msg.Hello) -> bool:
        """Whether ``hello`` presents the cluster's key (always, when there is none)."""
        if not self.key:
            return True
        return hmac.compare_digest(hello.key.encode(), self.key.encode())


@attrs.frozen
class ClientHandshake:
    """The client's side: its ``Hello``, then the check of the server's answer."""

    hello: msg.Hello

    @classmethod
    def of(
        cls,
        app: str,
        app_type: str,
        addp_remote_timeout: float = 0.0,
        key: str = "",
        addp_trace: bool = False,
    ) -> ClientHandshake:
        return cls(
            msg.Hello(app, app_type, msg.PROTOCOL_VERSION, addp_remote_timeout, key, addp_trace)
        )

    def receive(self, message: msg.Message, where: str) -> msg.Welcome:
        """The server's ``Welcome``.

        Raises:
            ConnectionLost: the server (at ``where``) refused, or answered otherwise.
        """
        if isinstance(message, msg.ErrorResponse):
            raise ConnectionLost(f"{where} refused the handshake: {message.message}")
        if not isinstance(message, msg.Welcome):
            raise ConnectionLost(f"{where} answered Hello with {type(message).__name__}")
        return message


class Incoming(Enum):
    """What a frame received after the handshake asks of the connection."""

    #: The answer to our request ``id`` (one we still wait for, or gave up on).
    ANSWER = "answer"
    #: A request to answer.
    REQUEST = "request"
    #: A push to hand to the push handler.
    PUSH = "push"
    #: An ADDP poll: send ``Session.pong_for`` it.
    PING = "ping"
    #: An ADDP answer: nothing to do (receiving it proved the peer alive).
    PONG = "pong"


#: The kind of each frame type after the handshake (others break the protocol).
_INCOMING: dict[type, Incoming] = {
    msg.Response: Incoming.ANSWER,
    msg.ErrorResponse: Incoming.ANSWER,
    msg.Request: Incoming.REQUEST,
    msg.Push: Incoming.PUSH,
    msg.Ping: Incoming.PING,
    msg.Pong: Incoming.PONG,
}


@attrs.define(eq=False)
class Session:
    """One established link's bookkeeping: request ids, ADDP poll numbers, and the sort
    of every frame that arrives (``receive``)."""

    _ids: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _ping_seq: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))

    def next_id(self) -> int:
        """The id of our next request (ids start at 1; 0 means "no request")."""
        return next(self._ids)

    def ping(self) -> msg.Ping:
        """The next ADDP poll."""
        return msg.Ping(next(self._ping_seq))

    @staticmethod
    def pong_for(ping: msg.Ping) -> msg.Pong:
        """The answer to the peer's poll ``ping``."""
        return msg.Pong(ping.seq)

    @staticmethod
    def unmatched(answer: msg.Response | msg.ErrorResponse) -> None:
        """An answer to no request we wait for: one we gave up on (nothing to do).

        Raises:
            RemoteProtocolError: it is the peer's report of a protocol error (id 0).
        """
        if isinstance(answer, msg.ErrorResponse) and answer.id == 0:
            raise RemoteProtocolError(f"peer reported {answer.code}: {answer.message}")

    @staticmethod
    def receive(message: msg.Message) -> Incoming:
        """What ``message`` asks of the connection.

        Raises:
            RemoteProtocolError: the peer reported a protocol error of its own (an
                ``ErrorResponse`` with id 0), or sent a handshake frame again.
        """
        kind = _INCOMING.get(type(message))
        if kind is None:
            raise RemoteProtocolError(f"unexpected {type(message).__name__} after handshake")
        if kind is Incoming.ANSWER and isinstance(message, msg.ErrorResponse) and message.id == 0:
            raise RemoteProtocolError(f"peer reported {message.code}: {message.message}")
        return kind
