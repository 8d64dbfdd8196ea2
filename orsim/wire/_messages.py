"""The typed messages of the orsim wire protocol.

Every orsim server speaks the same small vocabulary: a versioned ``Hello``/``Welcome``
handshake, ``Request``/``Response``/``ErrorResponse`` matched by request id, ``Push`` for
server-initiated notifications, and ``Ping``/``Pong`` for the ADDP keepalive. Payloads
(``params``, ``result``, ``data``) are JSON values; each server defines its own methods.
"""

from __future__ import annotations

from typing import Any

import attrs

PROTOCOL_VERSION = 1

#: A JSON value: what payload fields may carry.
Json = Any


@attrs.frozen
class Hello:
    """First frame a client sends: who it is, the ADDP timeout it asks the server to use,
    and the cluster's key if it has one (``Network.key``; see ``serve_app``)."""

    app: str
    app_type: str
    version: int = PROTOCOL_VERSION
    addp_remote_timeout: float = 0.0
    key: str = ""
    #: The server is asked to log its ADDP polls and their answers (``addp-trace``
    #: ``remote`` or ``both``).
    addp_trace: bool = False


@attrs.frozen
class Welcome:
    """The server's answer to ``Hello``."""

    app: str
    app_type: str
    version: int = PROTOCOL_VERSION


@attrs.frozen
class Request:
    """A call of ``method`` that expects exactly one ``Response`` or ``ErrorResponse``."""

    id: int
    method: str
    params: dict[str, Json] = attrs.Factory(dict)


@attrs.frozen
class Response:
    """The successful result of the request with the same ``id``."""

    id: int
    result: Json = None


@attrs.frozen
class ErrorResponse:
    """The failure of the request with the same ``id`` (0: not tied to a request)."""

    id: int
    code: str
    message: str


@attrs.frozen
class Push:
    """A notification that expects no answer."""

    topic: str
    data: dict[str, Json] = attrs.Factory(dict)


@attrs.frozen
class Ping:
    """ADDP poll."""

    seq: int


@attrs.frozen
class Pong:
    """ADDP answer to the ``Ping`` with the same ``seq``."""

    seq: int


Message = Hello | Welcome | Request | Response | ErrorResponse | Push | Ping | Pong
