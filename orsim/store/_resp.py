"""RESP2, the Redis wire protocol, sans-IO: encode commands, parse replies from bytes.

Only what a client needs: commands go out as arrays of bulk strings; replies come back
as simple strings, errors, integers, bulk strings (possibly null) and arrays of those.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import attrs

from orsim.errors import RemoteProtocolError


@attrs.frozen
class ErrorReply:
    """A ``-ERR ...`` reply: the command failed on the server (the connection is fine)."""

    message: str

    @property
    def code(self) -> str:
        """The first word, e.g. ``NOSCRIPT`` or ``ERR``."""
        return self.message.split(" ", 1)[0]


Reply: TypeAlias = "str | int | bytes | ErrorReply | list[Reply] | None"


class NeedData:
    """The type of :data:`NEED_DATA`."""

    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by :meth:`ReplyParser.next_reply` until a whole reply has arrived.
NEED_DATA: Final = NeedData()

#: Largest reply line or bulk string accepted (sessions are well under a kilobyte).
MAX_REPLY_BYTES: Final = 64 * 1024 * 1024


def encode_command(*args: str | int | bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class _Incomplete(Exception):
    """Internal: the buffer ends inside a reply."""


class ReplyParser:
    """Turns received bytes into replies, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the connection."""
        self._buffer += data

    def next_reply(self) -> Reply | NeedData:
        """The next complete reply, or ``NEED_DATA`` (nothing is consumed then).

        Raises:
            RemoteProtocolError: the bytes are not RESP.
        """
        try:
            reply, end = self._parse(0)
        except _Incomplete:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise RemoteProtocolError("RESP reply too large") from None
            return NEED_DATA
        del self._buffer[:end]
        return reply

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        return bytes(self._buffer[pos:end]), end + 2

    def _parse(self, pos: int) -> tuple[Reply, int]:
        line, pos = self._line(pos)
        if not line:
            raise RemoteProtocolError("empty RESP line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode(), pos
        if kind == b"-":
            return ErrorReply(rest.decode(errors="replace")), pos
        try:
            number = int(rest)
        except ValueError:
            raise RemoteProtocolError(f"bad RESP length or integer {rest!r}") from None
        if kind == b":":
            return number, pos
        if kind == b"$":
            if number < 0:
                return None, pos
            if number > MAX_REPLY_BYTES:
                raise RemoteProtocolError("RESP bulk string too large")
            end = pos + number
            if len(self._buffer) < end + 2:
                raise _Incomplete
            if self._buffer[end : end + 2] != b"\r\n":
                raise RemoteProtocolError("RESP bulk string not terminated")
            return bytes(self._buffer[pos:end]), end + 2
        if kind == b"*":
            if number < 0:
                return None, pos
            items: list[Reply] = []
            for _ in range(number):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise RemoteProtocolError(f"unknown RESP type {kind!r}")
